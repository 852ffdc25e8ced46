"""Step graphs written in ONNX from the weights (zoo/onnx_build.py): lean, and equal to Keras."""

import collections
import json

import keras
import numpy as np
import onnx
import pytest

from zoo import onnx_build
from zoo.models import lstm as lstm_model, rnn as rnn_model, transformer as transformer_model


def op_counts(path):
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_rnn_step_is_one_gru_op(trained):
    ops = op_counts(trained("rnn")["export"] / "step.onnx")
    assert ops["GRU"] == 1 and "Loop" not in ops and sum(ops.values()) <= 10, ops


def test_lstm_step_is_its_lstm_ops_and_few_nodes(trained):
    t = trained("lstm")
    ops = op_counts(t["export"] / "step.onnx")
    assert ops["LSTM"] == t["cfg"].num_layers and "Cast" not in ops and "Shape" not in ops, ops
    assert sum(ops.values()) <= 5 + 6 * t["cfg"].num_layers, ops


def test_lstm_weights_follow_onnx_gate_order():
    # One LSTM step in numpy with ONNX's layout and gate order (i, o, f, c) equals Keras's LSTM.
    lstm = keras.layers.LSTM(3, return_state=True)
    x, h0, c0 = (np.random.default_rng(i).normal(size=(2, n)).astype(np.float32) for i, n in ((0, 4), (1, 3), (2, 3)))
    lstm.build((None, 1, 4))
    for v in lstm.weights:
        v.assign(np.random.default_rng(v.shape[0]).normal(size=v.shape))
    _, h, c = lstm(x[:, None], initial_state=[h0, c0])
    w, r, b = lstm_model.lstm_weights(lstm)
    z = x @ w[0].T + h0 @ r[0].T + b[0, :12] + b[0, 12:]
    i, o, f, g = np.split(z, 4, axis=-1)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c_want = sigmoid(f) * c0 + sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(np.asarray(c), c_want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h), sigmoid(o) * np.tanh(c_want), atol=1e-5)
    wrong = keras.layers.LSTM(3, activation="relu")
    wrong.build((None, 1, 4))
    with pytest.raises(ValueError, match="only Keras's default LSTM"):
        lstm_model.lstm_weights(wrong)


def test_transformer_decoder_is_group_query_attention_and_few_nodes(trained):
    t = trained("transformer")
    proto = onnx.load(str(t["export"] / "decoder.onnx"))
    ops = op_counts(t["export"] / "decoder.onnx")
    layers = t["cfg"].num_layers
    assert {(o.domain or "ai.onnx", o.version) for o in proto.opset_import} == {("ai.onnx", 23), ("com.microsoft", 1)}
    assert {n.domain for n in proto.graph.node if n.op_type == "GroupQueryAttention"} == {"com.microsoft"}
    assert ops["LayerNormalization"] == 2 * layers + 1 and ops["GroupQueryAttention"] == ops["Gelu"] == layers
    assert ops["MatMul"] == 4 * layers + 1  # q/k/v fused, attention out, mlp in/out; the head
    # the cache read and written by GroupQueryAttention: no heads split by hand, no mask, no scatter
    assert not {"Attention", "Softmax", "Tanh", "Transpose", "Split", "ScatterElements", "Concat", "Where"} & set(ops)
    assert sum(ops.values()) <= 10 + 14 * layers, ops  # 14 a block; embeddings, lengths, final norm, head 10
    manifest = json.loads((t["export"] / "manifest.json").read_text())
    assert manifest["graphs"]["decoder"]["domains"] == {"com.microsoft": 1}
    assert "domains" not in json.loads((trained("rnn")["export"] / "manifest.json").read_text())["graphs"]["step"]
    # The card says which opset and which operator domain the graph needs (tf2onnx's graphs are 17
    # and need no such line).
    card = (t["export"] / "README.md").read_text()
    assert "`decoder.onnx` is ONNX opset 23: it needs a runtime that implements opset 23 (onnxruntime 1.23 or newer)" \
        in card
    assert "`decoder.onnx` uses operators outside ONNX's standard set (`com.microsoft` opset 1)" in card
    assert "is ONNX opset" not in (trained("rnn")["export"] / "README.md").read_text()


