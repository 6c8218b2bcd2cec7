"""``thyro serve`` under load, slow clients and hostile uploads: this tree against a baseline tree
(``--baseline``, default ``main``), measured in the same run on the same machine.

Servers are started with ``thyro serve`` (uvicorn, each in its own process, its own ``TMPDIR``) on model
packages of seeded random ResNet-18 fold models (speed does not depend on the weights' values):

* ``onnx``: 224 px, exported to ONNX, ``--engine onnx``, no heatmap (the goal: at least 30 requests/s
  with p99 under 1 s at 16 clients on 2 cores);
* ``heatmap``: 64 px, ``--engine torch``, every request asks for the Grad-CAM heatmap (the goal: at
  least 3x the baseline's requests/s);
* with ``--all`` also ``torch``: 224 px, PyTorch, no heatmap.

Each scenario runs one server from this tree and one from the baseline tree (``git archive REF src``
into a temporary folder: nothing in the working tree changes), both with micro-batching on (``--max-batch
8``).  ``--clients`` concurrent clients (asyncio + httpx, in this process) send ``--requests`` ``POST
/predict`` per server per round of a 448 x 448 PNG rendered by the thyroid phantom (scanner frame,
settings text, depth scale, a caliper label: what preprocessing meets in a clinic's export; ``--image
noise`` sends the earlier benchmark's 560 x 360 speckle image instead, which the mark detector takes
for 96 % marks); ``--rounds`` rounds, the servers interleaved within each round (the order reversed every
other round) so that machine noise hits them alike.  Reported: requests/s (median over rounds), p50 and
p99 latency (over every request of every round), the server's peak resident memory (``VmHWM``), and the
CPU time per request of the server and of the clients, from which the rate the machine's cores would
sustain with nothing else running follows (a shared machine slows the first figures; CPU time per
request barely changes).

Then the guards, against each ``onnx`` server: ``--idle`` connections that send a partial request head
and stall (how many the server still holds after 15 s, and whether a normal request is answered while
they are open); ``--slow-bodies`` connections that send a complete request head and then one body byte
every ``--slow-every`` seconds, while ``--slow-requests`` normal requests are sent one after another
(their statuses and latency, median and max, over ``--slow-rounds`` rounds with the servers interleaved;
a request not answered within ``--slow-timeout`` seconds ends the round); and whether a server bound to
``0.0.0.0`` without a token starts.  ``--hostile`` adds
hostile uploads to this tree's servers, the peak memory reset before each (``/proc/PID/clear_refs``): a
13000 x 13000 grey PNG "decompression bomb", a 3 GB chunked upload stream (no ``Content-Length``) with
the bytes the client got to send and the most bytes the server had on disk in its temporary folder
while it did, and the largest image the pixel limit accepts (a 25-megapixel JPEG).

Usage::

    python benchmarks/serve_load.py                      # this tree against main
    python benchmarks/serve_load.py --rounds 5 --requests 240 --baseline HEAD~3 --hostile
    python benchmarks/serve_load.py --scenarios onnx --rounds 0 --idle 0 --slow-rounds 5   # slow bodies only
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: scenario: (package size, engine, heatmap)
SCENARIOS = {"onnx": (224, "onnx", False), "heatmap": (64, "torch", True), "torch": (224, "torch", False)}


def build_package(root: Path, size: int, folds: int, onnx: bool = True) -> Path:
    """A model package of ``folds`` seeded random ResNet-18 models at ``size`` px (with its ONNX export)."""
    from thyro.models import build_model, save_model
    from thyro.use.bundle import write_package
    from thyro.use.export import export_onnx

    root.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(folds):
        model, _ = build_model("resnet18", "none", seed=k)
        files.append(save_model(root / f"fold{k}.safetensors", model.eval()))
    pkg = write_package(root / "model", model_files=files, preprocess={"size": size},
                        operating={"youden": {"threshold": 0.5, "rule": "fixed 0.5 (benchmark)"}},
                        data={"note": "benchmark package, random weights"})
    if onnx:
        export_onnx(pkg)
    return root / "model"


def phantom_png(root: Path) -> bytes:
    """A 448 x 448 phantom scan with the scanner frame, settings text and burned-in marks."""
    from thyro.data.phantom import generate_cohort

    manifest = generate_cohort(root / "phantom", n_patients=3, images_per_patient=(1, 1), size=448, seed=3, marks=True)
    return (manifest.parent / "images" / "P0003_v1.png").read_bytes()


def ultrasound_png(seed: int = 1) -> bytes:
    """The earlier benchmark's input: 560 x 360 gamma speckle on black (``--image noise``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.zeros((360, 560), np.uint8)
    img[20:340, 60:500] = np.clip(rng.gamma(2.0, 45.0, size=(320, 440)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def baseline_tree(ref: str, root: Path) -> Path:
    """``REF``'s ``src`` folder extracted into ``root`` (``git archive``; the working tree is untouched)."""
    out = root / "baseline"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "src"


def bomb_png(width: int = 13000, height: int = 13000) -> bytes:
    """A grey PNG of ``width`` x ``height`` zeros, compressed row by row (never held decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def large_jpeg(megapixels: float = 24.9) -> bytes:
    from PIL import Image

    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(megapixels * 1e6 / w)
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, size=(h // 16 + 1, w // 16 + 1), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Server:
    """``python -m thyro serve`` from one tree in a subprocess, with its own temporary folder."""

    def __init__(self, pkg: Path, engine: str, tree: str, src: Path, root: Path, scenario: str, max_batch: int = 8,
                 heatmap: bool = False, extra: tuple[str, ...] = ()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = f"{scenario}: {tree}"
        self.heatmap = heatmap
        self.tmp = root / f"tmp-{scenario}-{tree}"
        self.tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONPATH": str(src)}
        cmd = [sys.executable, "-m", "thyro", "serve", str(pkg), "--port", str(self.port), "--engine", engine,
               "--max-batch", str(max_batch), "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: not ready after {timeout} s")

    def status(self, field: str) -> float:
        """A ``/proc/PID/status`` memory field, in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connections(self) -> int:
        """Established TCP connections the server process holds."""
        return sum(1 for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir()
                   if os.readlink(fd).startswith("socket:")) - 1  # less the listening socket

    def temp_bytes(self) -> int:
        """Bytes in files the server holds open in its temporary folder, deleted ones included (Python's
        spooled uploads are unlinked at once: only ``/proc/PID/fd`` sees them)."""
        total = 0
        fds = Path(f"/proc/{self.proc.pid}/fd")
        try:
            entries = list(fds.iterdir())
        except OSError:
            return 0
        for fd in entries:
            try:
                target = os.readlink(fd)
                if target.startswith(str(self.tmp)) or target.startswith("/tmp/#") or "(deleted)" in target:
                    st = os.stat(fd)
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
            except OSError:
                continue
        return total + sum(p.stat().st_size for p in self.tmp.rglob("*") if p.is_file())

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(url: str, png: bytes, n: int, clients: int, heatmap: bool = False) -> tuple[float, list[float], int]:
    """``n`` POST /predict from ``clients`` concurrent clients: (wall seconds, latencies, failures)."""
    import httpx

    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def client(c: httpx.AsyncClient):
        nonlocal failures
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            r = await c.post(url + "/predict", files={"file": ("us.png", png, "image/png")},
                             data={"heatmap": "true" if heatmap else "false"})
            latencies.append(time.perf_counter() - t)
            failures += r.status_code != 200 or (heatmap and not r.json().get("heatmap_png"))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return wall, latencies, failures


def idle_connections(server: Server, png: bytes, n: int, wait: float = 15.0) -> dict:
    """Open ``n`` connections that send half a request head and stall; after ``wait`` seconds, how many the
    server still holds, and whether a normal request was answered meanwhile (and how fast)."""
    import httpx

    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data")
        socks.append(s)
    time.sleep(0.5)
    held_at_start = server.connections()
    t = time.perf_counter()
    try:
        r = httpx.post(server.url + "/predict", files={"file": ("us.png", png, "image/png")},
                       data={"heatmap": "false"}, timeout=60)
        answered = (r.status_code, time.perf_counter() - t)
    except httpx.HTTPError as exc:
        answered = (type(exc).__name__, time.perf_counter() - t)
    time.sleep(max(0.0, wait - (time.perf_counter() - t)))
    held = server.connections()
    for s in socks:
        s.close()
    return {"held_at_start": held_at_start, "held_after": held, "answered": answered}


def slow_bodies(server: Server, png: bytes, n: int, every: float, requests: int, timeout: float) -> dict:
    """``n`` connections send a complete ``POST /predict`` head and the start of a multipart body (the file
    part's headers), then one byte of the file every ``every`` seconds;
    meanwhile ``requests`` normal requests, one after another: their statuses and latencies (a request
    not answered within ``timeout`` seconds is recorded as such and ends the run)."""
    import httpx

    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=slow\r\n\r\n"
            b"--slow\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.png\"\r\n\r\n")
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(head)
        socks.append(sock)
    stop = threading.Event()

    def drip():
        while not stop.wait(every):
            for sock in socks:
                try:
                    sock.sendall(b"x")  # the file's next byte
                except OSError:
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    time.sleep(every + 0.5)  # every slow body has started and dripped once
    statuses, latencies = [], []
    try:
        with httpx.Client(timeout=timeout) as client:
            for _ in range(requests):
                t = time.perf_counter()
                try:
                    r = client.post(server.url + "/predict", files={"file": ("us.png", png, "image/png")},
                                    data={"heatmap": "false"})
                    statuses.append(r.status_code)
                except httpx.TimeoutException:
                    statuses.append("timeout")
                latencies.append(time.perf_counter() - t)
                if statuses[-1] == "timeout":
                    break
    finally:
        stop.set()
        dripper.join()
        for sock in socks:
            sock.close()
    return {"statuses": statuses, "latencies": latencies}


def slow_bodies_report(servers: list[Server], png: bytes, args) -> None:
    """:func:`slow_bodies` for each server, ``--slow-rounds`` rounds, the servers interleaved."""
    print(f"\nslow bodies: {args.slow_bodies} connections send a request head, then one body byte every "
          f"{args.slow_every:g} s; meanwhile {args.slow_requests} normal requests one after another "
          f"(client timeout {args.slow_timeout:g} s); {args.slow_rounds} rounds")
    runs: dict[str, list[dict]] = {s.name: [] for s in servers}
    for r in range(args.slow_rounds):
        for s in (servers if r % 2 == 0 else servers[::-1]):
            runs[s.name].append(slow_bodies(s, png, args.slow_bodies, args.slow_every, args.slow_requests,
                                            args.slow_timeout))
            time.sleep(1.0)  # the closed slow connections are gone before the next server's round
        print(f"round {r + 1} (load average {os.getloadavg()[0]:.1f}): " + ", ".join(
            f"{name} median {1000 * statistics.median(v[-1]['latencies']):.0f} ms" for name, v in runs.items()),
            flush=True)
    print("\n| server | normal requests answered | statuses | latency median (per-round medians, ms) | max |")
    print("| --- | ---: | --- | --- | ---: |")
    for name, rounds in runs.items():
        lat = [x for run in rounds for x in run["latencies"]]
        statuses = [st for run in rounds for st in run["statuses"]]
        counts = ", ".join(f"{k}: {statuses.count(k)}" for k in sorted(set(statuses), key=str))
        per_round = ", ".join(f"{1000 * statistics.median(run['latencies']):.0f}" for run in rounds)
        print(f"| {name} | {statuses.count(200)} of {len(statuses)} sent | {counts} | "
              f"{1000 * statistics.median(lat):.0f} ms ({per_round}) | {1000 * max(lat):.0f} ms |")


def open_bind(src: Path, pkg: Path, root: Path) -> str:
    """Whether ``thyro serve --host 0.0.0.0`` (no token) from ``src`` starts: its first words, or "started"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(root), "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-m", "thyro", "serve", str(pkg), "--host", "0.0.0.0", "--port", str(port),
                             "--engine", "onnx", "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=60)
        return "refused: " + " ".join(out.split())[:160]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "started (answers anyone on the network)"


def chunked_stream(server: Server, total: int = 3 * 1024**3, chunk: int = 1 << 20) -> dict:
    """Stream ``total`` bytes as a chunked multipart upload until the server answers or closes."""
    disk_max = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            disk_max[0] = max(disk_max[0], server.temp_bytes())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    boundary = "thyrobench"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()
    sent, reply, t0 = 0, b"", time.perf_counter()
    block = b"\0" * chunk
    frame = f"{chunk:x}\r\n".encode() + block + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     + f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
                     + f"{len(head):x}\r\n".encode() + head + b"\r\n")
        sock.settimeout(5)
        try:
            while sent < total:
                sock.sendall(frame)
                sent += chunk
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            pass
        try:
            reply = sock.recv(4096)
        except OSError:
            reply = b""
    stop.set()
    watcher.join()
    status = reply.split(b"\r\n", 1)[0].decode(errors="replace") if reply else "connection closed"
    return {"status": status, "sent_mb": sent / 2**20, "seconds": time.perf_counter() - t0,
            "disk_max_mb": disk_max[0] / 2**20}


def hostile(server: Server, bomb: bytes, jpeg: bytes) -> dict:
    import httpx

    out = {}
    server.reset_peak()
    t = time.perf_counter()
    r = httpx.post(server.url + "/predict", files={"file": ("bomb.png", bomb, "image/png")}, timeout=120)
    out["bomb"] = (r.status_code, time.perf_counter() - t, server.status("VmHWM"))
    server.reset_peak()
    stream = chunked_stream(server)
    out["stream"] = (stream, server.status("VmHWM"))
    server.reset_peak()
    t = time.perf_counter()
    r = httpx.post(server.url + "/predict", files={"file": ("large.jpg", jpeg, "image/jpeg")},
                   data={"heatmap": "false"}, timeout=300)
    out["large"] = (r.status_code, time.perf_counter() - t, server.status("VmHWM"))
    out["alive"] = httpx.get(server.url + "/health", timeout=10).status_code
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="main", help="git revision of the baseline tree (default main)")
    ap.add_argument("--scenarios", default="onnx,heatmap", help="comma-separated: onnx, heatmap, torch")
    ap.add_argument("--all", action="store_true", help="every scenario")
    ap.add_argument("--folds", type=int, default=1, help="fold models in each package (the ensemble size)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=160, help="requests per server per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image", choices=("phantom", "noise"), default="phantom")
    ap.add_argument("--idle", type=int, default=200, help="stalled connections in the guard check (0: skip)")
    ap.add_argument("--hostile", action="store_true", help="also the hostile uploads (this tree's servers)")
    ap.add_argument("--slow-bodies", type=int, default=20, help="connections trickling a body (0: skip)")
    ap.add_argument("--slow-every", type=float, default=2.0, help="seconds between a slow body's bytes")
    ap.add_argument("--slow-requests", type=int, default=10, help="normal requests per slow-body round")
    ap.add_argument("--slow-rounds", type=int, default=3)
    ap.add_argument("--slow-timeout", type=float, default=30.0, help="client timeout of a normal request (s)")
    args = ap.parse_args()

    import onnxruntime
    import torch

    scenarios = list(SCENARIOS) if args.all else [s.strip() for s in args.scenarios.split(",") if s.strip()]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    base = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline], capture_output=True,
                          text=True).stdout.strip()
    ncpu = len(os.sched_getaffinity(0))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores ({ncpu} usable); load "
          f"average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print(f"trees: this one ({commit}, working tree) against {args.baseline} ({base}); ResNet-18 x {args.folds}; "
          f"{args.clients} concurrent clients, {args.requests} requests per server per round, {args.rounds} rounds; "
          f"image: {args.image}")
    with tempfile.TemporaryDirectory(prefix="thyro-serve-bench-") as tmp:
        root = Path(tmp)
        png = phantom_png(root) if args.image == "phantom" else ultrasound_png()
        trees = {"this tree": REPO / "src", args.baseline: baseline_tree(args.baseline, root)}
        servers: list[Server] = []
        packages = {}
        for scenario in scenarios:
            size, engine, heatmap = SCENARIOS[scenario]
            if size not in packages:
                packages[size] = build_package(root / f"pkg{size}", size, args.folds)
            for tree, src in trees.items():
                servers.append(Server(packages[size], engine, tree, src, root, scenario, heatmap=heatmap))
        try:
            for s in servers:
                s.wait_ready()
                asyncio.run(load(s.url, png, 2 * args.clients, args.clients, s.heatmap))  # warm-up
                s.reset_peak()
            if args.rounds:
                load_rounds(servers, scenarios, trees, png, args, ncpu)
            guarded = [s for s in servers if s.name.startswith("onnx:")] or servers[:2]
            if args.slow_bodies:
                slow_bodies_report(guarded, png, args)
            if args.idle:
                print(f"\nslow clients: {args.idle} connections send half a request head and stall; a normal "
                      "request meanwhile; connections still held after 15 s")
                for s in guarded:
                    g = idle_connections(s, png, args.idle)
                    print(f"| {s.name} | held at start {g['held_at_start']}, after 15 s {g['held_after']} | normal "
                          f"request: {g['answered'][0]} in {g['answered'][1]:.2f} s |")
            pkg = packages.get(224) or next(iter(packages.values()))
            for tree, src in trees.items():
                print(f"--host 0.0.0.0 without a token, {tree}: {open_bind(src, pkg, root)}")
            if args.hostile:
                hostile_uploads([s for s in servers if s.name.endswith("this tree")])
        finally:
            for s in servers:
                s.stop()
            shutil.rmtree(root, ignore_errors=True)


def load_rounds(servers: list[Server], scenarios: list[str], trees: dict, png: bytes, args, ncpu: int) -> None:
    """``--rounds`` rounds of ``--requests`` requests per server, interleaved; the table and the ratios."""
    rates: dict[str, list[float]] = {s.name: [] for s in servers}
    lats: dict[str, list[float]] = {s.name: [] for s in servers}
    fails: dict[str, int] = {s.name: 0 for s in servers}
    cpu: dict[str, list[float]] = {s.name: [0.0, 0.0] for s in servers}  # server, client CPU seconds
    for r in range(args.rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for s in order:
            c0, p0 = s.cpu_seconds(), time.process_time()
            wall, lat, failed = asyncio.run(load(s.url, png, args.requests, args.clients, s.heatmap))
            cpu[s.name][0] += s.cpu_seconds() - c0
            cpu[s.name][1] += time.process_time() - p0
            rates[s.name].append(args.requests / wall)
            lats[s.name].extend(lat)
            fails[s.name] += failed
        print(f"round {r + 1} (load average {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{s.name} {rates[s.name][-1]:.1f}/s" for s in servers), flush=True)
    print(f"\n| server ({args.clients} clients) | requests/s | p50 | p99 | peak RSS | CPU ms per request: server "
          f"+ client | {ncpu} idle cores would serve | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    total = args.rounds * args.requests
    for s in servers:
        q = np.percentile(lats[s.name], [50, 99]) * 1000
        srv, cli = (1000 * v / total for v in cpu[s.name])
        print(f"| {s.name} | {statistics.median(rates[s.name]):.1f} | {q[0]:.0f} ms | {q[1]:.0f} ms | "
              f"{s.status('VmHWM'):.0f} MiB | {srv:.1f} + {cli:.1f} | {1000 * ncpu / (srv + cli):.0f}/s | "
              f"{fails[s.name]} |")
    for scenario in scenarios:
        new, old = (statistics.median(rates[f"{scenario}: {t}"]) for t in trees)
        print(f"{scenario}: this tree / {args.baseline} = {new / old:.2f}x requests/s")


def hostile_uploads(servers: list[Server]) -> None:
    bomb, jpeg = bomb_png(), large_jpeg()
    print(f"\nhostile uploads: PNG bomb 13000x13000 ({len(bomb) / 1024:.0f} KB), 3 GB chunked stream, "
          f"largest accepted image 24.9 MP JPEG ({len(jpeg) / 2**20:.1f} MB); peak RSS reset before each")
    print("\n| server | bomb: status, time, peak RSS | 3 GB stream: answer, sent, server disk peak, "
          "peak RSS | 24.9 MP JPEG: status, time, peak RSS |")
    print("| --- | --- | --- | --- |")
    for s in servers:
        h = hostile(s, bomb, jpeg)
        st, rss = h["stream"]
        print(f"| {s.name} | {h['bomb'][0]}, {h['bomb'][1]:.2f} s, {h['bomb'][2]:.0f} MiB | "
              f"{st['status']}, {st['sent_mb']:.0f} MiB in {st['seconds']:.1f} s, "
              f"{st['disk_max_mb']:.1f} MiB, {rss:.0f} MiB | {h['large'][0]}, {h['large'][1]:.1f} s, "
              f"{h['large'][2]:.0f} MiB |" + ("" if h["alive"] == 200 else " server down"))


if __name__ == "__main__":
    main()
