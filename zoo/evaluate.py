"""Evaluation: a trained model's test-split metrics, written to `<run_dir>/metrics.json`; each
evaluation it replaces is appended, one JSON object a line, to `<run_dir>/metrics-history.jsonl`.

Each model module's `evaluate(model, cfg, data_dir)` says what it measures (text models: test
loss in nats and bits per character). The export copies these numbers into its manifest and card.
"""

import json
import os
import sys
import time
from pathlib import Path

import keras

from zoo import registry
from zoo.files import write_json
from zoo.models import load_model


def evaluate(name, cfg, run_dir, data_dir=None) -> dict:
    module = registry.get(name)
    model_path = Path(run_dir) / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} does not exist: train first (python -m zoo train {name})")
    model = load_model(model_path)
    start = time.perf_counter()
    metrics = module.evaluate(model, cfg, data_dir)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["eval_command"] = os.environ.get("ZOO_COMMAND") or " ".join(["python -m zoo"] + sys.argv[1:])
    path = Path(run_dir) / "metrics.json"
    if path.exists():  # an evaluation-only override (`--set iwae_images=10000`) replaces it: keep the one before
        before = path.read_text()
        try:
            before = json.dumps(json.loads(before))
        except json.JSONDecodeError:  # kept as it was, inside a line of its own
            before = json.dumps({"unreadable_metrics_json": before})
        with open(Path(run_dir) / "metrics-history.jsonl", "a") as history:
            history.write(before + "\n")
    write_json(path, metrics)  # a killed evaluation leaves the last metrics.json whole
    return metrics
