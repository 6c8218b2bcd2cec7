"""Locks and job claims that hold across processes and nodes, and the release of those of dead holders
(see :mod:`thyro.fileio`)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path


from thyro.fileio.temporaries import FOREIGN_STALE_S, Sweep, _mtime, _remove, pid_alive

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
    from flufl.lock import LockState  # lazy: flufl.lock, kept off `thyro --help` (the CLI imports fileio)

    with contextlib.suppress(Exception):
        if lock.state is LockState.stale:
            host, pid, claim = lock.details
            with contextlib.suppress(FileNotFoundError):
                os.unlink(claim)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock.lockfile)


def _new_lock(path: str | os.PathLike, lifetime: float):
    from flufl.lock import Lock  # lazy: flufl.lock, kept off `thyro --help`

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
    from flufl.lock import TimeOutError  # lazy: flufl.lock, kept off `thyro --help`

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
    from flufl.lock import NotLockedError  # lazy: flufl.lock, kept off `thyro --help`

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
    # pid_alive needs psutil: fail here rather than halfway
    import psutil  # noqa: F401  # lazy: psutil, kept off `thyro --help` (the CLI imports fileio)

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


