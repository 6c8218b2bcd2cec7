"""What the web app relies on from FastAPI, Starlette, uvicorn and python-multipart, checked against the
versions installed: the serve extra's bounds, the protocol uvicorn is handed, a model slot released
before an answer is sent, forms parsed in memory, and no process-wide setting changed."""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from thyro.use.serve import create_app, uvicorn_config
from thyro.use.serve.forms import FormError, UploadedFile, parse_form
from thyro.use.serve.guard import HeadTimeout

REPO = Path(__file__).resolve().parents[2]


def test_installed_frameworks_are_within_the_serve_extras_bounds():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = [Requirement(r) for r in extras["serve"]]
    assert {p.name for p in pins} == {"fastapi", "starlette", "uvicorn", "python-multipart"}
    for pin in pins:
        assert pin.specifier.contains(version(pin.name)), f"{pin.name} {version(pin.name)} is not {pin.specifier}"
        assert any(s.operator == "<" for s in pin.specifier), f"{pin.name}: no upper bound"


# ------------------------------------------------------------------------------------------------
# the head timeout, on a protocol and a transport of its own

class _Transport:
    def __init__(self):
        self.written, self.closed, self.paused = [], False, 0

    def write(self, data):
        self.written.append(bytes(data))

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.paused += 1


class _Inner:
    """Stands in for uvicorn's protocol: records what it is handed, writes what it is told."""

    def __init__(self, **kwargs):
        self.kwargs, self.data, self.transport, self.lost = kwargs, [], None, False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data.append(data)

    def eof_received(self):
        return True

    def connection_lost(self, exc):
        self.lost = True


def test_the_head_timeout_watches_bytes_and_passes_everything_through():
    async def run():
        make = HeadTimeout.factory(_Inner, 0.2)
        proto = make(config="c", server_state="s")
        assert proto.inner.kwargs == {"config": "c", "server_state": "s"}  # uvicorn's arguments, as they came
        transport = _Transport()
        proto.connection_made(transport)
        proto.inner.transport.pause_reading()  # every other call reaches the real transport
        assert transport.paused == 1
        for part in (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r", b"\nab"):  # the end split across reads
            proto.data_received(part)
        proto.inner.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # interim: the request goes on
        await asyncio.sleep(0.3)
        proto.data_received(b"c")  # the body's last byte, after the deadline a head would have had
        assert not transport.closed and proto.inner.data == [b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r",
                                                              b"\nab", b"c"]
        proto.inner.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        proto.data_received(b"GET / HT")  # the next request: its head must come in time
        await asyncio.sleep(0.3)
        assert transport.closed and transport.written[-1].startswith(b"HTTP/1.1 408")
        assert proto.eof_received() is True
        proto.connection_lost(None)
        assert proto.inner.lost

    asyncio.run(run())


def test_uvicorn_is_handed_the_wrapped_h11_protocol(model_dir):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    app = create_app(model_dir, header_timeout_s=3.0, max_connections=7)
    config = uvicorn_config(app)
    config.load()
    assert config.limit_concurrency == 7 and config.h11_max_incomplete_event_size == 16 * 1024
    assert config.ws_protocol_class is None  # no websockets

    async def build():
        from uvicorn.server import ServerState

        return config.http_protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=None)

    proto = asyncio.run(build())
    assert isinstance(proto, HeadTimeout) and isinstance(proto.inner, H11Protocol) and proto.timeout_s == 3.0
    app.state.service.close()


# ------------------------------------------------------------------------------------------------
# FastAPI's function-scoped dependency, through the whole app

def test_the_model_slot_is_released_before_the_answer_is_sent(model_dir, images):
    """A client that never reads its answer must not hold a model slot: the slot is free by the time the
    answer starts (FastAPI's ``Depends(scope="function")``)."""
    app = create_app(model_dir, max_concurrency=1, queue=0)
    boundary = "b"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"heatmap\"\r\n\r\nfalse\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"file\"; filename=\"us0.png\"\r\n\r\n").encode() \
        + images["png0"].read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"t"), (b"content-length", str(len(body)).encode()),
                         (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    at_start = []

    async def run():
        given = []

        async def receive():
            if given:
                await asyncio.sleep(3600)
            given.append(1)
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                at_start.append((message["status"], app.state.admission.pending))

        await app(scope, receive, send)

    asyncio.run(run())
    app.state.service.close()
    assert at_start == [(200, 0)]


# ------------------------------------------------------------------------------------------------
# forms in memory

def test_a_form_is_parsed_from_the_body_without_copies_of_the_file():
    data = bytes(range(256)) * 4000
    body = (b"--x\r\nContent-Disposition: form-data; name=\"roi\"\r\n\r\n{\"box\": [1, 2, 3, 4]}\r\n"
            b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.dcm\"\r\n"
            b"Content-Type: application/dicom\r\n\r\n" + data + b"\r\n--x--\r\n")
    form = parse_form(body, "multipart/form-data; boundary=x")
    assert form["roi"] == '{"box": [1, 2, 3, 4]}'
    upload = form["file"]
    assert isinstance(upload, UploadedFile) and upload.filename == "scan.dcm"
    assert upload.content_type == "application/dicom" and bytes(upload.data) == data
    assert parse_form(b"{}", "application/json") == {}  # not a form: no fields (the file is then missing)
    for bad, kind in ((b"garbage", "multipart/form-data"), (b"--x\r\nno headers", "multipart/form-data; boundary=x")):
        with pytest.raises(FormError):
            parse_form(bad, kind)
    many = b"".join(b"--x\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n" % k for k in range(40))
    with pytest.raises(FormError, match=re.escape("more than 16 parts")):
        parse_form(many + b"--x--\r\n", "multipart/form-data; boundary=x")
