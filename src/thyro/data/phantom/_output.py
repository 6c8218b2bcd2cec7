"""Where the phantom's writers put their output: a folder written under a temporary name and moved into
place when complete, replacing an earlier output of the same kind and nothing else."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from thyro.errors import DataError


def check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise DataError(f"phantom image size must be an integer of at least 64 pixels, got {size!r}.")
    return int(size)


def _prepare_out_dir(out_dir: Path, marker: str) -> None:
    """Refuse to overwrite a folder that is not empty and not an earlier output of the same kind."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a folder; choose another --out.")
        if any(out_dir.iterdir()) and not (out_dir / marker).is_file():
            raise DataError(f"{out_dir}: folder is not empty and was not written by thyro ({marker} missing); "
                            "choose an empty or new --out folder.")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move a finished temporary folder onto ``out_dir`` (replacing an earlier output)."""
    if out_dir.exists():
        trash = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, trash)
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


@contextmanager
def staged_output(out_dir: Path, marker: str) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` to write into; moved onto ``out_dir`` when the block ends
    without an error (an earlier output of the same kind, with ``marker`` in it, is replaced; any
    other non-empty folder is refused before anything is written), deleted when it raises."""
    _prepare_out_dir(out_dir, marker)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
