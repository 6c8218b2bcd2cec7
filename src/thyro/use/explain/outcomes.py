"""A figure of test cases by outcome (true and false positives and negatives), each with its heatmap, drawn
through the explain path: a model package's :class:`~thyro.use.scoring.Scorer` prepares the files and
explains the batch shown, as ``thyro explain`` does."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib import cm, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from thyro.errors import DataError, ThyroError
from thyro.fileio import atomic_path
from thyro.use.explain.figures import on_original, overlay
from thyro.use.explain.gradcam import check_method, heatmaps
from thyro.use.package import ModelPackage
from thyro.use.scoring import Failure, InputItem, Scorer

OUTCOMES = {"TP": "true positive", "FP": "false positive", "TN": "true negative", "FN": "false negative"}


def montage(model_dir_or_models, images, labels, probs, out_png: str | os.PathLike, *,
            threshold: float | None = None, per_group: int = 4, method: str = "gradcam",
            titles: Sequence[str] | None = None) -> dict[str, list[int]]:
    """A figure of test cases by outcome, true/false positives/negatives, each with its heatmap.

    Parameters
    ----------
    model_dir_or_models : model directory, ModelPackage, a model, or a list of fold models
    images : preprocessed uint8 images, array (N, S, S) or a list of (S, S) arrays; or image file
        paths when ``model_dir_or_models`` is a model directory (preprocessed with its settings;
        each case is then shown on its original image, the heatmap inside the crop box)
    labels, probs : per image; 1 = label 1 (e.g. malignant)
    out_png : PNG path (written atomically)
    threshold : the class cut-off; default the package's operating point, else 0.5
    per_group : images per outcome; the most confident cases of each outcome are shown
    method : ``"gradcam"`` or ``"gradcam++"``
    titles : a title per image (default ``#K``)

    Returns
    -------
    dict
        The indices shown per outcome (``"TP"``, ``"FP"``, ``"TN"``, ``"FN"``).
    """
    check_method(method)
    scorer = _scorer(model_dir_or_models)
    if threshold is None:
        threshold = scorer.threshold if scorer is not None else 0.5
    imgs, originals = _model_inputs(scorer, images)
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    if not (len(imgs) == len(y) == len(p)):
        raise ThyroError(f"montage: {len(imgs)} images, {len(y)} labels and {len(p)} probabilities; they must match.")
    groups, chosen = _choose(y, p >= threshold, p, per_group)
    shown = sorted({i for v in chosen.values() for i in v})
    explain = _explainer(scorer, model_dir_or_models, method)
    cams = dict(zip(shown, explain(imgs[shown]))) if shown else {}
    evidence = scorer.labels.positive.replace("≥", ">=") if scorer is not None else "malignant"
    fig = Figure(figsize=(2.2 * per_group, 9.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, per_group, squeeze=False)
    for r, (name, idxs) in enumerate(chosen.items()):
        for c in range(per_group):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(idxs):
                i = idxs[c]
                shown_image = on_original(*originals[i], cams[i]) if i in originals else overlay(imgs[i], cams[i])
                ax.imshow(shown_image)
                ax.set_title(f"{titles[i] if titles is not None else f'#{i}'}\np = {p[i]:.2f}", fontsize=8)
            elif c == 0:
                ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        axes[r, 0].text(-0.08, 0.5, f"{OUTCOMES[name]} ({int(groups[name].sum())})", rotation=90, ha="right",
                        va="center", fontsize=9, transform=axes[r, 0].transAxes)
    fig.suptitle(f"Test cases by outcome at threshold {threshold:.3f} ({method})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap="jet"), cax=fig.add_axes((0.93, 0.15, 0.015, 0.7)),
                 label=f"heatmap: relative evidence for {evidence}")
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    return chosen


def _scorer(model_dir_or_models) -> Scorer | None:
    """A scorer for a model package (or its folder); None for bare models."""
    if isinstance(model_dir_or_models, (ModelPackage, str, os.PathLike)):
        return Scorer(model_dir_or_models, engine="torch")
    return None


def _explainer(scorer: Scorer | None, models, method: str) -> Callable[[np.ndarray], np.ndarray]:
    """Heatmaps of a batch: the scorer's explain path, or the same Grad-CAM on bare models."""
    if scorer is not None:
        return lambda batch: scorer.explain(batch, method)
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    return lambda batch: heatmaps(models, batch, method)


def _model_inputs(scorer: Scorer | None, images) -> tuple[np.ndarray, dict[int, tuple]]:
    """The model inputs ``(N, S, S)``, and for images given as files ``index -> (full frame, geometry)``."""
    originals: dict[int, tuple] = {}
    if any(isinstance(i, (str, os.PathLike)) for i in images):
        if scorer is None:
            raise ThyroError("montage: image paths need a model directory (for its preprocessing); "
                             "with bare models pass preprocessed uint8 arrays.")
        arrays = []
        for k, image in enumerate(images):
            if not isinstance(image, (str, os.PathLike)):
                arrays.append(image)
                continue
            prepared = scorer.prepare_item(InputItem(Path(image), str(image)), full_frame=True)
            if isinstance(prepared, Failure):
                raise DataError(prepared.error)
            originals[k] = (prepared.frame, prepared.geometry)
            arrays.append(prepared.image)
        images = arrays
    imgs = np.stack([np.asarray(i) for i in images]) if len(images) else np.empty((0, 1, 1), np.uint8)
    return imgs, originals


def _choose(y: np.ndarray, pred: np.ndarray, p: np.ndarray,
            per_group: int) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Each outcome's mask and its ``per_group`` most confident cases (highest probability for positives,
    lowest for negatives)."""
    groups = {"TP": (y == 1) & pred, "FP": (y == 0) & pred, "TN": (y == 0) & ~pred, "FN": (y == 1) & ~pred}
    chosen: dict[str, list[int]] = {}
    for name, mask in groups.items():
        idx = np.flatnonzero(mask)
        order = np.argsort(-p[idx]) if name in ("TP", "FP") else np.argsort(p[idx])
        chosen[name] = idx[order][:per_group].tolist()
    return groups, chosen


__all__ = ["OUTCOMES", "montage"]
