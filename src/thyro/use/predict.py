"""Predict with a model package on new images: files, folders, DICOM, or a manifest.

Each image goes through exactly the training preprocessing stored in the package (including the ROI
crop when an ROI is given), then through every fold model; the probability is the mean of the fold
models' probabilities.  Images are read and scored in batches, so memory stays bounded however large
the folder.  A file that cannot be read gets an error row and the others go on.

Images smaller than the model input are upscaled by the preprocessing (as in training) and get a
warning in the ``warning`` column; images under :data:`MIN_SIDE` pixels on a side are refused.

Engines: ``torch`` (the fold models, eager) or ``onnx`` (the graph written by ``thyro export``, run
with onnxruntime; torch is not imported on that path).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thyro.data.readers import DICOM_SUFFIXES as _DICOM
from thyro.data.readers import IMAGE_SUFFIXES as _IMAGES
from thyro.errors import DataError, ModelPackageError, ThyroError
from thyro.fileio import atomic_open
from thyro.use.bundle import ModelPackage, load_package

#: File name endings picked up in folders (the readers' list); extensionless files are taken when they are DICOM.
IMAGE_SUFFIXES = set(_IMAGES) - set(_DICOM)
DICOM_SUFFIXES = set(_DICOM)
MIN_SIDE = 16
CSV_COLUMNS = ["input", "probability", "class", "prediction", "roi", "warning", "error"]


@dataclass
class InputItem:
    """One image to score: its path, the name written in the output, and an optional ROI."""

    path: Path
    name: str
    roi: dict | None = None
    error: str | None = None  # set when the input itself is already known to be bad


@dataclass
class PredictionRow:
    input: str
    probability: float | None
    cls: int | None
    prediction: str
    roi: str
    warning: str = ""
    error: str = ""

    def as_csv(self) -> list:
        return [self.input, "" if self.probability is None else f"{self.probability:.6f}",
                "" if self.cls is None else self.cls, self.prediction, self.roi, self.warning, self.error]


@dataclass
class PredictionSummary:
    """What :func:`predict` did: counts, the CSV path, and the first rows (for a table)."""

    n: int = 0
    n_failed: int = 0
    n_positive: int = 0
    out: Path | None = None
    operating_point: str = ""
    threshold: float = 0.5
    engine: str = "torch"
    rows: list[PredictionRow] = field(default_factory=list)  # at most ``keep_rows``


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _wanted(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES:
        return True
    return suffix == "" and _is_dicom(path)


def parse_roi_arg(value: str | None) -> dict | None:
    """``--roi``: a JSON object (``{"box": [x0, y0, x1, y1]}`` or ``{"polygons": ...}``) or a path to a JSON file."""
    from thyro.data.manifest import parse_roi

    if value is None or not str(value).strip():
        return None
    text = str(value)
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise DataError(f"--roi {text!r}: neither a JSON object nor an existing JSON file.")
        text = path.read_text(encoding="utf-8")
    return parse_roi(text, where="--roi")


def collect_inputs(inputs: Iterable[str | os.PathLike], roi: dict | None = None) -> list[InputItem]:
    """Expand files, folders (recursively, sorted), DICOM files and manifest CSVs into items.

    A path that does not exist becomes an item carrying an error (so it gets an error row).
    ``roi`` applies to every item that has none of its own (a manifest's ``roi`` column wins).
    """
    from thyro.data.manifest import read_manifest

    items: list[InputItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and _wanted(p))
            items.extend(InputItem(p, str(p), roi) for p in found)
        elif path.is_file() and path.suffix.lower() == ".csv":
            manifest = read_manifest(path, check_labels=False)
            rois = manifest.rois()
            for image, r in zip(manifest.ids, rois):
                items.append(InputItem(manifest.abspath(image), image, r if r is not None else roi))
        elif path.is_file():
            items.append(InputItem(path, str(path), roi))
        else:
            items.append(InputItem(path, str(path), roi, error="file or folder not found"))
    return items


# ----------------------------------------------------------------------------------------------
# Engines: uint8 (B, S, S) -> probability (B,)
# ----------------------------------------------------------------------------------------------

class TorchEngine:
    """The fold models in PyTorch eager mode; probability = mean of the models' sigmoid."""

    name = "torch"

    def __init__(self, models: list, tta_flip: bool = False):
        import torch

        self.models = models
        self.tta_flip = bool(tta_flip)
        self._torch = torch

    @classmethod
    def from_package(cls, package: ModelPackage) -> TorchEngine:
        return cls(package.load_torch_models(), tta_flip=package.tta_flip)

    def _logit(self, model, x):
        logit = model(x).reshape(x.shape[0], -1)[:, 0]
        if self.tta_flip:  # as the study's test predictions: mean logit of the image and its mirror
            logit = 0.5 * (logit + model(self._torch.flip(x, dims=[3])).reshape(x.shape[0], -1)[:, 0])
        return logit

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).unsqueeze(1).float().div_(255.0)
        with torch.inference_mode():
            probs = torch.stack([torch.sigmoid(self._logit(m, x)) for m in self.models]).mean(0)
        return probs.numpy().astype(float)


