"""What the web app does for a request, without HTTP: read an upload, score it, build the answer.

:class:`Service` holds the server's one :class:`~thyro.use.scoring.Scorer` (the package, its
preprocessing and the engine: the path every driver of thyro scores through), the pixel budget and the
micro-batcher, shared by every request; its methods take an upload's bytes and return plain
dictionaries.  An upload the Scorer cannot prepare (unreadable, empty, too small, over the pixel limit:
its :class:`~thyro.use.scoring.Failure`, in the words ``thyro predict`` gives the same file) raises
:class:`UploadError`; anything else that goes wrong is the server's and propagates as it is.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import cv2
import numpy as np

from thyro import __version__
from thyro.data.manifest import roi_to_json
from thyro.data.readers import load_image, max_pixels
from thyro.errors import ThyroError
from thyro.use.package import ModelPackage
from thyro.use.scoring import INPUT_ERRORS, Failure, Prepared, Scorer, error_text
from thyro.use.serve.batching import MicroBatcher, PixelBudget
from thyro.use.serve.settings import ServeSettings

HEATMAP_NEEDS_TORCH = ("no heatmap: heatmaps need the PyTorch engine (this server runs ONNX; a server started "
                       "with the torch engine draws them)")
BOX_NOT_USED = ("The box was not used: this model was trained on whole images (no ROI crop), so it always reads "
                "the whole scan area.")
#: What a client's file is called when it came without a name.
UNNAMED = "upload"

T = TypeVar("T")


class UploadError(ThyroError):
    """The upload cannot be answered (unreadable, empty, too small, over the pixel limit); the message
    names the client's file."""


