"""A study's configuration: its data, preprocessing, arms, training and report settings, read from YAML with the
paths in it (or typed with ``--set``) resolved."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from thyro.base import StrictModel, read_yaml
from thyro.config.merge import merge
from thyro.config.training import NAME, ArchName, TrainConfig
from thyro.data.preprocess import PreprocessConfig
from thyro.data.preprocess.config import MAX_SIDE, MIN_SIDE
from thyro.errors import ConfigError
from thyro.machine import check_threads
from thyro.models.archs import arch as arch_info
from thyro.models.weights.sources import WeightSource, parse_weight_source


class ExternalSet(StrictModel):
    """A labelled external validation set (another site or scanner), scored by every arm's fold models."""

    name: str = Field(description="the set's name in predictions.csv and the report")
    manifest: str = Field(description="its manifest CSV (labels required)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("external set names use letters, digits, '_', '-', '.'")
        if v.lower() in ("val", "test", "development"):
            raise ValueError(f"{v!r} is reserved (the study's own sets); choose another name")
        return v


class DataConfig(StrictModel):
    """Where the images are and how they are split (splits are made once and reused by every arm)."""

    manifest: str = Field(description="manifest CSV (thyro data import ...)")
    splits: str | None = Field(None, description="an existing splits file; by default made in the run directory")
    test_size: float = Field(0.12, gt=0, lt=1, description="fraction of groups held out for test")
    folds: int = Field(5, ge=2, le=20, description="cross-validation folds on the development data")
    seed: int = Field(0, description="seed of the splits (the same seed and manifest give the same splits)")
    external: list[ExternalSet] = Field(default_factory=list, description="external validation sets")
    train_fractions: list[float] = Field(
        default_factory=lambda: [1.0],
        description="shares of each training fold to train on (nested, group-respecting, stratified subsets, the "
                    "same for every arm): data-efficiency curves; 1 (the whole fold) is always included")

    @field_validator("train_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad:
            raise ValueError(f"training fractions must lie in (0, 1]; got {bad}")
        return sorted(set(float(f) for f in v) | {1.0})

    @model_validator(mode="after")
    def _unique_sets(self):
        names = [e.name for e in self.external]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"external set names must be unique; repeated: {', '.join(dup)}")
        return self


class ArmConfig(StrictModel):
    """One arm: a backbone and where its weights come from."""

    name: str = Field(description="the arm's name (letters, digits, '_', '-', '.'; a folder name in the run)")
    backbone: ArchName = Field("resnet18", description="any timm architecture name (resnet18, efficientnet_lite0, "
                                                       "convnext_atto, vit_small_patch16_224, ...)")
    weights: str | dict[str, str] = Field(
        "none", description="none | imagenet | {imagenet: PATH} | {radimagenet: PATH} | {file: PATH}")
    partial_weights: bool = Field(False, description="start from the backbone tensors the weight file has and leave "
                                                     "the rest at random (by default a file that does not cover the "
                                                     "whole backbone is refused)")
    unverified_weights: bool = Field(False, description="start from a weight file whose mapping by position cannot be "
                                                        "verified (by default refused); the arm's weights are then "
                                                        "called unverified wherever they are described")
    allow_untrained_weights: bool = Field(False, description="start from a weight file whose tensors look untrained "
                                                             "(BatchNorm statistics still at 0/1; by default refused); "
                                                             "its weights are then called untrained")
    in_chans_mode: str = Field("repeat", description="repeat: grey to 3 channels; sum: 1-channel conv1",
                               json_schema_extra={"enum": ["repeat", "sum"]})
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")
    lr: float | None = Field(None, gt=0, description="overrides train.lr for this arm")
    train_backbone: Literal["all", "none", "bn", "cached", "cached_trunk"] = Field(
        "all", description="all: fine-tune everything; none: a linear probe (backbone frozen, BatchNorm statistics "
                           "too); bn: train the head and the BatchNorm layers only; cached: a linear probe on "
                           "cached features (the backbone runs once per image and its mirror, then logistic "
                           "regression, its L2 strength chosen on grouped inner folds of the training part); "
                           "cached_trunk: the first train.freeze_stages stages frozen and their activations "
                           "cached once per image and its mirror, the rest fine-tuned on them (augmentation: "
                           "the mirror alone)")
    train: dict[str, Any] = Field(default_factory=dict, description="train settings for this arm only (e.g. epochs); "
                                                                   "every arm shares the study's otherwise")
    size: int | Literal["native"] | None = Field(
        None, json_schema_extra={"anyOf": [{"type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE},
                                           {"const": "native"}, {"type": "null"}]},
        description=f"this arm's image side in px, {MIN_SIDE} to {MAX_SIDE} (its own image cache, bundle and export), "
                    "or native: the architecture's native size (timm); default: the study's preprocess.size when the "
                    "study sets it, else native for pretrained weights and preprocess.size for weights none")

    @model_serializer(mode="wrap")
    def _without_default_size(self, handler):
        data = handler(self)
        if isinstance(data, dict) and data.get("size", 0) is None:  # a study without per-arm sizes dumps as before
            data.pop("size")
        return data

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v):
        if isinstance(v, str) and v.strip().lower() == "native":
            return "native"
        if isinstance(v, str) and v.strip().isdigit():  # a number typed on the command line (--set)
            v = int(v)
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and MIN_SIDE <= v <= MAX_SIDE):
            return v
        raise ValueError(f"size is a side in px from {MIN_SIDE} to {MAX_SIDE}, or native (the architecture's own size)")

    @model_validator(mode="after")
    def _native_size(self):
        if self.size == "native":  # resolved here, so the arm's size is a number everywhere after parsing
            self.size = arch_info(self.backbone).native_size
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("arm names use letters, digits, '_', '-', '.' (they become folder names)")
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
        try:  # the weights module owns the grammar; only the syntax is checked here, not the file
            parse_weight_source(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    def weight_source(self, base: Path) -> WeightSource:
        """The arm's :class:`~thyro.models.WeightSource`, a relative path taken from ``base``, with the arm's
        ``unverified_weights`` and ``allow_untrained_weights``."""
        source = parse_weight_source(self.weights, arch=self.backbone).with_base(base)
        return dataclasses.replace(source, unverified=self.unverified_weights,
                                   allow_untrained=self.allow_untrained_weights)

    def weight_spec(self, base: Path) -> str:
        """The weight source as a ``kind[:PATH]`` string with PATH resolved against ``base``."""
        return self.weight_source(base).describe()

    def train_config(self, study: TrainConfig) -> TrainConfig:
        """The study's training settings with this arm's own (``lr``, ``train:``) applied."""
        data = merge(study.model_dump(mode="json"), {k: v for k, v in self.train.items()}, source=f"arm {self.name} train")
        if self.lr is not None:
            data["lr"] = self.lr
        return TrainConfig.parse(data, source=f"arm '{self.name}' (train)")


class ReportConfig(StrictModel):
    """What the study report leads with: the comparisons of interest, and an optional reference line.

    Only the report reads this block: changing it never invalidates a run directory.
    """

    comparisons: list[tuple[str, str]] | None = Field(
        None, description="pairs [A, B] of arm names whose AUROC difference A - B is tested, Holm-corrected together "
                          "(default: every pretrained arm against scratch, and every pair of pretrained arms)")
    reference: str = Field("", description="a line shown with the results, e.g. a published study's AUROCs to "
                                           "compare with")

    @field_validator("comparisons")
    @classmethod
    def _pairs(cls, v):
        if v is None:
            return v
        seen = set()
        for a, b in v:
            if a == b:
                raise ValueError(f"a comparison needs two different arms, got [{a}, {b}]")
            if frozenset((a, b)) in seen:
                raise ValueError(f"the comparison of {a} and {b} is listed twice")
            seen.add(frozenset((a, b)))
        return v


class StudyConfig(StrictModel):
    """A whole study: every arm trained on the same splits."""

    name: str = Field("study", description="the study's name: its run folder is runs/NAME")
    data: DataConfig = Field(description="the images and how they are split")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="how images become the "
                                         "model's input (the same for every arm but an arm's own size)")
    arms: list[ArmConfig] = Field(min_length=1, description="the arms compared, each trained on every fold")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training settings every arm shares")
    report: ReportConfig = Field(default_factory=ReportConfig, description="what the report compares and cites")

    @field_validator("name")
    @classmethod
    def _study_name(cls, v: str) -> str:
        if not NAME.match(v) or len(v) > 100:
            raise ValueError("a study name uses letters, digits, '_', '-', '.' and starts with a letter or digit, at "
                             "most 100 characters (it becomes the run folder's name under runs/)")
        return v

    @model_validator(mode="after")
    def _unique_arms(self):
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(dup)}")
        for arm in self.arms:  # an arm's own train settings must be valid ones (checked here, not mid-study)
            try:
                arm.train_config(self.train)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        unknown = sorted({n for pair in self.report.comparisons or [] for n in pair} - set(names))
        if unknown:
            raise ValueError(f"report.comparisons names no arm {', '.join(unknown)}; arms: {', '.join(names)}")
        return self

    @model_validator(mode="after")
    def _arm_sizes(self):
        """A study that leaves ``preprocess.size`` unset runs each pretrained arm at its architecture's native
        size (written into the arm, so the resolved configuration reads the same everywhere)."""
        if "size" in self.preprocess.model_fields_set:
            return self
        for arm in self.arms:
            if arm.size is None and arm.weights != "none":
                native = arch_info(arm.backbone).native_size
                if native != self.preprocess.size:
                    arm.size = native
        return self

    def arm_preprocess(self, arm: str | ArmConfig) -> PreprocessConfig:
        """The preprocessing of ``arm`` (an arm or its name): the study's, at the arm's own size when it has one."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        if arm.size is None or arm.size == self.preprocess.size:
            return self.preprocess
        return self.preprocess.model_copy(update={"size": arm.size})

    def arm(self, name: str) -> ArmConfig:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(f"no arm named {name!r}; arms: {', '.join(a.name for a in self.arms)}")


#: Study keys whose values are file paths (``*``: any list item; the last part names a weight source's path).
PATH_KEYS = ("data.manifest", "data.splits", "data.external.*.manifest", "arms.*.weights.file",
             "arms.*.weights.imagenet", "arms.*.weights.radimagenet")


def _typed_paths(key: str, value: Any, start: Path) -> Any:
    """``value`` of the override ``key`` with every relative path under a :data:`PATH_KEYS` key made absolute
    from ``start`` (a path typed by the user is relative to where they typed it, not to the config file)."""
    def walk(parts: list[str], v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(parts + [str(k)], x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(parts + [str(i)], x) for i, x in enumerate(v)]
        if isinstance(v, str) and v and any(path_key_matches(parts, p.split(".")) for p in PATH_KEYS):
            return v if Path(v).expanduser().is_absolute() else str((start / Path(v).expanduser()).resolve())
        return v

    return walk(key.split("."), value)


def path_key_matches(parts: list[str], pattern: list[str]) -> bool:
    """Whether the key ``parts`` (a dotted key split) matches a :data:`PATH_KEYS` ``pattern`` (``*``: any list item)."""
    return len(parts) == len(pattern) and all(p == "*" and k.isdigit() or p == k for k, p in zip(parts, pattern))


def load_study_config(path: str | Path, overrides: dict[str, Any] | None = None, *,
                      source: str = "override") -> tuple[StudyConfig, Path]:
    """Read a study YAML; returns the configuration and the folder its relative paths start from.

    ``overrides`` maps dotted keys (``train.epochs``, ``arms.1.lr``) to values, applied before validation.
    Relative paths in the file start from the file's folder; relative paths in ``overrides`` (typed on the
    command line with ``--set``, or passed from Python) start from the current directory.
    """
    path = Path(path)
    here = Path.cwd()
    typed = {k: _typed_paths(k, v, here) for k, v in (overrides or {}).items()}
    data = merge(read_yaml(path), typed, source=source)
    cfg = StudyConfig.parse(data, source=str(path))
    check_threads(cfg.train.threads)  # where the study runs: threads beyond the machine abort OpenMP
    return cfg, path.parent.resolve()
