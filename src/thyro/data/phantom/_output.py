"""Where the phantom's writers put their output: a folder written under a temporary name and moved into
place when complete, replacing an earlier output of the same kind and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from thyro.errors import DataError
from thyro.fileio import atomic_dir


def check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise DataError(f"phantom image size must be an integer of at least 64 pixels, got {size!r}.")
    return int(size)


def _prepare_out_dir(out_dir: Path, marker: str) -> None:
    """Refuse to overwrite a folder that is not empty and not an earlier output of the same kind."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a folder; choose another out_dir (--out).")
        if any(out_dir.iterdir()) and not (out_dir / marker).is_file():
            raise DataError(f"{out_dir}: folder is not empty and was not written by thyro ({marker} missing); "
                            "choose an empty or new out_dir (--out).")


@contextmanager
def staged_output(out_dir: Path, marker: str) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` to write into; moved onto ``out_dir`` when the block ends
    without an error (an earlier output of the same kind, with ``marker`` in it, is replaced; any
    other non-empty folder is refused before anything is written), deleted when it raises, and removed
    by the next run when the process is killed (:func:`thyro.fileio.atomic_dir`)."""
    _prepare_out_dir(out_dir, marker)
    with atomic_dir(out_dir) as tmp:
        yield tmp
