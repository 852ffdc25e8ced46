"""scripts/anchor_probes.py: a training run becomes one probe record (issue 39's records)."""

import dataclasses
import importlib.util
import json

import pytest

from tests.conftest import ROOT
from zoo.models import transformer_presets

spec = importlib.util.spec_from_file_location("anchor_probes", ROOT / "scripts" / "anchor_probes.py")
probes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probes)


def run_dir(tmp_path, export=True):
    tmp_path.mkdir()
    config = dict(dataclasses.asdict(transformer_presets.PRESETS["default"]), dropout=0.1, epochs=3)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "history.csv").write_text("epoch,epoch_seconds,loss,val_loss\n0,60.0,2.5,2.4\n"
                                          "1,90.0,2.0,1.9\n2,90.0,1.8,1.95\n")
    if export:
        (tmp_path / "export").mkdir()
        (tmp_path / "export" / "manifest.json").write_text(json.dumps({"metrics": {"test_nats_per_char": 1.6}}))
    return tmp_path


def test_a_run_is_recorded_with_what_it_changed_its_epochs_and_test_metrics(tmp_path):
    out = tmp_path / "probes.jsonl"
    probes.main(["transformer", str(run_dir(tmp_path / "run")), "--note", "why", "--out", str(out)])
    probes.main(["transformer", str(tmp_path / "run"), "--out", str(out)])
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["changed"] == {"dropout": 0.1, "epochs": 3} and first["model"] == "transformer"
    assert first["epochs_completed"] == 3 and first["train_minutes"] == 4.0 and first["final_loss"] == 1.8
    assert (first["best_val_loss"], first["best_epoch"], first["final_val_loss"]) == (1.9, 2, 1.95)
    assert first["metrics"] == {"test_nats_per_char": 1.6} and first["note"] == "why"
    assert second["note"] == "" and second["config"] == first["config"]


def test_a_run_without_an_export_has_no_metrics_and_an_empty_history_or_a_folder_that_is_no_run_is_refused(tmp_path):
    record = probes.record("transformer", run_dir(tmp_path / "run", export=False), None, "")
    assert record["metrics"] is None and record["epochs_completed"] == 3
    (tmp_path / "run" / "history.csv").write_text("epoch,epoch_seconds,loss,val_loss\n")
    with pytest.raises(SystemExit, match="no epochs"):
        probes.record("transformer", tmp_path / "run", None, "")
    with pytest.raises(SystemExit, match="holds no config.json"):
        probes.record("transformer", tmp_path / "elsewhere", None, "")
