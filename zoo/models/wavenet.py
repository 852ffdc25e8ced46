"""`wavenet`: an autoregressive model of 8 kHz speech, conditioned on the spoken digit.

Each sample is one of 256 mu-law codes. The network (van den Oord et al., 2016): an embedding of
the current code, stacks of causal dilated `Conv1D` layers with gated tanh/sigmoid units, residual
and skip connections, and a two-layer head giving a 256-way softmax over the next code. The digit
(global conditioning) adds a learned bias to every gate.

Two ways to run the same weights:
  call(samples, digit)        the whole sequence at once: training and teacher-forced scoring
  step(sample, digit, queues) one new sample, given each layer's queue of its last `dilation`
                              inputs ("fast WaveNet", Paine et al., 2016): generation in O(layers).
                              A queue is [B, dilation * C], its inputs side by side, oldest first.
Data: TFDS `spoken_digit` has one split; every recording of `test_speaker` is the test set.
"""

import dataclasses
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.runtime.audio import MU, SILENCE, mu_law_decode, mu_law_encode


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "spoken_digit"
    test_speaker: str = "theo"     # held out whole: the test set is his 500 recordings
    val_from: int = 45             # recordings 45..49 of each train speaker and digit: validation
    residual_channels: int = 32    # the width every layer keeps
    skip_channels: int = 64        # the skip projection feeds the head
    stacks: int = 1                # one stack of dilations 1, 2, ..., 512: a receptive field of
    layers_per_stack: int = 10     # 1,024 samples (128 ms). Each layer costs ~7 us per generated sample
                                   # in ONNX Runtime here: 10 layers of 32 generate ~11,000 samples/s,
                                   # 18 layers (2 stacks) only ~5,000, below real time (8,000)
    clip_length: int = 5000        # samples per training example (0.625 s; the median clip is 0.42 s)
    batch_size: int = 8
    epochs: int = 17               # 2.1-2.5 min an epoch here (it varies from run to run): under 45 min
    steps_per_epoch: int = 0       # 0: one pass over the train clips
    learning_rate: float = 1e-3    # Adam, cosine-decayed to a tenth over the run
    sample_rate: int = 8000
    generate_per_digit: int = 10   # generated clips per digit judged by the digit classifier
    generate_seconds: float = 1.0
    judge_epochs: int = 25         # the spoken-digit classifier's training (zoo.metrics.audio_classifier)
    seed: int = 0


PRESETS = {
    "default": Config(),
    "tiny": Config(residual_channels=4, skip_channels=8, stacks=1, layers_per_stack=3, clip_length=64, val_from=2,
                   batch_size=4, epochs=2, steps_per_epoch=3, generate_per_digit=1, generate_seconds=0.01,
                   judge_epochs=1),
}
DATASET = Config.dataset
NUM_CLASSES = 10
SAMPLE_DEFAULTS = {"digits": "0,1,2,3,4,5,6,7,8,9", "seconds": 1.0, "temperature": 1.0, "seed": 0,
                   "out": "samples/wavenet"}


