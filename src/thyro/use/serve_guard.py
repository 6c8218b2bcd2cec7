"""What keeps ``thyro serve`` standing under hostile or heavy load, apart from the endpoints.

* :class:`RequestGuard`, a pure ASGI middleware: the request body limit enforced while the body
  streams in (with or without ``Content-Length``: chunked uploads are counted), and admission
  control (a fixed number of requests worked on at once, a small queue, and beyond that an
  immediate ``503`` with ``Retry-After``).  A request waiting in the queue has not had its body read.
* :class:`PixelBudget`: decoding and preprocessing hold pixels from a fixed budget (the pixel limit),
  so a few large images are decoded one after another instead of together.
* :class:`MicroBatcher`: one thread runs the model; requests that arrive while it is busy, or
  within a few milliseconds of each other, are scored together in one call.

Written as plain ASGI and threading rather than with a framework's middleware classes because the
body limit must sit below the multipart parser (Starlette spools uploads to disk as it parses) and
the answer must replace whatever the application makes of the interrupted read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

#: Allowance for the multipart framing and form fields around the file, on top of the upload limit.
FRAMING_ALLOWANCE = 64 * 1024


class _BodyTooLarge(Exception):
    """Raised into the application when the request body passes the limit."""


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
    """

    def __init__(self, app, *, max_body_bytes: int, max_active: int, max_waiting: int, retry_after_s: int = 1):
        if max_active < 1 or max_waiting < 0:
            raise ValueError("max_active must be >= 1 and max_waiting >= 0")
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.max_active = int(max_active)
        self.max_waiting = int(max_waiting)
        self.retry_after_s = int(retry_after_s)
        self._slots: asyncio.Semaphore | None = None
        self._loop = None
        self.pending = 0  # admitted POST requests: active + waiting (one event loop: no lock needed)
        self.refused = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
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
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    state["over"] = True
                    raise _BodyTooLarge()  # this chunk is never handed on
            return message

        async def guarded_send(message):
            if state["over"]:
                return  # the application's answer to the interrupted read is replaced by the 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._too_large(send, None)


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
    to ``wait_s`` for more, up to ``max_batch``; the engine scores them as one ``(B, S, S)`` batch.
    With ``max_batch=1`` requests are scored one at a time, in arrival order.  The engine is called
    from the worker thread only.

    Parameters
    ----------
    engine : callable
        ``uint8 (B, S, S) -> probabilities (B,)``.
    max_batch : int
    wait_s : float
        How long a batch waits for company once it has one image (0: only what is already queued).
    lock : threading.Lock, optional
        Held during each engine call (shared with whatever else uses the same models).
    """

    def __init__(self, engine: Callable[[np.ndarray], np.ndarray], max_batch: int = 8, wait_s: float = 0.005,
                 lock: threading.Lock | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.engine = engine
        self.max_batch = int(max_batch)
        self.wait_s = max(0.0, float(wait_s))
        self.lock = lock or threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="thyro-batcher", daemon=True)
        self._thread.start()
        self.calls = 0
        self.images = 0

    def submit(self, image: np.ndarray) -> Future:
        """Queue one ``(S, S)`` uint8 image; the future gives its probability."""
        future: Future = Future()
        self._queue.put((np.asarray(image), future))
        return future

    def __call__(self, image: np.ndarray) -> float:
        return self.submit(image).result()

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
            live = [(img, fut) for img, fut in batch if fut.set_running_or_notify_cancel()]
            if live:
                try:
                    with self.lock:
                        probs = np.asarray(self.engine(np.stack([img for img, _ in live])), dtype=float).reshape(-1)
                    self.calls += 1
                    self.images += len(live)
                    for (_, fut), p in zip(live, probs):
                        fut.set_result(float(p))
                except BaseException as exc:  # every waiting request gets the error, the worker goes on
                    for _, fut in live:
                        fut.set_exception(exc)
            if stop:
                return
