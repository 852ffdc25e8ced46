"""A spoken-digit classifier: judges which digit a generated clip says.

Trained on the recordings of every speaker except the wavenet's held-out `test_speaker`, and
scored on that speaker's recordings, so its accuracy on unseen voices is known before it judges
generated audio. Each clip is trimmed to its voiced part (leading and trailing frames more than
40 dB below its loudest are cut), then the first second is taken; a log-mel spectrogram
normalised per clip (each mel bin minus its mean over the clip, over the clip's spread: voices
and microphones differ mostly there) feeds a small CNN.

`python -m zoo.metrics.audio_classifier` (`make train-audio-classifier`) writes
`exports/classifiers/spoken_digit/` (model.keras and info.json); `load(cfg)` trains it first
when it is missing, was trained for another held-out speaker or by another VERSION of this code.
"""

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo.metrics.classifier import root

SECONDS = 1.0
VERSION = 2  # 2: silence trimming and per-clip normalisation; a judge saved by another version is retrained


def trim_silence(clip, frame: int = 128, floor_db: float = 40.0) -> np.ndarray:
    """The clip from its first to its last frame within `floor_db` of its loudest frame."""
    clip = np.asarray(clip, np.float32)
    frames = len(clip) // frame
    if frames < 2:
        return clip
    energy = 10.0 * np.log10(np.square(clip[: frames * frame].reshape(frames, frame)).mean(axis=1) + 1e-10)
    voiced = np.flatnonzero(energy > energy.max() - floor_db)
    return clip[voiced[0] * frame : (voiced[-1] + 1) * frame]


def fixed_audio(clips, length) -> np.ndarray:
    """Float clips (any lengths) -> [N, length]: trimmed of silence, then cut or padded with
    silence at the end."""
    out = np.zeros((len(clips), length), np.float32)
    for i, c in enumerate(clips):
        c = trim_silence(c)
        n = min(len(c), length)
        out[i, :n] = c[:n]
    return out


@keras.saving.register_keras_serializable(package="zoo")
class UtteranceNorm(keras.layers.Layer):
    """Log-mel [B, frames, bins] -> each bin minus its mean over the clip, divided by the clip's
    standard deviation (cepstral mean and variance normalisation, per utterance)."""

    def call(self, x):
        x = x - keras.ops.mean(x, axis=1, keepdims=True)
        return x / (keras.ops.std(x, axis=(1, 2), keepdims=True) + 1e-3)


