"""The server guarded: a token beyond loopback (or --insecure on purpose), slow clients dropped (request
head and body timeouts), uploads that never outlive their request (nor a killed server), and heatmaps
drawn per micro-batch with the same result as one at a time."""

from __future__ import annotations

import base64
import os
import signal
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
from PIL import Image

from thyro.errors import ThyroError
from thyro.use.serve import create_app

from .conftest import LiveServer, free_port, tempdir_at

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
        with pytest.raises(ThyroError, match="--token or THYRO_SERVE_TOKEN.*--insecure"):
            serve(model_dir, host=host)
    assert seen == {}  # refused before anything was bound
    assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) != 0
    assert "--insecure" in capsys.readouterr().err and seen == {}
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
    with LiveServer(create_app(model_dir), header_timeout_s=1.0) as live:
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


# ------------------------------------------------------------------------------------------------
# uploads

def test_uploads_stay_in_memory_while_parsed(model_dir):
    from starlette.formparsers import MultiPartParser

    create_app(model_dir, max_upload_bytes=5_000_000)
    assert MultiPartParser.spool_max_size >= 5_000_000  # the parser never spools a permitted upload to disk


def _big_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size=(3000, 4000), dtype=np.uint8)).save(path, compress_level=0)
    return path


@pytest.mark.slow
def test_a_killed_servers_uploads_are_removed_by_the_next_server(model_dir, tmp_path, capfd, monkeypatch):
    """kill -9 while an upload is on disk: it stays (nothing could remove it) until the next server starts
    with the same temporary folder, which removes it and says so; a live server's folder is kept."""
    from thyro import console

    monkeypatch.setitem(console._state, "quiet", False)  # an earlier command in this process may have set it
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "thyro", "serve", str(model_dir), "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    upload = _big_png(tmp_path / "big.png").read_bytes()
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        sender = threading.Thread(target=lambda: _quiet_post(port, upload), daemon=True)
        sender.start()
        on_disk: list[Path] = []
        deadline = time.time() + 60
        while not on_disk and time.time() < deadline:
            on_disk = [p for p in tmp.rglob("*") if p.is_file()]
            time.sleep(0.001)
        assert on_disk, "the upload never reached the server's folder"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert all(p.exists() for p in on_disk)  # the killed server left its patient image behind
    with tempdir_at(tmp):
        live_folder = tmp / f"thyro-serve-{__import__('thyro.fileio').fileio.host_tag()}-{os.getpid()}-abcdefgh"
        live_folder.mkdir()  # a running server's (this process's): never touched
        capfd.readouterr()
        with TestClient(create_app(model_dir)):
            pass
    assert not any(p.exists() for p in on_disk) and live_folder.is_dir()
    err = capfd.readouterr().err
    assert "removed 1 upload folder(s) left by servers that were stopped mid-request" in err


def _quiet_post(port: int, data: bytes) -> None:
    try:
        httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": ("big.png", data, "image/png")}, timeout=60)
    except httpx.HTTPError:
        pass


# ------------------------------------------------------------------------------------------------
# heatmaps per micro-batch

def test_heatmaps_are_drawn_per_batch_with_one_at_a_time_results(model_dir, images):
    from thyro.use.explain import heatmaps
    from thyro.use.inputs import InputItem, prepare_item

    app = create_app(model_dir, max_batch=8, batch_wait_ms=300)
    service = app.state.service
    files = [images[f"png{k}"] for k in range(5)]
    inputs = [prepare_item(service.pre, InputItem(f, f.name, None), service.package.image_size).image for f in files]
    with ThreadPoolExecutor(len(inputs)) as pool:
        got = list(pool.map(lambda img: service.batcher(img, heatmap=True), inputs))
    assert service.batcher.heatmap_images == 5 and service.batcher.heatmap_calls < 5  # drawn together
    for img, (prob, cam) in zip(inputs, got):
        assert prob == service.batcher(img)  # the same probability as without a heatmap
        np.testing.assert_allclose(cam, heatmaps(service.models, img[None], service.method)[0], atol=1e-5)
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
