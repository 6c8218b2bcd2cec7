"""What keeps ``thyro serve`` standing under hostile or heavy load, apart from the endpoints.

* :class:`RequestGuard`, a pure ASGI middleware: the access token (when the server has one), the
  request body limit enforced while the body streams in (with or without ``Content-Length``: chunked
  uploads are counted), a body read timeout (a client that stops sending its body gets ``408``), and
  admission control (a fixed number of requests worked on at once, a small queue, and beyond that an
  immediate ``503`` with ``Retry-After``).  A request waiting in the queue has not had its body read.
* :func:`guarded_h11`: uvicorn's HTTP/1.1 protocol with a header timeout: a connection that has not
  sent a complete request head within ``header_timeout_s`` of opening (or of its first byte after a
  response) gets ``408`` and is closed, so idle or trickling clients cannot hold the server's
  connections (uvicorn has a keep-alive timeout after a response, none before the first request).
* :class:`UploadFolder`: where uploads live while their request is worked on, and the sweep of what a
  killed server left.
* :class:`PixelBudget`: decoding and preprocessing hold pixels from a fixed budget (the pixel limit),
  so a few large images are decoded one after another instead of together.
* :class:`MicroBatcher`: one thread runs the model; requests that arrive while it is busy, or
  within a few milliseconds of each other, are scored together in one call, heatmaps included (one
  backward pass per batch).

Written as plain ASGI and threading rather than with a framework's middleware classes because the
body limit must sit below the multipart parser and the answer must replace whatever the application
makes of the interrupted read; the header timeout needs the socket, which only the protocol sees.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from thyro.errors import ThyroError

#: Allowance for the multipart framing and form fields around the file, on top of the upload limit.
FRAMING_ALLOWANCE = 64 * 1024
#: Seconds a connection may take to send a complete request head (request line and headers).
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds the server waits for the next part of a request body before answering 408.
DEFAULT_BODY_TIMEOUT = 30.0
#: Largest request head accepted (h11's limit on an incomplete event); larger gets 400.
MAX_HEADER_BYTES = 16 * 1024
#: The environment variable a token may come from instead of ``--token``.
TOKEN_ENV = "THYRO_SERVE_TOKEN"
#: Shortest token accepted: a guessable token is no protection.
MIN_TOKEN_CHARS = 16


class _BodyTooLarge(Exception):
    """Raised into the application when the request body passes the limit."""


class _BodyTimeout(Exception):
    """Raised into the application when the client stops sending the request body."""


def is_loopback(host: str) -> bool:
    """True when binding ``host`` is reachable from this machine only (127.0.0.0/8, ::1, ``localhost``)."""
    name = (host or "").strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_access(host: str, token: str | None, insecure: bool) -> str | None:
    """The token to require, after checking that binding ``host`` is allowed with it.

    A server reachable beyond this machine needs a token (``--token`` or ``THYRO_SERVE_TOKEN``) unless
    ``insecure`` says, on purpose, that it should answer anyone.  A token shorter than
    :data:`MIN_TOKEN_CHARS` is refused.

    Raises
    ------
    ThyroError
        Naming the host and the two ways on.
    """
    token = token or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ThyroError(f"the access token is {len(token)} characters long; use at least {MIN_TOKEN_CHARS} "
                         "(e.g. python -c \"import secrets; print(secrets.token_urlsafe(24))\").")
    if token is None and not is_loopback(host) and not insecure:
        raise ThyroError(
            f"--host {host} makes the server reachable from other machines, and it would answer anyone: "
            f"give it a token (--token or {TOKEN_ENV}=...; clients send 'Authorization: Bearer TOKEN', a browser "
            "asks for it as the password), or pass --insecure if an open server is what you want (a trusted "
            "network, a proxy in front that authenticates).")
    return token


def _authorized(scope, token: str) -> bool:
    """Whether the request carries ``token``: ``Authorization: Bearer TOKEN``, or HTTP Basic with the
    token as password (any user name: what a browser sends after asking)."""
    for name, value in scope.get("headers", ()):
        if name != b"authorization":
            continue
        kind, _, cred = value.decode("latin-1").strip().partition(" ")
        cred = cred.strip()
        if kind.lower() == "basic":
            try:
                cred = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        elif kind.lower() != "bearer":
            return False
        return hmac.compare_digest(cred.encode("utf-8"), token.encode("utf-8"))
    return False


async def send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete JSON response on an ASGI ``send``."""
    body = json.dumps(payload).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + list(headers or [])})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: body size limit while streaming, and bounded concurrency with a queue.

    Parameters
    ----------
    app : ASGI application
    max_body_bytes : int
        Largest request body read; more gets ``413`` and the connection is closed, so the rest is
        never read, spooled or written anywhere.
    max_active : int
        ``POST`` requests worked on at once.
    max_waiting : int
        ``POST`` requests allowed to wait for a slot; one more gets ``503`` with ``Retry-After``.
    retry_after_s : int
        The ``Retry-After`` value (seconds).
    token : str, optional
        Every request must carry it (``Authorization: Bearer TOKEN`` or HTTP Basic with it as the
        password); others get ``401`` before anything else happens.
    body_timeout_s : float
        Longest wait for the next part of a request body; then ``408`` and the connection is closed.
    """

    def __init__(self, app, *, max_body_bytes: int, max_active: int, max_waiting: int, retry_after_s: int = 1,
                 token: str | None = None, body_timeout_s: float = DEFAULT_BODY_TIMEOUT):
        if max_active < 1 or max_waiting < 0:
            raise ValueError("max_active must be >= 1 and max_waiting >= 0")
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.max_active = int(max_active)
        self.max_waiting = int(max_waiting)
        self.retry_after_s = int(retry_after_s)
        self.token = token or None
        self.body_timeout_s = float(body_timeout_s)
        self._slots: asyncio.Semaphore | None = None
        self._loop = None
        self.pending = 0  # admitted POST requests: active + waiting (one event loop: no lock needed)
        self.refused = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token is not None and not _authorized(scope, self.token):
            return await send_json(send, 401, {"detail": "this server needs its access token: send "
                                                         "'Authorization: Bearer TOKEN'"},
                                   headers=[(b"www-authenticate", b'Basic realm="thyro", charset="UTF-8"')])
        declared = _content_length(scope)
        if declared == -1:
            return await send_json(send, 400, {"detail": "bad Content-Length header"})
        if declared is not None and declared > self.max_body_bytes:
            return await self._too_large(send, declared)
        if scope["method"] != "POST":
            return await self._limited(scope, receive, send)
        if self.pending >= self.max_active + self.max_waiting:
            self.refused += 1
            return await send_json(send, 503, {
                "detail": f"the server is busy: {self.max_active} request(s) in progress and {self.max_waiting} "
                          f"waiting, the most it accepts; try again in {self.retry_after_s} s."},
                headers=[(b"retry-after", str(self.retry_after_s).encode())])
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # asyncio primitives belong to one event loop
            self._slots, self._loop = asyncio.Semaphore(self.max_active), loop
        self.pending += 1
        try:
            async with self._slots:
                await self._limited(scope, receive, send)
        finally:
            self.pending -= 1

    async def _too_large(self, send, size: int | None) -> None:
        what = f"{size} bytes" if size is not None else f"over {self.max_body_bytes} bytes"
        await send_json(send, 413, {"detail": f"upload too large: {what}; the limit is "
                                              f"{self.max_body_bytes - FRAMING_ALLOWANCE} bytes"},
                        headers=[(b"connection", b"close")])

    async def _limited(self, scope, receive, send) -> None:
        state = {"received": 0, "over": False, "started": False, "timeout": False, "complete": False}

        async def limited_receive():
            if state["complete"]:  # the body is in: later calls wait for a disconnect, for as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                state["timeout"] = True
                raise _BodyTimeout() from None
            state["complete"] = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    state["over"] = True
                    raise _BodyTooLarge()  # this chunk is never handed on
            return message

        async def guarded_send(message):
            if state["over"] or state["timeout"]:
                return  # the application's answer to the interrupted read is replaced by the 413 or 408
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not (state["over"] or state["timeout"]):
                raise
        if state["over"] and not state["started"]:
            await self._too_large(send, None)
        elif state["timeout"] and not state["started"]:
            await send_json(send, 408, {"detail": f"the request body stopped arriving for {self.body_timeout_s:g} s; "
                                                  "the connection is closed"}, headers=[(b"connection", b"close")])


def _content_length(scope) -> int | None:
    """The declared body size, None when absent, -1 when malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


