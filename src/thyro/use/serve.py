"""A small local web app around a model package.

- ``GET /``: one page (plain HTML + JS from ``thyro/use/static``, no CDN, works offline) where a person
  drops or selects an ultrasound image, optionally draws a box around the nodule, and sees the
  probability, the class at the operating point and the Grad-CAM heatmap;
- ``POST /predict``: multipart ``file`` (PNG, JPEG, BMP, TIFF, DICOM) and optional ``roi`` (JSON, in
  image pixels) and ``heatmap`` (true/false); answers JSON;
- ``POST /preview``: the image as read (grayscale PNG) and its size, so the page can show DICOM too;
- ``GET /health``: status, what model is loaded and the limits in force.

Hostile or heavy use (see :mod:`thyro.use.serve_guard`):

- the request body is counted as it streams in, chunked or not: past ``max_upload_bytes`` (plus a
  small allowance for the multipart framing) the answer is 413 and the connection is closed, so no
  more than the limit is ever read, spooled or written;
- images are checked against the pixel limit from their header before decoding
  (:func:`thyro.data.readers.max_pixels`), and decoding holds pixels from a budget of that size, so a
  few large images are decoded one after another;
- ROI JSON goes through the one parser with its size and depth limits
  (:func:`thyro.data.manifest.parse_roi`);
- at most ``max_concurrency`` requests are worked on at once and ``queue`` more wait (their bodies
  unread); beyond that a 503 with ``Retry-After`` answers at once;
- the model runs in one thread; requests that arrive together are scored in one batch of up to
  ``max_batch`` (micro-batching; the probabilities are those of one-at-a-time scoring);
- no ``/docs``, ``/redoc`` (their pages load from a CDN) and, unless ``openapi=True``, no
  ``/openapi.json``.

A file that cannot be read gets 400 with a message, and the app stays up.  Engines: ``torch`` (the
fold models; heatmaps available, drawn for a whole micro-batch at once) or ``onnx`` (the exported
graph, ``thyro export``; lighter and faster on a CPU, no heatmaps: a heatmap request gets the
probability and a warning saying so).

Where uploads live, and for how long
------------------------------------
An upload is held in memory while the request body is parsed (up to the upload limit: nothing is
spooled to disk), then written to one file, readable by this server's user only, in the server's
private folder ``TMP/thyro-serve-HOST-PID-XXXXXXXX`` (``TMP`` is ``TMPDIR``, else ``/tmp``), for as long
as the request is decoded and scored; the file is removed when the request ends, answered or not,
and the folder when the server stops.  Nothing of an upload is logged or kept.  A server killed
mid-request (``kill -9``, a crash, a power cut) cannot remove its folder: the next ``thyro serve``
started with the same ``TMP`` removes the folders of servers that are no longer running (only names
this module makes; never a running server's) and says so in one line.

Who may ask
-----------
Bound to 127.0.0.1 by default.  Bound beyond this machine (``--host 0.0.0.0``, an address, a name),
the server needs a token (``--token`` or ``THYRO_SERVE_TOKEN``) that every request carries
(``Authorization: Bearer TOKEN``; a browser asks for it as the password of HTTP Basic), unless
``--insecure`` says on purpose that it should answer anyone.  A connection must send its request
head within ``header_timeout_s`` (10 s) and keep its body coming (``body_timeout_s``, 30 s between
parts), or it gets 408 and is closed.  There is no TLS: beyond a trusted network, put it behind a
proxy that terminates HTTPS.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and the endpoints' types (UploadFile, Form) are imported inside create_app (fastapi is optional).
import base64
import os
import re
import threading
from pathlib import Path

import numpy as np

from thyro.errors import ThyroError
from thyro.use.bundle import ModelPackage, load_package
from thyro.use.serve_guard import (DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, FRAMING_ALLOWANCE, MAX_HEADER_BYTES,
                                   MicroBatcher, PixelBudget, RequestGuard, UploadFolder, check_access, guarded_h11)

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
#: Requests worked on at once (decoding, preprocessing, waiting for the model) and waiting beyond them.
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_QUEUE = 16
#: Micro-batching: the most images per model call, and how long a batch waits for company.
DEFAULT_MAX_BATCH = 8
DEFAULT_BATCH_WAIT_MS = 5.0
ENGINES = ("torch", "onnx")
HEATMAP_NEEDS_TORCH = ("no heatmap: heatmaps need the PyTorch engine (this server runs ONNX; start it with "
                       "--engine torch)")
_SUFFIX_OK = re.compile(r"^\.(png|jpe?g|bmp|tiff?|dcm|dicom)$", re.IGNORECASE)


class UploadError(Exception):
    """A problem with the uploaded file (answered with a 4xx status)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _png_params() -> list[int]:
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    return params


