"""Temporaries named after the host and process that write them, and the sweep that removes those of
processes that are gone (see :mod:`thyro.fileio`)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

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
    import psutil  # lazy: psutil, kept off `thyro --help` (the CLI imports fileio)

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
        Log one warning line when anything was cleaned up.

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
        log.warning(done.summary(folder))
    return done


def sweep_once(folder: str | os.PathLike) -> Sweep | None:
    """:func:`sweep_orphans` the first time this process writes into ``folder``; None after that."""
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return None
        _swept.add(key)
    return sweep_orphans(folder)


