"""Training: `model.fit` on a model module's TFDS pipelines, with logs, checkpoints and resume.

A run directory (default `runs/<model>/<preset>/`) holds:
  config.json    the config the run trains with: resuming with another one is refused
  backup/        weights, optimizer and position, written every BACKUP_SECONDS of training and at
                 each epoch's end: a killed run started again continues from there, mid-epoch too
  best.keras     the epoch with the lowest validation loss (ModelCheckpoint)
  history.csv    one row per epoch (CSVLogger), including each epoch's wall time
  logs/          TensorBoard
  model.keras    the final model (the best validation epoch), what `eval` and `export` read
  run.json       model, preset, config, dataset, training wall time, parameter count, versions
  metrics.json   the last test-split evaluation (zoo/evaluate.py); metrics-history.jsonl those before it
"""

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
from zoo.files import read_history, write_json
from zoo.models import load_model

BACKUP_SECONDS = float(os.environ.get("ZOO_BACKUP_SECONDS", 120))  # a kill loses at most about this much
NOT_RESUMED = {"step": 0, "seconds": 0.0}


class Backup(keras.callbacks.Callback):
    """Keras's BackupAndRestore, but every `seconds` of training as well as at each epoch's end, and
    written so that a kill while saving leaves the previous backup whole.

    `state.json` says where it stands: {"epoch": epochs completed, "step": steps done in the next one,
    "weights": its weights file, "previous": the backup before it, whose weights are kept too}. Each
    backup's weights go to a file of their own before state.json names them. `train` resumes mid-epoch
    by first running the rest of that epoch; workers of a cluster killed while some of them were saving
    go back to the previous backup together (`roll_back`).
    """

    def __init__(self, folder, seconds=BACKUP_SECONDS):
        super().__init__()
        self.folder, self.seconds = Path(folder), seconds
        self._epoch, self._step = 0, 0
        self.resumed = NOT_RESUMED  # the steps and seconds of this epoch done before a resume

    @staticmethod
    def state(folder) -> dict:
        path = Path(folder) / "state.json"
        return json.loads(path.read_text()) if path.exists() else None

    @staticmethod
    def places(folder) -> list:
        """(epoch, step) of the backup and of the one before it, when there is one: where a run can resume."""
        state = Backup.state(folder)
        chain = [state, state.get("previous")] if state else []
        return [(s["epoch"], s["step"]) for s in chain if s]

    @staticmethod
    def roll_back(folder):
        """Make the previous backup the one to resume from."""
        state = Backup.state(folder)
        write_json(Path(folder) / "state.json", dict(state["previous"], previous=None))

    def on_train_begin(self, logs=None):
        state = self.state(self.folder)
        if state is not None:
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(self.folder / state.get("weights", "latest.weights.h5"))
        self._last = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step, self._begin = epoch, 0, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if time.monotonic() - self._last >= self.seconds:
            self.save(self._epoch, self._step + self.resumed["step"],
                      time.perf_counter() - self._begin + self.resumed["seconds"])

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, 0, 0.0)

    def save(self, epoch, step, seconds):
        """`seconds`: the training time of the `step` steps done in epoch `epoch` so far."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch{epoch}-step{step}.weights.h5"
        tmp = self.folder / "saving.weights.h5"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.folder / name)
        current = self.state(self.folder)
        previous = current if current and current.get("weights") != name else (current or {}).get("previous")
        if previous:
            previous = dict(previous, previous=None)
        write_json(self.folder / "state.json",
                   {"epoch": epoch, "step": step, "seconds": seconds, "weights": name, "previous": previous})
        for path in self.folder.glob("*.weights.h5"):  # the two backups' weights are all that is kept
            if path.name not in (name, (previous or {}).get("weights", "latest.weights.h5")):
                path.unlink(missing_ok=True)
        self._last = time.monotonic()


def make_strategy(name: str):
    """The strategy of one process; --strategy multiworker is zoo.distributed's."""
    if name == "mirrored":  # every local GPU (or CPU devices configured as logical devices)
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        raise ValueError("--strategy multiworker trains with zoo.distributed.train, whose strategy is made at start-up")
    return tf.distribute.get_strategy()


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to each epoch's logs (so history.csv records the training time)."""

    def __init__(self):
        super().__init__()
        self.resumed = NOT_RESUMED

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # a resumed epoch adds the time of its steps before the kill
            logs["epoch_seconds"] = time.perf_counter() - self._start + self.resumed["seconds"]


