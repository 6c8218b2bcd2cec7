"""What FastAPI, Starlette and uvicorn lack for ``thyro serve`` to stay up under slow or heavy clients.

* :class:`HeadTimeout`: a connection must send a complete request head within ``header_timeout_s`` of
  opening, and of its first byte after a response; else ``408`` and the connection is closed (uvicorn has
  a keep-alive timeout after a response, none for a head that trickles in).  An :class:`asyncio.Protocol`
  that *composes* the protocol uvicorn would use (handed to ``uvicorn.Config(http=...)``): every event
  passes through to it unchanged; it only watches the bytes that come in for the end of a head
  (``\\r\\n\\r\\n``) and the bytes that go out for the start of a response.
* :class:`BodyReader`, a pure ASGI middleware: a request's whole body is read before the application
  sees the request, within the size limit (413), with at most ``body_timeout_s`` between its parts and
  ``body_deadline_s`` for all of it (408), and at most ``max_reading`` bodies are read at once (beyond:
  503 with ``Retry-After``).  So a slow client holds a reading slot for at most the deadline, and
  never a model slot; the memory bodies hold is bounded by ``max_reading`` times the limit, plus the
  requests admitted.
* :class:`Admission`: at most ``active`` requests at the model, ``waiting`` more queued; beyond,
  :class:`Busy` (the app answers 503 with ``Retry-After``).

Starlette's ``RequestBodyLimitMiddleware`` limits a body's size but not the time it takes, and answers
in plain text, so the body reader counts the bytes as it reads them; uvicorn's ``limit_concurrency``
bounds the connections and requests held at once, not the model's work, and is used as it is
(:func:`thyro.use.serve.uvicorn_config`).  Nothing here subclasses or patches a framework's class.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.responses import JSONResponse

#: Seconds a client is told to wait before retrying a request refused as busy.
RETRY_AFTER_S = 1
#: The end of a request head.
HEAD_END = b"\r\n\r\n"
_TIMEOUT_BODY = b"the request head did not arrive in time\n"
_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                + b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


class HeadTimeout(asyncio.Protocol):
    """One connection: ``inner`` (uvicorn's HTTP protocol) with a deadline for each request head.

    Use :meth:`factory` for ``uvicorn.Config(http=...)``.  The deadline is not extended by trickled
    bytes: a client sending a header line a second is dropped like one that sends nothing.  A request
    whose head is in is the body reader's and the application's; once a response has started, the next
    byte that arrives starts the next head's deadline.
    """

    def __init__(self, inner: asyncio.Protocol, timeout_s: float):
        self.inner = inner
        self.timeout_s = float(timeout_s)
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the bytes coming in belong to a request head not yet complete
        self._tail = b""  # the head's last bytes so far: its end may be split across reads
        self._responded = False  # a response has started since the last head ended

    @classmethod
    def factory(cls, protocol: Callable[..., asyncio.Protocol], timeout_s: float) -> Callable[..., HeadTimeout]:
        """What ``uvicorn.Config(http=...)`` takes: builds ``protocol(**uvicorn's arguments)`` wrapped."""

        def make(**kwargs) -> HeadTimeout:
            return cls(protocol(**kwargs), timeout_s)

        return make

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm()
        self.inner.connection_made(_WatchedTransport(transport, self._sent))

    def data_received(self, data: bytes) -> None:
        if self._responded:  # the first byte after a response: the next request's head must follow in time
            self._in_head, self._responded, self._tail = True, False, b""
            self._arm()
        if self._in_head:
            seen = self._tail + data
            if HEAD_END in seen:
                self._in_head = False
                self._disarm()
            else:
                self._tail = seen[-(len(HEAD_END) - 1):]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _sent(self, data: bytes) -> None:
        """The inner protocol writes ``data``: a final response's start (not ``100 Continue``) ends a request."""
        if not self._in_head and data.startswith(b"HTTP/") and data[9:10] != b"1":
            self._responded = True

    def _arm(self) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing() or not self._in_head:
            return
        with contextlib.suppress(Exception):
            self.transport.write(_TIMEOUT_408)
        self.transport.close()


class _WatchedTransport:
    """A transport as the inner protocol sees it: every call passes through; ``write`` is shown first."""

    def __init__(self, transport: asyncio.BaseTransport, on_write: Callable[[bytes], None]):
        self._transport = transport
        self._on_write = on_write

    def write(self, data: bytes) -> None:
        self._on_write(data)
        self._transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class BodyReader:
    """ASGI middleware: read each request's whole body, within its limits, before the application runs.

    Parameters
    ----------
    app : ASGI application
    max_body_bytes : int
        Largest body read; a declared ``Content-Length`` over it is refused unread, a body that grows
        past it (chunked) is refused at that point: 413, and the connection is closed.
    upload_limit : int
        The upload limit the 413 message names.
    max_reading : int
        Bodies read at once; one more gets 503 with ``Retry-After`` (and the connection is closed).
    gap_timeout_s, deadline_s : float
        Longest wait for the next part of a body, and for the whole of it: then 408 and closed.
    """

    def __init__(self, app, *, max_body_bytes: int, upload_limit: int, max_reading: int, gap_timeout_s: float,
                 deadline_s: float):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.upload_limit = int(upload_limit)
        self.max_reading = int(max_reading)
        self.gap_timeout_s = float(gap_timeout_s)
        self.deadline_s = float(deadline_s)
        self.reading = 0  # bodies being read now (one event loop: no lock needed)
        self.refused = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return await _refuse(scope, receive, send, 413, self._too_large(f"{declared} bytes"))
        if self.reading >= self.max_reading:
            self.refused += 1
            return await _refuse(scope, receive, send, 503, (
                f"the server is busy: {self.max_reading} request bodies are arriving, the most it reads at once; "
                f"try again in {RETRY_AFTER_S} s."), retry=True)
        self.reading += 1
        try:
            body = await self._read(receive)
        except _Refused as refused:
            return await _refuse(scope, receive, send, refused.status, refused.detail)
        finally:
            self.reading -= 1
        if body is not None:  # None: the client went away
            await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        chunks, size = [], 0
        while True:
            wait = min(self.gap_timeout_s, deadline - loop.time())
            try:
                if wait <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), wait)
            except asyncio.TimeoutError:
                raise _Refused(408, (
                    f"the request body stopped arriving for {self.gap_timeout_s:g} s" if wait >= self.gap_timeout_s
                    else f"the request body did not arrive within {self.deadline_s:g} s")
                    + "; the connection is closed") from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(413, self._too_large(f"over {self.max_body_bytes} bytes"))  # never read further
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, what: str) -> str:
        return f"upload too large: {what}; the limit is {self.upload_limit} bytes"