def _png_data_url(arr: np.ndarray) -> str:
    """A gray or RGB uint8 image as a PNG data URL, encoded for speed.

    Lossless PNG, with OpenCV's encoder: zlib level 1, run-length strategy and the Sub filter take 8 ms
    of CPU for a 450 px heatmap overlay with its colour bar where Pillow's defaults (level 6, a filter
    tried per row) take 60 ms, for a file 5 % larger; a response carries three of these images.
    """
    import cv2

    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    ok, data = cv2.imencode(".png", arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), _png_params())
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ThyroError("could not encode an image as PNG")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _suffix_for(filename: str | None, head: bytes) -> str:
    from thyro.data.readers import has_dicom_marker

    if has_dicom_marker(head):
        return ".dcm"
    suffix = Path(filename or "").suffix
    return suffix.lower() if _SUFFIX_OK.match(suffix) else ".img"


class Service:
    """The model and its preprocessing, shared by the requests.

    The engine runs in one thread through a :class:`~thyro.use.serve_guard.MicroBatcher`, which
    draws the heatmaps of a batch in one pass too (Grad-CAM, PyTorch engine only).  Decoding holds
    pixels from a :class:`~thyro.use.serve_guard.PixelBudget` the size of the pixel limit.  Uploads
    live in an :class:`~thyro.use.serve_guard.UploadFolder` for as long as their request.
    """

    def __init__(self, package: ModelPackage, method: str = "gradcam", point: str | None = None, *,
                 engine: str = "torch", onnx_path: str | os.PathLike | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
                 model_threads: int | None = None):
        from thyro.data.readers import max_pixels
        from thyro.use.explain import METHODS
        from thyro.use.engines import make_engine

        if engine not in ENGINES:
            raise ThyroError(f"--engine {engine!r}: choose torch or onnx.")
        self.package = package
        self.engine_name = engine
        self.engine = make_engine(package, engine, onnx_path, spin=False, threads=model_threads)
        self.models = getattr(self.engine, "models", None)  # torch only: heatmaps
        self.pre = package.preprocessor()
        if method not in METHODS:
            raise ThyroError(f"--method {method!r}: choose one of {', '.join(METHODS)}.")
        self.method = method
        self.point, self.threshold = package.operating_point(point)
        self.labels = package.label_meaning
        self.lock = threading.Lock()  # Grad-CAM hooks the models: a heatmap never overlaps a batch
        self.batcher = MicroBatcher(self.engine, max_batch=max_batch, wait_s=batch_wait_ms / 1000.0, lock=self.lock,
                                    heatmap_engine=self._heatmaps if self.models is not None else None)
        self.budget = PixelBudget(max_pixels())
        self.uploads = UploadFolder()
        if self.uploads.swept:
            from thyro.console import note

            note(f"{self.uploads.base}: removed {len(self.uploads.swept)} upload folder(s) left by servers that "
                 f"were stopped mid-request ({', '.join(p.name for p in self.uploads.swept[:3])})")

    def _heatmaps(self, batch: np.ndarray) -> np.ndarray:
        from thyro.use.explain import heatmaps

        return heatmaps(self.models, batch, self.method)

    @property
    def heatmaps(self) -> bool:
        return self.models is not None

    def close(self) -> None:
        self.batcher.close()
        self.uploads.close()

    def _with_upload(self, data, filename: str | None, fn):
        """Run ``fn(path)`` on the upload (bytes or a binary file), as a file of its own in the server's
        upload folder that is removed when ``fn`` returns or raises."""
        if isinstance(data, (bytes, bytearray)):
            head = bytes(data[:132])
        else:
            head = data.read(132)
            data.seek(0)
        with self.uploads.file(data, _suffix_for(filename, head)) as path:
            return fn(path)

    def _decode(self, path: Path, fn):
        """``fn()`` holding the pixels of the image at ``path`` (from its header) from the budget."""
        from thyro.use.inputs import image_info

        info = image_info(path)
        with self.budget.hold(info.size[0] * info.size[1] if info is not None else None):
            return fn()

    def preview(self, data, filename: str | None) -> dict:
        from thyro.data.readers import load_image

        def run(path: Path) -> dict:
            def read():
                loaded = load_image(path, us_region=False)
                pixels = np.asarray(loaded.pixels)
                return {"width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
                        "image_png": _png_data_url(pixels)}
            try:
                return self._decode(path, read)
            except Exception as exc:
                raise UploadError(400, f"{filename or 'upload'}: not a readable image "
                                       f"({_message(exc, path, filename)}).") from None

        return self._with_upload(data, filename, run)

    def predict(self, data, filename: str | None, roi: dict | None, heatmap: bool = True) -> dict:
        """Score one upload.

        Besides the probability and class, the answer says whether a drawn box was used
        (``roi_used``; a model trained on whole images ignores it, and ``note`` says so), where the
        crop lies in the image (``crop_box``), and, with ``heatmap``, the heatmap on the model's
        input (``heatmap_png``) and on the original image inside the crop box with a colour bar
        (``heatmap_original_png``).  The ONNX engine has no heatmaps: the answer has the probability
        and a warning saying so.
        """
        from thyro.data.manifest import roi_to_json
        from thyro.use.inputs import InputItem, prepare_item

        roi_crop = bool(self.pre.cfg.roi_crop)
        want_cam = heatmap and self.heatmaps

        def run(path: Path) -> dict:
            try:
                prepared = self._decode(path, lambda: prepare_item(
                    self.pre, InputItem(path, filename or "upload", roi), self.package.image_size, frame=want_cam))
            except Exception as exc:
                raise UploadError(400, _message(exc, path, filename)) from None
            img, geometry = prepared.image, prepared.geometry
            warning = _named(prepared.warning, path, filename)
            cam = None
            if want_cam:
                prob, cam = self.batcher(img, heatmap=True)
            else:
                prob = self.batcher(img)
                if heatmap:
                    warning = "; ".join(w for w in (warning, HEATMAP_NEEDS_TORCH) if w)
            cls = int(prob >= self.threshold)
            roi_used = roi is not None and roi_crop
            note = None
            if roi is not None and not roi_crop:
                note = ("The box was not used: this model was trained on whole images (no ROI crop), "
                        "so it always reads the whole scan area.")
            return {
                "filename": filename, "probability": prob, "class": cls,
                "prediction": self.labels.positive if cls else self.labels.negative, "positive": bool(cls),
                "operating_point": self.point, "threshold": self.threshold,
                "roi": roi_to_json(roi) or None, "warning": warning or None,
                "preprocessed_png": _png_data_url(img),
                "heatmap_png": _png_data_url(_overlay(img, cam, geometry)) if cam is not None else None,
                "heatmap_method": self.method if cam is not None else None,
                "roi_used": roi_used, "note": note,
                "crop_box": list(geometry.to_frame(geometry.crop_box)), "image_size": list(geometry.frame_size),
                "heatmap_original_png": _original_heatmap(prepared.frame, geometry, cam) if cam is not None else None,
            }

        return self._with_upload(data, filename, run)