def test_transformer_decoder_attends_to_the_cached_positions_only(trained):
    """A step reads only cache positions 0..itself: noise, or NaN, in the rest of a larger buffer
    changes nothing. Several new positions after cached ones are refused for more than one
    sequence (ONNX Runtime's GroupQueryAttention)."""
    import onnxruntime as ort

    t = trained("transformer")
    session = ort.InferenceSession(str(t["export"] / "decoder.onnx"), providers=["CPUExecutionProvider"])
    past = [i.name for i in session.get_inputs()][2:]
    rng = np.random.default_rng(0)
    cached = rng.standard_normal((2, 2, 5, 8)).astype(np.float32)

    def step(tail, capacity):
        cache = np.full((2, 2, capacity, 8), tail, np.float32)
        cache[:, :, :5] = cached
        return session.run(None, {"input_ids": np.array([[3], [4]]), "position_ids": np.full((2, 1), 5),
                                  **{name: cache for name in past}})

    small, large = step(0.0, 6), step(np.nan, 16)
    np.testing.assert_array_equal(small[0], large[0])
    np.testing.assert_array_equal(small[1][:, :, :6], large[1][:, :, :6])  # the cache and the new position
    assert not large[1][:, :, 6:].any()  # a present not bound to its past's buffer: zeros after
    with pytest.raises(Exception, match="batch_size must be 1 when sequence_length > 1 and past context"):
        session.run(None, {"input_ids": np.ones((2, 2), np.int64), "position_ids": np.tile([5, 6], (2, 1)),
                           **{name: np.zeros((2, 2, 16, 8), np.float32) for name in past}})