def build(length, sample_rate, num_classes=10, decay_steps=1):
    audio = keras.Input((length,), name="audio")  # floats in [-1, 1]
    # The dB floor comes from min_power alone (top_db is out of reach), so one clip's features do
    # not depend on the loudest clip of its batch.
    x = keras.layers.MelSpectrogram(fft_length=256, sequence_stride=128, sampling_rate=sample_rate,
                                    num_mel_bins=40, min_power=1e-6, top_db=200.0)(audio)
    x = keras.layers.Permute((2, 1))(x)  # [batch, frames, bins]
    x = UtteranceNorm()(x)
    x = keras.layers.Reshape((-1, 40, 1))(x)
    x = keras.layers.BatchNormalization()(x)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(128, activation="relu", name="features")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(keras.layers.Dropout(0.3)(features))
    model = keras.Model(audio, logits, name="audio_classifier")
    # Cosine-decayed: at a constant rate the held-out speaker's accuracy swung widely from epoch to
    # epoch.
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def augment(audio, label):
    """Voices differ in pace, pitch, timing, loudness and background: a random speed change of
    0.85..1.15 (linear interpolation; pitch moves with it), a shift of up to 0.1 s, a gain of
    0.5..1.5 and white noise 40..70 dB below full scale on the clip itself (the zero padding
    stays silent, as it is when the judge is used)."""
    n = tf.shape(audio)[0]
    rate = tf.random.uniform([], 0.85, 1.15)
    positions = tf.minimum(tf.range(n, dtype=tf.float32) * rate, tf.cast(n - 1, tf.float32))
    left = tf.cast(tf.floor(positions), tf.int32)
    right = tf.minimum(left + 1, n - 1)
    frac = positions - tf.floor(positions)
    audio = tf.gather(audio, left) * (1.0 - frac) + tf.gather(audio, right) * frac
    shift = tf.random.uniform([], 0, n // 10, dtype=tf.int32)
    audio = tf.concat([tf.zeros([shift]), audio[: n - shift]], axis=0)
    noise = tf.random.normal([n]) * 10.0 ** tf.random.uniform([], -3.5, -2.0)
    return audio * tf.random.uniform([], 0.5, 1.5) + noise * tf.cast(audio != 0, tf.float32), label


def train(cfg, data_dir=None, out_root=None, epochs=None, batch_size=32) -> dict:
    from zoo.data import speaker_split
    from zoo.runtime.audio import mu_law_decode, mu_law_encode

    epochs = epochs or cfg.judge_epochs
    keras.utils.set_random_seed(cfg.seed)
    length = int(SECONDS * cfg.sample_rate)
    parts = speaker_split(cfg.dataset, cfg.test_speaker, cfg.val_from, data_dir)
    # The classifier hears what the wavenet makes: mu-law-quantised audio.
    train_clips = parts["train"][0] + parts["validation"][0]
    train_labels = np.concatenate([parts["train"][1], parts["validation"][1]])
    x_train = fixed_audio([mu_law_decode(mu_law_encode(c)) for c in train_clips], length)
    x_test = fixed_audio([mu_law_decode(mu_law_encode(c)) for c in parts["test"][0]], length)
    y_test = parts["test"][1]
    ds = (tf.data.Dataset.from_tensor_slices((x_train, train_labels)).shuffle(len(x_train), seed=cfg.seed)
          .map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    model = build(length, cfg.sample_rate, decay_steps=epochs * -(-len(x_train) // batch_size))
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    folder = Path(out_root or root()) / cfg.dataset
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    info = {"version": VERSION, "dataset": cfg.dataset, "test_speaker": cfg.test_speaker,
            "test_accuracy": float(accuracy),
            "test_examples": int(len(y_test)), "train_examples": int(len(x_train)), "epochs": epochs,
            "train_seconds": seconds, "seconds": SECONDS, "sample_rate": cfg.sample_rate,
            "command": os.environ.get("ZOO_COMMAND") or "python -m zoo.metrics.audio_classifier"}
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


class Judge:
    def __init__(self, model, info):
        self.model, self.info = model, info
        self.length = int(info["seconds"] * info["sample_rate"])

    def labels(self, audio, batch_size=256) -> np.ndarray:
        """Float clips [N, samples] (or a list) -> predicted digits [N]."""
        x = fixed_audio(list(audio), self.length)
        return self.model.predict(x, batch_size=batch_size, verbose=0).argmax(-1)


def load(cfg, data_dir=None, out_root=None, train_if_missing=True) -> Judge:
    folder = Path(out_root or root()) / cfg.dataset
    info_path = folder / "info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    if info is None or info.get("test_speaker") != cfg.test_speaker or info.get("version") != VERSION:
        if not train_if_missing:
            raise FileNotFoundError(f"no classifier for {cfg.dataset} held out on {cfg.test_speaker} in {folder}")
        info = train(cfg, data_dir, out_root)
    return Judge(keras.models.load_model(folder / "model.keras", safe_mode=True), info)


def main(argv=None):
    from zoo import registry

    parser = argparse.ArgumentParser(prog="python -m zoo.metrics.audio_classifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=None, help="default: the wavenet config's judge_epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="wavenet config values, e.g. test_speaker=jackson")
    args = parser.parse_args(argv)
    cfg = registry.preset("wavenet", "default", args.set)
    print(json.dumps(train(cfg, args.data_dir, epochs=args.epochs), indent=2))


if __name__ == "__main__":
    main()
