"""Check a weight mapping, and a file's input normalisation, against its own BatchNorm statistics.

A trained network's BatchNorm layers store the mean and variance of their input over the training data.
Run on a few images, the input each BatchNorm actually receives should have about those statistics; a
tensor mapped to the wrong place (a mapping by position gone astray, BatchNorm statistics of one layer
put into another) breaks that, by several standard deviations, from that layer on.  So does feeding the
network inputs normalised otherwise than in training: the first BatchNorm sees it first.  This is how
thyro checks what a file cannot say itself:

* :func:`bn_agreement`: one forward pass; per BatchNorm, the median over channels of
  ``|batch mean - running mean| / sqrt(running var)`` and of ``|log(batch var / running var)|``; a layer
  *disagrees* when the first exceeds :data:`Z_LIMIT` or the second :data:`LOG_VAR_LIMIT`.  Grey ultrasound
  is not the training data of ImageNet weights, so small drifts are normal deep in a network; a wrong
  mapping gives large ones (measured in tests/models/test_layouts.py).
* :func:`choose_input_spec`: the normalisation (among candidates) under which the first BatchNorm's
  input agrees best with its statistics.  It needs only the first convolution, so it is cheap.

The images are :func:`reference_images`: crops of the photograph matplotlib ships (in grey, as thyro
shows images to a network) and views of thyro's synthetic thyroid phantom, at the network's size.
Nothing is downloaded.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from thyro.data.phantom import render_thyroid_view, sample_features, thyroid_nodule
from thyro.models.adapter import InputAdapter, InputSpec
from thyro.models.archs import ArchInfo

#: A BatchNorm disagrees with its statistics beyond these (medians over its channels).
Z_LIMIT = 1.0
LOG_VAR_LIMIT = 2.5
#: A mapping is refused when more than this share of its BatchNorm layers disagree.
MAX_DISAGREEING = 0.1


@functools.lru_cache(maxsize=4)
def reference_images(size: int, n_photo: int = 4, n_phantom: int = 4, seed: int = 0) -> np.ndarray:
    """uint8 grey images ``(N, size, size)``: crops of matplotlib's sample photograph and phantom views
    (cached; do not modify the array)."""
    from PIL import Image

    out = []
    try:
        import matplotlib

        photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("L")
        w, h = photo.size
        boxes = [(0, 0, w, h), (w // 10, h // 10, w * 8 // 10, h * 7 // 10), (w // 5, 0, w, h // 2),
                 (0, h // 3, w * 6 // 10, h)]
        out += [np.asarray(photo.crop(b).resize((size, size), Image.BICUBIC)) for b in boxes[:n_photo]]
    except (ImportError, OSError):  # matplotlib without its sample data: the phantom alone
        n_phantom += n_photo
    rng = np.random.default_rng(seed)
    for _ in range(n_phantom):
        features = sample_features(rng)
        image, _ = render_thyroid_view(rng, size, thyroid_nodule(rng, features), features)
        out.append(image)
    return np.stack(out).astype(np.uint8)


@dataclass
class LayerCheck:
    name: str
    z: float
    log_var: float

    @property
    def agrees(self) -> bool:
        return self.z <= Z_LIMIT and self.log_var <= LOG_VAR_LIMIT


@dataclass
class BNCheck:
    """The BatchNorm layers of a network against their statistics (see the module docstring)."""

    layers: list[LayerCheck] = field(default_factory=list)
    untrained: bool = False

    @property
    def disagreeing(self) -> list[LayerCheck]:
        return [layer for layer in self.layers if not layer.agrees]

    @property
    def ok(self) -> bool:
        return self.untrained or not self.layers or len(self.disagreeing) <= MAX_DISAGREEING * len(self.layers)

    def summary(self) -> str:
        if not self.layers:
            return "no BatchNorm layer to check the weights against"
        if self.untrained:
            return "BatchNorm statistics are untrained (mean 0, variance 1): nothing to check the mapping against"
        bad = self.disagreeing
        first = ", ".join(f"{b.name} (|z| {b.z:.1f}, |log var ratio| {b.log_var:.1f})" for b in bad[:3])
        verdict = "consistent" if self.ok else "INCONSISTENT: tensors are probably mapped to the wrong places"
        return (f"{len(self.layers) - len(bad)}/{len(self.layers)} BatchNorm layers agree with their stored statistics "
                f"on reference images ({verdict})" + (f"; first disagreeing: {first}" if bad else ""))

    def to_dict(self) -> dict:
        return {"layers": len(self.layers), "disagreeing": [b.name for b in self.disagreeing], "ok": self.ok,
                "untrained": self.untrained, "summary": self.summary()}


def _norms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None]


def _layer_stats(name: str, module, x: torch.Tensor) -> LayerCheck:
    dims = [0] + list(range(2, x.dim()))
    var, mean = torch.var_mean(x.detach().float(), dim=dims)
    rm, rv = module.running_mean.float(), module.running_var.float()
    z = ((mean - rm) / torch.sqrt(rv + module.eps)).abs()
    lv = torch.log((var + 1e-12) / (rv + 1e-12)).abs()
    return LayerCheck(name, float(z.median()), float(lv.median()))


@torch.no_grad()
def bn_agreement(backbone: nn.Module, spec: InputSpec, images: np.ndarray) -> BNCheck:
    """Run ``backbone`` (eval mode) on ``images`` (uint8 ``(N, S, S)``) normalised by ``spec`` and compare every
    BatchNorm's input with its running statistics."""
    norms = _norms(backbone)
    check = BNCheck()
    if not norms:
        return check
    if all(bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all()) for _, m in norms):
        check.untrained = True
        return check
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: check.layers.append(_layer_stats(n, mod, args[0])))
             for n, m in norms]
    was_training = backbone.training
    try:
        backbone.eval()
        backbone(_inputs(spec, images))
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    return check


