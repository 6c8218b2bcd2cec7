"""Backbones through timm, with torchvision-compatible parameter names and one output logit.

Every backbone is built with ``pretrained=False``: timm never downloads anything here.  Weights
come from files that :mod:`thyro.models.weights` reads and checks itself.

Three layouts exist for a backbone:

``"timm"``
    timm's (= torchvision's) network as it is.  ResNet-50 is then "v1.5": the stride 2 of the
    first block of stages 3-5 sits on the 3x3 convolution.
``"keras"``
    the network Keras built when the weights were trained (RadImageNet's Keras files).  ResNet-50
    and DenseNet-121: every BatchNorm has ``eps=1.001e-5``, and for ResNet-50 the stride 2 moves
    to the first 1x1 convolution of block 1 in stages 3-5 (Keras's ResNet50 is "v1").
    Inception-v3: the 3x3 average pooling before each ``branch_pool`` leaves the zero padding out
    of the mean, as TensorFlow's ``"same"`` pooling does (torchvision's counts it).  Parameter
    names and shapes are unchanged, so the same state dict fits both layouts; only the forward
    pass differs.  :func:`apply_keras_layout` makes the change in place on a timm model.
``"tf"``
    TensorFlow's network for the EfficientNet/MobileNet family: ``"same"`` padding (asymmetric where
    the stride is 2) and BatchNorm eps 1e-3, built by timm itself (``pad_type="same"``; timm's ``tf_``
    models are these).  Weights trained in TensorFlow, and files in ``efficientnet_pytorch``'s layout,
    compute what they were trained to compute only so.
"""

from __future__ import annotations

import contextlib

import timm
import torch
from torch import nn

from thyro.errors import ConfigError
from thyro.models.archs import KERAS_BN_EPS, LAYOUTS, arch as arch_info, check_arch, timm_kwargs
from thyro.models.known import KNOWN, known

__all__ = ["KERAS_BN_EPS", "LAYOUTS", "apply_keras_layout", "check_arch", "create_backbone",
           "first_conv_weight_key", "first_norm_name", "head_name", "is_head_key"]


def head_name(arch: str) -> str:
    """Module name of the (first) classification head of ``arch`` (e.g. ``"fc"``)."""
    return arch_info(arch).head[0]


def is_head_key(arch: str, key: str) -> bool:
    """True when ``key`` (a state-dict key) belongs to the classification head of ``arch``."""
    return arch_info(arch).is_head_key(key)


def create_backbone(arch: str, *, in_chans: int = 3, dropout: float = 0.0, seed: int | None = None,
                    layout: str = "timm", image_size: int | None = None) -> nn.Module:
    """Build a randomly initialised timm backbone with one output logit.

    Parameters
    ----------
    arch : str
        Any architecture timm knows (see :func:`thyro.models.archs.arch`).
    in_chans : int
        Input channels of the first convolution (1 or 3).
    dropout : float
        Dropout rate before the classification head (timm's ``drop_rate``).
    seed : int or None
        Seed for the initialisation; the global random state is left untouched.
    layout : {"timm", "keras", "tf"}
        ``tf`` builds TensorFlow's "same" padding and BatchNorm eps into the network (EfficientNet/MobileNet
        family); ``keras`` is applied afterwards by :func:`apply_keras_layout`.
    image_size : int, optional
        Input size of architectures built for one size (vision transformers); default their native size.

    Returns
    -------
    torch.nn.Module
        A timm model with torchvision-compatible parameter names, ``num_classes=1``.
    """
    info = arch_info(arch)
    if in_chans not in (1, 3):
        raise ConfigError(f"in_chans must be 1 or 3, got {in_chans}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    kwargs = timm_kwargs(info, "tf" if layout == "tf" else "timm", image_size)
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(int(seed))
        # pretrained=False: timm builds the network only and never touches the network.
        model = timm.create_model(arch, pretrained=False, num_classes=1, in_chans=in_chans, drop_rate=float(dropout),
                                  **kwargs)
    if layout == "keras":
        apply_keras_layout(model, arch)
    return model


def apply_keras_layout(model: nn.Module, arch: str) -> nn.Module:
    """Change a timm backbone in place so that it computes what Keras computed.

    ResNet-50 and DenseNet-121: all BatchNorm layers get ``eps=1.001e-5``; for ResNet-50 the
    stride 2 of the first block of ``layer2``-``layer4`` moves from ``conv2`` (3x3) to ``conv1``
    (1x1), as in Keras's ResNet50 (v1).  The 3x3 convolution keeps ``padding=1`` (Keras
    ``"same"`` at stride 1).  Inception-v3: the average pooling in front of every ``branch_pool``
    excludes the padding from its mean (a forward pre-hook rescales the border pixels by
    ``9 / valid neighbours``); BatchNorm eps is 1e-3 in both libraries.

    Raises
    ------
    ConfigError
        For architectures whose Keras layout thyro does not reproduce.
    """
    spec = known(arch).keras
    if spec is None or not spec.layout:
        done = ", ".join(name for name, row in KNOWN.items() if row.keras and row.keras.layout)
        raise ConfigError(f"the Keras layout is implemented for {done}, not {arch}.")
    if arch == "inception_v3":
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7b", "Mixed_7c"):
            pool_conv = getattr(model, name).branch_pool
            if not getattr(pool_conv, "_thyro_exclude_pad", False):
                pool_conv.register_forward_pre_hook(_exclude_pad_hook)
                pool_conv._thyro_exclude_pad = True
        return model
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = KERAS_BN_EPS
    if arch == "resnet50":
        for stage in (model.layer2, model.layer3, model.layer4):
            block = stage[0]
            block.conv1.stride = (2, 2)
            block.conv2.stride = (1, 1)
    return model


def _exclude_pad_hook(module: nn.Module, args: tuple) -> tuple:
    """Turn ``avg_pool2d(x, 3, 1, padding=1)`` (padding counted) into TensorFlow's ``"same"`` mean.

    The input of ``branch_pool`` is the padded-count mean; multiplying by ``9 / count`` with
    ``count`` the number of real pixels under each window gives the mean over real pixels.
    ``count / 9`` is itself an average pooling of ones, so this stays plain tensor ops.
    """
    x = args[0]
    ones = torch.ones_like(x[:, :1])
    frac = torch.nn.functional.avg_pool2d(ones, kernel_size=3, stride=1, padding=1)
    return (x / frac,)


def first_conv_weight_key(arch: str) -> str:
    """State-dict key of the first convolution's weight."""
    return arch_info(arch).first_conv_key


def first_norm_name(arch: str) -> str | None:
    """Module name of the BatchNorm the first convolution feeds directly (None when there is none)."""
    return arch_info(arch).first_norm
