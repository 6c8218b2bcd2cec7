"""Typed configuration base: strict pydantic models with readable errors and YAML in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from thyro.errors import ConfigError

M = TypeVar("M", bound="StrictModel")


def read_yaml(path: str | Path, *, mapping: bool = True) -> Any:
    """Read a YAML file; a missing file or bad YAML is a :class:`ConfigError` naming the file.

    With ``mapping`` an empty file reads as ``{}`` and anything but a mapping is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if mapping:
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}.")
    return data


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown keys, so a typo in a configuration is an error, and
    non-finite numbers (YAML's ``.inf`` and ``.nan``): no setting of thyro's means infinity."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @classmethod
    def parse(cls: type[M], data: Any, source: str = "configuration") -> M:
        """Validate ``data``; on failure raise :class:`ConfigError` naming each bad key and the allowed ones."""
        try:
            return cls.model_validate(data if data is not None else {})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls, source)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _allowed_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at ``loc`` (the location of an unknown key), walking nested models."""
    model: Any = cls
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = _model_in(ann)
    return sorted(getattr(model, "model_fields", {}).keys()) if model is not None else []


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err.get("type") == "extra_forbidden":
            allowed = _allowed_at(cls, loc)
            lines.append(f"unknown key '{where}'; allowed here: {', '.join(allowed)}")
        elif not loc or isinstance(err.get("input"), dict):  # a whole block: its message says what is wrong
            lines.append(f"'{where}': {err.get('msg')}")
        else:
            lines.append(f"'{where}': {err.get('msg')} (got {err.get('input')!r})")
    return f"{source}: invalid configuration:\n" + "\n".join(f"  - {line}" for line in lines)
