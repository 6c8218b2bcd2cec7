"""What a manifest's labels mean: where they came from (``label_source``) and what label 1 stands for
(``label_definition``).  The meaning travels from the manifest into the run, the report, the model card,
``thyro predict``'s output and the web page, so a model trained on TI-RADS-derived labels is never
presented as a malignancy model."""

from __future__ import annotations

from dataclasses import dataclass

from thyro.errors import DataError

#: How labels may have been obtained, and how each is described.
LABEL_SOURCES: dict[str, str] = {
    "pathology": "pathology (histology of the resected or biopsied nodule)",
    "cytology": "cytology (fine-needle aspiration, Bethesda category)",
    "tirads": "radiologists' TI-RADS categories, not pathology",
    "synthetic": "synthetic (thyro phantom): drawn from a known probability given the simulated features",
    "unknown": "not recorded",
}


@dataclass(frozen=True)
class LabelMeaning:
    """What label 1 stands for, and where labels came from.

    Attributes
    ----------
    source : str
        One of :data:`LABEL_SOURCES`.
    definition : str
        What label 1 means when it is not malignancy itself (e.g. ``TI-RADS >= 4c``); empty otherwise.
    """

    source: str = "unknown"
    definition: str = ""

    def __post_init__(self):
        if self.source not in LABEL_SOURCES:
            raise DataError(f"label_source {self.source!r} is not one of {', '.join(LABEL_SOURCES)}")

    @property
    def malignancy(self) -> bool:
        """True when label 1 means malignant (pathology, cytology, the phantom, or not recorded)."""
        return self.source != "tirads"

    @property
    def positive(self) -> str:
        """Name of class 1: ``malignant``, or e.g. ``TI-RADS >= 4c``."""
        return "malignant" if self.malignancy else (self.definition or "suspicious (TI-RADS)")

    @property
    def negative(self) -> str:
        return "benign" if self.malignancy else (f"not {self.definition}" if self.definition else "not suspicious")

    @property
    def probability_name(self) -> str:
        """How a probability is called: ``malignancy probability`` or ``TI-RADS >= 4c probability``."""
        return "malignancy probability" if self.malignancy else f"{self.positive} probability"

    @property
    def provenance(self) -> str:
        """How the labels were obtained, in words (``radiologists' TI-RADS categories, not pathology``)."""
        return LABEL_SOURCES[self.source]

    def describe(self) -> str:
        """One sentence for reports and model cards."""
        text = self.provenance
        text = text[0].upper() + text[1:]
        if not self.malignancy:
            text += (f"; label 1 = {self.positive}. The model predicts a radiologist's suspicion category, "
                     "not the pathology result")
        else:
            if self.definition:
                text += f"; label 1 = malignant ({self.definition})"
            if self.source == "unknown":
                text += "; state how the labels were obtained (manifest column label_source) before using the model"
        return text + "."

    def summary(self) -> str:
        """One line for consoles, titles and captions: ``label 1 = TI-RADS ≥ 4c; labels: radiologists' ...``."""
        name = self.positive + (f" ({self.definition})" if self.malignancy and self.definition else "")
        return f"label 1 = {name}; labels: {self.provenance}"

    def same_as(self, other: LabelMeaning) -> bool:
        """Whether two label sets mean the same (same source; same definition, spelling of >= and case aside)."""
        def norm(text: str) -> str:
            return " ".join(text.replace("≥", ">=").replace("≤", "<=").lower().split())

        return self.source == other.source and norm(self.definition) == norm(other.definition)

    def mismatch(self, labels: LabelMeaning, where: str) -> str | None:
        """One sentence when ``labels`` (those of ``where``, e.g. an external set) differ from these, the
        labels a model was trained on; None when they agree (or neither is recorded)."""
        if self.same_as(labels) or (self.source == "unknown" and labels.source == "unknown"):
            return None
        if "unknown" in (self.source, labels.source):
            return (f"Whether the labels of {where} ({labels.positive}; {labels.provenance}) mean what the training "
                    f"labels meant ({self.positive}; {self.provenance}) cannot be checked: record label_source in "
                    "both manifests.")
        detail = f" ({labels.definition})" if labels.malignancy and labels.definition else ""
        return (f"Labels differ: the model was trained on {self.positive} ({self.provenance}) but {where} is "
                f"labelled {labels.positive}{detail} by {labels.provenance}, so its AUROC there measures how well a {self.probability_name} ranks "
                f"{labels.positive} cases.")

    def to_dict(self) -> dict:
        return {"source": self.source, "definition": self.definition, "positive": self.positive,
                "negative": self.negative, "probability_name": self.probability_name, "description": self.describe(),
                "summary": self.summary(), "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict | None) -> LabelMeaning:
        d = d or {}
        return cls(str(d.get("source") or "unknown"), str(d.get("definition") or ""))


__all__ = ["LABEL_SOURCES", "LabelMeaning"]
