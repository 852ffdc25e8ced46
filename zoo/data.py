"""Input pipelines on TensorFlow Datasets.

`TFDS_DATA_DIR` (or `--data-dir`) says where prepared datasets live. When a dataset is not
there, TFDS downloads it; with no network the user gets one `DataUnavailableError` naming the
dataset and what to do, instead of minutes of retries and a traceback.
"""

import os
import socket

import numpy as np

from zoo.config import UsageError, ZooError


class DataUnavailableError(ZooError):
    """The dataset is not prepared in the data dir and cannot be downloaded."""


def data_dir_from(option=None):
    """--data-dir wins over TFDS_DATA_DIR; None lets TFDS use its default (~/tensorflow_datasets)."""
    return option or os.environ.get("TFDS_DATA_DIR") or None


def _online(host="storage.googleapis.com", port=443, timeout=3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(name, data_dir, why):
    where = data_dir or "~/tensorflow_datasets (TFDS's default)"
    return DataUnavailableError(
        f"dataset '{name}' is not prepared in {where} and cannot be downloaded ({why}). "
        f"Point TFDS_DATA_DIR (or --data-dir) at a folder that holds it "
        f"(on the zoo's build machines: ../shared/tfds), or run once with internet access "
        f"so TFDS can download it."
    )


def builder(name: str, data_dir=None, download: bool = True):
    """A prepared TFDS builder for `name`, downloading it if allowed and possible."""
    import tensorflow_datasets as tfds

    data_dir = data_dir_from(data_dir)
    try:
        b = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name or unreadable folder
        raise _unavailable(name, data_dir, f"{type(e).__name__}: {e}") from e
    if b.is_prepared():
        return b
    if not download or os.environ.get("ZOO_NO_DOWNLOAD"):
        raise _unavailable(name, data_dir, "downloads are disabled")
    if not _online():
        raise _unavailable(name, data_dir, "no network connection")
    try:
        b.download_and_prepare()
    except Exception as e:
        raise _unavailable(name, data_dir, f"download failed: {type(e).__name__}: {e}") from e
    return b


def load(name: str, split: str, data_dir=None, download: bool = True):
    """`tfds.load` for one split (a `tf.data.Dataset` of feature dicts)."""
    return builder(name, data_dir, download).as_dataset(split=split)


# --- Character text -------------------------------------------------------------------------


def load_text(name: str, split: str, data_dir=None, download: bool = True) -> str:
    """All the `text` features of a split, joined (tiny_shakespeare has one example a split)."""
    ds = load(name, split, data_dir, download)
    return "".join(ex["text"].numpy().decode("utf-8") for ex in ds)


def char_vocabulary(text: str) -> str:
    """Sorted distinct characters of the train text: deterministic, saved with model and export."""
    return "".join(sorted(set(text)))


def encode(text: str, vocabulary: str) -> np.ndarray:
    """Characters -> int32 ids; a character outside the vocabulary is an error naming it."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(vocabulary.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(table, codes)
    bad = (ids >= len(table)) | (table[np.minimum(ids, len(table) - 1)] != codes)
    if bad.any():
        unknown = sorted({chr(c) for c in codes[bad]})
        raise ValueError(f"characters not in the vocabulary: {unknown!r}")
    return ids.astype(np.int32)


def random_windows(ids: np.ndarray, seq_len: int, batch_size: int, seed: int):
    """Endless batches of (x, y) windows cut at random offsets (nanoGPT's get_batch).

    Every offset is a possible window start, so each epoch sees fresh cuts of the text.
    """
    import tensorflow as tf

    ids_t = tf.constant(ids, tf.int32)
    n_starts = len(ids) - seq_len - 1
    if n_starts <= 0:
        raise UsageError(f"text of {len(ids)} characters is shorter than seq_len + 1 = {seq_len + 1}")
    offsets = tf.range(seq_len + 1)

    def cut(r):
        starts = tf.cast(tf.math.floormod(r, n_starts), tf.int32)
        w = tf.gather(ids_t, starts[:, None] + offsets[None, :])
        return w[:, :-1], w[:, 1:]

    return (
        tf.data.Dataset.random(seed=seed)
        .batch(batch_size, drop_remainder=True)
        .map(cut, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def consecutive_windows(ids: np.ndarray, seq_len: int, batch_size: int):
    """(x, y) windows that tile the text once, in order: for validation each epoch."""
    import tensorflow as tf

    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)


# --- Images ---------------------------------------------------------------------------------


def image_arrays(name: str, split: str, data_dir=None, download: bool = True, limit: int = 0):
    """A whole image split as numpy: uint8 images [N, H, W, C] and int32 labels [N]."""
    import tensorflow as tf

    ds = load(name, split, data_dir, download)
    if limit:
        ds = ds.take(limit)
    images, labels = [], []
    for batch in ds.batch(4096).prefetch(tf.data.AUTOTUNE):
        images.append(batch["image"].numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def image_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool = True,
                  drop_remainder: bool = True):
    """(uint8 image, label) batches from arrays, reshuffled every epoch; the model scales them."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


# --- Audio ----------------------------------------------------------------------------------


def audio_clips(name: str, split: str, data_dir=None, download: bool = True):
    """A whole audio split as numpy: (list of int16-range int64 arrays, int32 labels, filenames)."""
    ds = load(name, split, data_dir, download)
    clips, labels, filenames = [], [], []
    for example in ds.as_numpy_iterator():
        clips.append(example["audio"])
        labels.append(example["label"])
        filenames.append(example["audio/filename"].decode("utf-8"))
    return clips, np.asarray(labels, np.int32), filenames


def parse_spoken_digit_filename(filename: str) -> tuple:
    """'9_george_33.wav' -> ('george', 33): the free-spoken-digit naming, digit_speaker_index."""
    from pathlib import Path

    parts = Path(filename).stem.split("_")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"spoken_digit filename {filename!r} is not <digit>_<speaker>_<index>.wav")
    return parts[1], int(parts[2])


def speaker_split(name: str, test_speaker: str, val_from: int, data_dir=None, download: bool = True) -> dict:
    """{'train'|'validation'|'test': (list of float clips in [-1, 1], int32 digits)}.

    Every recording of `test_speaker` is the test set; recordings `val_from` and later of each
    other speaker and digit validate; the rest train (TFDS `spoken_digit` has one split).
    """
    clips, labels, filenames = audio_clips(name, "train", data_dir, download)
    parsed = [parse_spoken_digit_filename(f) for f in filenames]
    speakers = sorted({s for s, _ in parsed})
    if test_speaker not in speakers:
        raise UsageError(f"test_speaker {test_speaker!r} is not one of the speakers {speakers}")
    out = {"train": ([], []), "validation": ([], []), "test": ([], [])}
    for clip, label, (speaker, index) in zip(clips, labels, parsed):
        part = "test" if speaker == test_speaker else "validation" if index >= val_from else "train"
        out[part][0].append(np.asarray(clip, np.float32) / 32768.0)
        out[part][1].append(label)
    return {k: (clips, np.asarray(digits, np.int32)) for k, (clips, digits) in out.items()}
