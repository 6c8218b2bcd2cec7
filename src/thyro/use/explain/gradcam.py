"""Heatmaps (Grad-CAM, Grad-CAM++) of a one-logit model, computed for a whole batch in one pass per fold model.

pytorch-grad-cam's ``ClassifierOutputTarget(1)`` indexes column 1 of the output, which a one-logit
binary model does not have (or, with a (B, 1) output, silently explains the wrong thing); with no
target it takes the argmax over a single column.  :class:`LogitTarget` returns the logit itself, so
the heatmap shows the evidence for label 1 (malignant, or e.g. TI-RADS >= 4; ``sign=-1`` gives the
evidence for label 0).

For a fold ensemble the heatmap is the mean of the fold models' heatmaps.  It is computed on the
image as given (not on its mirror, even when the package uses flip test-time augmentation for the
probability).  The layer whose activations are weighed is the architecture's own
(:attr:`thyro.models.archs.ArchInfo.cam_layer`): for a multi-branch network such as HRNet, whose last
stage returns a list of maps, the last layer that returns one map.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

from thyro.errors import ThyroError
from thyro.models.archs import arch as arch_info
from thyro.use.scoring.items import METHODS, check_method


class LogitTarget:
    """Grad-CAM target for a model with one logit per image: the logit (times ``sign``)."""

    def __init__(self, sign: float = 1.0):
        self.sign = float(sign)

    def __call__(self, model_output):
        # pytorch-grad-cam calls the target on one image's output: a 0-d tensor for (B,) outputs,
        # shape (1,) for (B, 1) outputs.
        return self.sign * model_output.reshape(-1)[0]


def find_target_layer(model):
    """The module whose activations Grad-CAM weighs, and how to make its output a ``(B, C, H, W)`` map.

    For a :class:`~thyro.models.ThyroNet` the architecture says (:func:`thyro.models.archs.arch`): the last
    feature stage of a CNN (``layer4`` for ResNets, the last block of an EfficientNet), the last block's first
    norm of a vision transformer (its tokens, the class and register tokens dropped, laid back on the patch
    grid), a channels-last stage permuted.  Other models: timm's ``feature_info``, else the last ``Conv2d``.

    Returns
    -------
    (module, reshape_transform or None)
    """
    name = getattr(model, "arch", None)
    if isinstance(name, str) and hasattr(model, "backbone"):
        info = arch_info(name)
        layer = model.backbone.get_submodule(info.cam_layer)
        if info.cam_format == "tokens":
            return layer, functools.partial(_tokens_to_map, prefix=info.prefix_tokens)
        if info.cam_format == "nhwc":
            return layer, _nhwc_to_nchw
        return layer, None
    for module in model.modules():
        info = getattr(module, "feature_info", None)
        if info is None:
            continue
        try:
            last = info[-1]
            name = last["module"] if isinstance(last, dict) else info.module_name()[-1]
            return module.get_submodule(name), None
        except (AttributeError, KeyError, IndexError, TypeError):
            continue
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ThyroError("cannot find a convolutional layer for Grad-CAM in this model.")
    return convs[-1], None


def _tokens_to_map(x, prefix: int = 0):
    """Tokens ``(B, N, C)`` of a vision transformer to a map ``(B, C, h, w)`` on its (square) patch grid."""
    x = x[:, prefix:, :]
    side = int(round(x.shape[1] ** 0.5))
    return x.reshape(x.shape[0], side, side, x.shape[2]).permute(0, 3, 1, 2)


def _nhwc_to_nchw(x):
    return x.permute(0, 3, 1, 2)


def _cam_class(method: str):
    return GradCAM if check_method(method) == "gradcam" else GradCAMPlusPlus


def heatmaps(models: Sequence, images: np.ndarray, method: str = "gradcam", *, sign: float = 1.0) -> np.ndarray:
    """Heatmaps in [0, 1], shape (B, S, S), for uint8 or float [0, 1] images of shape (B, S, S).

    Each model's heatmap is computed with its own last feature stage; the ensemble's is their mean.
    A batch takes one forward and one backward pass per model, and the backward pass runs from the
    logit to the target layer only (:func:`_gradients_from_target_layer`).
    """
    cam_cls = _cam_class(method)
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    x = torch.from_numpy(np.ascontiguousarray(arr)).float()
    if arr.dtype == np.uint8:
        x = x / 255.0
    x = x.unsqueeze(1)
    total = np.zeros(arr.shape, dtype=np.float64)
    for model in models:
        model.eval()
        layer, reshape = find_target_layer(model)
        with _gradients_from_target_layer(model, layer), \
                cam_cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            total += cam(input_tensor=x, targets=[LogitTarget(sign)] * arr.shape[0])
    return (total / max(len(models), 1)).astype(np.float32)


@contextlib.contextmanager
def _gradients_from_target_layer(model, layer):
    """While the block runs, autograd records the model from ``layer``'s output on, and nothing before.

    Grad-CAM needs the gradient of the logit with respect to the target layer's activations, no more:
    with the weights' ``requires_grad`` off and the layer's output made a leaf that requires it, the
    backward pass runs through the head alone instead of the whole network to the input (on a 64 px
    ResNet-18 batch it was three quarters of the time).  The gradients and so the heatmaps are the same.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)

    def leaf(module, args, output):
        # a leaf that requires the gradient, cloned so that an in-place operation after the layer is allowed
        return output.detach().requires_grad_(True).clone()

    handle = layer.register_forward_hook(leaf, prepend=True)  # before pytorch-grad-cam's own hooks
    try:
        yield
    finally:
        handle.remove()
        for p in params:
            p.requires_grad_(True)


__all__ = ["METHODS", "LogitTarget", "check_method", "find_target_layer", "heatmaps"]
