"""``thyro serve``: a small local web app around a model package.

- ``GET /``: one page (plain HTML + JS from ``thyro/use/static``, no CDN, works offline) where a person
  drops or selects an ultrasound image, optionally draws a box around the nodule, and sees the
  probability, the class at the operating point and the Grad-CAM heatmap;
- ``POST /predict``: multipart ``file`` (PNG, JPEG, BMP, TIFF, DICOM) and optional ``roi`` (JSON, in
  image pixels), ``heatmap`` (true/false) and ``preprocessed`` (true: the model's input as a PNG too);
  answers JSON;
- ``POST /preview``: the image as read (grayscale PNG) and its size, so the page can show DICOM too;
- ``GET /health``: status, what model is loaded and the limits in force.

    from thyro.use.serve import create_app, serve
    serve("model/", port=8080, engine="onnx")            # what `thyro serve model/ --port 8080 ...` runs
    app = create_app("model/", max_upload_bytes=5_000_000)  # the FastAPI app, e.g. for a test client

The package, one module per concern:

- :mod:`~thyro.use.serve.settings`: :class:`ServeSettings`, every option, validated once;
- :mod:`~thyro.use.serve.service`: :class:`Service`, the work without HTTP (the server's one
  :class:`~thyro.use.scoring.Scorer`, reading an upload from memory, the pixel budget, micro-batched
  scoring, the answers), its shared resources in :mod:`~thyro.use.serve.batching`;
- :mod:`~thyro.use.serve.app`: the FastAPI routes and their dependencies; :mod:`~thyro.use.serve.schema`
  their documentation, :mod:`~thyro.use.serve.forms` the in-memory form parser,
  :mod:`~thyro.use.serve.access` the token check;
- :mod:`~thyro.use.serve.guard`: what the frameworks lack (the head timeout, the body reader with its
  deadline, the admission queue);
- :mod:`~thyro.use.serve.server`: uvicorn's configuration and :func:`serve`.

Hostile or heavy use
--------------------
- A connection must send its request head within ``header_timeout_s`` (10 s) of opening, and of its
  first byte after a response; a request's body must arrive whole within ``body_deadline_s`` (60 s), with
  no gap over ``body_timeout_s`` (30 s); else 408 and the connection is closed.
- The body is counted as it streams in, chunked or not: past ``max_upload_bytes`` (plus a small
  allowance for the multipart framing) the answer is 413 and the connection is closed, so no more than
  the limit is ever read.  At most ``max_reading`` bodies are read at once (503 with ``Retry-After``
  beyond), and a body is read whole before its request takes a model slot, so slow clients cannot starve
  the model.
- At most ``max_concurrency`` requests are at the model at once and ``queue`` more wait; beyond that a
  503 with ``Retry-After`` answers at once.
- Images are checked against the pixel limit from their header before decoding
  (:func:`thyro.data.readers.max_pixels`), and decoding holds pixels from a budget of that size, so a
  few large images are decoded one after another; ROI JSON goes through the one parser with its size and
  depth limits (:func:`thyro.data.manifest.parse_roi`).
- The model runs in one thread; requests that arrive together are scored in one batch of up to
  ``max_batch`` (the probabilities are those of one-at-a-time scoring), heatmaps too.
- No ``/docs``, ``/redoc`` (their pages load from a CDN) and, unless ``openapi=True``, no
  ``/openapi.json``.

A file that cannot be read gets 400 with the message ``thyro predict`` gives the same file (the Scorer's
failure, naming it); a failure of the server itself a 500 whose detail carries an id, logged with the
traceback; the app stays up.  Engines: ``torch`` (the fold models; heatmaps) or ``onnx`` (the exported
graph, ``thyro export``; lighter and faster on a CPU, no heatmaps: a heatmap request gets the probability
and a warning saying so).

Uploads are held in memory only, for their request: the body is read into memory, the form parsed from
it and the file read by the image readers from its bytes; nothing of an upload is written to disk,
logged or kept.

Who may ask
-----------
Bound to 127.0.0.1 by default.  Bound beyond this machine (``host="0.0.0.0"``, an address, a name), the
server needs a ``token`` (``--token`` or ``THYRO_SERVE_TOKEN`` on the command line) that every request
carries (``Authorization: Bearer TOKEN``; a browser asks for it as the password of HTTP Basic), unless
``insecure`` says on purpose that it should answer anyone.  A token must be printable ASCII, at least
16 characters.  There is no TLS: beyond a trusted network, put it behind a proxy that terminates HTTPS.
"""

from thyro.optional import require

# The serve extra: one message naming what to install, rather than an ImportError from a module below.
require("fastapi", "uvicorn", "python_multipart|multipart", purpose="thyro serve")

from thyro.use.serve.app import create_app  # noqa: E402
from thyro.use.serve.server import serve, server_threads, tune_serving_process, uvicorn_config  # noqa: E402
from thyro.use.serve.service import Service, UploadError  # noqa: E402
from thyro.use.serve.settings import ServeSettings, ServeSettingsError  # noqa: E402

__all__ = ["ServeSettings", "ServeSettingsError", "Service", "UploadError", "create_app", "serve",
           "server_threads", "tune_serving_process", "uvicorn_config"]
