"""Terminal output: one rich console, progress bars that respect ``--quiet``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


def info(message: str) -> None:
    """Print a status line unless quiet."""
    if not _state["quiet"]:
        console.print(message)


def note(message: str) -> None:
    """Print one plain line (no markup, not wrapped) on stderr unless quiet: what a command did besides
    its work (files cleaned up, cells escaped), kept apart from output a script may read."""
    if not _state["quiet"]:
        err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def make_progress(transient: bool = False, *, disable: bool = False) -> Progress:
    """A rich progress display (disabled when quiet, or when asked)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=_state["quiet"] or disable,
        transient=transient,
    )


@contextlib.contextmanager
def progress_task(description: str, total: int | None) -> Iterator[tuple[Progress, int]]:
    """Context manager yielding ``(progress, task_id)``; update with ``progress.advance(task_id)``."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total, status="")
        yield progress, task


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (silent when quiet)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with progress_task(description, total) as (progress, task):
        for item in items:
            yield item
            progress.advance(task)
