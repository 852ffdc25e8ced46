"""`diffusion`: a class-conditional DDPM on MNIST, sampled with DDPM or DDIM and classifier-free guidance.

Network: a small U-Net noise predictor (28x28 -> 14x14 -> 7x7 and back) of residual blocks with
GroupNormalization and SiLU, a sinusoidal time embedding, self-attention at 7x7, skip connections,
and a class embedding whose extra "no label" class (label dropout in training) gives classifier-free
guidance. Objective: predict the noise (epsilon) of x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t)
epsilon. An exponential moving average of the weights is what samples and what is exported. The
noise schedule and both samplers are numpy (`zoo.runtime.diffusion`), shared with the runtime.
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf

from zoo import data as zdata
# the contract's hooks (zoo.registry.HOOKS), defined without TensorFlow
from zoo.models.diffusion_presets import Config, PRESETS, EVAL_KEYS, check_config  # noqa: F401
from zoo.models.images import NUM_CLASSES, ImageData
from zoo.models.steps import VALIDATION_STEP, descend, random_rows
from zoo.runtime import diffusion as dmath

NULL_LABEL = dmath.NULL_LABEL  # the extra embedding row for "no label": the unconditional half of guidance


DATASET = Config.dataset
SAMPLE_DEFAULTS = {"labels": "0,1,2,3,4,5,6,7,8,9", "per_label": 8, "seed": 0, "out": "samples/diffusion.png",
                   "sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 2.0}


@keras.saving.register_keras_serializable(package="zoo")
class SinusoidalEmbedding(keras.layers.Layer):
    """Integer timesteps [B] -> [B, dim] sines and cosines of geometrically spaced frequencies."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def call(self, t):
        half = self.dim // 2
        # made inside call, so the exported graph holds it as a constant, not a stray input
        freqs = tf.exp(-math.log(10000.0) * tf.range(half, dtype=tf.float32) / half)
        angles = tf.cast(t, tf.float32)[:, None] * freqs[None, :]
        return tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim)
        return config


def residual_block(x, emb, width, groups, name):
    """GroupNorm, SiLU, 3x3 conv, + the embedding's bias, GroupNorm, SiLU, 3x3 conv; residual sum."""
    h = keras.layers.GroupNormalization(groups, name=f"{name}_norm1")(x)
    h = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv1")(keras.activations.silu(h))
    h = h + keras.layers.Dense(width, name=f"{name}_emb")(emb)[:, None, None, :]
    h = keras.layers.GroupNormalization(groups, name=f"{name}_norm2")(h)
    # zero-initialised: every block starts as the identity, which keeps early training stable
    h = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer="zeros", name=f"{name}_conv2")(
        keras.activations.silu(h))
    if x.shape[-1] != width:
        x = keras.layers.Conv2D(width, 1, name=f"{name}_skip")(x)
    return x + h


def attention_block(x, heads, groups, name):
    """Self-attention over the positions of a small feature map, residual."""
    size, width = x.shape[1], x.shape[-1]
    h = keras.layers.GroupNormalization(groups, name=f"{name}_norm")(x)
    h = keras.layers.Reshape((size * size, width))(h)
    h = keras.layers.MultiHeadAttention(heads, width // heads, name=f"{name}_attention")(h, h)
    return x + keras.layers.Reshape((size, size, width))(h)


def build_unet(widths=(16, 32, 64), blocks=1, heads=4, groups=8, conditional=True, name="unet"):
    """(x_t [B, 28, 28, 1], t [B] int32[, label [B] int32 in 0..10]) -> epsilon [B, 28, 28, 1]."""
    x_t = keras.Input((28, 28, 1), name="x_t")
    t = keras.Input((), dtype="int32", name="t")
    inputs = [x_t, t]
    emb_dim = 4 * widths[0]
    emb = SinusoidalEmbedding(widths[0], name="time_sinusoid")(t)
    emb = keras.layers.Dense(emb_dim, activation="silu", name="time_dense1")(emb)
    emb = keras.layers.Dense(emb_dim, name="time_dense2")(emb)
    if conditional:
        label = keras.Input((), dtype="int32", name="label")
        inputs.append(label)
        emb = emb + keras.layers.Embedding(NUM_CLASSES + 1, emb_dim, name="label_embedding")(label)
    emb = keras.activations.silu(emb)

    h = keras.layers.Conv2D(widths[0], 3, padding="same", name="conv_in")(x_t)
    skips = [h]
    for level, width in enumerate(widths):  # down: 28 -> 14 -> 7
        for b in range(blocks):
            h = residual_block(h, emb, width, groups, f"down{level}_{b}")
            if level == len(widths) - 1:
                h = attention_block(h, heads, groups, f"down{level}_{b}_attn")
            skips.append(h)
        if level < len(widths) - 1:
            h = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"down{level}_downsample")(h)
            skips.append(h)
    h = residual_block(h, emb, widths[-1], groups, "mid_0")  # the bottleneck at 7x7
    h = attention_block(h, heads, groups, "mid_attn")
    h = residual_block(h, emb, widths[-1], groups, "mid_1")
    for level in reversed(range(len(widths))):  # up: 7 -> 14 -> 28, each block takes one skip
        for b in range(blocks + 1):
            h = keras.layers.Concatenate(name=f"up{level}_{b}_concat")([h, skips.pop()])
            h = residual_block(h, emb, widths[level], groups, f"up{level}_{b}")
            if level == len(widths) - 1:
                h = attention_block(h, heads, groups, f"up{level}_{b}_attn")
        if level > 0:
            h = keras.layers.UpSampling2D(2, name=f"up{level}_upsample")(h)
            h = keras.layers.Conv2D(widths[level - 1], 3, padding="same", name=f"up{level}_upconv")(h)
    h = keras.activations.silu(keras.layers.GroupNormalization(groups, name="norm_out")(h))
    epsilon = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer="zeros", name="epsilon")(h)
    return keras.Model(inputs, epsilon, name=name)


