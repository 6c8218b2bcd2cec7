"""A manifest at a glance: class balance by image, patient and group; duplicates; sizes and modes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thyro.data.dedup import NEAR_THRESHOLD, natural_key, near_pairs
from thyro.data.manifest import LabelMeaning, Manifest
from thyro.data.readers import ImageReadError, probe_image
from thyro.errors import DataError


@dataclass
class Inspection:
    """What :func:`inspect_manifest` found.

    Attributes
    ----------
    balance : DataFrame
        Rows malignant/benign/unlabelled/all (plus "mixed" for patients and groups holding both
        classes); columns images, patients, groups.
    merged_groups : dict
        Group -> the patients it holds, for groups of more than one patient (duplicates across
        patients).
    exact_duplicates : list of list of str
        Image ids with identical pixels (from the ``content_hash`` column, when present).
    near_duplicates : list of tuple
        ``(image_a, image_b, distance)`` within :data:`~thyro.data.dedup.NEAR_THRESHOLD` pHash bits
        that are not identical (from the ``phash`` column, when present).
    sizes : Counter
        ``"WxH"`` -> number of images.
    modes : Counter
        Source mode (``RGB``, ``L``, ``DICOM MONOCHROME2``...) -> number of images.
    unreadable : list of str
        Images whose header could not be read.
    """

    balance: pd.DataFrame
    merged_groups: dict[str, list[str]] = field(default_factory=dict)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    has_hashes: bool = False
    notes: list[str] = field(default_factory=list)
    labels: LabelMeaning | None = None


def class_balance(df: pd.DataFrame) -> pd.DataFrame:
    """Images, patients and groups per class; a patient/group with both labels counts as "mixed".

    The one count of a manifest's classes: ``thyro data import``, ``inspect`` and a study's data
    summary all show it.  A patient or group is counted by the labels of its labelled images; one
    whose images are all unlabelled counts as unlabelled (:func:`balance_notes` says how many hold
    both labelled and unlabelled images).
    """
    rows = {}
    for unit, col in (("patients", "patient_id"), ("groups", "group")):
        per = df.groupby(col)["label"].agg(lambda s: frozenset(int(v) for v in s.dropna()))
        rows[unit] = {
            "malignant (1)": int((per == frozenset({1})).sum()),
            "benign (0)": int((per == frozenset({0})).sum()),
            "mixed": int((per == frozenset({0, 1})).sum()),
            "unlabelled": int((per == frozenset()).sum()),
            "all": int(len(per)),
        }
    images = {
        "malignant (1)": int((df["label"] == 1).sum()),
        "benign (0)": int((df["label"] == 0).sum()),
        "mixed": 0,
        "unlabelled": int(df["label"].isna().sum()),
        "all": len(df),
    }
    return pd.DataFrame({"images": images, **rows})


def balance_notes(df: pd.DataFrame) -> list[str]:
    """What the class counts of :func:`class_balance` leave implicit, one line each."""
    notes = []
    for unit, col in (("patient", "patient_id"), ("group", "group")):
        has = df.groupby(col)["label"].agg(lambda s: (s.notna().any(), s.isna().any()))
        both = int(sum(1 for a, b in has if a and b))
        if both:
            notes.append(f"{both} {unit}(s) hold both labelled and unlabelled images: they are counted by their "
                         f"labelled images (a study uses only those)")
    return notes


def inspect_manifest(manifest: Manifest, *, read_headers: bool = True) -> Inspection:
    """Summarise a manifest (image headers are read for sizes and modes, pixels are not decoded)."""
    df = manifest.df
    result = Inspection(balance=class_balance(df), notes=balance_notes(df))
    result.labels, problem = labels_of(manifest)
    if problem:
        result.notes.append(problem)
    patients = df.groupby("group")["patient_id"].agg(lambda s: sorted(set(s), key=natural_key))
    result.merged_groups = {g: p for g, p in patients.items() if len(p) > 1}
    if "content_hash" in df.columns and (df["content_hash"].astype(str) != "").all():
        result.has_hashes = True
        for _, sub in df.groupby("content_hash"):
            if len(sub) > 1:
                result.exact_duplicates.append(sub["image"].tolist())
        result.exact_duplicates.sort(key=lambda s: natural_key(s[0]))
        if "phash" in df.columns:
            hashes = np.array([int(str(p), 16) for p in df["phash"]], dtype=np.uint64)
            ia, ib, dist = near_pairs(hashes, NEAR_THRESHOLD)
            images, chash = df["image"].tolist(), df["content_hash"].tolist()
            result.near_duplicates = [(images[a], images[b], int(d)) for a, b, d in zip(ia, ib, dist)
                                      if chash[a] != chash[b]]
    if read_headers:
        for image in df["image"]:
            try:
                info = probe_image(manifest.root / image)
            except ImageReadError:
                result.unreadable.append(image)
                continue
            result.sizes[f"{info.size[0]}x{info.size[1]}"] += 1
            result.modes[info.mode] += 1
    return result


def labels_of(manifest: Manifest) -> tuple[LabelMeaning | None, str | None]:
    """The manifest's label meaning, or None and why (several provenances in one manifest)."""
    try:
        return manifest.label_meaning(), None
    except DataError as exc:
        return None, str(exc)


def label_line(meaning: LabelMeaning | None) -> str:
    """What label 1 means, as import, inspect and audit print it (with the fix when it is not recorded)."""
    if meaning is None:
        return "labels: several provenances in one manifest (see the note)"
    hint = ("; say how they were obtained with --label-source (pathology, cytology, tirads, ...)"
            if meaning.source == "unknown" else "")
    return meaning.summary() + hint
