"""Validation helpers for configuration dataclasses: the one error type and the checks every section uses.

A leaf module: it imports nothing of the package, so every module that defines a validated options
dataclass (mixers, models, attribution, kNN, probe, distillation, the contrastive track) can use it,
and :mod:`gradmix.config` can import those modules' registries without an import cycle.

Rules every section gets from :func:`build`, whatever its own checks:

* a float knob is a finite number (NaN and ±inf fail, in :func:`coerce` and :func:`check_range`);
* a list knob holds each value once, unless its field says ``metadata={"repeats": True}`` (per-channel
  values such as ``data.mean``): ``[0, 0]`` as splits or seeds would train and count a run twice;
* a seed (a field named ``seed``, ``seeds`` or ``*_seed``) is an integer in [0, 2^32 - 1]: the range
  every generator the package feeds accepts, scikit-learn's ``random_state`` (the train/test split)
  included, with room for the offsets derived seeds add (torch.manual_seed stops at 2^64 - 1; a
  negative seed would be wrapped round by some generators and refused by others).
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the valid choices."""


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` of ``text``, except that an exponent without a dot (``1e-3``, ``5E4``) is a
    float, as in YAML 1.2 and in the files ``dvc exp run -S`` writes (PyYAML follows YAML 1.1, where
    ``lr: 1e-3`` is the string "1e-3"). Raises yaml.YAMLError for text that is not YAML."""
    import yaml

    return yaml.load(text, Loader=_loader())


def _loader():
    import yaml

    global _LOADER
    if _LOADER is None:
        class Loader(yaml.SafeLoader):
            pass
        Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                     list("-+0123456789"))
        _LOADER = Loader
    return _LOADER


_LOADER = None


def check_choice(where: str, value: Any, choices) -> None:
    """Raise :class:`ConfigError` naming ``where`` and the sorted ``choices`` if ``value`` is not one of them."""
    if value not in choices:
        raise ConfigError(f"{where}: unknown value {value!r}; valid choices: {sorted(choices)}")


def check_range(where: str, value, low=None, high=None, *, low_open=False, high_open=False) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (``low < value`` with ``low_open``,
    ``value < high`` with ``high_open``); a bound of None is not checked; a float that is not finite
    always fails."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number; valid: {lo}{low}, {high}{hi}")
    ok = True
    if low is not None:
        ok = value > low if low_open else value >= low
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        raise ConfigError(f"{where}: {value!r} is out of range; valid: {lo}{low}, {high}{hi}")


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
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number; valid: a finite number")
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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in kwargs.items():
        if isinstance(v, tuple) and not fields[k].metadata.get("repeats"):
            check_unique(f"{where}.{k}", v)
        if SEED.search(k):
            for s in v if isinstance(v, tuple) else (v,):
                check_seed(f"{where}.{k}", s)
    return cls(**kwargs)


SEED = re.compile(r"(^|_)seeds?$")
SEED_MAX = 2**32 - 1


def check_unique(where: str, values) -> None:
    """Raise :class:`ConfigError` if a list names a value more than once (naming the repeated values)."""
    seen, repeated = set(), []
    for v in values:
        key = (type(v).__name__, v) if isinstance(v, bool) else v
        if key in seen and v not in repeated:
            repeated.append(v)
        seen.add(key)
    if repeated:
        raise ConfigError(f"{where}: {list(values)} lists {repeated} more than once; valid: each value once")


def check_seed(where: str, value) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer seed in [0, 2^32 - 1] (module docstring)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{where}: {value!r} is not a valid seed; valid: an integer in [0, 2^32 - 1 = {SEED_MAX}]")


def list_parameter(where: str, value: Any) -> list:
    """A list-valued notebook or function parameter: a list or tuple as it is, or a string holding a
    YAML / JSON list (papermill's ``-p stages '["stage3"]'`` passes the text, not the list), or one
    bare name (``stage3`` -> ``["stage3"]``). Anything else raises :class:`ConfigError` naming
    ``where`` and the valid forms (``-y`` passes YAML values typed)."""
    import yaml

    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = load_yaml(text) if text else []
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
        if isinstance(parsed, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", parsed):
            return [parsed]
    raise ConfigError(f"{where}: {value!r} is not a list; valid: a list such as ['stage3'], from papermill "
                      f"-p {where} '[\"stage3\"]' or -y '{where}: [stage3]'")
