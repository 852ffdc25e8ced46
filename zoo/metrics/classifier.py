"""A small CNN per image dataset: judges conditional samples and gives the FID features.

`python -m zoo.metrics.classifier --dataset mnist` (`make train-classifier`) trains it on the
train split and writes `exports/classifiers/<dataset>/` (model.keras and info.json with its test
accuracy). `load(dataset)` returns it, training it first when it is missing. FID is computed on
its 128-d penultimate layer (`features`), the usual practice for MNIST-like data, where Inception
features say little.
"""

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from zoo import data as zdata

def root() -> Path:
    """Where classifiers live: $ZOO_CLASSIFIERS, else the checkout's exports/classifiers (whatever
    the working directory: the notebooks run from notebooks/)."""
    default = Path(__file__).resolve().parents[2] / "exports" / "classifiers"
    return Path(os.environ.get("ZOO_CLASSIFIERS", default))


def build(num_classes=10, shape=(28, 28, 1)):
    """Two 3x3 conv pairs, max-pooling and dropout, a 128-unit feature layer: >99% on mnist."""
    inputs = keras.Input(shape, name="image")  # float in [0, 1]
    x = inputs
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Dropout(0.25)(x)
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(128, activation="relu", name="features")(x)
    x = keras.layers.Dropout(0.5)(features)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inputs, logits, name="classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train(dataset="mnist", data_dir=None, out_root=None, epochs=6, batch_size=128, seed=0, limit=0) -> dict:
    keras.utils.set_random_seed(seed)
    x_train, y_train = zdata.image_arrays(dataset, "train", data_dir, limit=limit)
    x_test, y_test = zdata.image_arrays(dataset, "test", data_dir, limit=limit)
    model = build(shape=x_train.shape[1:])
    start = time.perf_counter()
    model.fit(x_train / 255.0, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.05,
              verbose=2, shuffle=True)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test / 255.0, y_test, batch_size=512, verbose=0)
    folder = Path(out_root or root()) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    info = {"dataset": dataset, "test_accuracy": float(accuracy), "test_examples": int(len(y_test)),
            "epochs": epochs, "train_seconds": seconds,
            "command": os.environ.get("ZOO_COMMAND") or f"python -m zoo.metrics.classifier --dataset {dataset}"}
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


class Judge:
    """The classifier of one dataset: `labels(images)` and `features(images)`, images in [0, 1]."""

    def __init__(self, model, info):
        self.model, self.info = model, info
        self._features = keras.Model(model.inputs, model.get_layer("features").output)

    def labels(self, images, batch_size=1000) -> np.ndarray:
        return self.model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0).argmax(-1)

    def features(self, images, batch_size=1000) -> np.ndarray:
        return self._features.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)


def load(dataset="mnist", data_dir=None, out_root=None, train_if_missing=True) -> Judge:
    folder = Path(out_root or root()) / dataset
    if not (folder / "model.keras").exists():
        if not train_if_missing:
            raise FileNotFoundError(f"no classifier for {dataset} in {folder}: make train-classifier")
        train(dataset, data_dir, out_root)
    return Judge(keras.models.load_model(folder / "model.keras", safe_mode=True),
                 json.loads((folder / "info.json").read_text()))


def judge_samples(images, dataset="mnist", data_dir=None, labels=None) -> dict:
    """Generated images in [0, 1] -> FID against the test split and, for `labels` (what each image
    was asked to show), class accuracy: the image metrics every image generator reports."""
    from zoo.metrics.fid import fid

    judge = load(dataset, data_dir)
    x_test, _ = zdata.image_arrays(dataset, "test", data_dir)
    metrics = {"fid": fid(judge.features(images), judge.features(x_test / 255.0)), "samples": len(images),
               "classifier_test_accuracy": judge.info["test_accuracy"]}
    if labels is not None:
        metrics["class_accuracy"] = float((judge.labels(images) == labels).mean())
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo.metrics.classifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)
    print(json.dumps(train(args.dataset, args.data_dir, epochs=args.epochs), indent=2))


if __name__ == "__main__":
    main()
