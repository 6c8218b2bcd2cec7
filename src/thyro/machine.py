"""What this machine offers a job: usable CPUs, and thread counts it can take."""

from __future__ import annotations

import os

from thyro.errors import ConfigError

#: CPU threads allowed per usable CPU: a little oversubscription is harmless, thousands of threads are not
#: (OpenMP allocates a stack per thread and aborts the process when it cannot).
THREADS_PER_CPU = 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which cgroups and ``taskset`` restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None, key: str = "train.threads") -> int | None:
    """``threads`` when this machine can use it; a :class:`ConfigError` naming ``key`` otherwise.

    Checked where the work runs (not when a configuration is read, which may happen on another
    machine), before torch is asked for the threads.
    """
    if threads is None:
        return None
    cpus = usable_cpus()
    if threads > THREADS_PER_CPU * cpus:
        raise ConfigError(f"{key}={threads}: this machine has {cpus} usable CPU(s); use at most "
                          f"{THREADS_PER_CPU * cpus} threads ({cpus} is usually best), or leave it unset.")
    return threads
