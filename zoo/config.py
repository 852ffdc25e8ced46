"""Presets and `--set key=value` overrides, checked against a preset's dataclass fields.

No TensorFlow here: the CLI reports a bad model, preset or key before TensorFlow starts.
"""

import dataclasses
import math
import typing


class ZooError(Exception):
    """A failure with a clear cause (missing data, failed export check); the CLI prints one line."""


class UsageError(ZooError):
    """A mistake in what the user asked for; the CLI prints it on one line and exits 2."""


def _parse_value(key: str, text: str, kind):
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--set {key}={text}: expected a boolean (true/false)")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"--set {key}={text}: expected an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"--set {key}={text}: expected a number") from None
    if kind is str:
        return text
    if typing.get_origin(kind) is tuple:
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(_parse_value(key, p.strip(), item) for p in parts)
    raise UsageError(f"--set {key}: values of type {kind} cannot be set from the command line")


def split_assignments(assignments) -> dict:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a missing '=' is a usage error."""
    out = {}
    for item in assignments or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key=value")
        out[key.strip()] = value
    return out


def apply_overrides(cfg, assignments):
    """Return a copy of dataclass `cfg` with `--set` overrides applied and type-checked."""
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, text in split_assignments(assignments).items():
        if key not in fields:
            raise UsageError(f"unknown key {key!r}; valid keys: {', '.join(sorted(fields))}")
        changes[key] = _parse_value(key, text, hints[key])
    return dataclasses.replace(cfg, **changes)


# Counts that must be at least 1 (matched as whole names or name endings); other integers must be
# >= 0 (seed: any). Floats must be finite and >= 0; rates named *dropout* below 1; learning rates > 0.
POSITIVE = ("epochs", "batch_size", "seq_len", "clip_length", "max_frames", "mixtures", "filters", "stacks",
            "timesteps", "heads", "groups", "blocks", "layers", "max_context", "generate_per_digit", "eval_samples",
            "judge_epochs", "iwae_k", "_dim", "_units", "_channels", "_layers", "_per_stack", "_heads", "_blocks", "_size",
            "d_model", "hidden", "kernel", "widths")


def _positive(key: str) -> bool:
    return any(key == p or (p.startswith("_") and key.endswith(p)) for p in POSITIVE)


def check_values(cfg):
    """Range-check every field of a config dataclass: a one-line UsageError naming the first bad one."""
    for field in dataclasses.fields(cfg):
        key, value = field.name, getattr(cfg, field.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise UsageError(f"{key}={v}: must be a finite number")
            if key == "seed":
                continue
            if _positive(key) and v < 1:
                raise UsageError(f"{key}={value}: must be at least 1")
            if v < 0:
                raise UsageError(f"{key}={value}: must be >= 0")
            if "dropout" in key and v >= 1:
                raise UsageError(f"{key}={v}: must be below 1")
            if key == "learning_rate" and v <= 0:
                raise UsageError(f"{key}={v}: must be > 0")


def choose(kind: str, name: str, choices) -> str:
    if name not in choices:
        raise UsageError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")
    return name
