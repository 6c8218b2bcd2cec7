"""What is in a weight file: format, architecture guess, coverage for a backbone, statistics.

Used by ``thyro weights inspect`` and ``thyro weights convert``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from thyro.errors import WeightsError
from thyro.models.backbones import ARCHS, check_arch
from thyro.models import archs
from thyro.models.weights.formats import (
    SEQUENTIAL_HEADS,
    detect_container,
    fix_densenet_legacy,
    is_sequential_export,
    read_tensor_file,
    sequential_prefix,
    strip_prefixes,
    thyro_metadata,
)


def tensor_stats(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Counts, dtypes, and whether BatchNorm running statistics look untrained (all 0 / all 1)."""
    n_params = sum(int(v.numel()) for v in state.values())
    dtypes: dict[str, int] = {}
    for v in state.values():
        dtypes[str(v.dtype).replace("torch.", "")] = dtypes.get(str(v.dtype).replace("torch.", ""), 0) + 1
    bn = [k[: -len(".running_mean")] for k in state if k.endswith(".running_mean")]
    fresh = 0
    for prefix in bn:
        mean, var = state[prefix + ".running_mean"], state.get(prefix + ".running_var")
        if var is not None and torch.all(mean == 0) and torch.all(var == 1):
            fresh += 1
    convs = [v.float() for k, v in state.items() if v.ndim == 4]
    conv_std = float(torch.cat([c.flatten() for c in convs]).std()) if convs else None
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    verdict = None
    if bn:
        if fresh == len(bn):
            verdict = "looks randomly initialised: every BatchNorm has running mean 0 and variance 1"
        elif fresh == 0:
            verdict = "looks trained: BatchNorm running statistics differ from 0/1"
        else:
            verdict = f"{fresh} of {len(bn)} BatchNorm layers still have running mean 0 / variance 1"
    return {"tensors": len(state), "parameters": n_params, "dtypes": dtypes, "batchnorm_layers": len(bn),
            "batchnorm_untrained": fresh, "conv_weight_std": conv_std, "non_finite": nonfinite[:5],
            "verdict": verdict}


def guess_sequential_arch(state: dict[str, torch.Tensor]) -> str | None:
    """Architecture of an ``nn.Sequential`` export, from the module names below its indices."""
    prefix = sequential_prefix(state) or ""
    body = {k[len(prefix):] for k in state if k.startswith(prefix) and not k.startswith(SEQUENTIAL_HEADS)}
    rest = {r.split(".", 1)[1] for r in body if "." in r}
    return archs.recognise_sequential({r for r in rest if "." in r}, {f"backbone.{r}" for r in body})


def inspect_weights(path: str | Path, arch: str | None = None) -> dict[str, Any]:
    """Describe a weight file; with ``arch`` (or a confident guess) also its coverage for that backbone."""
    from thyro.models.model import build_backbone_for
    from thyro.models.weights.read import read_weights
    from thyro.models.weights.report import load_checked

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found.")
    if arch is not None:
        check_arch(arch)
    container = detect_container(path)
    out: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size, "container": container}
    if container == "keras-h5":
        from thyro.models.weights.keras_h5 import guess_keras_arch, read_keras_h5

        layers, layout = read_keras_h5(path)
        out["format"] = f"Keras HDF5 ({layout})"
        out["keras_layers"] = len(layers)
        guess = guess_keras_arch(layers)
        out["arch_guess"] = guess
        flat = {f"{name}.{w}": torch.from_numpy(a.copy()) for name, ws in layers.items() for w, a in ws.items()}
        flat = {k.replace(".moving_mean", ".running_mean").replace(".moving_variance", ".running_var"): v
                for k, v in flat.items()}
        out["stats"] = tensor_stats(flat)
    else:
        tensors, meta, _ = read_tensor_file(path)
        info = thyro_metadata(meta)
        if info is not None:
            out["format"] = info.get("format", "thyro")
            out["thyro"] = {k: v for k, v in info.items() if k != "metadata"}
            out["arch_guess"] = info.get("arch")
            state = tensors
        else:
            state, removed = strip_prefixes(tensors)
            out["format"] = "safetensors" if container == "safetensors" else "torch state_dict"
            if removed:
                out["prefix_removed"] = removed
            if is_sequential_export(state):
                out["format"] = "RadImageNet PyTorch export (nn.Sequential)"
                out["arch_guess"] = guess_sequential_arch(state)
            else:
                state = fix_densenet_legacy(state)
                out["arch_guess"] = archs.recognise_state(set(state))
                if any(k.endswith(".bias") and state.get(k[:-5] + ".weight", torch.empty(0)).ndim == 4 for k in state):
                    out["format"] = "Keras-converted state_dict (conv biases)"
        out["stats"] = tensor_stats(state)
    target = arch or (out.get("arch_guess") if out.get("arch_guess") in ARCHS else None)
    if target is not None:
        backbone = build_backbone_for(target, channels=3, seed=0)
        try:
            conv = read_weights(path, target, backbone)
            report = load_checked(backbone, conv.state, arch=target, source=f"file:{path}", fmt=conv.format,
                                  path=str(path), notes=conv.notes, allow_partial=True, allow_non_finite=True)
            report.layout = conv.layout
            out["coverage"] = report
        except WeightsError as exc:
            out["coverage_error"] = str(exc)
    return out
