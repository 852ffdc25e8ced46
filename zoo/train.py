"""Training: `model.fit` on a model module's TFDS pipelines, with logs, checkpoints and resume.

A run directory (default `runs/<model>/<preset>/`) holds:
  backup/        BackupAndRestore state: a killed run started again continues from its last epoch
  best.keras     the epoch with the lowest validation loss (ModelCheckpoint)
  history.csv    one row per epoch (CSVLogger), including each epoch's wall time
  logs/          TensorBoard
  model.keras    the final model (the best validation epoch), what `eval` and `export` read
  run.json       model, preset, config, dataset, training wall time, parameter count, versions
"""

import csv
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from zoo import registry
from zoo.models import load_model

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str):
    if name == "mirrored":  # every local GPU (or CPU devices configured as logical devices)
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":  # the cluster described by TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to each epoch's logs (so history.csv records the training time)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def read_history(path: Path) -> list:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        # CSVLogger writes "NA" for a value an epoch did not log (e.g. no validation batches)
        return [{k: float(v) for k, v in row.items() if v not in ("", "NA")} for row in csv.DictReader(f)]


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("tensorflow", "keras", "tensorflow-datasets", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def train(name, cfg, preset_name, run_dir, data_dir=None, strategy="default", callbacks=(), verbose=None):
    """Train model `name` with config `cfg`; returns the trained model (also saved in run_dir)."""
    module = registry.get(name)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    backup_dir, history_path = run_dir / "backup", run_dir / "history.csv"
    resuming = backup_dir.exists() and any(backup_dir.iterdir())
    if not resuming:  # a fresh run: forget the logs of any earlier, completed run
        for stale in (history_path, run_dir / "best.keras"):
            stale.unlink(missing_ok=True)
    previous = read_history(history_path)
    monitor = monitor_of(module)
    best_so_far = min((row[monitor] for row in previous if monitor in row), default=None) if monitor else None
    if resuming:
        print(f"resuming {name} from {backup_dir} after {len(previous)} completed epoch(s)")

    keras.utils.set_random_seed(cfg.seed)
    data = module.load_data(cfg, data_dir)
    with make_strategy(strategy).scope():
        model = module.build_model(cfg, data)

    fit_callbacks = [
        EpochTimer(),  # before CSVLogger, so the CSV gets epoch_seconds
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"), monitor=monitor or "loss", save_best_only=bool(monitor),
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.CSVLogger(str(history_path), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
        *callbacks,
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    model.fit(
        data.train,
        validation_data=data.val,
        epochs=cfg.epochs,
        steps_per_epoch=data.steps_per_epoch,
        callbacks=fit_callbacks,
        shuffle=False,  # the pipelines randomise themselves
        verbose=verbose,
    )
    process_seconds = time.perf_counter() - start

    model = finish_run(name, cfg, preset_name, run_dir, getattr(data, "split_sizes", None), strategy,
                       resuming, process_seconds, model)
    shutil.rmtree(backup_dir, ignore_errors=True)  # BackupAndRestore removes it too; be sure
    return model


def monitor_of(module):
    """The logged value that ranks epochs (lowest wins); None: nothing does, keep the last epoch."""
    return getattr(module, "MONITOR", "val_loss")


def finish_run(name, cfg, preset_name, run_dir, split_sizes, strategy, resumed, process_seconds, model=None):
    """After fit: keep the best checkpoint (else `model`) as model.keras; write run.json from history.csv."""
    run_dir = Path(run_dir)
    monitor = monitor_of(registry.get(name))
    history = read_history(run_dir / "history.csv")
    if (run_dir / "best.keras").exists() or model is None:
        model = load_model(run_dir / "best.keras")
    model.save(run_dir / "model.keras")
    if monitor and history:
        best = min(history, key=lambda row: row.get(monitor, float("inf")))
    else:
        best = history[-1] if history else {}
    run = {
        "model": name,
        "preset": preset_name,
        "config": dataclasses.asdict(cfg),
        "dataset": {"name": cfg.dataset, "train_split": "train", "validation_split": "validation",
                    "test_split": "test", "sizes": split_sizes},
        "strategy": strategy,
        "params": int(model.count_params()),
        "epochs_completed": len(history),
        "best_epoch": int(best.get("epoch", -1)) + 1,
        "best_val_loss": best.get(monitor) if monitor else None,
        "train_seconds": sum(row.get("epoch_seconds", 0.0) for row in history),
        "process_seconds": process_seconds,
        "resumed": resumed,
        "command": os.environ.get("ZOO_COMMAND") or " ".join(["python -m zoo"] + sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU"))},
        "versions": package_versions(),
    }
    (run_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return model
