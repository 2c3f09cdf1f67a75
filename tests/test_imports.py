"""Imports point one way: no import cycle among the modules of gradmix, module- or function-level.

The graph is read from the source (every ``import`` / ``from ... import`` anywhere in a module,
inside functions and ``if`` blocks included), not from what one run happens to import. Importing
``a.b.c`` also runs the ``__init__`` of ``a.b`` and ``a``, so it counts as importing those packages
too, except for the packages that enclose the importing module itself: those are initialised before
any of their modules runs. ``from p import name`` depends on ``p.name`` when that is a module and on
``p``'s ``__init__`` otherwise.
"""
import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under the folder ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package modules it imports (see the module docstring for what counts)."""
    mods = modules(src, package)

    def existing(name: str) -> str | None:          # the longest prefix of ``name`` that is a module
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        own_pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        enclosing = set(_ancestors(name)) | ({name} if path.name == "__init__.py" else set())
        explicit = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                explicit |= {existing(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = own_pkg.split(".")[: len(own_pkg.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                for a in node.names:
                    sub = f"{module}.{a.name}"
                    explicit.add(sub if sub in mods else existing(module))
        deps = set()
        for t in explicit - {None}:
            deps.add(t)
            deps |= {p for p in _ancestors(t) if p in mods and p not in enclosing}
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [m0, m1, ..., m0], or None. Depth-first search, deterministic."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


def test_gradmix_has_no_import_cycle():
    graph = import_graph(ROOT, "gradmix")
    assert len(graph) > 30 and "gradmix.config" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_config_depends_on_the_registries_not_the_reverse():
    graph = import_graph(ROOT, "gradmix")
    for registry in ("gradmix.data", "gradmix.models", "gradmix.mixing", "gradmix.scores", "gradmix.ood",
                     "gradmix.corruption", "gradmix.distill", "gradmix.contrastive.config"):
        assert registry in graph["gradmix.config"], registry
    assert graph["gradmix.checks"] == set()                  # the leaf imports nothing of the package


def test_the_trainer_knows_nothing_of_distillation():
    graph = import_graph(ROOT, "gradmix")
    assert not {"gradmix.distill", "gradmix.teacher", "gradmix.trainers"} & graph["gradmix.train"]
    text = (ROOT / "gradmix" / "train.py").read_text().lower()
    assert "distill" not in text and "teacher" not in text and "student" not in text


def test_finder_reports_a_function_level_cycle_through_a_package_init(tmp_path):
    """config -> pkg.sub.conf runs pkg/sub/__init__.py, which imports pkg.sub.runs, which imports
    pkg.config inside a function: a cycle although no module-level import closes it."""
    src = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/config.py": "from .sub.conf import X\n",
        "pkg/sub/__init__.py": "from .conf import X\nfrom .runs import run\n",
        "pkg/sub/conf.py": "X = 1\n",
        "pkg/sub/runs.py": "def run():\n    from ..config import X\n    return X\n",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.config"] == {"pkg.sub", "pkg.sub.conf"}
    assert find_cycle(graph) == ["pkg.config", "pkg.sub", "pkg.sub.runs", "pkg.config"]


def test_finder_accepts_sibling_imports_and_catches_init_namespace_imports(tmp_path):
    """A package's modules may import each other although the package's __init__ imports them
    (the __init__ already runs); importing a name the __init__ defines is a real cycle."""
    files = {"pkg/__init__.py": "", "pkg/mix/__init__.py": "from .a import A\nfrom .b import B\nREG = {}\n",
             "pkg/mix/a.py": "from .b import B\nA = B\n", "pkg/mix/b.py": "import pkg.util\nB = 2\n",
             "pkg/util.py": "import os\n"}
    graph = import_graph(write_package(tmp_path / "ok", files), "pkg")
    assert graph["pkg.mix.a"] == {"pkg.mix.b"} and graph["pkg.mix.b"] == {"pkg.util"}
    assert find_cycle(graph) is None
    bad = {**files, "pkg/mix/b.py": "def f():\n    from . import REG\n    return REG\nB = 2\n"}
    assert find_cycle(import_graph(write_package(tmp_path / "bad", bad), "pkg")) == ["pkg.mix", "pkg.mix.a", "pkg.mix.b", "pkg.mix"]


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"a2"}, "a2": set(), "b": {"c"}, "c": {"b", "a"}}, ["b", "c", "b"]),
])
def test_find_cycle_on_small_graphs(graph, cycle):
    assert find_cycle(graph) == cycle
