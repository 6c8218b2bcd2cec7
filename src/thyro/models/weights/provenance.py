"""Where a network's starting weights came from and how they were shown to be what they claim: one record, one
line.

``thyro weights add`` stores a :func:`provenance_record` in the metadata of every file it writes: the source file
and its SHA-256, the layout found, the mapping and coverage, the network layout, when it was added, and how the
mapping was verified (by name; by position with the per-layer BatchNorm agreement and the classifier's answers on
photographs; unverified; untrained: :mod:`thyro.models.weights.verify`).  :func:`provenance_line` turns that, a
load report, or a weight source into the one line that ``thyro weights list``, ``thyro weights inspect``, reports
and model cards show.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from thyro.errors import WeightsError
from thyro.fileio import sha256_file
from thyro.models.model import ThyroNet, build_model
from thyro.models.weights.formats import detect_container, read_safetensors_metadata, thyro_metadata
from thyro.models.weights.report import LoadReport
from thyro.models.weights.sources import WeightSource, parse_weight_source
from thyro.models.weights.verify import Verification


def provenance_record(src: str | os.PathLike, report: LoadReport, model: ThyroNet, name: str) -> dict[str, Any]:
    """What ``thyro weights add`` stores about a file it converted (JSON-ready)."""
    src = Path(src)
    done, total = report.coverage
    verification = report.verification or Verification("thyro")
    return {"source_file": str(src.resolve()), "source_sha256": sha256_file(src), "layout": report.format,
            "mapping": report.mapping, "coverage": f"{done}/{total}", "net_layout": model.layout,
            "added": time.strftime("%Y-%m-%dT%H:%M:%S"), "kind": name, "verification": verification.to_dict(),
            "bn_check": next((c.detail for c in verification.checks if c.name == "BatchNorm statistics"), None)}


def _stored_line(prov: dict) -> str:
    verification = Verification.from_stored(prov)
    line = prov.get("verification", {}).get("line") if prov.get("verification") else verification.line()
    sha = str(prov.get("source_sha256") or "")[:12]
    return (f"from {prov.get('source_file')} (sha256 {sha}...), {prov.get('layout')}, coverage {prov.get('coverage')}, "
            f"added {prov.get('added')}; {line}")


def _stored_provenance(path: Path) -> dict | None:
    """The provenance a file of thyro's weights folder (or ``thyro weights convert``) recorded, else None."""
    if detect_container(path) != "safetensors":
        return None
    info = thyro_metadata(read_safetensors_metadata(path))
    return ((info or {}).get("metadata") or {}).get("provenance")


def _report_line(report: LoadReport) -> str:
    if report.format == "none":
        return f"{report.arch}: random initialisation ({report.source}); no pretrained weights"
    done, total = report.coverage
    path = Path(report.path) if report.path else None
    sha = sha256_file(path)[:12] if path is not None and path.is_file() else "?"
    line = report.verification.line() if report.verification is not None else "not verified"
    prov = _stored_provenance(path) if path is not None and path.is_file() else None
    added = ""
    if prov:  # converted once: where from, as recorded then
        added = (f", added {prov.get('added')} from {prov.get('source_file')} "
                 f"(sha256 {str(prov.get('source_sha256') or '')[:12]}..., {prov.get('layout')})")
    return (f"{report.arch} weights from {report.path} (sha256 {sha}..., {report.format}, coverage {done}/{total}"
            f"{added}): {line}")


def _file_line(path: Path, source: WeightSource, arch: str | None) -> str:
    if detect_container(path) == "safetensors":
        info = thyro_metadata(read_safetensors_metadata(path))
        prov = ((info or {}).get("metadata") or {}).get("provenance")
        if prov:
            return f"{path.name}: {_stored_line(prov)}"
        if info is not None and arch is None:
            return f"{path.name}: thyro {info.get('format')} checkpoint of {info.get('arch')} (timm's names)"
    if arch is None:
        raise WeightsError(f"{path}: say which architecture (arch=...) to tell how its weights map.")
    _, report = build_model(arch, source)
    return _report_line(report)


def provenance_line(what: LoadReport | dict | WeightSource | str | os.PathLike, arch: str | None = None) -> str:
    """One line saying where starting weights came from and how they were verified.

    Parameters
    ----------
    what : LoadReport, dict, WeightSource, str or path
        A load report (``build_model``'s second value); a stored file's provenance (:func:`provenance_record`) or a
        load report's ``to_dict()``; a weight source or its spec (``"imagenet"``, ``{"file": PATH}``); or a weight
        file's path.
    arch : str, optional
        The architecture, for a source or a file that is not in thyro's weights folder: it is then loaded as a
        study would load it (with the source's ``unverified`` / ``allow_untrained``), which verifies it.

    Returns
    -------
    str
        E.g. ``"efficientnet_lite0.imagenet.safetensors: from /x/efficientnet-lite0-57934424.pth (sha256
        57934424a1b2...), efficientnet_pytorch, coverage 245/245, added 2025-01-01T12:00:00; verified by position
        (efficientnet_pytorch); BatchNorm statistics passed: 49/49 ...; ImageNet classifier passed: ..."``; a
        file whose mapping was not verified says ``unverified``, one whose tensors look untrained ``untrained``.

    Raises
    ------
    WeightsError
        A file that cannot be read, or a source that cannot be loaded (as ``build_model`` says).
    """
    if isinstance(what, LoadReport):
        return _report_line(what)
    if isinstance(what, dict) and "source_file" in what:
        return _stored_line(what)
    if isinstance(what, dict) and "loaded" in what:
        found = (what.get("verification") or {}).get("line") or "not verified"
        done, total = what.get("coverage") or (0, 0)
        return (f"{what.get('arch')} weights from {what.get('path')} ({what.get('format')}, coverage {done}/{total}): "
                f"{found}")
    if isinstance(what, os.PathLike) or (isinstance(what, str) and Path(what).is_file()):
        path = Path(what)
        return _file_line(path, parse_weight_source(f"file:{path}", arch=arch), arch)
    source = parse_weight_source(what, arch=arch)
    path = source.resolve(arch)
    if path is None:
        return f"{arch or 'network'}: random initialisation; no pretrained weights"
    return _file_line(path, source, arch)


__all__ = ["provenance_line", "provenance_record"]
