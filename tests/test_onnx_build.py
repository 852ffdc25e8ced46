"""Step graphs written in ONNX from the weights (zoo/onnx_build.py): lean, and equal to Keras."""

import collections

import keras
import numpy as np
import onnx
import pytest

from zoo import onnx_build


def op_counts(path):
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_rnn_step_is_one_gru_op(trained):
    ops = op_counts(trained("rnn")["export"] / "step.onnx")
    assert ops["GRU"] == 1 and "Loop" not in ops and sum(ops.values()) <= 10, ops


def test_transformer_decoder_uses_standard_layer_norms_and_few_nodes(trained):
    t = trained("transformer")
    ops = op_counts(t["export"] / "decoder.onnx")
    layers = t["cfg"].num_layers
    assert ops["LayerNormalization"] == 2 * layers + 1 and ops["Softmax"] == layers
    assert ops["MatMul"] == 6 * layers + 1  # q/k/v fused, scores, weights x values, out, mlp in/out; the head
    assert "Loop" not in ops and "GlobalAveragePool" not in ops and sum(ops.values()) <= 13 + 40 * layers, ops


def test_gru_weights_refuse_a_gru_onnx_would_compute_differently():
    gru = keras.layers.GRU(4, reset_after=False)
    gru.build((None, None, 3))
    with pytest.raises(ValueError, match="only Keras's default GRU"):
        onnx_build.gru_weights(gru)


def test_shared_constants_are_stored_once():
    b = onnx_build.GraphBuilder("g")
    assert b.const("c", np.float32(1)) == b.const("c", np.float32(1)) == "c"
    assert len(b.initializers) == 1


@pytest.mark.parametrize("model, graph", [("rnn", "step.onnx"), ("transformer", "decoder.onnx")])
def test_built_graphs_declare_the_oldest_ir_version_their_opset_allows(trained, model, graph):
    # onnxruntime-web 1.30 refuses IR versions above 13; the onnx package's default is newer.
    proto = onnx.load(str(trained(model)["export"] / graph))
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import)) <= 13


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
