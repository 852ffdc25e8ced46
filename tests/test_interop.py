"""The exports in other ONNX runtimes, as their users would load them: OpenVINO (CPU plugin), tract
(sonos, Rust, through its Python bindings) and the onnx package's own reference evaluator.

Every graph ships at least one ONNX file in ONNX's standard ops (the graph itself, or its `standard`
variant where the graph uses ONNX Runtime's contrib ops), and that file reproduces its test data set
in each runtime with its shapes left dynamic, as exported.
"""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import ROOT
from zoo import registry

SHIPPED = sorted(p.parent for p in (ROOT / "exports").glob("*/manifest.json"))


def standard_files(folder):
    """(graph, ONNX file, test data folder) of each file in `folder`'s manifest that needs no
    operator outside ONNX's standard set."""
    manifest = json.loads((folder / "manifest.json").read_text())
    found = []
    for graph, spec in manifest["graphs"].items():
        for entry in [spec, *spec.get("variants", {}).values()]:
            if not entry.get("domains"):
                found.append((graph, entry["onnx"], entry.get("test_data")))
    return manifest, found


def run_in_openvino(path, inputs: dict, output_names: list) -> list:
    import openvino

    # f32: the CPU plugin's default on CPUs with bf16 units is bf16 arithmetic (outputs 0.01-0.12 from the test data here)
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(inputs)
    return [result[compiled.output(name)] for name in output_names]


def run_in_tract(path, inputs: dict, output_names: list) -> list:
    import tract

    runnable = tract.onnx().load(str(path)).into_model().into_runnable()  # shapes left symbolic, as exported
    return [value.to_numpy() for value in runnable.run(list(inputs.values()))]  # in the graph's order


def run_in_onnx_reference(path, inputs: dict, output_names: list) -> list:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(path)).run(output_names, inputs)


RUNTIMES = {"openvino": run_in_openvino, "tract": run_in_tract, "onnx-reference": run_in_onnx_reference}


def differences(runtime, path, test_data) -> dict:
    """Max abs difference of each output of `path` in `runtime` from its test data's outputs."""
    read = lambda p: numpy_helper.to_array(onnx.load_tensor(str(p)))  # noqa: E731
    proto = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: read(test_data / f"input_{k}.pb") for k, i in enumerate(proto.graph.input)}
    names = [o.name for o in proto.graph.output]
    diffs = {}
    for k, (name, got) in enumerate(zip(names, RUNTIMES[runtime](path, inputs, names))):
        want = read(test_data / f"output_{k}.pb")
        assert got.shape == want.shape, (name, got.shape, want.shape)
        diffs[name] = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    return diffs


def check_in(runtime, folder):
    """Every graph of the export in `folder` has a standard-ops file, and each such file with a test
    data set (a precision variant has none: its outputs differ from fp32's by design) reproduces it in
    `runtime` within the export's parity tolerance."""
    manifest, files = standard_files(folder)
    assert {graph for graph, _, _ in files} == set(manifest["graphs"]), "a graph ships only with contrib ops"
    for graph, name, test_data in files:
        if test_data is not None:
            diffs = differences(runtime, folder / name, folder / test_data)
            assert max(diffs.values()) <= manifest["parity_tolerance"], (name, diffs)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_graph_runs_in_another_runtime(folder, runtime):
    check_in(runtime, folder)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(registry.MODELS))
def test_every_exported_graph_runs_in_another_runtime(name, runtime, trained):
    # The same on the tiny presets' exports: what `zoo export` writes today, not only what it wrote.
    check_in(runtime, trained(name)["export"])


def test_openvino_writes_the_runtime_greedy_text_with_the_standard_decoder():
    # A whole generation outside ONNX Runtime, as a user of OpenVINO would write it: decoder.standard.onnx,
    # the prompt in one call, then one token a call with the presents fed back as the pasts.
    import openvino

    from zoo.runtime import load, sample_text
    from zoo.runtime.text import encode

    folder = ROOT / "exports" / "transformer"
    info = load(folder).runtime
    prompt, length = "ROMEO:", 80
    want = sample_text(load(folder), prompt, length=length, temperature=0.0)[0]
    compiled = openvino.Core().compile_model(str(folder / "decoder.standard.onnx"), "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32"})
    shape = (1, info["num_heads"], len(prompt) + length, info["head_dim"])
    past = {info["past"].format(i=i, kind=kind): np.zeros(shape, np.float32)
            for i in range(info["num_layers"]) for kind in ("key", "value")}
    ids = encode(prompt, info["vocabulary"]).astype(np.int64)[None]
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    text = prompt
    for _ in range(length):
        out = compiled({"input_ids": ids, "position_ids": positions, **past})
        token = int(out[compiled.output("logits")][0, -1].argmax())
        text += info["vocabulary"][token]
        past = {name: out[compiled.output(name.replace("past_key_values", "present"))] for name in past}
        ids, positions = np.array([[token]], np.int64), positions[:, -1:] + 1
    assert text == want


def test_tract_generates_the_runtime_wavenet_clip():
    # The two-stage generation outside ONNX Runtime: zoo.runtime.audio's numpy loops (the prior frame
    # by frame, then the vocoder one sample a call, its queues fed back) around tract's runs of the
    # three graphs give ONNX Runtime's clip, sample for sample.
    import tract

    from zoo.runtime import load
    from zoo.runtime.audio import check_request, generate, generate_clips

    folder = ROOT / "exports" / "wavenet"
    export = load(folder)
    info = export.runtime
    want = generate(export, "3", seconds=0.25, seed=0)[0]
    digits, max_frames = check_request(info, "3", 0.25, 1.0, info["sample_defaults"]["mel_temperature"])

    def graph(name):  # a callable over the graph's inputs in order -> its outputs by name
        runnable = tract.onnx().load(str(folder / f"{info[name]}.onnx")).into_model().into_runnable()
        outputs = [o.name for o in onnx.load(str(folder / f"{info[name]}.onnx"), load_external_data=False).graph.output]
        return lambda *inputs: dict(zip(outputs, (v.to_numpy() for v in runnable.run(list(inputs)))))

    prior, condition, step = graph("prior_graph"), graph("condition_graph"), graph("step_graph")
    queues = [np.zeros((1, d * info["residual_channels"]), np.float32) for d in info["dilations"]]

    def vocoder_step(sample, row):
        out = step(sample.astype(np.int32), row, *queues)
        queues[:] = [out[f"next_queue.{i}"] for i in range(len(queues))]
        return out["logits"]

    def prior_step(frame, digit, state):
        out = prior(frame, digit, state)
        return [out[k] for k in ("mixture_logits", "means", "log_scales", "stop_logit", "next_state")]

    clips, _, _ = generate_clips(prior_step, lambda frames, digits: condition(frames, digits)["condition"],
                                 vocoder_step, digits.astype(np.int32), max_frames, state_size=info["prior_state"],
                                 temperature=1.0, mel_temperature=info["sample_defaults"]["mel_temperature"], seed=0)
    assert len(want) > 0 and np.array_equal(clips[0], want)
