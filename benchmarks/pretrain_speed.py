"""Pretraining throughput (images/s): 1 vs 2 processes on the CPU, or ResNet-18 at 224 px on a GPU.

CPU mode (default)
    Writes a small synthetic corpus, builds its image cache once (``thyro pretrain --prepare-only``),
    then runs the real command with the same global batch on the same CPU cores: ``thyro pretrain`` as
    one process with ``--threads P`` (the baseline), ``torchrun --nproc_per_node P -m thyro pretrain``
    with ``--threads 1`` each (Gloo, CPU SyncBatchNorm), and one process with one thread.  Reports the
    median of the per-epoch images/s from ``log.csv`` (the first epoch left out as warm-up) and the
    ratio to the baseline.

GPU mode (``--device cuda``)
    ResNet-18 (timm, random init), 224 px, one process: optimisation steps per second, reported as
    images/s, for (a) batches already on the GPU (the model's ceiling), (b) uint8 batches copied from
    pinned host memory every step (thyro's loader path: memory-mapped cache -> pinned -> GPU), and
    (c) (b) plus thyro's batch-wise augmentation on the GPU when the full package is installed.
    Imports only numpy, torch and timm for (a) and (b); (c) imports ``thyro.train.augment`` (pydantic,
    PyYAML) and is skipped when that fails.  Works after
    ``pip install --no-deps -e .`` on a machine that has torch and timm.

Usage::

    python benchmarks/pretrain_speed.py                       # CPU, 1 vs 2 processes
    python benchmarks/pretrain_speed.py --size 64 --images 256 --epochs 3
    python benchmarks/pretrain_speed.py --device cuda         # GPU, ResNet-18 at 224 px
    python benchmarks/pretrain_speed.py --device cuda --batch-size 512 --amp bf16 --compile
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------------------------------------ CPU


def _write_corpus(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """A synthetic radiology corpus in RadImageNet's layout (the package's phantom when available)."""
    try:
        from thyro.data.phantom import CORPUS_CLASSES, generate_corpus

        classes = list(CORPUS_CLASSES[:4])
        generate_corpus(root, n_per_class=max(1, n // len(classes)), size=max(64, size), seed=seed, classes=classes)
        return root
    except ImportError:
        from PIL import Image

        rng = np.random.default_rng(seed)
        for k in range(4):
            folder = root / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n // 4):
                img = (rng.random((size, size)) * 80).astype(np.uint8)
                img[:, k::4] += 120
                Image.fromarray(img).save(folder / f"{i:05d}.png")
        return root


def _run(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}")


def _epoch_rates(log_csv: Path) -> list[float]:
    with open(log_csv, newline="") as fh:
        return [float(r["images_per_second"]) for r in csv.DictReader(fh)]


def cpu_mode(args) -> None:
    procs = args.procs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    with tempfile.TemporaryDirectory(prefix="thyro-pretrain-bench-") as tmp:
        tmp = Path(tmp)
        corpus = _write_corpus(tmp / "corpus", args.images, args.size)
        common = [str(corpus), "--size", str(args.size), "--epochs", str(args.epochs), "--batch-size",
                  str(args.batch_size), "--device", "cpu", "--cache-dir", str(tmp / "cache"), "--restart",
                  "--optimizer", "sgd", "--lr", "0.05"]
        thyro = [sys.executable, "-m", "thyro", "--quiet", "pretrain"]
        _run(thyro + common + ["--out", str(tmp / "prep.safetensors"), "--prepare-only"], env)
        settings = {f"1 process x {procs} threads": (thyro, procs),
                    f"{procs} processes x 1 thread": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                       "--nproc_per_node", str(procs), "-m", "thyro", "--quiet",
                                                       "pretrain"], 1),
                    "1 process x 1 thread": (thyro, 1)}
        results: dict[str, list[float]] = {name: [] for name in settings}
        for rep in range(args.repeats):
            walls = []
            for k, (name, (launcher, threads)) in enumerate(settings.items()):
                out = tmp / f"run{rep}-{k}.safetensors"
                t0 = time.perf_counter()
                _run(launcher + common + ["--out", str(out), "--threads", str(threads)], env)
                walls.append(f"{name} {time.perf_counter() - t0:.1f} s")
                results[name] += _epoch_rates(out.with_name(f"run{rep}-{k}.pretrain") / "log.csv")[1:]
            print(f"  repeat {rep + 1}, wall time with start-up: " + "; ".join(walls))
    import torch

    print(f"\npretraining throughput, CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}); resnet18 supervised, {args.size} px, global batch {args.batch_size}, "
          f"{args.images} images, {args.epochs} epochs x {args.repeats} repeat(s), first epoch of each run left out; "
          f"load average {os.getloadavg()[0]:.1f}")
    base = statistics.median(next(iter(results.values())))
    for name, rates in results.items():
        med = statistics.median(rates)
        print(f"  {name:<28} {med:8.1f} images/s  (median of {len(rates)} epochs; range {min(rates):.1f}-"
              f"{max(rates):.1f})  x{med / base:.2f}")


# ------------------------------------------------------------------------------------------------ GPU


def _time_steps(step, n_steps: int, windows: int, sync) -> list[float]:
    out = []
    for _ in range(windows):
        sync()
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def gpu_mode(args) -> None:
    import timm
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    b, s, n_classes = args.batch_size, args.size, 165
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[args.amp]
    model = timm.create_model("resnet18", pretrained=False, num_classes=n_classes).to(device)
    model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    scale = torch.tensor([1 / 0.25] * 3, device=device).view(1, 3, 1, 1)
    shift = torch.tensor([-0.5 / 0.25] * 3, device=device).view(1, 3, 1, 1)
    gen = torch.Generator(device=device).manual_seed(0)
    on_gpu = torch.randint(0, 256, (b, s, s), dtype=torch.uint8, device=device, generator=gen)
    host = torch.randint(0, 256, (4, b, s, s), dtype=torch.uint8).pin_memory()
    labels = torch.randint(0, n_classes, (b,), device=device, generator=gen)
    augment = None
    try:
        from thyro.config import AugmentConfig
        from thyro.train.augment import BatchAugment

        augment = BatchAugment(AugmentConfig())
    except ImportError as exc:
        print(f"(augmentation timing skipped: {exc})")
    state = {"i": 0}

    def step_from(x_u8: torch.Tensor, aug: bool) -> None:
        x = x_u8.unsqueeze(1).float().div_(255.0)
        if aug:
            x = augment(x, gen)
        x = (x * scale + shift).contiguous(memory_format=torch.channels_last)  # grey repeated to 3 channels
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(fwd(x).float(), labels)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def resident() -> None:
        step_from(on_gpu, False)

    def from_host(aug: bool = False) -> None:
        state["i"] = (state["i"] + 1) % len(host)
        step_from(host[state["i"]].to(device, non_blocking=True), aug)

    cases = [("batch already on the GPU", resident), ("uint8 batch from pinned host memory", from_host)]
    if augment is not None:
        cases.append(("... plus thyro's GPU augmentation", lambda: from_host(True)))
    print(f"ResNet-18 pretraining step, {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"timm {timm.__version__}; {s} px, batch {b}, amp {args.amp}, channels_last"
          + (", torch.compile" if args.compile else "") + f", {n_classes} classes, SGD")
    sync = torch.cuda.synchronize
    base = None
    for name, fn in cases:
        for _ in range(args.warmup):
            fn()
        times = _time_steps(fn, args.steps, args.repeats, sync)
        rate = b * args.steps / statistics.median(times)
        base = base or rate
        print(f"  {name:<40} {rate:9.0f} images/s  (median of {args.repeats} x {args.steps} steps)"
              f"  x{rate / base:.2f}")
    mem = torch.cuda.max_memory_allocated() / 2**30
    print(f"  peak GPU memory {mem:.1f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--size", type=int, default=None, help="image side (default 64 on CPU, 224 on GPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="global batch (default 32 CPU, 256 GPU)")
    ap.add_argument("--images", type=int, default=256, help="CPU: corpus size")
    ap.add_argument("--epochs", type=int, default=3, help="CPU: epochs per run (the first is left out)")
    ap.add_argument("--procs", type=int, default=2, help="CPU: processes to compare with one")
    ap.add_argument("--repeats", type=int, default=None, help="CPU: runs per setting; GPU: timing windows")
    ap.add_argument("--steps", type=int, default=30, help="GPU: steps per timing window")
    ap.add_argument("--warmup", type=int, default=15, help="GPU: untimed steps first")
    ap.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="GPU: autocast dtype")
    ap.add_argument("--compile", action="store_true", help="GPU: torch.compile the model")
    args = ap.parse_args()
    if args.device == "cuda":
        args.size = args.size or 224
        args.batch_size = args.batch_size or 256
        args.repeats = args.repeats or 5
        gpu_mode(args)
    else:
        args.size = args.size or 64
        args.batch_size = args.batch_size or 32
        args.repeats = args.repeats or 1
        cpu_mode(args)


if __name__ == "__main__":
    main()
