"""What the image models (gan, vae, pixelcnn, diffusion) share.

- `NUM_CLASSES`: the classes of the MNIST-like datasets they train on (their labels are 0..9).
- `ImageData`: the batches a model's `load_data` hands to training.
- `binarize`: dynamic binarisation of uint8 images (vae, pixelcnn); `binarize_for_step` in training.
- `card_sample`: the model card's labelled grid, made by the numpy/onnxruntime runtime.
"""

import dataclasses

import tensorflow as tf

from zoo.models.steps import random_rows

NUM_CLASSES = 10  # mnist and fashion_mnist


@dataclasses.dataclass
class ImageData:
    train: tf.data.Dataset
    val: tf.data.Dataset
    steps_per_epoch: int
    split_sizes: dict


def binarize(images, seed=None):
    """uint8 images -> {0, 1} floats, each pixel on with probability intensity/255."""
    p = tf.cast(images, tf.float32) / 255.0
    u = tf.random.uniform(tf.shape(p), seed=seed) if seed is None else tf.random.stateless_uniform(tf.shape(p), seed)
    return tf.cast(u < p, tf.float32)


def binarize_for_step(images, step, site: int = 0):
    """`binarize` with training step `step`'s draw (steps.random_rows: the same on any number of workers)."""
    shape = tf.shape(images)
    u = random_rows(lambda n, seed: tf.random.stateless_uniform(tf.concat([[n], shape[1:]], 0), seed), shape[0],
                    step, site)
    return tf.cast(u < tf.cast(images, tf.float32) / 255.0, tf.float32)


def card_sample(folder, manifest) -> str:
    """A labelled grid (one row per digit) made by the numpy/onnxruntime runtime, saved beside the card."""
    from zoo.runtime import load
    from zoo.runtime.images import write_grid

    opts = manifest["runtime"]["sample_defaults"]
    _, labels = write_grid(load(folder), folder / "samples.png", opts["labels"], opts["per_label"], opts["seed"])
    rows = "one row per label, " + ", ".join(str(int(l)) for l in labels) if manifest["runtime"]["conditional"] \
        else "unconditional samples"
    command = (f"python -m zoo.runtime sample exports/{manifest['model']} --labels {opts['labels']} "
               f"--per-label {opts['per_label']} --seed {opts['seed']} --out samples.png")
    return "\n".join(["## Samples", "", "```sh", command, "```", "",
                      "![samples](samples.png)", "", f"({rows}.)"])
