"""Image sampling in numpy around exported graphs; grids written as PNG.

image-generator (gan, vae): one run of the generator/decoder on Gaussian noise.
image-autoregressive (pixelcnn): pixel by pixel, 784 runs of the network, each on the strip of
rows its receptive field covers (`rows_above` from the manifest), which gives the same logits as
the whole image at a fraction of the cost.
"""

from pathlib import Path

import numpy as np

from zoo.runtime.core import Export, parse_classes


def sample_images(export: Export, labels="0,1,2,3,4,5,6,7,8,9", per_label: int = 8, seed: int = 0) -> tuple:
    """`per_label` images for each label: (uint8 images [len(labels), per_label, H, W], labels)."""
    info = export.runtime
    if info.get("kind") not in ("image-generator", "image-autoregressive"):
        raise ValueError(f"{export.path} holds a {info.get('kind')!r} model, not an image generator")
    if per_label < 1:
        raise ValueError("per_label must be >= 1")
    labels = parse_classes(labels, info["num_classes"])
    rng = np.random.default_rng(seed)
    flat = np.repeat(labels, per_label)
    if info["kind"] == "image-autoregressive":
        pixels = sample_pixels(export, flat, rng)
        return (pixels * 255).astype(np.uint8).reshape(len(labels), per_label, *pixels.shape[1:]), labels
    feed = {"z": rng.standard_normal((len(flat), info["latent_dim"])).astype(np.float32)}
    if info["conditional"]:
        feed["label"] = flat
    image = export.run(info["graph"], feed)[info.get("output", "image")]
    low, high = info["output_range"]
    pixels = np.clip((image[..., 0] - low) / (high - low), 0, 1)
    return np.round(pixels * 255).astype(np.uint8).reshape(len(labels), per_label, *pixels.shape[1:]), labels


def sample_pixels(export: Export, labels: np.ndarray, rng: np.random.Generator, full_image: bool = False):
    """Binary images [N, H, W], one per label, drawn pixel by pixel from the network's Bernoulli logits.

    `full_image=True` runs the network on the whole image at every step (the naive loop; the same
    result, slower).
    """
    info = export.runtime
    height, width, above = info["height"], info["width"], info["rows_above"]
    images = np.zeros((len(labels), height, width, 1), np.float32)
    feed = {"label": labels.astype(np.int32)} if info["conditional"] else {}
    for i in range(height):
        top = 0 if full_image else max(0, i - above)
        for j in range(width):
            feed["image"] = np.ascontiguousarray(images[:, top : i + 1]) if not full_image else images
            logits = export.run(info["graph"], feed, check=False)[info["output"]][:, i - top, j, 0]
            p = 1.0 / (1.0 + np.exp(-logits))
            images[:, i, j, 0] = rng.random(len(labels)) < p
    return images[..., 0]


def grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """[rows, cols, H, W] uint8 -> one [rows*(H+pad)+pad, cols*(W+pad)+pad] image."""
    rows, cols, h, w = images.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = images[r, c]
    return out


def save_png(image: np.ndarray, path, scale: int = 2) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    if scale > 1:
        picture = picture.resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    picture.save(path)
    return path


def write_grid(export: Export, path, labels="0,1,2,3,4,5,6,7,8,9", per_label: int = 8, seed: int = 0) -> tuple:
    """Sample `per_label` images per label (one grid row each) and write them as a PNG: (path, labels)."""
    images, labels = sample_images(export, labels, per_label, seed)
    return save_png(grid(images), path), labels