class _Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


async def _refuse(scope, receive, send, status: int, detail: str, retry: bool = False) -> None:
    """Answer ``status`` with ``{"detail": ...}`` and close the connection (a body may be left unread)."""
    headers = {"connection": "close"}
    if retry:
        headers["retry-after"] = str(RETRY_AFTER_S)
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that gives ``body`` whole, then waits on the real one (for a disconnect)."""
    given = False

    async def replay():
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _content_length(scope) -> int | None:
    """The declared body size (uvicorn has refused a malformed one), None when not declared."""
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _has_body(scope) -> bool:
    return _header(scope, b"transfer-encoding") is not None or bool(_content_length(scope))


class Busy(Exception):
    """The model's requests and its queue are full; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = RETRY_AFTER_S):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    """At most ``active`` requests at the model, ``waiting`` more in line; beyond both, :class:`Busy` at once.

    Used from one event loop (an ASGI application's); the count needs no lock.
    """

    def __init__(self, active: int, waiting: int):
        self.active = int(active)
        self.waiting = int(waiting)
        self.pending = 0  # admitted: at the model and waiting
        self.refused = 0
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the model's slots for the block, after waiting in line if need be."""
        if self.pending >= self.active + self.waiting:
            self.refused += 1
            raise Busy(f"the server is busy: {self.active} request(s) in progress and {self.waiting} waiting, the "
                       f"most it accepts; try again in {RETRY_AFTER_S} s.")
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # asyncio primitives belong to one event loop
            self._slots, self._loop = asyncio.Semaphore(self.active), loop
        self.pending += 1
        try:
            async with self._slots:
                yield
        finally:
            self.pending -= 1
