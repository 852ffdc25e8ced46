"""Image sampling in numpy around exported graphs; grids written as PNG.

image-generator (gan, vae): one run of the generator/decoder on Gaussian noise.
image-autoregressive (pixelcnn): pixel by pixel, 784 runs of the network, each on the strip of
rows its receptive field covers (`rows_above` from the manifest), which gives the same logits as
the whole image at a fraction of the cost.
image-diffusion (diffusion): DDPM or DDIM from `zoo.runtime.diffusion` around the denoiser, with
the schedule from the manifest and classifier-free guidance.
"""

from pathlib import Path

import numpy as np

from zoo.runtime.core import Export, Progress, check_count, check_number, parse_classes


KINDS = ("image-generator", "image-autoregressive", "image-diffusion")


def sample_images(export: Export, labels="0,1,2,3,4,5,6,7,8,9", per_label: int = 8, seed: int = 0,
                  **sampler) -> tuple:
    """`per_label` images for each label: (uint8 images [len(labels), per_label, H, W], labels).

    `sampler`: diffusion exports only: sampler ("ddim" or "ddpm"), steps, eta, guidance.
    """
    info = export.runtime
    labels, per_label, seed = check_request(export, labels, per_label, seed)
    rng = np.random.default_rng(seed)
    flat = np.repeat(labels, per_label)
    if info["kind"] == "image-autoregressive":
        pixels = sample_pixels(export, flat, rng)
        return (pixels * 255).astype(np.uint8).reshape(len(labels), per_label, *pixels.shape[1:]), labels
    if info["kind"] == "image-diffusion":
        image = sample_diffusion(export, flat, seed=seed, **sampler)
    else:
        image = export.run(info["graph"], generator_feed(export, flat, rng))[info["output"]]
    return to_uint8(export, image, per_label), labels


def check_request(export: Export, labels, per_label: int, seed: int) -> tuple:
    """(labels as an int32 array, per_label, seed), checked, and the calls they make within the export's
    per-call memory limit: a one-line ValueError naming the argument otherwise."""
    info = export.runtime
    if info.get("kind") not in KINDS:
        raise ValueError(f"{export.path} holds a {info.get('kind')!r} model, not an image generator")
    per_label, seed = check_count("per_label", per_label, 1), check_count("seed", seed)
    labels = parse_classes(labels, info["num_classes"])
    batch = len(labels) * per_label
    if info["kind"] == "image-autoregressive":
        export.check_call(info["graph"], {"batch": batch, "rows": info["rows_above"] + 1})
    elif info["kind"] == "image-diffusion":  # guidance runs the conditional and the unconditional batch together
        export.check_call(info["graph"], {"batch": 2 * batch})
    else:
        export.check_call(info["graph"], {"batch": batch})
    return labels, per_label, seed


def generator_feed(export: Export, flat_labels: np.ndarray, rng: np.random.Generator) -> dict:
    """An image-generator's one call: Gaussian noise for each image (and its label, if conditional).
    Rows never mix, so a server may run several requests' feeds as one batch."""
    info = export.runtime
    feed = {"z": rng.standard_normal((len(flat_labels), info["latent_dim"])).astype(np.float32)}
    if info["conditional"]:
        feed["label"] = flat_labels
    return feed


def to_uint8(export: Export, image: np.ndarray, per_label: int) -> np.ndarray:
    """A generator's or sampler's output [N, H, W, 1] in its `output_range` -> uint8 [N / per_label, per_label, H, W]."""
    low, high = export.runtime["output_range"]
    pixels = np.clip((image[..., 0] - low) / (high - low), 0, 1)
    return np.round(pixels * 255).astype(np.uint8).reshape(-1, per_label, *pixels.shape[1:])


def sample_pixels(export: Export, labels: np.ndarray, rng: np.random.Generator, full_image: bool = False):
    """Binary images [N, H, W], one per label, drawn pixel by pixel from the network's Bernoulli logits.

    `full_image=True` runs the network on the whole image at every step (the naive loop; the same
    result, slower).
    """
    info = export.runtime
    height, width, above = info["height"], info["width"], info["rows_above"]
    images = np.zeros((len(labels), height, width, 1), np.float32)
    feed = {"label": labels.astype(np.int32)} if info["conditional"] else {}
    with Progress(height, "pixelcnn rows") as progress:
        for i in range(height):
            top = 0 if full_image else max(0, i - above)
            for j in range(width):
                feed["image"] = np.ascontiguousarray(images[:, top : i + 1]) if not full_image else images
                logits = export.run(info["graph"], feed, check=False)[info["output"]][:, i - top, j, 0]
                p = 1.0 / (1.0 + np.exp(-logits))
                images[:, i, j, 0] = rng.random(len(labels)) < p
            progress.update()
    return images[..., 0]


def denoiser(export: Export):
    """`denoise(x_t, t, labels) -> epsilon` running the export's denoiser graph in ONNX Runtime."""
    info = export.runtime

    def denoise(x_t, t, labels=None):
        feed = {"x_t": x_t.astype(np.float32), "t": t.astype(np.int32)}
        if info["conditional"]:
            feed["label"] = labels.astype(np.int32)
        return export.run(info["graph"], feed, check=False)[info["output"]]

    return denoise


def sample_diffusion(export: Export, labels: np.ndarray, sampler: str = None, steps: int = None, eta: float = None,
                     guidance: float = None, seed: int = 0) -> np.ndarray:
    """Images in [-1, 1] [N, H, W, 1], one per label; options default to the manifest's sample_defaults."""
    from zoo.runtime import diffusion

    info = export.runtime
    defaults = info.get("sample_defaults", {})
    sampler = sampler or defaults.get("sampler", "ddim")
    schedule = diffusion.Schedule(**info["schedule"])
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    if sampler == "ddpm":  # ancestral sampling runs every step of the schedule
        steps = schedule.steps
    steps = check_count("steps", defaults.get("steps", 50) if steps is None else steps, 1, schedule.steps)
    eta = check_number("eta", defaults.get("eta", 0.0) if eta is None else eta, 0)
    guidance = check_number("guidance", defaults.get("guidance", 1.0) if guidance is None else guidance)
    return diffusion.sample(denoiser(export), schedule, labels, sampler, steps, eta=eta, guidance=guidance, seed=seed,
                            conditional=info["conditional"], null_label=info["null_label"],
                            image_shape=(info["height"], info["width"], 1))


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


def write_grid(export: Export, path, labels="0,1,2,3,4,5,6,7,8,9", per_label: int = 8, seed: int = 0,
               **sampler) -> tuple:
    """Sample `per_label` images per label (one grid row each) and write them as a PNG: (path, labels)."""
    images, labels = sample_images(export, labels, per_label, seed, **sampler)
    return save_png(grid(images), path), labels
