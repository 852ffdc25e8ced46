"""Diffusion math in numpy float64: noise schedules and the DDPM and DDIM samplers.

Training (`zoo.models.diffusion`) reads its schedule from here, so the model is trained and
served on the same numbers. The samplers take any `denoise(x_t, t, labels) -> epsilon` callable:
the ONNX Runtime denoiser of an export, or the Keras model (the tests check that both give the
same images from the same seed). Classifier-free guidance runs the denoiser on the labels and on
the "no label" class in one batch: eps = eps_uncond + scale * (eps_cond - eps_uncond).
"""

import math

import numpy as np

SCHEDULES = ("linear", "cosine")
NULL_LABEL = 10  # the class-embedding row meaning "no label" (MNIST has labels 0..9)


def betas(kind: str, steps: int) -> np.ndarray:
    """beta_1..beta_T. linear: 1e-4..0.02 scaled to T (Ho et al., 2020); cosine: Nichol & Dhariwal, 2021."""
    if kind == "linear":
        scale = 1000.0 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    if kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(steps + 1, dtype=np.float64) / steps + s) / (1 + s) * math.pi / 2) ** 2
        return np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")


class Schedule:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), for t = 0..T-1 (the denoiser's t input)."""

    def __init__(self, kind: str = "cosine", steps: int = 1000):
        self.kind, self.steps = kind, steps
        self.betas = betas(kind, steps)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = np.cumprod(self.alphas)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "steps": self.steps}

    def add_noise(self, x0, noise, t):
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (t: int array [B])."""
        a = self.alpha_bar[t].reshape(-1, *([1] * (np.ndim(x0) - 1)))
        return np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise


def guided(denoise, x, t, labels, guidance: float, null_label: int):
    """epsilon with classifier-free guidance (guidance 1: the conditional model alone)."""
    batch = len(x)
    tt = np.full(batch, t, np.int32)
    if guidance == 1.0 or labels is None:
        return np.asarray(denoise(x.astype(np.float32), tt, labels), np.float64)
    both = denoise(np.concatenate([x, x]).astype(np.float32), np.concatenate([tt, tt]),
                   np.concatenate([labels, np.full(batch, null_label, np.int32)]))
    cond, uncond = np.split(np.asarray(both, np.float64), 2)
    return uncond + guidance * (cond - uncond)


def _predict_x0(x, eps, alpha_bar, clip):
    """x_0 implied by epsilon; with `clip` (lo, hi) it is clipped and epsilon recomputed to match.

    For images in [-1, 1] clipping matters: at the last steps of the cosine schedule alpha_bar is
    ~1e-9, so x_0 = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) multiplies any error of eps by
    ~2e4 (Ho et al. clip x_0 the same way in their sampler).
    """
    x0 = (x - np.sqrt(1.0 - alpha_bar) * eps) / np.sqrt(alpha_bar)
    if clip is None:
        return x0, eps
    x0 = np.clip(x0, *clip)
    return x0, (x - np.sqrt(alpha_bar) * x0) / np.sqrt(1.0 - alpha_bar)


def ddpm_sample(denoise, schedule: Schedule, shape, labels=None, guidance: float = 1.0, null_label: int = NULL_LABEL,
                seed: int = 0, clip=None) -> np.ndarray:
    """Ancestral sampling through all T steps (Ho et al., 2020, algorithm 2, sigma_t^2 = beta_t), in
    the posterior-mean form mu = c0 x_0 + c1 x_t, which allows clipping x_0 (`clip`: (lo, hi) or None)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    for t in reversed(range(schedule.steps)):
        eps = guided(denoise, x, t, labels, guidance, null_label)
        alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bar[t], schedule.betas[t]
        alpha_bar_prev = schedule.alpha_bar[t - 1] if t > 0 else 1.0
        x0, _ = _predict_x0(x, eps, alpha_bar, clip)
        x = (np.sqrt(alpha_bar_prev) * beta * x0 + np.sqrt(alpha) * (1.0 - alpha_bar_prev) * x) / (1.0 - alpha_bar)
        if t > 0:
            x = x + np.sqrt(beta) * rng.standard_normal(shape)
    return x