def _overlay(img: np.ndarray, cam: np.ndarray, geometry) -> np.ndarray:
    from thyro.use.explain import overlay_input

    return overlay_input(img, cam, geometry)  # heat inside the image only, not on the padding


def _original_heatmap(frame: np.ndarray, geometry, cam: np.ndarray) -> str:
    """The heatmap on the original image inside the crop box, with a colour bar, as a data URL."""
    from thyro.use.explain import on_original, with_colour_bar

    return _png_data_url(with_colour_bar(on_original(frame, geometry, cam)))


def _named(text: str, path: Path | None, filename: str | None) -> str:
    """``text`` with the upload's temporary path replaced by the name the client gave it."""
    return text.replace(str(path), filename or "upload") if text and path is not None else text


def _message(exc: BaseException, path: Path | None = None, filename: str | None = None) -> str:
    """The error's text on one line, naming the uploaded file rather than its temporary copy."""
    text = _named(" ".join((str(exc).strip() or type(exc).__name__).split()), path, filename)
    name = filename or "upload"
    return text if text.startswith(name) else f"{name}: {text}"


def create_app(model_dir: str | os.PathLike | ModelPackage, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               method: str = "gradcam", point: str | None = None, engine: str = "torch",
               onnx_path: str | os.PathLike | None = None, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
               queue: int = DEFAULT_QUEUE, max_batch: int = DEFAULT_MAX_BATCH,
               batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS, openapi: bool = False, token: str | None = None,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT, model_threads: int | None = None):
    """The application for a model package (models are loaded once, here), wrapped in its guard.

    Parameters
    ----------
    max_upload_bytes : int
        Largest upload; the request body may be :data:`~thyro.use.serve_guard.FRAMING_ALLOWANCE` more.
    engine : {"torch", "onnx"}
        ``onnx`` runs ``MODEL_DIR/model.onnx`` (or ``onnx_path``) from ``thyro export``; no heatmaps.
    max_concurrency, queue : int
        Requests worked on at once, and waiting; beyond both, 503 with ``Retry-After``.
    max_batch : int
        Most images per model call (1: no micro-batching).
    batch_wait_ms : float
        How long a batch waits for more requests once it has one.
    openapi : bool
        Serve the schema at ``/openapi.json`` (``/docs`` and ``/redoc`` never: they load from a CDN).
    token : str, optional
        Required of every request (``Authorization: Bearer TOKEN``, or HTTP Basic with it as the password).
    body_timeout_s : float
        Longest wait for the next part of a request body (then 408).
    model_threads : int, optional
        The model's intra-op threads (PyTorch: process-wide); default the library's (every core).

    Returns
    -------
    fastapi.FastAPI
        With a :class:`~thyro.use.serve_guard.RequestGuard` middleware; the service is at
        ``app.state.service``.
    """
    from contextlib import asynccontextmanager

    from thyro.optional import require

    require("fastapi", "python_multipart|multipart", purpose="thyro serve")
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    from thyro import __version__
    from thyro.data.manifest import parse_roi
    from thyro.data.readers import max_pixels
    from thyro.use.serve_api import FILE_FIELD, HEATMAP_FIELD, ROI_FIELD, endpoint

    for name, value, low in (("max_concurrency", max_concurrency, 1), ("queue", queue, 0), ("max_batch", max_batch, 1),
                             ("max_upload_bytes", max_upload_bytes, 1)):
        if int(value) < low:
            raise ThyroError(f"--{name.replace('_', '-')} {value}: must be at least {low}.")
    if batch_wait_ms < 0:
        raise ThyroError(f"--batch-wait-ms {batch_wait_ms}: must be at least 0.")
    if not body_timeout_s > 0:
        raise ThyroError(f"--body-timeout {body_timeout_s}: must be more than 0 seconds.")
    token = check_access("127.0.0.1", token, insecure=False)  # a short token is refused here too
    _uploads_in_memory(max_upload_bytes + FRAMING_ALLOWANCE)
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    service = Service(package, method=method, point=point, engine=engine, onnx_path=onnx_path,
                      max_batch=max_batch, batch_wait_ms=batch_wait_ms, model_threads=model_threads)

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="thyro: thyroid nodule malignancy", version=__version__,
                  description="Research use only; not for diagnosis. One model package: POST an image to /predict "
                              "for the probability that label 1 applies (see /health for what it means) and the "
                              "class at the package's operating point.", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json" if openapi else None)
    app.state.service = service
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def read_upload(file: UploadFile):
        """The upload as a binary file (already spooled by the parser, within the body limit)."""
        fh = file.file
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(0)
        if size > max_upload_bytes:
            raise UploadError(413, f"upload too large: {size} bytes; the limit is {max_upload_bytes} bytes")
        if not size:
            raise UploadError(400, f"{file.filename or 'upload'}: empty file")
        return fh

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", **endpoint("health"))
    def health() -> dict:
        return {"status": "ok", "thyro_version": __version__, "format_version": package.meta.get("format_version"),
                "arch": package.meta.get("arch"), "n_models": len(package.model_files),
                "image_size": package.image_size, "operating_point": service.point, "threshold": service.threshold,
                "max_upload_bytes": max_upload_bytes, "heatmap_method": method if service.heatmaps else None,
                "engine": service.engine_name, "heatmaps": service.heatmaps,
                "heatmap_note": None if service.heatmaps else HEATMAP_NEEDS_TORCH,
                "max_pixels": max_pixels(), "max_concurrency": max_concurrency, "queue": queue,
                "max_batch": max_batch, "labels": service.labels.to_dict(), "metrics": package.meta.get("metrics", {})}

    @app.post("/preview", **endpoint("preview"))
    def preview(file: UploadFile = File(..., **FILE_FIELD)) -> dict:
        return service.preview(read_upload(file), file.filename)

    @app.post("/predict", **endpoint("predict"))
    def predict(file: UploadFile = File(..., **FILE_FIELD), roi: str | None = Form(None, **ROI_FIELD),
                heatmap: bool = Form(True, **HEATMAP_FIELD)) -> dict:
        data = read_upload(file)
        try:
            parsed = parse_roi(roi, where="roi") if roi else None
        except ThyroError as exc:
            raise UploadError(400, str(exc)) from None
        return service.predict(data, file.filename, parsed, heatmap=heatmap)

    # Outermost but for Starlette's error handler: it sees every request before the body is parsed.
    app.add_middleware(RequestGuard, max_body_bytes=max_upload_bytes + FRAMING_ALLOWANCE, max_active=max_concurrency,
                       max_waiting=queue, token=token, body_timeout_s=body_timeout_s)
    return app


