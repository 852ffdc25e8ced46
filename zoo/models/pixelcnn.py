"""`pixelcnn`: a gated PixelCNN on binarised MNIST, p(x) as a product of 784 Bernoulli pixels.

The gated PixelCNN of van den Oord et al. (2016): a vertical stack (masked k x k convolutions
that see only the rows above) and a horizontal stack (masked 1 x k convolutions along the row, to
the left), joined by a 1 x 1 convolution from vertical to horizontal at every layer, with
tanh * sigmoid gates and residual connections. The first layer uses mask A (the current pixel is
hidden), the rest mask B. Together the stacks see every pixel above and to the left, with no
blind spot. An optional class label adds a learned bias to every gate.

Masks are constants made inside each layer's call from its kernel shape and mask type (saved in
its config), so they are the same after loading and become constants of the ONNX graph.
"""


import keras
import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.models import images
from zoo.models.images import NUM_CLASSES, ImageData, binarize_for_step
from zoo.models.pixelcnn_presets import Config, PRESETS  # noqa: F401 (hooks: zoo.registry.HOOKS)
from zoo.models.steps import VALIDATION_STEP, descend


DATASET = Config.dataset
SAMPLE_DEFAULTS = {"labels": "0,1,2,3,4,5,6,7,8,9", "per_label": 8, "seed": 0, "out": "samples/pixelcnn.png"}


@keras.saving.register_keras_serializable(package="zoo")
class MaskedConv2D(keras.layers.Conv2D):
    """A `same`-padded Conv2D whose kernel is multiplied by a fixed causal mask.

    vertical, kernel k x k: rows above the centre (mask A), or up to and including it (mask B).
    horizontal, kernel 1 x k: columns left of the centre (A), or up to and including it (B).
    """

    def __init__(self, filters, kernel_size, mask_type="B", direction="vertical", **kwargs):
        kwargs["padding"] = "same"
        super().__init__(filters, kernel_size, **kwargs)
        if mask_type not in ("A", "B") or direction not in ("vertical", "horizontal"):
            raise ValueError(f"mask_type A|B and direction vertical|horizontal, got {mask_type}, {direction}")
        self.mask_type, self.direction = mask_type, direction

    def mask(self) -> np.ndarray:
        """The 0/1 mask, shaped like the kernel."""
        kh, kw = self.kernel_size
        mask = np.zeros(self.kernel.shape, np.float32)
        keep = 1 if self.mask_type == "B" else 0
        if self.direction == "vertical":
            mask[: kh // 2 + keep] = 1.0
        else:
            mask[:, : kw // 2 + keep] = 1.0
        return mask

    def convolution_op(self, inputs, kernel):
        # Made here, inside the traced call: a constant of the graph, not a captured tensor
        # (which would become a stray ONNX input) and not a variable (which Conv2D's saving skips).
        return super().convolution_op(inputs, kernel * tf.constant(self.mask()))

    def get_config(self):
        config = super().get_config()
        config.update(mask_type=self.mask_type, direction=self.direction)
        config.pop("padding", None)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class GatedBlock(keras.layers.Layer):
    """(vertical, horizontal) -> (vertical', horizontal'): one gated layer of both stacks."""

    def __init__(self, filters, kernel, mask_type="B", conditional=False, residual=True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel, self.mask_type = filters, kernel, mask_type
        self.conditional, self.residual = conditional, residual
        self.vertical = MaskedConv2D(2 * filters, kernel, mask_type, "vertical", name="vertical")
        self.horizontal = MaskedConv2D(2 * filters, (1, kernel), mask_type, "horizontal", name="horizontal")
        self.vertical_to_horizontal = keras.layers.Conv2D(2 * filters, 1, name="vertical_to_horizontal")
        self.horizontal_out = keras.layers.Conv2D(filters, 1, name="horizontal_out")
        self.condition = keras.layers.Embedding(NUM_CLASSES, 4 * filters, name="condition") if conditional else None

    def build(self, input_shape):
        self.vertical.build(input_shape)
        self.horizontal.build(input_shape)
        self.vertical_to_horizontal.build((*input_shape[:-1], 2 * self.filters))
        self.horizontal_out.build((*input_shape[:-1], self.filters))
        if self.condition is not None:
            self.condition.build((None,))
        self.built = True

    def _gate(self, x):
        return tf.tanh(x[..., : self.filters]) * tf.sigmoid(x[..., self.filters :])

    def call(self, vertical, horizontal, label=None):
        v = self.vertical(vertical)  # row i: image rows above i only
        h = self.horizontal(horizontal) + self.vertical_to_horizontal(v)
        if self.condition is not None:
            bias = self.condition(label)[:, None, None, :]
            v, h = v + bias[..., : 2 * self.filters], h + bias[..., 2 * self.filters :]
        h_out = self.horizontal_out(self._gate(h))
        return self._gate(v), horizontal + h_out if self.residual else h_out

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel=self.kernel, mask_type=self.mask_type,
                      conditional=self.conditional, residual=self.residual)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class PixelCNN(keras.Model):
    """`call(image [B, 28, 28, 1] in {0, 1}, label=None)` -> Bernoulli logits of every pixel."""

    def __init__(self, filters=32, layers=8, first_kernel=7, kernel=3, head=64, conditional=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.num_layers, self.first_kernel, self.kernel = filters, layers, first_kernel, kernel
        self.head, self.conditional = head, conditional
        self.blocks = [GatedBlock(filters, first_kernel, "A", conditional, residual=False, name="block_0")]
        self.blocks += [GatedBlock(filters, kernel, "B", conditional, name=f"block_{i + 1}") for i in range(layers)]
        self.head_hidden = keras.layers.Conv2D(head, 1, activation="relu", name="head_hidden")
        self.head_out = keras.layers.Conv2D(1, 1, name="logits")
        self.loss_tracker = keras.metrics.Mean(name="loss")  # nats per image

    @property
    def rows_above(self):
        """How many rows above a pixel its logit can see: what a sampler must keep."""
        return self.first_kernel // 2 + self.num_layers * (self.kernel // 2)

    def build(self, input_shape=(None, 28, 28, 1)):
        self.blocks[0].build(input_shape)
        for block in self.blocks[1:]:
            block.build((None, None, None, self.filters))
        self.head_hidden.build((None, None, None, self.filters))
        self.head_out.build((None, None, None, self.head))
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, image, label=None):
        x = 2.0 * image - 1.0  # {-1, 1}: an 'off' pixel differs from the zero padding
        vertical, horizontal = x, x
        for block in self.blocks:
            vertical, horizontal = block(vertical, horizontal, label)
        return self.head_out(self.head_hidden(tf.nn.relu(horizontal)))

    def nll(self, x, labels):
        """-log p(x) in nats, per image, for binary images x."""
        logits = self(x, labels if self.conditional else None)
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=[1, 2, 3])

    def train_step(self, data):
        images, labels = data
        x = binarize_for_step(images, self.optimizer.iterations)  # a fresh draw every time an image is seen
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self.nll(x, labels))
        descend(self.optimizer, tape, loss, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        images, labels = data
        x = binarize_for_step(images, VALIDATION_STEP)
        self.loss_tracker.update_state(tf.reduce_mean(self.nll(x, labels)))
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, layers=self.num_layers, first_kernel=self.first_kernel,
                      kernel=self.kernel, head=self.head, conditional=self.conditional)
        return config


