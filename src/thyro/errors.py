"""One exception family for the whole package.

Every message names the file, row or key at fault and says what to do.  The command line prints
``ThyroError`` messages without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class ThyroError(Exception):
    """Base class of every error thyro raises on bad input or configuration."""


class DataError(ThyroError):
    """Bad images, manifests, splits or folders."""


class ConfigError(ThyroError):
    """A configuration value or key that is not allowed."""


class WeightsError(ThyroError):
    """A weight file that is missing, unreadable, unsafe or of the wrong architecture."""


class TrainingError(ThyroError):
    """A training job that cannot go on (NaN loss, one-class fold, ...)."""


class StatsError(ThyroError, ValueError):
    """Inputs a statistic cannot be computed on (one class, NaN scores, ...)."""


class WriteError(ThyroError, OSError):
    """A file could not be written (disk full, quota, file-size limit); what was there before is intact."""


class ModelPackageError(ThyroError):
    """A model package that is incomplete or from an incompatible version."""


class Problems(DataError):
    """Several problems found in one pass, reported together.

    ``problems`` holds one line per problem; ``str()`` lists all of them.
    """

    def __init__(self, title: str, problems: Iterable[str]):
        self.title = title
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{title} ({len(self.problems)} problem(s)):\n{lines}")


class MissingDependency(ThyroError):
    """An optional package a feature needs is not installed; the message gives the install command."""


class ImageFailure(NamedTuple):
    """One image that could not be read or preprocessed: its id, why, and its row (0-based) in the
    manifest it was listed in."""

    image: str
    reason: str
    row: int


class UnreadableImages(Problems):
    """Images that could not be read or preprocessed; ``failures`` holds them as typed records (one
    :class:`ImageFailure` each), ``problems`` as lines that name the manifest row."""

    def __init__(self, title: str, failures: Iterable[ImageFailure]):
        self.failures = list(failures)
        super().__init__(title, [f"row {f.row + 2} ({f.image}): {f.reason}" for f in self.failures])
