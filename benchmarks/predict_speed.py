"""Prediction speed: PyTorch eager vs ONNX Runtime, and the web API on loopback.

Measured in one run, on one model package (ResNet-18, random init, 224 px by default; speed does not
depend on the weights' values):

* model latency and throughput for ``--batch-sizes`` (default 1 and 32): ``TorchEngine`` (the fold
  models in eager mode under ``torch.inference_mode``) vs ``OnnxEngine`` (the exported graph in
  onnxruntime), both from a uint8 (B, S, S) batch to probabilities, input adapter included; the
  same number of threads for both (``--threads``, default: all cores); medians over ``--repeats``;
* the web API (``thyro serve``'s app under uvicorn on 127.0.0.1): a bounded load test of
  ``--requests`` POST /predict requests of a 560 x 360 PNG, ``--concurrency`` at a time, with and
  without the Grad-CAM heatmap; requests/s and median latency.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/predict_speed.py
    python benchmarks/predict_speed.py --size 128 --folds 5 --requests 40
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def build_package(root: Path, size: int, folds: int) -> Path:
    """A model package of ``folds`` random-init ResNet-18 models at ``size`` px."""
    from thyro.models import build_model, save_model
    from thyro.use.bundle import write_package

    files = []
    for k in range(folds):
        model, _ = build_model("resnet18", "none", seed=k)
        files.append(save_model(root / f"fold{k}.safetensors", model.eval()))
    write_package(root / "model", model_files=files, preprocess={"size": size},
                  operating={"youden": {"threshold": 0.5, "rule": "fixed 0.5 (benchmark)"}},
                  data={"note": "benchmark package, random weights"})
    return root / "model"


def time_engine(engine, batch: np.ndarray, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        engine(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        engine(batch)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_engines(pkg_dir: Path, batch_sizes: list[int], repeats: int, threads: int) -> None:
    import torch

    from thyro.use.bundle import load_package
    from thyro.use.export import export_onnx
    from thyro.use.engines import OnnxEngine, TorchEngine

    torch.set_num_threads(threads)
    package = load_package(pkg_dir)
    res = export_onnx(package)
    print(f"ONNX export: opset {res['opset']}, largest difference from PyTorch {res['max_diff']:.2e}")
    engines = {"torch": TorchEngine(package.load_torch_models()), "onnx": OnnxEngine(package.onnx_path, threads=threads)}
    size = package.image_size
    rng = np.random.default_rng(0)
    print(f"\n{'batch':>5} {'engine':>7} {'latency ms':>11} {'images/s':>9}   onnx/torch speed-up")
    for b in batch_sizes:
        batch = rng.integers(0, 256, size=(b, size, size), dtype=np.uint8)
        med = {name: time_engine(eng, batch, repeats) for name, eng in engines.items()}
        for name, t in med.items():
            print(f"{b:>5} {name:>7} {1000 * t:>11.1f} {b / t:>9.1f}", end="")
            print(f"   {med['torch'] / med['onnx']:.2f}x" if name == "onnx" else "")


def bench_web(pkg_dir: Path, n_requests: int, concurrency: int) -> None:
    import httpx
    import uvicorn
    from PIL import Image

    from thyro.use.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(pkg_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    rng = np.random.default_rng(1)
    img = np.zeros((360, 560), np.uint8)
    img[20:340, 60:500] = np.clip(rng.gamma(2.0, 45.0, size=(320, 440)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    png = buf.getvalue()
    url = f"http://127.0.0.1:{port}/predict"
    print(f"\nweb API: POST /predict of a 560 x 360 PNG ({len(png) // 1024} KB), {n_requests} requests, "
          f"{concurrency} concurrent, uvicorn on loopback")
    try:
        with httpx.Client(timeout=120) as client:
            for heatmap in ("false", "true"):
                def one(_, heatmap=heatmap):
                    t = time.perf_counter()
                    r = client.post(url, files={"file": ("us.png", png, "image/png")}, data={"heatmap": heatmap})
                    r.raise_for_status()
                    return time.perf_counter() - t

                list(ThreadPoolExecutor(concurrency).map(one, range(concurrency)))  # warm-up
                t0 = time.perf_counter()
                with ThreadPoolExecutor(concurrency) as pool:
                    lat = list(pool.map(one, range(n_requests)))
                wall = time.perf_counter() - t0
                print(f"  heatmap={heatmap:<5}  {n_requests / wall:6.1f} requests/s   median latency "
                      f"{1000 * statistics.median(lat):7.1f} ms")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--folds", type=int, default=1, help="fold models in the package (the ensemble size)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--skip-web", action="store_true")
    args = ap.parse_args()

    import onnxruntime
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {sys.version.split()[0]}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; threads {args.threads}")
    print(f"model: ResNet-18 x {args.folds} fold model(s), {args.size} px, one logit, input adapter included")
    with tempfile.TemporaryDirectory(prefix="thyro-bench-") as tmp:
        pkg = build_package(Path(tmp), args.size, args.folds)
        bench_engines(pkg, args.batch_sizes, args.repeats, args.threads)
        if not args.skip_web:
            torch.set_num_threads(args.threads)
            bench_web(pkg, args.requests, args.concurrency)


if __name__ == "__main__":
    main()
