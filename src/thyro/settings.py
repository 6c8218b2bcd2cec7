"""Process-wide settings, in one place (scikit-learn's ``config_context`` is the model).

    import thyro.settings as ts

    ts.get_settings().max_pixels                 # 25,000,000 by default
    ts.set_settings(max_pixels=50_000_000)       # for this process from now on
    with ts.settings_context(max_pixels=1_000):  # for a block (this thread or asyncio task only)
        ...

Nothing here reads an environment variable or changes another library at import: the command line turns
its options (``thyro --max-pixels N``, or ``THYRO_MAX_PIXELS``, read by the command line alone) into
:func:`set_settings`, and a process that thyro starts (a study's worker) is handed :func:`get_settings`'s value
explicitly.

Settings
--------
max_pixels : int
    The largest image frame (width x height) the readers decode; a larger file is refused from its header,
    before anything is decoded (a "decompression bomb": a 200 KB PNG can declare 13,000 x 13,000 pixels).
    Decoding and preprocessing take about 20 bytes per pixel at their peak, so the default keeps one image
    under about 0.6 GB.  Per frame: a multi-frame file is decoded one frame at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from thyro.errors import ConfigError

#: Largest frame read by default, in pixels: larger than any ultrasound scanner's output (a few megapixels)
#: and than a 24-megapixel photograph of a screen.
DEFAULT_MAX_PIXELS = 25_000_000


@dataclass(frozen=True)
class Settings:
    """thyro's process-wide settings (see the module docstring)."""

    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ConfigError(f"max_pixels={self.max_pixels!r}: the pixel limit must be a whole number of pixels, "
                              "at least 1 (e.g. 25000000).")


_global = Settings()
_local: ContextVar[Settings | None] = ContextVar("thyro_settings", default=None)


def get_settings() -> Settings:
    """The settings in force here: a :func:`settings_context` block's, else the process's."""
    return _local.get() or _global


def set_settings(**changes) -> Settings:
    """Change the process's settings from now on (keyword arguments named as :class:`Settings`' fields);
    returns the new settings.  Inside a :func:`settings_context` block the block's own stay in force."""
    global _global
    _global = _replace(_global, changes)
    return _global


@contextlib.contextmanager
def settings_context(**changes) -> Iterator[Settings]:
    """Settings changed for the block only, in this thread or asyncio task."""
    token = _local.set(_replace(get_settings(), changes))
    try:
        yield get_settings()
    finally:
        _local.reset(token)


def _replace(settings: Settings, changes: dict) -> Settings:
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Settings)})
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(Settings))
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; thyro's settings are: {known}.")
    return dataclasses.replace(settings, **changes)


__all__ = ["DEFAULT_MAX_PIXELS", "Settings", "get_settings", "set_settings", "settings_context"]
