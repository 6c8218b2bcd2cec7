"""thyro's weights folder: checkpoints converted once, found by name afterwards.

``thyro weights add FILE --arch A`` reads a recognised checkpoint (any layout
:mod:`thyro.models.weights.layouts` knows), checks it (coverage, NaN/Inf, the verification of its mapping, that it
was trained: :mod:`thyro.models.weights.verify`) and writes it as ``$THYRO_HOME/weights/<arch>.<name>.safetensors``:
timm's names, the backbone without a classifier, and in its metadata the preprocessing and layout it needs and its
provenance (source file, its SHA-256, the layout found, coverage, and how it was verified: see
:mod:`thyro.models.weights.provenance`).  ``weights: imagenet`` finds ``<arch>.imagenet`` there first, before
torchvision's and timm's caches.

The folder is safe to share between processes: an add holds a lock on its entry (:func:`entry_claim`), so two adds
of one name never both write, and an entry is replaced only when the caller says so; a process killed during an add
leaves a temporary that :func:`list_stored` never shows and removes once its writer is gone.

``THYRO_HOME`` defaults to ``$XDG_CACHE_HOME/thyro`` (``~/.cache/thyro``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from thyro.errors import ConfigError, WeightsError
from thyro.fileio import claim_file, claim_holder, parse_temporary, release_stale_claims, sweep_orphans
from thyro.models.weights.formats import read_safetensors_metadata, thyro_metadata

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SUFFIX = ".safetensors"


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
    return weights_dir() / f"{arch}.{name}{SUFFIX}"


def writable_weights_dir() -> Path:
    """The weights folder, made if needed and shown to be writable (a file is created in it and removed), before
    any work is spent on a conversion.

    Raises
    ------
    WeightsError
        Naming the folder and why it cannot be written.
    """
    folder = weights_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # not os.access: it answers yes for root on a read-only mount
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise WeightsError(f"cannot write to thyro's weights folder {folder} ({why}); nothing was converted. Make it "
                           "writable, or point THYRO_HOME at a folder you can write to.") from None
    return folder


@contextlib.contextmanager
def entry_claim(path: Path) -> Iterator[None]:
    """Hold the weights folder's entry ``path`` for one add: a second add of the same entry, from this machine or
    another sharing the folder, is refused while this one runs.

    Raises
    ------
    WeightsError
        Another process holds the entry.
    """
    lock = path.with_name(f".{path.name}.lock")
    with claim_file(lock) as held:
        if not held:
            who = claim_holder(lock) or "another process"
            raise WeightsError(f"{path} is being added by {who} right now; wait for it to finish (then "
                               "`thyro weights list` shows it).")
        yield


def _sweep(folder: Path) -> None:
    """Remove what interrupted adds left in ``folder`` (temporaries and locks of processes that are gone)."""
    done = sweep_orphans(folder, announce=False)
    done += release_stale_claims(folder)
    if done:
        log.warning(done.summary(folder))


def list_stored() -> list[dict]:
    """Every entry of the weights folder with its metadata (arch, name, layout, preprocessing, provenance).

    Temporaries of adds in progress are not entries; those of processes that are gone are removed (with a
    warning saying so).
    """
    folder = weights_dir()
    if not folder.is_dir():
        return []
    _sweep(folder)
    out = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        if path.name.startswith(".") or parse_temporary(path) is not None:
            continue
        arch, _, rest = path.name.partition(".")
        entry = {"path": str(path), "arch": arch, "name": rest[: -len(SUFFIX)], "size_bytes": path.stat().st_size}
        try:
            info = thyro_metadata(read_safetensors_metadata(path)) or {}
        except WeightsError as exc:  # a damaged file is listed, with why
            entry["error"] = str(exc)
            info = {}
        entry["provenance"] = (info.get("metadata") or {}).get("provenance")
        entry["layout"] = info.get("layout")
        entry["input_spec"] = info.get("input_spec")
        out.append(entry)
    return out


__all__ = ["NAME", "entry_claim", "list_stored", "stored_path", "thyro_home", "weights_dir", "writable_weights_dir"]
