"""Backbones, weight sources and the model thyro trains.

Quick use::

    from thyro.models import build_model, save_model, load_model

    model, report = build_model("resnet18", "imagenet")          # or "none", "radimagenet:PATH", "file:PATH"
    print(report)                                                 # what was loaded, missing, re-initialised
    logits = model(images)                                        # images: float (B, 1, H, W) in [0, 1], or uint8
    save_model("model.safetensors", model, {"epoch": 12})         # weights + arch + preprocessing
    model = load_model("model.safetensors")

Defaults, and why:

* the grey image is repeated to three channels (``in_chans_mode="repeat"``): exact for every
  pretrained source; ``"sum"`` gives a one-channel first convolution (RGB kernels summed);
* the model returns one logit per image, shape ``(B,)``; probability = ``sigmoid(logit)``;
* preprocessing travels with the weights (:class:`InputSpec`): ImageNet mean/std for torchvision
  and timm files, Keras's for RadImageNet (Caffe-style BGR for ResNet50, ImageNet mean/std for
  DenseNet121, ``(x - 0.5) / 0.5`` for the Inception networks), whatever a thyro checkpoint says;
* Keras-origin weights run in Keras's layout, recorded in checkpoints as ``layout="keras"``:
  ResNet50 with the stride on the first 1x1 convolution and BatchNorm eps 1.001e-5, DenseNet121
  with that eps, InceptionV3 with TensorFlow's "same" average pooling (padding not counted);
  InceptionResNetV2 needs no change (timm's is a TensorFlow port);
* nothing is downloaded, ever: files come from the standard caches or from paths the user names;
* a file's mapping is verified and its tensors must look trained (``report.verification``;
  :mod:`thyro.models.weights.verify`), unless ``unverified=True`` / ``allow_untrained=True`` say
  otherwise; :func:`provenance_line` says in one line where weights came from and how they were verified.
"""

from thyro.models.adapter import InputAdapter, InputSpec
from thyro.models.archs import ArchInfo, arch, check_arch
from thyro.models.backbones import apply_keras_layout, create_backbone, head_name
from thyro.models.checkpoint import (
    load_metadata,
    load_model,
    read_checkpoint_info,
    save_backbone,
    save_model,
)
from thyro.models.model import ThyroNet, build_model
from thyro.models.weights.provenance import provenance_line
from thyro.models.weights.report import LoadReport
from thyro.models.weights.sources import WeightSource, parse_weight_source
from thyro.models.weights.verify import Verification

__all__ = [
    "ArchInfo",
    "InputAdapter",
    "InputSpec",
    "LoadReport",
    "ThyroNet",
    "Verification",
    "WeightSource",
    "apply_keras_layout",
    "arch",
    "build_model",
    "check_arch",
    "create_backbone",
    "head_name",
    "load_metadata",
    "load_model",
    "parse_weight_source",
    "provenance_line",
    "read_checkpoint_info",
    "save_backbone",
    "save_model",
]
