"""The wavenet's networks: the vocoder's residual blocks, the log-mel prior's blocks, and the Keras model
that holds both stages (zoo.models.wavenet explains them), with build_model."""

import math

import keras
import tensorflow as tf

from zoo.models.steps import Dropout, descend, global_mean, random_rows
from zoo.models.wavenet_presets import Config
from zoo.runtime.audio import HOP, MEL_BINS, MU, SILENT_FRAME


DATASET = Config.dataset
NUM_CLASSES = 10
# `seconds` is the longest a clip may grow (the prior ends each word itself); at most max_frames.
SAMPLE_DEFAULTS = {"digits": "0,1,2,3,4,5,6,7,8,9", "seconds": 1.0, "temperature": 1.0, "mel_temperature": 0.2,
                   "seed": 0, "out": "samples/wavenet", "vocoder": "wavenet"}

LOG_SCALE_MIN = math.log(0.01)  # the prior's smallest scale: silent frames are exact, not a spike


@keras.saving.register_keras_serializable(package="zoo")
class ResidualBlock(keras.layers.Layer):
    """x -> (x + residual(z), z), z = tanh(filter) * sigmoid(gate) of a causal dilated conv plus
    this layer's conditioning (the convolution has no bias). Each z also goes to the skip projection."""

    def __init__(self, channels, dilation, residual=True, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.dilation, self.has_residual = channels, dilation, residual
        # Kernel size 2: tap 0 sees the input `dilation` samples back, tap 1 the current one.
        self.dilated = keras.layers.Conv1D(2 * channels, 2, dilation_rate=dilation, padding="causal",
                                           use_bias=False, name="dilated")
        self.residual = keras.layers.Dense(channels, name="residual") if residual else None  # unused after the last

    def build(self, input_shape):
        self.dilated.build(input_shape)
        if self.residual is not None:
            self.residual.build((None, self.channels))
        self.built = True

    def _gate(self, x, h):
        filter_, gate = tf.split(h, 2, axis=-1)  # one Split node rather than two slices
        z = tf.tanh(filter_) * tf.sigmoid(gate)
        return (x + self.residual(z) if self.has_residual else x), z

    def call(self, x, condition):
        """x [B, T, C], condition [B, T, 2C] -> (out [B, T, C], z [B, T, C])."""
        return self._gate(x, self.dilated(x) + condition)

    def step(self, x, queue, condition):
        """x [B, C] at time t; queue [B, dilation * C]: x at t-dilation, ..., t-1, oldest first.

        Returns (out, z, next_queue): the queue drops t-dilation and takes x. One matmul does both
        taps: [x(t-dilation), x(t)] times the kernel [2, C, 2C] read as [2C, 2C]. (Every node costs
        ~0.5 us per sample in ONNX Runtime, so the step is written with few.)
        """
        c = self.channels
        if self.dilation > 1:  # one Split node rather than two slices
            oldest, rest = tf.split(queue, [c, (self.dilation - 1) * c], axis=-1)
            next_queue = tf.concat([rest, x], axis=-1)
        else:
            oldest, next_queue = queue, x
        h = tf.matmul(tf.concat([oldest, x], axis=-1), tf.reshape(self.dilated.kernel, [2 * c, 2 * c]))
        out, z = self._gate(x, h + condition)
        return out, z, next_queue

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, dilation=self.dilation, residual=self.has_residual)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class PriorBlock(keras.layers.Layer):
    """A pre-norm transformer decoder block: causal self-attention over the frames so far, then an MLP.

    Written with plain Dense layers rather than MultiHeadAttention so that the same weights run over
    a whole sequence (`call`) and one frame at a time against a key/value cache (`step`)."""

    def __init__(self, units, heads, max_frames, attention_dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.units, self.heads, self.max_frames, self.attention_dropout = units, heads, max_frames, attention_dropout
        self.norm_1 = keras.layers.LayerNormalization(name="norm_1")
        self.qkv = keras.layers.Dense(3 * units, name="qkv")  # queries, keys and values in one matmul
        self.attention_out = keras.layers.Dense(units, name="attention_out")
        self.dropout = Dropout(attention_dropout)  # on the attention weights, as MultiHeadAttention
        self.norm_2 = keras.layers.LayerNormalization(name="norm_2")
        self.up = keras.layers.Dense(4 * units, name="up")
        self.down = keras.layers.Dense(units, name="down")

    def build(self, input_shape=None):
        for layer, width in ((self.norm_1, self.units), (self.qkv, self.units), (self.attention_out, self.units),
                             (self.norm_2, self.units), (self.up, self.units), (self.down, 4 * self.units)):
            layer.build((None, width))
        self.built = True

    def _split_heads(self, x):  # [B, T, C] -> [B, H, T, C / H]
        shape = tf.shape(x)
        return tf.transpose(tf.reshape(x, [shape[0], shape[1], self.heads, self.units // self.heads]), [0, 2, 1, 3])

    def _attend(self, q, k, v, visible, training):
        """q [B, Tq, C], k and v [B, Tk, C], visible [B or 1, Tq, Tk] (bool) -> [B, Tq, C]."""
        scores = tf.matmul(self._split_heads(q), self._split_heads(k), transpose_b=True)
        scores = tf.where(visible[:, None], scores * (self.units // self.heads) ** -0.5, -1e9)
        weights = self.dropout(tf.nn.softmax(scores, axis=-1), training=training)
        out = tf.transpose(tf.matmul(weights, self._split_heads(v)), [0, 2, 1, 3])
        shape = tf.shape(q)
        return self.attention_out(tf.reshape(out, [shape[0], shape[1], self.units]))

    def _mlp(self, h):
        return h + self.down(keras.activations.gelu(self.up(self.norm_2(h)), approximate=True))  # tanh GELU: converts

    def call(self, h, training=False):
        """h [B, T, C] -> [B, T, C]; position t attends to positions 0..t."""
        q, k, v = tf.split(self.qkv(self.norm_1(h)), 3, axis=-1)
        t = tf.range(tf.shape(h)[1])
        h = h + self._attend(q, k, v, (t[:, None] >= t[None, :])[None], training)
        return self._mlp(h)

    def step(self, h, keys, values, position):
        """h [B, C] at `position` [B]; keys and values [B, max_frames, C], filled before `position`.

        Returns (out [B, C], keys, values with this frame's written at `position`)."""
        q, k, v = tf.split(self.qkv(self.norm_1(h)), 3, axis=-1)
        slot = tf.one_hot(position, self.max_frames)[:, :, None]  # [B, T, 1]
        keys = keys * (1.0 - slot) + slot * k[:, None]
        values = values * (1.0 - slot) + slot * v[:, None]
        visible = tf.range(self.max_frames)[None, None, :] <= position[:, None, None]  # [B, 1, T]
        h = h + self._attend(q[:, None], keys, values, visible, False)[:, 0]
        return self._mlp(h), keys, values

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, heads=self.heads, max_frames=self.max_frames,
                      attention_dropout=self.attention_dropout)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class MelPrior(keras.layers.Layer):
    """p(frame t | frames before t, digit): pre-net on the previous frame, a small causal transformer,
    mixture head.

    Outputs per frame: mixture logits [.., K], means and log-scales [.., K, MEL_BINS], and a stop
    logit (positive: the word has ended before this frame). One frame at a time (`step`), the state
    [B, state_size] holds every block's keys and values of the frames so far (blocks x 2 x max_frames
    x units, in that order) and, last, the number of frames so far: all zeros starts a clip.
    """

    def __init__(self, units=128, prenet_units=128, mixtures=4, dropout=0.5, blocks=3, heads=4,
                 attention_dropout=0.1, max_frames=64, num_classes=NUM_CLASSES, mel_bins=MEL_BINS, **kwargs):
        super().__init__(**kwargs)
        self.units, self.prenet_units, self.mixtures, self.dropout_rate = units, prenet_units, mixtures, dropout
        self.num_blocks, self.heads, self.attention_dropout, self.max_frames = blocks, heads, attention_dropout, max_frames
        self.num_classes, self.mel_bins = num_classes, mel_bins
        self.state_size = blocks * 2 * max_frames * units + 1
        self.prenet_1 = keras.layers.Dense(prenet_units, activation="relu", name="prenet_1")
        self.prenet_2 = keras.layers.Dense(prenet_units, activation="relu", name="prenet_2")
        self.dropout = Dropout(dropout)
        self.digit_embedding = keras.layers.Embedding(num_classes, prenet_units, name="digit")
        self.project = keras.layers.Dense(units, name="project")
        self.positions = keras.layers.Embedding(max_frames, units, name="positions")  # learned, one per frame
        self.blocks = [PriorBlock(units, heads, max_frames, attention_dropout, name=f"block_{i}") for i in range(blocks)]
        self.final_norm = keras.layers.LayerNormalization(name="final_norm")
        self.head = keras.layers.Dense(mixtures * (1 + 2 * mel_bins) + 1, name="head")

    def build(self, input_shape=None):
        self.prenet_1.build((None, self.mel_bins))
        self.prenet_2.build((None, self.prenet_units))
        self.digit_embedding.build((None,))
        self.project.build((None, 2 * self.prenet_units))
        self.positions.build((None,))
        for block in self.blocks:
            block.build()
        self.final_norm.build((None, self.units))
        self.head.build((None, self.units))
        self.built = True

    def _inputs(self, frames, digit, training):
        x = self.dropout(self.prenet_1(frames), training=training)
        x = self.dropout(self.prenet_2(x), training=training)
        d = self.digit_embedding(digit)
        if len(frames.shape) == 3:
            d = tf.broadcast_to(d[:, None, :], tf.concat([tf.shape(x)[:2], [self.prenet_units]], 0))
        return tf.concat([x, d], axis=-1)

    def _params(self, h):
        k, m = self.mixtures, self.mel_bins
        p = self.head(h)
        lead = tf.shape(p)[:-1]
        mixture_logits = p[..., :k]
        means = tf.reshape(p[..., k : k + k * m], tf.concat([lead, [k, m]], 0))
        raw = tf.reshape(p[..., k + k * m : k + 2 * k * m], tf.concat([lead, [k, m]], 0))
        log_scales = LOG_SCALE_MIN + tf.nn.softplus(raw - LOG_SCALE_MIN)
        return mixture_logits, means, log_scales, p[..., -1]

    def call(self, frames, digit, training=False):
        """frames [B, F, M] (the previous frame at each position, F <= max_frames) -> the four outputs, per frame."""
        h = self.project(self._inputs(frames, digit, training)) + self.positions(tf.range(tf.shape(frames)[1]))[None]
        for block in self.blocks:
            h = block(h, training=training)
        return self._params(self.final_norm(h))

    def step(self, frame, digit, state):
        """frame [B, M], state [B, state_size] -> (mixture_logits, means, log_scales, stop_logit, next_state)."""
        batch, n = tf.shape(frame)[0], len(self.blocks)
        count = state[:, -1:]
        position = tf.clip_by_value(tf.cast(count[:, 0], tf.int32), 0, self.max_frames - 1)
        cache = tf.reshape(state[:, :-1], [batch, n, 2, self.max_frames, self.units])
        h = self.project(self._inputs(frame, digit, False)) + self.positions(position)
        written = []
        for i, block in enumerate(self.blocks):
            h, keys, values = block.step(h, cache[:, i, 0], cache[:, i, 1], position)
            written += [keys, values]
        next_state = tf.concat([tf.reshape(tf.stack(written, axis=1), [batch, -1]), count + 1.0], axis=-1)
        return (*self._params(self.final_norm(h)), next_state)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, prenet_units=self.prenet_units, mixtures=self.mixtures,
                      dropout=self.dropout_rate, blocks=self.num_blocks, heads=self.heads,
                      attention_dropout=self.attention_dropout, max_frames=self.max_frames,
                      num_classes=self.num_classes, mel_bins=self.mel_bins)
        return config


def mixture_nll(frames, mixture_logits, means, log_scales):
    """-log p(frame) under the mixture of diagonal Gaussians, in nats, per frame: [..]."""
    z = (frames[..., None, :] - means) * tf.exp(-log_scales)
    per_component = -0.5 * tf.reduce_sum(tf.square(z) + 2.0 * log_scales + math.log(2 * math.pi), axis=-1)
    return -tf.reduce_logsumexp(tf.nn.log_softmax(mixture_logits, axis=-1) + per_component, axis=-1)


@keras.saving.register_keras_serializable(package="zoo")
class WaveNet(keras.Model):
    """The prior and the vocoder. `call(samples [B, T], mel [B, F, M], digit [B])` -> the vocoder's
    logits [B, T, 256] for the code after each one (T <= F * HOP)."""

    def __init__(self, residual_channels=32, skip_channels=64, stacks=1, layers_per_stack=10, frame_channels=64,
                 frame_layers=1, prior_units=128, prenet_units=128, mixtures=4, prior_dropout=0.5, max_frames=64,
                 mel_noise=0.0, prior_blocks=3, prior_heads=4, attention_dropout=0.1, num_classes=NUM_CLASSES,
                 sample_rate=8000, **kwargs):
        super().__init__(**kwargs)
        self.residual_channels, self.skip_channels = residual_channels, skip_channels
        self.stacks, self.layers_per_stack, self.frame_channels = stacks, layers_per_stack, frame_channels
        self.frame_layers = frame_layers
        self.prior_units, self.prenet_units, self.mixtures = prior_units, prenet_units, mixtures
        self.prior_dropout, self.max_frames, self.mel_noise = prior_dropout, max_frames, mel_noise
        self.prior_blocks, self.prior_heads, self.attention_dropout = prior_blocks, prior_heads, attention_dropout
        self.num_classes, self.sample_rate = num_classes, sample_rate
        self.dilations = [2**i for _ in range(stacks) for i in range(layers_per_stack)]
        self.receptive_field = sum(self.dilations) + 1
        self.condition_channels = 2 * residual_channels * len(self.dilations)
        # Vocoder.
        self.embedding = keras.layers.Embedding(MU + 1, residual_channels, name="embedding")  # one-hot 1x1 conv
        # Each frame with its two neighbours; past either end the neighbour is a silent frame, so a
        # clip's conditioning does not depend on how long the other clips of its batch are.
        self.frame_conv = keras.layers.Conv1D(frame_channels, 3, padding="valid", name="frame_conv")
        # Further 3-frame convolutions, each added to its input (residual), for a wider, deeper view.
        self.frame_convs = [keras.layers.Conv1D(frame_channels, 3, padding="valid", name=f"frame_conv_{i}")
                            for i in range(1, frame_layers)]
        self.frame_digit = keras.layers.Embedding(num_classes, frame_channels, name="frame_digit")
        # Every layer's 1x1 projection of the frame features, side by side: one matmul a frame.
        self.condition_projection = keras.layers.Dense(self.condition_channels, name="condition_projection")
        self.blocks = [ResidualBlock(residual_channels, d, residual=i < len(self.dilations) - 1, name=f"block_{i}")
                       for i, d in enumerate(self.dilations)]
        # The sum of per-layer skip projections, as one projection of all the layers' z side by side.
        self.skip = keras.layers.Dense(skip_channels, name="skip")
        self.hidden = keras.layers.Dense(skip_channels, activation="relu", name="hidden")
        self.out = keras.layers.Dense(MU + 1, name="logits")
        # Prior.
        self.prior = MelPrior(prior_units, prenet_units, mixtures, prior_dropout, prior_blocks, prior_heads,
                              attention_dropout, max_frames, num_classes, name="prior")
        self.prior_state_size = self.prior.state_size
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.vocoder_tracker = keras.metrics.Mean(name="vocoder_loss")  # nats per real sample
        self.prior_tracker = keras.metrics.Mean(name="prior_loss")  # nats per mel value + stop cross-entropy

    def build(self, input_shape=None):
        self.embedding.build((None, None))
        self.frame_conv.build((None, None, MEL_BINS))
        for conv in self.frame_convs:
            conv.build((None, None, self.frame_channels))
        self.frame_digit.build((None,))
        self.condition_projection.build((None, None, self.frame_channels))
        for block in self.blocks:
            block.build((None, None, self.residual_channels))
        self.skip.build((None, len(self.blocks) * self.residual_channels))
        self.hidden.build((None, self.skip_channels))
        self.out.build((None, self.skip_channels))
        self.prior.build()
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.vocoder_tracker, self.prior_tracker]

    # --- vocoder ---

    def condition(self, mel, digit):
        """mel [B, F, M], digit [B] -> every layer's gate bias per frame [B, F, layers * 2C]."""
        pad = self.frame_layers  # silent frames on either side: each convolution eats one at each end
        # (a Pad of constant size: tf.fill of [batch, pad, M] converts to an Expand whose shape is
        # computed at run time, which tract refuses)
        padded = tf.pad(mel, [[0, 0], [pad, pad], [0, 0]], constant_values=SILENT_FRAME)
        h = tf.tanh(self.frame_conv(padded) + self.frame_digit(digit)[:, None, :])
        for conv in self.frame_convs:
            h = h[:, 1:-1] + tf.tanh(conv(h))
        return self.condition_projection(h)

    def _head(self, zs):
        return self.out(self.hidden(tf.nn.relu(self.skip(tf.concat(zs, axis=-1)))))

    def call(self, samples, mel, digit, training=False):
        time = tf.shape(samples)[1]
        # frame t // HOP at sample t (a Gather: tf.repeat and a slice to `time` convert to shape
        # arithmetic that tract cannot follow)
        per_sample = tf.gather(self.condition(mel, digit), tf.range(time) // HOP, axis=1)
        conditions = tf.split(per_sample, len(self.blocks), axis=-1)
        x, zs = self.embedding(samples), []
        for block, condition in zip(self.blocks, conditions):
            x, z = block(x, condition)
            zs.append(z)
        return self._head(zs)

    def initial_queues(self, batch):
        """All-zero queues [B, dilation * C]: the causal convolutions' zero padding before t = 0."""
        return [tf.zeros([batch, d * self.residual_channels]) for d in self.dilations]

    def step(self, sample, condition, queues):
        """sample [B] the current code, condition [B, layers * 2C] its frame's row -> (logits [B, 256]
        for the next code, next queues)."""
        x, zs, next_queues = self.embedding(sample), [], []
        for block, queue, row in zip(self.blocks, queues, tf.split(condition, len(self.blocks), axis=-1)):
            x, z, next_queue = block.step(x, queue, row)
            zs.append(z)
            next_queues.append(next_queue)
        return self._head(zs), next_queues

    # --- prior ---

    def prior_params(self, frames, digit, training=False):
        """Teacher forcing: frames [B, F, M] -> the prior's outputs for each of them (from the
        silent "go" frame and the frames before it)."""
        shifted = tf.pad(frames[:, :-1], [[0, 0], [1, 0], [0, 0]], constant_values=SILENT_FRAME)  # go frame first
        return self.prior(shifted, digit, training=training)

    def prior_step(self, frame, digit, state):
        return self.prior.step(frame, digit, state)

    # --- objectives ---

    def vocoder_nll(self, codes, mel, digit, weight, training=False):
        """(mean NLL in nats over the real (weight 1) samples, their count; under a strategy: the
        replica's share of the global batch's mean, and the count it stands for: steps.global_mean)."""
        logits = self(codes[:, :-1], mel, digit, training=training)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes[:, 1:], logits=logits)
        return global_mean(tf.reduce_sum(nll * weight), tf.reduce_sum(weight))

    def prior_nll(self, frames, lengths, digit, training=False):
        """(nats per mel value over the real frames + the stop cross-entropy over frames 0..length,
        the number of real frames; under a strategy as in vocoder_nll)."""
        mixture_logits, means, log_scales, stop_logit = self.prior_params(frames, digit, training)
        t = tf.range(tf.shape(frames)[1])[None, :]
        real = tf.cast(t < lengths[:, None], tf.float32)
        mel, count = global_mean(tf.reduce_sum(mixture_nll(frames, mixture_logits, means, log_scales) * real),
                                 tf.reduce_sum(real))
        judged = tf.cast(t <= lengths[:, None], tf.float32)  # every real frame, and the one past the end
        stop = tf.nn.sigmoid_cross_entropy_with_logits(labels=1.0 - real, logits=stop_logit)
        stop, _ = global_mean(tf.reduce_sum(stop * judged), tf.reduce_sum(judged))
        return mel / MEL_BINS + stop, count

    def _stage_losses(self, data, training):
        vocoder, prior = data
        mel = vocoder["mel"]
        if training and self.mel_noise:  # the step's draw: the same on any number of workers (steps.random_rows)
            frames = tf.shape(mel)[1:]
            mel = mel + self.mel_noise * random_rows(
                lambda n, seed: tf.random.stateless_normal(tf.concat([[n], frames], 0), seed), tf.shape(mel)[0],
                self.optimizer.iterations, 0)
        v, v_count = self.vocoder_nll(vocoder["codes"], mel, vocoder["digit"], vocoder["weight"], training)
        p, p_count = self.prior_nll(prior["frames"], prior["lengths"], prior["digit"], training)
        self.vocoder_tracker.update_state(v, sample_weight=v_count)
        self.prior_tracker.update_state(p, sample_weight=p_count)
        return v + p

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self._stage_losses(data, training=True)
        descend(self.optimizer, tape, loss, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        self.loss_tracker.update_state(self._stage_losses(data, training=False))
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(residual_channels=self.residual_channels, skip_channels=self.skip_channels,
                      stacks=self.stacks, layers_per_stack=self.layers_per_stack,
                      frame_channels=self.frame_channels, frame_layers=self.frame_layers, prior_units=self.prior_units,
                      prenet_units=self.prenet_units, mixtures=self.mixtures, prior_dropout=self.prior_dropout,
                      max_frames=self.max_frames, mel_noise=self.mel_noise, prior_blocks=self.prior_blocks,
                      prior_heads=self.prior_heads, attention_dropout=self.attention_dropout,
                      num_classes=self.num_classes, sample_rate=self.sample_rate)
        return config


def build_model(cfg, data=None):
    model = WaveNet(cfg.residual_channels, cfg.skip_channels, cfg.stacks, cfg.layers_per_stack, cfg.frame_channels,
                    cfg.frame_layers, cfg.prior_units, cfg.prenet_units, cfg.mixtures, cfg.prior_dropout,
                    cfg.max_frames, cfg.mel_noise, cfg.prior_blocks, cfg.prior_heads, cfg.attention_dropout,
                    sample_rate=cfg.sample_rate)
    model.build()
    steps = cfg.epochs * (data.steps_per_epoch if data is not None else 1)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, steps), alpha=0.1)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0))
    return model
