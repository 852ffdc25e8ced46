"""Rewrites of the lstm's fp32 step graph, written beside the export for `python -m zoo.bench
--compare-graphs OLD NEW`, and the bound on what any fp32 rewrite can gain at batch 1; none ships
(record: benchmarks/compare-lstm-rewrites.md).

    .venv/bin/python benchmarks/lstm_rewrites.py exports/lstm/step.onnx OUT_DIR

writes, from the shipped graph's own weights (`zoo.models.lstm.char_lstm_step`'s initializers):
- step.token.onnx: one token a call (time must be 1) in primitive ops: the embedding and layer 0's
  input weights folded into one table (a Gather gives layer 0's input gates), both layers' recurrent
  MatMuls as one batched MatMul (their inputs are the state, known before the step starts), one
  Sigmoid over all four gates (the cell gate's weights doubled: tanh(x) = 2 sigmoid(2x) - 1);
- step.if.onnx: the same contract as the shipped graph (any time): `If` time == 1 runs step.token's
  nodes, else the shipped LSTM ops, each branch with its own weights;
- step.weights.onnx: not a step: one MatMul of a [batch, 1040] input (the states, concatenated and cut)
  with a [1040, 1280] matrix, as many weights (1.33M, 5.3 MB) as the step reads but for the embedding, behind the step's inputs and
  outputs (the outputs are slices of the product, so compare_graphs' difference means nothing): its
  time is what reading the weights costs, the floor of any fp32 step graph in ONNX Runtime.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.onnx_build import GraphBuilder  # noqa: E402

STATE = ("h_0", "c_0", "h_1", "c_1")
OUTPUTS = ("logits",) + tuple(f"next_{name}" for name in STATE)


def i64(*values):
    return np.array(values, np.int64)


def weights(proto) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def double_cell_gate(x, axis, hidden):  # ONNX's gate order is i, o, f, c: the last block
    x = np.array(x, np.float32)
    index = [slice(None)] * x.ndim
    index[axis] = slice(3 * hidden, 4 * hidden)
    x[tuple(index)] *= 2
    return x


def token_nodes(b: GraphBuilder, w: dict, hidden: int, out=lambda name: name):
    """step.token's nodes into `b`; their outputs named out(<graph output>)."""
    r0, r1, w1 = w["R0"][0], w["R1"][0], w["W1"][0]
    b0, b1 = w["B0"][0], w["B1"][0]
    table = w["embedding"] @ w["W0"][0].T + b0[: 4 * hidden] + b0[4 * hidden :]  # [V, 4H]: x W0 + both biases
    token = b.op("Reshape", ["tokens", b.const("flat", i64(-1))])
    gates0 = b.op("Gather", [b.const("gate_table", double_cell_gate(table, 1, hidden)), token], axis=0)
    states = b.op("Concat", [b.op("Unsqueeze", [name, b.const("axis0", i64(0))]) for name in ("h_0", "h_1")], axis=0)
    recurrent = np.stack([double_cell_gate(r.T, 1, hidden) for r in (r0, r1)])  # [2, H, 4H]
    rec0, rec1 = (b.op("Squeeze", [part, "axis0"])
                  for part in b.op("Split", [b.op("MatMul", [states, b.const("recurrent", recurrent)])], outputs=2, axis=0))

    def cell(gates, c, index):
        i, o, f, g = b.op("Split", [b.op("Sigmoid", [gates])], outputs=4, axis=-1)
        g = b.op("Sub", [b.op("Add", [g, g]), b.const("one", np.array(1, np.float32))])  # tanh of the gate
        c = b.op("Add", [b.op("Mul", [f, c]), b.op("Mul", [i, g])], outputs=[out(f"next_c_{index}")])
        return b.op("Mul", [o, b.op("Tanh", [c])], outputs=[out(f"next_h_{index}")])

    h0 = cell(b.op("Add", [gates0, rec0]), "c_0", 0)
    bias1 = double_cell_gate(b1[: 4 * hidden] + b1[4 * hidden :], 0, hidden)
    gates1 = b.op("Add", [b.op("Add", [b.op("MatMul", [h0, b.const("input1", double_cell_gate(w1.T, 1, hidden))]), rec1]),
                          b.const("bias1", bias1)])
    h1 = cell(gates1, "c_1", 1)
    logits = b.op("Add", [b.op("MatMul", [h1, b.const("logits_kernel", w["logits_kernel"])]),
                          b.const("logits_bias", w["logits_bias"])])
    b.op("Unsqueeze", [logits, b.const("axis1", i64(1))], outputs=[out("logits")])


