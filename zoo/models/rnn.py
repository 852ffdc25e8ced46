"""`rnn`: a GRU character model on tiny_shakespeare (the TensorFlow text-generation tutorial's model).

Embedding -> GRU (return_sequences, return_state) -> Dense logits over the characters.
`call(tokens, state)` returns `(logits, next_state)`, so the same weights train on whole windows
and sample one character at a time carrying the state.
"""


import keras
import tensorflow as tf

from zoo.models import text
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
    """The step graph, written in ONNX as one `GRU` op (zoo/onnx_build.py): tf2onnx turns the Keras
    GRU into a `Loop` of primitive ops that runs ~3x slower."""
    from zoo import onnx_build

    [graph] = text.recurrent_graphs(model)
    graph.build = lambda opset: onnx_build.char_gru_step(model, opset)
    return [graph]


runtime_info = text.runtime_info
card_sample = text.card_sample
