"""What the JSON files of a run directory share: a typed model base, and one way to read and write them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, ValidationError

from thyro.data.manifest import LabelMeaning
from thyro.errors import DataError, ThyroError
from thyro.fileio import write_json

F = TypeVar("F", bound="RunFile")


class RunFile(BaseModel):
    """Base of the typed JSON files of a run directory.

    Lenient where a configuration is strict, because these files are written by thyro (of this version or
    another) rather than by hand: a key the model does not know is kept and written back, a missing key
    takes its default.  :meth:`to_dict` gives the keys that were given (read from the file or passed by
    the writer), in the model's order, so a file read and written again keeps its content.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def to_dict(self) -> dict[str, Any]:
        """The file's content (plain Python values; ``json.dumps`` writes it as before)."""
        return self.model_dump(mode="python", exclude_unset=True)

    @classmethod
    def from_dict(cls: type[F], data: Any, where: str = "run file") -> F:
        """Validate ``data``; a key of the wrong type is a :class:`ThyroError` naming the file and the key."""
        try:
            return cls.model_validate(data if data is not None else {})
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                            for e in exc.errors()[:5])
            raise ThyroError(f"{where}: not a {cls.__name__} file this thyro can read ({bad}); delete it and run "
                             "the study again to rewrite it.") from None


@dataclass(frozen=True, eq=False)
class RecordedLabels(LabelMeaning):
    """A label meaning read from a run file: its ``source`` and ``definition``, and the words it was recorded
    with (``recorded``), which an older thyro may have put otherwise; it is written back as recorded."""

    recorded: dict = field(default_factory=dict, repr=False)


def _labels(value: Any) -> LabelMeaning:
    if isinstance(value, LabelMeaning):
        return value
    if not isinstance(value, dict):
        raise ValueError("a label meaning is a mapping with 'source' and 'definition'")
    try:
        meaning = LabelMeaning.from_dict(value)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    return RecordedLabels(meaning.source, meaning.definition, dict(value))


def _labels_dict(meaning: LabelMeaning) -> dict:
    return dict(meaning.recorded) if isinstance(meaning, RecordedLabels) else meaning.to_dict()


#: What label 1 means: written as :meth:`LabelMeaning.to_dict` writes it (every derived wording included),
#: read back from its ``source`` and ``definition``.
Labels = Annotated[LabelMeaning, PlainValidator(_labels), PlainSerializer(_labels_dict, return_type=dict)]


def read_json(path: Path, notes: list[str] | None = None) -> dict | None:
    """A JSON object from ``path``; None when the file is absent or holds no object.

    Invalid JSON is a :class:`ThyroError`, or, given ``notes``, a note and None (a report goes on without it).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if notes is None:
            raise ThyroError(f"{path}: not valid JSON ({exc}); delete it and run the study again to rewrite it.") \
                from None
        notes.append(f"{path.name} is not valid JSON and was ignored ({exc})")
        return None
    return data if isinstance(data, dict) else None


def read_file(cls: type[F], path: Path, notes: list[str] | None = None) -> F | None:
    """A typed run file (None when absent); with ``notes``, an unreadable file is a note and None."""
    data = read_json(path, notes)
    if data is None:
        return None
    try:
        return cls.from_dict(data, str(path))
    except ThyroError as exc:
        if notes is None:
            raise
        notes.append(f"{path.name} could not be read and was ignored ({exc})")
        return None


def write_file(path: Path, content: RunFile) -> None:
    """Write a typed run file as indented JSON, atomically."""
    write_json(path, content.to_dict())
