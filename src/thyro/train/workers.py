"""Worker processes of one study (``thyro study --jobs N``): each trains the jobs it can claim, as separate
``thyro study`` processes on one run directory would.

Workers are started with the ``spawn`` method (safe with torch's threads and CUDA in the parent), so they
inherit nothing of the parent's state: each is handed the parent's :func:`thyro.settings.get_settings`
explicitly, and calls ``worker_init`` (if given, a picklable callable such as the command line's set-up of
its output) before its work, as :class:`multiprocessing.pool.Pool`'s ``initializer`` would.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence

from thyro.errors import ThyroError
from thyro.settings import Settings, get_settings, set_settings

log = logging.getLogger(__name__)


def run_processes(work: Sequence[Callable[[], None]], *, worker_init: Callable[[], None] | None = None,
                  name: str = "thyro-worker") -> dict[str, str]:
    """Run each callable of ``work`` (picklable) in its own spawned process and wait for all of them; returns
    ``{process name: what went wrong}`` for those that ended badly.  Interrupted, it stops them all."""
    ctx = mp.get_context("spawn")
    settings = get_settings()
    procs = []
    for i, target in enumerate(work):
        proc = ctx.Process(target=_enter, args=(target, settings, worker_init), name=f"{name}-{i}")
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise
    return {p.name: f"exited with code {p.exitcode}" for p in procs if p.exitcode != 0}


def _enter(target: Callable[[], None], settings: Settings, worker_init: Callable[[], None] | None) -> None:
    """A worker's life: the parent's settings, the caller's set-up, the work; a thyro error ends it with code 2."""
    set_settings(**dataclasses.asdict(settings))
    if worker_init is not None:
        worker_init()
    try:
        target()
    except ThyroError as exc:
        log.error(f"error: {exc}")
        sys.exit(2)


__all__ = ["run_processes"]
