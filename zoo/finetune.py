"""Fine-tuning a shipped model (the notebooks' helpers): load it, record the run, export it again.

    model, manifest = load_shipped("gan")                  # exports/gan/model.keras, safe_mode=True
    ... model.compile(...); model.fit(...) ...
    export_finetuned("gan", model, cfg, "runs/finetuned/gan-fashion", metrics, note="mnist -> fashion_mnist")

`export_finetuned` writes a run folder like `zoo train` does (model.keras, run.json, metrics.json)
and hands it to `zoo.export.export`, so the fine-tuned model gets the same SavedModel, ONNX,
parity check, manifest and model card as a trained one.
"""

import dataclasses
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import keras

from zoo import registry
from zoo.files import write_json

ROOT = Path(__file__).resolve().parent.parent


def load_shipped(name: str, exports=None):
    """(Keras model, manifest) of `exports/<name>/`; the model loads in safe mode."""
    registry.get(name)  # registers the model's Keras classes
    folder = Path(exports or ROOT / "exports") / name
    if not (folder / "model.keras").exists():
        raise FileNotFoundError(f"{folder / 'model.keras'} does not exist: make train-{name} first")
    model = keras.models.load_model(folder / "model.keras", safe_mode=True)
    return model, json.loads((folder / "manifest.json").read_text())


class Timer(keras.callbacks.Callback):
    """Seconds spent in `fit` (sum over calls): the fine-tuning time the card reports."""

    seconds = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds += time.perf_counter() - self._start


def export_finetuned(name, model, cfg, out_dir, metrics: dict, note: str, epochs: int = 0, train_seconds: float = 0.0,
                     command: str = "", split_sizes=None, sample_defaults=None) -> Path:
    """Save `model` as a run (config `cfg`, measured `metrics`) and export it to `out_dir`
    (`sample_defaults`: zoo.export.export's)."""
    from zoo.export import export
    from zoo.train import machine, package_versions

    out_dir = Path(out_dir)
    run_dir = out_dir.parent / f"{out_dir.name}-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    run = {
        "model": name,
        "preset": "finetuned",
        "config": dataclasses.asdict(cfg),
        "dataset": {"name": cfg.dataset, "sizes": split_sizes},
        "strategy": "default",
        "params": int(model.count_params()),
        "epochs_completed": epochs,
        "best_epoch": epochs,
        "best_val_loss": None,
        "train_seconds": train_seconds,
        "resumed": False,
        "command": command or f"notebooks ({name})",
        "machine": machine(),
        "note": note,
        "versions": package_versions(),
    }
    write_json(run_dir / "run.json", run)
    write_json(run_dir / "metrics.json", metrics)
    return export(name, run_dir, out_dir, sample_defaults=sample_defaults)


def _plain(value):
    """numpy scalars and arrays as JSON numbers and lists."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def record_run(path, notebook: str, params: dict, wall_seconds: float, **figures) -> dict:
    """Append one JSON line to `path` (None: nothing): the notebook, its parameters, the wall time of
    the whole run, the machine, and `figures` (before / after / baseline metrics, training seconds).
    The notebooks' README table is made from these lines, and a test checks that each notebook's
    defaults are the parameters of its last recorded run."""
    from zoo.train import machine, package_versions

    record = {"notebook": notebook, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "params": params, "wall_seconds": round(wall_seconds, 1),
              "machine": machine(),
              **figures, "versions": package_versions()}
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record, default=_plain) + "\n")
    return record