def test_transformer_decoder_in_standard_ops_runs_outside_onnx_runtime(trained):
    """attention="standard" writes the same decoder without contrib ops: onnx's reference
    evaluator, which knows no com.microsoft op, runs it to the shipped graph's logits and cache."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    t = trained("transformer")
    proto = transformer_model.transformer_decoder(t["model"], 17, attention="standard")
    assert {o.domain for o in proto.opset_import} == {""} and {n.domain for n in proto.graph.node} == {""}
    shipped = ort.InferenceSession(str(t["export"] / "decoder.onnx"), providers=["CPUExecutionProvider"])
    standard = ReferenceEvaluator(proto)
    past = [i.name for i in shipped.get_inputs()][2:]
    cache = {name: np.zeros((2, 2, 8, 8), np.float32) for name in past}
    for ids, positions in (([[1, 2, 3], [4, 5, 6]], [0, 1, 2]), ([[7], [8]], [3])):  # a prefill, then a step
        feed = {"input_ids": np.array(ids, np.int64), "position_ids": np.tile(np.array(positions, np.int64), (2, 1)),
                **cache}
        want, got = shipped.run(None, feed), standard.run(None, feed)
        np.testing.assert_allclose(got[0], want[0], atol=1e-4)
        for w, g in zip(want[1:], got[1:]):  # the positions written so far; the rest zeros in both here
            np.testing.assert_allclose(g, w, atol=1e-5)
        cache = dict(zip(past, got[1:]))
    with pytest.raises(ValueError, match="attention must be"):
        transformer_model.transformer_decoder(t["model"], 17, attention="flash")


def test_gru_weights_refuse_a_gru_onnx_would_compute_differently():
    gru = keras.layers.GRU(4, reset_after=False)
    gru.build((None, None, 3))
    with pytest.raises(ValueError, match="only Keras's default GRU"):
        rnn_model.gru_weights(gru)


def test_shared_constants_are_stored_once():
    b = onnx_build.GraphBuilder("g")
    assert b.const("c", np.float32(1)) == b.const("c", np.float32(1)) == "c"
    assert len(b.initializers) == 1


@pytest.mark.parametrize("model, graph", [("rnn", "step.onnx"), ("lstm", "step.onnx"), ("transformer", "decoder.onnx")])
def test_built_graphs_declare_the_oldest_ir_version_their_opset_allows(trained, model, graph):
    # onnxruntime-web 1.30 refuses IR versions above 13; the onnx package's default is newer.
    proto = onnx.load(str(trained(model)["export"] / graph))
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True) <= 13


def test_diffusion_group_norms_become_instance_norms(trained):
    # tf2onnx's ~19-node form of each Keras GroupNormalization is rewritten to one InstanceNormalization
    # (zoo.onnx_build.group_norms_as_instance_norms); the export's parity check vouches for the values.
    from zoo.models import load_model

    run = trained("diffusion")
    ops = op_counts(run["export"] / "denoiser.onnx")
    network = load_model(run["run"] / "model.keras").ema_network
    norms = [layer for layer in network.layers if isinstance(layer, keras.layers.GroupNormalization)]
    assert norms and ops["InstanceNormalization"] == len(norms), ops
    assert "Sqrt" not in ops and "Reciprocal" not in ops and "Neg" not in ops, ops  # nothing left of the moments


def test_wavenet_prior_layer_norms_become_layer_norm_ops(trained):
    # tf2onnx's 13-node form of each Keras LayerNormalization in the prior's step is rewritten to one
    # LayerNormalization (zoo.onnx_build.layer_norms_as_ops); the export's parity check vouches for the values.
    from zoo.models import load_model

    run = trained("wavenet")
    ops = op_counts(run["export"] / "prior_step.onnx")
    model = load_model(run["run"] / "model.keras")
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.LayerNormalization)]
    assert norms and ops["LayerNormalization"] == len(norms), ops
    assert not {"ReduceMean", "Sqrt", "Reciprocal", "Neg"} & set(ops), ops  # nothing left of the moments


def test_wavenet_network_convolutions_carry_their_causal_padding(trained):
    # tf2onnx's Pad before each causal Conv1D is folded into the Conv (zoo.onnx_build.pads_into_convs):
    # OpenVINO cannot compile the Pad -> Unsqueeze -> Transpose -> Conv chain at dilations of 64 and more.
    from zoo.models import load_model

    run = trained("wavenet")
    proto = onnx.load(str(run["export"] / "network.onnx"))
    model = load_model(run["run"] / "model.keras")
    pads = sorted(next(a.ints[1] for a in n.attribute if a.name == "pads") for n in proto.graph.node
                  if n.op_type == "Conv" and any(a.name == "pads" for a in n.attribute))
    # the one Pad left is the silent frames around the mel (SILENT_FRAME, not zero), not a causal one
    from onnx import numpy_helper

    from zoo.runtime.audio import SILENT_FRAME

    values = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    left = [values[n.input[2]] for n in proto.graph.node if n.op_type == "Pad"]
    assert len(left) == 1 and np.allclose(left[0], SILENT_FRAME) and SILENT_FRAME != 0, left
    assert pads == sorted(model.dilations), pads


def _padded_conv(pads, value=0.0, unsqueeze=True, transpose=True, extra_reader=False):
    """Pad -> [Unsqueeze ->] Transpose -> Conv as tf2onnx writes a Keras causal Conv1D, on [N, T, C]
    (or Pad -> Conv on [N, C, T] without `transpose`)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["padded"])]
    weight = rng.standard_normal((5, 3, 1, 2) if unsqueeze else (5, 3, 2)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads"),
             numpy_helper.from_array(np.array(value, np.float32), "value"), numpy_helper.from_array(weight, "w")]
    if unsqueeze:
        nodes.append(helper.make_node("Unsqueeze", ["padded", "axis"], ["expanded"]))
        nodes.append(helper.make_node("Transpose", ["expanded"], ["nchw"], perm=[0, 3, 1, 2]))
        inits.append(numpy_helper.from_array(np.array([-3], np.int64), "axis"))
    elif transpose:
        nodes.append(helper.make_node("Transpose", ["padded"], ["nchw"], perm=[0, 2, 1]))
    conv_input = "nchw" if unsqueeze or transpose else "padded"
    nodes.append(helper.make_node("Conv", [conv_input, "w"], ["y"], dilations=[1, 4] if unsqueeze else [4]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * (4 if unsqueeze else 3))]
    if extra_reader:
        nodes.append(helper.make_node("Identity", ["padded"], ["also"]))
        outputs.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, [None] * 3))
    x_shape = ["n", "t", 3] if unsqueeze or transpose else ["n", 3, "t"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("pads, layout", [([0, 4, 0, 0, 0, 0], {}), ([0, 4, 0, 0, 2, 0], {}),
                                          ([0, 4, 0, 0, 1, 0], dict(unsqueeze=False)),
                                          ([0, 0, 4, 0, 0, 1], dict(unsqueeze=False, transpose=False))])
def test_pads_fold_into_the_conv_with_the_same_values(pads, layout):
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, 9, 3)).astype(np.float32)
    if layout.get("transpose") is False:
        x = x.transpose(0, 2, 1).copy()
    before = _padded_conv(pads, **layout)
    after = _padded_conv(pads, **layout)
    assert onnx_build.pads_into_convs(after) == 1
    assert "Pad" not in [n.op_type for n in after.graph.node] and "pads" not in [i.name for i in after.graph.initializer]
    onnx.checker.check_model(after)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (before, after)]
    assert run[0].shape == run[1].shape and np.allclose(run[0], run[1], atol=1e-6)


