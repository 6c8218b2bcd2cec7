"""What the web app does for a request, without HTTP: read an upload, score it, build the answer.

:class:`Service` holds the model (:class:`~thyro.use.serve.model.Model`), the pixel budget and the
micro-batcher, shared by every request; its methods take an upload's bytes and return plain
dictionaries.  A problem with the upload itself (unreadable, too small, over the pixel limit, empty)
raises :class:`UploadError`; anything else that goes wrong is the server's and propagates as it is.
"""

from __future__ import annotations

import base64
import threading

import cv2
import numpy as np

from thyro import __version__
from thyro.data.manifest import roi_to_json
from thyro.data.readers import max_pixels
from thyro.errors import ThyroError
from thyro.use.bundle import ModelPackage
from thyro.use.explain import on_original, overlay_input, with_colour_bar
from thyro.use.inputs import Prepared
from thyro.use.serve.batching import MicroBatcher, PixelBudget
from thyro.use.serve.model import Model, Upload
from thyro.use.serve.settings import ServeSettings

HEATMAP_NEEDS_TORCH = ("no heatmap: heatmaps need the PyTorch engine (this server runs ONNX; a server started "
                       "with the torch engine draws them)")
BOX_NOT_USED = ("The box was not used: this model was trained on whole images (no ROI crop), so it always reads "
                "the whole scan area.")


class UploadError(ThyroError):
    """The upload cannot be answered (unreadable, empty, too small, over the pixel limit); the message
    names the client's file."""


class Service:
    """The model and its preprocessing, shared by the requests.

    The engine runs in one thread through a :class:`~thyro.use.serve.batching.MicroBatcher`, which
    draws the heatmaps of a batch in one pass too (Grad-CAM, PyTorch engine only).  Decoding holds
    pixels from a :class:`~thyro.use.serve.batching.PixelBudget` the size of the pixel limit.  Uploads
    are read from the bytes received: nothing is written to disk.

    Parameters
    ----------
    package : ModelPackage
    settings : ServeSettings
        Already validated; read, never checked again.
    """

    def __init__(self, package: ModelPackage, settings: ServeSettings):
        self.package = package
        self.settings = settings
        self.model = Model(package, settings)
        self.point, self.threshold = package.operating_point(settings.point)
        self.labels = package.label_meaning
        self.lock = threading.Lock()  # Grad-CAM hooks the models: a heatmap never overlaps a batch
        self.batcher = MicroBatcher(self.model.score, max_batch=settings.max_batch,
                                    wait_s=settings.batch_wait_ms / 1000.0, lock=self.lock,
                                    heatmap_engine=self.model.heatmaps if self.model.has_heatmaps else None)
        self.budget = PixelBudget(max_pixels())

    @property
    def heatmaps(self) -> bool:
        return self.model.has_heatmaps

    def close(self) -> None:
        self.batcher.close()

    def health(self) -> dict:
        """What ``GET /health`` answers: the model served and the limits in force."""
        meta, s = self.package.meta, self.settings
        return {"status": "ok", "thyro_version": __version__, "format_version": meta.get("format_version"),
                "arch": meta.get("arch"), "n_models": len(self.package.model_files),
                "image_size": self.package.image_size, "operating_point": self.point, "threshold": self.threshold,
                "max_upload_bytes": s.max_upload_bytes, "heatmap_method": s.method if self.heatmaps else None,
                "engine": s.engine, "heatmaps": self.heatmaps,
                "heatmap_note": None if self.heatmaps else HEATMAP_NEEDS_TORCH, "max_pixels": max_pixels(),
                "max_concurrency": s.max_concurrency, "queue": s.queue, "max_batch": s.max_batch,
                "labels": self.labels.to_dict(), "metrics": meta.get("metrics", {})}

    def preview(self, data: bytes, filename: str | None) -> dict:
        """The upload as read (gray, whole frame) as a PNG data URL, with its size."""
        upload = _upload(data, filename)
        try:
            pixels = self._decoding(upload, lambda: self.model.read(upload))
        except ThyroError as exc:
            raise UploadError(f"{upload.name}: not a readable image ({_message(exc, upload.name)}).") from None
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
        upload = _upload(data, filename)
        want_cam = heatmap and self.heatmaps
        try:
            prepared = self._decoding(upload, lambda: self.model.prepare(upload, roi, frame=want_cam))
        except ThyroError as exc:
            raise UploadError(_message(exc, upload.name)) from None
        warning = prepared.warning
        if want_cam:
            prob, cam = self.batcher(prepared.image, heatmap=True)
        else:
            prob, cam = self.batcher(prepared.image), None
            if heatmap:
                warning = "; ".join(w for w in (warning, HEATMAP_NEEDS_TORCH) if w)
        return self._prediction(filename, prob, roi, prepared, cam, warning, preprocessed)

    def _decoding(self, upload: Upload, work):
        """``work()`` holding the upload's pixels (from its header) from the budget."""
        with self.budget.hold(self.model.pixels(upload)):
            return work()

    def _prediction(self, filename: str | None, prob: float, roi: dict | None, prepared: Prepared,
                    cam: np.ndarray | None, warning: str, preprocessed: bool) -> dict:
        cls = int(prob >= self.threshold)
        roi_crop = bool(self.model.pre.cfg.roi_crop)
        img, geometry = prepared.image, prepared.geometry
        return {
            "filename": filename, "probability": prob, "class": cls,
            "prediction": self.labels.positive if cls else self.labels.negative, "positive": bool(cls),
            "operating_point": self.point, "threshold": self.threshold,
            "roi": roi_to_json(roi) or None, "warning": warning or None,
            "preprocessed_png": png_data_url(img) if preprocessed else None,
            "heatmap_png": png_data_url(overlay_input(img, cam, geometry)) if cam is not None else None,
            "heatmap_method": self.settings.method if cam is not None else None,
            "roi_used": roi is not None and roi_crop,
            "note": BOX_NOT_USED if roi is not None and not roi_crop else None,
            "crop_box": list(geometry.to_frame(geometry.crop_box)), "image_size": list(geometry.frame_size),
            "heatmap_original_png": (png_data_url(with_colour_bar(on_original(prepared.frame, geometry, cam)))
                                     if cam is not None else None),
        }


def _upload(data: bytes, filename: str | None) -> Upload:
    upload = Upload.of_bytes(data, filename)
    if not len(data):
        raise UploadError(f"{upload.name}: empty file")
    return upload


def _message(exc: BaseException, name: str) -> str:
    """The error's text on one line, starting with the upload's name."""
    text = " ".join((str(exc).strip() or type(exc).__name__).split())
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
