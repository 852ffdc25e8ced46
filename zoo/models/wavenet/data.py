"""The wavenet's data: spoken_digit clips split by speaker, the vocoder's windows of mu-law codes and the
prior's log-mel frame sequences, as tf.data pipelines."""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.runtime.audio import HOP, MEL_BINS, SILENCE, SILENT_FRAME, log_mel, mu_law_encode


def to_codes(clip) -> np.ndarray:
    """Float samples in [-1, 1] -> mu-law codes, with one silence code in front (the first input)."""
    return np.concatenate([[SILENCE], mu_law_encode(clip)]).astype(np.int32)


def vocoder_windows(clips: list, length: int, sample_rate: int = 8000):
    """Float clips -> ([N, length + 1] codes padded with silence, [N, length // HOP, M] their log-mel
    frames, [N, length] weights of real targets). A clip longer than the window keeps its start
    (the vocoder always starts from silence); its frames see the audio past the window's end."""
    frames = length // HOP
    codes = np.full((len(clips), length + 1), SILENCE, np.int32)
    mel = np.full((len(clips), frames, MEL_BINS), SILENT_FRAME, np.float32)
    weight = np.zeros((len(clips), length), np.float32)
    for i, clip in enumerate(clips):
        c = to_codes(clip)
        n = min(len(c), length + 1)
        codes[i, :n] = c[:n]
        weight[i, : n - 1] = 1.0
        m = log_mel(clip[: (frames + 1) * HOP], sample_rate)[:frames]
        mel[i, : len(m)] = m
    return codes, mel, weight


def prior_sequences(clips: list, max_frames: int, sample_rate: int = 8000):
    """Float clips -> ([N, max_frames, M] log-mel frames padded with silent frames, [N] lengths).

    A longer clip is cut to its first max_frames * HOP samples first: a clip of its own."""
    frames = np.full((len(clips), max_frames, MEL_BINS), SILENT_FRAME, np.float32)
    lengths = np.zeros(len(clips), np.int32)
    for i, clip in enumerate(clips):
        m = log_mel(clip[: max_frames * HOP], sample_rate)
        frames[i, : len(m)] = m
        lengths[i] = len(m)
    return frames, lengths


def perturb(clips: list, digits: np.ndarray, copies: int, seed: int):
    """`copies` new versions of each clip: played 0.85-1.15 times as fast (linear interpolation; pitch
    and formants move with it, as between voices) at 0.5-1.5 times the gain. (clips, digits)."""
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for _ in range(copies):
        for clip, digit in zip(clips, digits):
            rate = rng.uniform(0.85, 1.15)
            positions = np.arange(0, len(clip) - 1, rate)
            out.append(np.clip(np.interp(positions, np.arange(len(clip)), clip) * rng.uniform(0.5, 1.5), -1, 1)
                       .astype(np.float32))
            labels.append(digit)
    return out, np.asarray(labels, np.int32)


BUCKET = 8 * HOP  # training windows are cut to a whole number of these 1,024 samples


def length_batches(windows: tf.data.Dataset, cfg) -> tf.data.Dataset:
    """Training windows (vocoder_windows) in batches of `batch_size` windows of one length: each cut
    to its clip's samples rounded up to a whole BUCKET. Most clips are much shorter than the window;
    batched at full length, much of the vocoder's training arithmetic went to padding that carries no
    loss. Each window still starts at its clip's start, from silence."""
    unit = math.gcd(cfg.clip_length, BUCKET)
    sizes = cfg.clip_length // unit  # window lengths unit, 2 * unit, ..., clip_length: one bucket each
    if sizes == 1:
        return windows.batch(cfg.batch_size, drop_remainder=True)

    def cut(w):
        length = tf.maximum(1, -(-tf.cast(tf.reduce_sum(w["weight"]), tf.int32) // unit)) * unit
        return {"codes": w["codes"][: length + 1], "mel": w["mel"][: length // HOP],
                "weight": w["weight"][:length], "digit": w["digit"]}

    return windows.map(cut).bucket_by_sequence_length(
        lambda w: tf.shape(w["weight"])[0] // unit, bucket_boundaries=list(range(2, sizes + 1)),
        bucket_batch_sizes=[cfg.batch_size] * sizes, drop_remainder=True)


def split_clips(cfg, data_dir=None) -> dict:
    return zdata.speaker_split(cfg.dataset, cfg.test_speaker, cfg.val_from, data_dir)


@dataclasses.dataclass
class AudioData:
    train: tf.data.Dataset
    val: tf.data.Dataset
    steps_per_epoch: int
    split_sizes: dict


def prior_dataset(clips: list, digits: np.ndarray, cfg, training: bool) -> tf.data.Dataset:
    """The prior's {frames, lengths, digit} of `clips` (prior_sequences): in training an endless
    stream, reshuffled on every pass, in batches of `prior_batch_size`; otherwise one by one, in order."""
    frames, lengths = prior_sequences(clips, cfg.max_frames, cfg.sample_rate)
    prior = tf.data.Dataset.from_tensor_slices({"frames": frames, "lengths": lengths, "digit": digits})
    if not training:
        return prior
    return (prior.shuffle(len(digits), seed=cfg.seed + 1, reshuffle_each_iteration=True).repeat()
            .batch(cfg.prior_batch_size, drop_remainder=True))


def load_data(cfg, data_dir=None) -> AudioData:
    parts = split_clips(cfg, data_dir)

    def dataset(part, training):
        clips, digits = parts[part]
        prior = prior_dataset(clips, digits, cfg, training)  # the prior learns real voices
        if training and cfg.vocoder_copies:
            extra, extra_digits = perturb(clips, digits, cfg.vocoder_copies, cfg.seed)
            clips, digits_v = clips + extra, np.concatenate([digits, extra_digits])
        else:
            digits_v = digits
        codes, mel, weight = vocoder_windows(clips, cfg.clip_length, cfg.sample_rate)
        vocoder = tf.data.Dataset.from_tensor_slices({"codes": codes, "mel": mel, "weight": weight, "digit": digits_v})
        if training:  # two endless streams, each reshuffled on every pass
            vocoder = vocoder.shuffle(len(digits_v), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
            return tf.data.Dataset.zip(length_batches(vocoder, cfg), prior).prefetch(tf.data.AUTOTUNE)
        return tf.data.Dataset.zip(vocoder.batch(cfg.batch_size), prior.batch(cfg.batch_size)).prefetch(2)

    sizes = {k: len(v[1]) for k, v in parts.items()}
    return AudioData(
        train=dataset("train", True),
        val=dataset("validation", False),
        steps_per_epoch=cfg.steps_per_epoch or sizes["train"] // cfg.batch_size,
        split_sizes={f"{k} (clips)": n for k, n in sizes.items()},
    )