class OnnxEngine:
    """The exported ONNX graph (fold ensemble inside) run with onnxruntime on the CPU."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelPackageError(f"{path}: ONNX model not found; "
                                    f"write it with `thyro export MODEL_DIR --onnx {path}`.")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def check_matches(self, package: ModelPackage, path: Path) -> None:
        """Refuse an ONNX file exported from other model files or for another input size."""
        import json

        meta = self.metadata
        expected = [m.get("sha256") for m in package.meta["models"]]
        if "models_sha256" in meta and json.loads(meta["models_sha256"]) != expected:
            raise ModelPackageError(f"{path}: exported from other model files than {package.root}'s; "
                                    f"export again with `thyro export {package.root}`.")
        if "tta_flip" in meta and (meta["tta_flip"] == "true") != package.tta_flip:
            raise ModelPackageError(f"{path}: flip test-time augmentation {meta['tta_flip']} differs from the "
                                    f"package's; export again with `thyro export {package.root}`.")
        if "image_size" in meta and int(meta["image_size"]) != package.image_size:
            raise ModelPackageError(f"{path}: input size {meta['image_size']} px, but the package's preprocessing "
                                    f"gives {package.image_size} px; export again with `thyro export {package.root}`.")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = (np.ascontiguousarray(batch, dtype=np.float32) / np.float32(255.0))[:, None]
        return self.session.run(["probability"], {self.input_name: x})[0].astype(float).reshape(-1)


def make_engine(package: ModelPackage, engine: str = "torch", onnx_path: str | os.PathLike | None = None):
    if engine == "torch":
        return TorchEngine.from_package(package)
    if engine == "onnx":
        path = Path(onnx_path or package.onnx_path)
        eng = OnnxEngine(path)
        eng.check_matches(package, path)
        return eng
    raise ThyroError(f"--engine {engine!r}: choose torch or onnx.")


# ----------------------------------------------------------------------------------------------
# Preprocessing one file
# ----------------------------------------------------------------------------------------------

def image_dims(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, without decoding pixels (None when unknown)."""
    try:
        if path.suffix.lower() in DICOM_SUFFIXES or _is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:  # the reader gives the real error message
        return None


@dataclass
class Prepared:
    """One input, preprocessed: the model's input, a warning, and how it was made.

    ``frame`` (the file's full frame as RGB, for showing a heatmap on it) is filled only when asked.
    """

    image: np.ndarray
    warning: str
    geometry: object  # thyro.data.preprocess.Geometry
    frame: np.ndarray | None = None


def prepare_item(preprocessor, item: InputItem, size: int, *, frame: bool = False) -> Prepared:
    """Preprocess one input and keep its geometry (and, with ``frame``, its full frame in RGB).

    Raises :class:`DataError` (or the reader's error) on an unreadable file.
    """
    from thyro.data.preprocess import read_image

    if item.error:
        raise DataError(f"{item.path}: {item.error}")
    warning = ""
    dims = image_dims(item.path)
    if dims is not None:
        w, h = dims
        if min(w, h) < MIN_SIDE:
            raise DataError(f"{item.path}: image is {w} x {h} px, under the minimum of {MIN_SIDE} px on a side.")
        if item.roi is None and (w < size or h < size):
            warning = f"image {w} x {h} px is smaller than the model input {size} x {size}: upscaled"
    if not frame:
        img, geometry = preprocessor.process_file(item.path, roi=item.roi)
        full = None
    else:
        loaded = read_image(item.path, color=True)
        img, geometry = preprocessor.process(loaded.pixels, roi=item.roi, origin=loaded.origin,
                                             region=loaded.region, frame_size=loaded.size)
        full = loaded.pixels
        if loaded.region:
            from thyro.data.readers import load_image

            full = load_image(item.path, color=True, us_region=False).pixels
    img = np.asarray(img)
    if img.shape != (size, size) or img.dtype != np.uint8:
        raise DataError(f"{item.path}: preprocessing gave {img.dtype} {img.shape}, expected uint8 ({size}, {size}).")
    if geometry.warning:  # the scan area was not understood: the whole frame was used
        warning = "; ".join(w for w in (warning, geometry.warning) if w)
    return Prepared(img, warning, geometry, full)