def _inputs(spec: InputSpec, images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)
    return InputAdapter(spec)(x)


@torch.no_grad()
def first_norm_fit(state: dict[str, torch.Tensor], info: ArchInfo, backbone: nn.Module, spec: InputSpec,
                   images: np.ndarray) -> float:
    """How far the first BatchNorm's input is from the file's statistics under ``spec`` (median |z| plus median
    |log variance ratio|; lower is better).  Runs only the first convolution, with the file's kernel (three
    channels) in a copy of ``backbone``'s (its stride, padding and dilation)."""
    conv = copy.deepcopy(backbone.get_submodule(info.first_conv)).float()
    conv.weight = nn.Parameter(state[info.first_conv_key].float())
    if conv.bias is not None and info.first_conv + ".bias" in state:
        conv.bias = nn.Parameter(state[info.first_conv + ".bias"].float())
    conv.in_channels = conv.weight.shape[1]
    norm = copy.deepcopy(backbone.get_submodule(info.first_norm))
    norm.running_mean = state[info.first_norm + ".running_mean"].float()
    norm.running_var = state[info.first_norm + ".running_var"].float()
    x = _inputs(spec.as_three_channels(), images)
    stats = _layer_stats(info.first_norm, norm, conv(x if conv.in_channels == 3 else x[:, :1]))
    return stats.z + stats.log_var


def choose_input_spec(state: dict[str, torch.Tensor], info: ArchInfo, backbone: nn.Module,
                      candidates: list[InputSpec], images: np.ndarray, margin: float = 0.5) -> tuple[InputSpec, str | None]:
    """The first of ``candidates`` (the default) unless another fits the file's first BatchNorm statistics
    clearly better (its distance below ``margin`` times the default's); returns the spec and a note when it
    changed.  Files whose first convolution feeds no BatchNorm, or whose statistics are untrained, keep the
    default."""
    default = candidates[0]
    keys = [info.first_conv_key] + ([f"{info.first_norm}.running_mean", f"{info.first_norm}.running_var"]
                                    if info.first_norm else [])
    if info.first_norm is None or len(candidates) < 2 or any(k not in state for k in keys):
        return default, None
    mean, var = state[keys[1]], state[keys[2]]
    if bool((mean == 0).all()) and bool((var == 1).all()):
        return default, None
    fits = [first_norm_fit(state, info, backbone, c, images) for c in candidates]
    best = int(np.argmin(fits))
    if best == 0 or not math.isfinite(fits[best]) or fits[best] >= margin * fits[0]:
        return default, None
    chosen = candidates[best]
    return chosen, (f"input normalisation chosen from the file's first BatchNorm statistics: {chosen.describe()} "
                    f"(distance {fits[best]:.2f}, against {fits[0]:.2f} for the architecture's default)")
