"""The Triton model repository (zoo.triton): every config parses with Triton's own schema and names
exactly its ONNX graph's inputs and outputs, with their data types and shapes."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from google.protobuf import text_format

from conftest import ROOT
from zoo import triton
from zoo.registry import MODELS

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
EXPORTS = sorted(p.parent for p in (ROOT / "exports").glob("*/manifest.json")
                 if json.loads(p.read_text()).get("model") in MODELS)
ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT32: "TYPE_INT32",
              onnx.TensorProto.INT64: "TYPE_INT64"}


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def onnx_tensors(values):
    """{name: (Triton type name, dims after the batch axis, -1 where symbolic)}"""
    out = {}
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out[v.name] = (ONNX_TYPES[t.elem_type], dims[1:])
    return out


def config_tensors(tensors):
    out = {}
    for t in tensors:
        dims = list(t.dims)
        if t.HasField("reshape"):
            dims = list(t.reshape.shape)
        out[t.name] = (model_config_pb2.DataType.Name(t.data_type), dims)
    return out


def test_there_are_exports_to_check():
    assert len(EXPORTS) == 8


@pytest.mark.parametrize("folder", EXPORTS, ids=lambda p: p.name)
def test_every_config_parses_and_matches_its_onnx_graph(folder, tmp_path):
    names = triton.write_repository([folder], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert names == [f"{manifest['model']}_{g}" for g in manifest["graphs"]]
    for name, (graph_name, graph) in zip(names, manifest["graphs"].items()):
        config = parse(tmp_path / name / "config.pbtxt")
        assert config.name == name and config.backend == "onnxruntime" and config.max_batch_size > 0
        model_file = tmp_path / name / "1" / "model.onnx"
        assert model_file.read_bytes() == (folder / triton.served_file(graph)).read_bytes()
        proto = onnx.load(str(model_file))
        inputs, outputs = onnx_tensors(proto.graph.input), onnx_tensors(proto.graph.output)
        states = {s.input_name: s for s in config.sequence_batching.state}
        for s in states.values():  # implicit state: a graph input and the output that feeds it back
            assert (model_config_pb2.DataType.Name(s.data_type), list(s.dims)) == inputs[s.input_name]
            assert inputs[s.input_name] == outputs[s.output_name] and s.output_name == "next_" + s.input_name
            assert s.initial_state[0].zero_data and list(s.initial_state[0].dims) == list(s.dims)
        state_outputs = {s.output_name for s in states.values()}
        assert config_tensors(config.input) == {k: v for k, v in inputs.items() if k not in states}
        assert config_tensors(config.output) == {k: v for k, v in outputs.items() if k not in state_outputs}
        recurrent = bool(triton.state_pairs(graph))
        assert config.HasField("sequence_batching") == recurrent
        assert config.HasField("dynamic_batching") == (not recurrent)
        assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]


def test_the_recurrent_step_graphs_carry_their_state_in_triton(tmp_path):
    triton.write_repository([ROOT / "exports" / m for m in ("rnn", "lstm", "wavenet", "transformer")], tmp_path)
    states = {name: [s.input_name for s in parse(tmp_path / name / "config.pbtxt").sequence_batching.state]
              for name in ("rnn_step", "lstm_step", "wavenet_step", "wavenet_prior_step", "transformer_decoder")}
    assert states["rnn_step"] == ["state"]
    assert states["lstm_step"] == ["h_0", "c_0", "h_1", "c_1"]
    assert states["wavenet_step"] == [f"queue.{i}" for i in range(10)]
    assert states["wavenet_prior_step"] == ["state"]
    assert states["transformer_decoder"] == []  # the cache stays explicit: past_* in, present.* out
    decoder = parse(tmp_path / "transformer_decoder" / "config.pbtxt")
    assert "past_key_values.0.key" in [i.name for i in decoder.input]


@pytest.mark.parametrize("contrib_ops", [False, True])
def test_the_served_decoder_and_a_batch_of_chunks_after_cached_positions(tmp_path, contrib_ops):
    # Triton's dynamic batcher may put two clients' requests of the same shapes into one batch: here
    # two sequences that each add 3 positions after 4 cached ones. The standard-ops decoder served by
    # default runs it as each sequence alone; the GroupQueryAttention graph (--contrib-ops) refuses it.
    import onnxruntime as ort

    folder = ROOT / "exports" / "transformer"
    triton.write_repository([folder], tmp_path, contrib_ops=contrib_ops)
    served = tmp_path / "transformer_decoder" / "1" / "model.onnx"
    assert served.read_bytes() == (folder / ("decoder.onnx" if contrib_ops else "decoder.standard.onnx")).read_bytes()
    session = ort.InferenceSession(str(served), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    pasts = [i.name for i in session.get_inputs()][2:]
    _, heads, _, head_dim = session.get_inputs()[2].shape
    feed = {"input_ids": rng.integers(0, 65, (2, 3)), "position_ids": np.tile(np.arange(4, 7), (2, 1))}
    feed.update({name: np.concatenate([rng.standard_normal((2, heads, 4, head_dim)), np.zeros((2, heads, 4, head_dim))],
                                      axis=2).astype(np.float32) for name in pasts})
    if contrib_ops:
        with pytest.raises(Exception, match="batch_size must be 1"):
            session.run(["logits"], feed)
        return
    together = session.run(["logits"], feed)[0]
    alone = [session.run(["logits"], {k: v[row : row + 1] for k, v in feed.items()})[0] for row in (0, 1)]
    np.testing.assert_allclose(together, np.concatenate(alone), atol=1e-5)


def test_gpu_switch_and_graphs_without_a_batch_axis(tmp_path):
    triton.write_repository([ROOT / "exports" / "gan"], tmp_path, gpu=True)
    config = parse(tmp_path / "gan_generator" / "config.pbtxt")
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    graph = {"inputs": [{"name": "x", "dtype": "float32", "shape": [3, 4]}], "outputs": []}
    with pytest.raises(ValueError, match="x has no leading batch axis"):
        triton.graph_config("m_g", graph)


def test_cli_writes_a_repository_and_refuses_a_missing_export(tmp_path):
    run = subprocess.run([sys.executable, "-m", "zoo", "triton", "gan", "vae", "--out", str(tmp_path / "repo")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["gan_generator", "vae_decoder", "vae_encoder"]
    run = subprocess.run([sys.executable, "-m", "zoo", "triton", "gan", "--exports", str(tmp_path),
                          "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"error: no export for gan in {tmp_path}/ (train or export it first)"]
    for flag, served in (([], "decoder.standard.onnx"), (["--contrib-ops"], "decoder.onnx")):
        assert triton.main(["transformer", "--out", str(tmp_path / "t"), *flag]) == 0
        model = tmp_path / "t" / "transformer_decoder" / "1" / "model.onnx"
        assert model.read_bytes() == (ROOT / "exports" / "transformer" / served).read_bytes()


class FakeTriton:
    """Triton's side as its configs describe it, on ONNX Runtime: the batch axis, `reshape`, and
    implicit state per sequence id (zeros at sequence_start). For the example client's loops."""

    def __init__(self, repo):
        import onnxruntime as ort

        self.repo, self.ort, self.states, self.calls, self.sessions = repo, ort, {}, 0, {}

    def infer(self, model, inputs, outputs=None, sequence_id=0, sequence_start=False, sequence_end=False):
        import numpy as np

        config = parse(self.repo / model / "config.pbtxt")
        if model not in self.sessions:  # Triton loads each model once
            self.sessions[model] = self.ort.InferenceSession(str(self.repo / model / "1" / "model.onnx"))
        session = self.sessions[model]
        types = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32}
        feed = {}
        for item in inputs:
            spec = next(t for t in config.input if t.name == item.name())
            array = np.frombuffer(item._get_content(), types[item.datatype()]).reshape(item.shape())
            assert list(array.shape[1:]) == [d if d > 0 else array.shape[1 + k] for k, d in enumerate(spec.dims)]
            feed[item.name()] = array.reshape([len(array), *spec.reshape.shape]) if spec.HasField("reshape") else array
        batch = len(next(iter(feed.values())))
        state = config.sequence_batching.state
        if state:
            assert sequence_id != 0, "a stateful model needs a sequence id"
            if sequence_start:
                self.states[sequence_id] = {s.input_name: np.zeros([batch, *s.dims], np.float32) for s in state}
            feed.update(self.states[sequence_id])
        names = [o.name for o in session.get_outputs()]
        result = dict(zip(names, session.run(names, feed)))
        if state:
            self.states[sequence_id] = {s.input_name: result[s.output_name] for s in state}
            if sequence_end:
                del self.states[sequence_id]
        self.calls += 1

        class Result:
            def as_numpy(self, name):
                return result[name]

        return Result()


def test_example_client_samples_text_and_images_as_the_runtime_does(tmp_path):
    import importlib.util

    import numpy as np

    from zoo.runtime import load, sample_text

    spec = importlib.util.spec_from_file_location("triton_client", ROOT / "examples" / "triton_client.py")
    client_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client_module)
    triton.write_repository([ROOT / "exports" / m for m in ("rnn", "lstm", "gan")], tmp_path)
    server = FakeTriton(tmp_path)
    for model in ("rnn", "lstm"):
        export = load(ROOT / "exports" / model)
        want = sample_text(export, "ROMEO:", 60, temperature=0.0)[0]
        got = client_module.sample_text(server, export.runtime["vocabulary"], "ROMEO:", 60, temperature=0.0,
                                        model=f"{model}_step", sequence_id=7)
        assert got == want
    assert server.calls == 2 * 61 and server.states == {}  # the prompt, 60 characters; the sequences ended
    images = client_module.sample_images(server, [3, 7], seed=0)
    export = load(ROOT / "exports" / "gan")
    z = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    want = export.run("generator", {"z": z, "label": np.array([3, 7], np.int32)})["image"]
    np.testing.assert_allclose(images, want, atol=1e-6)
