"""`diffusion`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses

from zoo.runtime import diffusion as dmath


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"       # or fashion_mnist (--set dataset=fashion_mnist)
    conditional: bool = True     # class embedding + label dropout: ask for a digit, with guidance
    widths: tuple[int, ...] = (16, 32, 64)  # channels at 28x28, 14x14, 7x7: 0.47 s a step of 128 on 2 CPU cores (32, 64, 64: 1.0 s)
    blocks: int = 1              # residual blocks per resolution on the way down (one more on the way up)
    heads: int = 4               # attention heads at 7x7
    groups: int = 8              # GroupNormalization groups
    label_dropout: float = 0.1   # fraction of labels replaced by the "no label" class (Ho & Salimans, 2021)
    schedule: str = "cosine"     # cosine keeps 28x28 images from being pure noise for the last ~1/3 of t
    timesteps: int = 1000        # T, as in DDPM
    ema_decay: float = 0.999     # half-life ~700 steps: a few percent of the run
    batch_size: int = 128
    epochs: int = 12             # 468 steps of ~0.47 s an epoch here: ~45 min, inside the 60-minute budget
    steps_per_epoch: int = 0     # 0: one pass over the train split
    learning_rate: float = 1e-3  # peak of a warm-up + cosine decay over the whole run
    warmup_steps: int = 200
    seed: int = 0
    # evaluate(): FID/class accuracy of `eval_samples` images per sampler row. DDPM-1000 with guidance
    # costs 2,000 denoiser passes per image (~680 passes/s here): 250 images take ~12 min, 10,000 8 h.
    eval_samples: int = 250
    eval_guidance: float = 2.0   # DDIM-50: FID 14.4 at guidance 2, 27.6 without (make eval-diffusion)
    eval_rows: tuple[str, ...] = ("ddim-10", "ddim-20", "ddim-50", "ddim-100", "ddpm-1000", "ddim-50@1")  # @: guidance


PRESETS = {
    "default": Config(),
    "unconditional": Config(conditional=False),
    "tiny": Config(widths=(8, 8, 16), heads=2, groups=4, timesteps=50, batch_size=8, epochs=2, steps_per_epoch=3,
                   warmup_steps=1, eval_samples=20, eval_rows=("ddim-5", "ddpm-50", "ddim-5@1")),
}


# Read only by evaluate(): overriding them keeps the run folder and the export folder.
EVAL_KEYS = ("eval_samples", "eval_guidance", "eval_rows")


def check_config(cfg):
    """The evaluation rows are read at train start, not after a long training run."""
    from zoo.config import UsageError

    for row in cfg.eval_rows:
        try:
            kind, steps, _ = dmath.parse_sampler(row)
        except ValueError as e:
            raise UsageError(f"eval_rows: {e}") from None
        if kind == "ddpm" and steps != cfg.timesteps:
            raise UsageError(f"eval_rows: {row!r}: DDPM runs every one of the {cfg.timesteps} timesteps")
        if kind == "ddim" and steps > cfg.timesteps:
            raise UsageError(f"eval_rows: {row!r}: DDIM takes at most {cfg.timesteps} steps")
    if cfg.schedule not in dmath.SCHEDULES:
        raise UsageError(f"schedule={cfg.schedule!r}: choose one of {', '.join(dmath.SCHEDULES)}")
