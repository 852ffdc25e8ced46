"""Exports: contents, ONNX names and axes, parity, test data, and publishing atomically."""

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.conftest import RECURRENT, ROOT, TEXT_MODELS
from zoo import export as zexport
from zoo import runtime
from zoo.runtime.core import sha256_file


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_export_folder_contents_and_checksums(name, trained):
    out = trained(name)["export"]
    manifest = json.loads((out / "manifest.json").read_text())
    graph = manifest["runtime"]["graph"]
    assert list(manifest["graphs"]) == [graph]
    for rel in ("model.keras", f"{graph}.onnx", "README.md", "saved_model/saved_model.pb",
                f"test_data/{graph}/test_data_set_0/input_0.pb", f"test_data/{graph}/test_data_set_0/output_0.pb"):
        assert rel in manifest["files"], rel
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        assert sha256_file(out / rel) == info["sha256"] and (out / rel).stat().st_size == info["bytes"]
    assert manifest["model"] == name and manifest["preset"] == "tiny"
    assert manifest["metrics"]["test_nats_per_char"] > 0
    assert manifest["runtime"]["vocabulary"] and manifest["config"]["seq_len"] == 12
    assert {"tensorflow", "keras", "tf2onnx", "onnxruntime"} <= set(manifest["versions"])
    assert all(d <= 1e-4 for d in manifest["graphs"][graph]["parity_max_abs_diff"].values())
    card = (out / "README.md").read_text()
    assert "## Sample" in card and f"{manifest['training']['params']:,}" in card


