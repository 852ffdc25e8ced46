"""`lstm`: a stacked (2-layer) LSTM character model on tiny_shakespeare.

Embedding -> LSTM -> Dropout -> LSTM -> Dense logits. Each layer carries its own `(h, c)`, so the
state is `[h_0, c_0, h_1, c_1]`; `call(tokens, state)` returns `(logits, next_state)`.
"""


import keras
import numpy as np
import tensorflow as tf

from zoo.models import text
from zoo.models.steps import Dropout
from zoo.onnx_build import GraphBuilder
from zoo.models.lstm_presets import Config, PRESETS  # noqa: F401 (hooks: zoo.registry.HOOKS)


DATASET = Config.dataset
SAMPLE_DEFAULTS = text.SAMPLE_DEFAULTS


@keras.saving.register_keras_serializable(package="zoo")
class LSTM(text.CharModel):
    def __init__(self, vocabulary, embedding_dim=64, lstm_units=320, num_layers=2, dropout=0.1, **kwargs):
        super().__init__(vocabulary=vocabulary, **kwargs)
        self.embedding_dim = embedding_dim
        self.lstm_units = lstm_units
        self.num_layers = num_layers
        self.dropout_rate = dropout
        self.embedding = keras.layers.Embedding(self.vocab_size, embedding_dim, name="embedding")
        self.lstms = [
            keras.layers.LSTM(lstm_units, return_sequences=True, return_state=True, name=f"lstm_{i}")
            for i in range(num_layers)
        ]
        self.dropout = Dropout(dropout, name="dropout")
        self.dense = keras.layers.Dense(self.vocab_size, name="logits")

    @property
    def state_sizes(self):
        return [(f"{kind}_{i}", self.lstm_units) for i in range(self.num_layers) for kind in ("h", "c")]

    def build(self, input_shape=(None, None)):
        self.embedding.build(input_shape)
        width = self.embedding_dim
        for lstm in self.lstms:
            lstm.build((None, None, width))
            width = self.lstm_units
        self.dense.build((None, None, self.lstm_units))
        self.built = True

    def call(self, tokens, state=None, training=False):
        x = self.embedding(tokens)
        if state is None:
            zeros = tf.zeros([tf.shape(tokens)[0], self.lstm_units])
            state = [zeros] * (2 * self.num_layers)
        next_state = []
        for i, lstm in enumerate(self.lstms):
            if i > 0:
                x = self.dropout(x, training=training)
            x, h, c = lstm(x, initial_state=state[2 * i : 2 * i + 2], training=training)
            next_state += [h, c]
        return self.dense(x), next_state

    def get_config(self):
        config = super().get_config()
        config.update(
            embedding_dim=self.embedding_dim,
            lstm_units=self.lstm_units,
            num_layers=self.num_layers,
            dropout=self.dropout_rate,
        )
        return config


def load_data(cfg, data_dir=None):
    return text.load_data(cfg, data_dir)


def build_model(cfg, data):
    model = LSTM(
        data.vocabulary,
        embedding_dim=cfg.embedding_dim,
        lstm_units=cfg.lstm_units,
        num_layers=cfg.num_layers,
        dropout=cfg.dropout,
    )
    model.build((None, None))
    return text.compile_char_model(model, cfg, data.steps_per_epoch)


# int8 variant of the step graph (`step.int8.onnx`): onnxruntime's dynamic quantisation of the
# LSTM op (com.microsoft DynamicQuantizeLSTM) and the logits MatMul, activations quantised per call.
# zoo.runtime runs it on request (`--precision int8`). Weights 7-bit per output channel, so that no
# x86-64 CPU's int8 kernels saturate (without VNNI, full 8-bit weights can); the LSTM op takes int8
# weights only, so uint8 weights are no way out here (benchmarks/int8-choices.md).
INT8_GRAPHS = {"step": {"op_types": ("LSTM", "MatMul"), "per_channel": True, "reduce_range": True}}
variant_metrics = text.recurrent_variant_metrics
evaluate = text.evaluate_recurrent
EVAL_NOTE = text.RECURRENT_EVAL_NOTE


