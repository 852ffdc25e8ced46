"""`gan`: a class-conditional DCGAN on MNIST (the TensorFlow DCGAN tutorial's networks, conditioned).

Generator: Dense, BatchNormalization, LeakyReLU, Reshape, Conv2DTranspose stack to a `tanh` image.
Discriminator: Conv2D, LeakyReLU, Dropout, Dense. A label embedding enters both networks (an
unconditional preset leaves it out). `train_step` updates both with their own optimizer.
"""


import keras
import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.models import images
from zoo.models.gan_presets import Config, PRESETS  # noqa: F401 (hooks: zoo.registry.HOOKS)
from zoo.models.images import NUM_CLASSES, ImageData
from zoo.models.steps import VALIDATION_STEP, Dropout, descend, random_rows


DATASET = Config.dataset
SAMPLE_DEFAULTS = {"labels": "0,1,2,3,4,5,6,7,8,9", "per_label": 8, "seed": 0, "out": "samples/gan.png"}


def build_generator(latent_dim, base_filters, label_dim, conditional):
    z = keras.Input((latent_dim,), name="z")
    inputs, x = [z], z
    if conditional:
        label = keras.Input((), dtype="int32", name="label")
        inputs.append(label)
        x = keras.layers.Concatenate()([z, keras.layers.Embedding(NUM_CLASSES, label_dim)(label)])
    x = keras.layers.Dense(7 * 7 * 2 * base_filters, use_bias=False)(x)
    # synchronized: under a distribution strategy the batch statistics are the whole global batch's,
    # as on one device, not each replica's share (no effect in one process)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Reshape((7, 7, 2 * base_filters))(x)
    x = keras.layers.Conv2DTranspose(base_filters, 4, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    image = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh", name="image")(x)
    return keras.Model(inputs, image, name="generator")


def build_discriminator(base_filters, label_dim, dropout, conditional):
    image = keras.Input((28, 28, 1), name="image")
    inputs, x = [image], image
    if conditional:  # the label as an extra image channel
        label = keras.Input((), dtype="int32", name="label")
        inputs.append(label)
        plane = keras.layers.Dense(28 * 28)(keras.layers.Embedding(NUM_CLASSES, label_dim)(label))
        x = keras.layers.Concatenate()([image, keras.layers.Reshape((28, 28, 1))(plane)])
    for filters in (base_filters, 2 * base_filters):
        x = keras.layers.Conv2D(filters, 4, strides=2, padding="same")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
        x = Dropout(dropout)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="logit")(x), name="discriminator")


@keras.saving.register_keras_serializable(package="zoo")
class GAN(keras.Model):
    def __init__(self, latent_dim=64, base_filters=64, label_dim=16, dropout=0.3, conditional=True, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.base_filters, self.label_dim = latent_dim, base_filters, label_dim
        self.dropout, self.conditional = dropout, conditional
        self.generator = build_generator(latent_dim, base_filters, label_dim, conditional)
        self.discriminator = build_discriminator(base_filters, label_dim, dropout, conditional)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")  # D's mean probability on real images

    def build(self, input_shape=None):
        self.built = True  # both networks are functional models, built in __init__

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker]

    def call(self, z, labels=None, training=False):
        """Images in [-1, 1] for noise `z` (and `labels` when conditional)."""
        return self.generator([z, labels] if self.conditional else z, training=training)

    def compile(self, g_optimizer=None, d_optimizer=None, **kwargs):
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5)
        self.d_optimizer = d_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5)

    def get_compile_config(self):
        return {"g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
                "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer)}

    def compile_from_config(self, config):
        self.compile(g_optimizer=keras.saving.deserialize_keras_object(config["g_optimizer"]),
                     d_optimizer=keras.saving.deserialize_keras_object(config["d_optimizer"]))

    def _discriminate(self, images, labels, training):
        return self.discriminator([images, labels] if self.conditional else images, training=training)

    @staticmethod
    def bce(targets, logits):
        """Mean binary cross-entropy of logits, on this replica's rows: `descend` averages the replicas'
        gradients (a keras.losses object would divide by the replicas a second time)."""
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))

    def _latents(self, batch, step, site):
        """z for the training step's draw `site`: the same on any number of workers (steps.random_rows)."""
        return random_rows(lambda n, seed: tf.random.stateless_normal([n, self.latent_dim], seed), batch, step, site)

    def train_step(self, data):
        images, labels = data
        real = tf.cast(images, tf.float32) / 127.5 - 1.0
        batch, step = tf.shape(real)[0], tf.identity(self.d_optimizer.iterations)
        z = self._latents(batch, step, 0)
        with tf.GradientTape() as d_tape:
            fake = self(z, labels, training=True)
            real_logits = self._discriminate(real, labels, True)
            fake_logits = self._discriminate(fake, labels, True)
            d_loss = (self.bce(tf.ones_like(real_logits), real_logits)
                      + self.bce(tf.zeros_like(fake_logits), fake_logits))
        descend(self.d_optimizer, d_tape, d_loss, self.discriminator.trainable_variables)

        z = self._latents(batch, step, 1)
        with tf.GradientTape() as g_tape:
            fake_logits = self._discriminate(self(z, labels, training=True), labels, True)
            g_loss = self.bce(tf.ones_like(fake_logits), fake_logits)  # the non-saturating loss
        descend(self.g_optimizer, g_tape, g_loss, self.generator.trainable_variables)

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        images, labels = data
        real = tf.cast(images, tf.float32) / 127.5 - 1.0
        z = self._latents(tf.shape(real)[0], VALIDATION_STEP, 0)
        real_logits = self._discriminate(real, labels, False)
        fake_logits = self._discriminate(self(z, labels), labels, False)
        d_loss = self.bce(tf.ones_like(real_logits), real_logits) + self.bce(tf.zeros_like(fake_logits), fake_logits)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(self.bce(tf.ones_like(fake_logits), fake_logits))
        self.d_real_tracker.update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, base_filters=self.base_filters, label_dim=self.label_dim,
                      dropout=self.dropout, conditional=self.conditional)
        return config


