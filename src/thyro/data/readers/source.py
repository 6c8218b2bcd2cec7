"""Where an image's bytes come from: a file path, bytes in memory, or a binary file object.

Every reader takes a :class:`Source`, so an upload is read from memory as a file on disk is read from
its path, and every message names the image the same way: the path, or the name the caller gave.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

#: What :func:`thyro.data.readers.load_image` and :func:`~thyro.data.readers.probe_image` read: a path,
#: bytes (``bytes``, ``bytearray``, ``memoryview``) or a binary file object (``BytesIO``, an open file,
#: an upload's file).
ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Bytes every reader may look at to recognise its format (DICOM's ``DICM`` marker sits at 128..131).
HEAD_BYTES = 132


@dataclass(frozen=True)
class Source:
    """An image to read and the name its messages give it.

    Build one with :meth:`of`.  Exactly one of ``path``, ``data`` and ``stream`` is set.

    Attributes
    ----------
    name : str
        Shown in every message about the image: the path as given, or the caller's name for bytes.
    path : Path or None
        The file, when the image is one.
    data : bytes-like or None
        The file's bytes, when they are in memory.
    stream : binary file object or None
        A seekable file object; reading starts at ``start`` each time.
    start : int
        Where the image starts in ``stream``.
    """

    name: str
    path: Path | None = None
    data: bytes | bytearray | memoryview | None = None
    stream: BinaryIO | None = None
    start: int = 0

    @classmethod
    def of(cls, source: ImageSource | Source, name: str | None = None) -> Source:
        """A :class:`Source` for a path, bytes or a binary file object.

        ``name`` defaults to the path, to a file object's own ``name`` when it has a text one (an open
        file), else to ``<bytes>`` / ``<stream>``.  A file object that cannot seek is read into memory
        once.
        """
        if isinstance(source, Source):
            return source if name is None else cls(name, source.path, source.data, source.stream, source.start)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            return cls(str(path) if name is None else str(name), path=path)
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls("<bytes>" if name is None else str(name), data=source)
        if callable(getattr(source, "read", None)):
            own = getattr(source, "name", None)
            label = str(name) if name is not None else (own if isinstance(own, str) and own else "<stream>")
            seekable = getattr(source, "seekable", None)
            if callable(seekable) and seekable():
                return cls(label, stream=source, start=source.tell())
            return cls(label, data=source.read())
        raise TypeError(f"an image source is a path, bytes or a binary file object, got {type(source).__name__}")

    def exists(self) -> bool:
        """False only for a path that is not a file (bytes and streams are there by definition)."""
        return self.path is None or self.path.is_file()

    def head(self, n: int = HEAD_BYTES) -> bytes:
        """The first ``n`` bytes (fewer when the image is shorter; empty when a file cannot be opened)."""
        try:
            with self.open() as fh:
                return fh.read(n)
        except OSError:
            return b""

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A binary file object positioned at the image's first byte; a file opened here is closed after."""
        if self.path is not None:
            with open(self.path, "rb") as fh:
                yield fh
        elif self.data is not None:
            yield io.BytesIO(self.data)
        else:
            assert self.stream is not None
            self.stream.seek(self.start)
            yield self.stream

    def readable(self) -> str | os.PathLike | BinaryIO:
        """What Pillow's ``Image.open`` and pydicom's ``dcmread`` take: the path itself (they open and close
        the file), or a file object whose first byte is the image's (never closed by them).

        Pillow reads a file object from its start, so a stream whose image starts further in is copied
        from there into memory."""
        if self.path is not None:
            return self.path
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.stream is not None
        self.stream.seek(self.start)
        return self.stream if self.start == 0 else io.BytesIO(self.stream.read())


__all__ = ["HEAD_BYTES", "ImageSource", "Source"]
