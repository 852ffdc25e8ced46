"""`rnn`: a GRU character model on tiny_shakespeare (the TensorFlow text-generation tutorial's model).

Embedding -> GRU (return_sequences, return_state) -> Dense logits over the characters.
`call(tokens, state)` returns `(logits, next_state)`, so the same weights train on whole windows
and sample one character at a time carrying the state.
"""


import keras
import numpy as np
import tensorflow as tf

from zoo.models import text
from zoo.onnx_build import GraphBuilder
from zoo.models.rnn_presets import Config, PRESETS  # noqa: F401 (hooks: zoo.registry.HOOKS)


DATASET = Config.dataset
SAMPLE_DEFAULTS = text.SAMPLE_DEFAULTS


@keras.saving.register_keras_serializable(package="zoo")
class RNN(text.CharModel):
    def __init__(self, vocabulary, embedding_dim=64, rnn_units=640, **kwargs):
        super().__init__(vocabulary=vocabulary, **kwargs)
        self.embedding_dim = embedding_dim
        self.rnn_units = rnn_units
        self.embedding = keras.layers.Embedding(self.vocab_size, embedding_dim, name="embedding")
        self.gru = keras.layers.GRU(rnn_units, return_sequences=True, return_state=True, name="gru")
        self.dense = keras.layers.Dense(self.vocab_size, name="logits")

    @property
    def state_sizes(self):
        """(name, size) of each state tensor: the names of the exported state inputs."""
        return [("state", self.rnn_units)]

    def build(self, input_shape=(None, None)):
        self.embedding.build(input_shape)
        self.gru.build((None, None, self.embedding_dim))
        self.dense.build((None, None, self.rnn_units))
        self.built = True

    def call(self, tokens, state=None, training=False):
        x = self.embedding(tokens)
        if state is None:
            state = [tf.zeros([tf.shape(tokens)[0], self.rnn_units])]
        x, h = self.gru(x, initial_state=state[0], training=training)
        return self.dense(x), [h]

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, rnn_units=self.rnn_units)
        return config


def load_data(cfg, data_dir=None):
    return text.load_data(cfg, data_dir)


def build_model(cfg, data):
    model = RNN(data.vocabulary, embedding_dim=cfg.embedding_dim, rnn_units=cfg.rnn_units)
    model.build((None, None))
    return text.compile_char_model(model, cfg, data.steps_per_epoch)


evaluate = text.evaluate_recurrent
EVAL_NOTE = text.RECURRENT_EVAL_NOTE


def export_graphs(model):
    """The step graph, written in ONNX as one `GRU` op (char_gru_step, below): tf2onnx turns the Keras
    GRU into a `Loop` of primitive ops that runs ~3x slower."""
    [graph] = text.recurrent_graphs(model)
    graph.build = lambda opset: char_gru_step(model, opset)
    return [graph]


runtime_info = text.runtime_info
card_sample = text.card_sample


# --- The step graph, written in ONNX from the weights (zoo.onnx_build's builder) ------------


def gru_weights(gru) -> tuple:
    """A Keras GRU's (W [1, 3H, in], R [1, 3H, H], B [1, 6H]) in ONNX's layout.

    Keras keeps the gates as (update z, reset r, candidate h) in the columns of kernel [in, 3H] and
    recurrent_kernel [H, 3H], with `reset_after=True` a bias [2, 3H] (input, recurrent): ONNX's
    order z, r, h in rows, and its `linear_before_reset=1` (the reset gate multiplies the recurrent
    candidate after its bias), so transposing is the whole mapping."""
    cell = getattr(gru, "cell", gru)
    if not cell.reset_after or cell.activation.__name__ != "tanh" or cell.recurrent_activation.__name__ != "sigmoid":
        raise ValueError("only Keras's default GRU (reset_after, tanh, sigmoid) maps onto ONNX GRU here")
    kernel, recurrent, bias = (np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    bias = bias.reshape(2, -1)
    return (kernel.T[None].astype(np.float32), recurrent.T[None].astype(np.float32),
            np.concatenate([bias[0], bias[1]])[None].astype(np.float32))


def char_gru_step(model, opset: int):
    """`rnn`'s step graph: tokens int32 [batch, time], state [batch, H] -> logits [batch, time, V],
    next_state [batch, H]: Gather (embedding), one ONNX GRU, MatMul + Add (the dense head)."""
    b = GraphBuilder("rnn_step")
    hidden, vocab = model.rnn_units, model.vocab_size
    w, r, bias = gru_weights(model.gru)
    x = b.op("Gather", [b.const("embedding", np.asarray(model.embedding.embeddings, np.float32)), "tokens"], axis=0)
    x = b.op("Transpose", [x], perm=[1, 0, 2])  # [time, batch, E]: ONNX's sequence-first layout
    h0 = b.op("Unsqueeze", ["state", b.const("axis0", np.array([0], np.int64))])
    y, h = b.op("GRU", [x, b.const("W", w), b.const("R", r), b.const("B", bias), "", h0], outputs=2,
                hidden_size=hidden, linear_before_reset=1)
    y = b.op("Squeeze", [y, b.const("axis1", np.array([1], np.int64))])  # [time, batch, H]
    y = b.op("Transpose", [y], perm=[1, 0, 2])
    kernel = np.asarray(model.dense.kernel, np.float32)
    y = b.op("MatMul", [y, b.const("logits_kernel", kernel)])
    b.op("Add", [y, b.const("logits_bias", np.asarray(model.dense.bias, np.float32))], outputs=["logits"])
    b.op("Squeeze", [h, "axis0"], outputs=["next_state"])
    return b.model([("tokens", np.int32, ["batch", "time"]), ("state", np.float32, ["batch", hidden])],
                   [("logits", np.float32, ["batch", "time", vocab]), ("next_state", np.float32, ["batch", hidden])],
                   opset)
