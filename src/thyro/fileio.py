"""Small file helpers used everywhere: atomic writes, what interrupted writes leave, safe CSV and
Markdown text, and content hashes.

Every write goes through :func:`atomic_path` (a folder through :func:`atomic_dir`), so a failed write
(a full disk above all) is turned into one :class:`~thyro.errors.WriteError` that names the file and
says that nothing was lost, whichever writer failed: Python's ``OSError`` (``ENOSPC``), torch's
``RuntimeError`` from its zip writer (``[enforce fail at inline_container.cc:...]``,
``basic_ios::clear``), safetensors' ``SafetensorError`` (``os error 28``).

Temporaries
-----------
A write goes to a temporary beside its target, named ``.NAME.thyro-tmp-HOST-PID-XXXXXXXX[SUFFIX]``
(:func:`temp_prefix`): the host and process that write it are in the name.  A process killed mid-write
(``kill -9``, a power cut, an out-of-memory kill) cannot remove its temporary, so the first write of a
later process into the same folder does (:func:`sweep_orphans`): a temporary whose process is gone from
this host, or one written on another host and untouched for :data:`FOREIGN_STALE_S`; never one of a
live process.  It says so in one line.  Stale locks and job claims of dead processes on this host are
released the same way (:func:`release_stale_claims`).

Cells and text safe to open
---------------------------
Every CSV thyro writes goes through :func:`write_csv` or :class:`CsvWriter`: a text cell that starts
with ``=``, ``+``, ``-``, ``@``, tab, carriage return or NUL, which a spreadsheet would run as a formula
(OWASP's "CSV injection"), is written with a leading ``'``, the spreadsheet's own mark for text
(:func:`escape_cell`).  Numbers stay numbers (``-0.5`` is not touched).  thyro's readers remove the
mark again (:func:`read_csv`, :func:`unescape_cell`), so a round trip gives back the original text,
one that itself began with quotes included.  Markdown thyro writes has its HTML neutralised
(:func:`markdown_text`).
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
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


# ----------------------------------------------------------------------------------------------
# temporaries: named after their host and process, swept when that process is gone

#: Marks a temporary in its name: ``.NAME.thyro-tmp-HOST-PID-XXXXXXXX[SUFFIX]``.
TEMP_TAG = "thyro-tmp"
#: A temporary written on another host is removed once it has not been modified for this long (seconds):
#: whether its process lives cannot be asked from here, and no write takes a day.
FOREIGN_STALE_S = 24 * 3600.0
_TEMP_NAME = re.compile(rf"^\.(?P<name>.+)\.{TEMP_TAG}-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-(?P<rand>[a-z0-9_]{{8}})"
                        r"(?P<suffix>.*)$", re.DOTALL)
#: What the temporary folder of a replaced folder is called while the new one moves in (:func:`atomic_dir`).
_OLD_SUFFIX = ".old"
_swept: set[str] = set()
_swept_lock = threading.Lock()


def host_tag() -> str:
    """This host's name as temporaries carry it (letters, digits and ``_`` only, at most 40)."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname() or "host")[:40] or "host"


def temp_prefix(name: str) -> str:
    """The start of a temporary's name for target ``name``, written by this process on this host."""
    return f".{name}.{TEMP_TAG}-{host_tag()}-{os.getpid()}-"


@dataclass(frozen=True)
class Temporary:
    """A temporary found in a folder (see :func:`find_temporaries`).

    Attributes
    ----------
    path : Path
    target : str
        The name of the file or folder it was to become.
    host : str
        The writer's host (:func:`host_tag`).
    pid : int
        The writer's process id on that host.
    suffix : str
        What follows the random part (``.tmp``, ``.onnx``, ``.old``, ...).
    """

    path: Path
    target: str
    host: str
    pid: int
    suffix: str

    @property
    def local(self) -> bool:
        return self.host == host_tag()


def parse_temporary(path: str | os.PathLike) -> Temporary | None:
    """The :class:`Temporary` a path names, or None when its name is not a thyro temporary's."""
    path = Path(path)
    m = _TEMP_NAME.match(path.name)
    if m is None:
        return None
    return Temporary(path, m["name"], m["host"], int(m["pid"]), m["suffix"])


