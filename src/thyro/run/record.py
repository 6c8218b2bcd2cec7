"""The study record of a run (``config.yaml``): the resolved configuration and the folder its paths start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from thyro.errors import ConfigError
from thyro.fileio import write_text

if TYPE_CHECKING:  # thyro.config imports torch and timm; reading a run needs neither until a record is read
    from thyro.config import StudyConfig

CONFIG = "config.yaml"


@dataclass
class StudyRecord:
    """The study a run directory holds: its configuration and the folder its relative paths start from."""

    config: StudyConfig
    base_dir: Path


def read_record(path: Path, root: Path) -> StudyRecord | None:
    """The study recorded at ``path`` (None before a study has started in the run directory ``root``)."""
    from thyro.config import StudyConfig  # lazy: torch and timm, kept off `thyro --help` (the CLI imports thyro.run)

    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); delete the run directory to start over.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("study"), dict):
        raise ConfigError(f"{path}: not a thyro study record (no 'study:' block); is {root} a run "
                          "directory of this thyro version?")
    cfg = StudyConfig.parse(raw["study"], source=str(path))
    return StudyRecord(cfg, Path(raw.get("base_dir") or root))


def write_record(path: Path, config: StudyConfig, base_dir: Path) -> None:
    write_text(path, yaml.safe_dump({"study": config.model_dump(mode="json"), "base_dir": str(base_dir)},
                                    sort_keys=False))


def record_text(path: Path) -> str | None:
    """The record as written (for the report's configuration section), or None."""
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
