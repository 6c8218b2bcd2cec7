"""The package is layered: every import points downward, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Lowest first.  A module may import from its own layer (inside its package) and from layers below.
LAYERS = [
    {"thyro", "thyro.errors", "thyro.base", "thyro.fileio", "thyro.device", "thyro.machine",
     "thyro.optional", "thyro.progress", "thyro.settings"},
    {"thyro.stats"},
    {"thyro.data"},
    {"thyro.models"},
    {"thyro.config", "thyro.config_reference"},
    {"thyro.metrics"},
    {"thyro.run"},
    {"thyro.use"},
    {"thyro.report"},
    {"thyro.train"},
    {"thyro.cli", "thyro.__main__", "thyro.api"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "thyro").rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """thyro modules ``name`` imports, at module level or inside functions."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in modules else base
                if target.startswith("thyro"):
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("thyro"))
    return {t for t in found if t in modules and t != name}


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in layer if m != "thyro") or name in layer:
            return i
    raise AssertionError(f"{name} is in no layer; add it to LAYERS")


def test_imports_point_downward():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for target in _imports(name, path, modules):
            if _layer(target) > _layer(name):
                wrong.append(f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})")
    assert not wrong, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    modules = _modules()
    graph = defaultdict(set)
    for name, path in modules.items():
        graph[name] = _imports(name, path, modules) - {n for n in modules if name.startswith(n + ".")}
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"modules importing each other in a circle: {cycles}"