def _uploads_in_memory(limit: int) -> None:
    """Let Starlette's multipart parser hold an upload of up to ``limit`` bytes in memory.

    It spools each file part into a ``SpooledTemporaryFile`` that moves to disk past 1 MB by default;
    the body limit (:class:`~thyro.use.serve_guard.RequestGuard`) already bounds what a request can
    hold, so raising the spool to it keeps uploads off the disk until :class:`UploadFolder` writes
    them, for their request only.  Process-wide (a class attribute), and only ever raised.
    """
    from starlette.formparsers import MultiPartParser

    if getattr(MultiPartParser, "spool_max_size", 0) < limit:
        MultiPartParser.spool_max_size = int(limit)


def uvicorn_config(app, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info",
           header_timeout_s: float = DEFAULT_HEADER_TIMEOUT):
    """uvicorn's configuration for the app: the guarded HTTP/1.1 protocol (request heads within
    ``header_timeout_s``, at most :data:`~thyro.use.serve_guard.MAX_HEADER_BYTES`), keep-alive 5 s."""
    import uvicorn

    if not header_timeout_s > 0:
        raise ThyroError(f"--header-timeout {header_timeout_s}: must be more than 0 seconds.")
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=guarded_h11(header_timeout_s),
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=5)


def serve(model_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, method: str = "gradcam", log_level: str = "info",
          token: str | None = None, insecure: bool = False, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT,
          **options) -> None:
    """Run the app with uvicorn until interrupted (``options`` as :func:`create_app`'s).

    Bound beyond this machine, a ``token`` is required unless ``insecure`` (module docstring).  The model
    gets half the usable cores (at least one) unless ``model_threads`` says otherwise: the other half
    decodes and preprocesses the next requests meanwhile (:func:`server_threads`).
    """
    from thyro.optional import require

    uvicorn = require("uvicorn", "fastapi", "python_multipart|multipart", purpose="thyro serve")

    token = check_access(host, token, insecure)
    _few_malloc_arenas()
    _threads_that_sleep()
    options.setdefault("model_threads", server_threads())
    app = create_app(model_dir, max_upload_bytes=max_upload_bytes, method=method, token=token, **options)
    uvicorn.Server(uvicorn_config(app, host, port, log_level=log_level, header_timeout_s=header_timeout_s)).run()