def prepare(preprocessor, item: InputItem, size: int) -> tuple[np.ndarray, str]:
    """Preprocessed ``(S, S)`` uint8 image and a warning ('' when none).

    Raises :class:`DataError` (or the reader's error) on an unreadable file.
    """
    prepared = prepare_item(preprocessor, item, size)
    return prepared.image, prepared.warning


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def iter_predictions(package: ModelPackage, items: list[InputItem], engine, *, batch_size: int = 16,
                     threshold: float = 0.5, on_item=None) -> Iterator[PredictionRow]:
    """Yield one row per item, in order, scoring ``batch_size`` preprocessed images at a time."""
    from thyro.data.manifest import roi_to_json

    if batch_size < 1:
        raise ThyroError(f"--batch-size must be at least 1, got {batch_size}.")
    pre = package.preprocessor()
    size = package.image_size
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        arrays: list[np.ndarray] = []
        slots: list[tuple[InputItem, int | None, str, str]] = []  # item, index in batch, warning, error
        for item in chunk:
            try:
                img, warning = prepare(pre, item, size)
                slots.append((item, len(arrays), warning, ""))
                arrays.append(img)
            except (ThyroError, OSError, ValueError) as exc:
                slots.append((item, None, "", _error_text(exc)))
            except Exception as exc:  # a reader's unexpected failure on one file must not stop the batch
                slots.append((item, None, "", f"{type(exc).__name__}: {_error_text(exc)}"))
        probs = engine(np.stack(arrays)) if arrays else np.empty(0)
        for item, idx, warning, error in slots:
            if idx is None:
                row = PredictionRow(item.name, None, None, "", roi_to_json(item.roi), warning, error)
            else:
                p = float(probs[idx])
                cls = int(p >= threshold)
                row = PredictionRow(item.name, p, cls, "malignant" if cls else "benign", roi_to_json(item.roi), warning)
            if on_item is not None:
                on_item(row)
            yield row


def predict(model_dir: str | os.PathLike | ModelPackage, inputs: Iterable[str | os.PathLike], *,
            out: str | os.PathLike | None = None, roi: dict | None = None, engine: str = "torch",
            onnx_path: str | os.PathLike | None = None, batch_size: int = 16, point: str | None = None,
            progress: bool = True, keep_rows: int = 1000) -> PredictionSummary:
    """Score images with a model package and write the CSV (atomically) when ``out`` is given.

    Parameters
    ----------
    model_dir : path or ModelPackage
    inputs : image files, folders (recursive), DICOM files or manifest CSVs (their ``roi`` column is used)
    out : CSV path; columns ``input, probability, class, prediction, roi, warning, error``
    roi : an ROI applied to inputs without their own
    engine : ``"torch"`` or ``"onnx"``
    point : operating point name (default: the package's default)
    keep_rows : how many rows the summary keeps in memory for display

    Returns
    -------
    PredictionSummary
    """
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    point_name, threshold = package.operating_point(point)
    items = collect_inputs(inputs, roi)
    if not items:
        raise DataError("no images found in " + ", ".join(map(str, inputs))
                        + f" (looked for {', '.join(sorted(IMAGE_SUFFIXES | DICOM_SUFFIXES))} and DICOM files).")
    eng = make_engine(package, engine, onnx_path)
    summary = PredictionSummary(operating_point=point_name, threshold=threshold, engine=engine,
                                out=Path(out) if out else None)

    def consume(rows: Iterator[PredictionRow], writer) -> None:
        from thyro.console import progress_task

        with progress_task("predicting", len(items)) if progress else _null_progress() as (bar, task):
            for row in rows:
                summary.n += 1
                summary.n_failed += bool(row.error)
                summary.n_positive += row.cls == 1
                if len(summary.rows) < keep_rows:
                    summary.rows.append(row)
                if writer is not None:
                    writer.writerow(row.as_csv())
                if bar is not None:
                    bar.advance(task)

    rows = iter_predictions(package, items, eng, batch_size=batch_size, threshold=threshold)
    if out:
        with atomic_open(out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            consume(rows, writer)
    else:
        consume(rows, None)
    return summary


class _null_progress:
    def __enter__(self):
        return None, None

    def __exit__(self, *exc):
        return False


def summary_table(summary: PredictionSummary, max_rows: int = 40):
    """A rich table of the first rows and a caption with the counts."""
    from rich.table import Table

    table = Table(title=f"Predictions ({summary.engine}; class at operating point {summary.operating_point}, "
                        f"probability >= {summary.threshold:.4f})")
    for col in ("input", "probability", "class", "roi", "note"):
        table.add_column(col, overflow="fold")
    shown = summary.rows[:max_rows]
    base = ""
    try:
        if len(shown) > 1:
            base = os.path.commonpath([os.path.dirname(r.input) for r in shown])
    except ValueError:  # mixed absolute and relative paths
        base = ""
    if base in (os.sep, "."):
        base = ""
    for row in shown:
        name = os.path.relpath(row.input, base) if base else row.input
        table.add_row(name, "" if row.probability is None else f"{row.probability:.4f}",
                      row.prediction, "yes" if row.roi else "", row.error or row.warning,
                      style="red" if row.error else None)
    more = summary.n - len(shown)
    table.caption = ((f"paths relative to {base}; " if base else "")
                     + f"{summary.n} image(s): {summary.n_positive} malignant, "
                     f"{summary.n - summary.n_positive - summary.n_failed} benign, {summary.n_failed} failed"
                     + (f"; {more} more row(s) in the CSV" if more > 0 else ""))
    return table

