"""Put weights in thyro's weights folder: convert a checkpoint once (``thyro weights add``), or download
timm's ImageNet weights on request (``thyro weights download``, the one command that uses the network).

See :mod:`thyro.models.weights.store` for the folder and how ``weights: imagenet`` finds what is there.
"""

from __future__ import annotations

import http.client
import os
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import timm.models
from huggingface_hub.errors import OfflineModeIsEnabled

from thyro.errors import ConfigError, WeightsError
from thyro.models.archs import check_arch
from thyro.models.checkpoint import save_backbone
from thyro.models.model import build_model
from thyro.models.weights.provenance import provenance_record
from thyro.models.weights.report import LoadReport
from thyro.models.weights.sources import HF_FILES, check_file, hf_hub_cache, timm_tags
from thyro.models.weights.store import entry_claim, stored_path, writable_weights_dir
from thyro.models.weights.verify import refusal

#: Seconds ``download_weights`` waits for the hub to answer before it calls the machine offline.
CONNECT_TIMEOUT_S = 2.0


def add_weights(src: str | os.PathLike, arch: str, *, name: str = "imagenet", layout: str | None = None,
                input_spec=None, force: bool = False, unverified: bool = False,
                allow_untrained: bool = False) -> tuple[Path, LoadReport, dict]:
    """Convert ``src`` (any layout thyro recognises) for ``arch`` and store it as ``<arch>.<name>.safetensors``.

    The file must cover the whole backbone, its mapping must be verified and its tensors must look trained
    (:mod:`thyro.models.weights.verify`); its preprocessing (declared, published, or chosen from its first BatchNorm)
    and layout are written with it, with the provenance (:func:`~thyro.models.weights.provenance.provenance_record`).
    The folder is checked to be writable before the conversion starts, and the entry is held while it runs: a second
    add of the same name meanwhile is refused, and an existing entry is replaced only with ``force``.

    Returns
    -------
    (path written, load report, provenance)

    Raises
    ------
    WeightsError
        A file that does not cover the backbone, holds NaN/Inf, cannot be verified (unless ``unverified``) or looks
        untrained (unless ``allow_untrained``); an unwritable weights folder; an entry that exists (unless
        ``force``) or that another process is adding.
    """
    src = check_file(Path(src), "weights add")
    out = stored_path(arch, name)
    writable_weights_dir()
    with entry_claim(out):
        if out.exists() and not force:
            raise refusal(f"{out} exists already (its provenance: `thyro weights list`); nothing was replaced.",
                          "force", then="replace it")
        model, report = build_model(arch, f"file:{src}", layout=layout, input_spec=input_spec, unverified=unverified,
                                    allow_untrained=allow_untrained)
        provenance = provenance_record(src, report, model, name)
        save_backbone(out, model, metadata={"provenance": provenance, "converted_from": src.name,
                                            "source_sha256": provenance["source_sha256"],
                                            "source_format": report.format})
    return out, report, provenance


def download_weights(arch: str, tag: str | None = None, *, timeout: float = CONNECT_TIMEOUT_S) -> Path:
    """Download timm's ImageNet weights of ``arch`` (its default tag, or ``tag``) into the Hugging Face cache,
    where ``weights: imagenet`` finds them, with huggingface_hub's progress bar.

    The hub's host is asked first, waiting at most ``timeout`` seconds (:func:`hub_unreachable`), then the hub for the
    file's metadata, once, without huggingface_hub's retries: without a network this ends within about ``timeout``
    seconds, in one line.

    Raises
    ------
    WeightsError
        Offline, or the hub refuses: one line saying what to copy where instead.
    """
    tags = timm_tags(check_arch(arch))  # the name only: building the network to describe it takes seconds
    if tag is not None and tag not in tags:
        raise ConfigError(f"{arch} has no ImageNet tag {tag!r} in timm; its tags: {', '.join(tags) or 'none'}.")
    if not tags:
        raise WeightsError(f"timm publishes no pretrained weights for {arch}; name a checkpoint you have: "
                           f"thyro weights add FILE --arch {arch}.")
    chosen = tag or _default_tag(arch, tags)
    cfg = _pretrained_cfg(chosen)
    hub = cfg.get("hf_hub_id") or f"timm/{chosen}"
    filename = cfg.get("hf_hub_filename") or HF_FILES[0]
    url = huggingface_hub.hf_hub_url(hub, filename)
    try:
        unreachable = hub_unreachable(url, timeout)
        if unreachable is None:
            huggingface_hub.get_hf_file_metadata(url, timeout=timeout)  # one request: no retries unless asked for
            path = huggingface_hub.hf_hub_download(hub, filename, cache_dir=str(hf_hub_cache()))
    except Exception as exc:  # network, proxy, hub and HTTP errors all end here: one line, no traceback
        unreachable = _why(exc, url)
    if unreachable is not None:
        folder = hf_hub_cache() / f"models--{hub.replace('/', '--')}"
        raise WeightsError(
            f"could not download {chosen} from the Hugging Face hub: {unreachable}. On a machine with internet run "
            f"`thyro weights download {arch}` and copy its folder {folder} (it holds snapshots/*/{filename}) to the "
            f"same place here, or copy any checkpoint of {arch} here and run `thyro weights add FILE --arch {arch}`.")
    return Path(path)


def hub_unreachable(url: str, timeout: float) -> str | None:
    """Why the host of ``url`` does not answer an HTTP request within ``timeout`` seconds, or None when it does.

    Written here rather than left to huggingface_hub: before its first request it asks the hub for a registry
    of its own (3 s) and then waits for the file (``timeout``), so a network that drops packets would take five
    seconds and more to be called offline.  Behind a proxy (``HTTPS_PROXY``...) nothing is probed: the proxy
    decides, and huggingface_hub's own errors say why.
    """
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return "huggingface_hub's offline mode is on (HF_HUB_OFFLINE)"
    parts = urlparse(url)
    if parts.scheme in urllib.request.getproxies():
        return None
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("HEAD", "/")
        conn.getresponse()
    except TimeoutError:
        return f"no answer from {parts.netloc} within {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        return f"no connection to {parts.netloc} ({_short(exc)})"
    finally:
        conn.close()
    return None


def _short(exc: BaseException) -> str:
    """An exception in a few words, never cut mid-word: its text when short, else its kind."""
    text = " ".join(str(exc).split())
    return text if text and len(text) <= 80 else type(exc).__name__


def _why(exc: BaseException, url: str) -> str:
    if isinstance(exc, OfflineModeIsEnabled):
        return "huggingface_hub's offline mode is on (HF_HUB_OFFLINE)"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status:
        return f"the hub answered HTTP {status}"
    return f"no connection to {urlparse(url).netloc} ({type(exc).__name__}: {_short(exc)})"


def _pretrained_cfg(tag: str) -> dict:
    cfg = timm.models.get_pretrained_cfg(tag)
    return dict(cfg.to_dict()) if cfg is not None else {}


def _default_tag(name: str, tags: list[str]) -> str:
    cfg = timm.models.get_pretrained_cfg(name)  # the architecture's default tag
    default = f"{name}.{cfg.tag}" if cfg is not None and getattr(cfg, "tag", None) else None
    return default if default in tags else tags[0]