class Service:
    """The model and its preprocessing, shared by the requests.

    One :class:`~thyro.use.scoring.Scorer` prepares the uploads (on the requests' threads) and scores and
    explains them through a :class:`~thyro.use.serve.batching.MicroBatcher` (one thread: requests that
    arrive together are one model call, their heatmaps one Grad-CAM pass, PyTorch engine only).  Decoding
    holds pixels from a :class:`~thyro.use.serve.batching.PixelBudget` the size of the pixel limit.
    Uploads are read from the bytes received: nothing is written to disk.

    Parameters
    ----------
    package : ModelPackage
    settings : ServeSettings
        Already validated; read, never checked again.
    """

    def __init__(self, package: ModelPackage, settings: ServeSettings):
        self.package = package
        self.settings = settings
        self.scorer = Scorer(package, engine=settings.engine, onnx_path=settings.onnx_path, point=settings.point,
                             threads=settings.model_threads, spin=False)
        self.batcher = MicroBatcher(self.scorer.score, max_batch=settings.max_batch,
                                    wait_s=settings.batch_wait_ms / 1000.0,
                                    heatmap_engine=(partial(self.scorer.explain, method=settings.method)
                                                    if self.scorer.can_explain else None))
        self.budget = PixelBudget(max_pixels())

    @property
    def heatmaps(self) -> bool:
        return self.scorer.can_explain

    def close(self) -> None:
        self.batcher.close()

    def health(self) -> dict:
        """What ``GET /health`` answers: the model served and the limits in force."""
        meta, s = self.package.meta, self.settings
        return {"status": "ok", "thyro_version": __version__, "format_version": meta.get("format_version"),
                "arch": meta.get("arch"), "n_models": len(self.package.model_files),
                "image_size": self.package.image_size, "operating_point": self.scorer.point,
                "threshold": self.scorer.threshold, "max_upload_bytes": s.max_upload_bytes,
                "heatmap_method": s.method if self.heatmaps else None, "engine": s.engine, "heatmaps": self.heatmaps,
                "heatmap_note": None if self.heatmaps else HEATMAP_NEEDS_TORCH, "max_pixels": max_pixels(),
                "max_concurrency": s.max_concurrency, "queue": s.queue, "max_batch": s.max_batch,
                "labels": self.scorer.labels.to_dict(), "metrics": meta.get("metrics", {})}

    def preview(self, data: bytes, filename: str | None) -> dict:
        """The upload as read (gray, whole frame) as a PNG data URL, with its size."""
        name = filename or UNNAMED
        try:
            pixels = self._decoding(data, name, lambda: np.asarray(load_image(data, name=name,
                                                                              us_region=False).pixels))
        except INPUT_ERRORS as exc:
            raise UploadError(f"{name}: not a readable image ({_message(exc, name)}).") from None
        return {"width": int(pixels.shape[1]), "height": int(pixels.shape[0]), "image_png": png_data_url(pixels)}

    def predict(self, data: bytes, filename: str | None, roi: dict | None, heatmap: bool = True,
                preprocessed: bool = False) -> dict:
        """Score one upload.

        Besides the probability and class, the answer says whether a drawn box was used (``roi_used``; a
        model trained on whole images ignores it, and ``note`` says so), where the crop lies in the image
        (``crop_box``), and, with ``heatmap``, the heatmap on the model's input (``heatmap_png``) and on
        the original image inside the crop box with a colour bar (``heatmap_original_png``); with
        ``preprocessed``, the model's input itself (``preprocessed_png``).  The ONNX engine has no
        heatmaps: the answer has the probability and a warning saying so.
        """
        name = filename or UNNAMED
        want_cam = heatmap and self.heatmaps
        prepared = self._decoding(data, name, lambda: self.scorer.prepare(data, name=name, roi=roi,
                                                                         full_frame=want_cam))
        if isinstance(prepared, Failure):
            raise UploadError(prepared.error)
        warning = prepared.warning
        if want_cam:
            prob, cam = self.batcher(prepared.image, heatmap=True)
        else:
            prob, cam = self.batcher(prepared.image), None
            if heatmap:
                warning = "; ".join(w for w in (warning, HEATMAP_NEEDS_TORCH) if w)
        return self._prediction(filename, prob, roi, prepared, cam, warning, preprocessed)

    def _decoding(self, data: bytes, name: str, work: Callable[[], T]) -> T:
        """``work()`` holding the upload's pixels (from its header) from the budget."""
        info = self.scorer.info(data, name=name)
        with self.budget.hold(info.size[0] * info.size[1] if info is not None else None):
            return work()

    def _prediction(self, filename: str | None, prob: float, roi: dict | None, prepared: Prepared,
                    cam: np.ndarray | None, warning: str, preprocessed: bool) -> dict:
        cls, prediction = self.scorer.classify(prob)
        roi_crop = bool(self.scorer.preprocessor.cfg.roi_crop)
        img, geometry = prepared.image, prepared.geometry
        return {
            "filename": filename, "probability": prob, "class": cls, "prediction": prediction,
            "positive": bool(cls), "operating_point": self.scorer.point, "threshold": self.scorer.threshold,
            "roi": roi_to_json(roi) or None, "warning": warning or None,
            "preprocessed_png": png_data_url(img) if preprocessed else None,
            **heatmap_pictures(prepared, cam, self.settings.method),
            "roi_used": roi is not None and roi_crop,
            "note": BOX_NOT_USED if roi is not None and not roi_crop else None,
            "crop_box": list(geometry.to_frame(geometry.crop_box)), "image_size": list(geometry.frame_size),
        }


def heatmap_pictures(prepared: Prepared, cam: np.ndarray | None, method: str) -> dict:
    """The answer's heatmap fields: the heatmap on the model's input, and on the original image inside the
    crop box with a colour bar (None each without a heatmap)."""
    if cam is None:
        return {"heatmap_png": None, "heatmap_method": None, "heatmap_original_png": None}
    from thyro.use.explain.figures import on_original, overlay_input, with_colour_bar  # lazy: loads torch (ONNX: never)
    return {"heatmap_png": png_data_url(overlay_input(prepared.image, cam, prepared.geometry)),
            "heatmap_method": method,
            "heatmap_original_png": png_data_url(with_colour_bar(on_original(prepared.frame, prepared.geometry,
                                                                             cam)))}


def _message(exc: BaseException, name: str) -> str:
    """The error's text on one line, starting with the upload's name."""
    text = error_text(exc)
    return text if text.startswith(name) else f"{name}: {text}"


def _png_params() -> list[int]:
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    return params


def png_data_url(arr: np.ndarray) -> str:
    """A gray or RGB uint8 image as a PNG data URL, encoded for speed.

    Lossless PNG, with OpenCV's encoder: zlib level 1, run-length strategy and the Sub filter take 8 ms
    of CPU for a 450 px heatmap overlay with its colour bar where Pillow's defaults (level 6, a filter
    tried per row) take 60 ms, for a file 5 % larger; a response carries up to four of these images.
    """
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    ok, data = cv2.imencode(".png", arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), _png_params())
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ThyroError("could not encode an image as PNG")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")