def _truncate_history(path: Path, epochs: int):
    """Keep the header and the first `epochs` rows of history.csv: a resumed backup has no later ones."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: 1 + epochs]) if epochs else "")


def machine() -> dict:
    """The CPU and GPU counts a run was made on, as run.json and the notebooks' records give them."""
    return {"cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU"))}


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("tensorflow", "keras", "tensorflow-datasets", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _config_changes(old: dict, new: dict) -> str:
    return ", ".join(f"{k}={new.get(k)!r} (was {old.get(k)!r})" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k))


def prepare_run_dir(run_dir: Path, config: dict, fresh: bool, eval_keys=()) -> str:
    """'new', 'resume' or 'finished'. Nothing in an earlier run is deleted: with `fresh` it is moved
    aside to RUN_DIR.<time>; a resume with another config (`eval_keys` aside) is a one-line UsageError."""
    from zoo.config import UsageError

    config = json.loads(json.dumps(config))  # as config.json holds it (tuples as lists)
    saved = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else None
    unfinished = Backup.state(run_dir / "backup") is not None
    earlier = any((run_dir / f).exists() for f in ("config.json", "run.json", "history.csv", "backup", "best.keras"))
    if earlier and (fresh or not (unfinished or (run_dir / "run.json").exists())):
        kept = run_dir.with_name(f"{run_dir.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(run_dir, kept)
        print(f"kept the earlier run of {run_dir} in {kept}")
        unfinished, saved = False, None
    if unfinished:
        trained = {k: v for k, v in config.items() if k not in eval_keys}
        if saved is not None and {k: v for k, v in saved.items() if k not in eval_keys} != trained:
            raise UsageError(f"{run_dir} holds an unfinished run with another config "
                             f"({_config_changes(saved, config)}): start it again with the settings it had to "
                             "resume, or add --fresh to start afresh (the unfinished run is kept beside it)")
        return "resume"
    if (run_dir / "run.json").exists():
        return "finished"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config)
    return "new"


