"""The web app: FastAPI routes over a :class:`~thyro.use.serve.service.Service`.

A request passes, outermost first: the token check (Starlette's ``AuthenticationMiddleware`` with
:class:`~thyro.use.serve.access.TokenCheck`, when the server has a token), the body reader
(:class:`~thyro.use.serve.guard.BodyReader`: the whole body, within its size and time limits, before
anything else), then the route, whose dependencies parse the form in memory (:func:`read_form`), take a
model slot (:func:`model_slot`, 503 when the queue is full) and hand the service to the endpoint.  An
upload the service cannot read is a 400 naming it; anything else that fails is a 500 whose detail
carries an id, logged with the traceback (:func:`answer`).

A new endpoint is a function on :data:`router` (its summary, description and answers in
:mod:`thyro.use.serve.schema`, its work a method of the service); what it needs comes from dependencies.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.authentication import AuthenticationMiddleware

from thyro import __version__
from thyro.data.manifest import parse_roi
from thyro.errors import ThyroError
from thyro.use.package import ModelPackage, load_package
from thyro.use.serve.access import TokenCheck, unauthorized
from thyro.use.serve.forms import FormError, UploadedFile, parse_form
from thyro.use.serve.guard import Admission, BodyReader, Busy
from thyro.use.serve.schema import PredictForm, PreviewForm, endpoint
from thyro.use.serve.service import Service, UploadError
from thyro.use.serve.settings import ServeSettings, resolve

log = logging.getLogger(__name__)

#: The web page: plain HTML + JS, no CDN (works offline).
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
DESCRIPTION = ("Research use only; not for diagnosis. One model package: POST an image to /predict for the "
               "probability that label 1 applies (see /health for what it means) and the class at the package's "
               "operating point.")

router = APIRouter()
FormModel = TypeVar("FormModel", bound=BaseModel)


def create_app(model_dir: str | os.PathLike | ModelPackage, settings: ServeSettings | None = None,
               **options: Any) -> FastAPI:
    """The application for a model package (its models are loaded once, here).

    Parameters
    ----------
    model_dir : path or ModelPackage
    settings : ServeSettings, optional
        The server's settings; or give them as keyword ``options`` (``max_upload_bytes=...``, ``token=...``,
        any field of :class:`ServeSettings`), validated once here.

    Returns
    -------
    fastapi.FastAPI
        The service is at ``app.state.service``, the settings at ``app.state.settings``.
    """
    settings = resolve(settings, options)
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    app = FastAPI(title="thyro: thyroid nodule malignancy", version=__version__, description=DESCRIPTION,
                  lifespan=_lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if settings.openapi else None)
    app.state.settings = settings
    app.state.service = Service(package, settings)
    app.state.admission = Admission(settings.max_concurrency, settings.queue)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyReader, max_body_bytes=settings.max_body_bytes, upload_limit=settings.max_upload_bytes,
                       max_reading=settings.max_reading, gap_timeout_s=settings.body_timeout_s,
                       deadline_s=settings.body_deadline_s)
    if settings.token is not None:  # added last: outermost, so a request without the token is refused unread
        app.add_middleware(AuthenticationMiddleware, backend=TokenCheck(settings.token_value), on_error=unauthorized)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.service.close()


# ------------------------------------------------------------------------------------------------------
# dependencies

def get_service(request: Request) -> Service:
    return request.app.state.service


async def model_slot(request: Request) -> AsyncIterator[None]:
    """Hold a model slot for the endpoint (function scope: released when it returns, not after the answer
    has been sent); 503 with ``Retry-After`` when every slot and the queue are taken."""
    try:
        async with request.app.state.admission.slot():
            yield
    except Busy as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None


async def read_form(request: Request, model: type[FormModel]) -> FormModel:
    """The request's form, parsed in memory from its body (already read whole) and validated by ``model``:
    400 for a malformed body, 422 (FastAPI's validation answer) for a missing or mistyped field."""
    try:
        # off the event loop: a 20 MB body takes tens of milliseconds to split
        fields = await run_in_threadpool(parse_form, await request.body(), request.headers.get("content-type"))
    except FormError as exc:
        raise HTTPException(400, f"{exc}.") from None
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError([_body_error(e) for e in exc.errors(include_url=False)]) from None


def _body_error(error: dict) -> dict:
    """A validation error of a form field as FastAPI reports one (``loc`` from ``body``); a file is not JSON:
    it is named instead."""
    given = error.get("input")
    if isinstance(given, dict):
        given = {k: _named(v) for k, v in given.items()}
    return {**error, "input": _named(given), "loc": ("body", *error["loc"])}


def _named(value: Any) -> Any:
    return f"a file ({value.filename})" if isinstance(value, UploadedFile) else value


async def preview_form(request: Request) -> PreviewForm:
    return await read_form(request, PreviewForm)


async def predict_form(request: Request) -> PredictForm:
    return await read_form(request, PredictForm)


def roi_of(form: Annotated[PredictForm, Depends(predict_form)]) -> dict | None:
    """The form's ROI, parsed with its size and depth limits (400 when it is not valid)."""
    try:
        return parse_roi(form.roi, where="roi") if form.roi else None
    except ThyroError as exc:
        raise HTTPException(400, str(exc)) from None


def answer(work: Callable[..., dict], *args: Any, **kwargs: Any) -> dict:
    """``work(...)``: an :class:`UploadError` becomes 400 with its message; any other exception a 500 whose
    detail carries an id, logged here with the traceback."""
    try:
        return work(*args, **kwargs)
    except UploadError as exc:
        raise HTTPException(400, str(exc)) from None
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("internal error %s while answering a request", error_id)
        raise HTTPException(500, f"internal error {error_id}: the server could not answer this request; its log "
                                 "has the details under this id.") from None


# ------------------------------------------------------------------------------------------------------
# endpoints

ServiceDep = Annotated[Service, Depends(get_service)]
ModelSlot = Annotated[None, Depends(model_slot, scope="function")]


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/health", **endpoint("health"))
def health(service: ServiceDep) -> dict:
    return service.health()


@router.post("/preview", **endpoint("preview"))
def preview(form: Annotated[PreviewForm, Depends(preview_form)], service: ServiceDep, _slot: ModelSlot) -> dict:
    return answer(service.preview, form.file.data, form.file.filename)


@router.post("/predict", **endpoint("predict"))
def predict(form: Annotated[PredictForm, Depends(predict_form)], roi: Annotated[dict | None, Depends(roi_of)],
            service: ServiceDep, _slot: ModelSlot) -> dict:
    return answer(service.predict, form.file.data, form.file.filename, roi, heatmap=form.heatmap,
                  preprocessed=form.preprocessed)
