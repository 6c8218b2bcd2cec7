"""A small local web app around a model package.

- ``GET /``: one page (plain HTML + JS from ``thyro/use/static``, no CDN, works offline) where a person
  drops or selects an ultrasound image, optionally draws a box around the nodule, and sees the
  probability, the class at the operating point and the Grad-CAM heatmap;
- ``POST /predict``: multipart ``file`` (PNG, JPEG, BMP, TIFF, DICOM) and optional ``roi`` (JSON, in
  image pixels) and ``heatmap`` (true/false); answers JSON;
- ``POST /preview``: the image as read (grayscale PNG) and its size, so the page can show DICOM too;
- ``GET /health``: status and what model is loaded.

Uploads larger than ``max_upload_bytes`` get 413; a file that cannot be read gets 400 with a message,
and the app stays up.  An upload is written only into a fresh temporary folder that is removed when
the request ends.  Bound to 127.0.0.1 by default: the app has no authentication.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and the endpoints' types (UploadFile, Form) are imported inside create_app (fastapi is optional).
import base64
import io
import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np

from thyro.errors import ThyroError
from thyro.use.bundle import ModelPackage, load_package

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
_SUFFIX_OK = re.compile(r"^\.(png|jpe?g|bmp|tiff?|dcm|dicom)$", re.IGNORECASE)


class UploadError(Exception):
    """A problem with the uploaded file (answered with a 4xx status)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _png_data_url(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _suffix_for(filename: str | None, head: bytes) -> str:
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ".dcm"
    suffix = Path(filename or "").suffix
    return suffix.lower() if _SUFFIX_OK.match(suffix) else ".img"


class Service:
    """The model and its preprocessing, shared by the requests (one model call at a time)."""

    def __init__(self, package: ModelPackage, method: str = "gradcam", point: str | None = None):
        from thyro.use.predict import TorchEngine

        self.package = package
        self.models = package.load_torch_models()
        self.engine = TorchEngine(self.models, tta_flip=package.tta_flip)
        self.pre = package.preprocessor()
        self.method = method
        self.point, self.threshold = package.operating_point(point)
        self.lock = threading.Lock()  # Grad-CAM hooks the models: no two requests at once

    def _with_upload(self, data: bytes, filename: str | None, fn):
        with tempfile.TemporaryDirectory(prefix="thyro-serve-") as tmp:
            path = Path(tmp) / ("upload" + _suffix_for(filename, data[:132]))
            path.write_bytes(data)
            return fn(path)

    def preview(self, data: bytes, filename: str | None) -> dict:
        from thyro.data.readers import load_image

        def run(path: Path) -> dict:
            try:
                loaded = load_image(path, us_region=False)
            except Exception as exc:
                raise UploadError(400, f"{filename or 'upload'}: not a readable image "
                                       f"({_message(exc, path, filename)}).") from None
            pixels = np.asarray(loaded.pixels)
            return {"width": int(pixels.shape[1]), "height": int(pixels.shape[0]), "image_png": _png_data_url(pixels)}

        return self._with_upload(data, filename, run)

    def predict(self, data: bytes, filename: str | None, roi: dict | None, heatmap: bool = True) -> dict:
        """Score one upload.

        Besides the probability and class, the answer says whether a drawn box was used
        (``roi_used``; a model trained on whole images ignores it, and ``note`` says so), where the
        crop lies in the image (``crop_box``), and, with ``heatmap``, the heatmap on the model's
        input (``heatmap_png``) and on the original image inside the crop box with a colour bar
        (``heatmap_original_png``).
        """
        from thyro.data.manifest import roi_to_json
        from thyro.use.explain import heatmaps, on_original, overlay, with_colour_bar
        from thyro.use.predict import InputItem, prepare_item

        roi_crop = bool(self.pre.cfg.roi_crop)

        def run(path: Path) -> dict:
            try:
                prepared = prepare_item(self.pre, InputItem(path, filename or "upload", roi), self.package.image_size,
                                        frame=heatmap)
            except Exception as exc:
                raise UploadError(400, _message(exc, path, filename)) from None
            img, warning, geometry = prepared.image, prepared.warning, prepared.geometry
            with self.lock:
                prob = float(self.engine(img[None])[0])
                cam = heatmaps(self.models, img[None], self.method)[0] if heatmap else None
            cls = int(prob >= self.threshold)
            roi_used = roi is not None and roi_crop
            note = None
            if roi is not None and not roi_crop:
                note = ("The box was not used: this model was trained on whole images (no ROI crop), "
                        "so it always reads the whole scan area.")
            return {
                "filename": filename, "probability": prob, "class": cls,
                "prediction": "malignant" if cls else "benign",
                "operating_point": self.point, "threshold": self.threshold,
                "roi": roi_to_json(roi) or None, "warning": warning or None,
                "preprocessed_png": _png_data_url(img),
                "heatmap_png": _png_data_url(overlay(img, cam)) if cam is not None else None,
                "heatmap_method": self.method if heatmap else None,
                "roi_used": roi_used, "note": note,
                "crop_box": list(geometry.to_frame(geometry.crop_box)), "image_size": list(geometry.frame_size),
                "heatmap_original_png": (_png_data_url(with_colour_bar(on_original(prepared.frame, geometry, cam)))
                                         if cam is not None else None),
            }

        return self._with_upload(data, filename, run)


def _message(exc: BaseException, path: Path | None = None, filename: str | None = None) -> str:
    """The error's text on one line, naming the uploaded file rather than its temporary copy."""
    text = " ".join((str(exc).strip() or type(exc).__name__).split())
    name = filename or "upload"
    if path is not None:
        text = text.replace(str(path), name)
    return text if text.startswith(name) else f"{name}: {text}"


def create_app(model_dir: str | os.PathLike | ModelPackage, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               method: str = "gradcam", point: str | None = None):
    """The FastAPI application for a model package (models are loaded once, here)."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    from thyro import __version__
    from thyro.data.manifest import parse_roi

    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    service = Service(package, method=method, point=point)
    app = FastAPI(title="thyro: thyroid nodule malignancy", version=__version__,
                  description="Research use only; not for diagnosis.")
    app.state.service = service
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def limit_upload_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length is not None:
            try:
                too_big = int(length) > max_upload_bytes + 64 * 1024  # multipart framing allowance
            except ValueError:
                return JSONResponse({"detail": "bad Content-Length header"}, status_code=400)
            if too_big:
                return JSONResponse({"detail": f"upload too large: {int(length)} bytes; "
                                               f"the limit is {max_upload_bytes} bytes"}, status_code=413)
        return await call_next(request)

    def read_upload(file: UploadFile) -> bytes:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise UploadError(413, f"upload too large: over the limit of {max_upload_bytes} bytes")
        if not data:
            raise UploadError(400, f"{file.filename or 'upload'}: empty file")
        return data

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "thyro_version": __version__, "format_version": package.meta.get("format_version"),
                "arch": package.meta.get("arch"), "n_models": len(service.models), "image_size": package.image_size,
                "operating_point": service.point, "threshold": service.threshold,
                "max_upload_bytes": max_upload_bytes, "heatmap_method": method}

    @app.post("/preview")
    def preview(file: UploadFile = File(...)) -> dict:
        return service.preview(read_upload(file), file.filename)

    @app.post("/predict")
    def predict(file: UploadFile = File(...), roi: str | None = Form(None), heatmap: bool = Form(True)) -> dict:
        data = read_upload(file)
        try:
            parsed = parse_roi(roi, where="roi") if roi else None
        except ThyroError as exc:
            raise UploadError(400, str(exc)) from None
        return service.predict(data, file.filename, parsed, heatmap=heatmap)

    return app


def serve(model_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, method: str = "gradcam") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    app = create_app(model_dir, max_upload_bytes=max_upload_bytes, method=method)
    uvicorn.run(app, host=host, port=port, log_level="info")