@keras.saving.register_keras_serializable(package="zoo")
class ResidualBlock(keras.layers.Layer):
    """x -> (x + residual(z), z), z = tanh(filter) * sigmoid(gate) of a causal dilated conv.

    The digit's embedding is the gates' bias (the convolution has none). Each z also goes to the
    network's skip projection.
    """

    def __init__(self, channels, dilation, num_classes=NUM_CLASSES, residual=True, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.dilation, self.num_classes, self.has_residual = channels, dilation, num_classes, residual
        # Kernel size 2: tap 0 sees the input `dilation` samples back, tap 1 the current one.
        self.dilated = keras.layers.Conv1D(2 * channels, 2, dilation_rate=dilation, padding="causal",
                                           use_bias=False, name="dilated")
        self.condition = keras.layers.Embedding(num_classes, 2 * channels, name="condition")  # per-digit gate bias
        self.residual = keras.layers.Dense(channels, name="residual") if residual else None  # unused after the last

    def build(self, input_shape):
        self.dilated.build(input_shape)
        self.condition.build((None,))
        if self.residual is not None:
            self.residual.build((None, self.channels))
        self.built = True

    def _gate(self, x, h):
        z = tf.tanh(h[..., : self.channels]) * tf.sigmoid(h[..., self.channels :])
        return (x + self.residual(z) if self.has_residual else x), z

    def call(self, x, digit):
        """x [B, T, C] -> (out [B, T, C], z [B, T, C])."""
        return self._gate(x, self.dilated(x) + self.condition(digit)[:, None, :])

    def step(self, x, queue, digit_one_hot):
        """x [B, C] at time t; queue [B, dilation * C]: x at t-dilation, ..., t-1, oldest first.

        Returns (out, z, next_queue): the queue drops t-dilation and takes x. One matmul does both
        taps and the digit's bias: [x(t-dilation), x(t), one_hot(digit)] times the kernel [2, C, 2C]
        read as [2C, 2C] stacked on the digit embeddings. (Every node costs ~0.5 us per sample in
        ONNX Runtime, so the step is written with few: real-time generation depends on it.)
        """
        c = self.channels
        kernel = tf.concat([tf.reshape(self.dilated.kernel, [2 * c, 2 * c]), self.condition.embeddings], axis=0)
        if self.dilation > 1:  # one Split node rather than two slices
            oldest, rest = tf.split(queue, [c, (self.dilation - 1) * c], axis=-1)
            next_queue = tf.concat([rest, x], axis=-1)
        else:
            oldest, next_queue = queue, x
        h = tf.matmul(tf.concat([oldest, x, digit_one_hot], axis=-1), kernel)
        out, z = self._gate(x, h)
        return out, z, next_queue

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, dilation=self.dilation, num_classes=self.num_classes,
                      residual=self.has_residual)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class WaveNet(keras.Model):
    """`call(samples [B, T] codes, digit [B])` -> logits [B, T, 256] for the code after each one."""

    def __init__(self, residual_channels=32, skip_channels=64, stacks=2, layers_per_stack=9,
                 num_classes=NUM_CLASSES, sample_rate=8000, **kwargs):
        super().__init__(**kwargs)
        self.residual_channels, self.skip_channels = residual_channels, skip_channels
        self.stacks, self.layers_per_stack = stacks, layers_per_stack
        self.num_classes, self.sample_rate = num_classes, sample_rate
        self.dilations = [2**i for _ in range(stacks) for i in range(layers_per_stack)]
        self.receptive_field = sum(self.dilations) + 1
        self.embedding = keras.layers.Embedding(MU + 1, residual_channels, name="embedding")  # one-hot 1x1 conv
        self.blocks = [
            ResidualBlock(residual_channels, d, num_classes, residual=i < len(self.dilations) - 1, name=f"block_{i}")
            for i, d in enumerate(self.dilations)
        ]
        # The sum of per-layer skip projections, as one projection of all the layers' z side by side.
        self.skip = keras.layers.Dense(skip_channels, name="skip")
        self.hidden = keras.layers.Dense(skip_channels, activation="relu", name="hidden")
        self.out = keras.layers.Dense(MU + 1, name="logits")
        self.loss_tracker = keras.metrics.Mean(name="loss")  # nats per sample, real samples only

    def build(self, input_shape=(None, None)):
        self.embedding.build(input_shape)
        for block in self.blocks:
            block.build((None, None, self.residual_channels))
        self.skip.build((None, len(self.blocks) * self.residual_channels))
        self.hidden.build((None, self.skip_channels))
        self.out.build((None, self.skip_channels))
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _head(self, zs):
        return self.out(self.hidden(tf.nn.relu(self.skip(tf.concat(zs, axis=-1)))))

    def call(self, samples, digit, training=False):
        x, zs = self.embedding(samples), []
        for block in self.blocks:
            x, z = block(x, digit)
            zs.append(z)
        return self._head(zs)

    def initial_queues(self, batch):
        """All-zero queues [B, dilation * C]: the causal convolutions' zero padding before t = 0."""
        return [tf.zeros([batch, d * self.residual_channels]) for d in self.dilations]

    def step(self, sample, digit, queues):
        """sample [B] the current code -> (logits [B, 256] for the next one, next queues)."""
        x, zs, next_queues = self.embedding(sample), [], []
        digit_one_hot = tf.one_hot(digit, self.num_classes)
        for block, queue in zip(self.blocks, queues):
            x, z, next_queue = block.step(x, queue, digit_one_hot)
            zs.append(z)
            next_queues.append(next_queue)
        return self._head(zs), next_queues

    def _nll(self, data, training):
        """Mean NLL in nats over the real (weight 1) samples of a batch of (codes, digit, weight)."""
        codes, digit, weight = data
        logits = self(codes[:, :-1], digit, training=training)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes[:, 1:], logits=logits)
        return tf.reduce_sum(nll * weight) / tf.maximum(tf.reduce_sum(weight), 1.0), tf.reduce_sum(weight)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, count = self._nll(data, training=True)
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss, sample_weight=count)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        loss, count = self._nll(data, training=False)
        self.loss_tracker.update_state(loss, sample_weight=count)
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(residual_channels=self.residual_channels, skip_channels=self.skip_channels,
                      stacks=self.stacks, layers_per_stack=self.layers_per_stack,
                      num_classes=self.num_classes, sample_rate=self.sample_rate)
        return config


