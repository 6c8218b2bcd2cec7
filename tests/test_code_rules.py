"""The code's shape, checked: small modules and functions, a library that logs, imports a reader can see.

* no module under ``src/`` over :data:`MAX_MODULE_LINES` lines and no function over :data:`MAX_FUNCTION_LINES`;
* only ``thyro.cli`` imports the console (the library speaks through values, ``logging`` and
  :mod:`thyro.progress`);
* an import inside a function is kept only for an optional extra or a heavy package on a path that must stay
  light, and says so on its line (``# lazy: <reason>``); everything else is imported at the top of its module.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "thyro"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        yield path.relative_to(SRC.parent), text, ast.parse(text)


def test_no_module_over_400_lines():
    long = [f"{p}: {t.count(chr(10))} lines" for p, t, _ in _modules() if t.count("\n") > MAX_MODULE_LINES]
    assert not long, "modules over the limit:\n" + "\n".join(long)


def test_no_function_over_80_lines():
    long = []
    for path, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path}:{node.lineno} {node.name}: {n} lines")
    assert not long, "functions over the limit:\n" + "\n".join(long)


def test_only_the_command_line_imports_the_console():
    found = []
    for path, _, tree in _modules():
        if path.parts[1] == "cli" or path.name == "__main__.py":  # the command line, and `python -m thyro` into it
            continue
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n.startswith(("thyro.cli", "rich")) for n in names):
                found.append(f"{path}:{node.lineno} imports {', '.join(names)}")
    assert not found, "library modules that reach the terminal:\n" + "\n".join(found)


def test_every_import_inside_a_function_says_why():
    unexplained = []
    for path, text, tree in _modules():
        lines = text.splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    span = lines[node.lineno - 1:node.end_lineno]
                    if not any("# lazy:" in line for line in span):
                        unexplained.append(f"{path}:{node.lineno} {lines[node.lineno - 1].strip()}")
    assert not unexplained, ("imports inside functions without a '# lazy: <reason>' comment (move them to the "
                             "top of the module, or say why they must wait):\n" + "\n".join(sorted(set(unexplained))))