def find_temporaries(folder: str | os.PathLike) -> list[Temporary]:
    """Every thyro temporary directly in ``folder`` (none when it does not exist)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if name.startswith(".") and TEMP_TAG in name:
            tmp = parse_temporary(Path(folder) / name)
            if tmp is not None:
                found.append(tmp)
    return found


def pid_alive(pid: int, *, started_before: float | None = None) -> bool:
    """Whether process ``pid`` runs on this host (and, given ``started_before``, started before that time).

    A zombie counts as gone.  ``started_before`` (a file's modification time, say) tells a reused pid
    from the process that wrote the file: a process that started after the file was last written is
    not its writer.  When the answer is unknown, True (a live process's work is never taken away).
    """
    import psutil

    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_before is not None and proc.create_time() > started_before + 2.0:  # clock granularity
            return False
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):
        return True
    return True


def _mtime(path: Path) -> float | None:
    try:
        return path.lstat().st_mtime
    except OSError:
        return None


def _orphaned(tmp: Temporary, now: float) -> bool:
    """True when ``tmp``'s writer is gone: a dead process on this host, or untouched for a day elsewhere."""
    mtime = _mtime(tmp.path)
    if mtime is None:
        return False
    if tmp.local:
        return not pid_alive(tmp.pid, started_before=mtime)
    return now - mtime > FOREIGN_STALE_S


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


@dataclass
class Sweep:
    """What :func:`sweep_orphans` and :func:`release_stale_claims` did.

    Attributes
    ----------
    removed : list of (Path, int)
        Temporaries removed, with their size in bytes.
    restored : list of Path
        Folders put back: a folder being replaced when its writer died, the new one not yet in place.
    claims : list of Path
        Stale locks and claims released.
    pids : set of str
        ``host pid N`` of the processes whose leftovers these were.
    """

    removed: list[tuple[Path, int]]
    restored: list[Path]
    claims: list[Path]
    pids: set[str]

    def __bool__(self) -> bool:
        return bool(self.removed or self.restored or self.claims)

    def __iadd__(self, other: Sweep) -> Sweep:
        self.removed += other.removed
        self.restored += other.restored
        self.claims += other.claims
        self.pids |= other.pids
        return self

    def summary(self, where: str | os.PathLike) -> str:
        """One line saying what was cleaned up in ``where``."""
        parts = []
        if self.removed:
            total = sum(n for _, n in self.removed)
            names = ", ".join(p.name for p, _ in self.removed[:3]) + (", ..." if len(self.removed) > 3 else "")
            parts.append(f"removed {len(self.removed)} temporary file(s) or folder(s) ({_human(total)}: {names})")
        if self.restored:
            parts.append("put back " + ", ".join(p.name for p in self.restored) + " (its replacement never arrived)")
        if self.claims:
            parts.append(f"released {len(self.claims)} stale lock(s) or job claim(s)")
        who = ", ".join(sorted(self.pids)[:3]) + (", ..." if len(self.pids) > 3 else "")
        return f"{where}: " + "; ".join(parts) + f", left by interrupted runs ({who}: no longer running)"


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n} bytes"  # pragma: no cover


def sweep_orphans(folder: str | os.PathLike, *, announce: bool = True) -> Sweep:
    """Remove the temporaries in ``folder`` whose writers are gone (see the module docstring).

    A folder that :func:`atomic_dir` had moved aside to put a new one in its place is moved back when
    the new one never arrived (its writer died between the two renames); otherwise it is removed.

    Parameters
    ----------
    folder : path
    announce : bool
        Print one line (:func:`thyro.console.note`) when anything was cleaned up.

    Returns
    -------
    Sweep
    """
    folder = Path(folder)
    done = Sweep([], [], [], set())
    now = time.time()
    for tmp in find_temporaries(folder):
        if not _orphaned(tmp, now):
            continue
        target = folder / tmp.target
        if tmp.suffix == _OLD_SUFFIX and not target.exists() and not target.is_symlink():
            with contextlib.suppress(OSError):
                os.replace(tmp.path, target)
                done.restored.append(target)
                done.pids.add(f"{tmp.host} pid {tmp.pid}")
                continue
        size = _size(tmp.path)
        if _remove(tmp.path):
            done.removed.append((tmp.path, size))
            done.pids.add(f"{tmp.host} pid {tmp.pid}")
    if done and announce:
        from thyro.console import note

        note(done.summary(folder))
    return done


def sweep_once(folder: str | os.PathLike) -> Sweep | None:
    """:func:`sweep_orphans` the first time this process writes into ``folder``; None after that."""
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return None
        _swept.add(key)
    return sweep_orphans(folder)


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


#: flufl.lock's claim file beside a lock: ``LOCK|HOST|PID|RANDOM`` (the lock is a hard link to it).
_CLAIM_FILE = re.compile(r"^(?P<lock>[^|]+)\|(?P<host>[^|]+)\|(?P<pid>\d+)\|(?P<rand>-?\d+)$")


def release_stale_claims(folder: str | os.PathLike) -> Sweep:
    """Release the locks and job claims in ``folder`` left by processes that are gone.

    A lock (:func:`file_lock`) or claim (:func:`claim_file`) held by a dead process on this host is
    released, and so is one from another host that has not been refreshed within its lifetime (its
    holder stopped refreshing it; see :data:`DEFAULT_LOCK_LIFETIME`).  A live holder's is never
    touched.  Claim files left without their lock (a process killed while taking one) go too.
    """
    import psutil  # noqa: F401 - pid_alive needs it; fail here rather than halfway

    folder = Path(folder)
    done = Sweep([], [], [], set())
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return done
    fqdn = socket.getfqdn()
    now = time.time()
    for name in names:
        m = _CLAIM_FILE.match(name)
        if m is None:
            continue
        claim, lock = folder / name, folder / m["lock"]
        try:
            linked = lock.exists() and os.path.samefile(claim, lock)
        except OSError:
            linked = False
        if m["host"] == fqdn:
            stale = not pid_alive(int(m["pid"]), started_before=_mtime(claim))
        elif linked:
            # flufl.lock keeps a held lock's modification time at its expiry, moved on by each refresh
            stale = (_mtime(lock) or now) < now - 1.0
        else:
            stale = now - (_mtime(claim) or now) > FOREIGN_STALE_S
        if not stale:
            continue
        if linked and _remove(lock):
            done.claims.append(lock)
        if _remove(claim) and not linked:
            done.claims.append(claim)
        done.pids.add(f"{m['host']} pid {m['pid']}")
    return done


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


# ----------------------------------------------------------------------------------------------
# CSV cells and Markdown text safe to open

#: First characters that make a spreadsheet (Excel, LibreOffice, Google Sheets) read a cell as a formula:
#: OWASP's list for CSV injection, with NUL from ASVS 5 (V1.2.10).
FORMULA_STARTS = "=+-@\t\r\0"
_ESCAPE_TEST = re.compile(r"'*[=+\-@\t\r\0]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r\0]")
#: A number written as text: a spreadsheet reads it as that number, never as a formula, so it stays as it is.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_announced: set[str] = set()


def _needs_escape(text: str) -> bool:
    return _ESCAPE_TEST.match(text) is not None and not (text[0] != "'" and _DECIMAL.fullmatch(text))


def escape_cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet will not run: text that starts with ``=``, ``+``, ``-``,
    ``@``, tab, CR or NUL gets a leading ``'``; numbers (``-0.5`` as text too) and everything else are
    returned as they are.

    Text that already starts with quotes before such a character gets one more, so that
    :func:`unescape_cell` gives back exactly the original: ``"'=x"`` is written ``"''=x"``.
    """
    if isinstance(value, str) and value and _needs_escape(value):
        return "'" + value
    return value


def unescape_cell(value: Any) -> Any:
    """The original text of a cell :func:`escape_cell` wrote (anything else as it is)."""
    if isinstance(value, str) and value[:1] == "'" and _ESCAPED.match(value):
        return value[1:]
    return value


def escape_frame(df):
    """A copy of a DataFrame with every text cell and column name :func:`escape_cell`-ed, and the
    ``(row, column)`` of each cell changed (rows count from 0; a header cell has row None)."""
    out = df.copy()
    changed: list[tuple[int | None, str]] = [(None, str(c)) for c in out.columns if escape_cell(c) is not c]
    for j, col in enumerate(list(out.columns)):
        series = out.iloc[:, j]
        if series.dtype != object and str(series.dtype) not in ("string", "str"):
            continue
        flags = series.map(lambda v: isinstance(v, str) and bool(v) and _needs_escape(v)).to_numpy(dtype=bool)
        if flags.any():
            values = series.to_numpy(dtype=object).copy()
            values[flags] = ["'" + v for v in values[flags]]
            out.isetitem(j, values)
            changed += [(int(i), str(col)) for i in flags.nonzero()[0]]
    out.columns = [escape_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out, changed


def unescape_frame(df):
    """A DataFrame read from a CSV thyro wrote, with its text cells and column names as they were
    before :func:`escape_frame` (in place; returned for chaining)."""
    df.columns = [unescape_cell(c) for c in df.columns]
    for j in range(df.shape[1]):
        series = df.iloc[:, j]
        if series.dtype != object and str(series.dtype) not in ("string", "str"):
            continue
        flags = series.map(lambda v: isinstance(v, str) and v[:1] == "'" and _ESCAPED.match(v) is not None)
        flags = flags.to_numpy(dtype=bool)
        if flags.any():
            values = series.to_numpy(dtype=object).copy()
            values[flags] = [v[1:] for v in values[flags]]
            df.isetitem(j, values)
    return df


def read_csv(path: str | os.PathLike, **kwargs: Any):
    """``pandas.read_csv`` for a CSV thyro wrote (or one in its format): the text of cells that
    :func:`escape_cell` marked is given back as it was.  Keyword arguments go to pandas."""
    import pandas as pd

    return unescape_frame(pd.read_csv(path, **kwargs))


def escaped_note(path: str | os.PathLike, cells: list[tuple[int | None, str]]) -> str:
    """One line saying which cells of ``path`` were written with a leading ``'`` and why."""
    where = ", ".join(("header" if r is None else f"row {r + 2}") + f" {c}" for r, c in cells[:3])
    more = f" and {len(cells) - 3} more" if len(cells) > 3 else ""
    return (f"{path}: {len(cells)} cell(s) began with =, +, -, @, tab or CR ({where}{more}); written with a "
            "leading ' so that spreadsheets show them as text, not run them as formulas (thyro reads them back "
            "without it)")


def announce_escaped(path: str | os.PathLike, cells: list[tuple[int | None, str]]) -> None:
    """Print :func:`escaped_note` once per file and process (a file rewritten often says it once)."""
    if not cells:
        return
    key = os.path.abspath(path)
    with _swept_lock:
        if key in _announced:
            return
        _announced.add(key)
    from thyro.console import note

    note(escaped_note(path, cells))


class CsvWriter:
    """``csv.writer`` whose cells go through :func:`escape_cell`; ``cells`` lists the ones changed.

    Parameters
    ----------
    fh : text file opened with ``newline=""``
    """

    def __init__(self, fh: IO[str], **kwargs: Any):
        self._writer = csv.writer(fh, **kwargs)
        self._row = -1  # the header is row None, data rows count from 0
        self.cells: list[tuple[int | None, str]] = []
        self._header: list[str] = []

    def writerow(self, row: Iterable[Any]) -> None:
        row = list(row)
        out = [escape_cell(v) for v in row]
        if self._row < 0:
            self._header = [str(v) for v in row]
        for k, (a, b) in enumerate(zip(row, out)):
            if a is not b:
                col = self._header[k] if k < len(self._header) else str(k)
                self.cells.append((None if self._row < 0 else self._row, col))
        self._row += 1
        self._writer.writerow(out)

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def write_csv(path: str | os.PathLike, rows, fields: tuple[str, ...] | list[str] | None = None, *,
              announce: bool = True, **to_csv: Any) -> list[tuple[int | None, str]]:
    """Write a CSV atomically, its text cells safe to open in a spreadsheet (:func:`escape_cell`).

    Parameters
    ----------
    path : path
    rows : DataFrame, or list of dict
        Dict rows are written with the columns ``fields`` (other keys ignored, missing ones empty).
    fields : columns of dict rows; for a DataFrame, the columns to write (default all)
    announce : bool
        Say so in one line (:func:`announce_escaped`) when cells were changed.
    **to_csv
        Passed to ``DataFrame.to_csv`` (``index=False`` by default).  Lines end in CRLF, as RFC 4180 and
        :mod:`csv` write them: with pandas' default ``\n`` a cell holding a bare CR is left unquoted and
        splits its row in two when read back.

    Returns
    -------
    list of (row, column)
        The cells written with a leading ``'`` (rows count from 0; None is the header).
    """
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        df = rows if fields is None else rows[list(fields)]
        safe, cells = escape_frame(df)
        to_csv.setdefault("index", False)
        to_csv.setdefault("lineterminator", "\r\n")
        with atomic_path(path, suffix=".tmp") as tmp:
            safe.to_csv(tmp, **to_csv)
    else:
        if fields is None:
            raise TypeError("write_csv: dict rows need their fields")
        buf = io.StringIO()
        writer = CsvWriter(buf)
        writer.writerow(list(fields))
        for row in rows:
            writer.writerow(["" if row.get(f) is None else row.get(f) for f in fields])
        cells = writer.cells
        write_text(path, buf.getvalue())
    if announce:
        announce_escaped(path, cells)
    return cells


def write_csv_rows(path: str | os.PathLike, rows: list[dict], fields: tuple[str, ...] | list[str]) -> None:
    """Write dict rows as a CSV with the given columns (others ignored), atomically (:func:`write_csv`)."""
    write_csv(path, rows, fields)


#: ``<`` that opens an HTML tag, comment, declaration or autolink in Markdown (CommonMark's raw HTML):
#: a letter, ``/``, ``!`` or ``?`` follows.  ``p < 0.05`` and ``<= 4`` are left as they read.
_MARKDOWN_HTML = re.compile(r"<(?=[A-Za-z/!?])")


def markdown_text(value: Any) -> Any:
    """Text for a Markdown file that no viewer renders as HTML: every ``<`` that would open a tag,
    comment or autolink becomes ``&lt;`` (shown as ``<``); other values are returned as they are.

    Used as the ``finalize`` of thyro's Markdown templates, so every value put into them passes here.
    """
    if isinstance(value, str) and "<" in value:
        return _MARKDOWN_HTML.sub("&lt;", value)
    return value


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
