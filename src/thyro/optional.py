"""Optional dependencies: import them, or say in one line how to install them for this installation.

thyro's core (data, training, statistics, the report) needs only its required packages.  ONNX export,
the web app, MLflow tracking and TensorBoard logs need extras (``pyproject.toml``'s
``[project.optional-dependencies]``).  Every place that imports one goes through :func:`require`, so a
missing package always ends in the same kind of message: what needs it, which packages are missing, and
the exact command that installs them for the way thyro itself was installed:

- from a source checkout (``pip install -e .``, or ``PYTHONPATH=src``): ``pip install -e '.[serve]'`` in
  the checkout's folder;
- from a wheel (``pip install thyro``): ``pip install 'thyro[serve]'``.

The pip named is the one of the running interpreter (``.venv/bin/pip`` for a virtual environment that is
not activated), so the command can be pasted as it is.
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import sys
from pathlib import Path
from types import ModuleType

from thyro.errors import MissingDependency

#: Import name -> (pip package, extra).  An import name ``a|b`` is satisfied by either module.
PACKAGES: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "python_multipart|multipart": ("python-multipart", "serve"),
    "mlflow": ("mlflow-skinny", "tracking"),
    "tensorboard": ("tensorboard", "tensorboard"),
}

#: What each extra is for (the README's set-up installs ``all``: every one of them, and the ``lite0`` weights).
EXTRAS = {"export": "ONNX export and --engine onnx", "serve": "the web app (thyro serve)",
          "tracking": "MLflow tracking (train.tracking: mlflow)", "tensorboard": "TensorBoard logs"}


def source_checkout() -> Path | None:
    """The root of the source checkout thyro runs from (editable install or ``PYTHONPATH=src``), else None."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "thyro" / "__init__.py").is_file():
        return root
    return None


def _pip(where: Path) -> str:
    """The pip of the running interpreter, written as short as it can be when run in ``where``."""
    bin_dir = Path(sys.executable).parent
    on_path = shutil.which("pip")
    if on_path and Path(on_path).resolve().parent == bin_dir.resolve():
        return "pip"
    own = bin_dir / "pip"
    if not own.is_file():
        return f"{shlex.quote(sys.executable)} -m pip"
    try:
        rel = os.path.relpath(own, where)
    except ValueError:  # another drive (Windows)
        rel = ".."
    return shlex.quote(rel if not rel.startswith("..") else str(own))


def install_command(extra: str) -> str:
    """The command that installs ``extra`` for this installation of thyro (module docstring)."""
    here = Path.cwd()
    root = source_checkout()
    if root is None:
        return f"{_pip(here)} install 'thyro[{extra}]'"
    prefix = "" if here.resolve() == root else f"cd {shlex.quote(str(root))} && "
    return f"{prefix}{_pip(root)} install -e '.[{extra}]'"


def _importable(name: str) -> bool:
    for alt in name.split("|"):
        try:
            importlib.import_module(alt)
            return True
        except ModuleNotFoundError as exc:
            if exc.name is not None and alt != exc.name and not alt.startswith(exc.name + "."):
                raise  # the package is there but one of *its* dependencies is not: not ours to hide
    return False


def missing_message(purpose: str, names: list[str]) -> str:
    """One line: ``purpose`` needs the packages of ``names`` (keys of :data:`PACKAGES`) and how to get them."""
    pips = [PACKAGES[n][0] for n in names]
    extras = list(dict.fromkeys(PACKAGES[n][1] for n in names))
    what = " and ".join(pips) if len(pips) <= 2 else ", ".join(pips[:-1]) + " and " + pips[-1]
    verb = "is" if len(pips) == 1 else "are"
    commands = " and ".join(install_command(e) for e in extras)
    return f"{purpose} needs {what}, which {verb} not installed; install with: {commands}"


def missing(*modules: str) -> list[str]:
    """The names among ``modules`` (keys of :data:`PACKAGES`) that cannot be imported."""
    unknown = [m for m in modules if m not in PACKAGES]
    if unknown:
        raise KeyError(f"not an optional dependency of thyro: {', '.join(unknown)}")
    return [m for m in modules if not _importable(m)]


def require(*modules: str, purpose: str) -> ModuleType:
    """Import the optional ``modules`` (keys of :data:`PACKAGES`) and return the first.

    Raises
    ------
    MissingDependency
        Naming ``purpose``, every missing package and the install command (one line).
    """
    absent = missing(*modules)
    if absent:
        raise MissingDependency(missing_message(purpose, absent))
    first = modules[0].split("|")
    for alt in first:
        try:
            return importlib.import_module(alt)
        except ModuleNotFoundError:
            continue
    raise MissingDependency(missing_message(purpose, [modules[0]]))  # pragma: no cover - checked above