# --- Data -----------------------------------------------------------------------------------


def parse_filename(filename: str) -> tuple:
    """'9_george_33.wav' -> ('george', 33): the free-spoken-digit naming, digit_speaker_index."""
    parts = Path(filename).stem.split("_")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"spoken_digit filename {filename!r} is not <digit>_<speaker>_<index>.wav")
    return parts[1], int(parts[2])


def to_codes(clip) -> np.ndarray:
    """int16-range samples -> mu-law codes, with one silence code in front (the first input)."""
    return np.concatenate([[SILENCE], mu_law_encode(np.asarray(clip, np.float64) / 32768.0)]).astype(np.int32)


def split_clips(cfg, data_dir=None) -> dict:
    """{'train'|'validation'|'test': (list of code arrays, digits)}: the speaker split."""
    clips, labels, filenames = zdata.audio_clips(cfg.dataset, "train", data_dir)
    parsed = [parse_filename(f) for f in filenames]
    speakers = sorted({s for s, _ in parsed})
    if cfg.test_speaker not in speakers:
        raise ValueError(f"test_speaker {cfg.test_speaker!r} is not one of the speakers {speakers}")
    out = {"train": ([], []), "validation": ([], []), "test": ([], [])}
    for clip, label, (speaker, index) in zip(clips, labels, parsed):
        part = "test" if speaker == cfg.test_speaker else "validation" if index >= cfg.val_from else "train"
        out[part][0].append(to_codes(clip))
        out[part][1].append(label)
    return {k: (codes, np.asarray(digits, np.int32)) for k, (codes, digits) in out.items()}


def fixed_length(codes: list, length: int):
    """Code arrays -> ([N, length + 1] codes padded with silence, [N, length] weights of real targets).

    A clip longer than the window keeps its start (the model always starts from silence).
    """
    batch = np.full((len(codes), length + 1), SILENCE, np.int32)
    weight = np.zeros((len(codes), length), np.float32)
    for i, c in enumerate(codes):
        n = min(len(c), length + 1)
        batch[i, :n] = c[:n]
        weight[i, : n - 1] = 1.0
    return batch, weight


@dataclasses.dataclass
class AudioData:
    train: tf.data.Dataset
    val: tf.data.Dataset
    steps_per_epoch: int
    split_sizes: dict