def finish(b: GraphBuilder, proto):
    """`b`'s nodes as a model with the shipped step's inputs, outputs, opsets and IR version."""
    graph = helper.make_graph(b.nodes, b.name, list(proto.graph.input), list(proto.graph.output), b.initializers)
    return helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)


def token_graph(proto, hidden):
    b = GraphBuilder("lstm_step_token")
    token_nodes(b, weights(proto), hidden)
    return finish(b, proto)


def if_graph(proto, hidden):
    then = GraphBuilder("one_token", prefix="t_")
    token_nodes(then, weights(proto), hidden, out=lambda name: f"t_{name}")
    shipped = [onnx.NodeProto() for _ in proto.graph.node]
    outer = {i.name for i in proto.graph.input} | {i.name for i in proto.graph.initializer}
    for copy, node in zip(shipped, proto.graph.node):  # the shipped nodes, outputs renamed apart
        copy.CopyFrom(node)
        copy.output[:] = [f"e_{name}" for name in node.output]
        copy.input[:] = [name if not name or name in outer else f"e_{name}" for name in node.input]

    def branch(name, nodes, initializers, prefix):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{prefix}{o}", onnx.TensorProto.FLOAT, None)
                                                   for o in OUTPUTS], initializers)

    b = GraphBuilder("lstm_step_if")
    time = b.op("Shape", ["tokens"], start=1, end=2)
    one_token = b.op("Squeeze", [b.op("Equal", [time, b.const("one_position", i64(1))]), b.const("first_axis", i64(0))])
    b.op("If", [one_token], outputs=list(OUTPUTS),
         then_branch=branch("one_token", then.nodes, then.initializers, "t_"),
         else_branch=branch("any_time", shipped, list(proto.graph.initializer), "e_"))
    return finish(b, proto)


def weights_graph(proto, hidden):
    w = weights(proto)
    count = sum(w[k].size for k in ("W0", "R0", "W1", "R1", "logits_kernel"))  # what the shipped step reads
    width = round(count / (4 * hidden))  # 1040 at the default preset: 1,331,200 of its 1,331,520 weights
    b = GraphBuilder("lstm_weights")
    states = b.op("Concat", list(STATE) * -(-width // (4 * hidden)), axis=1)
    x = b.op("Slice", [states, b.const("start", i64(0)), b.const("width", i64(width)), b.const("axis1", i64(1))])
    y = b.op("MatMul", [x, b.const("matrix", np.random.default_rng(0).standard_normal((width, 4 * hidden)).astype(np.float32))])
    vocab = w["logits_kernel"].shape[1]
    b.op("Unsqueeze", [b.op("Slice", [y, "start", b.const("vocab", i64(vocab)), "axis1"]), "axis1"], outputs=["logits"])
    for k, name in enumerate(OUTPUTS[1:]):  # the four states: the product's four quarters
        b.op("Slice", [y, b.const(f"from{k}", i64(k * hidden)), b.const(f"to{k}", i64((k + 1) * hidden)), "axis1"],
             outputs=[name])
    return finish(b, proto)


def main(source, out_dir):
    proto = onnx.load(source)
    hidden = weights(proto)["R0"].shape[2]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, make in (("token", token_graph), ("if", if_graph), ("weights", weights_graph)):
        model = make(proto, hidden)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(out / f"step.{name}.onnx"))
        print(out / f"step.{name}.onnx", len(model.graph.node), "nodes")


if __name__ == "__main__":
    main(*sys.argv[1:])
