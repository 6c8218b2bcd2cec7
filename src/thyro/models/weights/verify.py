"""How a weight file's tensors were shown to be in the right places, and whether they were ever trained.

Every load of a weight file (``build_model``, ``thyro weights add``) ends in a :class:`Verification`:

* **by name**: timm/torchvision names (under any wrapper or SSL prefix), a Sequential export's module names,
  Keras layer names, or thyro's own checkpoints: each tensor says where it goes, whatever order it was saved in.
* **by position** (:mod:`thyro.models.weights.layouts`): the names say nothing, so the mapping is verified by
  what the tensors do.  Every BatchNorm layer must agree with the statistics of its input
  (:mod:`~thyro.models.weights.bncheck`), and where the file carries its ImageNet classifier its answers for
  real photographs must match the layout's reference implementation, or be confident and stable, and plausible
  (:mod:`~thyro.models.weights.classifier`).  A mapping that fails, or that nothing can check (no BatchNorm, no
  classifier), is refused unless the caller passes ``unverified=True``; it is then called *unverified* wherever
  the weights are described.
* **untrained** (:mod:`~thyro.models.weights.untrained`): tensors still at a fresh initialisation are refused
  as a pretrained start unless the caller passes ``allow_untrained=True``; they are then called *untrained*.

A stored file (``thyro weights add``) carries its verification in its provenance, and a load of it says what
that was; one added with ``unverified=True`` needs ``unverified=True`` again to be used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from thyro.errors import WeightsError
from thyro.models.adapter import InputSpec
from thyro.models.archs import ArchInfo
from thyro.models.weights.bncheck import bn_agreement
from thyro.models.weights.classifier import check_classifier, file_classifier, reference_model
from thyro.models.weights.layouts import Match

#: How tensors were matched, in words.
METHODS = {"names": "by name", "sequential": "by the network's children", "positions": "by position",
           "keras": "by Keras layer name", "thyro": "thyro checkpoint (timm's names)"}
#: What a study arm says for each override (the library's parameters are ``unverified`` and ``allow_untrained``).
ARM_OPTIONS = {"unverified": "unverified_weights: true", "allow_untrained": "allow_untrained_weights: true"}


@dataclass
class Check:
    """One check of a mapping: its name, whether it passed, and what it measured."""

    name: str
    passed: bool
    detail: str


@dataclass
class Verification:
    """How a weight file was verified (see the module docstring).

    Attributes
    ----------
    method : str
        A key of :data:`METHODS`.
    layout : str
        The layout found (``efficientnet_pytorch``, ``timm/torchvision names``, ...).
    checks : list of Check
        For a mapping by position: the BatchNorm and classifier checks.
    untrained : str or None
        Why the tensors look like a fresh initialisation.
    accepted : list of str
        Overrides the caller gave that were needed: ``unverified``, ``allow_untrained``.
    stored : str or None
        For a file of thyro's weights folder: the verification recorded when it was added.
    """

    method: str
    layout: str = ""
    checks: list[Check] = field(default_factory=list)
    untrained: str | None = None
    accepted: list[str] = field(default_factory=list)
    stored: str | None = None
    stored_verified: bool = True

    @property
    def verified(self) -> bool:
        """The mapping was shown to be right (by name, or every check of a mapping by position passed)."""
        if self.method == "positions":
            return bool(self.checks) and all(c.passed for c in self.checks)
        return self.stored_verified

    @property
    def status(self) -> str:
        """``untrained``, ``unverified`` or ``verified``."""
        return "untrained" if self.untrained else ("verified" if self.verified else "unverified")

    def evidence(self) -> str:
        """What was checked and what it found."""
        if self.stored is not None:
            return f"{self.stored} (as recorded when the file was added)"
        how = METHODS.get(self.method, self.method) + (f" ({self.layout})" if self.layout else "")
        if self.method != "positions":
            return how
        if not self.checks:
            return f"{how}; nothing to check the mapping against (no BatchNorm statistics, no ImageNet classifier)"
        return how + "; " + "; ".join(f"{c.name} {'passed' if c.passed else 'FAILED'}: {c.detail}" for c in self.checks)

    def _accepted(self) -> str:
        return "accepted with " + " and ".join(f"{a}=True" for a in self.accepted)

    def line(self) -> str:
        """One line: the status, the evidence, and the override that let it through."""
        parts = [f"untrained ({self.untrained})"] if self.untrained and "untrained" not in (self.stored or "") else []
        if self.stored is not None:
            parts.append(self.evidence())
        else:
            parts.append(("verified " if self.verified else "unverified: ") + self.evidence())
        if self.accepted:
            parts.append(self._accepted())
        return "; ".join(parts)

    def short(self) -> str:
        """A few words for a one-line summary (``verified by position``, ``unverified (accepted ...)``)."""
        if not self.verified:
            words = "unverified"
        elif self.stored is not None:
            words = "verified when it was added"
        else:
            words = "verified " + METHODS.get(self.method, self.method)
        if self.untrained:
            words = "untrained, " + words
        return words + (f" ({self._accepted()})" if self.accepted else "")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "method": self.method, "layout": self.layout, "verified": self.verified,
                "checks": [c.__dict__ for c in self.checks], "untrained": self.untrained,
                "accepted": list(self.accepted), "line": self.line()}

    @classmethod
    def from_stored(cls, provenance: dict | None) -> Verification:
        """The verification a stored file's provenance records (older files: what they recorded)."""
        record = (provenance or {}).get("verification")
        if record:
            return cls("thyro", stored=record.get("line") or record.get("status"),
                       stored_verified=bool(record.get("verified")), untrained=record.get("untrained"))
        if provenance and "by position" in str(provenance.get("mapping")):  # added before mappings were verified
            return cls("thyro", stored=f"unverified: {provenance.get('mapping')}; only a share of its BatchNorm layers "
                                       f"was checked ({provenance.get('bn_check')}); add the file again to verify it",
                       stored_verified=False)
        return cls("thyro")


def refusal(message: str, parameter: str, then: str = "use it anyway") -> WeightsError:
    """A :class:`WeightsError` for a check an override could let through (``... To {then}, pass
    {parameter}=True.``); ``reason`` (the message alone) and ``parameter`` are kept on it, so that a command line
    can name its own flag instead."""
    arm = f" (a study arm: {ARM_OPTIONS[parameter]})" if parameter in ARM_OPTIONS else ""
    err = WeightsError(f"{message} To {then}, pass {parameter}=True{arm}.")
    err.reason, err.parameter, err.then = message, parameter, then
    return err


def verify_positions(match: Match, state: dict, info: ArchInfo, backbone: nn.Module, spec: InputSpec,
                     size: int) -> list[Check]:
    """The checks of a mapping by position: ``backbone`` is a three-channel network holding the file's tensors,
    ``state`` the file's tensors under the backbone's names (its classifier under the head's), ``spec`` its input
    normalisation and ``size`` the images' side."""
    checks = []
    bn = bn_agreement(backbone, spec, size)
    if bn.layers:
        checks.append(Check("BatchNorm statistics", bn.ok, bn.summary()))
    head = file_classifier(state, info)
    if head is not None:
        reference = reference_model(match.layout, info.name, size, match.source)
        found = check_classifier(backbone, head, spec, size, reference)
        if found is not None:
            checks.append(Check("ImageNet classifier", found.passed, found.detail))
    return checks


__all__ = ["ARM_OPTIONS", "Check", "METHODS", "Verification", "refusal", "verify_positions"]