def load_data(cfg, data_dir=None) -> AudioData:
    parts = split_clips(cfg, data_dir)

    def dataset(part, shuffle):
        codes, digits = parts[part]
        batch, weight = fixed_length(codes, cfg.clip_length)
        ds = tf.data.Dataset.from_tensor_slices((batch, digits, weight))
        if shuffle:
            ds = ds.shuffle(len(digits), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
        return ds.batch(cfg.batch_size, drop_remainder=shuffle).prefetch(tf.data.AUTOTUNE)

    sizes = {k: len(v[1]) for k, v in parts.items()}
    return AudioData(
        train=dataset("train", True),
        val=dataset("validation", False),
        steps_per_epoch=cfg.steps_per_epoch or sizes["train"] // cfg.batch_size,
        split_sizes={f"{k} (clips)": n for k, n in sizes.items()},
    )


def build_model(cfg, data=None):
    model = WaveNet(cfg.residual_channels, cfg.skip_channels, cfg.stacks, cfg.layers_per_stack,
                    sample_rate=cfg.sample_rate)
    model.build()
    steps = cfg.epochs * (data.steps_per_epoch if data is not None else 1)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, steps), alpha=0.1)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    return model


# --- Evaluation -----------------------------------------------------------------------------


def teacher_forced_nll(model, codes: list, digits: np.ndarray, batch_size=16) -> float:
    """Mean NLL in nats per sample over every sample of every clip (each scored from its start)."""
    order = np.argsort([len(c) for c in codes])  # similar lengths together: little padding
    total, count = 0.0, 0.0
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        length = -(-max(len(codes[j]) for j in idx) // 1024) * 1024  # few distinct shapes to trace
        batch, weight = fixed_length([codes[j] for j in idx], length)
        loss, n = model._nll((tf.constant(batch), tf.constant(digits[idx]), tf.constant(weight)), False)
        total += float(loss) * float(n)
        count += float(n)
    return total / count


def generate(model, digits, length, temperature=1.0, seed=0) -> np.ndarray:
    """Codes [len(digits), length] sampled with the cached step (Keras), from silence."""
    from zoo.runtime.core import sample_logits

    rng = np.random.default_rng(seed)
    digits = tf.constant(np.asarray(digits, np.int32))
    queues = model.initial_queues(len(digits))
    step = tf.function(model.step)
    current = np.full(len(digits), SILENCE, np.int32)
    codes = np.empty((len(digits), length), np.int32)
    for t in range(length):
        logits, queues = step(tf.constant(current), digits, queues)
        current = sample_logits(logits.numpy(), temperature, 0, rng).astype(np.int32)
        codes[:, t] = current
    return codes


EVAL_NOTE = (
    "Test set: every recording of the held-out speaker (`test_speaker` in the config), never seen "
    "in training or validation. NLL: teacher-forced, every sample of every test clip from its "
    "start, in bits per sample (nats / ln 2); `test_unigram_bits_per_sample` is the entropy of the "
    "test codes' own histogram, the score of a model that ignores all context. Digit accuracy: "
    "`generate_per_digit` clips per digit of `generate_seconds` generated at temperature 1 with "
    "the cached step, labelled by the zoo's spoken-digit classifier (zoo.metrics.audio_classifier), "
    "whose accuracy on the held-out speaker's real recordings is `classifier_test_accuracy`."
)


def evaluate(model, cfg, data_dir=None) -> dict:
    from zoo.metrics import audio_classifier

    parts = split_clips(cfg, data_dir)
    codes, digits = parts["test"]
    nll = teacher_forced_nll(model, codes, digits)
    histogram = np.bincount(np.concatenate([c[1:] for c in codes]), minlength=MU + 1) / sum(len(c) - 1 for c in codes)
    unigram = -float(np.sum(histogram[histogram > 0] * np.log2(histogram[histogram > 0])))

    judge = audio_classifier.load(cfg, data_dir)
    wanted = np.repeat(np.arange(NUM_CLASSES), cfg.generate_per_digit)
    length = int(round(cfg.generate_seconds * cfg.sample_rate))
    audio = mu_law_decode(generate(model, wanted, length, seed=cfg.seed))
    return {
        "test_nll_bits_per_sample": nll / math.log(2),
        "test_nll_nats_per_sample": nll,
        "test_unigram_bits_per_sample": unigram,
        "test_speaker": cfg.test_speaker,
        "test_clips": len(codes),
        "test_samples": int(sum(len(c) - 1 for c in codes)),
        "generated_digit_accuracy": float((judge.labels(audio) == wanted).mean()),
        "generated_clips": len(wanted),
        "classifier_test_accuracy": judge.info["test_accuracy"],
    }


# --- Export ---------------------------------------------------------------------------------


def export_graphs(model):
    """`network`: the full sequence (teacher-forced scoring); `step`: one sample with explicit queues."""
    from zoo.export import Graph

    n, c = len(model.dilations), model.residual_channels

    def network(samples, digit):
        return {"logits": model(samples, digit)}

    def network_example(rng):
        batch, length = int(rng.integers(1, 3)), int(rng.integers(1, 2 * model.receptive_field))
        return {"samples": rng.integers(0, MU + 1, (batch, length)).astype(np.int32),
                "digit": rng.integers(0, NUM_CLASSES, batch).astype(np.int32)}

    step_signature = [tf.TensorSpec([None], tf.int32, name="sample"), tf.TensorSpec([None], tf.int32, name="digit")]
    step_signature += [tf.TensorSpec([None, d * c], tf.float32, name=f"queue.{i}") for i, d in enumerate(model.dilations)]

    def step(sample, digit, *queues):
        logits, next_queues = model.step(sample, digit, list(queues))
        return {"logits": logits, **{f"next_queue.{i}": q for i, q in enumerate(next_queues)}}

    def step_example(rng):
        batch = int(rng.integers(1, 4))
        inputs = {"sample": rng.integers(0, MU + 1, batch).astype(np.int32),
                  "digit": rng.integers(0, NUM_CLASSES, batch).astype(np.int32)}
        inputs.update({f"queue.{i}": rng.standard_normal((batch, d * c)).astype(np.float32)
                       for i, d in enumerate(model.dilations)})
        return inputs

    step_axes = {"sample": ["batch"], "digit": ["batch"], "logits": ["batch", MU + 1]}
    for i, d in enumerate(model.dilations):
        step_axes[f"queue.{i}"] = step_axes[f"next_queue.{i}"] = ["batch", d * c]
    return [
        Graph("step", step, step_signature, step_axes, step_example),
        Graph("network", network,
              [tf.TensorSpec([None, None], tf.int32, name="samples"), tf.TensorSpec([None], tf.int32, name="digit")],
              {"samples": ["batch", "time"], "digit": ["batch"], "logits": ["batch", "time", MU + 1]},
              network_example),
    ]


def runtime_info(model) -> dict:
    return {"kind": "audio-generator", "step_graph": "step", "network_graph": "network",
            "dilations": model.dilations, "residual_channels": model.residual_channels,
            "receptive_field": model.receptive_field, "num_classes": NUM_CLASSES, "sample_rate": model.sample_rate,
            "mu": MU, "first_input": SILENCE, "sample_defaults": SAMPLE_DEFAULTS}


def card_sample(folder, manifest) -> str:
    """One generated `.wav` per digit beside the card, made by the numpy/onnxruntime runtime."""
    from zoo.runtime import load
    from zoo.runtime.audio import write_clips

    opts = manifest["runtime"]["sample_defaults"]
    paths = write_clips(load(folder), folder / "samples", opts["digits"], opts["seconds"], opts["temperature"],
                        opts["seed"])
    command = (f"python -m zoo.runtime sample exports/{manifest['model']} --digits {opts['digits']} "
               f"--seconds {opts['seconds']} --temperature {opts['temperature']} --seed {opts['seed']} "
               f"--out samples")
    links = ", ".join(f"[{p.stem}](samples/{p.name})" for p in paths)
    return "\n".join(["## Samples", "", "```sh", command, "```", "",
                      f"Generated clips, one per digit: {links}."])
