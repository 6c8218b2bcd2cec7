"""Backbones through timm, with torchvision-compatible parameter names and one output logit.

Every backbone is built with ``pretrained=False``: timm never downloads anything here.  Weights
come from files that :mod:`thyro.models.weights` reads and checks itself.

Two layouts exist for a backbone:

``"timm"``
    timm's (= torchvision's) network as it is.  ResNet-50 is then "v1.5": the stride 2 of the
    first block of stages 3-5 sits on the 3x3 convolution.
``"keras"``
    the network Keras built when the weights were trained (RadImageNet's Keras files).  Every
    BatchNorm has ``eps=1.001e-5`` and, for ResNet-50, the stride 2 moves to the first 1x1
    convolution of block 1 in stages 3-5 (Keras's ResNet50 is "v1").  Parameter names and shapes
    are unchanged, so the same state dict fits both layouts; only the forward pass differs.
    :func:`apply_keras_layout` makes the change in place on a timm model.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from thyro.errors import ConfigError

ARCHS: tuple[str, ...] = ("resnet18", "resnet50", "densenet121", "inception_v3", "inception_resnet_v2")
LAYOUTS: tuple[str, ...] = ("timm", "keras")

#: Name of the classification head (a ``nn.Linear``) in each timm model.
HEAD_NAMES: dict[str, str] = {
    "resnet18": "fc",
    "resnet50": "fc",
    "densenet121": "classifier",
    "inception_v3": "fc",
    "inception_resnet_v2": "classif",
}

#: Name of the first convolution (the one whose input channels follow ``in_chans``).
FIRST_CONV: dict[str, str] = {
    "resnet18": "conv1",
    "resnet50": "conv1",
    "densenet121": "features.conv0",
    "inception_v3": "Conv2d_1a_3x3.conv",
    "inception_resnet_v2": "conv2d_1a.conv",
}

#: Native input size (pixels, square) of each architecture.
NATIVE_SIZE: dict[str, int] = {
    "resnet18": 224,
    "resnet50": 224,
    "densenet121": 224,
    "inception_v3": 299,
    "inception_resnet_v2": 299,
}

KERAS_BN_EPS = 1.001e-5


def check_arch(arch: str) -> str:
    """Return ``arch`` if it is one of :data:`ARCHS`, else raise :class:`ConfigError`."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown backbone '{arch}'; choose one of: {', '.join(ARCHS)}.")
    return arch


def head_name(arch: str) -> str:
    """Module name of the classification head of ``arch`` (e.g. ``"fc"``)."""
    return HEAD_NAMES[check_arch(arch)]


def is_head_key(arch: str, key: str) -> bool:
    """True when ``key`` (a state-dict key) belongs to the classification head of ``arch``."""
    return key.startswith(head_name(arch) + ".")


def create_backbone(arch: str, *, in_chans: int = 3, dropout: float = 0.0, seed: int | None = None) -> nn.Module:
    """Build a randomly initialised timm backbone with one output logit.

    Parameters
    ----------
    arch : str
        One of :data:`ARCHS`.
    in_chans : int
        Input channels of the first convolution (1 or 3).
    dropout : float
        Dropout rate before the classification head (timm's ``drop_rate``).
    seed : int or None
        Seed for the initialisation; the global random state is left untouched.

    Returns
    -------
    torch.nn.Module
        A timm model with torchvision-compatible parameter names, ``num_classes=1``.
    """
    import timm

    check_arch(arch)
    if in_chans not in (1, 3):
        raise ConfigError(f"in_chans must be 1 or 3, got {in_chans}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(int(seed))
        # pretrained=False: timm builds the network only and never touches the network.
        model = timm.create_model(arch, pretrained=False, num_classes=1, in_chans=in_chans, drop_rate=float(dropout))
    return model


def apply_keras_layout(model: nn.Module, arch: str) -> nn.Module:
    """Change a timm backbone in place so that it computes what Keras computed.

    All BatchNorm layers get ``eps=1.001e-5``.  For ResNet-50 the stride 2 of the first block of
    ``layer2``-``layer4`` moves from ``conv2`` (3x3) to ``conv1`` (1x1), as in Keras's ResNet50 (v1).
    Padding stays correct: the 3x3 convolution keeps ``padding=1`` (Keras ``"same"`` at stride 1).

    Raises
    ------
    ConfigError
        For architectures whose Keras layout thyro does not reproduce.
    """
    check_arch(arch)
    if arch not in ("resnet50", "densenet121"):
        raise ConfigError(f"the Keras layout is implemented for resnet50 and densenet121, not {arch}.")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = KERAS_BN_EPS
    if arch == "resnet50":
        for stage in (model.layer2, model.layer3, model.layer4):
            block = stage[0]
            block.conv1.stride = (2, 2)
            block.conv2.stride = (1, 1)
    return model


def first_conv_weight_key(arch: str) -> str:
    """State-dict key of the first convolution's weight."""
    return FIRST_CONV[check_arch(arch)] + ".weight"
