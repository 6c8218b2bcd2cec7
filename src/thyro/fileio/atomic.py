"""Atomic writes of files and folders, one :class:`~thyro.errors.WriteError` for a failed write, and content
hashes (see :mod:`thyro.fileio`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from thyro.errors import WriteError

from thyro.fileio.temporaries import _OLD_SUFFIX, sweep_once, temp_prefix

#: Errors of a write that failed for want of room, and how to say so.
_ROOM_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large (a file-size limit of this system or its file system)"}
#: Text by which writers that raise no ``OSError`` reveal a failed write (torch's C++ stream writer has
#: no errno to give; safetensors puts the OS error in its message).
_WRITE_FAILURE_TEXT = ("inline_container.cc", "PytorchStreamWriter", "basic_ios", "iostream error", "file write failed",
                       "No space left on device", "os error 28", "StorageFull", "Disk quota exceeded",
                       "File too large", "os error 27")
#: numpy's ``tofile`` on a short write: "200000 requested and 8176 written" (no errno).
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
#: Below this much free space a write failure without an errno is taken for a full disk.
_LOW_SPACE_BYTES = 64 * 1024 * 1024


def write_failure(exc: BaseException, path: str | os.PathLike) -> WriteError | None:
    """The :class:`WriteError` for ``exc`` raised while writing ``path``, or None when ``exc`` is not a
    failed write (a bug or bad data in the writer: it is left as it is)."""
    if isinstance(exc, WriteError):
        return exc
    reason = None
    if isinstance(exc, OSError) and exc.errno in _ROOM_ERRNOS:
        reason = _ROOM_ERRNOS[exc.errno]
    elif isinstance(exc, (RuntimeError, OSError)) or type(exc).__name__ == "SafetensorError":
        text = str(exc)
        if any(marker in text for marker in _WRITE_FAILURE_TEXT) or _SHORT_WRITE.search(text):
            if "No space left" in text or "os error 28" in text or "StorageFull" in text or _low_space(path):
                reason = _ROOM_ERRNOS[errno.ENOSPC]
            elif "quota" in text.lower():
                reason = _ROOM_ERRNOS[errno.EDQUOT]
            elif "File too large" in text or "os error 27" in text or _size_limited():
                reason = _ROOM_ERRNOS[errno.EFBIG]
            else:
                reason = f"the write failed ({' '.join(text.split())[:160]}): is the disk full or failing?"
    if reason is None:
        return None
    err = WriteError(f"{reason} writing {path}; nothing was lost (any earlier version of the file is untouched). "
                     f"Make room and run the same command again.")
    err.path = str(path)
    return err


def _size_limited() -> bool:
    """True when this process has a file-size limit (``ulimit -f``), which fails writes without an errno
    in some writers."""
    try:
        import resource  # lazy: a POSIX-only module (absent on Windows)

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return False
    return soft != resource.RLIM_INFINITY


def _low_space(path: str | os.PathLike) -> bool:
    try:
        return shutil.disk_usage(Path(path).parent).free < _LOW_SPACE_BYTES
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _new_temp(path: Path, suffix: str, *, folder: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_once(path.parent)
    make = tempfile.mkdtemp if folder else tempfile.mkstemp
    made = make(prefix=temp_prefix(path.name), suffix=suffix, dir=path.parent)
    if folder:
        return Path(made)
    os.close(made[0])
    return Path(made[1])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the body raises (or the disk fills up), the temporary file is removed and any previous
    ``path`` stays as it was; if the process is killed, the next write into the folder removes it
    (module docstring).  ``suffix`` keeps an extension that a writer may need (e.g. ``.png`` for
    matplotlib, ``.npy`` for numpy).
    """
    path = Path(path)
    try:
        tmp_path = _new_temp(path, ".tmp" if suffix is None else suffix)
    except OSError as exc:
        failure = write_failure(exc, path)
        if failure is not None:
            raise failure from None
        raise
    mode = 0o666 & ~_umask()
    os.chmod(tmp_path, mode)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        # again: some writers (safetensors) replace the file they are given with a new 0600 one
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        failure = write_failure(exc, path)
        if failure is not None and failure is not exc:
            raise failure from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success it replaces ``path`` (a folder or nothing).

    If the body raises, the temporary folder is removed; if the process is killed, the next write into
    the parent folder removes it (module docstring).  An existing ``path`` is moved aside under a
    temporary name, the new folder moved in, and the old one removed, so ``path`` is never half-written.
    """
    path = Path(path)
    try:
        tmp = _new_temp(path, "", folder=True)
    except OSError as exc:
        failure = write_failure(exc, path)
        if failure is not None:
            raise failure from None
        raise
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=_OLD_SUFFIX, dir=path.parent))
            old.rmdir()  # a free name that carries this process's mark
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # the earlier folder back in its place
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(exc, path)
        if failure is not None and failure is not exc:
            raise failure from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; rename it onto ``path`` when the block ends cleanly."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


#: Seconds a lock or claim stays valid without a heartbeat (``THYRO_LOCK_LIFETIME`` overrides).  A holder
#: refreshes it four times per lifetime; a holder that died loses it after this long (at once when it
def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of a canonical JSON encoding of ``obj`` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
