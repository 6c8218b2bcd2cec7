"""thyro's weights folder: checkpoints converted once, found by name afterwards.

``thyro weights add FILE --arch A`` reads a recognised checkpoint (any layout
:mod:`thyro.models.weights.layouts` knows), checks it (coverage, NaN/Inf, the BatchNorm statistics) and
writes it as ``$THYRO_HOME/weights/<arch>.<name>.safetensors``: timm's names, the backbone without a
classifier, and in its metadata the preprocessing and layout it needs and where it came from (source file,
its SHA-256, the layout found, coverage, the check).  ``weights: imagenet`` finds ``<arch>.imagenet`` there
first, before torchvision's and timm's caches.

``THYRO_HOME`` defaults to ``$XDG_CACHE_HOME/thyro`` (``~/.cache/thyro``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from thyro.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def thyro_home() -> Path:
    """``$THYRO_HOME``, else ``$XDG_CACHE_HOME/thyro``, else ``~/.cache/thyro`` (read at call time)."""
    if os.environ.get("THYRO_HOME"):
        return Path(os.environ["THYRO_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "thyro"


def weights_dir() -> Path:
    """The folder ``thyro weights add`` writes to."""
    return thyro_home() / "weights"


def stored_path(arch: str, name: str = "imagenet") -> Path:
    """Where the weights ``name`` of ``arch`` live in the weights folder."""
    if not NAME.match(name):
        raise ConfigError(f"weights name {name!r}: use letters, digits, '_', '-', '.' (it becomes a file name).")
    return weights_dir() / f"{arch}.{name}.safetensors"


def list_stored() -> list[dict]:
    """Every file of the weights folder with its metadata (arch, name, provenance)."""
    from thyro.models.weights.formats import read_safetensors_metadata, thyro_metadata

    out = []
    folder = weights_dir()
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        arch, _, rest = path.name.partition(".")
        entry = {"path": str(path), "arch": arch, "name": rest[: -len(".safetensors")], "size_bytes": path.stat().st_size}
        try:
            info = thyro_metadata(read_safetensors_metadata(path)) or {}
        except Exception as exc:  # a damaged file is listed, with why
            entry["error"] = str(exc)
            info = {}
        entry["provenance"] = (info.get("metadata") or {}).get("provenance")
        entry["layout"] = info.get("layout")
        entry["input_spec"] = info.get("input_spec")
        out.append(entry)
    return out


def provenance_text(prov: dict | None) -> str:
    """One line for a stored file's provenance."""
    if not prov:
        return "no provenance recorded"
    return (f"from {prov.get('source_file')} (sha256 {str(prov.get('source_sha256'))[:12]}...), "
            f"{prov.get('layout')}, coverage {prov.get('coverage')}, added {prov.get('added')}")


__all__ = ["list_stored", "provenance_text", "stored_path", "thyro_home", "weights_dir"]
