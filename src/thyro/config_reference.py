"""The configuration reference and JSON Schemas, generated from the pydantic models.

``docs/config-reference.md`` lists every key of a study configuration (``thyro study CONFIG``) and of
pretraining's (``thyro pretrain --config``): its type, default, allowed values and description.
``docs/study.schema.json`` and ``docs/pretrain.schema.json`` are the same models as JSON Schema, for
editors (VS Code's YAML extension: ``# yaml-language-server: $schema=../docs/study.schema.json`` as a
configuration's first line).  The models are the single source: a test regenerates these files and
compares them with the committed ones.  Regenerate with ``python -m thyro.config_reference docs/``.
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from thyro.config import PATH_KEYS, PretrainConfig, StudyConfig, path_key_matches
from thyro.fileio import write_text

#: The documented configurations: file name stem, model, title, how it is used.
DOCUMENTS = (
    ("study", StudyConfig, "Study configuration",
     "The YAML file `thyro study CONFIG` and `thyro train CONFIG` read (configs/*.yaml). Relative paths in it "
     "start from the file's folder; `--set KEY=VALUE` overrides a key from the command line (a path typed there "
     "starts from the current directory)."),
    ("pretrain", PretrainConfig, "Pretraining configuration",
     "The YAML file `thyro pretrain --config FILE` reads (the settings alone, or under a `pretrain:` key). "
     "Options typed on the command line win over it."),
)
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(model: type[BaseModel], title: str) -> dict:
    """The model's JSON Schema (pydantic's), with the dialect and a title an editor shows."""
    schema = model.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, "title": title, **{k: v for k, v in schema.items() if k != "title"}}


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, in a list, or optional), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin is Literal:
        return "string" if all(isinstance(a, str) for a in args) else "value"
    if origin in (list, tuple):
        inner = sorted({_type_text(a) for a in args if a is not Ellipsis})
        return ("list of " if origin is list else "pair of ") + " or ".join(inner) if inner else "list"
    if origin is dict:
        return "mapping"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_type_text(a) for a in args]
        text = " or ".join(dict.fromkeys(parts))
        return text + (" or null" if type(None) in typing.get_args(annotation) else "")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(annotation, str(annotation))


def _allowed(field: FieldInfo) -> str:
    annotation = field.annotation
    values: list[Any] = []
    if typing.get_origin(annotation) is Literal:
        values = list(typing.get_args(annotation))
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    for meta in field.metadata:  # Annotated[..., Field(json_schema_extra=...)] keeps its FieldInfo here
        more = getattr(meta, "json_schema_extra", None)
        if isinstance(more, dict):
            extra = {**more, **extra}
    values = values or list(extra.get("enum", []))
    if values:
        return ", ".join(f"`{v}`" for v in values)
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "at least")):
            value = getattr(meta, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}" + (" item(s)" if attr == "min_length" else ""))
    return ", ".join(bounds)


def _default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "(below)"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """``(key, type, default, allowed, description)`` for every key of ``model``, nested keys after their block."""
    out: list[tuple[str, str, str, str, str]] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = prefix + name
        sub = _nested_model(field.annotation)
        is_list = typing.get_origin(field.annotation) is list
        kind = f"list of mappings ({sub.__name__})" if sub and is_list else _type_text(field.annotation)
        if any(path_key_matches(key.replace("[]", ".0").split("."), p.split(".")) for p in PATH_KEYS):
            kind = kind.replace("string", "path", 1)  # relative to the configuration file's folder
        out.append((f"`{key}`", kind, _default_text(field), _allowed(field), field.description or ""))
        if sub is not None:
            nested.append((key + ("[]." if is_list else "."), sub))
    for key, sub in nested:
        out.extend(rows(sub, key))
    return out


def reference_markdown() -> str:
    """docs/config-reference.md."""
    lines = ["# Configuration reference", "",
             "Generated from thyro's configuration models by `python -m thyro.config_reference docs/` (a test "
             "checks that it is up to date). Unknown keys are errors that list the allowed ones. JSON Schemas "
             "of the same models, for editors: " + ", ".join(f"[{stem}.schema.json]({stem}.schema.json)"
                                                            for stem, *_ in DOCUMENTS) + ". In VS Code (YAML "
             "extension), make a configuration's first line `# yaml-language-server: "
             "$schema=../docs/study.schema.json` for completion and checks as you type.", ""]
    for stem, model, title, usage in DOCUMENTS:
        lines += [f"## {title}", "", _cell(usage), "", _cell((model.__doc__ or "").strip().split("\n\n")[0]), "",
                  "| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows(model)]
        lines.append("")
    return "\n".join(lines)


def documents() -> dict[str, str]:
    """File name -> content of every generated document."""
    out = {"config-reference.md": reference_markdown()}
    for stem, model, title, _ in DOCUMENTS:
        out[f"{stem}.schema.json"] = json.dumps(json_schema(model, f"thyro {title.lower()}"), indent=2,
                                                ensure_ascii=False) + "\n"
    return out


def write(folder: str | Path) -> list[Path]:
    """Write every generated document into ``folder``; returns the paths."""
    folder = Path(folder)
    written = []
    for name, text in documents().items():
        write_text(folder / name, text)
        written.append(folder / name)
    return written


if __name__ == "__main__":  # python -m thyro.config_reference docs/
    for path in write(sys.argv[1] if len(sys.argv) > 1 else "docs"):
        print(f"wrote {path}")
