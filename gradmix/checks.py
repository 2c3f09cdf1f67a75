"""Validation helpers for configuration dataclasses: the one error type and the checks every section uses.

A leaf module: it imports nothing of the package, so every module that defines a validated options
dataclass (mixers, models, attribution, kNN, probe, distillation, the contrastive track) can use it,
and :mod:`gradmix.config` can import those modules' registries without an import cycle.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the valid choices."""


def check_choice(where: str, value: Any, choices) -> None:
    """Raise :class:`ConfigError` naming ``where`` and the sorted ``choices`` if ``value`` is not one of them."""
    if value not in choices:
        raise ConfigError(f"{where}: unknown value {value!r}; valid choices: {sorted(choices)}")


def check_range(where: str, value, low=None, high=None, *, low_open=False) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (``low < value`` with ``low_open``);
    a bound of None is not checked."""
    ok = True
    if low is not None:
        ok = value > low if low_open else value >= low
    if high is not None:
        ok = ok and value <= high
    if not ok:
        lo = "(" if low_open else "["
        raise ConfigError(f"{where}: {value!r} is out of range; valid: {lo}{low}, {high}]")


def coerce(where: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against a simple annotation (bool, int, float, str, tuple[...]); ints become floats
    where a float is expected and lists become tuples. Raises :class:`ConfigError` naming ``where``."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(typ)
        return tuple(coerce(f"{where}[{i}]", v, inner) for i, v in enumerate(value))
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls, values: Mapping[str, Any] | None, where: str):
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise :class:`ConfigError`
    naming ``where`` and the valid keys. The dataclass's own ``__post_init__`` checks the values."""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    kwargs = {k: coerce(f"{where}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)
