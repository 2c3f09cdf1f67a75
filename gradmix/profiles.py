"""Profiles, explicit values and ``--set`` overrides: how a params mapping is assembled before validation.

:func:`gradmix.config.load` reads ``params.yaml`` and hands the raw mapping to :func:`resolve`, which
applies, lowest precedence first: the built-in defaults (which params.yaml writes out), the profile
``profile.name`` of ``profile.file``, values of params.yaml that differ from the built-in defaults
(explicit: set by hand or by ``dvc exp run -S``), the ``smoke`` section (``smoke=True``), and the
``--set``-style overrides. Everything here works on plain mappings; the typed sections and their
defaults live in :mod:`gradmix.config`, which imports this module (never the reverse) and passes its
:func:`~gradmix.config.builtin_defaults` in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from .checks import ConfigError, build, check_choice
from .inheritance import read_params

__all__ = ["ProfileConfig", "PROFILE_SECTIONS", "merge", "profile_names", "select_profile", "apply_profile",
           "parse_overrides", "apply_overrides", "yaml_values", "resolve", "Resolved"]

# the sections a profile may set (not pipeline: DVC's stage list comes from params.yaml; not smoke, profile)
PROFILE_SECTIONS = ("data", "model", "train", "methods", "evaluate", "bench", "ood", "corruption",
                    "contrastive", "teacher")


@dataclass(frozen=True)
class ProfileConfig:
    """A named set of overrides from ``file`` (e.g. the paper's settings) applied by :func:`resolve`."""

    name: str = "default"           # default = params.yaml as written
    file: str = "params_paper.yaml"  # relative to params.yaml


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """Deep merge: mappings are merged key by key, everything else (lists, scalars) is replaced."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def profile_names(path: str | Path = "params.yaml") -> list[str]:
    """The profiles defined in the profile file that ``path`` (a params.yaml) points to."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    prof = build(ProfileConfig, raw.get("profile"), "profile")
    file = path.parent / prof.file
    return list(yaml.safe_load(file.read_text()) or {}) if file.is_file() else ["default"]


def select_profile(raw: Mapping[str, Any], base_dir: str | Path) -> tuple[str, dict]:
    """(name, overrides) of the profile ``raw`` selects; ``{}`` for ``default`` or no profile file."""
    prof = build(ProfileConfig, raw.get("profile"), "profile")
    path = Path(base_dir) / prof.file
    if not path.is_file():
        if prof.name == "default":
            return prof.name, {}
        raise ConfigError(f"profile.file: {path} not found (profile.name={prof.name!r})")
    profiles = read_params(path.read_text(), str(path)) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"profile file {path}: expected a mapping name -> overrides")
    if prof.name not in profiles:
        if prof.name == "default":
            return prof.name, {}
        raise ConfigError(f"profile.name: unknown profile {prof.name!r}; valid profiles in {path.name}: "
                          f"{sorted(profiles)}")
    over = profiles[prof.name] or {}
    if not isinstance(over, Mapping):
        raise ConfigError(f"profile {prof.name!r} in {path.name}: expected a mapping of sections")
    bad = sorted(set(over) - set(PROFILE_SECTIONS))
    if bad:
        raise ConfigError(f"profile {prof.name!r}: cannot override {bad}; valid sections: {sorted(PROFILE_SECTIONS)}")
    return prof.name, dict(over)


