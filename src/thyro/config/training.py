"""Training and pretraining settings: the optimisation and hardware settings both share
(:class:`OptimisationConfig`), and what each adds (:class:`TrainConfig`, :class:`PretrainConfig`)."""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from thyro.base import StrictModel
from thyro.data.preprocess import PreprocessConfig
from thyro.errors import ConfigError
from thyro.fileio import sha256_json
from thyro.models.archs import check_arch


def _known_arch(v: str) -> str:
    try:  # the one place that knows architectures: any name timm knows
        return check_arch(v)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


#: A backbone name thyro builds (pretraining's ``arch``, an arm's ``backbone``): any timm architecture.
ArchName = Annotated[str, AfterValidator(_known_arch)]

#: A name that becomes a folder name: an arm's, an external set's, a study's.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    eval_batch_size: int = Field(32, ge=1, description="images per batch when scoring and computing cached features "
                                 "(memory only: a batch's activations are held at once)")
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
    tensorboard: bool | None = Field(
        None, description="also write TensorBoard logs: null (the default) when the tensorboard package is installed "
                          "(the all and tensorboard extras), silently not otherwise; true always (a study says once "
                          "when the package is missing); false never")


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
