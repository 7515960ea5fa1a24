"""The layout is the architecture (README, "Architecture"): imports only go down the layers, and no two modules
import each other, directly or through others — lazy imports inside functions included, since a circle through a
lazy import is still a circle in the design."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "defocus"

#: The layers of the README's table, lowest first: a module may import its own layer and the ones before it.
LAYERS: list[set[str]] = [
    {"errors", "checks", "files", "color", "progress", "allocator"},
    {"optics"},
    {"metrics", "visualize", "filters", "solve", "confidence"},
    {"data"},
    {"models"},
    {"losses"},
    {"refine", "calibrate", "predict", "outputs", "inspect", "evaluate", "demo", "export"},
    {"train"},
    {"finetune"},
    {"cli", "__main__", "__init__"},
]


def _unit(module: str) -> str:
    """The layer unit of a module path: the sub-package or the top-level module (``defocus.data.align`` -> data)."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"module defocus.{unit} is in no layer of the architecture: add it to the README and here")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The defocus modules ``name`` imports anywhere in its file (resolved to known modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and t.startswith("defocus"):
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    # The package root re-exports lazily by name (a table of strings, not imports): nothing to follow there.
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_imports_only_go_down_the_layers():
    upward = []
    for name, deps in _graph().items():
        if name == "defocus":
            continue
        for dep in deps:
            if dep == "defocus":
                dep_unit = "__init__"  # `from defocus import __version__`
                if dep_unit == "__init__":
                    continue  # the version string only; the root imports nothing eagerly
            if _layer(_unit(dep)) > _layer(_unit(name)):
                upward.append(f"{name} -> {dep}")
    assert not upward, "imports going up the layers: " + "; ".join(sorted(upward))


def test_no_import_circle():
    graph = _graph()
    graph.pop("defocus", None)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d == "defocus":
                continue
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