def apply_profile(raw: Mapping[str, Any], base_dir: str | Path = ".", notes: list | None = None, *,
                  defaults: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> dict:
    """``raw`` with its selected profile (``profile.name`` in ``profile.file``) merged in.

    A profile is a mapping of sections (:data:`PROFILE_SECTIONS`) whose values replace params.yaml's,
    except *explicit* ones: a value of ``raw`` that differs from its built-in default
    (``defaults(merged)``, gradmix.config.builtin_defaults) was set on purpose (by hand or by
    ``dvc exp run -S``) and wins; each such win is appended to ``notes`` as one line. ``default``
    (empty) keeps params.yaml as written.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params: expected a mapping at top level, got {type(raw).__name__}")
    name, over = select_profile(raw, base_dir)
    merged = merge(raw, over)
    builtin = defaults(merged)
    for keys, theirs in _leaves(over):
        ours, default = _get(raw, keys), _get(builtin, keys)
        if ours is _MISSING or default is _MISSING or _same(ours, default) or _same(ours, theirs):
            continue
        _put(merged, keys, ours)
        if notes is not None:
            notes.append(f"{'.'.join(keys)}={_show(ours)} (params.yaml) overrides profile {name}'s {_show(theirs)}")
    return merged


@dataclass
class Resolved:
    """What :func:`resolve` assembled: the mapping to validate and where its values came from."""

    merged: dict                    # profile, explicit values, smoke, then the --set overrides applied
    raw: dict                       # params.yaml as read (with profile.* overrides applied)
    sets: dict                      # the --set overrides other than profile.*
    profile: str                    # the selected profile's name
    profile_values: dict            # the selected profile's overrides
    notes: list                     # one line per profile value replaced by an explicit one

    def explain(self, error: ConfigError) -> ConfigError:
        """``error`` with where its key's value comes from when it is a profile's value that no longer
        fits an explicit one (None if the value is not the profile's)."""
        key = str(error).split(":", 1)[0]
        theirs = _get(self.profile_values, key.split("."))
        if theirs is _MISSING or key in self.sets or _same(_get(self.merged, key.split(".")),
                                                           _get(self.raw, key.split("."))):
            return None
        return ConfigError(f"{error} ({key}={_show(theirs)} comes from profile {self.profile}; set it too, e.g. "
                           f"--set {key}=... or dvc exp run -S {key}=...)")


def resolve(raw: Mapping[str, Any], base_dir: str | Path, *, smoke: bool, profile: str | None,
            overrides: Mapping[str, Any] | list[str] | None,
            defaults: Callable[[Mapping[str, Any]], Mapping[str, Any]], smoke_sections) -> Resolved:
    """Assemble the params mapping :func:`gradmix.config.load` validates (precedence: module docstring).

    ``profile`` replaces ``profile.name``; ``overrides`` are ``["train.epochs=3", ...]`` or
    ``{"train.epochs": 3}`` (:func:`parse_overrides`); ``smoke`` applies the ``smoke`` section, whose
    keys must be in ``smoke_sections``. Raises ConfigError naming the key or section.
    """
    raw = dict(raw)
    if profile is not None:
        raw["profile"] = {**(raw.get("profile") or {}), "name": profile}
    sets = parse_overrides(overrides)
    first = {k: v for k, v in sets.items() if k.startswith("profile.")}   # they choose the profile
    raw = apply_overrides(raw, first)
    notes: list[str] = []
    merged = apply_profile(raw, base_dir, notes, defaults=defaults)
    if smoke:
        sections = raw.get("smoke") or {}
        if not isinstance(sections, Mapping):
            raise ConfigError("smoke: expected a mapping section -> overrides")
        for section in sections:
            check_choice("smoke section", section, smoke_sections)
        merged = merge(merged, sections)
    rest = {k: v for k, v in sets.items() if k not in first}
    name, over = select_profile(raw, base_dir)
    for key, value in rest.items():
        theirs = _get(over, key.split("."))
        if theirs is not _MISSING and not _same(theirs, value):
            notes.append(f"{key}={_show(value)} (--set) overrides profile {name}'s {_show(theirs)}")
    return Resolved(merged=apply_overrides(merged, rest), raw=raw, sets=rest, profile=name,
                    profile_values=over, notes=notes)


_MISSING = object()
KEY = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def parse_overrides(overrides: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "data.splits=[0, 1]"]`` (values parsed as YAML; empty = "") or a mapping of
    dotted keys -> {dotted key: value}. A malformed item raises ConfigError naming it."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            key, eq, text = str(item).partition("=")
            if not eq:
                raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
            try:
                value = yaml.safe_load(text) if text.strip() else ""
            except yaml.YAMLError as e:
                raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
            items.append((key.strip(), value))
    for key, _ in items:
        if not KEY.fullmatch(key):
            raise ConfigError(f"--set {key!r}: not a dotted key of params.yaml, e.g. train.epochs or methods.mixup.alpha")
    return dict(items)


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any] | list[str] | None) -> dict:
    """``raw`` with each dotted key of ``overrides`` (see :func:`parse_overrides`) set; missing mappings on
    the way are created (from_dict then rejects unknown keys). Setting a key below a value that is not
    a mapping raises ConfigError."""
    out = merge(raw, {})
    for key, value in parse_overrides(overrides).items():
        keys = key.split(".")
        node = out
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = {}
            elif not isinstance(child, Mapping):
                raise ConfigError(f"--set {key}: {'.'.join(keys[:i + 1])} is {_show(child)}, not a section "
                                  f"with keys")
            node[k] = child = dict(child)
            node = child
        node[keys[-1]] = value
    return out


def yaml_values(v):
    """Tuples -> lists, recursively (dataclasses.asdict output -> YAML-like values)."""
    if isinstance(v, (list, tuple)):
        return [yaml_values(x) for x in v]
    if isinstance(v, dict):
        return {k: yaml_values(x) for k, x in v.items()}
    return v


def _same(a, b) -> bool:
    """Equal as YAML values: lists and tuples alike, 1 == 1.0, but true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return yaml_values(a) == yaml_values(b)


def _leaves(d: Mapping, prefix=()):
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def _get(d, keys):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return _MISSING
        d = d[k]
    return d


def _put(d: dict, keys, value) -> None:
    for k in keys[:-1]:
        d[k] = d = dict(d[k])
    d[keys[-1]] = value


def _show(v) -> str:
    """A value as one line of YAML (flow style)."""
    return yaml.safe_dump(yaml_values(v), default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
