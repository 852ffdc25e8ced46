"""Presets and `--set key=value` overrides, checked against a preset's dataclass fields.

No TensorFlow here: the CLI reports a bad model, preset or key before TensorFlow starts.
"""

import dataclasses
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


def apply_dict_overrides(defaults: dict, assignments) -> dict:
    """Like `apply_overrides` for a plain dict of defaults (types taken from the defaults)."""
    out = dict(defaults)
    for key, text in split_assignments(assignments).items():
        if key not in defaults:
            raise UsageError(f"unknown key {key!r}; valid keys: {', '.join(sorted(defaults))}")
        out[key] = _parse_value(key, text, type(defaults[key]))
    return out


def choose(kind: str, name: str, choices) -> str:
    if name not in choices:
        raise UsageError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")
    return name
