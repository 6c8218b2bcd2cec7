"""Load a state dict into a backbone, check coverage, and describe what happened.

Loading is strict about everything except the classification head: a tensor of the backbone
that the file does not provide (missing or of another shape), or a tensor in the file that the
backbone has no place for (unexpected), stops the load with a :class:`WeightsError` naming the
first offending tensors and how many there are.  ``strict=False`` would load these silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from thyro.errors import WeightsError
from thyro.models.backbones import first_conv_weight_key, is_head_key

#: Keys a file may carry that no thyro backbone needs (auxiliary classifiers, BN counters).
IGNORABLE_SUFFIXES = ("num_batches_tracked",)
IGNORABLE_PREFIXES = ("AuxLogits.",)
SHOW = 5


@dataclass
class LoadReport:
    """What a weight load did.

    Attributes
    ----------
    source : str
        The weight spec (``"none"``, ``"imagenet"``, ``"file:..."``) and file.
    format : str
        Detected file format.
    arch : str
        Backbone architecture.
    loaded : list of str
        Backbone tensors set from the file.
    missing : list of str
        Backbone tensors the file does not provide (left at their random init).
    unexpected : list of str
        File tensors the backbone has no place for (ignored).
    mismatched : list of (str, tuple, tuple)
        Key, shape in the file, shape in the backbone.
    head_reinitialised : bool
        The classification head was initialised randomly (the usual case for transfer).
    notes : list of str
        Conversions applied (bias folding, channel summing, layout changes, ...).
    """

    source: str
    format: str
    arch: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    head_reinitialised: bool = True
    notes: list[str] = field(default_factory=list)
    path: str | None = None
    input_spec: dict | None = None
    layout: str = "timm"

    @property
    def n_total(self) -> int:
        return len(self.loaded) + len(self.missing) + len(self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (lists of keys kept whole)."""
        return {
            "source": self.source,
            "path": self.path,
            "format": self.format,
            "arch": self.arch,
            "layout": self.layout,
            "loaded": len(self.loaded),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched],
            "head_reinitialised": self.head_reinitialised,
            "notes": list(self.notes),
            "input_spec": self.input_spec,
        }

    def summary(self) -> str:
        """One line: ``loaded 120/122 tensors (head re-initialised)``."""
        if self.format == "none":
            return f"{self.arch}: random initialisation ({self.source})"
        head = "head re-initialised" if self.head_reinitialised else "head loaded"
        return f"{self.arch} from {self.format} file {self.path}: loaded {len(self.loaded)}/{self.n_total} tensors ({head})"

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.format == "none":
            return lines[0]
        rows = [("loaded", len(self.loaded), ""), ("missing", len(self.missing), _first(self.missing)),
                ("unexpected", len(self.unexpected), _first(self.unexpected)),
                ("shape-mismatched", len(self.mismatched), _first([_mm(m) for m in self.mismatched]))]
        for name, n, first in rows:
            lines.append(f"  {name:<17}{n:>6}  {first}".rstrip())
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __rich__(self):
        from rich.table import Table

        table = Table(title=self.summary(), show_lines=False)
        table.add_column("tensors")
        table.add_column("count", justify="right")
        table.add_column("first")
        table.add_row("loaded", str(len(self.loaded)), "")
        table.add_row("missing", str(len(self.missing)), _first(self.missing))
        table.add_row("unexpected", str(len(self.unexpected)), _first(self.unexpected))
        table.add_row("shape-mismatched", str(len(self.mismatched)), _first([_mm(m) for m in self.mismatched]))
        for note in self.notes:
            table.add_row("note", "", note)
        return table


def _mm(m: tuple[str, tuple, tuple]) -> str:
    return f"{m[0]} file {list(m[1])} vs model {list(m[2])}"


def _first(items: list[str], n: int = SHOW) -> str:
    if not items:
        return ""
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _ignorable(key: str) -> bool:
    return key.endswith(IGNORABLE_SUFFIXES) or key.startswith(IGNORABLE_PREFIXES)


