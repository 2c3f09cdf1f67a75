"""Method inheritance in params.yaml: YAML anchors and merge keys, read and checked.

A method restates only what differs from another one::

    methods:
      gradmix: &gradmix        # the anchor names the method others inherit from
        mixer: gradmix
        centre: peak
        ...
      gradmix_random:
        <<: *gradmix           # every key of gradmix ...
        centre: random         # ... except the ones written here

This is plain YAML (the merge key of YAML 1.1), so every reader sees the same resolved options:
PyYAML here, and DVC, which resolves the merge itself and therefore tracks each stage's parameters
(``methods.<name>``) with the inherited values included. :func:`read_params` loads such a file and
fails with a :class:`~gradmix.checks.ConfigError` naming the method, the merge key and the valid
choices when

* ``*name`` refers to no anchor defined above it (YAML needs the anchor first),
* a mapping merges a mapping that contains it (a cycle: ``a: &a {<<: *a}``), or
* a method inherits from a method of another mixer or kind (``methods``), of another view
  (``contrastive.methods``), or from a method of the other section, or
* a mapping names the same key twice (YAML keeps the last value silently; here it is an error naming
  the key and both lines). A key written below ``<<: *base`` that replaces an inherited one is not a
  duplicate: that is how a variant differs from its base.

Merges are shallow: a nested mapping (a contrastive method's ``options``) is taken as a whole; to
inherit it key by key, give the nested mapping its own anchor and merge that.
"""
from __future__ import annotations

from typing import Any

import yaml

from .checks import ConfigError, load_yaml

SECTIONS = {("methods",): ("mixer", "kind"), ("contrastive", "methods"): ("view",)}   # where methods live
DEFAULTS = {"kind": "ce"}


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _walk(text: str, source: str):
    """Anchors (name -> path) and merges [(path of the merging mapping, anchor, line)] of a YAML text.

    Raises ConfigError for an alias of an unknown anchor or of a mapping that contains the alias."""
    anchors: dict[str, tuple] = {}
    open_anchors: set[str] = set()
    merges: list[tuple[tuple, str, int]] = []
    stack: list[dict] = []

    def place() -> tuple:
        """Path of the node that starts now; consumes the key / index slot of its parent."""
        if not stack:
            return ()
        top = stack[-1]
        if top["kind"] == "seq":
            top["index"] += 1
            return top["path"] + (top["index"] - 1,)
        top["expect_key"] = True
        return top["path"] + (top["key"],)

    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentStartEvent,
                           yaml.DocumentEndEvent)):
            continue
        if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = stack.pop()
            open_anchors.discard(done["anchor"])
            continue
        top = stack[-1] if stack else None
        if top is not None and top["kind"] == "map" and top["expect_key"]:
            top["expect_key"] = False
            top["key"] = ev.value if isinstance(ev, yaml.ScalarEvent) else "?"
            if isinstance(ev, yaml.ScalarEvent):
                line = ev.start_mark.line + 1
                first = top["keys"].get(ev.value)
                top["keys"].setdefault(ev.value, line)
                if first is not None:
                    where = _dotted(top["path"] + (ev.value,))
                    raise ConfigError(f"{source} line {line}: {where}: duplicate key {ev.value!r} (first at line "
                                      f"{first}); YAML would silently keep the last value; valid: each key once "
                                      f"per mapping, so remove or rename one")
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):   # a complex key
                stack.append({"kind": "map" if isinstance(ev, yaml.MappingStartEvent) else "seq",
                              "path": top["path"] + ("?",), "anchor": None, "expect_key": True, "index": 0,
                              "keys": {}})
            continue
        path = place()
        line = ev.start_mark.line + 1
        if isinstance(ev, yaml.AliasEvent):
            merge = len(path) >= 1 and path[-1] == "<<" or len(path) >= 2 and path[-2] == "<<"
            owner = path[:path.index("<<")] if "<<" in path else path[:-1]
            what = f"`<<: *{ev.anchor}`" if merge else f"`*{ev.anchor}`"
            if ev.anchor not in anchors:
                raise ConfigError(f"{source} line {line}: {_dotted(owner)}: {what} names no anchor defined above "
                                  f"it; valid anchors: {sorted(anchors)}")
            if ev.anchor in open_anchors:
                raise ConfigError(f"{source} line {line}: {_dotted(owner)}: {what} refers to "
                                  f"{_dotted(anchors[ev.anchor])}, which contains it (a cycle); valid anchors: "
                                  f"{sorted(set(anchors) - open_anchors)}")
            if merge:
                merges.append((owner, ev.anchor, line))
            continue
        if ev.anchor:
            anchors[ev.anchor] = path
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if ev.anchor:
                open_anchors.add(ev.anchor)
            stack.append({"kind": "map" if isinstance(ev, yaml.MappingStartEvent) else "seq", "path": path,
                          "anchor": ev.anchor, "expect_key": True, "index": 0, "key": None, "keys": {}})
    return anchors, merges


def _section(path: tuple):
    """(section path, method name) if ``path`` is a method of a section of :data:`SECTIONS`, else None."""
    for section in SECTIONS:
        if len(path) == len(section) + 1 and path[:-1] == section:
            return section, path[-1]
    return None


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data.get(p) if isinstance(data, dict) else None
    return data


def check_inheritance(data: Any, merges, anchors, source: str) -> None:
    """A method may only inherit from a method of the same section and the same mixer/kind (view)."""
    for owner, anchor, line in merges:
        child, base = _section(owner), _section(anchors[anchor])
        if child is None:
            continue
        section, name = child
        where = f"{source} line {line}: {_dotted(owner)}"
        methods = _get(data, section)
        if base is None or base[0] != section:
            raise ConfigError(f"{where}: `<<: *{anchor}` merges {_dotted(anchors[anchor])}, not a method of "
                              f"{_dotted(section)}; valid bases: the methods of {_dotted(section)}: {sorted(methods)}")
        for key in SECTIONS[section]:
            mine, theirs = (methods[m].get(key, DEFAULTS.get(key)) if isinstance(methods[m], dict) else None
                            for m in (name, base[1]))
            if mine != theirs:
                same = sorted(m for m, v in methods.items() if m != name and isinstance(v, dict)
                              and v.get(key, DEFAULTS.get(key)) == mine)
                raise ConfigError(f"{where}: inherits (`<<: *{anchor}`) from {_dotted(section)}.{base[1]}, whose "
                                  f"{key} is {theirs!r}, but sets {key} {mine!r}; inherit from a method with "
                                  f"{key} {mine!r}: valid bases: {same}")


def read_params(text: str, source: str = "params.yaml") -> Any:
    """Parse a params YAML text, resolving and checking its anchors and merge keys (module docstring).

    Raises ConfigError for invalid YAML, an unknown or cyclic anchor, a duplicate key, or an inheritance
    across mixers, kinds, views or sections; ``source`` names the file in the messages.
    """
    try:
        anchors, merges = _walk(text, source)
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {source} is not valid YAML: {e}") from None
    check_inheritance(data, merges, anchors, source)
    return data
