"""How an arm's model is fitted (see :mod:`thyro.train.arms`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from thyro.config import TrainConfig
from thyro.device import resolve_device
from thyro.errors import ConfigError
from thyro.models.archs import arch as arch_info
from thyro.models.inference import predict_proba
from thyro.train.arms.selection import Images, LastEpoch, Parts, Scored, Selection
from thyro.train.features import cached_activations, state_digest
from thyro.train.fit import FitResult, fit
from thyro.train.probe import check_probe_head, fit_probe, head_probabilities
from thyro.train.recipe import set_trainable
from thyro.train.trunk import find_cut
from thyro.train.trunk_fit import fit_rest


# ------------------------------------------------------------------------------------------------
# how the arm is fitted


@dataclass(frozen=True)
class FitRequest:
    """One fit of a job: its folder, what it is called in logs, and what it starts from."""

    folder: Path
    description: str
    pretrained: bool
    resume: bool = True
    on_epoch_end: Callable[[int, dict], None] | None = None
    images: Images | None = None  # where the training images come from (cached fitters read its cache)


class Fitter:
    """How an arm's model is fitted (see the module docstring)."""

    #: The ``train_backbone`` values this class fits.
    modes: ClassVar[tuple[str, ...]] = ()
    _by_mode: ClassVar[dict[str, type[Fitter]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for mode in cls.__dict__.get("modes", ()):  # its own values only (a subclass without any takes none)
            Fitter._by_mode[mode] = cls

    def __init__(self, mode: str):
        self.mode = mode

    @classmethod
    def for_mode(cls, mode: str) -> Fitter:
        """The fitter of ``train_backbone: mode``."""
        try:
            return cls._by_mode[mode](mode)
        except KeyError:
            raise ConfigError(f"train_backbone {mode!r}: choose one of {', '.join(cls._by_mode)}.") from None

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """The arm's training settings as this fitter uses them."""
        return train

    def selection(self, train: TrainConfig) -> Selection:
        """How the epoch of this arm's jobs is chosen."""
        return Selection.named(train.selection)

    def epochs(self, train: TrainConfig) -> int:
        """Passes over the training images a job makes (for the plan's estimate of the study's duration)."""
        return train.epochs

    def fit(self, model: torch.nn.Module, parts: Parts, groups: list[str], cfg: TrainConfig,
            request: FitRequest, *, select_best: bool) -> FitResult:
        """Fit ``model`` on ``parts.train`` (``groups``: each training image's group), choosing on
        ``parts.chooser`` when ``select_best``; on return the model holds the chosen weights."""
        raise NotImplementedError

    def check(self, model: torch.nn.Module, train: TrainConfig, size: int) -> None:
        """Refuse, when the plan is made, a network this fitter cannot fit (``model`` at its starting weights)."""

    def notes(self, train: TrainConfig) -> list[str]:
        """What the plan tells the user about settings of ``train`` this fitter does not use (a line each)."""
        return []

    def timed(self, model: torch.nn.Module, train: TrainConfig, size: int) -> tuple[torch.nn.Module, torch.Tensor]:
        """What a training step runs and a batch of random inputs for it (the plan's estimate of the duration)."""
        return model, torch.rand(min(train.batch_size, 16), 1, size, size)

    def predict(self, model: torch.nn.Module, scored: list[Scored], cfg: TrainConfig) -> list[np.ndarray]:
        """The fitted model's probability for each set of ``scored``, as the whole network gives it."""
        device = next(model.parameters()).device
        return [predict_proba(model, images.arrays(ids).images, tta_flip=cfg.tta_flip, device=device,
                              batch_size=cfg.eval_batch_size, amp=cfg.amp) if ids else np.zeros(0)
                for _, images, ids in scored]

    def describe(self, how: str, result: FitResult) -> str:
        """The sentence that says what the job's model is (the run's record and report), given the selection's."""
        return how

    def chosen(self, selection_text: str, best_epoch: int) -> str:
        """What the job's model is, in the study's log line."""
        return f"model of epoch {best_epoch}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"


class FineTune(Fitter):
    """The training loop over the recipe's trainable stages: ``all`` (everything), ``none`` (the head alone:
    a linear probe trained by the loop) or ``bn`` (the head and the BatchNorm layers)."""

    modes = ("all", "none", "bn")

    def fit(self, model, parts, groups, cfg, request, *, select_best):
        return fit(model, parts.train, parts.chooser, cfg, request.folder, resume=request.resume,
                   select_best=select_best, pretrained=request.pretrained, train_backbone=self.mode,
                   on_epoch_end=request.on_epoch_end, description=request.description)


def _mirror_alone(mode: str, train: TrainConfig) -> list[str]:
    """The plan's note for a cached mode: which of ``train.augment``'s transforms it leaves out."""
    a = train.augment
    left_out = [name for name, on in (
        ("rotation", a.rotate_deg > 0), ("zoom", tuple(a.scale) != (1.0, 1.0)), ("shift", a.translate > 0),
        ("vertical flip", a.vflip > 0), ("brightness", a.brightness > 0), ("contrast", a.contrast > 0),
        ("gamma", a.gamma > 0), ("speckle", a.speckle > 0)) if on] if a.enabled else []
    if not left_out:
        return []
    return [f"train_backbone '{mode}' augments by the mirror alone (its cached activations allow nothing else): "
            f"train.augment's {', '.join(left_out)} do not apply to it."]


class CachedProbe(Fitter):
    """A linear probe on cached features: the frozen backbone runs once per image and its mirror (the features
    are kept on disk, :mod:`thyro.train.features`, for every fold, arm and rerun that shares the backbone, its
    weights and the images), then logistic regression writes the head (only the head is fitted).  No epochs: no
    selection, no tuning.  Its predictions come from the cached features through the head."""

    modes = ("cached",)
    #: What the probe fits: the head alone (the recipe's word for it).
    trainable = "none"

    def notes(self, train):
        return _mirror_alone(self.mode, train)

    def train_config(self, train):
        return train.model_copy(update={"selection": "last", "tune": train.tune.model_copy(
            update={"lr": [], "epochs": [], "weight_decay": []})})

    def selection(self, train):
        return LastEpoch("no selection: a linear probe on cached features (L2 strength chosen on inner folds)")

    def epochs(self, train):
        return 1

    @staticmethod
    def features(model: torch.nn.Module, images: Images, cfg: TrainConfig):
        """The pooled features of every image of ``images`` and its mirror (:func:`cached_activations`)."""
        head = "backbone." + arch_info(model.arch).head[0] + "."
        frozen = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
        identity = {"arch": model.arch, "cut": "pooled", "weights": state_digest(frozen)}
        device = resolve_device(cfg.device)
        model.to(device).eval()
        return cached_activations(model.forward_features, images.cache, identity, device=device,
                                  batch_size=cfg.eval_batch_size, amp=cfg.amp,
                                  description=f"{model.arch} features")

    def fit(self, model, parts, groups, cfg, request, *, select_best):
        check_probe_head(model, request.description)
        set_trainable(model, self.trainable)
        features = None
        if request.images is not None:
            stored = self.features(model, request.images, cfg)
            features = (stored.rows(parts.train.ids), stored.rows(parts.chooser.ids))
        return fit_probe(model, parts.train, groups, parts.chooser, cfg, request.folder,
                         description=request.description, features=features)

    def predict(self, model, scored, cfg):
        out = []
        for _, images, ids in scored:
            feats = self.features(model, images, cfg).rows(ids) if ids else np.zeros((0, 2, 1), np.float32)
            out.append(head_probabilities(model, feats, tta_flip=cfg.tta_flip))
        return out

    def describe(self, how, result):
        strength = str(result.history[0].get("lr", "")) if result.history else ""
        return (f"linear probe on cached features, L2 strength {strength or 'C'} chosen on inner folds of the "
                "training part")

    def chosen(self, selection_text, best_epoch):
        return selection_text


class CachedTrunk(Fitter):
    """A partly frozen fine-tune whose frozen trunk (the first ``freeze_stages`` of timm's coarse stages) runs
    once per image and its mirror: its activations are cached (:mod:`thyro.train.features`) and only the rest
    of the network trains on them (:mod:`thyro.train.trunk_fit`), with the fine-tune's optimiser, schedule,
    BatchNorm policy and selection; augmentation is the horizontal mirror alone.  The cut is checked when the
    plan is made (:func:`thyro.train.trunk.find_cut`)."""

    modes = ("cached_trunk",)

    def notes(self, train):
        return _mirror_alone(self.mode, train)

    def train_config(self, train):
        if train.freeze_stages < 1:
            raise ConfigError("train_backbone 'cached_trunk' caches the frozen first stages: set train.freeze_stages "
                              "to how many (at least 1).")
        if train.unfreeze_epochs:
            raise ConfigError("train_backbone 'cached_trunk' keeps its trunk frozen throughout: set "
                              "train.unfreeze_epochs to 0.")
        return train

    def check(self, model: torch.nn.Module, train: TrainConfig, size: int) -> None:
        find_cut(model, train.freeze_stages, size)

    def timed(self, model, train, size):
        cut = find_cut(model, train.freeze_stages, size)
        set_trainable(model, "all", freeze_stages=train.freeze_stages)
        with torch.no_grad():
            x = cut.trunk_module(model).eval()(torch.rand(min(train.batch_size, 16), 1, size, size))
        return cut.rest_module(model), x

    def fit(self, model, parts, groups, cfg, request, *, select_best):
        if request.images is None:
            raise ConfigError(f"{request.description}: a cached trunk needs the images' cache (FitRequest.images).")
        size = parts.train.images.shape[-1]
        cut = find_cut(model, cfg.freeze_stages, size)
        trunk = cut.trunk_module(model)
        identity = {"arch": model.arch, "cut": f"stage {cut.stages}", "modules": list(cut.trunk),
                    "weights": state_digest(trunk)}
        device = resolve_device(cfg.device)
        model.to(device).eval()
        stored = cached_activations(trunk, request.images.cache, identity, device=device,
                                    batch_size=cfg.eval_batch_size, amp=cfg.amp,
                                    description=f"{model.arch} trunk (stages 1-{cut.stages})")
        activations = (stored.rows(parts.train.ids), stored.rows(parts.chooser.ids))
        return fit_rest(model, cut, parts.train, parts.chooser, activations, cfg, request.folder,
                        resume=request.resume, description=request.description, select_best=select_best,
                        pretrained=request.pretrained, on_epoch_end=request.on_epoch_end)


__all__ = ["CachedProbe", "CachedTrunk", "FineTune", "FitRequest", "Fitter"]
