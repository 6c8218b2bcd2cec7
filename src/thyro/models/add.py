"""Put weights in thyro's weights folder: convert a checkpoint once (``thyro weights add``), or download
timm's ImageNet weights on request (``thyro weights download``, the one command that uses the network).

See :mod:`thyro.models.weights.store` for the folder and how ``weights: imagenet`` finds what is there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from thyro.errors import ConfigError, WeightsError
from thyro.fileio import sha256_file
from thyro.models.archs import arch as arch_info
from thyro.models.checkpoint import save_backbone
from thyro.models.model import build_model
from thyro.models.weights.bncheck import bn_agreement, reference_images
from thyro.models.weights.report import LoadReport
from thyro.models.weights.sources import HF_FILES, hf_hub_cache, timm_tags
from thyro.models.weights.store import stored_path


def add_weights(src: str | os.PathLike, arch: str, *, name: str = "imagenet", layout: str | None = None,
                input_spec=None, force: bool = False) -> tuple[Path, LoadReport, dict]:
    """Convert ``src`` (any layout thyro recognises) for ``arch`` and store it as ``<arch>.<name>.safetensors``.

    The file must cover the whole backbone and agree with its own BatchNorm statistics (checked on reference
    images); its preprocessing (declared, published, or chosen from its first BatchNorm) and layout are written
    with it, with the provenance (source file and SHA-256, layout found, coverage, the check).

    Returns
    -------
    (path written, load report, provenance)

    Raises
    ------
    WeightsError
        A file that does not cover the backbone, holds NaN/Inf, or contradicts its statistics; an existing
        entry without ``force``.
    """
    src = Path(src)
    out = stored_path(arch, name)
    if out.exists() and not force:
        raise WeightsError(f"{out} exists already (its provenance: `thyro weights list`); add --force to replace it.")
    model, report = build_model(arch, f"file:{src}", layout=layout, input_spec=input_spec)
    check = bn_agreement(model.backbone, model.input_spec, reference_images(arch_info(arch).native_size))
    if not check.ok:
        raise WeightsError(f"{src}: loaded into {arch}, the network disagrees with the file's own BatchNorm "
                           f"statistics ({check.summary()}); not added. Check the architecture "
                           "(`thyro weights inspect FILE`).")
    done, total = report.coverage
    provenance = {"source_file": str(src.resolve()), "source_sha256": sha256_file(src), "layout": report.format,
                  "mapping": report.mapping, "coverage": f"{done}/{total}", "bn_check": check.summary(),
                  "net_layout": model.layout, "added": time.strftime("%Y-%m-%dT%H:%M:%S"), "kind": name}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_backbone(out, model, metadata={"provenance": provenance, "converted_from": src.name,
                                        "source_sha256": provenance["source_sha256"], "source_format": report.format})
    return out, report, provenance


def download_weights(arch: str, tag: str | None = None) -> Path:
    """Download timm's ImageNet weights of ``arch`` (its default tag, or ``tag``) into the Hugging Face cache,
    where ``weights: imagenet`` finds them, with huggingface_hub's progress bar.

    Raises
    ------
    WeightsError
        Offline, or the hub refuses: one sentence saying what to copy where instead.
    """
    info = arch_info(arch)
    tags = timm_tags(info.name)
    if tag is not None and tag not in tags:
        raise ConfigError(f"{arch} has no ImageNet tag {tag!r} in timm; its tags: {', '.join(tags) or 'none'}.")
    if not tags:
        raise WeightsError(f"timm publishes no pretrained weights for {arch}; name a checkpoint you have: "
                           f"thyro weights add FILE --arch {arch}.")
    chosen = tag or _default_tag(info.name, tags)
    try:
        from huggingface_hub import hf_hub_download

        cfg = _pretrained_cfg(chosen)
        hub = cfg.get("hf_hub_id") or f"timm/{chosen}"
        filename = cfg.get("hf_hub_filename") or HF_FILES[0]
        path = hf_hub_download(hub, filename, cache_dir=str(hf_hub_cache()))
    except Exception as exc:  # network, proxy, hub and HTTP errors all end here: one sentence, no traceback
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise WeightsError(
            f"could not download {chosen} from the Hugging Face hub ({why}). On a machine with internet run "
            f"`thyro weights download {arch}` and copy {hf_hub_cache()}/models--timm--{chosen} to the same place "
            f"here, or copy any checkpoint of {arch} and run `thyro weights add FILE --arch {arch}`.") from None
    return Path(path)


def _pretrained_cfg(tag: str) -> dict:
    import timm.models

    cfg = timm.models.get_pretrained_cfg(tag)
    return dict(cfg.to_dict()) if cfg is not None else {}


def _default_tag(name: str, tags: list[str]) -> str:
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)  # the architecture's default tag
    default = f"{name}.{cfg.tag}" if cfg is not None and getattr(cfg, "tag", None) else None
    return default if default in tags else tags[0]