@pytest.mark.parametrize("case", [dict(pads=[0, 4, 0, 0, 0, 0], value=1.0),      # not zero padding
                                  dict(pads=[0, 4, 1, 0, 0, 0]),                  # pads the channels
                                  dict(pads=[0, -1, 0, 0, 0, 0]),                 # crops
                                  dict(pads=[0, 4, 0, 0, 0, 0], extra_reader=True)])  # the padded tensor read elsewhere
def test_pads_stay_where_the_conv_cannot_take_them(case):
    proto = _padded_conv(**case)
    assert onnx_build.pads_into_convs(proto) == 0
    assert [n.op_type for n in proto.graph.node].count("Pad") == 1


def _tf2onnx(fn, *specs):
    import tensorflow as tf
    import tf2onnx

    function = tf.function(fn, input_signature=list(specs))
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=17)
    return proto


def _run(proto, feed):
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_tf2onnx_shape_arithmetic_becomes_constants_with_the_same_values():
    # zoo.onnx_build.shapes_as_constants: tract refuses a Reshape whose shape is computed at run time.
    # Here a tensordot (Dense on [B, T, C]), a reshape and an `x[:, None]` as tf2onnx writes them; the
    # shapes are read off two runs, and a third size, in neither run, gives the same outputs.
    import tensorflow as tf

    kernel = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)

    def fn(x):
        return {"dense": tf.tensordot(x, kernel, axes=1),  # [B, T, 3]
                "pairs": tf.reshape(x, [tf.shape(x)[0], -1, 2, 4]), "wide": x[:, None] * 2.0}

    before = _tf2onnx(fn, tf.TensorSpec([None, None, 4], tf.float32, name="x"))
    after = onnx.ModelProto.FromString(before.SerializeToString())
    rng = np.random.default_rng(1)
    feed = lambda b, t: {"x": rng.standard_normal((b, t, 4)).astype(np.float32)}  # noqa: E731
    counts = onnx_build.shapes_as_constants(after, [feed(2, 6), feed(3, 10)])
    assert counts == {"full_slices": 1, "tensordots": 1, "reshapes": 1}, counts
    ops = [n.op_type for n in after.graph.node]
    assert "Shape" not in ops and ops.count("Reshape") == 1 and len(ops) < len(before.graph.node), ops
    onnx.checker.check_model(after, full_check=True)
    for size in [(5, 8), (1, 2)]:
        x = feed(*size)
        for want, got in zip(_run(before, x), _run(after, x)):
            assert want.shape == got.shape and np.allclose(want, got, atol=1e-6), size


def test_a_shape_the_runs_cannot_pin_stays_computed():
    # [B * T, C] back to [B, T, C] with B and T from another input: two axes that are neither constant
    # nor the input's own (one -1 at most), and a reshape whose runs disagree, stay as tf2onnx wrote them.
    import tensorflow as tf

    def fn(x, like):
        return {"y": tf.reshape(x, [tf.shape(like)[0], tf.shape(like)[1], 4])}

    specs = (tf.TensorSpec([None, 4], tf.float32, name="x"), tf.TensorSpec([None, None], tf.float32, name="like"))
    proto = _tf2onnx(fn, *specs)
    rng = np.random.default_rng(2)
    feed = lambda b, t: {"x": rng.standard_normal((b * t, 4)).astype(np.float32),  # noqa: E731
                         "like": np.zeros((b, t), np.float32)}
    assert onnx_build.shapes_as_constants(proto, [feed(2, 3), feed(3, 5)])["reshapes"] == 0
    x = feed(4, 6)
    assert _run(proto, x)[0].shape == (4, 6, 4)