def export_graphs(model):
    """The step graph, written in ONNX from the weights (char_lstm_step, below): the same two LSTM ops as
    tf2onnx's conversion, without the 16 nodes of index and shape arithmetic around them."""
    [graph] = text.recurrent_graphs(model)
    graph.build = lambda opset: char_lstm_step(model, opset)
    return [graph]


runtime_info = text.runtime_info
card_sample = text.card_sample


# --- The step graph, written in ONNX from the weights (zoo.onnx_build's builder) ------------


def lstm_weights(lstm) -> tuple:
    """A Keras LSTM's (W [1, 4H, in], R [1, 4H, H], B [1, 8H]) in ONNX's layout.

    Keras keeps the gates as (input i, forget f, cell c, output o) in the columns of kernel [in, 4H]
    and recurrent_kernel [H, 4H] with one bias [4H]; ONNX wants rows in the order i, o, f, c and a
    bias for each of the two products (here the recurrent one is zero)."""
    cell = getattr(lstm, "cell", lstm)
    if cell.activation.__name__ != "tanh" or cell.recurrent_activation.__name__ != "sigmoid" or not cell.use_bias:
        raise ValueError("only Keras's default LSTM (tanh, sigmoid, with bias) maps onto ONNX LSTM here")
    order = [0, 3, 1, 2]  # ONNX's i, o, f, c from Keras's i, f, c, o

    def gates(w):  # [..., 4H] -> the same with its four gate blocks reordered
        return np.concatenate([np.split(w, 4, axis=-1)[k] for k in order], axis=-1)

    kernel, recurrent, bias = (np.asarray(w, np.float32) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    return (gates(kernel).T[None], gates(recurrent).T[None],
            np.concatenate([gates(bias), np.zeros_like(bias)])[None])


def char_lstm_step(model, opset: int):
    """`lstm`'s step graph: tokens int32 [batch, time], (h_i, c_i) [batch, H] per layer -> logits
    [batch, time, V], next_h_i, next_c_i: Gather (embedding), one ONNX LSTM per layer, MatMul + Add.
    tf2onnx writes the same LSTM ops with 33 nodes (negative-index handling of the embedding lookup,
    tensordot's shape arithmetic around the head); this graph has the ops alone."""
    b = GraphBuilder("lstm_step")
    hidden, vocab = model.lstm_units, model.vocab_size
    axis0, axis1 = b.const("axis0", np.array([0], np.int64)), b.const("axis1", np.array([1], np.int64))
    x = b.op("Gather", [b.const("embedding", np.asarray(model.embedding.embeddings, np.float32)), "tokens"], axis=0)
    x = b.op("Transpose", [x], perm=[1, 0, 2])  # [time, batch, E]: ONNX's sequence-first layout
    names = [name for name, _ in model.state_sizes]  # h_0, c_0, h_1, c_1, ...: the Keras graph's state inputs
    for i, lstm in enumerate(model.lstms):
        w, r, bias = lstm_weights(lstm)
        h_name, c_name = names[2 * i : 2 * i + 2]
        h0, c0 = (b.op("Unsqueeze", [name, axis0]) for name in (h_name, c_name))
        y, h, c = b.op("LSTM", [x, b.const(f"W{i}", w), b.const(f"R{i}", r), b.const(f"B{i}", bias), "", h0, c0],
                       outputs=3, hidden_size=hidden)
        x = b.op("Squeeze", [y, axis1])  # [time, batch, H]: one direction
        b.op("Squeeze", [h, axis0], outputs=[f"next_{h_name}"])
        b.op("Squeeze", [c, axis0], outputs=[f"next_{c_name}"])
    x = b.op("Transpose", [x], perm=[1, 0, 2])
    x = b.op("MatMul", [x, b.const("logits_kernel", np.asarray(model.dense.kernel, np.float32))])
    b.op("Add", [x, b.const("logits_bias", np.asarray(model.dense.bias, np.float32))], outputs=["logits"])
    return b.model([("tokens", np.int32, ["batch", "time"])] + [(name, np.float32, ["batch", hidden]) for name in names],
                   [("logits", np.float32, ["batch", "time", vocab])]
                   + [(f"next_{name}", np.float32, ["batch", hidden]) for name in names], opset)
