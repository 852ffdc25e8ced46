"""scripts/reference_runs.py: a full run on Fashion-MNIST, scored the way its notebook scores."""

import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import ROOT
from zoo.config import UsageError

spec = importlib.util.spec_from_file_location("reference_runs", ROOT / "scripts" / "reference_runs.py")
references = importlib.util.module_from_spec(spec)
spec.loader.exec_module(references)


def finished_run(folder, model="pixelcnn", dataset="fashion_mnist"):
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({
        "model": model, "config": {"dataset": dataset}, "command": f"make train-{model}", "train_seconds": 120.0,
        "epochs_completed": 4, "machine": {"cpus": 2, "gpus": 0}}))
    return folder


def test_a_full_run_is_scored_as_its_notebook_scores_and_recorded(tmp_path, mock_tfds):
    import tensorflow as tf

    from zoo import data as zdata
    from zoo import registry
    from zoo.models import pixelcnn

    cfg = registry.preset("pixelcnn", "tiny", ["dataset=fashion_mnist"])
    model = pixelcnn.build_model(cfg)
    run = finished_run(tmp_path / "run")
    model.save(run / "model.keras")
    out = tmp_path / "references.jsonl"
    assert references.main(["pixelcnn", str(run), "--out", str(out)]) == 0
    [record] = [json.loads(line) for line in out.read_text().splitlines()]

    # The notebook's measurement: exact NLL of its first EVAL_IMAGES test images, binarised with the test seed.
    eval_images = references.notebook_defaults("pixelcnn")["EVAL_IMAGES"]
    x, y = zdata.image_arrays("fashion_mnist", "test", None, limit=eval_images)
    x = pixelcnn.fixed_binarization(x, pixelcnn.TEST_SEED) / 255.0
    expected = float(np.mean(model.nll(tf.constant(x, tf.float32), tf.constant(y)).numpy()))
    assert record["reference"] == pytest.approx(expected, rel=1e-5)
    assert record["notebook"] == "pixelcnn" and record["scored_with"] == {"EVAL_IMAGES": eval_images}
    assert (record["command"], record["epochs_completed"], record["train_seconds"]) == ("make train-pixelcnn", 4, 120.0)


def test_a_folder_that_is_not_a_full_fashion_mnist_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="holds no finished run"):
        references.main(["vae", str(tmp_path / "none")])
    with pytest.raises(UsageError, match="is a vae run on mnist: the vae notebook's reference is a full run on fashion_mnist"):
        references.main(["vae", str(finished_run(tmp_path / "mnist", "vae", "mnist"))])
    with pytest.raises(UsageError, match="is a pixelcnn run on fashion_mnist"):
        references.main(["vae", str(finished_run(tmp_path / "other"))])
