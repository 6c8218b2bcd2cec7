"""The server guarded: a token beyond loopback (or --insecure on purpose), slow clients dropped (request
head and body timeouts, a body deadline) and never holding the model, uploads that never touch the disk,
failures of the server answered 500 with an id, and heatmaps drawn per micro-batch with the same result
as one at a time."""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from thyro.data.preprocess import Preprocessor
from thyro.errors import ThyroError
from thyro.use.serve import create_app

from .conftest import LiveServer, free_port

TOKEN = "s3cret-token-for-tests-0123456789"
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------
# who may ask

def _no_run(monkeypatch) -> dict:
    """Stop uvicorn from serving; return what it was configured with."""
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: seen.update(config=self.config))
    return seen


def test_beyond_loopback_a_token_is_required_unless_insecure(model_dir, monkeypatch, capsys):
    from thyro.cli import main
    from thyro.use.serve import serve

    seen = _no_run(monkeypatch)
    for host in ("0.0.0.0", "192.168.1.20", "::", "thyro.example.org"):
        with pytest.raises(ThyroError, match=r"host=.* give it a token \(token=.*insecure=True"):
            serve(model_dir, host=host)
    assert seen == {}  # refused before anything was bound
    assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) != 0
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 makes" in err and "--token or THYRO_SERVE_TOKEN" in err and "--insecure" in err
    assert "insecure=True" not in err and seen == {}  # the command line names its flags
    # on purpose: --insecure
    assert main(["serve", str(model_dir), "--host", "0.0.0.0", "--insecure"]) == 0
    assert seen["config"].host == "0.0.0.0"
    # or with a token, from the option or the environment
    monkeypatch.setenv("THYRO_SERVE_TOKEN", TOKEN)
    seen.clear()
    assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) == 0 and seen["config"].host == "0.0.0.0"
    # loopback needs nothing
    monkeypatch.delenv("THYRO_SERVE_TOKEN")
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        seen.clear()
        serve(model_dir, host=host)
        assert seen["config"].host == host
    with pytest.raises(ThyroError, match="at least 16"):
        serve(model_dir, host="0.0.0.0", token="short")


