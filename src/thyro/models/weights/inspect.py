"""What is in a weight file: layout, the architecture it fits best, coverage, statistics, and the check.

Used by ``thyro weights inspect`` and ``thyro weights add``.  Without ``--arch`` the architecture is
guessed from the file's structure: the key names point to timm families (``layer4.`` to ResNets,
``_blocks.`` to ``efficientnet_pytorch``'s EfficientNets, ``patch_embed.`` to vision transformers, ...),
each family member is built on the meta device (no memory, no weights) and matched
(:func:`thyro.models.weights.layouts.match_state`); the one covering the whole backbone wins.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import timm
import torch

from thyro.errors import ConfigError, WeightsError
from thyro.models.archs import arch as arch_info, check_arch
from thyro.models.backbones import create_backbone
from thyro.models.known import recognise_sequential
from thyro.models.model import build_model
from thyro.models.weights.bncheck import bn_agreement
from thyro.models.weights.formats import detect_container, read_tensor_file, thyro_metadata
from thyro.models.weights.keras_h5 import guess_keras_arch, read_keras_h5
from thyro.models.weights.layouts import (
    SEQUENTIAL_HEADS,
    Match,
    candidates,
    ignorable,
    match_state,
    sequential_prefix,
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


#: Key names that point to timm families: ``(tokens any key starts with, timm name patterns)``.
FAMILY_HINTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("_conv_stem.", "_blocks."), ("efficientnet_b[0-8]", "efficientnet_lite[0-4]")),
    (("conv_stem.",), ("efficientnet_b[0-8]", "efficientnet_lite[0-4]", "mobilenetv3_*", "mobilenetv2_*",
                       "mnasnet_*", "lcnet_*", "tinynet_*")),
    (("layer4.",), ("resnet*", "resnext*", "wide_resnet*")),
    (("features.denseblock", "features.conv0."), ("densenet*",)),
    (("Mixed_7c.",), ("inception_v3",)),
    (("conv2d_7b.", "block8."), ("inception_resnet_v2",)),
    (("patch_embed.",), ("vit_*", "deit_*")),
    (("stem.0.", "stages.0."), ("convnext*",)),
    (("s1.b1.", "stem.conv."), ("regnet*",)),
)
#: At most this many architectures are built and matched for one file.
MAX_CANDIDATES = 80


def _meta_backbone(name: str):
    with torch.device("meta"):
        return create_backbone(name, in_chans=3, seed=None)


def candidate_archs(tensors: dict[str, torch.Tensor]) -> list[str]:
    """timm architectures a file may hold, from the names of its keys (plainest names first; timm's ``tf_``
    twins left out: they share every shape and name with their plain twin, and the layout tells them apart)."""
    keys = [k for _, _, sub in candidates(tensors) for k in sub]
    patterns: list[str] = []
    for tokens, pats in FAMILY_HINTS:
        if any(k.startswith(tokens) for k in keys):
            patterns += [p for p in pats if p not in patterns]
    names = [n for n in timm.list_models() if not n.startswith("tf_") and any(fnmatch.fnmatch(n, p) for p in patterns)]
    width = _vit_width(tensors)
    if width:  # vision transformers: keep those of the file's width and patch size
        names = [n for n in names if not n.startswith(("vit_", "deit_")) or _vit_name_fits(n, *width)]
    return sorted(names, key=lambda n: (len(n), n))[:MAX_CANDIDATES]


_VIT_WIDTHS = {"tiny": 192, "small": 384, "medium": 512, "base": 768, "large": 1024, "huge": 1280}


def _vit_width(tensors: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    for k, v in tensors.items():
        if k.endswith("patch_embed.proj.weight") and v.ndim == 4:
            return int(v.shape[0]), int(v.shape[-1])
    return None


def _vit_name_fits(name: str, width: int, patch: int) -> bool:
    m = re.match(r"^(?:vit|deit3?)_(tiny|small|medium|base|large|huge)_patch(\d+)", name)
    return bool(m) and _VIT_WIDTHS[m.group(1)] == width and int(m.group(2)) == patch


def guess_arch(tensors: dict[str, torch.Tensor], names: list[str] | None = None) -> list[tuple[str, Match]]:
    """Candidate architectures matched against the file, best first (whole coverage, names before
    positions, plainest name)."""
    found = []
    sizes = [sum(1 for k in sub if not ignorable(k)) for _, _, sub in candidates(tensors)]
    for name in names if names is not None else candidate_archs(tensors):
        if names is None and not _plausible(name, sizes):
            continue
        try:
            match = match_state(tensors, arch_info(name), _meta_backbone(name))
        except (ConfigError, RuntimeError, TypeError, ValueError):
            continue
        if match.matched:
            found.append((name, match))
    found.sort(key=lambda nm: (-nm[1].coverage, -int(nm[1].complete and not nm[1].unmatched),
                               nm[1].how != "names", len(nm[0]), nm[0]))
    return found


def _plausible(name: str, sizes: list[int]) -> bool:
    """Whether any reading of the file has about as many tensors as the architecture (one cheap meta build)."""
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except (RuntimeError, TypeError, ValueError):
        return False
    n = sum(1 for k in model.state_dict() if not ignorable(k))
    return any(n - 8 <= size <= n + 8 for size in sizes)


def inspect_weights(path: str | Path, arch: str | None = None) -> dict[str, Any]:
    """Describe a weight file: container, layout, the architecture it fits best (or ``arch``), coverage and the
    tensors that did not match, statistics, and (for a chosen architecture) the load, its verification
    (:mod:`thyro.models.weights.verify`: what was checked and what it found; nothing is refused here) and the
    agreement of every BatchNorm layer with its statistics."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found.")
    if arch is not None:
        check_arch(arch)
    container = detect_container(path)
    out: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size, "container": container}
    if container == "keras-h5":
        layers, layout = read_keras_h5(path)
        out["format"] = f"Keras HDF5 ({layout})"
        out["keras_layers"] = len(layers)
        out["arch_guess"] = guess_keras_arch(layers)
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
            out["provenance"] = (info.get("metadata") or {}).get("provenance")
            out["arch_guess"] = info.get("arch")
            out["stats"] = tensor_stats(tensors)
        else:
            out["stats"] = tensor_stats({k: v for k, v in tensors.items() if not ignorable(k)})
            matches = guess_arch(tensors)
            if arch and not any(n == arch for n, _ in matches):
                matches += guess_arch(tensors, [arch])
            if matches:
                name, match = matches[0]
                out["arch_guess"] = name if match.complete else None
                out["match"] = match
                out["format"] = match.layout
                out["alternatives"] = [f"{n} ({m.matched}/{m.expected})" for n, m in matches[1:4]]
                if not match.complete:
                    out["near_miss"] = f"{name}: {match.describe()}"
            else:
                out["format"] = "unrecognised layout"
                out["arch_guess"] = None
                seq = guess_sequential_arch(tensors) if sequential_prefix(tensors) is not None else None
                if seq:
                    out["arch_guess"] = seq
    target = arch or out.get("arch_guess")
    if target is not None and _is_timm(target):
        try:
            model, report = build_model(target, f"file:{path}", allow_partial=True, unverified=True,
                                        allow_untrained=True)
            out["coverage"] = report
            out["input_spec"] = model.input_spec
            out["layout"] = model.layout
            out["verification"] = report.verification
            if report.coverage[0]:
                out["bn_check"] = bn_agreement(model.backbone, model.input_spec, arch_info(target).native_size)
        except WeightsError as exc:
            out["coverage_error"] = str(exc)
    return out


def _is_timm(name: str) -> bool:
    try:
        check_arch(name)
    except ConfigError:
        return False
    return True


def guess_sequential_arch(state: dict[str, torch.Tensor]) -> str | None:
    """Architecture of an ``nn.Sequential`` export, from the module names below its indices."""
    prefix = sequential_prefix(state) or ""
    body = {k[len(prefix):] for k in state if k.startswith(prefix) and not k.startswith(SEQUENTIAL_HEADS)}
    rest = {r.split(".", 1)[1] for r in body if "." in r}
    return recognise_sequential({r for r in rest if "." in r}, {f"backbone.{r}" for r in body})