@keras.saving.register_keras_serializable(package="zoo")
class Diffusion(keras.Model):
    """The trained `network` and its exponential moving average `ema_network` (what samples)."""

    def __init__(self, widths=(16, 32, 64), blocks=1, heads=4, groups=8, conditional=True, label_dropout=0.1,
                 schedule="cosine", timesteps=1000, ema_decay=0.999, **kwargs):
        super().__init__(**kwargs)
        self.widths, self.blocks, self.heads, self.groups = tuple(widths), blocks, heads, groups
        self.conditional, self.label_dropout, self.ema_decay = conditional, label_dropout, ema_decay
        self.schedule = dmath.Schedule(schedule, timesteps)
        self.network = build_unet(self.widths, blocks, heads, groups, conditional, name="network")
        self.ema_network = build_unet(self.widths, blocks, heads, groups, conditional, name="ema_network")
        self.ema_network.set_weights(self.network.get_weights())
        self.loss_tracker = keras.metrics.Mean(name="loss")  # mean squared error of epsilon per pixel

    def build(self, input_shape=None):
        self.built = True  # both networks are functional models, built in __init__

    @property
    def metrics(self):
        return [self.loss_tracker]

    def count_params(self):
        """The denoiser's parameters (what the model cards report); the EMA copy holds as many again."""
        return self.network.count_params()

    def call(self, x_t, t, label=None, training=False):
        """The EMA network's epsilon for noisy images x_t in [-1, 1]-scale at integer steps t."""
        return self.ema_network([x_t, t, label] if self.conditional else [x_t, t], training=training)

    def _noised(self, images, labels, step=0, validation=False):
        """(network inputs, target noise) for a batch: random t, noise, and dropped labels, training
        step `step`'s draws (steps.random_rows: the same on any number of workers). `validation`: the
        same t and noise every epoch (so epochs compare) and no label dropped."""
        x0 = tf.cast(images, tf.float32) / 127.5 - 1.0
        batch = tf.shape(x0)[0]
        alpha_bar = tf.constant(self.schedule.alpha_bar, tf.float32)  # float64 numpy math, cast once
        step, pixels = VALIDATION_STEP if validation else step, tf.shape(x0)[1:]
        t = random_rows(lambda n, s: tf.random.stateless_uniform([n], s, 0, self.schedule.steps, dtype=tf.int32),
                        batch, step, 0)
        noise = random_rows(lambda n, s: tf.random.stateless_normal(tf.concat([[n], pixels], 0), s), batch, step, 1)
        if validation:
            drop = tf.zeros([batch], tf.bool)
        else:
            drop = random_rows(lambda n, s: tf.random.stateless_uniform([n], s), batch, step, 2) < self.label_dropout
        a = tf.gather(alpha_bar, t)[:, None, None, None]
        x_t = tf.sqrt(a) * x0 + tf.sqrt(1.0 - a) * noise
        inputs = [x_t, t]
        if self.conditional:
            inputs.append(tf.where(drop, NULL_LABEL, tf.cast(labels, tf.int32)))
        return inputs, noise

    def train_step(self, data):
        images, labels = data
        inputs, noise = self._noised(images, labels, step=self.optimizer.iterations)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(noise - self.network(inputs, training=True)))
        descend(self.optimizer, tape, loss, self.network.trainable_variables)
        for ema, weight in zip(self.ema_network.weights, self.network.weights):
            ema.assign(self.ema_decay * ema + (1.0 - self.ema_decay) * weight)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        images, labels = data
        inputs, noise = self._noised(images, labels, validation=True)
        self.loss_tracker.update_state(tf.reduce_mean(tf.square(noise - self.ema_network(inputs))))
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(widths=list(self.widths), blocks=self.blocks, heads=self.heads, groups=self.groups,
                      conditional=self.conditional, label_dropout=self.label_dropout,
                      schedule=self.schedule.kind, timesteps=self.schedule.steps, ema_decay=self.ema_decay)
        return config


