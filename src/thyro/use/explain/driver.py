"""``thyro explain``: heatmaps of a model package on files, written as figures with an ``index.csv``.

Inputs are prepared and scored by a :class:`~thyro.use.scoring.Scorer` ``batch_size`` at a time, and the
heatmaps of a batch are drawn in one forward and backward pass per fold model; then each input's figures
are written.  A bad input gets its error in the index (the same words ``thyro predict`` writes) and the
others go on; any other exception is raised.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from thyro import progress as progress_
from thyro.data.manifest import LabelMeaning
from thyro.fileio import write_csv
from thyro.use.explain.figures import explanation_figure, overlay_input, save_png
from thyro.use.explain.gradcam import check_method
from thyro.use.inputs import collect_inputs
from thyro.use.package import ModelPackage
from thyro.use.scoring import Failure, InputItem, Prepared, Scorer, check_batch_size, check_frames, frame_items

#: The frame policies of ``explain``: one heatmap per image, frame 0 or every frame.
EXPLAIN_FRAMES = ("first", "all")
#: Columns of ``index.csv`` (and keys of the records :func:`explain` returns).
INDEX_COLUMNS = ["input", "png", "input_png", "probability", "probability_of", "model_label_source",
                 "model_label_definition", "class", "crop_box", "warning", "error"]


def explain(model_dir: str | os.PathLike | ModelPackage, inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
            *, method: str = "gradcam", roi: dict | None = None, batch_size: int = 8, point: str | None = None,
            progress: bool = True, frames: str = "first") -> list[dict]:
    """Write, per input image, a full-resolution figure (the heatmap on the original image with the
    crop box, beside the model's input with its heatmap, and a colour bar) and the model-input
    overlay alone, under ``out_dir``, and an ``index.csv``.

    Parameters
    ----------
    model_dir : path or ModelPackage
    inputs : image files, folders (recursive), DICOM files or manifest CSVs
    out_dir : folder for the PNGs and ``index.csv`` (made when missing)
    method : ``"gradcam"`` or ``"gradcam++"``
    roi : an ROI for every input without its own
    batch_size : images prepared, scored and explained at a time
    point : the operating point that decides ``class`` (default: the package's)
    progress : report progress through :mod:`thyro.progress`
    frames : ``"first"`` draws frame 0 of a multi-frame file (the ``warning`` says how many it has),
        ``"all"`` one heatmap per frame (``NAME#frame=K``)

    Returns
    -------
    list of dict
        One per input, keys :data:`INDEX_COLUMNS`: ``png`` is the full-resolution figure; ``probability_of``
        and the ``model_label_*`` columns say what the probability is of, as in ``thyro predict``'s CSV;
        ``crop_box`` is in the file's pixels.  Unreadable inputs get an error and the others go on.
    """
    check_method(method)
    check_frames(frames, EXPLAIN_FRAMES)
    check_batch_size(batch_size)
    scorer = Scorer(model_dir, engine="torch", point=point)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = [item for _, item, _ in frame_items(collect_inputs(inputs, roi), frames)]
    writer = _FigureWriter(out, method, scorer.labels, _common_folder(items))
    results: list[dict] = []
    task = progress_.task(f"explaining ({method})", len(items), unit="image") if progress else None
    with task if task is not None else contextlib.nullcontext():
        for batch in scorer.batches(items, batch_size, full_frame=True):
            results.extend(_explain_batch(scorer, batch, method, writer))
            if task is not None:
                task.advance(len(batch))
    write_csv(out / "index.csv", results, INDEX_COLUMNS)
    return results


def _explain_batch(scorer: Scorer, batch: list[tuple[InputItem, Prepared | Failure]], method: str,
                   writer: _FigureWriter) -> list[dict]:
    """Score and explain one prepared batch (one pass per fold model), write its figures, and give its records."""
    ready = [p for _, p in batch if isinstance(p, Prepared)]
    probs = iter(scorer.score(ready))
    cams = iter(scorer.explain(ready, method))
    records = []
    for item, outcome in batch:
        rec = writer.record(item)
        if isinstance(outcome, Failure):
            rec["error"] = outcome.error
        else:
            prob, cam = float(next(probs)), next(cams)
            cls, _ = scorer.classify(prob)
            rec.update(writer.write(item, outcome, prob, cam), probability=prob, warning=outcome.warning,
                       **{"class": cls})
        records.append(rec)
    return records


def caption(name: str, probability: float, labels: LabelMeaning, method: str, box: tuple[int, int, int, int]) -> str:
    """The figure's caption, in the bitmap font's characters (``>=`` for ``≥``): the input, what the probability
    is of and its value, how the labels were obtained, the method and the crop box."""
    text = (f"{name}: {labels.probability_name} {probability:.3f}; labels: {labels.provenance}; {method} inside "
            f"the crop box {box[0]},{box[1]}-{box[2]},{box[3]}")
    return text.replace("≥", ">=")


@dataclass
class _FigureWriter:
    """Names and writes each input's two PNGs under ``out`` (names unique, relative to the inputs' common folder)."""

    out: Path
    method: str
    labels: LabelMeaning
    base: str
    used: set[str] = field(default_factory=set)

    def record(self, item: InputItem) -> dict:
        """An index record with what every row has (the input and what the probability is of)."""
        return {"input": item.name, "png": "", "input_png": "", "probability": None,
                "probability_of": self.labels.positive, "model_label_source": self.labels.source,
                "model_label_definition": self.labels.definition, "class": None, "crop_box": "", "warning": "",
                "error": ""}

    def write(self, item: InputItem, prepared: Prepared, probability: float, cam) -> dict:
        """Write the full-resolution figure and the model-input overlay; their names and the crop box."""
        suffix = "gradcampp" if self.method == "gradcam++" else "gradcam"
        name = self._name(item)
        g = prepared.geometry
        box = g.to_frame(g.crop_box)
        text = caption(item.name, probability, self.labels, self.method, box)
        figure = explanation_figure(prepared.frame, g, prepared.image, cam, text,
                                    evidence_for=self.labels.positive.replace("≥", ">="))
        png = save_png(self.out / f"{name}.{suffix}.png", figure)
        small = save_png(self.out / f"{name}.{suffix}.input.png", overlay_input(prepared.image, cam, g))
        return {"png": png.name, "input_png": small.name, "crop_box": " ".join(map(str, box))}

    def _name(self, item: InputItem) -> str:
        path = item.path
        name = _safe_name(os.path.relpath(path.resolve(), self.base) if self.base and path is not None else item.name)
        if item.frame is not None:
            name += f".frame{item.frame}"
        while name in self.used:
            name += "_"
        self.used.add(name)
        return name


def _common_folder(items: list[InputItem]) -> str:
    """The folder all file inputs share ('' when none), so figure names are short but unique."""
    folders = [str(i.path.resolve().parent) for i in items if i.path is not None]
    try:
        return os.path.commonpath(folders) if folders else ""
    except ValueError:
        return ""


def _safe_name(name: str) -> str:
    p = Path(name)
    parts = [x for x in p.parts if x not in (p.anchor, "..", ".")]
    stem = "__".join(parts[:-1] + [Path(parts[-1]).stem]) if parts else "image"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[-150:]


__all__ = ["EXPLAIN_FRAMES", "INDEX_COLUMNS", "caption", "explain"]