def adapt_first_conv(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], arch: str,
                     notes: list[str]) -> dict[str, torch.Tensor]:
    """Sum a 3-channel first kernel for a 1-channel model (timm's ``in_chans=1``), or the reverse."""
    key = first_conv_weight_key(arch)
    if key not in state or key not in model_state:
        return state
    w, target = state[key], model_state[key]
    if w.ndim != 4 or w.shape == target.shape or w.shape[0] != target.shape[0]:
        return state
    state = dict(state)
    if w.shape[1] == 3 and target.shape[1] == 1:
        state[key] = w.sum(dim=1, keepdim=True)
        notes.append(f"{key}: RGB kernels summed for 1-channel input")
    elif w.shape[1] == 1 and target.shape[1] == 3:
        state[key] = w.repeat(1, 3, 1, 1) / 3.0
        notes.append(f"{key}: 1-channel kernel spread over 3 channels (divided by 3)")
    return state


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], *, arch: str, source: str, fmt: str,
                 path: str | None = None, notes: list[str] | None = None, allow_partial: bool = False) -> LoadReport:
    """Copy ``state`` into ``model`` after checking coverage; raise unless only the head is left out.

    Parameters
    ----------
    model : nn.Module
        The timm backbone (with head).
    state : dict
        Tensors with the backbone's key names.
    allow_partial : bool
        Load what fits and report the rest instead of refusing (``thyro weights inspect`` only).

    Raises
    ------
    WeightsError
        When a non-head tensor would stay uninitialised or a file tensor has no place.
    """
    notes = list(notes or [])
    model_state = model.state_dict()
    state = adapt_first_conv(state, model_state, arch, notes)
    report = LoadReport(source=source, format=fmt, arch=arch, path=path, notes=notes)
    to_load: dict[str, torch.Tensor] = {}
    head_loaded = []
    for key, target in model_state.items():
        if _ignorable(key):
            continue
        if key not in state:
            report.missing.append(key)
        elif tuple(state[key].shape) != tuple(target.shape):
            report.mismatched.append((key, tuple(state[key].shape), tuple(target.shape)))
        else:
            to_load[key] = state[key]
            report.loaded.append(key)
            if is_head_key(arch, key):
                head_loaded.append(key)
    report.unexpected = [k for k in state if k not in model_state and not _ignorable(k) and not is_head_key(arch, k)]
    head_keys = [k for k in model_state if is_head_key(arch, k)]
    report.head_reinitialised = len(head_loaded) < len(head_keys)
    if report.head_reinitialised and head_loaded:
        # A half-loaded head is no head: keep it at its initialisation entirely.
        for key in head_loaded:
            to_load.pop(key)
            report.loaded.remove(key)
    if report.head_reinitialised:
        mm = [m for m in report.mismatched if is_head_key(arch, m[0])]
        why = f" (file head {list(mm[0][1])}, model head {list(mm[0][2])})" if mm else ""
        report.notes.append(f"classification head re-initialised{why}")

    bad_missing = [k for k in report.missing if not is_head_key(arch, k)]
    bad_mm = [m for m in report.mismatched if not is_head_key(arch, m[0])]
    if (bad_missing or bad_mm or report.unexpected) and not allow_partial:
        raise WeightsError(_refusal(report, bad_missing, bad_mm))
    if not to_load and not allow_partial:
        raise WeightsError(f"{path or source}: no tensor of the file fits a {arch} backbone.")
    with torch.no_grad():
        for key, value in to_load.items():
            target = model_state[key]
            target.copy_(value.to(dtype=target.dtype))
    return report


def _refusal(report: LoadReport, bad_missing: list[str], bad_mm: list[tuple]) -> str:
    parts = [f"{report.path or report.source} ({report.format}) does not fit a {report.arch} backbone; "
             f"refusing to load it partially (only the classification head may stay uninitialised)."]
    if bad_mm:
        parts.append(f"  {len(bad_mm)} tensor(s) of another shape: " + _first([_mm(m) for m in bad_mm], 3))
    if bad_missing:
        parts.append(f"  {len(bad_missing)} backbone tensor(s) missing from the file: " + _first(bad_missing, 3))
    if report.unexpected:
        parts.append(f"  {len(report.unexpected)} file tensor(s) with no place in the backbone: "
                     + _first(report.unexpected, 3))
    parts.append(f"  ({len(report.loaded)} tensor(s) did fit.)  Check that the file is for {report.arch}; "
                 f"`thyro weights inspect FILE` guesses its architecture.")
    return "\n".join(parts)
