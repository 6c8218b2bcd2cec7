"""How an arm is fitted and how its epoch is selected: small strategies, chosen once when the plan is made.

Each :class:`~thyro.train.plan.ArmPlan` holds a :class:`Fitter` (from the arm's ``train_backbone``) and a
:class:`Selection` (from ``train.selection``); a job calls them and tests no setting itself.

Fitters
-------
:class:`FineTune`
    the training loop (:func:`thyro.train.fit.fit`), over the recipe's trainable stages
    (``train_backbone``: ``all``, ``none`` or ``bn``; :mod:`thyro.train.recipe`).
:class:`CachedProbe`
    a linear probe on cached features (``train_backbone: cached``; :mod:`thyro.train.probe`): no epochs,
    so nothing to select or tune; it chooses its own L2 strength on inner folds of the training part.

A new way of fitting is one subclass of :class:`Fitter` that names its ``train_backbone`` value in
``modes`` (the subclass registers itself) plus that value in :class:`thyro.config.ArmConfig`'s ``Literal``.

Selections
----------
:class:`LastEpoch` (``last``), :class:`InnerSplit` (``inner``) and :class:`HeldOutFold` (``oof``): which
images train, which choose the epoch, whether the best epoch is kept, and the sentence that describes the
choice in the run's record and report.  The inner split (a group-respecting share of the training part) is
made when the selection or tuning (``train.tune``) needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch

from thyro.config import TrainConfig
from thyro.data.splits import inner_split
from thyro.errors import ConfigError
from thyro.run import JobKey
from thyro.train.fit import ArraySet, FitResult, fit
from thyro.train.probe import fit_probe
from thyro.train.recipe import set_trainable


class Images(Protocol):
    """Where a job's images come from (:class:`thyro.train.prepared.ImageSet`)."""

    def arrays(self, ids: list[str]) -> ArraySet: ...

    def labels(self, ids: list[str]) -> np.ndarray: ...

    def groups(self, ids: list[str]) -> list[str]: ...


@dataclass(frozen=True)
class Parts:
    """The images one job reads.

    Attributes
    ----------
    train : the images the model trains on.
    chooser : the images that choose its epoch (only logged when the last epoch is kept).
    val : the held-out fold, scored out of fold.
    inner : the inner split of the training part, ``(fit part, selection part)``, when selection or tuning
        needs it (else None).
    """

    train: ArraySet
    chooser: ArraySet
    val: ArraySet
    inner: tuple[ArraySet, ArraySet] | None = None


# ------------------------------------------------------------------------------------------------
# how the epoch is selected


class Selection:
    """How a job's epoch is chosen (see the module docstring)."""

    #: ``train.selection``'s value for this class.
    name: ClassVar[str] = ""
    #: Keep the best epoch's weights (early stopping), or the last epoch's.
    select_best: ClassVar[bool] = False
    #: The selection needs the inner split of the training part.
    needs_inner: ClassVar[bool] = False
    _by_name: ClassVar[dict[str, type[Selection]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):  # a class that names its own value (a subclass without one registers nothing)
            Selection._by_name[cls.name] = cls

    def __init__(self, sentence: str | None = None):
        self._sentence = sentence

    @classmethod
    def named(cls, name: str) -> Selection:
        """The selection ``train.selection: name`` asks for."""
        try:
            return cls._by_name[name]()
        except KeyError:
            raise ConfigError(f"train.selection {name!r}: choose one of {', '.join(cls._by_name)}.") from None

    def parts(self, images: Images, train_ids: list[str], val_ids: list[str], cfg: TrainConfig, job: JobKey, *,
              tuning: bool = False) -> Parts:
        """The images of ``job``: its training part ``train_ids``, its held-out fold ``val_ids``, and the inner
        split when this selection or ``tuning`` needs it."""
        val = images.arrays(val_ids)
        inner = None
        if self.needs_inner or tuning:
            fit_ids, select_ids = inner_split(train_ids, images.labels(train_ids), images.groups(train_ids),
                                              cfg.inner_fraction, seed=cfg.seed * 1000 + job.fold,
                                              where=f"training part of {job}")
            inner = (images.arrays(fit_ids), images.arrays(select_ids))
        train, chooser = self.choose(lambda: images.arrays(train_ids), val, inner)
        return Parts(train, chooser, val, inner)

    def choose(self, whole: Callable[[], ArraySet], val: ArraySet,
               inner: tuple[ArraySet, ArraySet] | None) -> tuple[ArraySet, ArraySet]:
        """``(images trained on, images that choose the epoch)`` from the whole training part, the held-out
        fold and the inner split."""
        return whole(), val

    def describe(self, parts: Parts) -> str:
        """The sentence that says how the model of a job was chosen (the run's record and report)."""
        return self._sentence or ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LastEpoch(Selection):
    """No selection: every epoch of the schedule is trained and the last weights are kept."""

    name = "last"

    def describe(self, parts: Parts) -> str:
        return self._sentence or "no selection: the weights after the last epoch"


class InnerSplit(Selection):
    """Early stopping on an inner, group-respecting split of the training part: the held-out fold stays
    untouched by selection."""

    name = "inner"
    select_best = True
    needs_inner = True

    def choose(self, whole, val, inner):
        return inner

    def describe(self, parts: Parts) -> str:
        held_out = len(parts.inner[1].ids) if parts.inner is not None else 0
        return f"early stopping on an inner split of the training part ({held_out} images held out)"


class HeldOutFold(Selection):
    """Early stopping on the held-out fold itself: its out-of-fold AUROC is then selection-biased."""

    name = "oof"
    select_best = True

    def describe(self, parts: Parts) -> str:
        return "early stopping on the held-out fold (its out-of-fold AUROC is selection-biased)"


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


class CachedProbe(Fitter):
    """A linear probe on cached features: the frozen backbone runs once per image and its mirror, then
    logistic regression writes the head (only the head is fitted).  No epochs: no selection, no tuning."""

    modes = ("cached",)
    #: What the probe fits: the head alone (the recipe's word for it).
    trainable = "none"

    def train_config(self, train):
        return train.model_copy(update={"selection": "last", "tune": train.tune.model_copy(
            update={"lr": [], "epochs": [], "weight_decay": []})})

    def selection(self, train):
        return LastEpoch("no selection: a linear probe on cached features (L2 strength chosen on inner folds)")

    def epochs(self, train):
        return 1

    def fit(self, model, parts, groups, cfg, request, *, select_best):
        set_trainable(model, self.trainable)
        return fit_probe(model, parts.train, groups, parts.chooser, cfg, request.folder,
                         description=request.description)


__all__ = ["CachedProbe", "FineTune", "FitRequest", "Fitter", "HeldOutFold", "Images", "InnerSplit", "LastEpoch",
           "Parts", "Selection"]