def server_threads() -> int:
    """The model's threads in a server: half the usable cores, at least one.

    Requests are decoded and preprocessed on their own threads while the model scores the batch before
    them; a model that takes every core leaves that work to wait, and its threads to contend with it.  On
    two cores one model thread took 15 % less CPU per image than two (BENCHMARKS.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def _threads_that_sleep() -> None:
    """Let PyTorch's idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``), before torch loads.

    A server's model shares the cores with the request threads that decode and preprocess images; OpenMP
    threads that spin while they wait for the next batch take those cores: on two busy cores a 64 px
    Grad-CAM pass took 740 ms of CPU spinning and 60 ms sleeping (BENCHMARKS.md).  The same as ONNX
    Runtime's ``allow_spinning=0`` (:class:`thyro.use.engines.OnnxEngine`).  A no-op when the variable is set
    or torch is already loaded.
    """
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _few_malloc_arenas(arenas: int = 2) -> None:
    """Limit glibc's malloc arenas (``MALLOC_ARENA_MAX``), before the request threads start.

    glibc gives each thread that allocates an arena of its own, up to 8 per CPU, and memory freed in
    one is not reused by another: a server whose requests run on a pool of threads grows well past
    what any request needs.  Two arenas kept the peak about 100 MB lower under load here.  A no-op
    where glibc's ``mallopt`` does not exist or ``MALLOC_ARENA_MAX`` is already set.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, int(arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
