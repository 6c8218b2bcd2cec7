"""Checkpoints thyro writes: safetensors with JSON metadata (architecture, preprocessing, version).

A model checkpoint (:func:`save_model`) holds the backbone's tensors under timm's names, head
included, and under the safetensors metadata key ``"thyro"`` a JSON object::

    {"format": "thyro-model", "arch": "resnet18", "layout": "timm", "dropout": 0.0,
     "input_spec": {...}, "thyro_version": "0.1.0", "torch_version": ..., "timm_version": ...,
     "metadata": {...user metadata...}}

A backbone checkpoint (:func:`save_backbone`, for pretraining) is the same without the head
tensors and with ``"format": "thyro-backbone"``.  Both load with ``build_model(weights="file:PATH")``;
:func:`load_model` rebuilds the exact model of a model checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from thyro import __version__
from thyro.errors import WeightsError
from thyro.fileio import atomic_path
from thyro.models.adapter import InputSpec
from thyro.models.backbones import check_arch, is_head_key
from thyro.models.model import ThyroNet, build_backbone_for
from thyro.models.weights.formats import detect_container, read_safetensors, read_safetensors_metadata, thyro_metadata
from thyro.models.weights.report import load_checked


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    for _ in range(3):
        model = getattr(model, "_orig_mod", model)
        model = getattr(model, "module", model)
    return model


def _versions() -> dict[str, str]:
    return {"thyro_version": __version__, "torch_version": torch.__version__, "timm_version": timm.__version__}


def _write(path: str | os.PathLike, state: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    header = {"thyro": json.dumps(info, default=str)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def save_model(path: str | os.PathLike, model: ThyroNet, metadata: dict | None = None) -> Path:
    """Write ``model`` (backbone with head + how to rebuild it) as safetensors, atomically.

    Parameters
    ----------
    path : path-like
        Output file (``model.safetensors``).
    model : ThyroNet
        Also accepted wrapped in DDP or ``torch.compile``.
    metadata : dict, optional
        JSON-serialisable user metadata (epoch, metrics, ...), returned by :func:`read_checkpoint_info`.
    """
    model = _unwrap(model)
    if not isinstance(model, ThyroNet):
        raise TypeError(f"save_model expects a ThyroNet, got {type(model).__name__}")
    info = {"format": "thyro-model", **model.config(), **_versions(), "metadata": metadata or {}}
    return _write(path, model.backbone.state_dict(), info)


def save_backbone(path: str | os.PathLike, model: nn.Module, *, arch: str | None = None,
                  input_spec: InputSpec | None = None, metadata: dict | None = None, layout: str = "timm") -> Path:
    """Write a backbone without its classification head (pretraining output), with its InputSpec.

    ``model`` is a :class:`ThyroNet` (arch and spec taken from it) or a timm backbone (give
    ``arch`` and ``input_spec``).  ``build_model(arch, weights="file:PATH")`` loads it and
    initialises a new head.
    """
    model = _unwrap(model)
    if isinstance(model, ThyroNet):
        arch, input_spec, layout, backbone = model.arch, model.input_spec, model.layout, model.backbone
    else:
        backbone = model
        if arch is None or input_spec is None:
            raise TypeError("save_backbone needs arch= and input_spec= for a plain backbone")
    check_arch(arch)
    state = {k: v for k, v in backbone.state_dict().items() if not is_head_key(arch, k)}
    info = {"format": "thyro-backbone", "arch": arch, "layout": layout,
            "input_spec": input_spec.model_dump(mode="json"), **_versions(), "metadata": metadata or {}}
    return _write(path, state, info)


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``"thyro"`` metadata of a checkpoint (format, arch, input_spec, versions, user metadata)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found.")
    if detect_container(path) != "safetensors":
        raise WeightsError(f"{path}: not a thyro checkpoint (not safetensors).")
    info = thyro_metadata(read_safetensors_metadata(path))
    if info is None:
        raise WeightsError(f"{path}: safetensors without thyro metadata; load it with "
                           "build_model(arch, weights='file:PATH') instead.")
    return info


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The user metadata saved with :func:`save_model`."""
    return dict(read_checkpoint_info(path).get("metadata") or {})


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ThyroNet:
    """Rebuild the exact :class:`ThyroNet` of a :func:`save_model` checkpoint (in eval mode).

    The user metadata is on ``model.metadata``.

    Raises
    ------
    WeightsError
        Not a thyro model checkpoint, corrupt, or tensors that do not fit.
    """
    path = Path(path)
    info = read_checkpoint_info(path)
    if info.get("format") != "thyro-model":
        raise WeightsError(f"{path}: a {info.get('format')} checkpoint has no head; build a model from it with "
                           f"build_model('{info.get('arch')}', weights='file:{path}').")
    arch = info["arch"]
    spec = InputSpec.parse(info["input_spec"], source=f"{path} metadata")
    size = info.get("image_size")
    backbone = build_backbone_for(arch, channels=spec.channels, layout=info.get("layout", "timm"),
                                  dropout=float(info.get("dropout", 0.0)), seed=0, image_size=size)
    tensors, _ = read_safetensors(path)
    report = load_checked(backbone, tensors, arch=arch, source=f"file:{path}", fmt="thyro-model", path=str(path))
    if report.head_reinitialised:
        raise WeightsError(f"{path}: the classification head does not fit ({'; '.join(report.notes)}).")
    model = ThyroNet(backbone, spec, arch, layout=info.get("layout", "timm"), dropout=float(info.get("dropout", 0.0)),
                     image_size=size)
    model.metadata = dict(info.get("metadata") or {})
    return model.to(map_location).eval()