def fixed_binarization(images: np.ndarray, seed: int) -> np.ndarray:
    """uint8 images -> uint8 {0, 255}, each pixel on with probability intensity/255, drawn once.

    `binarize_for_step` maps 0/255 to 0/1 deterministically, so validation and test see one fixed draw.
    """
    rng = np.random.default_rng(seed)
    return np.where(rng.random(images.shape) < images / 255.0, 255, 0).astype(np.uint8)


def load_data(cfg, data_dir=None) -> ImageData:
    x, y = zdata.image_arrays(cfg.dataset, "train", data_dir)
    hold = min(5000, len(x) // 10)  # the last 5,000 train images validate; the test split stays unseen
    val = fixed_binarization(x[-hold:], cfg.seed + 1)
    return ImageData(
        train=zdata.image_batches(x[:-hold], y[:-hold], cfg.batch_size, cfg.seed).repeat(),
        val=zdata.image_batches(val, y[-hold:], 500, cfg.seed, shuffle=False, drop_remainder=False),
        steps_per_epoch=cfg.steps_per_epoch or (len(x) - hold) // cfg.batch_size,
        split_sizes={"train": len(x) - hold, "validation (train tail)": hold},
    )


def build_model(cfg, data=None):
    model = PixelCNN(cfg.filters, cfg.layers, cfg.first_kernel, cfg.kernel, cfg.head, cfg.conditional)
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate))
    return model


EVAL_NOTE = (
    "Binarisation: dynamic in training (each pixel on with probability intensity/255, drawn afresh "
    "each time); the test split is binarised once the same way with numpy seed 12345 "
    "(`zoo.models.pixelcnn.fixed_binarization`). NLL: exact, -log p(x) summed over the 784 pixels, "
    "nats per image, averaged over all 10,000 test images; also in bits per dimension."
)
TEST_SEED = 12345


def evaluate(model, cfg, data_dir=None, batch=500) -> dict:
    x_test, y_test = zdata.image_arrays(cfg.dataset, "test", data_dir)
    x = fixed_binarization(x_test, TEST_SEED)
    nll = []
    for i in range(0, len(x), batch):
        images = tf.cast(x[i : i + batch], tf.float32) / 255.0
        nll.append(model.nll(images, tf.constant(y_test[i : i + batch])).numpy())
    nll = np.concatenate(nll)
    return {"test_nll_nats": float(nll.mean()), "test_bits_per_dim": float(nll.mean() / (784 * np.log(2))),
            "test_images": len(x), "binarization_seed": TEST_SEED}


def export_graphs(model):
    """`network`: `(image[, label]) -> logits` for every pixel; the sampler runs it 784 times."""
    from zoo.export import Graph

    signature = [tf.TensorSpec([None, None, 28, 1], tf.float32, name="image")]
    if model.conditional:
        signature.append(tf.TensorSpec([None], tf.int32, name="label"))

    def network(image, label=None):
        return {"logits": model(image, label)}

    def example(rng):
        batch, rows = int(rng.integers(1, 4)), int(rng.integers(1, 29))  # rows: the sampler's strips
        inputs = {"image": (rng.random((batch, rows, 28, 1)) < 0.3).astype(np.float32)}
        if model.conditional:
            inputs["label"] = rng.integers(0, NUM_CLASSES, batch).astype(np.int32)
        return inputs

    axes = {"image": ["batch", "rows", 28, 1], "label": ["batch"], "logits": ["batch", "rows", 28, 1]}
    return [Graph("network", network, signature, axes, example, ranges={"label": (0, NUM_CLASSES)},
                  intervals={"image": (0.0, 1.0)})]  # binary pixels: 0..255 images refused, not scored


def runtime_info(model) -> dict:
    return {"kind": "image-autoregressive", "graph": "network", "output": "logits", "height": 28, "width": 28,
            "rows_above": model.rows_above, "conditional": model.conditional, "num_classes": NUM_CLASSES,
            "sample_defaults": SAMPLE_DEFAULTS}


card_sample = images.card_sample  # the labelled grid every image model's card shows
