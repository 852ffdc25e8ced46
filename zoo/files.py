"""Files written whole or not at all: no TensorFlow here (training, evaluation, export and the
benchmarks share it)."""

import csv
import json
import os
from pathlib import Path


def write_json(path, value, indent=2) -> Path:
    """`value` as JSON at `path`: written to a hidden file beside it, then renamed over it, so a
    process killed meanwhile leaves the previous file whole (or none), never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=indent) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only when the write itself failed
    return path


def read_history(path) -> list:
    """The rows of a run's history.csv as {column: float}, one per epoch ([] when there is none)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        # CSVLogger writes "NA" for a value an epoch did not log (e.g. no validation batches)
        return [{k: float(v) for k, v in row.items() if v not in ("", "NA")} for row in csv.DictReader(f)]
