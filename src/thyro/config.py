"""Study configuration: data, preprocessing, arms and training, from one YAML file.

Paths inside the file (the manifest, a splits file, weight files) are relative to the file's folder.
Unknown keys and values are errors that name the key and list what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from thyro.base import StrictModel, read_yaml
from thyro.data.preprocess import PreprocessConfig
from thyro.errors import ConfigError
from thyro.models.backbones import ARCHS as ARCH_NAMES
from thyro.train.config import TrainConfig

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DataConfig(StrictModel):
    """Where the images are and how they are split (splits are made once and reused by every arm)."""

    manifest: str = Field(description="manifest CSV (thyro data import ...)")
    splits: str | None = Field(None, description="an existing splits file; by default made in the run directory")
    test_size: float = Field(0.12, gt=0, lt=1, description="fraction of groups held out for test")
    folds: int = Field(5, ge=2, le=20)
    seed: int = 0


class ArmConfig(StrictModel):
    """One arm: a backbone and where its weights come from."""

    name: str
    backbone: str = "resnet18"
    weights: str | dict[str, str] = Field(
        "none", description="none | imagenet | {imagenet: PATH} | {radimagenet: PATH} | {file: PATH}")
    in_chans_mode: str = Field("repeat", description="repeat: grey to 3 channels; sum: 1-channel conv1")
    dropout: float = Field(0.0, ge=0, lt=1)
    lr: float | None = Field(None, gt=0, description="overrides train.lr for this arm")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ARM_NAME.match(v):
            raise ValueError("arm names use letters, digits, '_', '-', '.' (they become folder names)")
        return v

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, v: str) -> str:
        if v not in ARCH_NAMES:
            raise ValueError(f"unknown backbone {v!r}; allowed: {', '.join(ARCH_NAMES)}")
        return v

    @field_validator("in_chans_mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in ("repeat", "sum"):
            raise ValueError("in_chans_mode must be 'repeat' or 'sum'")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        from thyro.models.weights.sources import parse_weight_source

        try:  # the weights module owns the grammar; only the syntax is checked here, not the file
            parse_weight_source(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    def weight_source(self, base: Path):
        """The arm's :class:`~thyro.models.WeightSource`, a relative path taken from ``base``."""
        from thyro.models.weights.sources import parse_weight_source

        return parse_weight_source(self.weights, arch=self.backbone).with_base(base)

    def weight_spec(self, base: Path) -> str:
        """The weight source as a ``kind[:PATH]`` string with PATH resolved against ``base``."""
        return self.weight_source(base).describe()


class StudyConfig(StrictModel):
    """A whole study: every arm trained on the same splits."""

    name: str = "study"
    data: DataConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    arms: list[ArmConfig] = Field(min_length=1)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _study_name(cls, v: str) -> str:
        if not _ARM_NAME.match(v) or len(v) > 100:
            raise ValueError("a study name uses letters, digits, '_', '-', '.' and starts with a letter or digit, at "
                             "most 100 characters (it becomes the run folder's name under runs/)")
        return v

    @model_validator(mode="after")
    def _unique_arms(self):
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(dup)}")
        return self

    def arm(self, name: str) -> ArmConfig:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(f"no arm named {name!r}; arms: {', '.join(a.name for a in self.arms)}")


def load_study_config(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[StudyConfig, Path]:
    """Read a study YAML; returns the configuration and the folder its relative paths start from.

    ``overrides`` maps dotted keys (``train.epochs``) to values, applied before validation.
    """
    from thyro.train.config import check_threads

    path = Path(path)
    data = read_yaml(path)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    cfg = StudyConfig.parse(data, source=str(path))
    check_threads(cfg.train.threads)  # where the study runs: threads beyond the machine abort OpenMP
    return cfg, path.parent.resolve()


def _set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key = "a.b.c"``; a number picks a list item (``arms.0.lr``).

    Raises :class:`ConfigError` naming the key when a part of the path is not there to walk into
    (validation then names a key that does not exist).
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"--set {key}: empty part in the key; write e.g. --set train.epochs=5 or arms.0.lr=0.01")
    node: Any = data
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the configuration"
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {where} is a list of {len(node)} item(s); "
                                  f"address one by its number, 0 to {len(node) - 1} (got {part!r}).")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {where} is {node!r}, a single value; it has no {part!r} inside.")
