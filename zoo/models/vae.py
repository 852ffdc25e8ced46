"""`vae`: a convolutional variational autoencoder on dynamically binarised MNIST.

Encoder: Conv2D stack -> mean and log-variance of q(z|x). Decoder: Dense, Reshape,
Conv2DTranspose stack -> Bernoulli logits per pixel. `train_step` maximises the ELBO with the
reparameterisation trick; every batch is binarised afresh (pixel = 1 with probability intensity).
A class-conditional preset feeds a label embedding to both networks.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.models import images
from zoo.models.images import NUM_CLASSES, ImageData, binarize, binarize_for_step
from zoo.models.steps import VALIDATION_STEP, descend, random_rows
from zoo.models.vae_presets import Config, PRESETS, EVAL_KEYS  # noqa: F401 (hooks: zoo.registry.HOOKS)


DATASET = Config.dataset
SAMPLE_DEFAULTS = {"labels": "0,1,2,3,4,5,6,7,8,9", "per_label": 8, "seed": 0, "out": "samples/vae.png"}
LOG_2PI = math.log(2 * math.pi)


@keras.saving.register_keras_serializable(package="zoo")
class VAE(keras.Model):
    def __init__(self, latent_dim=32, filters=32, hidden=256, label_dim=16, conditional=False, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.filters, self.hidden = latent_dim, filters, hidden
        self.label_dim, self.conditional = label_dim, conditional
        self.encoder = self._build_encoder()
        self.decoder = self._build_decoder()
        self.loss_tracker = keras.metrics.Mean(name="loss")  # negative ELBO, nats per image
        self.recon_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def _label_input(self):
        label = keras.Input((), dtype="int32", name="label")
        return label, keras.layers.Embedding(NUM_CLASSES, self.label_dim)(label)

    def _build_encoder(self):
        image = keras.Input((28, 28, 1), name="image")  # {0, 1}
        x = keras.layers.Conv2D(self.filters, 3, strides=2, padding="same", activation="relu")(image)
        x = keras.layers.Conv2D(2 * self.filters, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Flatten()(x)
        inputs = [image]
        if self.conditional:
            label, embedded = self._label_input()
            inputs.append(label)
            x = keras.layers.Concatenate()([x, embedded])
        x = keras.layers.Dense(self.hidden, activation="relu")(x)
        mean = keras.layers.Dense(self.latent_dim, name="mean")(x)
        log_variance = keras.layers.Dense(self.latent_dim, name="log_variance")(x)
        return keras.Model(inputs, [mean, log_variance], name="encoder")

    def _build_decoder(self):
        z = keras.Input((self.latent_dim,), name="z")
        inputs, x = [z], z
        if self.conditional:
            label, embedded = self._label_input()
            inputs.append(label)
            x = keras.layers.Concatenate()([z, embedded])
        x = keras.layers.Dense(self.hidden, activation="relu")(x)
        x = keras.layers.Dense(7 * 7 * 2 * self.filters, activation="relu")(x)
        x = keras.layers.Reshape((7, 7, 2 * self.filters))(x)
        x = keras.layers.Conv2DTranspose(2 * self.filters, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2DTranspose(self.filters, 3, strides=2, padding="same", activation="relu")(x)
        logits = keras.layers.Conv2D(1, 3, padding="same", name="logits")(x)
        return keras.Model(inputs, logits, name="decoder")

    def build(self, input_shape=None):
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker]

    def encode(self, x, labels=None, training=False):
        return self.encoder([x, labels] if self.conditional else x, training=training)

    def decode(self, z, labels=None, training=False):
        """Bernoulli logits [B, 28, 28, 1]."""
        return self.decoder([z, labels] if self.conditional else z, training=training)

    def call(self, x, labels=None, training=False):
        mean, log_variance = self.encode(x, labels, training)
        z = mean + tf.exp(0.5 * log_variance) * tf.random.normal(tf.shape(mean))
        return self.decode(z, labels, training)

    def elbo_terms(self, x, labels, training, step=None):
        """Per image: reconstruction -log p(x|z) for one z ~ q(z|x), and KL(q(z|x) || N(0, I)).
        `step`: a training step, whose draw of z is the same on any number of workers (steps.random_rows)."""
        mean, log_variance = self.encode(x, labels, training)
        if step is None:
            eps = tf.random.normal(tf.shape(mean))
        else:
            eps = random_rows(lambda n, seed: tf.random.stateless_normal([n, self.latent_dim], seed),
                              tf.shape(mean)[0], step, 1)
        z = mean + tf.exp(0.5 * log_variance) * eps
        logits = self.decode(z, labels, training)
        recon = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=[1, 2, 3])
        kl = 0.5 * tf.reduce_sum(tf.exp(log_variance) + tf.square(mean) - 1.0 - log_variance, axis=1)
        return recon, kl

    def train_step(self, data):
        images, labels = data
        step = self.optimizer.iterations
        x = binarize_for_step(images, step)
        with tf.GradientTape() as tape:
            recon, kl = self.elbo_terms(x, labels, training=True, step=step)
            loss = tf.reduce_mean(recon + kl)
        descend(self.optimizer, tape, loss, self.trainable_variables)
        self._track(loss, recon, kl)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        images, labels = data
        x = binarize_for_step(images, VALIDATION_STEP)
        recon, kl = self.elbo_terms(x, labels, training=False, step=VALIDATION_STEP)
        self._track(tf.reduce_mean(recon + kl), recon, kl)
        return {m.name: m.result() for m in self.metrics}

    def _track(self, loss, recon, kl):
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(tf.reduce_mean(recon))
        self.kl_tracker.update_state(tf.reduce_mean(kl))

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, filters=self.filters, hidden=self.hidden,
                      label_dim=self.label_dim, conditional=self.conditional)
        return config


def load_data(cfg, data_dir=None) -> ImageData:
    x, y = zdata.image_arrays(cfg.dataset, "train", data_dir)
    x_test, y_test = zdata.image_arrays(cfg.dataset, "test", data_dir)
    # Validation each epoch on the last 5,000 train images, held out; the test split stays unseen.
    hold = min(5000, len(x) // 10)
    return ImageData(
        train=zdata.image_batches(x[:-hold], y[:-hold], cfg.batch_size, cfg.seed).repeat(),
        val=zdata.image_batches(x[-hold:], y[-hold:], 500, cfg.seed, shuffle=False, drop_remainder=False),
        steps_per_epoch=cfg.steps_per_epoch or (len(x) - hold) // cfg.batch_size,
        split_sizes={"train": len(x) - hold, "validation (train tail)": hold, "test": len(x_test)},
    )


def build_model(cfg, data=None):
    model = VAE(latent_dim=cfg.latent_dim, filters=cfg.filters, hidden=cfg.hidden, label_dim=cfg.label_dim,
                conditional=cfg.conditional)
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate))
    return model


def importance_weighted_nll(model, x, labels, k=1000, chunk=250, seed=0) -> np.ndarray:
    """-log p(x) per image, estimated with k importance samples from q(z|x) (Burda et al., 2016).

    log p(x) ~ logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k.
    """
    gen = tf.random.Generator.from_seed(seed)
    mean, log_variance = model.encode(x, labels)
    std = tf.exp(0.5 * log_variance)
    log_weights = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = gen.normal([n, *mean.shape])  # [n, B, D]
        z = mean[None] + std[None] * eps
        flat = tf.reshape(z, [-1, model.latent_dim])
        rep_labels = None if labels is None else tf.tile(labels, [n])
        logits = tf.reshape(model.decode(flat, rep_labels), [n, -1, 28 * 28])
        target = tf.reshape(x, [1, -1, 28 * 28])
        log_px_z = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.broadcast_to(target, tf.shape(logits)), logits=logits), axis=-1)
        log_pz = -0.5 * tf.reduce_sum(tf.square(z) + LOG_2PI, axis=-1)
        log_qz = -0.5 * tf.reduce_sum(tf.square(eps) + LOG_2PI + log_variance[None], axis=-1)
        log_weights.append(log_px_z + log_pz - log_qz)
    log_weights = tf.concat(log_weights, axis=0)
    return -(tf.reduce_logsumexp(log_weights, axis=0) - math.log(k)).numpy()


EVAL_NOTE = (
    "Test split binarised once, stochastically, with a fixed seed (each pixel on with probability "
    "intensity/255). Negative ELBO: one z per image, all test images. NLL: importance-weighted "
    "estimate with `iwae_k` samples from q(z|x) per image (Burda et al., 2016) on the first "
    "`iwae_images` test images (both in metrics.json); nats per image. `test_negative_elbo_iwae_images` "
    "is the ELBO on that same subset, to compare like with like. FID: 10,000 decoded samples (pixel "
    "probabilities as grey levels) against the 10,000 test images on the features of the zoo's "
    "classifier, as for the gan; class accuracy only for the conditional preset."
)


def evaluate(model, cfg, data_dir=None, batch=100) -> dict:
    x_test, y_test = zdata.image_arrays(cfg.dataset, "test", data_dir)
    iwae_images = min(cfg.iwae_images, len(x_test))
    from zoo.runtime.core import Progress

    neg_elbo, nll = [], []
    progress = Progress(len(x_test), f"ELBO, and IWAE k={cfg.iwae_k} on the first {iwae_images}: test images")
    for i in range(0, len(x_test), batch):
        progress.update(min(batch, len(x_test) - i))
        x = binarize(x_test[i : i + batch], seed=(cfg.seed, i))
        labels = tf.constant(y_test[i : i + batch]) if model.conditional else None
        recon, kl = model.elbo_terms(x, labels, training=False)
        neg_elbo.append((recon + kl).numpy())
        if i < iwae_images:
            n = min(batch, iwae_images - i)
            nll.append(importance_weighted_nll(model, x[:n], None if labels is None else labels[:n],
                                               k=cfg.iwae_k, seed=i))
    progress.close()
    neg_elbo = np.concatenate(neg_elbo)
    metrics = {"test_negative_elbo": float(neg_elbo.mean()), "test_images": len(x_test),
               "test_nll_iwae": float(np.concatenate(nll).mean()), "iwae_k": cfg.iwae_k, "iwae_images": iwae_images,
               "test_negative_elbo_iwae_images": float(neg_elbo[:iwae_images].mean())}
    metrics.update(sample_quality(model, cfg, data_dir))
    return metrics


def sample_quality(model, cfg, data_dir=None, samples=10000) -> dict:
    """FID (and class accuracy when conditional) of decoded z ~ N(0, I): the pixel probabilities
    as grey levels, as for the GAN."""
    from zoo.metrics.classifier import judge_samples

    labels = np.arange(samples) % NUM_CLASSES
    z = np.random.default_rng(cfg.seed).standard_normal((samples, model.latent_dim)).astype(np.float32)
    images = np.concatenate([tf.sigmoid(model.decode(z[i : i + 1000], labels[i : i + 1000] if model.conditional else None))
                             for i in range(0, samples, 1000)])
    return judge_samples(images, cfg.dataset, data_dir, labels if model.conditional else None)


def export_graphs(model):
    """The decoder `(z[, label]) -> pixel probabilities` and the encoder `image -> (mean, log_variance)`."""
    from zoo.export import Graph

    cond = model.conditional
    dec_sig = [tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")]
    enc_sig = [tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")]
    if cond:
        dec_sig.append(tf.TensorSpec([None], tf.int32, name="label"))
        enc_sig.append(tf.TensorSpec([None], tf.int32, name="label"))

    def decoder(z, label=None):
        return {"probabilities": tf.sigmoid(model.decode(z, label))}

    def encoder(image, label=None):
        mean, log_variance = model.encode(image, label)
        return {"mean": mean, "log_variance": log_variance}

    def dec_example(rng):
        batch = int(rng.integers(1, 5))
        inputs = {"z": rng.standard_normal((batch, model.latent_dim)).astype(np.float32)}
        if cond:
            inputs["label"] = rng.integers(0, NUM_CLASSES, batch).astype(np.int32)
        return inputs

    def enc_example(rng):
        batch = int(rng.integers(1, 5))
        inputs = {"image": (rng.random((batch, 28, 28, 1)) < 0.3).astype(np.float32)}
        if cond:
            inputs["label"] = rng.integers(0, NUM_CLASSES, batch).astype(np.int32)
        return inputs

    d = model.latent_dim
    return [
        Graph("decoder", decoder, dec_sig, {"z": ["batch", d], "label": ["batch"],
                                            "probabilities": ["batch", 28, 28, 1]}, dec_example,
              ranges={"label": (0, NUM_CLASSES)}),
        Graph("encoder", encoder, enc_sig, {"image": ["batch", 28, 28, 1], "label": ["batch"],
                                            "mean": ["batch", d], "log_variance": ["batch", d]}, enc_example,
              ranges={"label": (0, NUM_CLASSES)}, intervals={"image": (0.0, 1.0)}),
    ]


def runtime_info(model) -> dict:
    return {"kind": "image-generator", "graph": "decoder", "output": "probabilities",
            "latent_dim": model.latent_dim, "conditional": model.conditional, "num_classes": NUM_CLASSES,
            "output_range": [0.0, 1.0], "sample_defaults": SAMPLE_DEFAULTS}


card_sample = images.card_sample  # the labelled grid every image model's card shows
