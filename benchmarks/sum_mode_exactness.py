"""How close a one-channel model (``in_chans_mode: sum``) is to the three-channel one it comes from.

Keras ResNet50 (Caffe BGR normalisation) and DenseNet121 (ImageNet mean/std), with synthetic Keras
weights of the real layer names and shapes (``tests/models/keras_ref.py``); grey inputs in [0, 1].
Three ways to make the one-channel first convolution, all computed with
:func:`thyro.models.weights.report.fold_input_normalisation`:

* ``averaged``: the RGB kernels summed, the image normalised with the channels' average mean and std
  (what thyro did before the folding);
* ``folded, identity``: the per-channel normalisation folded into the kernel and the first
  BatchNorm, the adapter passing ``x`` unchanged (mean 0, std 1);
* ``folded (thyro)``: folded, the adapter applying one ``(x - m) / s`` chosen so that the folded
  shift vanishes for kernels whose channels are equal (:meth:`thyro.models.InputSpec.folded`).

Relative error = max |one-channel - three-channel| / max |three-channel|, at the first BatchNorm's
output (away from the border: 2 pixels in; and the whole map) and at the pooled features.

Usage::

    python benchmarks/sum_mode_exactness.py --size 224
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))


def variant(rep, arch: str, how: str):
    """A one-channel copy of the three-channel ``rep`` made the way ``how`` says."""
    from thyro.models import InputSpec, ThyroNet
    from thyro.models.backbones import first_conv_weight_key
    from thyro.models.model import build_backbone_for
    from thyro.models.weights.report import fold_input_normalisation

    spec = rep.input_spec
    mean, std = spec.channel_mean_std()
    if how == "averaged":
        m, s = float(np.mean(mean)), float(np.mean(std))
        mean, std, target = [m] * 3, [s] * 3, (m, s)
    elif how == "identity":
        target = (0.0, 1.0)
    else:
        (m,), (s,) = spec.folded().channel_mean_std()
        target = (m, s)
    state = fold_input_normalisation(dict(rep.backbone.state_dict()), arch, mean, std, target)
    backbone = build_backbone_for(arch, channels=1, layout=rep.layout, seed=0)
    backbone.load_state_dict(state)
    one_spec = InputSpec(channels=1, mode="mean_std", mean=(target[0],) * 3, std=(target[1],) * 3,
                         input_size=spec.input_size)
    assert backbone.get_submodule(first_conv_weight_key(arch)[:-7]).in_channels == 1
    return ThyroNet(backbone, one_spec, arch, layout=rep.layout).eval()


def first_norm(model, x, name):
    seen = {}
    h = model.backbone.get_submodule(name).register_forward_hook(lambda m, i, o: seen.update(o=o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen["o"]


def rel(a, b) -> float:
    return float((a - b).abs().max() / a.abs().max())


def main() -> None:
    from keras_ref import keras_densenet121_features, synthetic_resnet50_layers, write_keras_h5

    from thyro.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r50 = Path(tmp) / "r50.h5"
        write_keras_h5(r50, synthetic_resnet50_layers(seed=0))
        d121 = Path(tmp) / "d121.h5"
        grey = np.random.default_rng(2).uniform(0, 1, (1, 32, 32))
        _, layers = keras_densenet121_features(np.repeat(grey[..., None], 3, -1), rng=np.random.default_rng(0))
        write_keras_h5(d121, layers, layout="model.save", weightless=("input_1", "zero_padding2d"))
        x = torch.rand(args.images, 1, args.size, args.size, generator=torch.Generator().manual_seed(1))
        print(f"grey inputs {args.images} x {args.size} px; relative error of the one-channel model")
        print("\n| model | one-channel first layer | first BatchNorm, interior | first BatchNorm, whole map "
              "| pooled features |")
        print("| --- | --- | ---: | ---: | ---: |")
        for arch, path, norm in (("resnet50", r50, "bn1"), ("densenet121", d121, "features.norm0")):
            rep, _ = build_model(arch, f"radimagenet:{path}")
            rep.eval()
            a = first_norm(rep, x, norm)
            with torch.no_grad():
                fa = rep.forward_features(x)
            inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
            for how, label in (("averaged", "averaged normalisation (before)"),
                               ("identity", "folded, identity adapter"),
                               ("thyro", "folded, one (x - m) / s (thyro)")):
                one = variant(rep, arch, how)
                b = first_norm(one, x, norm)
                with torch.no_grad():
                    fb = one.forward_features(x)
                print(f"| {arch} | {label} | {rel(a[inner], b[inner]):.1e} | {rel(a, b):.1e} | {rel(fa, fb):.1e} |")
            built, _ = build_model(arch, f"radimagenet:{path}", in_chans_mode="sum")
            with torch.no_grad():
                assert rel(fa, built.eval().forward_features(x)) == rel(fa, variant(rep, arch, "thyro")
                                                                       .forward_features(x))


if __name__ == "__main__":
    main()
