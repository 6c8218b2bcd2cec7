"""Read weight files safely and turn them into state dicts with timm's names.

Containers (detected from the first bytes, not the file name):

* safetensors (thyro's own checkpoints carry JSON metadata under the key ``"thyro"``);
* PyTorch files (zip or legacy pickle), read with ``torch.load(weights_only=True)`` only;
* Keras HDF5 (``.h5``), read with h5py (see :mod:`thyro.models.weights.keras_h5`).

Inside a PyTorch file or safetensors, tensors are matched to a backbone by
:mod:`thyro.models.weights.layouts` (wrappers and self-supervised prefixes, timm/torchvision names,
``nn.Sequential`` exports, ``efficientnet_pytorch``'s and other layouts by position).  Keras-converted files
that keep conv biases (``conv1.bias``, ``layerX.Y.convK.bias``) have each bias folded into the following
BatchNorm exactly (``running_mean -= bias``), and a ResNet-50 is then run in the Keras layout
(:func:`thyro.models.backbones.apply_keras_layout`).
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from thyro.errors import WeightsError
from thyro.models.adapter import InputSpec
from thyro.models.archs import arch as arch_info
from thyro.models.known import known
from thyro.models.weights.layouts import Match, match_state

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "model_state", "net", "network", "weights", "params",
                "state_dict_ema", "model_ema", "teacher", "student")
#: Wrapper keys that name one of several networks of a checkpoint (DINO), kept as a prefix.
NETWORK_KEYS = ("teacher", "student")


@dataclass
class Converted:
    """Tensors ready for a timm backbone, with what is known about them."""

    state: dict[str, torch.Tensor]
    format: str
    layout: str = "timm"
    input_spec: InputSpec | None = None
    arch: str | None = None
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    keras_origin: bool = False
    #: How the file's tensors were matched to the backbone (None for thyro's own and Keras HDF5 files).
    match: Match | None = None


# --------------------------------------------------------------------------------------------
# containers


def detect_container(path: Path) -> str:
    """``"safetensors"``, ``"torch-zip"``, ``"torch-pickle"`` or ``"keras-h5"`` from the first bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the file ({exc}).") from None
    if len(head) < 8:
        raise WeightsError(f"{path}: file is empty or truncated ({size} bytes); copy it again.")
    if head.startswith(HDF5_MAGIC):
        return "keras-h5"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    n = struct.unpack("<Q", head[:8])[0]
    if 2 <= n <= size - 8 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch-pickle"
    raise WeightsError(f"{path}: not a weight file thyro knows (safetensors, PyTorch .pt/.pth, Keras .h5); "
                       f"first bytes {head[:8]!r}.")


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{path}: unreadable safetensors file, probably truncated or corrupt ({exc}); "
                           f"copy it again.") from None
    return tensors, dict(meta)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file, without reading its tensors."""
    if detect_container(path) != "safetensors":
        raise WeightsError(f"{path}: not a safetensors file (its first bytes say {detect_container(path)}).")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{path}: unreadable safetensors file, probably truncated or corrupt ({exc}); "
                           f"copy it again.") from None


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; unsafe or broken files become :class:`WeightsError`.

    A pickle that needs arbitrary code (a whole pickled model, or anything malicious) is refused
    and never executed.
    """
    try:  # an open file, not the name: torch.load would read a *.safetensors name as safetensors whatever it holds
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's warnings about pickle protocols: the outcome is what counts
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "truncated" in text.lower():
            raise WeightsError(f"{path}: the file is truncated; copy it again.") from None
        detail = _unsafe_detail(text)
        raise WeightsError(
            f"{path}: refused: loading this file would need to run arbitrary code ({detail}). thyro only loads "
            "tensors (torch.load(weights_only=True)). If you trust the file, re-save its weights elsewhere with "
            "torch.save(model.state_dict(), 'weights.pth') or as safetensors."
        ) from None
    except Exception as exc:  # torch raises many kinds on damaged files; none may become a traceback
        raise WeightsError(f"{path}: unreadable PyTorch file, probably truncated or corrupt "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); copy it again.") from None


def _unsafe_detail(text: str) -> str:
    """What the safe unpickler stopped at, without torch's advice to load the file unsafely."""
    for line in text.splitlines():
        if "GLOBAL" in line or "Unsupported global" in line:
            return line.strip()[:200]
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|Check the documentation|$)", text, re.S)
    if m:
        return "pickle content it cannot read as tensors: " + " ".join(m.group(1).split())[:160]
    return "unsupported pickle content"


def read_tensor_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """Read a safetensors or PyTorch file into ``(tensors, metadata, container)``."""
    container = detect_container(path)
    if container == "keras-h5":
        raise WeightsError(f"{path}: a Keras HDF5 file; read it with thyro.models.weights.keras_h5.")
    if container == "safetensors":
        tensors, meta = read_safetensors(path)
        return tensors, meta, container
    obj = safe_torch_load(path)
    return unwrap_state_dict(obj, path), {}, container


def unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict in what ``torch.load`` returned (plain or wrapped).

    A wrapper that names a network rather than a container (DINO's ``teacher``/``student``) stays as a key
    prefix, so that :mod:`~thyro.models.weights.layouts` says which network was read."""
    named = ""
    for _ in range(3):
        if isinstance(obj, dict) and not _mostly_tensors(obj):
            key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if key is None:
                break
            if key in NETWORK_KEYS:
                named += key + "."
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a dictionary of tensors (a state dict); "
                           "save weights with torch.save(model.state_dict(), PATH).")
    tensors = {named + str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj))[:8])
        raise WeightsError(f"{path}: no tensors found (top-level keys: {keys or 'none'}); "
                           "is this a weight file?")
    return tensors


def _mostly_tensors(d: dict) -> bool:
    if not d:
        return False
    n = sum(isinstance(v, torch.Tensor) for v in d.values())
    return n >= max(1, len(d) // 2)


# --------------------------------------------------------------------------------------------
# conversions


def _bn_after(conv: str) -> str | None:
    """Name of the BatchNorm that directly follows convolution ``conv`` (ResNets, Inception)."""
    if conv == "conv1":
        return "bn1"
    m = re.fullmatch(r"(layer\d+\.\d+)\.conv(\d)", conv)
    if m:
        return f"{m.group(1)}.bn{m.group(2)}"
    m = re.fullmatch(r"(layer\d+\.\d+\.downsample)\.0", conv)
    if m:
        return f"{m.group(1)}.1"
    if conv.endswith(".conv"):
        return conv[: -len(".conv")] + ".bn"
    if conv == "features.conv0":
        return "features.norm0"
    return None


def fold_conv_biases(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Fold conv biases the target network has no place for into the following BatchNorm.

    ``BN(conv(x) + b) = BN'(conv(x))`` with ``running_mean' = running_mean - b``: exact.

    Returns
    -------
    (state, n_folded)

    Raises
    ------
    WeightsError
        When a bias has no BatchNorm right after its convolution.
    """
    state = dict(state)
    folded = 0
    for key in [k for k in state if k.endswith(".bias")]:
        conv = key[: -len(".bias")]
        w = state.get(conv + ".weight")
        if w is None or w.ndim != 4 or key in model_state:
            continue
        bn = _bn_after(conv)
        if bn is None or bn + ".running_mean" not in state:
            raise WeightsError(f"convolution '{conv}' has a bias but no BatchNorm after it to fold it into; "
                               "thyro cannot load this layout exactly.")
        mean = state[bn + ".running_mean"]
        state[bn + ".running_mean"] = mean - state.pop(key).to(mean.dtype)
        folded += 1
    return state, folded


def thyro_metadata(meta: dict[str, str]) -> dict[str, Any] | None:
    """The ``"thyro"`` metadata of a safetensors file written by thyro, or None."""
    raw = meta.get("thyro")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def convert_tensor_file(path: Path, arch: str, model: torch.nn.Module) -> Converted:
    """Read a safetensors/PyTorch file and rename its tensors for ``model`` (a timm ``arch`` backbone).

    thyro's own checkpoints carry their architecture, layout and preprocessing; any other file is read
    by :func:`thyro.models.weights.layouts.match_state` (wrappers and SSL prefixes, names, Sequential
    exports, positions).
    """
    tensors, meta, container = read_tensor_file(path)
    info = thyro_metadata(meta)
    if info is not None:
        file_arch = info.get("arch")
        if file_arch and file_arch != arch:
            raise WeightsError(f"{path}: a thyro checkpoint of a {file_arch} backbone, not {arch}; "
                               f"set the backbone to {file_arch} or pick another file.")
        # kept as written (one or three channels): build_model fits it to the model's channels
        spec = InputSpec.parse(info["input_spec"], source=f"{path} metadata") if info.get("input_spec") else None
        return Converted(state=tensors, format=info.get("format", "thyro"), layout=info.get("layout", "timm"),
                         input_spec=spec, arch=file_arch, metadata=info, notes=[])
    match = match_state(tensors, arch_info(arch), model)
    if match.matched == 0:
        first = ", ".join(list(tensors)[:4])
        raise WeightsError(f"{path}: no tensor of this file fits a {arch} backbone, by name, by the network's "
                           f"children or by position ({len(tensors)} tensors, first: {first}). It holds another "
                           "architecture or a layout thyro does not know; `thyro weights inspect FILE` tells what "
                           "it recognises.")
    notes = list(match.notes)
    fmt = match.layout
    if match.layout == "timm/torchvision names" and container == "safetensors":
        fmt = "timm/Hugging Face safetensors"
    layout, keras = match.net_layout, False
    if match.how == "names":
        state, n_folded = fold_conv_biases(match.state, model.state_dict())
        if n_folded:
            keras = True
            fmt = "Keras-converted state_dict (conv biases)"
            notes.append(f"{n_folded} conv biases folded into the following BatchNorm running_mean")
            spec = known(arch).keras
            if spec is not None and spec.conversion in ("pairs", "layers"):  # Keras's named-layer applications
                layout = "keras"
                notes.append("Keras layout: BatchNorm eps 1.001e-5" + (
                    ", stride 2 on the first 1x1 conv of stages 3-5" if arch == "resnet50" else ""))
        match.state = state
    return Converted(state=match.state, format=fmt, layout=layout, notes=notes, keras_origin=keras, match=match)