def test_a_token_a_client_could_not_send_is_refused_at_start(model_dir, monkeypatch, capsys):
    """A token with non-ASCII characters could never match a Bearer header (sent as Latin-1 bytes): refused
    before anything is loaded or bound, from Python and from the command line; the token is never echoed."""
    from thyro.cli import main
    from thyro.use.serve import serve

    seen = _no_run(monkeypatch)
    for token in ("pässwörd-for-the-thyro-server", "tab\tin-the-middle-of-a-token", "ключ-доступа-к-серверу-1"):
        with pytest.raises(ThyroError, match="printable ASCII") as info:
            serve(model_dir, token=token)
        assert token not in str(info.value)
        assert main(["serve", str(model_dir), "--token", token]) == 2
        err = capsys.readouterr().err
        assert "--token has characters other than printable ASCII" in err and token not in err
    assert seen == {}
    with TestClient(create_app(model_dir, token=TOKEN)) as c:  # an ASCII token: Bearer and Basic alike
        basic = base64.b64encode(f"x:{TOKEN}".encode()).decode()
        assert c.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/health", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_with_a_token_every_request_must_carry_it(model_dir, images):
    png = images["png0"].read_bytes()
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    with TestClient(create_app(model_dir, token=TOKEN)) as c:
        for path in ("/", "/health", "/static/app.js"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic"), path
        assert c.post("/predict", files={"file": ("a.png", png, "image/png")}).status_code == 401
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert c.get("/health", headers=wrong).status_code == 401
        assert c.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/health", headers={"Authorization": f"Basic {basic}"}).status_code == 200  # a browser's
        r = c.post("/predict", files={"file": ("a.png", png, "image/png")}, data={"heatmap": "false"},
                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and 0 <= r.json()["probability"] <= 1


# ------------------------------------------------------------------------------------------------
# slow clients

def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (or ``limit`` seconds pass)."""
    t0, data = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk
    return data, float("inf")


def test_a_partial_request_head_is_dropped_and_the_server_stays_up(model_dir):
    with LiveServer(create_app(model_dir, header_timeout_s=1.0)) as live:
        silent = socket.create_connection(("127.0.0.1", live.port))
        partial = socket.create_connection(("127.0.0.1", live.port))
        partial.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        trickle = socket.create_connection(("127.0.0.1", live.port))
        stop = threading.Event()

        def drip():  # a header line every 0.3 s: always active, never done
            k = 0
            while not stop.is_set():
                try:
                    trickle.sendall(b"GET /health HTTP/1.1\r\n" if k == 0 else f"X-{k}: y\r\n".encode())
                except OSError:
                    return
                k += 1
                time.sleep(0.3)

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            for sock in (partial, silent, trickle):
                reply, after = _read_until_closed(sock, 10)
                assert after < 5, "a slow client was kept"
                assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
        finally:
            stop.set()
            for sock in (silent, partial, trickle):
                sock.close()
        # a client that sends its request at once is answered, and keep-alive still works
        with httpx.Client(base_url=live.url, timeout=10) as client:
            assert client.get("/health").status_code == 200
            time.sleep(0.3)
            assert client.get("/health").status_code == 200


def test_a_request_body_that_stops_coming_gets_408(model_dir):
    with LiveServer(create_app(model_dir, body_timeout_s=1.0)) as live:
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")
            reply, after = _read_until_closed(sock, 10)
        assert reply.startswith(b"HTTP/1.1 408") and b"stopped arriving" in reply and after < 5, reply[:200]
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200


def _trickle(port: int, n: int, every: float, stop: threading.Event, declared: int = 100_000) -> list[socket.socket]:
    """``n`` connections that send a complete request head and the start of a form (the file part's headers),
    then one byte of the file every ``every`` seconds."""
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(declared).encode()
                     + b"\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nContent-Disposition: "
                     b"form-data; name=\"file\"; filename=\"slow.png\"\r\n\r\n")
        socks.append(sock)

    def drip():
        while not stop.wait(every):
            for sock in socks:
                try:
                    sock.sendall(b"x")
                except OSError:
                    pass

    threading.Thread(target=drip, daemon=True).start()
    return socks


def test_slow_bodies_never_hold_the_model(model_dir, images):
    """20 connections that send their heads and then a body byte every 2 s: they are being read, not at
    the model (its two slots and its queue stay free), and a normal request is answered at once."""
    png = images["png0"].read_bytes()
    app = create_app(model_dir, max_concurrency=2, queue=2)
    stop = threading.Event()
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        assert client.post("/predict", files={"file": ("us0.png", png)}, data={"heatmap": "false"}).status_code == 200
        socks = _trickle(live.port, 20, 2.0, stop)
        try:
            time.sleep(2.5)  # every slow body has started, and dripped
            took = []
            for _ in range(3):
                t = time.perf_counter()
                r = client.post("/predict", files={"file": ("us0.png", png)}, data={"heatmap": "false"})
                took.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            assert app.state.admission.pending == 0  # the slow requests never took a model slot
        finally:
            stop.set()
            for sock in socks:
                sock.close()
    assert sorted(took)[1] < 1.0 and max(took) < 5, took


def test_a_body_that_trickles_past_its_deadline_gets_408(model_dir):
    """A byte every 0.3 s never trips the 1 s gap timeout, but the whole body must arrive within 2 s."""
    stop = threading.Event()
    with LiveServer(create_app(model_dir, body_timeout_s=1.0, body_deadline_s=2.0)) as live:
        (sock,) = _trickle(live.port, 1, 0.3, stop)
        try:
            reply, after = _read_until_closed(sock, 10)
        finally:
            stop.set()
            sock.close()
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in reply, reply[:200]
        assert 1.5 < after < 5
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200


def test_bodies_read_at_once_are_bounded(model_dir, images):
    stop = threading.Event()
    with LiveServer(create_app(model_dir, max_reading=2)) as live:
        socks = _trickle(live.port, 2, 0.5, stop)
        try:
            time.sleep(0.5)
            r = httpx.post(live.url + "/predict", files={"file": ("us0.png", images["png0"].read_bytes())},
                           timeout=10)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert "request bodies are arriving" in r.json()["detail"]
            assert httpx.get(live.url + "/health", timeout=10).status_code == 200  # no body: not counted
        finally:
            stop.set()
            for sock in socks:
                sock.close()
        time.sleep(0.3)  # the server sees them go
        r = httpx.post(live.url + "/predict", files={"file": ("us0.png", images["png0"].read_bytes())},
                       data={"heatmap": "false"}, timeout=30)
        assert r.status_code == 200, r.text


def _multipart(data: bytes, name: str = "us0.png", boundary: str = "b0undary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"heatmap\"\r\n\r\nfalse\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_the_head_timeout_knows_a_body_after_100_continue_and_the_next_head(model_dir, images):
    """With ``Expect: 100-continue`` the body comes after the server's interim answer: it is a body, not a
    late head.  After a response, the next request's head must come in time again."""
    body, kind = _multipart(images["png0"].read_bytes())
    with LiveServer(create_app(model_dir, header_timeout_s=1.0)) as live:
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: {kind}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode())
            sock.settimeout(10)
            assert sock.recv(4096).startswith(b"HTTP/1.1 100")
            time.sleep(1.5)  # longer than the head timeout: the head is long done
            sock.sendall(body)
            reply = b""
            while b'"probability"' not in reply:
                chunk = sock.recv(65536)
                assert chunk, reply[:300]
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # the next head, never finished
            rest, after = _read_until_closed(sock, 10)
        assert b"HTTP/1.1 408" in rest and after < 5, rest[:300]


# ------------------------------------------------------------------------------------------------
# uploads

def test_uploads_are_parsed_without_patching_starlette(model_dir, images):
    from starlette.formparsers import MultiPartParser

    before = MultiPartParser.spool_max_size
    with TestClient(create_app(model_dir, max_upload_bytes=5_000_000)) as c:
        r = c.post("/predict", files={"file": ("us0.png", images["png0"].read_bytes())}, data={"heatmap": "false"})
        assert r.status_code == 200, r.text
    assert MultiPartParser.spool_max_size == before == 1024 * 1024  # no process-wide setting changed


def _padded_png(png: bytes, total: int) -> bytes:
    """``png`` grown to ``total`` bytes by a private ancillary chunk before IEND (readers skip it)."""
    import struct
    import zlib

    data = b"\0" * (total - len(png) - 12)
    chunk = struct.pack(">I", len(data)) + b"prVt" + data + struct.pack(">I", zlib.crc32(b"prVt" + data))
    return png[:-12] + chunk + png[-12:]


def _on_disk(folder: Path, pid: int) -> list[str]:
    """Everything in ``folder``, and every file the process ``pid`` holds open there (unlinked ones too:
    a ``SpooledTemporaryFile`` that rolled over is an ``O_TMPFILE`` with no name in the folder)."""
    found = [str(p) for p in folder.rglob("*")]
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.mark.slow
def test_uploads_never_touch_the_disk(model_dir, images, tmp_path):
    """``thyro serve`` with ``TMPDIR`` at an empty folder: small uploads and ones near the limit, chunked and
    not, one over the limit: the folder stays empty, and the server holds no file in it, at every moment."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "thyro", "serve", str(model_dir), "--port", str(port),
                             "--log-level", "warning", "--max-upload-mb", "3"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    seen: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(_on_disk(tmp, proc.pid))
            time.sleep(0.002)

    small = images["png0"].read_bytes()
    near = _padded_png(small, 3 * 1024 * 1024 - 1000)  # just under the 3 MiB limit
    try:
        _wait_for(port, proc)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        url = f"http://127.0.0.1:{port}/predict"
        statuses = []
        for data in (small, near, small, near):
            body, kind = _multipart(data)
            whole = httpx.post(url, content=body, headers={"content-type": kind}, timeout=60)
            chunked = httpx.post(url, content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                                 headers={"content-type": kind}, timeout=60)  # no length: chunked
            statuses += [whole.status_code, chunked.status_code]
        body, kind = _multipart(near + near)
        over = httpx.post(url, content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                          headers={"content-type": kind}, timeout=60)
        stop.set()
        watcher.join()
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    assert statuses == [200] * 8 and over.status_code == 413, (statuses, over.text)
    assert seen == [] and list(tmp.iterdir()) == []


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the server did not start")


# ------------------------------------------------------------------------------------------------
# failures of the server

class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("where", ["scoring", "preprocessing"])
def test_an_unexpected_failure_is_a_500_with_an_id_in_the_log(model_dir, images, where, monkeypatch):
    """A bug is not the upload's fault: 500 (never 400 "not a readable image"), with an id that the log
    line with the traceback carries too; the app stays up."""
    import re

    def boom(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    app = create_app(model_dir)
    service = app.state.service
    handler = _Records()
    logger = logging.getLogger("thyro.use.serve.app")
    logger.addHandler(handler)
    try:
        with TestClient(app) as c:
            if where == "scoring":
                monkeypatch.setattr(service.scorer, "engine", boom)
            else:  # inside the Scorer's preparation, which raises what is not an input problem
                monkeypatch.setattr(Preprocessor, "process", boom)
            r = c.post("/predict", files={"file": ("us0.png", images["png0"].read_bytes())},
                       data={"heatmap": "false"})
            assert c.get("/health").status_code == 200
    finally:
        logger.removeHandler(handler)
    assert r.status_code == 500, r.text
    error_id = re.search(r"internal error ([0-9a-f]{12})", r.json()["detail"]).group(1)
    assert "a bug" not in r.text and "ZeroDivisionError" not in r.text  # no internals to the client
    (record,) = handler.records
    assert error_id in record.getMessage() and record.exc_info[0] is ZeroDivisionError


# ------------------------------------------------------------------------------------------------
# heatmaps per micro-batch

def test_heatmaps_are_drawn_per_batch_with_one_at_a_time_results(model_dir, images):
    from thyro.use.explain import heatmaps

    app = create_app(model_dir, max_batch=8, batch_wait_ms=300)
    service = app.state.service
    files = [images[f"png{k}"] for k in range(5)]
    inputs = [service.scorer.prepare(f).image for f in files]
    with ThreadPoolExecutor(len(inputs)) as pool:
        got = list(pool.map(lambda img: service.batcher(img, heatmap=True), inputs))
    assert service.batcher.heatmap_images == 5 and service.batcher.heatmap_calls < 5  # drawn together
    for img, (prob, cam) in zip(inputs, got):
        assert prob == service.batcher(img)  # the same probability as without a heatmap
        np.testing.assert_allclose(cam, heatmaps(service.scorer.models, img[None], service.settings.method)[0],
                                   atol=1e-5)
    with LiveServer(app) as live, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda f: httpx.post(live.url + "/predict", files={"file": (f.name, f.read_bytes())},
                                                     timeout=60), files[:4]))
    assert all(r.status_code == 200 and r.json()["heatmap_png"] for r in results)
    service.close()


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "vit_tiny_patch16_224", "convnext_atto"])
def test_backward_pass_from_the_target_layer_gives_the_full_passes_heatmaps(arch):
    """heatmaps() runs the backward pass from the logit to the target layer only; pytorch-grad-cam run as
    documented (the input requiring its gradient, the whole network in the graph) gives the same maps."""
    import torch
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    from thyro.models import build_model
    from thyro.use.explain import LogitTarget, find_target_layer, heatmaps

    model, _ = build_model(arch, "none", seed=3, image_size=64)
    model.eval()
    x = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    for method, cls in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)):
        full = torch.from_numpy(x).float().div(255).unsqueeze(1).requires_grad_(True)
        layer, reshape = find_target_layer(model)
        with cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            want = cam(input_tensor=full, targets=[LogitTarget()] * 3)
        np.testing.assert_allclose(heatmaps([model], x, method), want, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())  # the weights are as they were
