"""Typed configuration: a study (data, preprocessing, arms, training) and pretraining, YAML in and out.

Paths inside a study file (the manifest, a splits file, weight files) are relative to the file's folder.
Unknown keys and values are errors that name the key and list what is allowed.

One rule merges settings everywhere: built-in defaults < the YAML file < options typed on the command
line (``--set KEY=VALUE`` for a study; only the options a user actually typed, for ``thyro pretrain``).

Training and pretraining share their optimisation and hardware settings (:class:`OptimisationConfig`);
each adds its own.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from thyro.base import StrictModel, read_yaml
from thyro.data.preprocess import PreprocessConfig
from thyro.errors import ConfigError
from thyro.fileio import sha256_json
from thyro.machine import check_threads
from thyro.models.archs import check_arch


def _known_arch(v: str) -> str:
    try:  # the one place that knows architectures: any name timm knows
        return check_arch(v)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


#: A backbone name thyro builds (pretraining's ``arch``, an arm's ``backbone``): any timm architecture.
ArchName = Annotated[str, AfterValidator(_known_arch)]

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class AugmentConfig(StrictModel):
    """Random transforms applied to each training batch (set ``enabled: false`` to switch all off)."""

    enabled: bool = Field(True, description="apply the transforms below (false: none at all)")
    rotate_deg: float = Field(10.0, ge=0, le=180, description="maximum absolute rotation in degrees")
    scale: tuple[float, float] = Field((0.9, 1.1), description="zoom range")
    translate: float = Field(0.05, ge=0, le=0.5, description="maximum shift as a fraction of the image size")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip (off for ultrasound)")
    brightness: float = Field(0.1, ge=0, le=1, description="maximum additive brightness change")
    contrast: float = Field(0.15, ge=0, le=1, description="maximum relative contrast change")
    gamma: float = Field(0.15, ge=0, le=1, description="log-uniform gamma in [1/(1+g), 1+g]")
    speckle: float = Field(0.05, ge=0, le=1, description="std of multiplicative Gaussian noise")


class OptimisationConfig(StrictModel):
    """Settings training and pretraining share: schedule, optimiser, augmentation, seed and hardware."""

    epochs: int = Field(30, ge=1, description="maximum epochs")
    batch_size: int = Field(32, ge=2, description="images per optimisation step")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW, or SGD with Nesterov momentum")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default 1e-3 for AdamW, 0.1 for SGD)")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (decoupled for AdamW)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up, then cosine decay")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final learning rate as a fraction of lr")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="training augmentation")
    seed: int = Field(0, description="seed of initialisation, augmentation and batch order")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else the CPU")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="mixed precision on CUDA (auto: bf16 where supported)")
    channels_last: bool = Field(True, description="channels-last memory format: on a GPU, and on a CPU from 96 px "
                                "(faster there; see thyro.device.use_channels_last)")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")

    @model_validator(mode="after")
    def _default_lr(self):
        if self.lr is None:
            object.__setattr__(self, "lr", 0.1 if self.optimizer == "sgd" else 1e-3)
        return self


class TuneConfig(StrictModel):
    """A small grid searched per arm on an inner split of each training fold (never on the test set)."""

    lr: list[float] = Field(default_factory=list, description="learning rates to try")
    epochs: list[int] = Field(default_factory=list, description="epoch counts to try")
    weight_decay: list[float] = Field(default_factory=list, description="weight decays to try")

    @property
    def grid(self) -> list[dict]:
        """Every combination, as ``{setting: value}`` (empty when nothing is tuned)."""
        import itertools

        axes = {k: v for k, v in (("lr", self.lr), ("epochs", self.epochs), ("weight_decay", self.weight_decay)) if v}
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] if axes else []

    @field_validator("lr", "weight_decay")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(x < 0 for x in v):
            raise ValueError("values must not be negative")
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("epoch counts must be at least 1")
        return v


class TrainConfig(OptimisationConfig):
    """Training of one arm x fold job: optimisation, imbalance, model selection and evaluation settings."""

    epochs: int = Field(40, ge=1, description="epochs (the most, when the epoch is selected)")
    eval_batch_size: int = Field(256, ge=1, description="images per batch when scoring (memory only)")
    # ``last`` won benchmarks/recipe.py on DDTI and the phantom (BENCHMARKS.md): with a few hundred
    # images, an inner split's AUROC is too noisy to choose an epoch by, and it costs a fifth of the data.
    selection: Literal["inner", "last", "oof"] = Field(
        "last", description="how the model is chosen: last (no selection: every epoch is trained, the last weights "
                            "kept), inner (early stopping on an inner, group-respecting split of the training part: "
                            "out-of-fold predictions stay untouched by selection), oof (early stopping on the "
                            "held-out fold itself: its out-of-fold AUROC is then selection-biased and the report "
                            "says so)")
    inner_fraction: float = Field(0.2, gt=0, lt=0.5, description="share of the training part's groups held out "
                                                                 "for selection and tuning")
    patience: int = Field(10, ge=1, description="epochs after the warm-up without a better selection AUROC before "
                                                "stopping")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="exponential moving average of the weights (e.g. 0.999); "
                                                         "0 = off")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="targets pulled towards 1/2 by this much")
    backbone_lr_mult: float = Field(1.0, gt=0, le=1, description="arms starting from pretrained weights train their "
                                                                 "backbone at lr times this (head at lr)")
    layer_decay: float = Field(1.0, gt=0, le=1, description="pretrained backbones: each stage below the head learns "
                                                            "at this times the rate of the stage above it (timm's "
                                                            "layer-wise decay; 1 = off)")
    batchnorm: Literal["train", "frozen", "auto"] = Field(
        "train", description="train: BatchNorm statistics follow each batch; frozen: a pretrained backbone keeps its "
                             "statistics while its weights train; auto: frozen for pretrained backbones trained on "
                             "batches under 32 images")
    freeze_stages: int = Field(0, ge=0, description="keep the first N stages of the network (timm's coarse groups: "
                                                    "stem, block stages; the head is last) frozen: a partly frozen "
                                                    "fine-tune")
    unfreeze_epochs: int = Field(0, ge=0, description="gradual unfreezing: the head alone trains first, the stages "
                                                      "below join one by one from the top, all training from this "
                                                      "epoch on (0 = off)")
    compile: bool = Field(False, description="torch.compile the model for training (GPUs; costs compile time)")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="a grid searched per arm on inner splits")
    tracking: Literal["none", "mlflow"] = Field(
        "none", description="mlflow: log parameters, per-epoch metrics, AUROCs and the report to a local MLflow "
                            "file store in the run directory (or MLFLOW_TRACKING_URI when set)")
    imbalance: Literal["weighted_loss", "balanced_sampler", "none"] = Field(
        "weighted_loss", description="class imbalance: weight the loss by the inverse class frequency, sample "
                                     "balanced batches, or neither")
    data_on_device: Literal["auto", "yes", "no"] = Field(
        "auto", description="keep the uint8 training images on the GPU (auto: when they take under 2 GiB)")
    tta_flip: bool = Field(False, description="average predictions over the image and its horizontal flip (in "
                                              "validation, test, external sets and the model package alike)")
    checkpoint_interval_s: float = Field(
        0.0, ge=0, description="save last.pt every epoch (0), or at most every this many seconds when epochs are "
                               "shorter (fast GPUs); always at the end. A kill loses at most this much training")
    tensorboard: bool = Field(True, description="also write TensorBoard logs (needs the tensorboard package; the "
                                                "run says once when it is missing)")


#: Settings that do not change what a study computes (a run directory may be continued with others).
HARDWARE_FIELDS = ("device", "threads", "amp", "data_on_device", "tensorboard", "eval_batch_size",
                   "checkpoint_interval_s", "compile", "tracking")


#: SimCLR views: stronger than the fine-tuning defaults (zoom-in crops down to a quarter of the area,
#: larger gain/contrast changes), still without vertical flips (ultrasound keeps the skin line on top).
SIMCLR_AUGMENT = AugmentConfig(rotate_deg=20.0, scale=(1.0, 2.0), translate=0.15, hflip=0.5, brightness=0.3,
                               contrast=0.4, gamma=0.3, speckle=0.1)


class PretrainConfig(OptimisationConfig):
    """Settings of a pretraining run (``thyro pretrain``: its YAML ``--config`` and options map onto these)."""

    arch: ArchName = Field("resnet18", description="backbone: any timm architecture name (timm.list_models())")
    weights: str | dict[str, str] = Field(
        "none", description="where the backbone starts: none (random) | imagenet | {imagenet: PATH} | {file: PATH}: "
                            "continue pretraining from these weights (their preprocessing and layout are kept)")
    mode: Literal["supervised", "simclr"] = Field("supervised", description="supervised: class labels; simclr: "
                                                                            "self-supervised, labels unused")
    batch_size: int = Field(256, ge=2, description="global batch (all processes together)")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="SGD with Nesterov momentum, or AdamW")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final learning rate as a fraction of lr")
    augment: AugmentConfig | None = Field(None, description="None: the fine-tuning defaults (supervised) "
                                                            "or strong SimCLR views (simclr)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="supervised mode")
    temperature: float = Field(0.2, gt=0, description="NT-Xent temperature (simclr mode)")
    proj_dim: int = Field(128, ge=2, description="projection output size (simclr mode)")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="how the corpus images "
                                         "are preprocessed (size: --size)")
    min_per_class: int = Field(1, ge=1, description="classes with fewer readable images are dropped (warning)")
    sync_bn: bool = Field(True, description="BatchNorm statistics over the global batch when distributed")
    workers: int = Field(0, ge=0, description="loader worker processes per rank (also used to build the cache)")
    checkpoint_every: int = Field(0, ge=0, description="also save last.pt every N steps (0: once per epoch)")

    def resolved_augment(self) -> AugmentConfig:
        if self.augment is not None:
            return self.augment
        return SIMCLR_AUGMENT if self.mode == "simclr" else AugmentConfig()

    def fingerprint(self, data_key: str) -> str:
        """What a resumed run must share with the interrupted one (not device, workers, threads)."""
        keep = self.model_dump(mode="json", exclude={"device", "workers", "threads", "checkpoint_every", "amp"})
        return sha256_json({"config": keep, "data": data_key})


def merge(base: dict, overrides: dict[str, Any], source: str = "--set") -> dict:
    """``base`` with dotted-key ``overrides`` applied (``train.epochs``, ``arms.0.lr``); returns a new dict.

    Raises :class:`ConfigError` naming the key when a path does not lead through mappings or list items.
    """
    import copy

    data = copy.deepcopy(base)
    for key, value in overrides.items():
        node: Any = data
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"{source} {key}: empty part in the key; write e.g. train.epochs=5 or arms.0.lr=0.01")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "the configuration"
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{source} {key}: {where} is a list of {len(node)} item(s); address one by "
                                      f"its number, 0 to {len(node) - 1} (got {part!r}).")
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
                raise ConfigError(f"{source} {key}: {where} is {node!r}, a single value; it has no {part!r} inside.")
    return data


class ExternalSet(StrictModel):
    """A labelled external validation set (another site or scanner), scored by every arm's fold models."""

    name: str = Field(description="the set's name in predictions.csv and the report")
    manifest: str = Field(description="its manifest CSV (labels required)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ARM_NAME.match(v):
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
    train_backbone: Literal["all", "none", "bn", "cached"] = Field(
        "all", description="all: fine-tune everything; none: a linear probe (backbone frozen, BatchNorm statistics "
                           "too); bn: train the head and the BatchNorm layers only; cached: a linear probe on "
                           "cached features (the backbone runs once per image and its mirror, then logistic "
                           "regression, its L2 strength chosen on grouped inner folds of the training part)")
    train: dict[str, Any] = Field(default_factory=dict, description="train settings for this arm only (e.g. epochs); "
                                                                   "every arm shares the study's otherwise")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ARM_NAME.match(v):
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
        from thyro.models.weights.sources import parse_weight_source

        try:  # the weights module owns the grammar; only the syntax is checked here, not the file
            parse_weight_source(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    def weight_source(self, base: Path):
        """The arm's :class:`~thyro.models.WeightSource`, a relative path taken from ``base``, with the arm's
        ``unverified_weights`` and ``allow_untrained_weights``."""
        from thyro.models.weights.sources import parse_weight_source

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
                                         "model's input (the same for every arm)")
    arms: list[ArmConfig] = Field(min_length=1, description="the arms compared, each trained on every fold")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training settings every arm shares")
    report: ReportConfig = Field(default_factory=ReportConfig, description="what the report compares and cites")

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
        for arm in self.arms:  # an arm's own train settings must be valid ones (checked here, not mid-study)
            try:
                arm.train_config(self.train)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        unknown = sorted({n for pair in self.report.comparisons or [] for n in pair} - set(names))
        if unknown:
            raise ValueError(f"report.comparisons names no arm {', '.join(unknown)}; arms: {', '.join(names)}")
        return self

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
        if isinstance(v, str) and v and any(_matches(parts, p.split(".")) for p in PATH_KEYS):
            return v if Path(v).expanduser().is_absolute() else str((start / Path(v).expanduser()).resolve())
        return v

    return walk(key.split("."), value)


def _matches(parts: list[str], pattern: list[str]) -> bool:
    return len(parts) == len(pattern) and all(p == "*" and k.isdigit() or p == k for k, p in zip(parts, pattern))


def load_study_config(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[StudyConfig, Path]:
    """Read a study YAML; returns the configuration and the folder its relative paths start from.

    ``overrides`` maps dotted keys (``train.epochs``, ``arms.1.lr``) to values, applied before validation.
    Relative paths in the file start from the file's folder; relative paths in ``overrides`` (typed on the
    command line with ``--set``, or passed from Python) start from the current directory.
    """
    path = Path(path)
    here = Path.cwd()
    typed = {k: _typed_paths(k, v, here) for k, v in (overrides or {}).items()}
    data = merge(read_yaml(path), typed)
    cfg = StudyConfig.parse(data, source=str(path))
    check_threads(cfg.train.threads)  # where the study runs: threads beyond the machine abort OpenMP
    return cfg, path.parent.resolve()
