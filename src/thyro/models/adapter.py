"""What a weight source expects as input, and the module that turns thyro's images into it.

thyro's cache stores one-channel uint8 images.  The model receives them as float ``(B, 1, H, W)``
in ``[0, 1]`` (or uint8, divided by 255) and :class:`InputAdapter` produces what the backbone
was trained on:

* ``channels=3`` (the default, "repeat"): the grey image is repeated into three channels, then
  normalised per channel.  This is exact for every pretrained source: a grey picture shown to an
  RGB network is R = G = B.
* ``channels=1`` ("sum"): the first convolution has one input channel.  The adapter applies one
  normalisation ``(x - m) / s`` (:meth:`InputSpec.folded`, stored as three equal values) and the
  differences between the source's per-channel normalisations are folded into that kernel and the
  first BatchNorm when the model is built
  (:func:`thyro.models.weights.report.fold_input_normalisation`), so the network computes what
  the three-channel one computes: exactly where the kernel does not reach the zero padding, and
  everywhere for sources that normalise every channel alike (Inception's ``(x - 0.5) / 0.5``).
  On the padded border of ImageNet- or Caffe-normalised sources the three-channel network pads
  each channel with its own mean, which one channel cannot.  Cheaper in the first layer.

Normalisation is ``(x - mean) / std`` with ``mean``/``std`` in 0-1 units, or Keras's Caffe style
(``mode="caffe_bgr"``): RGB to BGR, 0-255 scale, subtract ``[103.939, 116.779, 123.68]`` (BGR).
Caffe style is written with the same fields: ``mean = (123.68, 116.779, 103.939) / 255`` (RGB)
and ``std = 1/255``; the adapter then reverses the channel order.  Everything is one
multiply-add of broadcast buffers, so it exports to ONNX and runs under autocast and
channels-last.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import model_validator
from torch import nn

from thyro.base import StrictModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
CAFFE_MEAN_BGR_255 = (103.939, 116.779, 123.68)


class InputSpec(StrictModel):
    """The input a set of weights expects.

    Attributes
    ----------
    channels : {1, 3}
        Input channels of the backbone's first convolution (3 = grey repeated, 1 = summed kernel).
    mode : {"mean_std", "caffe_bgr"}
        ``caffe_bgr`` also reverses the channel order (RGB to BGR).
    mean, std : tuple of 3 floats
        Per-channel mean and standard deviation in 0-1 units, RGB order.
    input_size : int
        Side of the square input the weights were trained at (a recommendation).
    value_range : tuple of 2 floats
        Pixel scale the source worked in before normalisation: ``(0, 1)`` or ``(0, 255)``
        (Caffe style).  Informational; ``mean``/``std`` already encode it.
    """

    channels: Literal[1, 3] = 3
    mode: Literal["mean_std", "caffe_bgr"] = "mean_std"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    value_range: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be at least 8, got {self.input_size}")
        return self

    # -- named specs -------------------------------------------------------------------------
    @classmethod
    def imagenet(cls, input_size: int = 224) -> InputSpec:
        """torchvision/timm ImageNet normalisation."""
        return cls(mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=input_size)

    @classmethod
    def inception(cls, input_size: int = 299) -> InputSpec:
        """``(x - 0.5) / 0.5``: Keras ``"tf"`` preprocessing and torchvision's Inception-v3."""
        return cls(mean=INCEPTION_MEAN, std=INCEPTION_STD, input_size=input_size)

    @classmethod
    def caffe_bgr(cls, input_size: int = 224) -> InputSpec:
        """Keras ``"caffe"`` preprocessing (ResNet50): BGR, 0-255, ImageNet mean subtracted."""
        mean_rgb = tuple(v / 255.0 for v in reversed(CAFFE_MEAN_BGR_255))
        return cls(mode="caffe_bgr", mean=mean_rgb, std=(1 / 255.0,) * 3, input_size=input_size,
                   value_range=(0.0, 255.0))

    def folded(self) -> InputSpec:
        """The one-channel spec of a model whose first convolution absorbed this normalisation.

        One ``(x - m) / s`` for the grey image, with ``s`` the harmonic mean of the channels' ``s_c`` and
        ``m = sum(m_c / s_c) / sum(1 / s_c)``: the per-channel differences go into the first
        convolution and BatchNorm (:func:`thyro.models.weights.report.fold_input_normalisation`), and
        this choice makes them vanish for a kernel whose channels are equal.  A source that normalises
        every channel alike keeps its values; a one-channel spec is returned as it is.
        """
        if self.channels == 1:
            return self
        mean, std = self.channel_mean_std()
        inv = [1.0 / v for v in std]
        s = len(std) / sum(inv)
        m = sum(mi * iv for mi, iv in zip(mean, inv)) / sum(inv)
        if max(mean) - min(mean) < 1e-12 and max(std) - min(std) < 1e-12:
            m, s = mean[0], std[0]
        return self.model_copy(update={"channels": 1, "mode": "mean_std", "mean": (m, m, m), "std": (s, s, s)})

    def as_three_channels(self) -> InputSpec:
        """A three-channel spec that normalises every channel as this one does (a one-channel spec's
        averaged values repeated): what a one-channel kernel spread over three channels needs."""
        if self.channels == 3:
            return self
        (m,), (s,) = self.channel_mean_std()
        return self.model_copy(update={"channels": 3, "mode": "mean_std", "mean": (m, m, m), "std": (s, s, s)})


    def channel_mean_std(self) -> tuple[list[float], list[float]]:
        """Mean and std per backbone input channel, in the order the backbone sees them."""
        mean, std = list(self.mean), list(self.std)
        if self.mode == "caffe_bgr":
            mean, std = mean[::-1], std[::-1]
        if self.channels == 1:
            return [sum(mean) / 3.0], [sum(std) / 3.0]
        return mean, std

    def describe(self, runs_at: int | None = None, *, pretrained: bool = True) -> str:
        """One line for reports.  With ``runs_at`` (the side an arm feeds the network), the line says that side,
        and the weights' own side beside it when they were trained at another; a random start (``pretrained``
        false) was trained at no side."""
        mean, std = self.channel_mean_std()
        how = ("grey repeated to 3 channels" if self.channels == 3
               else "1 channel (conv1 summed over RGB, per-channel normalisation folded in)")
        if self.mode == "caffe_bgr":
            norm = "Caffe style: BGR, 0-255, mean " + ", ".join(f"{m * 255:.3f}" for m in mean) + " subtracted"
        else:
            norm = "mean " + ", ".join(f"{m:.3f}" for m in mean) + ", std " + ", ".join(f"{s:.3f}" for s in std)
        if runs_at is None:
            size = f"trained at {self.input_size} px"
        elif not pretrained or runs_at == self.input_size:
            size = f"{runs_at} px"
        else:
            size = f"{runs_at} px (the weights were trained at {self.input_size} px)"
        return f"{how}; {norm}; {size}"


class InputAdapter(nn.Module):
    """Turn ``(B, 1, H, W)`` grey images in ``[0, 1]`` (or uint8) into the backbone's input.

    Computes ``x * scale + shift`` with ``scale = 1/std`` and ``shift = -mean/std`` of shape
    ``(1, C, 1, 1)``; broadcasting a one-channel ``x`` against three channels repeats it.
    """

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.spec = spec
        mean, std = spec.channel_mean_std()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # Not persistent: derived from the spec, which travels as checkpoint metadata.
        self.register_buffer("scale", 1.0 / std_t, persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.to(self.scale.dtype) / 255.0
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != 1):
            raise ValueError(f"expected grey images of shape (B, 1, H, W), got {tuple(x.shape)}")
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def extra_repr(self) -> str:
        return self.spec.describe()
