"""Records of the training runs that choose a model's settings against its anchor (issue 39).

A probe is an ordinary training run with some `--set` values, made from a separate worktree so that
editing the code cannot disturb it, e.g.

    python -m zoo train transformer --set dropout=0.1 --set epochs=38 --fresh \
        --run-dir runs/t39 --out runs/t39/export
    python scripts/anchor_probes.py transformer runs/t39 --note "dropout against overfitting" \
        --out scripts/records/anchor_probes.jsonl

This appends one JSON line: the model, the run's full config and the `--set` values that differ from
the preset, its epochs with their summed wall time (`history.csv`), the best validation loss and its
epoch, and the test metrics of the run's export (`manifest.json`, as `make eval-<model>` measures
them), with the date and the machine. A run without an export (`--no-export`) is recorded without
test metrics.
"""

import argparse
import dataclasses
import datetime
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def history(run_dir: Path) -> dict:
    """Epochs, summed epoch seconds and the best validation loss of a run's `history.csv`."""
    from zoo.files import read_history

    rows = read_history(run_dir / "history.csv")
    if not rows:
        raise SystemExit(f"error: {run_dir / 'history.csv'} has no epochs")
    out = {"epochs_completed": len(rows),
           "train_minutes": round(sum(r["epoch_seconds"] for r in rows) / 60, 2),
           "final_loss": rows[-1]["loss"]}
    if "val_loss" in rows[0]:
        best = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
        out.update(best_val_loss=rows[best]["val_loss"], best_epoch=best + 1, final_val_loss=rows[-1]["val_loss"])
    return out


def record(model: str, run_dir: Path, export: Path | None, note: str) -> dict:
    from zoo import registry
    from zoo.runtime.core import cpu_features

    if not (run_dir / "config.json").exists():
        raise SystemExit(f"error: {run_dir} holds no config.json: not a training run's folder")
    config = json.loads((run_dir / "config.json").read_text())
    manifest_path = (export or run_dir / "export") / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    defaults = dataclasses.asdict(registry.presets_module(model).PRESETS["default"])
    return {
        "date": datetime.date.today().isoformat(),
        "model": model,
        "run_dir": str(run_dir),
        "changed": {k: v for k, v in config.items() if defaults.get(k) != v},
        "config": config,
        **history(run_dir),
        "metrics": manifest["metrics"] if manifest else None,
        "machine": {"cpu": cpu_features()["cpu"], "cpus": os.cpu_count()},
        "note": note,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--export", type=Path, help="the run's export folder (default: RUN_DIR/export)")
    p.add_argument("--note", default="", help="why the probe was run")
    p.add_argument("--out", type=Path, help="append the record to this JSONL file (default: print it)")
    args = p.parse_args(argv)
    line = json.dumps(record(args.model, args.run_dir, args.export, args.note))
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
