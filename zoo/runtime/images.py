"""Image sampling around an exported generator/decoder graph, in numpy; grids written as PNG."""

from pathlib import Path

import numpy as np

from zoo.runtime.core import Export


def parse_labels(labels, num_classes: int) -> np.ndarray:
    """"3,1,4" or a sequence -> int32 array, each checked against the number of classes."""
    if isinstance(labels, str):
        try:
            labels = [int(p) for p in labels.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"labels must be integers separated by commas, got {labels!r}") from None
    labels = np.asarray(labels, np.int32).reshape(-1)
    if labels.size == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {labels.tolist()}")
    return labels


def sample_images(export: Export, labels="0,1,2,3,4,5,6,7,8,9", per_label: int = 8, seed: int = 0) -> tuple:
    """`per_label` images for each label: (uint8 images [len(labels), per_label, H, W], labels)."""
    info = export.runtime
    if info.get("kind") != "image-generator":
        raise ValueError(f"{export.path} holds a {info.get('kind')!r} model, not an image generator")
    if per_label < 1:
        raise ValueError("per_label must be >= 1")
    labels = parse_labels(labels, info["num_classes"])
    rng = np.random.default_rng(seed)
    flat = np.repeat(labels, per_label)
    feed = {"z": rng.standard_normal((len(flat), info["latent_dim"])).astype(np.float32)}
    if info["conditional"]:
        feed["label"] = flat
    image = export.run(info["graph"], feed)[info.get("output", "image")]
    low, high = info["output_range"]
    pixels = np.clip((image[..., 0] - low) / (high - low), 0, 1)
    return np.round(pixels * 255).astype(np.uint8).reshape(len(labels), per_label, *pixels.shape[1:]), labels


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
