"""The web app under hostile and heavy use: it answers every case clearly and stays up, with bounded
memory, disk and concurrency."""

from __future__ import annotations

import json
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

from thyro.use.serve import create_app

from .conftest import SERVE_UPLOAD_LIMIT, LiveServer, tempdir_at

LIMIT = SERVE_UPLOAD_LIMIT  # the client fixture's upload limit


def _peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM) so a later read measures from now (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


BOUNDARY = "thyroboundary"
HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n").encode()


def _asgi_upload(app, total: int, app_tmp: Path, chunk: int = 16 * 1024) -> dict:
    """POST ``total`` bytes of file as a chunked multipart body straight into the ASGI app, one chunk per
    ``receive()`` as a server would hand them over; record what the app pulled and the disk it used."""
    import asyncio

    seen = {"pulled": 0, "disk_max": 0, "messages": []}
    parts = [HEAD] + [b"\0" * chunk] * (total // chunk) + [f"\r\n--{BOUNDARY}--\r\n".encode()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"test"), (b"transfer-encoding", b"chunked"),
                         (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def receive():
        seen["disk_max"] = max(seen["disk_max"], _tree_bytes(app_tmp))
        if not parts:
            await asyncio.sleep(3600)  # a client that has sent everything and waits
        body = parts.pop(0)
        seen["pulled"] += len(body)
        return {"type": "http.request", "body": body, "more_body": bool(parts)}

    async def send(message):
        seen["messages"].append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in seen["messages"] if m["type"] == "http.response.start")
    seen["status"] = start["status"]
    seen["headers"] = dict(start["headers"])
    seen["body"] = b"".join(m.get("body", b"") for m in seen["messages"] if m["type"] == "http.response.body")
    return seen


def test_chunked_upload_over_the_limit_is_refused_while_streaming(model_dir, app_tmp):
    with tempdir_at(app_tmp):
        seen = _asgi_upload(create_app(model_dir, max_upload_bytes=LIMIT), 50 * LIMIT, app_tmp)  # 10 MB, chunked
    assert seen["status"] == 413 and b"upload too large" in seen["body"]
    assert seen["headers"][b"connection"] == b"close"  # the server closes: the rest is never read
    allowance = 64 * 1024 + 16 * 1024  # multipart framing allowance + one chunk
    assert seen["pulled"] <= LIMIT + allowance  # of the 10 MB, only the limit was read
    assert seen["disk_max"] <= LIMIT + allowance  # and no more than that was ever spooled to disk
    assert [p for p in app_tmp.rglob("*") if not p.is_dir()] == []


def test_chunked_upload_over_a_live_socket(model_dir, tmp_path):
    """A real client streaming 40 MB chunked gets its 413 and the server stays up (the 3 GB case is in
    benchmarks/serve_load.py)."""
    app = create_app(model_dir, max_upload_bytes=LIMIT)
    with LiveServer(app) as live:
        host, port = "127.0.0.1", int(live.url.rsplit(":", 1)[1])
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode())
            sock.setblocking(False)
            reply, sent, chunk = b"", 0, b"\0" * 65536
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            deadline = time.time() + 30
            while sent < 40_000_000 and b"\r\n\r\n" not in reply and time.time() < deadline:
                try:
                    reply += sock.recv(65536)
                except BlockingIOError:
                    pass
                try:
                    sock.send(frame if sent else f"{len(HEAD):x}\r\n".encode() + HEAD + b"\r\n")
                    sent += len(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.01)
                    if b"\r\n\r\n" not in reply:
                        try:
                            reply += sock.recv(65536)
                        except (BlockingIOError, ConnectionResetError):
                            pass
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200


def test_declared_length_over_the_limit_is_refused_unread(client):
    r = client.post("/predict", content=b"x" * (5 * LIMIT),
                    headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert r.status_code == 413 and str(5 * LIMIT) in r.json()["detail"]
    assert r.headers.get("connection") == "close"


def test_png_bomb_upload_gets_400_fast_with_bounded_memory(client, bomb_png, tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png", 13000, 13000, complete=True)  # 160 KB, 169 megapixels
    assert bomb.stat().st_size < LIMIT
    measured = _peak_rss_reset()
    before = _peak_rss_mb()
    t = time.perf_counter()
    for path in ("/predict", "/preview"):
        r = client.post(path, files={"file": ("bomb.png", bomb.read_bytes(), "image/png")})
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "bomb.png" in detail and "13000 x 13000" in detail and "25,000,000 pixels" in detail
        assert "thyro-serve-" not in detail
    assert time.perf_counter() - t < 3.0
    if measured:
        assert _peak_rss_mb() - before < 100  # decoding would take 169 MB at least (today: 3.6 GB)


def test_nested_roi_gets_400_not_500(client, images, model_dir):
    png = images["png0"].read_bytes()
    for roi, expect in (("[" * 50_000 + "]" * 50_000, "roi: roi is nested more than 4 levels"),
                        ('{"box": [0, 0, Infinity, 5]}', "Infinity is not a number")):
        r = client.post("/predict", files={"file": ("us0.png", png, "image/png")}, data={"roi": roi})
        assert r.status_code == 400, r.text
        assert expect in r.json()["detail"]
    with TestClient(create_app(model_dir)) as big:  # 20 MB upload limit: the ROI's own limit answers
        r = big.post("/predict", files={"file": ("us0.png", png, "image/png")},
                     data={"roi": '{"polygons": [' + "[1, 2]," * 60_000 + "[1, 2]]}"})
        assert r.status_code == 400 and "over the limit of 262,144" in r.json()["detail"]


def test_no_docs_and_no_schema_by_default(model_dir):
    with TestClient(create_app(model_dir)) as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert c.get(path).status_code == 404, path
    with TestClient(create_app(model_dir, openapi=True)) as c:
        schema = c.get("/openapi.json")
        assert schema.status_code == 200 and "/predict" in schema.json()["paths"]
        assert c.get("/docs").status_code == 404  # the Swagger page would load from a CDN
        assert "cdn" not in schema.text.lower()


def test_multiframe_upload_says_so(client, tmp_path):
    from .conftest import _speckle, write_dicom_frames

    rng = np.random.default_rng(4)
    cine = write_dicom_frames(tmp_path / "cine.dcm", [_speckle(rng, 80, 96) for _ in range(3)])
    r = client.post("/predict", files={"file": ("cine.dcm", cine.read_bytes(), "application/dicom")},
                    data={"heatmap": "false"})
    assert r.status_code == 200, r.text
    assert "3 frames: frame 0 scored" in r.json()["warning"]


# ------------------------------------------------------------------------------------------------
# Concurrency, queue, micro-batching and the ONNX engine, on a live uvicorn server
# ------------------------------------------------------------------------------------------------

def _post(url: str, png: bytes, name: str = "us.png", heatmap: str = "false") -> httpx.Response:
    return httpx.post(url + "/predict", files={"file": (name, png, "image/png")}, data={"heatmap": heatmap},
                      timeout=60)


def test_bounded_concurrency_answers_503_with_retry_after(model_dir, images):
    app = create_app(model_dir, max_concurrency=2, queue=1)
    service = app.state.service
    gate = threading.Event()
    real = service.batcher.engine

    def slow(batch):
        gate.wait(30)
        return real(batch)

    service.batcher.engine = slow
    png = images["png0"].read_bytes()
    with LiveServer(app) as live, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(_post, live.url, png) for _ in range(6)]
        deadline = time.time() + 20
        while sum(f.done() for f in futures) < 3 and time.time() < deadline:  # 6 - (2 active + 1 waiting)
            time.sleep(0.02)
        busy = [f.result() for f in futures if f.done()]
        assert len(busy) == 3 and all(r.status_code == 503 for r in busy)
        assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["detail"] for r in busy)
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200  # reads are never queued
        gate.set()
    ok = [r for r in (f.result() for f in futures) if r.status_code == 200]
    assert len(ok) == 3, [r.status_code for r in (f.result() for f in futures)]


def test_micro_batching_gives_one_at_a_time_results(model_dir, images):
    from thyro.use.predict import predict

    files = [images[f"png{k}"] for k in range(5)] + [images["jpg"]]
    ref = {f.name: r.probability for f, r in zip(files, predict(model_dir, files, progress=False).rows)}
    app = create_app(model_dir, max_batch=8, batch_wait_ms=200)
    batcher = app.state.service.batcher
    with LiveServer(app) as live, ThreadPoolExecutor(len(files)) as pool:
        results = list(pool.map(lambda f: _post(live.url, f.read_bytes(), f.name), files))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    for f, r in zip(files, results):
        assert r.json()["probability"] == ref[f.name]  # identical, not merely close
    assert batcher.images == len(files) and batcher.calls < len(files)  # they were scored together


def test_batching_off_scores_one_at_a_time(model_dir, images):
    app = create_app(model_dir, max_batch=1)
    batcher = app.state.service.batcher
    with LiveServer(app) as live, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: _post(live.url, images[f"png{k}"].read_bytes()), range(4)))
    assert [r.status_code for r in results] == [200] * 4
    assert batcher.calls == batcher.images == 4


