"""How a job's epoch is selected, and the images a job reads (see :mod:`thyro.train.arms`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from thyro.config import TrainConfig
from thyro.data.cache import ImageCache
from thyro.data.splits import inner_split
from thyro.errors import ConfigError
from thyro.run import JobKey
from thyro.train.fit import ArraySet

#: What a job scores: ``(split, where its images come from, their ids)``.
Scored = tuple[str, "Images", list[str]]


class Images(Protocol):
    """Where a job's images come from (:class:`thyro.train.prepared.ImageSet`)."""

    def arrays(self, ids: list[str]) -> ArraySet: ...

    def labels(self, ids: list[str]) -> np.ndarray: ...

    def groups(self, ids: list[str]) -> list[str]: ...

    @property
    def cache(self) -> ImageCache: ...


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


__all__ = ["HeldOutFold", "Images", "InnerSplit", "LastEpoch", "Parts", "Scored", "Selection"]