def load_data(cfg, data_dir=None) -> ImageData:
    x, y = zdata.image_arrays(cfg.dataset, "train", data_dir)
    steps = cfg.steps_per_epoch or len(x) // cfg.batch_size
    return ImageData(
        train=zdata.image_batches(x, y, cfg.batch_size, cfg.seed).repeat(),
        # Losses on 2,000 train images each epoch, for the log only: no epoch is chosen by them.
        val=zdata.image_batches(x[-2000:], y[-2000:], cfg.batch_size, cfg.seed, shuffle=False),
        steps_per_epoch=steps,
        split_sizes={"train": len(x)},  # the test split is read by evaluate() alone
    )


MONITOR = None  # no validation loss says which GAN epoch is best: keep the last


def build_model(cfg, data=None):
    model = GAN(latent_dim=cfg.latent_dim, base_filters=cfg.base_filters, label_dim=cfg.label_dim,
                dropout=cfg.dropout, conditional=cfg.conditional)
    model.build()
    model.compile(g_optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.beta_1),
                  d_optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.beta_1))
    return model


def generate(model, labels, seed=0, batch_size=1000) -> np.ndarray:
    """Images in [0, 1], one per label, from seeded noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(0, len(labels), batch_size):
        chunk = np.asarray(labels[i : i + batch_size], np.int32)
        z = rng.standard_normal((len(chunk), model.latent_dim)).astype(np.float32)
        out.append(np.asarray(model(z, chunk if model.conditional else None)))
    return (np.concatenate(out) + 1.0) / 2.0


EVAL_NOTE = (
    "FID: 10,000 generated images (1,000 per class) against the 10,000 test images, on the 128-d "
    "penultimate features of the zoo's classifier (zoo.metrics.classifier). Class accuracy: how "
    "often that classifier gives the requested label."
)


def evaluate(model, cfg, data_dir=None, samples=10000) -> dict:
    from zoo.metrics.classifier import judge_samples

    labels = np.arange(samples) % NUM_CLASSES
    images = generate(model, labels, seed=cfg.seed)
    return judge_samples(images, cfg.dataset, data_dir, labels if model.conditional else None)


def export_graphs(model):
    """The generator `(z[, label]) -> image` in [-1, 1]; noise is an input, never drawn inside."""
    from zoo.export import Graph

    signature = [tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")]
    if model.conditional:
        signature.append(tf.TensorSpec([None], tf.int32, name="label"))

    def generator(z, label=None):
        return {"image": model(z, label, training=False)}

    def example(rng):
        batch = int(rng.integers(1, 5))
        inputs = {"z": rng.standard_normal((batch, model.latent_dim)).astype(np.float32)}
        if model.conditional:
            inputs["label"] = rng.integers(0, NUM_CLASSES, batch).astype(np.int32)
        return inputs

    axes = {"z": ["batch", model.latent_dim], "label": ["batch"], "image": ["batch", 28, 28, 1]}
    return [Graph(name="generator", fn=generator, input_signature=signature, axes=axes, example=example,
                  ranges={"label": (0, NUM_CLASSES)})]


def runtime_info(model) -> dict:
    return {"kind": "image-generator", "graph": "generator", "output": "image", "latent_dim": model.latent_dim,
            "conditional": model.conditional, "num_classes": NUM_CLASSES, "output_range": [-1.0, 1.0],
            "sample_defaults": SAMPLE_DEFAULTS}


card_sample = images.card_sample  # the labelled grid every image model's card shows