_TIMEOUT_BODY = b"the request head did not arrive in time\n"
_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                + b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


def guarded_h11(header_timeout_s: float = DEFAULT_HEADER_TIMEOUT):
    """uvicorn's h11 protocol class with a header timeout (for ``uvicorn.Config(http=...)``).

    A connection must deliver a complete request head within ``header_timeout_s`` of opening, and
    within that of the first byte of each later request on it (idle time between requests is
    uvicorn's keep-alive timeout).  The time is not extended by trickled bytes, so a client that
    sends one header line a second is dropped like one that sends nothing.  The client gets ``408``
    and the connection is closed.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    timeout = float(header_timeout_s)

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            if self._head_timer is None and self._between_requests():
                self._arm_head_timer()  # the first byte of the next request: its head must follow in time
            super().data_received(data)
            if self.cycle is not before:  # a complete head arrived and a request started
                self._disarm_head_timer()

        def on_response_complete(self) -> None:
            self._disarm_head_timer()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._between_requests():
                return
            with contextlib.suppress(Exception):
                self.transport.write(_TIMEOUT_408)
            self.transport.close()

    return GuardedH11Protocol


# ---------------------------------------------------------------------------------------------------
# where uploads live

#: The start of every upload folder's name: ``thyro-serve-HOST-PID-XXXXXXXX`` in the temporary folder.
UPLOAD_PREFIX = "thyro-serve-"
_UPLOAD_DIR = re.compile(r"^thyro-serve-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[a-z0-9_]{8}$")
#: What servers of earlier versions called their per-request folders (``tempfile.TemporaryDirectory``).
_EARLIER_UPLOAD_DIR = re.compile(r"^thyro-serve-[a-z0-9_]{8}$")


def sweep_uploads(base: str | os.PathLike, started: float) -> list[Path]:
    """Remove upload folders that servers killed before their requests ended left in ``base``.

    Only names this module makes: a folder of a process that is gone from this host (or, from
    another host sharing the folder, untouched for :data:`thyro.fileio.FOREIGN_STALE_S`), and a
    per-request folder of an earlier thyro version last changed before ``started`` (this server's
    start).  Never a live server's.
    """
    from thyro.fileio import FOREIGN_STALE_S, host_tag, pid_alive

    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not name.startswith(UPLOAD_PREFIX):
            continue
        path = Path(base) / name
        try:
            mtime = path.lstat().st_mtime
        except OSError:
            continue
        m = _UPLOAD_DIR.match(name)
        if m is not None:
            if m["host"] == host_tag():
                gone = not pid_alive(int(m["pid"]), started_before=mtime)
            else:
                gone = now - mtime > FOREIGN_STALE_S
        else:
            gone = _EARLIER_UPLOAD_DIR.match(name) is not None and mtime < started
        if gone and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


class UploadFolder:
    """Where a server's uploads live while their requests are worked on.

    One private folder (mode 0700) per server process, ``TMP/thyro-serve-HOST-PID-XXXXXXXX``, created
    on the first upload; each upload is one file (mode 0600) in it, removed when its request ends,
    whatever the outcome; the folder goes when the server stops.  A server killed mid-request cannot
    remove them: the next server to start with the same temporary folder does (:func:`sweep_uploads`).

    Parameters
    ----------
    base : path, optional
        The temporary folder (default :func:`tempfile.gettempdir`: ``TMPDIR``, else ``/tmp``).
    """

    def __init__(self, base: str | os.PathLike | None = None):
        self.base = Path(base) if base is not None else Path(tempfile.gettempdir())
        self.started = time.time()
        self.swept = sweep_uploads(self.base, self.started)
        self._path: Path | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The folder (made on first use)."""
        from thyro.fileio import host_tag

        with self._lock:
            if self._path is None or not self._path.is_dir():
                self._path = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{host_tag()}-{os.getpid()}-",
                                                   dir=self.base))
            return self._path

    @contextlib.contextmanager
    def file(self, data, suffix: str) -> Iterator[Path]:
        """The upload ``data`` (bytes or a binary file) as a file of its own, removed when the block ends."""
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=self.path)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out, 1024 * 1024)
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def close(self) -> None:
        """Remove the folder (at server shutdown)."""
        with self._lock:
            if self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
                self._path = None


