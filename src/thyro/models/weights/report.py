"""Load a state dict into a backbone, check coverage, and describe what happened.

Loading is strict about everything except the classification head: a tensor of the backbone
that the file does not provide (missing or of another shape), or a tensor in the file that the
backbone has no place for (unexpected), stops the load with a :class:`WeightsError` naming the
first offending tensors and how many there are.  ``strict=False`` would load these silently.
Tensors holding NaN or infinite values (a damaged file, or one saved from a diverged run) are
refused too, by name; ``thyro weights inspect`` still reports them.

A one-channel model (``in_chans_mode: sum``) gets the source's per-channel normalisation folded into
its first convolution and first BatchNorm (:func:`fold_input_normalisation`), so that it computes
what the three-channel model computes on a grey image, exactly away from the zero-padded border
(and everywhere when the source normalises every channel alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from thyro.errors import WeightsError
from thyro.models.archs import arch as arch_info
from thyro.models.backbones import first_conv_weight_key, is_head_key
from thyro.models.weights.layouts import ignorable as _ignorable
from thyro.models.weights.verify import Verification

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
    #: How the file's tensors were matched (layout, prefix, mapping), e.g. "efficientnet_pytorch, mapped by position".
    mapping: str | None = None
    partial: bool = False
    #: How the mapping was verified and whether the tensors look trained (:mod:`thyro.models.weights.verify`).
    verification: Verification | None = None

    @property
    def n_total(self) -> int:
        return len(self.loaded) + len(self.missing) + len(self.mismatched)

    @property
    def coverage(self) -> tuple[int, int]:
        """Backbone tensors (the head left out) loaded from the file, and in the backbone."""
        head = [k for k in self.loaded if is_head_key(self.arch, k)]
        missing = [k for k in self.missing if not is_head_key(self.arch, k)]
        mm = [m for m in self.mismatched if not is_head_key(self.arch, m[0])]
        done = len(self.loaded) - len(head)
        return done, done + len(missing) + len(mm)

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
            "mapping": self.mapping,
            "coverage": list(self.coverage),
            "partial": self.partial,
            "verification": self.verification.to_dict() if self.verification is not None else None,
        }

    def summary(self) -> str:
        """One line: ``loaded 120/122 tensors (head re-initialised)``."""
        if self.format == "none":
            return f"{self.arch}: random initialisation ({self.source})"
        head = "head re-initialised" if self.head_reinitialised else "head loaded"
        done, total = self.coverage
        checked = f"; {self.verification.short()}" if self.verification is not None else ""
        return (f"{self.arch} from {self.format} file {self.path}: backbone coverage {done}/{total} tensors "
                f"({100 * done / max(total, 1):.0f} %; {head}{checked})")

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
        if self.verification is not None:
            lines.append(f"  verification: {self.verification.line()}")
        return "\n".join(lines)

    def rows(self) -> list[tuple[str, str, str]]:
        """``(what, count, first names)`` of each kind of tensor, then the notes and the verification: the table a
        command line draws."""
        rows = [("loaded", str(len(self.loaded)), ""), ("missing", str(len(self.missing)), _first(self.missing)),
                ("unexpected", str(len(self.unexpected)), _first(self.unexpected)),
                ("shape-mismatched", str(len(self.mismatched)), _first([_mm(m) for m in self.mismatched]))]
        rows += [("note", "", note) for note in self.notes]
        if self.verification is not None:
            rows.append(("verification", "", self.verification.line()))
        return rows


def _mm(m: tuple[str, tuple, tuple]) -> str:
    return f"{m[0]} file {list(m[1])} vs model {list(m[2])}"


def _first(items: list[str], n: int = SHOW) -> str:
    if not items:
        return ""
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def adapt_first_conv(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], arch: str,
                     notes: list[str], fold: tuple | None = None) -> dict[str, torch.Tensor]:
    """Fit the file's first convolution to the model's input channels.

    For a one-channel model with ``fold = (mean, std, (m, s))`` (the source's per-channel mean and std
    in the order the backbone sees the channels, and the one-channel normalisation) the
    normalisation is folded in (:func:`fold_input_normalisation`); without it the RGB kernels are
    summed (timm's ``in_chans=1``).  A one-channel kernel for a
    three-channel model is spread over the channels (divided by 3).
    """
    key = first_conv_weight_key(arch)
    if key not in state or key not in model_state:
        return state
    w, target = state[key], model_state[key]
    if w.ndim != 4 or w.shape[0] != target.shape[0]:
        return state
    if target.shape[1] == 1 and fold is not None and w.shape[1] in (1, 3):
        return fold_input_normalisation(state, arch, fold[0], fold[1], fold[2], notes)
    if w.shape == target.shape:
        return state
    state = dict(state)
    if w.shape[1] == 3 and target.shape[1] == 1:
        state[key] = w.sum(dim=1, keepdim=True)
        notes.append(f"{key}: RGB kernels summed for 1-channel input")
    elif w.shape[1] == 1 and target.shape[1] == 3:
        state[key] = w.repeat(1, 3, 1, 1) / 3.0
        notes.append(f"{key}: 1-channel kernel spread over 3 channels (divided by 3)")
    return state


def fold_input_normalisation(state: dict[str, torch.Tensor], arch: str, mean: list[float], std: list[float],
                             target: tuple[float, float], notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Turn a first convolution fed ``(x - m_c) / s_c`` per channel into a one-channel one fed ``z = (x - m) / s``.

    A grey image shown to a three-channel network is ``x`` on every channel, normalised per channel.
    With ``x = s z + m`` the first convolution computes
    ``sum_c w_c * (s z + m - m_c) / s_c = (sum_c w_c s / s_c) * z + b``, ``b = sum_{c,k} w_c[k] (m - m_c) / s_c``
    per output channel.  So the one-channel kernel is ``sum_c w_c s / s_c``, and the constant ``b`` goes into
    the convolution's own bias when it has one (vision transformers, ConvNeXt), else into the BatchNorm the
    convolution feeds, ``running_mean' = running_mean - b`` (as Keras conv biases are folded).  This equals the
    three-channel network exactly wherever the kernel does not reach the zero padding.  On the padded border
    the three-channel network pads each channel with its own ``x = m_c``, the one-channel network with
    ``x = m``: the same when the channels share their normalisation (then ``b = 0`` and the kernel is the
    plain sum, exact everywhere), and otherwise ``target`` from :meth:`~thyro.models.adapter.InputSpec.folded`
    makes ``b`` vanish for kernels whose channels are equal, which keeps the border difference small.

    Parameters
    ----------
    mean, std : per kernel channel, in the order the backbone sees them; three values for a
        one-channel kernel are averaged (how one-channel models were normalised before folding).
    target : ``(m, s)``, the one-channel normalisation the adapter applies.

    Raises
    ------
    WeightsError
        When ``b`` is not zero and the architecture has neither a bias nor a BatchNorm right after its
        first convolution to take it.
    """
    info = arch_info(arch)
    key = info.first_conv_key
    w = state[key]
    c = w.shape[1]
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    if len(m) != c:
        m, s = m.mean().repeat(c), s.mean().repeat(c)
    m_t, s_t = float(target[0]), float(target[1])
    scaled = w.double() / s.view(1, c, 1, 1)
    shift = (scaled * (m_t - m).view(1, c, 1, 1)).sum(dim=(1, 2, 3))
    state = dict(state)
    state[key] = (scaled.sum(dim=1, keepdim=True) * s_t).to(w.dtype)
    bias = info.first_conv + ".bias"
    norm = f"{info.first_norm}.running_mean" if info.first_norm else None
    if bool((shift.abs() > 0).any()):
        if info.first_conv_bias and bias in state:
            state[bias] = (state[bias].double() + shift).to(state[bias].dtype)
            into = bias
        elif norm is not None and norm in state:
            state[norm] = (state[norm].double() - shift).to(state[norm].dtype)
            into = norm
        else:
            raise WeightsError(
                f"{arch}: in_chans_mode 'sum' needs a bias of the first convolution ({info.first_conv}) or a "
                "BatchNorm right after it to take the per-channel input normalisation, and it has neither; use "
                "in_chans_mode: repeat (exact for every source).")
    else:
        into = None
    if notes is not None and c > 1:
        notes.append(f"{key}: RGB kernels summed for 1-channel input" + (
            "" if into is None else f", each channel's normalisation (mean {', '.join(f'{v:.4g}' for v in mean)}; "
                                    f"std {', '.join(f'{v:.4g}' for v in std)}) folded into the kernel and {into} "
                                    "(exact away from the padded border)"))
    return state


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinite values."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], *, arch: str, source: str, fmt: str,
                 path: str | None = None, notes: list[str] | None = None, allow_partial: bool = False,
                 fold: tuple | None = None, allow_non_finite: bool = False) -> LoadReport:
    """Copy ``state`` into ``model`` after checking coverage; raise unless only the head is left out.

    Parameters
    ----------
    model : nn.Module
        The timm backbone (with head).
    state : dict
        Tensors with the backbone's key names.
    allow_partial : bool
        Load what fits and report the rest instead of refusing (``thyro weights inspect``, and an arm whose
        configuration says ``partial_weights: true``); the rest keeps its random initialisation.
    fold : (mean, std, (m, s)), optional
        For a one-channel model: the source's per-channel normalisation and the adapter's, the
        difference folded into the first convolution and BatchNorm (:func:`fold_input_normalisation`).
    allow_non_finite : bool
        Load tensors holding NaN or infinite values (``thyro weights inspect`` only).

    Raises
    ------
    WeightsError
        When a non-head tensor would stay uninitialised, a file tensor has no place, or a tensor
        to be loaded holds NaN or infinite values.
    """
    notes = list(notes or [])
    model_state = model.state_dict()
    if not allow_non_finite:
        bad = non_finite({k: v for k, v in state.items() if not _ignorable(k)})
        if bad:
            raise WeightsError(f"{path or source}: {len(bad)} tensor(s) hold NaN or infinite values: {_first(bad)}. "
                               "The file is damaged (copy it again) or was saved from a training run that diverged; "
                               "thyro does not load it (`thyro weights inspect FILE` shows the file).")
    state = adapt_first_conv(state, model_state, arch, notes, fold=fold)
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
    done, total = report.coverage
    if done < total:
        report.partial = True
        report.notes.append(f"partial: {done}/{total} backbone tensors loaded; the other {total - done} keep their "
                            "random initialisation")
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
    done, total = report.coverage
    parts.append(f"  ({done}/{total} backbone tensors did fit.)  Check that the file is for {report.arch}; "
                 f"`thyro weights inspect FILE` guesses its architecture. To start from the tensors that fit and "
                 f"leave the rest at random, pass allow_partial=True (a study arm: partial_weights: true).")
    return "\n".join(parts)
