"""Running the app: uvicorn configured for it (:func:`uvicorn_config`), and :func:`serve`.

uvicorn's own settings carry what they can: ``limit_concurrency`` (connections and requests held at
once), ``timeout_keep_alive`` (idle time between requests), ``h11_max_incomplete_event_size`` (the
largest request head); the head timeout is :class:`~thyro.use.serve.guard.HeadTimeout` around uvicorn's
h11 protocol.  :func:`tune_serving_process` is the one place a server changes its process (memory
arenas, OpenMP's idle threads), called by :func:`serve` before anything is loaded.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from thyro.use.serve.app import create_app
from thyro.use.serve.guard import HeadTimeout
from thyro.use.serve.settings import ServeSettings, resolve

log = logging.getLogger(__name__)

#: Largest request head accepted (h11's limit on an incomplete event); larger gets 400.
MAX_HEADER_BYTES = 16 * 1024
#: Seconds an idle connection is kept open between requests.
KEEP_ALIVE_S = 5


def uvicorn_config(app: FastAPI, settings: ServeSettings | None = None) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` (``settings`` default: the app's own): HTTP/1.1 with the head
    timeout, request heads of at most :data:`MAX_HEADER_BYTES`, keep-alive :data:`KEEP_ALIVE_S` s,
    ``max_connections`` as uvicorn's ``limit_concurrency``, no websockets."""
    s = settings or app.state.settings
    return uvicorn.Config(app, host=s.host, port=s.port, log_level=s.log_level, ws="none", lifespan="on",
                          http=HeadTimeout.factory(H11Protocol, s.header_timeout_s),
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=KEEP_ALIVE_S,
                          limit_concurrency=s.max_connections)


def serve(model_dir: str | os.PathLike, settings: ServeSettings | None = None, **options: Any) -> None:
    """Run the app with uvicorn until interrupted.

    ``settings`` (or keyword ``options``, any field of :class:`ServeSettings`) are validated before
    anything else happens: a server that may not start (bound beyond this machine without a token, say)
    is refused before it loads a model or binds a port.  The process is then tuned for serving
    (:func:`tune_serving_process`), and the model gets half the usable cores unless ``model_threads``
    says otherwise (:func:`server_threads`).
    """
    settings = resolve(settings, options)
    tune_serving_process()
    if settings.model_threads is None:
        settings = settings.replace(model_threads=server_threads())
    uvicorn.Server(uvicorn_config(create_app(model_dir, settings))).run()


def server_threads() -> int:
    """The model's threads in a server: half the usable cores, at least one.

    Requests are decoded and preprocessed on their own threads while the model scores the batch before
    them; a model that takes every core leaves that work to wait, and its threads to contend with it.  On
    two cores one model thread took 15 % less CPU per image than two (BENCHMARKS.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def tune_serving_process() -> None:
    """Tune this process for serving, before the request threads start and before torch loads.

    * glibc's malloc arenas (``MALLOC_ARENA_MAX``) are limited to two: glibc gives each thread that
      allocates an arena of its own, up to 8 per CPU, and memory freed in one is not reused by another,
      so a server whose requests run on a pool of threads grows well past what any request needs; two
      arenas kept the peak about 100 MB lower under load.  Skipped where ``MALLOC_ARENA_MAX`` is already
      set or glibc's ``mallopt`` does not exist.
    * PyTorch's idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``): the model
      shares the cores with the threads that decode and preprocess images, and spinning threads take
      them (on two busy cores a 64 px Grad-CAM pass took 740 ms of CPU spinning, 60 ms sleeping;
      BENCHMARKS.md).  ONNX Runtime's threads are told the same (``thyro.use.engines.OnnxEngine``).
      Skipped where the variable is set or torch is already loaded.

    Called by :func:`serve` (and so by ``thyro serve``) only: importing thyro changes nothing.
    """
    if not os.environ.get("MALLOC_ARENA_MAX"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
        except (OSError, AttributeError):
            log.debug("no glibc mallopt: malloc arenas left as they are")
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