@pytest.fixture(scope="module")
def onnx_model_dir(model_dir, tmp_path_factory):
    import shutil

    from thyro.use.export import export_onnx

    pytest.importorskip("onnxruntime")
    copy = tmp_path_factory.mktemp("onnxpkg") / "model"
    shutil.copytree(model_dir, copy)
    export_onnx(copy)
    return copy


def test_onnx_engine_serves_without_heatmaps(onnx_model_dir, images):
    from thyro.use.predict import predict

    ref = predict(onnx_model_dir, [images["png0"]], progress=False).rows[0].probability
    with TestClient(create_app(onnx_model_dir, engine="onnx")) as c:
        health = c.get("/health").json()
        assert health["engine"] == "onnx" and health["heatmaps"] is False
        assert "heatmaps need the PyTorch engine" in health["heatmap_note"]
        r = c.post("/predict", files={"file": ("us0.png", images["png0"].read_bytes(), "image/png")},
                   data={"heatmap": "true"})
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["heatmap_png"] is None and "heatmaps need the PyTorch engine" in j["warning"]
        assert j["probability"] == pytest.approx(ref, abs=1e-5)


def test_an_onnx_server_never_imports_torch(onnx_model_dir, images):
    code = ("import sys\n"
            "from fastapi.testclient import TestClient\n"
            "from thyro.use.serve import create_app\n"
            f"app = create_app({str(onnx_model_dir)!r}, engine='onnx')\n"
            "with TestClient(app) as c:\n"
            f"    r = c.post('/predict', files={{'file': ('us0.png', open({str(images['png0'])!r}, 'rb').read())}},\n"
            "               data={'heatmap': 'true', 'preprocessed': 'true'})\n"
            "    assert r.status_code == 200 and r.json()['preprocessed_png'], r.text\n"
            "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"


def test_onnx_engine_without_an_exported_graph_is_a_clear_error(model_dir):
    from thyro.errors import ModelPackageError

    with pytest.raises(ModelPackageError, match="thyro export"):
        create_app(model_dir, engine="onnx")


def test_cli_serve_options(model_dir, monkeypatch, tmp_path, capsys):
    from thyro.cli import main
    from thyro.use import serve as serve_mod

    pytest.importorskip("onnxruntime")
    seen = {}
    monkeypatch.setattr(serve_mod, "serve", lambda model, settings: seen.update(settings=settings, model_dir=model))
    graph = tmp_path / "exported.onnx"
    options = ["--engine", "onnx", "--max-batch", "4", "--queue", "3", "--max-concurrency", "2", "--batch-wait-ms",
               "2", "--openapi", "--max-upload-mb", "1.5", "--max-reading", "5", "--body-deadline", "20", "--point",
               "sens90", "--onnx-file", str(graph)]
    assert main(["serve", str(model_dir), *options]) == 2 and not seen  # no graph there: said in the flags' words
    err = capsys.readouterr().err
    assert "ONNX model not found" in err and "--onnx-file" in err and "onnx_path" not in err
    graph.write_bytes(b"")  # there (the stand-in for serve never loads it)
    assert main(["serve", str(model_dir), *options]) == 0
    s = seen["settings"]
    assert (s.engine, s.max_batch, s.queue, s.max_concurrency, s.openapi, s.max_reading, s.point, s.onnx_path) == \
        ("onnx", 4, 3, 2, True, 5, "sens90", graph)
    assert s.max_upload_bytes == int(1.5 * 1024 * 1024) and s.body_deadline_s == 20.0
    assert json.dumps(s.batch_wait_ms) == "2.0"


def test_cli_refuses_what_typer_cannot_check_naming_its_flags(model_dir, monkeypatch, capsys):
    from thyro.cli import main
    from thyro.use import serve as serve_mod

    monkeypatch.setattr(serve_mod, "serve", lambda *a, **k: pytest.fail("started"))
    assert main(["serve", str(model_dir), "--engine", "tensorrt"]) == 2  # typer's choice
    assert "--engine" in capsys.readouterr().err
    assert main(["serve", str(model_dir), "--token", "short"]) == 2  # the settings' own check
    err = capsys.readouterr().err
    assert "--token is 5 characters long; use at least 16" in err and "short" not in err