def ddim_timesteps(total: int, steps: int) -> np.ndarray:
    """`steps` evenly spaced timesteps from T-1 down to 0."""
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be in 1..{total}, got {steps}")
    return np.unique(np.round(np.linspace(0, total - 1, steps)).astype(np.int64))[::-1]


def ddim_sample(denoise, schedule: Schedule, shape, labels=None, steps: int = 50, eta: float = 0.0,
                guidance: float = 1.0, null_label: int = NULL_LABEL, seed: int = 0, clip=None) -> np.ndarray:
    """DDIM (Song et al., 2021): `steps` denoiser calls; eta 0 is deterministic, eta 1 ~ DDPM.
    `clip`: (lo, hi) bounds for the predicted x_0 (see `_predict_x0`), or None."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    times = ddim_timesteps(schedule.steps, steps)
    for i, t in enumerate(times):
        eps = guided(denoise, x, t, labels, guidance, null_label)
        a_t = schedule.alpha_bar[t]
        a_prev = schedule.alpha_bar[times[i + 1]] if i + 1 < len(times) else 1.0
        x0, eps = _predict_x0(x, eps, a_t, clip)
        sigma = eta * np.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        x = np.sqrt(a_prev) * x0 + np.sqrt(np.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps
        if eta > 0 and i + 1 < len(times):
            x = x + sigma * rng.standard_normal(shape)
    return x


def parse_sampler(row: str) -> tuple:
    """"ddim-50" -> ("ddim", 50, None); "ddpm-1000" -> ("ddpm", 1000, None); "ddim-50@2" -> ("ddim", 50, 2.0),
    the number after @ being a guidance scale."""
    name, _, scale = row.partition("@")
    kind, _, steps = name.partition("-")
    try:
        guidance = float(scale) if scale else None
    except ValueError:
        guidance = -1.0
    if kind not in ("ddim", "ddpm") or not steps.isdigit() or (guidance is not None and guidance < 0):
        raise ValueError(f"sampler rows look like ddim-50, ddpm-1000 or ddim-50@2 (guidance 2), got {row!r}")
    return kind, int(steps), guidance


def sample(denoise, schedule, labels, sampler="ddim", steps=50, eta=0.0, guidance=1.0, seed=0, conditional=True,
           batch_size=250, null_label=NULL_LABEL, image_shape=(28, 28, 1), clip=(-1.0, 1.0)) -> np.ndarray:
    """Images in [-1, 1], `[N, *image_shape]`, one per label, in batches of `batch_size` (batch i seeded seed + i).

    The same function samples with the TensorFlow denoiser (`zoo.models.diffusion.tf_denoiser`) and
    with ONNX Runtime (zoo.runtime.images), so both give the same images from the same seed.
    """
    from zoo.runtime.core import Progress

    labels = np.asarray(labels, np.int32)
    if sampler == "ddpm" and steps != schedule.steps:
        raise ValueError(f"DDPM runs all {schedule.steps} steps; use ddim for fewer")
    batches = -(-len(labels) // batch_size)
    progress = Progress(batches * (schedule.steps if sampler == "ddpm" else steps), f"{sampler}-{steps} denoiser steps")
    network = denoise

    def denoise(*args, **kwargs):  # counts the steps for the progress line
        progress.update()
        return network(*args, **kwargs)

    out = []
    for i in range(0, len(labels), batch_size):
        chunk = labels[i : i + batch_size]
        shape = (len(chunk), *image_shape)
        kwargs = dict(labels=chunk if conditional else None, guidance=guidance if conditional else 1.0,
                      null_label=null_label, seed=seed + i // batch_size, clip=clip)
        if sampler == "ddpm":
            out.append(ddpm_sample(denoise, schedule, shape, **kwargs))
        else:
            out.append(ddim_sample(denoise, schedule, shape, steps=steps, eta=eta, **kwargs))
    progress.close()
    return np.clip(np.concatenate(out), -1.0, 1.0)
