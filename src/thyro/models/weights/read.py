"""Read any supported weight file for a backbone: Keras HDF5 through its converter, the rest as tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from thyro.models.weights.formats import Converted, convert_tensor_file, detect_container
from thyro.models.weights.keras_h5 import convert_keras_h5


def read_weights(path: Path, arch: str, model: torch.nn.Module) -> Converted:
    """Detect the format of ``path`` and convert it for ``model`` (a timm ``arch`` backbone)."""
    if detect_container(path) == "keras-h5":
        return convert_keras_h5(path, arch)
    return convert_tensor_file(path, arch, model)
