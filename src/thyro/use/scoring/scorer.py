"""The :class:`Scorer`: a model package, its preprocessing, an engine, the operating point and the label
meaning, with one way to prepare an input, one way to score a batch and one way to explain it."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import numpy as np

from thyro.data.preprocess import Preprocessor
from thyro.data.readers import ImageInfo
from thyro.errors import ThyroError
from thyro.use.engines import make_engine
from thyro.use.package import ModelPackage, load_package
from thyro.use.scoring.items import InputItem, check_frames, check_method, frame_items, image_info
from thyro.use.scoring.prepare import Failure, Prepared, prepare
from thyro.use.scoring.rows import KeyedRow, PredictionRow, make_row, mean_of_frames

#: What :meth:`Scorer.score` and :meth:`Scorer.explain` take: prepared images, or their model inputs stacked.
Batch = Sequence[Prepared] | np.ndarray


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` when it is at least 1, else :class:`ThyroError` naming the parameter."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ThyroError(f"batch_size={batch_size!r}: must be a whole number of at least 1.")
    return int(batch_size)


class Scorer:
    """A model package ready to score: the one path from an input to a probability (and a heatmap).

    Parameters
    ----------
    package : ModelPackage or path
        A model package (``thyro bundle``'s output), loaded or its folder.
    engine : {"torch", "onnx"} or callable
        ``torch`` runs the fold models, ``onnx`` the graph ``thyro export`` wrote (torch is not imported);
        a callable ``uint8 (B, S, S) -> probabilities (B,)`` is used as it is.
    onnx_path : path, optional
        The ONNX file for ``engine="onnx"`` (default ``MODEL_DIR/model.onnx``).
    point : str, optional
        The operating point that decides the class (default: the package's).
    threads, spin
        The model's intra-op threads, and whether idle ONNX Runtime threads spin
        (:func:`thyro.use.engines.make_engine`).

    Attributes
    ----------
    package, preprocessor, image_size
        The package, its preprocessing (:class:`thyro.data.preprocess.Preprocessor`) and its input side.
    engine, engine_name
        The engine (a callable) and its name.
    point, threshold
        The operating point and its probability threshold.
    labels : thyro.data.manifest.LabelMeaning
        What label 1 means (``labels.positive``, e.g. "malignant" or "TI-RADS >= 4c").

    Notes
    -----
    :meth:`score` and :meth:`explain` may be called from any thread; they hold one lock, so a heatmap
    (whose hooks sit on the fold models) never overlaps a batch.  :meth:`prepare` holds no lock: inputs can
    be decoded on several threads while the model works.
    """

    def __init__(self, package: ModelPackage | str | os.PathLike, *, engine: str | Callable = "torch",
                 onnx_path: str | os.PathLike | None = None, point: str | None = None, threads: int | None = None,
                 spin: bool = True):
        self.package = package if isinstance(package, ModelPackage) else load_package(package)
        self.preprocessor = self.package.preprocessor()
        self.image_size = self.package.image_size
        if callable(engine):
            self.engine, self.engine_name = engine, str(getattr(engine, "name", type(engine).__name__))
        else:
            self.engine = make_engine(self.package, engine, onnx_path, spin=spin, threads=threads)
            self.engine_name = engine
        self.point, self.threshold = self.package.operating_point(point)
        self.labels = self.package.label_meaning
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Scorer({str(self.package.root)!r}, engine={self.engine_name!r}, point={self.point!r}, "
                f"threshold={self.threshold:.4f})")

    def with_preprocessing(self, **changes) -> Scorer:
        """This scorer (the same engine, models and lock) with preprocessing settings changed, e.g.
        ``inpaint_marks=False`` to score images with their marks left in."""
        other = copy.copy(self)
        other.preprocessor = Preprocessor(self.preprocessor.cfg.model_copy(update=changes))
        return other

    @property
    def models(self) -> list | None:
        """The fold models (torch engine), or None (ONNX: no heatmaps)."""
        return getattr(self.engine, "models", None)

    @property
    def can_explain(self) -> bool:
        """Whether :meth:`explain` works: heatmaps need the fold models (the torch engine)."""
        return self.models is not None

    @property
    def names(self) -> tuple[str, str]:
        """(label 1's name, label 0's name), e.g. ("malignant", "benign")."""
        return self.labels.positive, self.labels.negative

    # ------------------------------------------------------------------------------------------
    # one input, one batch
    # ------------------------------------------------------------------------------------------

    def info(self, source: Any, *, name: str | None = None) -> ImageInfo | None:
        """An input's header (size, frames) without decoding; None for pixels and unreadable headers."""
        return image_info(source, name)

    def prepare(self, source: Any, *, name: str | None = None, roi: dict | None = None, frame: int | None = None,
                full_frame: bool = False) -> Prepared | Failure:
        """Prepare one input: a path, bytes or a binary file object (named ``name`` in messages), a PIL
        image or a numpy array; ``roi`` in its pixels; ``frame`` of a multi-frame file (None: frame 0, with
        a warning when there are more); ``full_frame`` keeps the frame to draw a heatmap on.

        Returns a :class:`Prepared` image, or a :class:`Failure` naming the input when the input is the
        problem (:mod:`thyro.use.scoring.prepare`); any other exception is raised.
        """
        if name is None:
            name = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
            name = name if isinstance(name, str) and name else getattr(source, "filename", "") or "image"
        return self.prepare_item(InputItem(source, name, roi, frame=frame), full_frame=full_frame)

    def prepare_item(self, item: InputItem, *, full_frame: bool = False) -> Prepared | Failure:
        """:meth:`prepare` for an :class:`InputItem` (from :func:`thyro.use.inputs.collect_inputs`)."""
        return prepare(self.preprocessor, item, self.image_size, frame=full_frame)

    def score(self, batch: Batch) -> np.ndarray:
        """Probabilities ``(B,)`` that label 1 applies: the engine's (fold mean, flip test-time augmentation
        when the package uses it) on a batch of prepared images."""
        images = _stack(batch, self.image_size)
        if not len(images):
            return np.empty(0)
        with self._lock:
            return np.asarray(self.engine(images), dtype=float).reshape(-1)

    def explain(self, batch: Batch, method: str = "gradcam") -> np.ndarray:
        """Heatmaps ``(B, S, S)`` in [0, 1] of the evidence for label 1 on a batch of prepared images: one
        forward and backward pass per fold model for the whole batch (:func:`thyro.use.explain.heatmaps`)."""
        check_method(method)
        if self.models is None:
            raise ThyroError(f"heatmaps need the fold models: engine={self.engine_name!r} has none; "
                             "use engine='torch'.")
        from thyro.use.explain.gradcam import heatmaps  # lazy: torch and pytorch-grad-cam, never loaded for ONNX

        images = _stack(batch, self.image_size)
        if not len(images):
            return np.empty((0, self.image_size, self.image_size), np.float32)
        with self._lock:
            return heatmaps(self.models, images, method)

    def classify(self, probability: float) -> tuple[int, str]:
        """The class at the operating point (1 when ``probability >= threshold``) and its name."""
        cls = int(probability >= self.threshold)
        return cls, self.names[0] if cls else self.names[1]

    # ------------------------------------------------------------------------------------------
    # many inputs
    # ------------------------------------------------------------------------------------------

    def batches(self, items: Iterable[InputItem], batch_size: int = 16, *,
                full_frame: bool = False) -> Iterator[list[tuple[InputItem, Prepared | Failure]]]:
        """Inputs prepared ``batch_size`` at a time, in order: ``(item, prepared or failure)`` per input."""
        batch_size = check_batch_size(batch_size)
        it = iter(items)
        while chunk := list(islice(it, batch_size)):
            yield [(item, self.prepare_item(item, full_frame=full_frame)) for item in chunk]

    def rows(self, items: Iterable[InputItem], *, batch_size: int = 16,
             frames: str = "first") -> Iterator[PredictionRow]:
        """One :class:`PredictionRow` per input (per frame with ``frames="all"``), in input order, prepared and
        scored ``batch_size`` at a time; a bad input's row carries its error and the others go on.

        ``frames``: ``"first"`` scores frame 0 of a multi-frame file (with a warning), ``"all"`` every frame
        (``NAME#frame=K``), ``"mean"`` one row with the mean of the frames' probabilities.
        """
        check_batch_size(batch_size)
        check_frames(frames)
        keyed = self._scored_units(frame_items(items, frames), batch_size)
        if frames == "mean":
            keyed = mean_of_frames(keyed, self.threshold, self.names)
        for _, row in keyed:
            yield row

    def _scored_units(self, units: Iterator[tuple[int, InputItem, int]], batch_size: int) -> Iterator[KeyedRow]:
        """``((input index, frames of the input), row)`` for every unit, scored ``batch_size`` at a time."""
        while chunk := list(islice(units, batch_size)):
            outcomes = [self.prepare_item(item) for _, item, _ in chunk]
            probs = iter(self.score([o for o in outcomes if isinstance(o, Prepared)]))
            for (i, item, n), outcome in zip(chunk, outcomes):
                p = float(next(probs)) if isinstance(outcome, Prepared) else None
                yield (i, n), make_row(item, outcome, p, n, self.threshold, self.names)


def _stack(batch: Batch, size: int) -> np.ndarray:
    if isinstance(batch, np.ndarray):
        return batch[None] if batch.ndim == 2 else batch
    if not len(batch):
        return np.empty((0, size, size), np.uint8)
    return np.stack([p.image for p in batch])


__all__ = ["Batch", "Scorer", "check_batch_size"]