def load_data(cfg, data_dir=None) -> ImageData:
    x, y = zdata.image_arrays(cfg.dataset, "train", data_dir)
    steps = cfg.steps_per_epoch or len(x) // cfg.batch_size
    return ImageData(
        train=zdata.image_batches(x, y, cfg.batch_size, cfg.seed).repeat(),
        # The EMA network's loss on 2,000 train images at fixed t and noise, for the log only.
        val=zdata.image_batches(x[-2000:], y[-2000:], 500, cfg.seed, shuffle=False, drop_remainder=False),
        steps_per_epoch=steps,
        split_sizes={"train": len(x)},  # the test split is read by evaluate() alone
    )


MONITOR = None  # the EMA weights of the last epoch are the ones to keep


def build_model(cfg, data=None):
    model = Diffusion(widths=cfg.widths, blocks=cfg.blocks, heads=cfg.heads, groups=cfg.groups,
                      conditional=cfg.conditional, label_dropout=cfg.label_dropout, schedule=cfg.schedule,
                      timesteps=cfg.timesteps, ema_decay=cfg.ema_decay)
    model.build()
    total = cfg.epochs * (data.steps_per_epoch if data is not None else 1000)
    warmup = min(cfg.warmup_steps, total - 1)
    learning_rate = keras.optimizers.schedules.CosineDecay(
        0.0, max(total - warmup, 1), alpha=0.02, warmup_target=cfg.learning_rate, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=1.0))
    return model


def tf_denoiser(model):
    """`denoise(x_t, t, labels) -> epsilon` in numpy around the Keras EMA network (one traced graph)."""
    signature = [tf.TensorSpec([None, 28, 28, 1], tf.float32), tf.TensorSpec([None], tf.int32)]
    if model.conditional:
        signature.append(tf.TensorSpec([None], tf.int32))
    step = tf.function(lambda *inputs: model.ema_network(list(inputs)), input_signature=signature)

    def denoise(x_t, t, labels=None):
        inputs = [x_t.astype(np.float32), t.astype(np.int32)]
        if model.conditional:
            inputs.append(labels.astype(np.int32))
        return step(*inputs).numpy()

    return denoise


EVAL_NOTE = (
    "Each sampler row: FID of `eval_samples` generated images (equal counts per class, DDIM with eta 0) "
    "against the 10,000 test images, on the 128-d penultimate features of the zoo's mnist classifier "
    "(zoo.metrics.classifier), and how often that classifier gives the requested label. FID from few "
    "samples is biased upwards: compare rows of the same sample count only. Images per second: the "
    "TensorFlow denoiser in batches of 250 inside the numpy sampler, on this machine."
)


def row_key(row: str) -> str:
    """"ddim-50" -> "ddim50", "ddim-50@2" -> "ddim50_guidance2": the metric names of a sampler row."""
    name, _, scale = row.partition("@")
    return name.replace("-", "") + (f"_guidance{scale}" if scale else "")


def evaluate(model, cfg, data_dir=None) -> dict:
    from zoo.metrics.classifier import judge_samples

    denoise = tf_denoiser(model)
    labels = np.arange(cfg.eval_samples) % NUM_CLASSES
    metrics = {"eval_guidance": cfg.eval_guidance, "eval_rows": list(cfg.eval_rows)}
    for row in cfg.eval_rows:
        kind, steps, guidance = dmath.parse_sampler(row)
        guidance = cfg.eval_guidance if guidance is None else guidance
        start = time.perf_counter()
        images = dmath.sample(denoise, model.schedule, labels, kind, steps, guidance=guidance, seed=cfg.seed,
                              conditional=model.conditional)
        seconds = time.perf_counter() - start
        judged = judge_samples((images + 1.0) / 2.0, cfg.dataset, data_dir, labels if model.conditional else None)
        key = row_key(row)
        metrics[f"{key}_fid"] = judged["fid"]
        if "class_accuracy" in judged:
            metrics[f"{key}_class_accuracy"] = judged["class_accuracy"]
        metrics[f"{key}_images_per_second"] = len(labels) / seconds
        metrics["samples"] = judged["samples"]
        metrics["classifier_test_accuracy"] = judged["classifier_test_accuracy"]
        print(f"{row}: fid {judged['fid']:.2f}, {len(labels) / seconds:.1f} images/s", flush=True)
    return metrics


