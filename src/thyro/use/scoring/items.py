"""What is scored and how: one input (:class:`InputItem`), its header (:func:`image_info`), the frame policies
(:func:`frame_items`) that turn a multi-frame file into the units scored, and the heatmap methods."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from thyro.data.readers import ImageInfo, ImageReadError, Source, probe_image
from thyro.errors import ThyroError
from thyro.use.scoring.pixels import is_pixels

#: Images with a side under this many pixels are refused (the model's input would be mostly interpolation).
MIN_SIDE = 16
#: How multi-frame files are scored (see :mod:`thyro.use.predict`).
FRAME_POLICIES = ("first", "all", "mean")
#: The heatmap methods :meth:`thyro.use.scoring.Scorer.explain` takes: Grad-CAM and Grad-CAM++.
METHODS = ("gradcam", "gradcam++")


@dataclass
class InputItem:
    """One image to score.

    Attributes
    ----------
    source : Path, Source, PIL image or numpy array
        Where the pixels come from: a file (given as a path), bytes or a binary file object (given as
        such, kept as a :class:`~thyro.data.readers.Source` named ``name`` and read in memory), or pixels
        already decoded (see :func:`thyro.use.scoring.as_pixels`).
    name : str
        What the outputs call the input (the ``image`` column): the path as given, a manifest's image id,
        an upload's file name, ``array[K]``.
    roi : dict or None
        An ROI in the image's pixels (``{"box": [x0, y0, x1, y1]}`` or ``{"polygons": ...}``).
    error : str or None
        Set when the input is already known to be bad (a file not found, a manifest's bad ``roi`` cell).
    frame : int or None
        The frame to read; None reads frame 0 and warns when the file has more.
    extra : dict
        A manifest row's other columns (label, patient_id, group, ...), carried into the output.
    """

    source: Any
    name: str
    roi: dict | None = None
    error: str | None = None
    frame: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.source, (str, os.PathLike)):
            self.source = Path(self.source)
        elif not isinstance(self.source, Source) and not is_pixels(self.source):
            self.source = Source.of(self.source, self.name)  # once: a stream's start is where it stands now

    @property
    def path(self) -> Path | None:
        """The file, when the input is one."""
        return self.source if isinstance(self.source, Path) else None

    @property
    def where(self) -> str:
        """How messages name the input: the file's path, else :attr:`name`."""
        return str(self.path) if self.path is not None else self.name


def image_info(item: InputItem | Any, name: str | None = None) -> ImageInfo | None:
    """:class:`~thyro.data.readers.ImageInfo` from an input's header, without decoding (None for decoded
    pixels, and when the header is unreadable: reading the image then gives the real error).

    ``item`` is an :class:`InputItem`, or a path, bytes or binary file object named ``name``.
    """
    if not isinstance(item, InputItem):
        source = Path(item) if isinstance(item, (str, os.PathLike)) else Source.of(item, name)
        item = InputItem(source, name or str(getattr(source, "name", source)))
    if item.error or is_pixels(item.source):
        return None
    try:
        return probe_image(item.source, check_limit=False)
    except ImageReadError:
        return None


def check_frames(frames: str, policies: tuple[str, ...] = FRAME_POLICIES) -> str:
    """``frames`` when it is one of ``policies``, else :class:`ThyroError` naming the parameter."""
    if frames not in policies:
        raise ThyroError(f"frames={frames!r}: choose one of {', '.join(repr(p) for p in policies)}.")
    return frames


def check_method(method: str) -> str:
    """``method`` when it is one of :data:`METHODS`, else :class:`ThyroError` naming the parameter."""
    if method not in METHODS:
        raise ThyroError(f"method={method!r}: choose one of {', '.join(repr(m) for m in METHODS)}.")
    return method


def frame_items(items: Iterable[InputItem], frames: str = "first") -> Iterator[tuple[int, InputItem, int]]:
    """``(input index, item, number of frames scored)`` for each unit to score, inputs in order.

    ``first`` yields each item as it is (frame 0); ``all`` and ``mean`` yield one item per frame of a
    multi-frame file (``all`` names it ``NAME#frame=K``), read from the header only.
    """
    check_frames(frames)
    for i, item in enumerate(items):
        info = None if frames == "first" else image_info(item)
        n = info.frames if info is not None else 1
        if n <= 1:
            yield i, item, 1
            continue
        for k in range(n):
            yield i, replace(item, frame=k, name=f"{item.name}#frame={k}" if frames == "all" else item.name), n


__all__ = ["FRAME_POLICIES", "METHODS", "MIN_SIDE", "InputItem", "check_frames", "check_method", "frame_items",
           "image_info"]
