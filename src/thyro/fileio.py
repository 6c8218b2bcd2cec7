"""Small file helpers used everywhere: atomic writes and content hashes.

Every write goes through :func:`atomic_path`, so a failed write (a full disk above all) is turned
into one :class:`~thyro.errors.WriteError` that names the file and says that nothing was lost,
whichever writer failed: Python's ``OSError`` (``ENOSPC``), torch's ``RuntimeError`` from its zip
writer (``[enforce fail at inline_container.cc:...]``, ``basic_ios::clear``), safetensors'
``SafetensorError`` (``os error 28``).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from thyro.errors import WriteError

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
        import resource

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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the body raises (or the disk fills up), the temporary file is removed and any previous
    ``path`` stays as it was.  ``suffix`` keeps an extension that a writer may need
    (e.g. ``.png`` for matplotlib, ``.npy`` for numpy).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" if suffix is None else suffix,
                                   dir=path.parent)
    except OSError as exc:
        failure = write_failure(exc, path)
        if failure is not None:
            raise failure from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
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
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; rename it onto ``path`` when the block ends cleanly."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


#: Seconds a lock or claim stays valid without a heartbeat (``THYRO_LOCK_LIFETIME`` overrides).  A holder
#: refreshes it four times per lifetime; a holder that died loses it after this long (at once when it
#: ran on this machine and its process is gone).
DEFAULT_LOCK_LIFETIME = 120.0


def _lifetime(lifetime: float | None) -> float:
    if lifetime is not None:
        return float(lifetime)
    env = os.environ.get("THYRO_LOCK_LIFETIME", "")
    try:
        return float(env) if env else DEFAULT_LOCK_LIFETIME
    except ValueError:
        return DEFAULT_LOCK_LIFETIME


class _Heartbeat:
    """Refreshes a flufl lock from a daemon thread while its holder works."""

    def __init__(self, lock, lifetime: float):
        self._lock, self._every = lock, max(0.05, lifetime / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thyro-lock-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with contextlib.suppress(Exception):  # a lost lock is found by the next holder; keep working
                self._lock.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _break_if_dead(lock) -> None:
    """Remove a lock whose holder ran on this machine and has exited (no need to wait for its lifetime)."""
    from flufl.lock import LockState

    with contextlib.suppress(Exception):
        if lock.state is LockState.stale:
            host, pid, claim = lock.details
            with contextlib.suppress(FileNotFoundError):
                os.unlink(claim)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock.lockfile)


def _new_lock(path: str | os.PathLike, lifetime: float):
    from datetime import timedelta

    from flufl.lock import Lock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Lock(str(path), lifetime=timedelta(seconds=lifetime))


# Locks and claims use flufl.lock: hard-link based, so they hold across nodes on NFS where flock/fcntl
# advisory locks are unreliable, with a lifetime after which a dead holder's lock is broken.
@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike, *, lifetime: float | None = None) -> Iterator[None]:
    """An exclusive lock on ``lock_path`` for processes sharing a folder, on one machine or several
    (a shared filesystem); waits until it is free.  Not re-entrant."""
    life = _lifetime(lifetime)
    lock = _new_lock(lock_path, life)
    _break_if_dead(lock)
    lock.lock()
    beat = _Heartbeat(lock, life)
    try:
        yield
    finally:
        beat.stop()
        lock.unlock(unconditionally=True)


@contextlib.contextmanager
def claim_file(path: str | os.PathLike, *, lifetime: float | None = None) -> Iterator[bool]:
    """Try to claim the work that ``path`` stands for; yields True when this process holds it, False
    when a live process elsewhere does.  A claim left by a dead process is taken over (at once on this
    machine, after ``lifetime`` seconds from another).  The claim is kept fresh while the block runs
    and released when it ends."""
    from datetime import timedelta

    from flufl.lock import TimeOutError

    life = _lifetime(lifetime)
    lock = _new_lock(path, life)
    _break_if_dead(lock)
    try:
        lock.lock(timeout=timedelta(seconds=1.0))
    except TimeOutError:
        yield False
        return
    beat = _Heartbeat(lock, life)
    try:
        yield True
    finally:
        beat.stop()
        lock.unlock(unconditionally=True)


def claim_holder(path: str | os.PathLike) -> str | None:
    """``host pid N`` of the process holding the claim ``path``, or None when nobody holds it."""
    from flufl.lock import NotLockedError

    lock = _new_lock(path, _lifetime(None))
    try:
        host, pid, _ = lock.details
    except (NotLockedError, OSError):
        return None
    return f"{host} pid {pid}"


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv_rows(path: str | os.PathLike, rows: list[dict], fields: tuple[str, ...] | list[str]) -> None:
    """Write dict rows as a CSV with the given columns (others ignored), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


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