def export_graphs(model):
    """The EMA denoiser `(x_t, t[, label]) -> epsilon`; noise and the sampling loop stay outside.
    Its GroupNorms are rewritten as InstanceNormalization (zoo/onnx_build.py: a third of ONNX
    Runtime's time went to tf2onnx's form of them)."""
    from zoo import onnx_build
    from zoo.export import Graph

    signature = [tf.TensorSpec([None, 28, 28, 1], tf.float32, name="x_t"), tf.TensorSpec([None], tf.int32, name="t")]
    if model.conditional:
        signature.append(tf.TensorSpec([None], tf.int32, name="label"))

    def denoiser(x_t, t, label=None):
        return {"epsilon": model(x_t, t, label)}

    def example(rng):
        batch = int(rng.integers(1, 5))
        inputs = {"x_t": rng.standard_normal((batch, 28, 28, 1)).astype(np.float32),
                  "t": rng.integers(0, model.schedule.steps, batch).astype(np.int32)}
        if model.conditional:
            inputs["label"] = rng.integers(0, NUM_CLASSES + 1, batch).astype(np.int32)
        return inputs

    axes = {"x_t": ["batch", 28, 28, 1], "t": ["batch"], "label": ["batch"], "epsilon": ["batch", 28, 28, 1]}
    return [Graph("denoiser", denoiser, signature, axes, example,
                  ranges={"t": (0, model.schedule.steps), "label": (0, NUM_CLASSES + 1)},
                  rewrite=onnx_build.group_norms_as_instance_norms)]


def runtime_info(model) -> dict:
    return {"kind": "image-diffusion", "graph": "denoiser", "output": "epsilon", "schedule": model.schedule.to_dict(),
            "conditional": model.conditional, "num_classes": NUM_CLASSES, "null_label": NULL_LABEL,
            "height": 28, "width": 28, "output_range": [-1.0, 1.0], "sample_defaults": SAMPLE_DEFAULTS}


def card_sample(folder, manifest) -> str:
    """The sampler table from the measured metrics, and a grid (one row per digit) from the runtime."""
    from zoo.runtime import load
    from zoo.runtime.images import write_grid

    metrics, config = manifest["metrics"], manifest["config"]
    lines = []
    if any(k.endswith("_fid") for k in metrics):
        lines += ["## Samplers", "",
                  f"{metrics.get('samples')} images per row, guidance scale {metrics.get('eval_guidance')} unless "
                  "the row says otherwise (with guidance, each pass runs the batch twice), "
                  f"measured by `{metrics.get('eval_command')}`:", "",
                  "| sampler | denoiser passes / image | FID | class accuracy | images / s |", "|---|---|---|---|---|"]
        for row in metrics.get("eval_rows", config.get("eval_rows", ())):
            key, (kind, steps, guidance) = row_key(row), dmath.parse_sampler(row)
            if f"{key}_fid" in metrics:
                accuracy, speed = metrics.get(f"{key}_class_accuracy"), metrics.get(f"{key}_images_per_second")
                name = f"{kind.upper()} {steps}" + (f", guidance {guidance:g}" if guidance is not None else "")
                lines.append(f"| {name} | {steps} | {metrics[f'{key}_fid']:.2f} | "
                             f"{'-' if accuracy is None else f'{accuracy:.1%}'} | "
                             f"{'-' if speed is None else f'{speed:.1f}'} |")
        lines.append("")
    opts = manifest["runtime"]["sample_defaults"]
    # the sampler options default to the manifest's sample_defaults, the ones the command shows
    write_grid(load(folder), folder / "samples.png", opts["labels"], opts["per_label"], opts["seed"])
    command = (f"python -m zoo.runtime sample exports/{manifest['model']} --labels {opts['labels']} "
               f"--per-label {opts['per_label']} --seed {opts['seed']} --sampler {opts['sampler']} "
               f"--steps {opts['steps']} --guidance {opts['guidance']} --out samples.png")
    return "\n".join(lines + ["## Samples", "", "```sh", command, "```", "", "![samples](samples.png)", "",
                              "(one row per digit, 0 to 9.)"])