def train(name, cfg, preset_name, run_dir, data_dir=None, strategy="default", callbacks=(), verbose=None,
          fresh=False):
    """Train model `name` with config `cfg`; returns the trained model (also saved in run_dir), or
    None when run_dir holds a finished run (said in one line; `fresh=True` trains again)."""
    module = registry.get(name)
    run_dir = Path(run_dir)
    status = prepare_run_dir(run_dir, dataclasses.asdict(cfg), fresh, registry.hook(module, "EVAL_KEYS", ()))
    if status == "finished":
        print(f"{run_dir} holds a finished run (run.json): nothing to train; add --fresh to train again "
              f"(the finished run is kept beside it), or --run-dir for another folder")
        return None
    backup_dir, history_path = run_dir / "backup", run_dir / "history.csv"
    state = Backup.state(backup_dir) or {"epoch": 0, "step": 0, "seconds": 0.0}
    monitor = monitor_of(module)
    best_so_far = continue_history(run_dir, name, monitor, status, state)

    keras.utils.set_random_seed(cfg.seed)
    data = module.load_data(cfg, data_dir)
    with make_strategy(strategy).scope():
        model = module.build_model(cfg, data)
    backup, timer = Backup(backup_dir), EpochTimer()
    fit_callbacks = [
        timer,  # before CSVLogger, so the CSV gets epoch_seconds
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"), monitor=monitor or "loss", save_best_only=bool(monitor),
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.CSVLogger(str(history_path), append=True),
        backup,  # after the epoch's row is written: a kill in between redoes the epoch, no row missing
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
        *callbacks,
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    fit = dict(x=data.train, validation_data=data.val, callbacks=fit_callbacks, verbose=verbose,
               shuffle=False)  # the pipelines randomise themselves
    if state["step"]:  # first the rest of the epoch the backup stopped in (its row's metrics: these steps)
        backup.resumed = timer.resumed = {"step": state["step"], "seconds": state.get("seconds", 0.0)}
        model.fit(initial_epoch=state["epoch"], epochs=state["epoch"] + 1,
                  steps_per_epoch=max(1, data.steps_per_epoch - state["step"]), **fit)
        backup.resumed = timer.resumed = NOT_RESUMED
        state = {"epoch": state["epoch"] + 1, "step": 0}
    if state["epoch"] < cfg.epochs:
        model.fit(initial_epoch=state["epoch"], epochs=cfg.epochs, steps_per_epoch=data.steps_per_epoch, **fit)
    elif status == "resume":  # killed after the last epoch's backup: its weights, without a fit
        backup.set_model(model)
        backup.on_train_begin()
    process_seconds = time.perf_counter() - start

    model = finish_run(name, cfg, preset_name, run_dir, getattr(data, "split_sizes", None), strategy,
                       status == "resume", process_seconds, model)
    shutil.rmtree(backup_dir, ignore_errors=True)  # the run is complete: nothing to resume
    return model


def optimizers(model) -> list:
    """(optimizer, its variables) for each optimizer the model's `train_step` steps: the GAN's
    generator's and discriminator's, else the model's own."""
    parts = [(getattr(model, f"{part[0]}_optimizer", None), part) for part in ("generator", "discriminator")]
    if any(optimizer is not None for optimizer, _ in parts):
        return [(optimizer, getattr(model, part).trainable_variables) for optimizer, part in parts if optimizer]
    optimizer = getattr(model, "optimizer", None)
    return [(optimizer, model.trainable_variables)] if optimizer is not None else []


def continue_history(run_dir, name, monitor, status, state) -> float:
    """The best `monitor` value of the epochs the backup `state` has (None: none yet). On a resume,
    history.csv is cut back to those epochs and the resume said in one line."""
    history_path = Path(run_dir) / "history.csv"
    previous = read_history(history_path)[: state["epoch"]]  # rows of epochs the backup has
    best = min((row[monitor] for row in previous if monitor in row), default=None) if monitor else None
    if status == "resume":
        _truncate_history(history_path, state["epoch"])
        print(f"resuming {name} from {Path(run_dir) / 'backup'} after {state['epoch']} completed epoch(s)"
              + (f" and {state['step']} step(s) of the next" if state["step"] else ""))
    return best


def monitor_of(module):
    """The logged value that ranks epochs (lowest wins); None: nothing does, keep the last epoch."""
    return registry.hook(module, "MONITOR", "val_loss")


def finish_run(name, cfg, preset_name, run_dir, split_sizes, strategy, resumed, process_seconds, model=None,
               workers=1):
    """After fit: keep the best checkpoint (else `model`) as model.keras; write run.json from history.csv."""
    run_dir = Path(run_dir)
    monitor = monitor_of(registry.get(name))
    history = read_history(run_dir / "history.csv")
    steps = max((int(o.iterations.numpy()) for o, _ in optimizers(model) if o.built), default=None)
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
        "workers": workers,  # processes that trained it together (--strategy multiworker: TF_CONFIG's)
        "params": int(model.count_params()),
        "epochs_completed": len(history),
        "optimizer_steps": steps,  # all of them, across resumes
        "best_epoch": int(best.get("epoch", -1)) + 1,
        "best_val_loss": best.get(monitor) if monitor else None,
        "train_seconds": sum(row.get("epoch_seconds", 0.0) for row in history),
        "process_seconds": process_seconds,
        "resumed": resumed,
        "command": os.environ.get("ZOO_COMMAND") or " ".join(["python -m zoo"] + sys.argv[1:]),
        "machine": machine(),
        "versions": package_versions(),
    }
    write_json(run_dir / "run.json", run)  # whole or absent: its presence marks the run finished
    return model
