"""A ``multipart/form-data`` body parsed in memory, with python-multipart's parser.

The body has already been read whole and within its limit (:class:`~thyro.use.serve.guard.BodyReader`),
so parsing it needs no disk: each part's bytes are slices of the body.  (Starlette's form parser, which
FastAPI's ``File``/``UploadFile`` parameters use, spools every file over 1 MB to a temporary file; the
server's form fields are declared in :mod:`thyro.use.serve.schema` and read through :func:`parse_form`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

#: Most parts one form may have (the web app's forms have up to four).
MAX_PARTS = 16


class FormError(ValueError):
    """A body that is not the multipart form it says it is."""


@dataclass(frozen=True)
class UploadedFile:
    """A file part: the client's file name, its content type and its bytes (a slice of the body)."""

    filename: str | None
    content_type: str | None
    data: bytes | memoryview


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: list[memoryview] = field(default_factory=list)


def parse_form(body: bytes, content_type: str | None) -> dict[str, str | UploadedFile]:
    """The fields of a ``multipart/form-data`` body: text fields as text, files as :class:`UploadedFile`.

    A body of another content type has no fields (``{}``).  When a name repeats, the last part wins.

    Raises
    ------
    FormError
        A malformed body, one without a boundary, or more than :data:`MAX_PARTS` parts.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        return {}
    if not options.get(b"boundary"):
        raise FormError("the multipart body has no boundary")
    view = memoryview(body)
    parts: list[_Part] = []
    name = bytearray()
    value = bytearray()

    def part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise FormError(f"the form has more than {MAX_PARTS} parts")
        parts.append(_Part())

    def header_end() -> None:
        parts[-1].headers[bytes(name).strip().lower()] = bytes(value).strip()
        name.clear()
        value.clear()

    callbacks = {
        "on_part_begin": part_begin,
        "on_part_data": lambda data, start, end: parts[-1].data.append(view[start:end] if data is body
                                                                        else memoryview(bytes(data[start:end]))),
        "on_header_field": lambda data, start, end: name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": header_end,
    }
    parser = MultipartParser(options[b"boundary"], callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except FormError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors, whatever their class
        raise FormError(f"the multipart body cannot be parsed ({exc})") from None
    return dict(_field(part) for part in parts)


def _field(part: _Part) -> tuple[str, str | UploadedFile]:
    _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
    if b"name" not in disposition:
        raise FormError('a part of the form has no name (Content-Disposition: form-data; name="...")')
    name = disposition[b"name"].decode("utf-8", "replace")
    data = part.data[0] if len(part.data) == 1 else b"".join(part.data)
    if b"filename" not in disposition:
        return name, bytes(data).decode("utf-8", "replace")
    content_type = part.headers.get(b"content-type")
    return name, UploadedFile(disposition[b"filename"].decode("utf-8", "replace"),
                              content_type.decode("latin-1") if content_type else None, data)
