"""A spoken-digit classifier: judges which digit a generated clip says.

Trained on the recordings of every speaker except the wavenet's held-out `test_speaker`, and
scored on that speaker's recordings, so its accuracy on unseen voices is known before it judges
generated audio. Log-mel spectrogram of the first second, a small CNN.

`python -m zoo.metrics.audio_classifier` (`make train-audio-classifier`) writes
`exports/classifiers/spoken_digit/` (model.keras and info.json); `load(cfg)` trains it first
when it is missing or was trained for another held-out speaker.
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


def fixed_audio(clips, length) -> np.ndarray:
    """Float clips (any lengths) -> [N, length]: cut, or padded with silence at the end."""
    out = np.zeros((len(clips), length), np.float32)
    for i, c in enumerate(clips):
        n = min(len(c), length)
        out[i, :n] = c[:n]
    return out


def build(length, sample_rate, num_classes=10):
    audio = keras.Input((length,), name="audio")  # floats in [-1, 1]
    # The dB floor comes from min_power alone (top_db is out of reach), so one clip's features do
    # not depend on the loudest clip of its batch.
    x = keras.layers.MelSpectrogram(fft_length=256, sequence_stride=128, sampling_rate=sample_rate,
                                    num_mel_bins=40, min_power=1e-6, top_db=200.0)(audio)
    x = keras.layers.Reshape((40, -1, 1))(x)
    x = keras.layers.BatchNormalization()(x)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(128, activation="relu", name="features")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(keras.layers.Dropout(0.3)(features))
    model = keras.Model(audio, logits, name="audio_classifier")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def augment(audio, label):
    """A random shift of up to 0.1 s and gain of 0.5..1.5: voices differ in timing and loudness."""
    shift = tf.random.uniform([], 0, tf.shape(audio)[0] // 10, dtype=tf.int32)
    audio = tf.concat([tf.zeros([shift]), audio[: tf.shape(audio)[0] - shift]], axis=0)
    return audio * tf.random.uniform([], 0.5, 1.5), label


def train(cfg, data_dir=None, out_root=None, epochs=None, batch_size=32) -> dict:
    from zoo.models.wavenet import split_clips
    from zoo.runtime.audio import mu_law_decode

    epochs = epochs or cfg.judge_epochs
    keras.utils.set_random_seed(cfg.seed)
    length = int(SECONDS * cfg.sample_rate)
    parts = split_clips(cfg, data_dir)
    # The classifier hears what the wavenet makes: mu-law-quantised audio.
    train_codes = parts["train"][0] + parts["validation"][0]
    train_labels = np.concatenate([parts["train"][1], parts["validation"][1]])
    x_train = fixed_audio([mu_law_decode(c[1:]) for c in train_codes], length)
    x_test = fixed_audio([mu_law_decode(c[1:]) for c in parts["test"][0]], length)
    y_test = parts["test"][1]
    ds = (tf.data.Dataset.from_tensor_slices((x_train, train_labels)).shuffle(len(x_train), seed=cfg.seed)
          .map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    model = build(length, cfg.sample_rate)
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    folder = Path(out_root or root()) / cfg.dataset
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    info = {"dataset": cfg.dataset, "test_speaker": cfg.test_speaker, "test_accuracy": float(accuracy),
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
    if info is None or info.get("test_speaker") != cfg.test_speaker:
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