@pytest.mark.parametrize("name", RECURRENT)
def test_onnx_names_axes_and_metadata(name, trained):
    out = trained(name)["export"]
    model = onnx.load(str(out / "step.onnx"))
    states = ["state"] if name == "rnn" else ["h_0", "c_0", "h_1", "c_1"]
    assert [i.name for i in model.graph.input] == ["tokens"] + states
    assert [o.name for o in model.graph.output] == ["logits"] + [f"next_{s}" for s in states]
    dims = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(model.graph.input) + list(model.graph.output)}
    vocab = len(json.loads((out / "manifest.json").read_text())["runtime"]["vocabulary"])
    assert dims["tokens"] == ["batch", "time"] and dims["logits"] == ["batch", "time", vocab]
    assert dims[states[0]][0] == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["zoo.model"] == name and meta["zoo.graph"] == "step"
    assert json.loads(meta["zoo.runtime"])["kind"] == "text-recurrent"


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_test_data_set_reproduces_in_onnxruntime(name, trained):
    out = trained(name)["export"]
    graph = json.loads((out / "manifest.json").read_text())["runtime"]["graph"]
    folder = out / "test_data" / graph / "test_data_set_0"
    session = ort.InferenceSession(str(out / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
    read = lambda p: numpy_helper.to_array(onnx.load_tensor(str(p)))  # noqa: E731
    inputs = {i.name: read(folder / f"input_{k}.pb") for k, i in enumerate(session.get_inputs())}
    expected = [read(folder / f"output_{k}.pb") for k in range(len(session.get_outputs()))]
    for got, want in zip(session.run(None, inputs), expected):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_saved_model_signatures(trained):
    import tensorflow as tf

    out = trained("lstm")["export"]
    loaded = tf.saved_model.load(str(out / "saved_model"))
    assert {"serving_default", "step"} <= set(loaded.signatures)
    fn = loaded.signatures["serving_default"]
    zeros = tf.zeros([2, 16])
    result = fn(tokens=tf.constant([[1, 2, 3], [4, 5, 6]], tf.int32), h_0=zeros, c_0=zeros, h_1=zeros, c_1=zeros)
    assert result["logits"].shape[:2] == (2, 3) and result["next_c_1"].shape == (2, 16)


@pytest.mark.parametrize("name", ["rnn", "vae"])  # a custom compile_from_config, and Keras's own
def test_exported_keras_model_has_no_optimizer_slots(trained, name):
    import io
    import zipfile

    import h5py

    def optimizer_variables(path):
        with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
            return len(f["optimizer"]["vars"])

    assert optimizer_variables(trained(name)["export"] / "model.keras") <= 2  # scalars (step, rate), no slots
    assert optimizer_variables(trained(name)["run"] / "best.keras") > 1  # the checkpoint keeps Adam's slots


def test_parity_failure_refuses_and_keeps_the_previous_export(trained, tmp_path):
    run, good = trained("rnn")["run"], trained("rnn")["export"]
    previous = tmp_path / "exports" / "rnn"
    shutil.copytree(good, previous)
    before = (previous / "manifest.json").read_bytes()
    with pytest.raises(zexport.ExportError, match="was not published"):
        zexport.export("rnn", run, previous, tolerance=-1.0)  # no difference can pass
    assert (previous / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["rnn"]  # no partial folder left


def test_a_crash_mid_export_leaves_nothing_behind(trained, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(zexport.convert, "to_onnx", boom)  # where write_checked finds it
    with pytest.raises(RuntimeError, match="converter crashed"):
        zexport.export("rnn", trained("rnn")["run"], tmp_path / "exports" / "rnn")
    assert list((tmp_path / "exports").iterdir()) == []


def test_re_export_replaces_the_folder(trained, tmp_path):
    out = zexport.export("lstm", trained("lstm")["run"], tmp_path / "lstm")
    (out / "sentinel").write_text("from the first export")
    out = zexport.export("lstm", trained("lstm")["run"], tmp_path / "lstm")
    assert not (out / "sentinel").exists()  # the folder is the new export, not the old one added to
    runtime.load(out)  # and it verifies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm"]


def test_publish_swaps_in_one_step_and_falls_back_to_two_renames(tmp_path, monkeypatch):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("old")
    zexport.publish(tmp_path / "new", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out"]

    # Without the one-step swap, a kill between the two renames leaves no `out`; the next export
    # puts the old one back before it starts (and removes a dead export's partial folder).
    monkeypatch.setattr(zexport.folder, "_exchange", lambda a, b: False)  # where publish finds it
    (tmp_path / "new").mkdir()
    renames = []

    def killed_after_one(src, dst):
        if renames:
            raise KeyboardInterrupt("killed between the renames")
        renames.append(dst)
        os.replace(src, dst)

    monkeypatch.setattr(zexport.folder.os, "rename", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        zexport.publish(tmp_path / "new", tmp_path / "out")
    monkeypatch.undo()
    assert not (tmp_path / "out").exists() and renames[0].name.startswith(".out.old-")
    os.rename(renames[0], tmp_path / ".out.old-999999999")  # as if by a process that is gone
    (tmp_path / ".out.partial-999999999-abc").mkdir()
    zexport.remove_leftovers(tmp_path / "out")
    assert (tmp_path / "out" / "f").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["new", "out"]


KILLABLE_EXPORT = """
import sys
from zoo.export import export
export("rnn", sys.argv[1], sys.argv[2])
"""


def test_an_export_killed_at_random_moments_leaves_a_whole_export(trained, tmp_path):
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    out = tmp_path / "exports" / "rnn"
    shutil.copytree(trained("rnn")["export"], out)
    rng = random.Random(0)
    for delay in sorted(rng.uniform(3, 14) for _ in range(3)):
        process = subprocess.Popen([sys.executable, "-c", KILLABLE_EXPORT, str(trained("rnn")["run"]), str(out)],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        runtime.load(out)  # the old export or the new one, whole: every file matches its checksum
    zexport.export("rnn", trained("rnn")["run"], out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["rnn"]  # nothing left behind


def read_front_matter(card: str) -> dict:
    yaml = pytest.importorskip("yaml")
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.parametrize("folder", sorted(p.parent for p in (ROOT / "exports").glob("*/manifest.json")),
                         ids=lambda p: p.name)
def test_shipped_cards_carry_hub_front_matter_with_the_manifest_metrics(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    card = (folder / "README.md").read_text()
    meta = read_front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "keras"
    assert manifest["model"] in meta["tags"] and "onnx" in meta["tags"]
    assert meta["datasets"] == [manifest["dataset"]["name"]]
    measured = zexport.card.hub_metrics(manifest)
    assert measured and meta["metrics"] == list(measured)
    assert not {"samples", "classifier_test_accuracy", "test_images", "iwae_k"} & set(meta["metrics"])  # counts
    [result] = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == "test"
    assert {m["name"]: m["value"] for m in result["metrics"]} == measured  # the very numbers, not rounded
    conditional = manifest["runtime"].get("conditional")
    if conditional:  # no hub task is "class -> image": tagged as what it is, not as unconditional
        assert "pipeline_tag" not in meta and "class-conditional-image-generation" in meta["tags"]
    elif manifest["runtime"]["kind"].startswith("image"):
        assert meta["pipeline_tag"] == "unconditional-image-generation"
    for section in ("## Intended uses and limitations", "## How to use", "## Inputs and outputs", "## Results",
                    "## Training", "## Files", "## License"):
        assert section in card, section
    for spec in manifest["graphs"].values():  # every graph's inputs and outputs, from the manifest
        for t in spec["inputs"] + spec["outputs"]:
            assert f"| `{spec['onnx']}` | {'input' if t in spec['inputs'] else 'output'} | `{t['name']}` | {t['dtype']} |" in card
    from zoo import registry

    summary = registry.get(manifest["model"]).__doc__.strip().split("\n\n")[1]
    assert summary in card  # the model's summary as written, not flattened into one line


def test_card_how_to_use_runs(tmp_path):
    """The card's plain-onnxruntime snippet is a program that runs, on every shipped export."""
    import re

    for folder in sorted(p.parent for p in (ROOT / "exports").glob("*/manifest.json")):
        code = re.findall(r"With plain onnxruntime.*?```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
        assert code, folder.name
        namespace = {}
        exec(code[0].replace('"exports/', f'"{ROOT}/exports/'), namespace)
        assert namespace["outputs"], folder.name


def test_a_new_export_card_starts_with_its_front_matter(trained):
    out = trained("gan")["export"]
    manifest = json.loads((out / "manifest.json").read_text())
    meta = read_front_matter((out / "README.md").read_text())
    assert "pipeline_tag" not in meta and "class-conditional-image-generation" in meta["tags"]  # the tiny gan is conditional
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values == zexport.card.hub_metrics(manifest) and "fid" in values
    card = (out / "README.md").read_text()
    for section in ("## Intended uses and limitations", "## How to use", "## Inputs and outputs", "## Results",
                    "## Training", "## Files", "## License"):  # the generator writes the whole card
        assert section in card, section
    assert "| `generator.onnx` | input | `label` | int32 | [batch] | 0 to 9 |" in card