class PixelBudget:
    """A counting semaphore measured in pixels: at most ``capacity`` pixels being decoded at once.

    A request holds ``min(pixels, capacity)`` while it decodes and preprocesses, so one image at the
    pixel limit is decoded alone, and many small ones together.
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._free = self.capacity
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int | None):
        need = self.capacity if pixels is None else max(1, min(int(pixels), self.capacity))
        with self._cond:
            while self._free < need:
                self._cond.wait()
            self._free -= need
        try:
            yield
        finally:
            with self._cond:
                self._free += need
                self._cond.notify_all()


class MicroBatcher:
    """Score images one model call at a time, several requests per call.

    One worker thread takes the first waiting image, then every image already waiting, and waits up
    to ``wait_s`` for more, up to ``max_batch``; the engine scores them as one ``(B, S, S)`` batch,
    and the heatmap engine draws the heatmaps of those that asked for one as one batch too (one
    forward and one backward pass per batch and model, not per image).  With ``max_batch=1``
    requests are scored one at a time, in arrival order.  The engines are called from the worker
    thread only.

    Parameters
    ----------
    engine : callable
        ``uint8 (B, S, S) -> probabilities (B,)``.
    max_batch : int
    wait_s : float
        How long a batch waits for company once it has one image (0: only what is already queued).
    lock : threading.Lock, optional
        Held during each engine call (shared with whatever else uses the same models).
    heatmap_engine : callable, optional
        ``uint8 (B, S, S) -> heatmaps (B, S, S)``, for images submitted with ``heatmap=True``.
    """

    def __init__(self, engine: Callable[[np.ndarray], np.ndarray], max_batch: int = 8, wait_s: float = 0.005,
                 lock: threading.Lock | None = None, heatmap_engine: Callable[[np.ndarray], np.ndarray] | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.engine = engine
        self.heatmap_engine = heatmap_engine
        self.max_batch = int(max_batch)
        self.wait_s = max(0.0, float(wait_s))
        self.lock = lock or threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="thyro-batcher", daemon=True)
        self._thread.start()
        self.calls = 0
        self.images = 0
        self.heatmap_calls = 0
        self.heatmap_images = 0

    def submit(self, image: np.ndarray, heatmap: bool = False) -> Future:
        """Queue one ``(S, S)`` uint8 image; the future gives its probability, or with ``heatmap``
        ``(probability, heatmap)``."""
        if heatmap and self.heatmap_engine is None:
            raise ValueError("this batcher has no heatmap engine")
        future: Future = Future()
        self._queue.put((np.asarray(image), future, bool(heatmap)))
        return future

    def __call__(self, image: np.ndarray, heatmap: bool = False):
        return self.submit(image, heatmap).result()

    def close(self) -> None:
        """Stop the worker after the images already queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _gather(self, first) -> tuple[list, bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first) if self.max_batch > 1 else ([first], False)
            live = [item for item in batch if item[1].set_running_or_notify_cancel()]
            if live:
                try:
                    stack = np.stack([img for img, _, _ in live])
                    want = [k for k, (_, _, cam) in enumerate(live) if cam]
                    with self.lock:
                        probs = np.asarray(self.engine(stack), dtype=float).reshape(-1)
                        cams = self.heatmap_engine(stack[want]) if want else []
                    self.calls += 1
                    self.images += len(live)
                    self.heatmap_calls += bool(want)
                    self.heatmap_images += len(want)
                    heat = dict(zip(want, cams))
                    for k, ((_, fut, cam), p) in enumerate(zip(live, probs)):
                        fut.set_result((float(p), heat[k]) if cam else float(p))
                except BaseException as exc:  # every waiting request gets the error, the worker goes on
                    for _, fut, _ in live:
                        fut.set_exception(exc)
            if stop:
                return
