"""Backbones, weight sources and the model thyro trains.

>>> from thyro.models import build_model
>>> model, report = build_model("resnet18", "none", seed=0)   # doctest: +SKIP
>>> model(torch.rand(2, 1, 64, 64)).shape                       # doctest: +SKIP
torch.Size([2])
"""

from thyro.models.adapter import InputAdapter, InputSpec
from thyro.models.backbones import ARCHS, apply_keras_layout, create_backbone, head_name
from thyro.models.checkpoint import (
    load_metadata,
    load_model,
    read_checkpoint_info,
    save_backbone,
    save_model,
)
from thyro.models.model import ThyroNet, build_model
from thyro.models.weights.report import LoadReport
from thyro.models.weights.sources import WeightSource, parse_weight_source

__all__ = [
    "ARCHS",
    "InputAdapter",
    "InputSpec",
    "LoadReport",
    "ThyroNet",
    "WeightSource",
    "apply_keras_layout",
    "build_model",
    "create_backbone",
    "head_name",
    "load_metadata",
    "load_model",
    "parse_weight_source",
    "read_checkpoint_info",
    "save_backbone",
    "save_model",
]
