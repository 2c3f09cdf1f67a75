"""Profiles, explicit values and ``--set`` overrides: how a params mapping is assembled before validation.

:func:`gradmix.config.load` reads ``params.yaml`` and hands the raw mapping to :func:`resolve`, which
applies, lowest precedence first: the built-in defaults (which params.yaml writes out), the profile
``profile.name`` of ``profile.file``, values of params.yaml that differ from the built-in defaults
(explicit: set by hand or by ``dvc exp run -S``), the ``smoke`` section (``smoke=True``), and the
``--set``-style overrides; and the checks of the file itself (:func:`check_complete`: every
section written out; :func:`check_templated`: what dvc.yaml templates from it can run). Everything
here works on plain mappings; the typed sections and their
defaults live in :mod:`gradmix.config`, which imports this module (never the reverse) and passes its
:func:`~gradmix.config.builtin_defaults` in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from .checks import ConfigError, build, check_choice, load_yaml
from .inheritance import read_params

__all__ = ["ProfileConfig", "PROFILE_SECTIONS", "merge", "profile_names", "select_profile", "apply_profile",
           "parse_overrides", "apply_overrides", "yaml_values", "resolve", "Resolved", "check_complete",
           "check_templated"]

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
    raw = load_yaml(path.read_text()) or {}
    prof = build(ProfileConfig, raw.get("profile"), "profile")
    file = path.parent / prof.file
    return list(load_yaml(file.read_text()) or {}) if file.is_file() else ["default"]


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


def check_complete(raw: Any, path: str | Path = "params.yaml", sections=()) -> None:
    """Fail unless a params file writes out every section of ``sections`` (gradmix.config.SECTIONS; and
    ``pipeline`` both of its lists), each as a mapping.

    What a file may leave out: a *key* inside a section takes its built-in default (the value the
    repository's params.yaml ships with), so a file written before a knob existed still loads. A
    *section* may not be left out: an empty file, or one cut short, would otherwise run silently with
    the built-in defaults (the sections are written in that order, ``pipeline`` with
    ``distill`` after ``methods`` last, so a file cut anywhere before the last list lacks a section or
    ``pipeline.distill``). Raises ConfigError naming the file and the missing sections.
    """
    if raw is None:
        raise ConfigError(f"params file {path} is empty; it must hold the sections {list(sections)} (start "
                          f"from the repository's params.yaml)")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params file {path}: expected a mapping of sections, got {type(raw).__name__}")
    missing = [s for s in sections if s not in raw]
    if missing:
        raise ConfigError(f"params file {path}: section(s) {missing} missing (a truncated or partial file?); "
                          f"every section must be written out, valid sections: {list(sections)} (copy the "
                          f"missing ones from the repository's params.yaml)")
    empty = [s for s in sections if not isinstance(raw[s], Mapping)]
    if empty:
        raise ConfigError(f"params file {path}: section(s) {empty} are {[raw[s] for s in empty]}, not mappings "
                          f"of keys; valid: a mapping, e.g. `smoke: {{}}` for no overrides")
    lists = [k for k in ("methods", "distill") if k not in raw.get("pipeline", {})]
    if lists:
        raise ConfigError(f"params file {path}: pipeline.{lists[0]} missing (a truncated file?); write both "
                          f"pipeline.methods and pipeline.distill ([] for none)")


OUTPUT_ROOTS = ("runs", "results", "data")      # what dvc.yaml's other stages write (runs/<method>, results/...)


def check_templated(raw: Mapping[str, Any], path: str | Path = "params.yaml", reserved=("teacher",)) -> None:
    """Fail on a value of the params *file* that dvc.yaml cannot template into a runnable stage.

    ``teacher.dir`` is the teacher stage's output and the distilled students' dependency
    (``${teacher.dir}``), so in params.yaml itself it must be a folder inside the project that no
    other stage writes: not empty (DVC then stops with a bare error), not absolute or outside the
    project, not ``runs``, ``results``, ``data`` or a folder inside ``results`` / ``data`` or inside
    ``runs/<a pipeline method>``. An empty ``teacher.dir`` ("train each teacher on demand in a
    temporary folder") stays valid where DVC does not read it: the ``smoke`` section, ``--set``,
    :func:`gradmix.config.replace`. A method may not be named ``teacher`` (the teacher's runs are). Raises ConfigError
    with the reason and the valid form.
    """
    import posixpath

    for section in (raw.get("methods") or {}, (raw.get("contrastive") or {}).get("methods") or {}):
        for name in reserved:
            if isinstance(section, Mapping) and name in section:
                raise ConfigError(f"methods: the name {name!r} is reserved for the distillation teacher (its "
                                  f"runs, gradmix train --method teacher); rename the method in {path}")
    value = (raw.get("teacher") or {}).get("dir", "runs/teacher")
    valid = "a folder inside the project that no other stage writes, e.g. runs/teacher"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"teacher.dir: {value!r} in {path} cannot be templated by dvc.yaml: it is the teacher "
                          f"stage's output (${{teacher.dir}}) and DVC stops on an empty path; valid: {valid} ('' = "
                          f"train teachers on demand in a temporary folder is for notebooks and the command line: "
                          f"the smoke section, --set teacher.dir= or config.replace)")
    norm = posixpath.normpath(value.replace("\\", "/"))
    pipeline = raw.get("pipeline") or {}
    contrastive = raw.get("contrastive") or {}
    methods = [*(pipeline.get("methods") or []), *(pipeline.get("distill") or []), *(contrastive.get("pipeline") or [])]
    taken = [f"runs/{m}" for m in methods]
    problem = None
    if posixpath.isabs(norm) or norm == "." or norm.startswith("../") or norm == "..":
        problem = "it lies outside the project (DVC outputs must be inside it)"
    elif norm in OUTPUT_ROOTS or norm.startswith(("results/", "data/")):
        problem = f"{norm.split('/')[0]}/ is where other stages write their outputs"
    elif any(norm == t or norm.startswith(t + "/") or t.startswith(norm + "/") for t in taken):
        problem = f"it overlaps a method's output runs/<method> ({[t for t in taken if norm == t or norm.startswith(t + '/') or t.startswith(norm + '/')][0]})"
    if problem:
        raise ConfigError(f"teacher.dir: {value!r} in {path} cannot be the teacher stage's output: {problem}; valid: {valid}")


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
                value = load_yaml(text) if text.strip() else ""
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
