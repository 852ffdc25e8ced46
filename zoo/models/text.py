"""What the character-level text models (rnn, lstm, transformer) share.

- `CharModel`: a `keras.Model` base whose `call(tokens, state)` returns `(logits, next_state)`,
  with the next-character cross-entropy `train_step`/`test_step` written with `tf.GradientTape`.
- `load_data`: TFDS text -> vocabulary -> random training windows and ordered validation windows.
- `recurrent_nll`: test-split loss of a recurrent model, streaming the split with carried state.
- `recurrent_graphs`: the exported step graph `(tokens, state...) -> (logits, next_state...)`.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.models.steps import descend

SAMPLE_DEFAULTS = {
    "prompt": "ROMEO:",  # a speaker tag: the model continues it as a speech
    "length": 400,       # characters to generate
    "temperature": 0.8,  # below 1 trades a little variety for fewer misspellings
    "top_k": 0,          # 0 = sample from the whole vocabulary
    "seed": 0,
}


class CharModel(keras.Model):
    """Base of the character models: holds the vocabulary and the training objective."""

    def __init__(self, vocabulary: str, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        self.vocab_size = len(vocabulary)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def char_loss(self, y, logits):
        """Mean next-character cross-entropy in nats (per replica)."""
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            logits, _ = self(x, training=True)
            loss = self.char_loss(y, logits)
        descend(self.optimizer, tape, loss, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, y = data
        logits, _ = self(x, training=False)
        self.loss_tracker.update_state(self.char_loss(y, logits))
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=self.vocabulary)
        return config

    def compile_from_config(self, config):
        """Compile as saved; the optimizer creates its slots on the first training step.

        Exported `.keras` files carry no optimizer slots (they would triple the file size), so
        unlike Keras's default this does not pre-build them only to find nothing to load.
        """
        self.compile(**keras.saving.deserialize_keras_object(config))


def compile_char_model(model, cfg, steps_per_epoch: int):
    """Adam with a cosine learning-rate decay over the whole run and gradient-norm clipping."""
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=max(1, cfg.epochs * steps_per_epoch), alpha=0.1
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=cfg.clipnorm))
    return model


@dataclasses.dataclass
class TextData:
    train: tf.data.Dataset  # endless (x, y) batches
    val: tf.data.Dataset
    vocabulary: str
    steps_per_epoch: int
    split_sizes: dict


def load_data(cfg, data_dir=None) -> TextData:
    train_text = zdata.load_text(cfg.dataset, "train", data_dir)
    val_text = zdata.load_text(cfg.dataset, "validation", data_dir)
    vocabulary = zdata.char_vocabulary(train_text)
    train_ids = zdata.encode(train_text, vocabulary)
    val_ids = zdata.encode(val_text, vocabulary)
    # One epoch = as many characters as the train split holds, cut at random offsets.
    steps = cfg.steps_per_epoch or max(1, len(train_ids) // (cfg.batch_size * cfg.seq_len))
    return TextData(
        train=zdata.random_windows(train_ids, cfg.seq_len, cfg.batch_size, cfg.seed),
        val=zdata.consecutive_windows(val_ids, min(cfg.seq_len, len(val_ids) - 1), cfg.batch_size),
        vocabulary=vocabulary,
        steps_per_epoch=steps,
        split_sizes={"train": len(train_ids), "validation": len(val_ids)},
    )


def pieces(ids: np.ndarray, streams: int) -> tuple:
    """`ids` cut into (at most) `streams` contiguous pieces of one length: (inputs [streams, n],
    next-character targets [streams, n]); the tail that does not fill a piece is left out."""
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    n = (len(ids) - 1) // streams
    x = np.stack([ids[i * n : (i + 1) * n] for i in range(streams)])
    y = np.stack([ids[i * n + 1 : (i + 1) * n + 1] for i in range(streams)])
    return x, y


def recurrent_nll(model, ids: np.ndarray, streams: int = 16, chunk: int = 256) -> dict:
    """Mean next-character loss over `ids`, read as `streams` contiguous pieces with carried state.

    Every character but the first of each piece is predicted from everything before it in its
    piece, the way sampling uses the model (state carried indefinitely).
    """
    x, y = pieces(ids, streams)
    streams, n = x.shape
    specs = [tf.TensorSpec([streams, None], tf.int32)] * 2 + [
        tf.TensorSpec([streams, size], tf.float32) for _, size in model.state_sizes
    ]

    @tf.function(input_signature=specs)
    def step(xc, yc, *state):
        logits, next_state = model(xc, list(state), training=False)
        nll = keras.losses.sparse_categorical_crossentropy(yc, logits, from_logits=True)
        return tf.reduce_sum(tf.cast(nll, tf.float64)), next_state

    state = [tf.zeros([streams, size]) for _, size in model.state_sizes]
    total = 0.0
    for j in range(0, n, chunk):
        nll, state = step(x[:, j : j + chunk], y[:, j : j + chunk], *state)
        total += float(nll)
    nats = total / (streams * n)
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "chars_scored": streams * n}


def recurrent_nll_onnx(session, ids: np.ndarray, state_sizes: list, streams: int = 16, chunk: int = 256) -> float:
    """`recurrent_nll`'s nats per character, with an exported step graph in ONNX Runtime: the same
    pieces, chunks and carried state, so fp32 and int8 graphs are scored exactly as Keras is."""
    x, y = pieces(ids, streams)
    x, (streams, n) = x.astype(np.int32), x.shape
    state = {name: np.zeros((streams, size), np.float32) for name, size in state_sizes}
    names = [o.name for o in session.get_outputs()]
    total = 0.0
    for j in range(0, n, chunk):
        out = dict(zip(names, session.run(names, {"tokens": x[:, j : j + chunk], **state})))
        total += float(token_nll(out["logits"], y[:, j : j + chunk]).sum())
        state = {name: out[f"next_{name}"] for name in state}
    return total / (streams * n)


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] at each position, in float64: logits [..., V], targets [...]."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return log_z - np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


def variant_test_nats(folder, files: dict, info: dict, config: dict, score) -> dict:
    """{precision: {"test_nats_per_char": score(session, ids)}} for each ONNX file in `files`
    ({precision: file name in `folder`}), every file scored by the same `score` on the config's TFDS
    test split: the fp32 figure beside the int8 one, measured the same way."""
    import onnxruntime as ort

    ids = zdata.encode(zdata.load_text(config["dataset"], "test"), info["vocabulary"])
    return {precision: {"test_nats_per_char": score(ort.InferenceSession(str(folder / name),
                                                                         providers=["CPUExecutionProvider"]), ids)}
            for precision, name in files.items()}


def recurrent_variant_metrics(folder, graph: str, files: dict, info: dict, config: dict) -> dict:
    """`variant_test_nats` of a step graph, scored by `recurrent_nll_onnx`."""

    def score(session, ids):
        sizes = [(i.name, i.shape[1]) for i in session.get_inputs() if i.name != "tokens"]
        return recurrent_nll_onnx(session, ids, sizes)

    return variant_test_nats(folder, files, info, config, score)


RECURRENT_EVAL_NOTE = (
    "Test loss: the TFDS test split read as 16 contiguous pieces with the state carried from the "
    "start of each piece, every character but a piece's first scored once (zoo.models.text.recurrent_nll)."
)


def evaluate_recurrent(model, cfg, data_dir=None) -> dict:
    test_ids = zdata.encode(zdata.load_text(cfg.dataset, "test", data_dir), model.vocabulary)
    return {f"test_{k}": v for k, v in recurrent_nll(model, test_ids).items()}


def recurrent_graphs(model):
    """The step graph of a recurrent model: `(tokens[B,T], state...) -> (logits[B,T,V], next_state...)`."""
    from zoo.export import Graph

    names = [name for name, _ in model.state_sizes]
    signature = [tf.TensorSpec([None, None], tf.int32, name="tokens")] + [
        tf.TensorSpec([None, size], tf.float32, name=name) for name, size in model.state_sizes
    ]

    def step(tokens, *state):
        logits, next_state = model(tokens, list(state), training=False)
        outputs = {"logits": logits}
        outputs.update({f"next_{name}": s for name, s in zip(names, next_state)})
        return outputs

    def example(rng):
        batch, time = int(rng.integers(1, 4)), int(rng.integers(1, 9))
        inputs = {"tokens": rng.integers(0, model.vocab_size, (batch, time)).astype(np.int32)}
        for name, size in model.state_sizes:
            inputs[name] = rng.standard_normal((batch, size)).astype(np.float32) * 0.5
        return inputs

    axes = {"tokens": ["batch", "time"], "logits": ["batch", "time", model.vocab_size]}
    for name, size in model.state_sizes:
        axes[name] = axes[f"next_{name}"] = ["batch", size]
    return [Graph(name="step", fn=step, input_signature=signature, axes=axes, example=example,
                  ranges={"tokens": (0, model.vocab_size)})]


def sample_defaults(vocabulary: str) -> dict:
    """SAMPLE_DEFAULTS, with a prompt the vocabulary can spell (a model trained on other text)."""
    defaults = dict(SAMPLE_DEFAULTS)
    if not set(defaults["prompt"]) <= set(vocabulary):
        defaults["prompt"] = next((c for c in vocabulary if c.isalnum()), vocabulary[0])
    return defaults


def runtime_info(model) -> dict:
    """What `zoo.runtime` needs to sample: the vocabulary and which inputs carry state."""
    return {
        "kind": "text-recurrent",
        "graph": "step",
        "vocabulary": model.vocabulary,
        "state": {name: f"next_{name}" for name, _ in model.state_sizes},
        "sample_defaults": sample_defaults(model.vocabulary),
    }


def card_sample(folder, manifest) -> str:
    """A generated sample for the model card, made by the numpy/onnxruntime runtime."""
    from zoo.runtime import load, sample_text

    opts = manifest["runtime"]["sample_defaults"]
    sample = sample_text(load(folder), **opts)[0]
    command = (f"python -m zoo.runtime sample exports/{manifest['model']} --prompt \"{opts['prompt']}\" "
               f"--length {opts['length']} --temperature {opts['temperature']} --seed {opts['seed']}")
    return "\n".join(["## Sample", "", "```sh", command, "```", "", "```text", sample, "```"])
