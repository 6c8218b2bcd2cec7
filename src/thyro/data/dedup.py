"""Duplicate images and leakage groups.

Two kinds of duplicates are found:

* **exact**: the same decoded pixels (SHA-256 of the RGB array and its shape), whatever the file
  name, format or metadata;
* **near**: a perceptual hash (pHash, 64 bits) within :data:`NEAR_THRESHOLD` bits (Hamming
  distance) of another image's; the same picture re-encoded, slightly resized or re-exported.

Every row's ``group`` is then the union (union-find) of rows that share a patient, an existing
group, or a duplicate.  A merged group takes the name of its first member group in natural sort
order, so groups stay readable and a second pass changes nothing.

The hashes themselves are computed by :mod:`thyro.data.hashing` (their names import from here too).

Choice of the threshold
-----------------------
pHash bits are set above the median, so distances between two hashes are even.  Measured on DDTI
(480 images, 560x360 exports of one scanner layout, which makes unrelated images look alike to a
32x32 thumbnail):

* the same picture re-encoded (JPEG quality 50), resized to 80 % or brightened by 15 % moves
  0-4 bits (40 images checked); a 2 % crop or a 4-pixel shift moves 4-12 bits and is not caught;
* pictures from different cases that are not byte-identical lie at 6 bits or more: 2 pairs at 6
  bits and 45 at 8 (both pairs at 6 and a sample at 8 checked by eye: different nodules in the same
  screen layout), the bulk at 16-28;
* one pair lies at 2 bits: 294_2 / 294_3, the same frame once with a burned-in "TIRADS 5 (4C)".

``NEAR_THRESHOLD = 4`` therefore finds re-encodings and burned-in text changes without merging any
two different DDTI pictures; on DDTI it adds no cross-case merge beyond the byte-identical copies.
"""


from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from thyro.data.hashing import (
    compute_hashes,
    content_hash,
    default_workers,
    hamming_matrix,
    hamming_matrix_block,
    image_hashes,
    near_pairs,
    phash,
)
from thyro.data.manifest import Manifest
from thyro.data.readers import load_image

#: Largest Hamming distance (bits of 64) at which two pHashes count as the same picture.
NEAR_THRESHOLD = 4
#: Across data sets a close pHash must be confirmed by this correlation of CONFIRM_SIZE-pixel square
#: thumbnails.  Measured: copies re-encoded (JPEG 50), resized to 80% or brightened by 15% keep 0.998 or
#: more, DDTI 294_2 / 294_3 (one frame, once with burned-in text) 0.951; different pictures in one
#: screen layout with close pHashes reach 0.88 (the phantom: 1,188 pairs between a 120-patient cohort
#: and 1,000 images of new patients, median 0.77).  At 64 pixels the same phantom pairs reach 0.95: the
#: shared layout dominates a small thumbnail, speckle does not.
NEAR_CONFIRM_CORRELATION = 0.93
CONFIRM_SIZE = 128


# ---------------------------------------------------------------------------------------------
# union-find

class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def union_equal(self, values) -> None:
        """Join the rows whose ``values`` are equal (each to the first row holding its value)."""
        first: dict = {}
        for i, v in enumerate(values):
            if v in first:
                self.union(first[v], i)
            else:
                first[v] = i


def natural_key(text: str) -> list:
    """Sort key that orders ``"2" < "10"`` and ``"case2" < "case10"``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


# ---------------------------------------------------------------------------------------------
# report

@dataclass
class DuplicateReport:
    """What :func:`assign_groups` found.

    Attributes
    ----------
    exact : list of list of str
        Sets of image ids with identical decoded pixels (two or more each).
    near : list of tuple
        ``(image_a, image_b, distance)`` pairs within the threshold that are not exact duplicates.
    merged : list of list of str
        Sets of former groups (patients) that duplicates joined into one group.
    label_conflicts : list of list of str
        Duplicate sets whose images carry different labels (benign and malignant).
    threshold : int
        The near-duplicate Hamming threshold used.
    """

    exact: list[list[str]] = field(default_factory=list)
    near: list[tuple[str, str, int]] = field(default_factory=list)
    merged: list[list[str]] = field(default_factory=list)
    label_conflicts: list[list[str]] = field(default_factory=list)
    threshold: int = NEAR_THRESHOLD

    @property
    def n_exact_images(self) -> int:
        """Images that have at least one exact copy elsewhere (counting every copy)."""
        return sum(len(s) for s in self.exact)

    def summary(self) -> str:
        return (f"{len(self.exact)} set(s) of identical images ({self.n_exact_images} images), "
                f"{len(self.near)} near-duplicate pair(s) (pHash distance <= {self.threshold}), "
                f"{len(self.merged)} group merge(s) across patients, "
                f"{len(self.label_conflicts)} duplicate set(s) with conflicting labels")

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "exact": self.exact, "near": [list(p) for p in self.near],
                "merged": self.merged, "label_conflicts": self.label_conflicts}


# ---------------------------------------------------------------------------------------------
# groups

def assign_groups(manifest: Manifest, *, near_threshold: int = NEAR_THRESHOLD, hashes: pd.DataFrame | None = None,
                  progress: bool = True, workers: int | None = None) -> tuple[Manifest, DuplicateReport]:
    """Merge patients and duplicate images into leakage groups.

    Parameters
    ----------
    manifest : Manifest
        Any manifest; its ``patient_id`` and existing ``group`` are respected (rows sharing either
        end in one group).
    near_threshold : int, default NEAR_THRESHOLD
        Largest pHash Hamming distance counted as a near duplicate; a negative value turns near
        duplicate detection off.
    hashes : DataFrame, optional
        Precomputed ``content_hash``/``phash`` columns (as :func:`compute_hashes` returns); computed
        when not given.
    workers : int, optional
        Decoding threads for :func:`compute_hashes`.

    Returns
    -------
    (Manifest, DuplicateReport)
        A copy with ``group`` merged and columns ``content_hash``, ``phash`` and ``duplicate_of``
        (the first row's image id among identical images, empty for the first and for unique images).
    """
    if near_threshold > 64:
        raise ValueError(f"near_threshold must be at most 64 (bits of the pHash), got {near_threshold}")
    df = manifest.df.copy().reset_index(drop=True)
    if hashes is None:
        hashes = compute_hashes(Manifest(df, manifest.root, manifest.path), progress=progress, workers=workers)
    df["content_hash"] = list(hashes["content_hash"])
    df["phash"] = list(hashes["phash"])
    n = len(df)
    images = df["image"].tolist()
    uf = _UnionFind(n)
    uf.union_equal(df["patient_id"].tolist())
    uf.union_equal(df["group"].tolist())
    # which rows were already together before duplicates are considered
    base_root = [uf.find(i) for i in range(n)]
    report = DuplicateReport(threshold=near_threshold)
    exact_sets, duplicate_of = _join_exact(df, uf, report)
    if near_threshold >= 0 and n > 1:
        _join_near(df, uf, near_threshold, report)
    df["group"] = _group_names(df["group"].tolist(), uf, base_root, report)
    df["duplicate_of"] = duplicate_of
    dup_sets = [[images[r] for r in rows] for rows in exact_sets] + [[a, b] for a, b, _ in report.near]
    report.label_conflicts.extend(_label_conflicts(df, dup_sets))
    report.merged.sort(key=lambda g: natural_key(g[0]))
    return Manifest(df, manifest.root, manifest.path), report


def _join_exact(df: pd.DataFrame, uf: _UnionFind, report: DuplicateReport) -> tuple[list[list[int]], list[str]]:
    """Join rows with identical pixels; ``(sets of rows, duplicate_of per row)``, the sets added to ``report``."""
    images = df["image"].tolist()
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(df["content_hash"]):
        by_hash.setdefault(h, []).append(i)
    duplicate_of = [""] * len(df)
    exact_sets = [rows for rows in by_hash.values() if len(rows) > 1]
    for rows in exact_sets:
        for r in rows[1:]:
            uf.union(rows[0], r)
            duplicate_of[r] = images[rows[0]]
        report.exact.append([images[r] for r in rows])
    return exact_sets, duplicate_of


def _join_near(df: pd.DataFrame, uf: _UnionFind, near_threshold: int, report: DuplicateReport) -> None:
    """Join rows whose pHashes lie within ``near_threshold`` bits; pairs that are not identical go to ``report``."""
    images = df["image"].tolist()
    ph = np.array([int(str(p), 16) for p in df["phash"]], dtype=np.uint64)
    ia, ib, dist = near_pairs(ph, near_threshold)
    chash = df["content_hash"].to_numpy()
    for a, b, d in zip(ia.tolist(), ib.tolist(), dist.tolist()):
        uf.union(a, b)
        if chash[a] != chash[b]:
            report.near.append((images[a], images[b], int(d)))


def _group_names(old_groups: list[str], uf: _UnionFind, base_root: list[int], report: DuplicateReport) -> list[str]:
    """Every row's new group: the first (natural order) of the former groups joined with it; groups that
    duplicates joined across patients go to ``report.merged``."""
    members: dict[int, list[int]] = {}
    for i in range(len(old_groups)):
        members.setdefault(uf.find(i), []).append(i)
    new_group = [""] * len(old_groups)
    for rows in members.values():
        names = sorted({old_groups[r] for r in rows}, key=natural_key)
        for r in rows:
            new_group[r] = names[0]
        if len({base_root[r] for r in rows}) > 1:
            report.merged.append(names)
    return new_group


def _label_conflicts(df: pd.DataFrame, dup_sets: list[list[str]]) -> list[list[str]]:
    """The duplicate sets whose images carry different labels."""
    labels = df["label"]
    index = {img: i for i, img in enumerate(df["image"].tolist())}
    out = []
    for s in dup_sets:
        values = {int(v) for v in labels.iloc[[index[x] for x in s]].dropna()}
        if len(values) > 1:
            out.append(s)
    return out


def _hashes_of(manifest: Manifest, progress: bool) -> pd.DataFrame:
    """The manifest's own hash columns when complete (an imported manifest), else computed."""
    df = manifest.df
    if {"content_hash", "phash"} <= set(df.columns) and (df["content_hash"].astype(str).str.len() > 0).all() \
            and (df["phash"].astype(str).str.len() == 16).all():
        return df[["content_hash", "phash"]].astype(str)
    return compute_hashes(manifest, progress=progress)


def cross_duplicates(a: Manifest, b: Manifest, *, near_threshold: int = NEAR_THRESHOLD,
                     progress: bool = False) -> list[tuple[str, str, str]]:
    """Images of ``b`` that are also in ``a``: the same file, identical pixels, or a near duplicate.

    Returns ``[(image in a, image in b, how), ...]``; ``how`` is ``same file``, ``identical pixels`` or
    ``near duplicate (N bits)``.  An external validation set must share none of these with the data a
    model was developed on.
    """
    found: list[tuple[str, str, str]] = []
    paths_a = {p: i for p, i in zip(a.paths(), a.ids)}
    for p, i in zip(b.paths(), b.ids):
        if p in paths_a:
            found.append((paths_a[p], i, "same file"))
    ha, hb = _hashes_of(a, progress), _hashes_of(b, progress)
    by_hash = dict(zip(ha["content_hash"], a.ids))
    for h, i in zip(hb["content_hash"], b.ids):
        if h in by_hash:
            found.append((by_hash[h], i, "identical pixels"))
    if near_threshold >= 0 and len(a) and len(b):
        pa = np.array([int(x, 16) for x in ha["phash"]], dtype=np.uint64)
        pb = np.array([int(x, 16) for x in hb["phash"]], dtype=np.uint64)
        step = max(1, (1 << 22) // max(len(pa), 1))
        thumbs: dict[tuple[int, int], np.ndarray] = {}

        def thumb(which: int, i: int) -> np.ndarray:
            if (which, i) not in thumbs:
                m = a if which == 0 else b
                gray = load_image(m.abspath(m.ids[i]), us_region=False).pixels
                t = np.asarray(Image.fromarray(gray).resize((CONFIRM_SIZE, CONFIRM_SIZE), Image.Resampling.BILINEAR),
                               dtype=np.float64)
                thumbs[(which, i)] = (t - t.mean()) / (t.std() + 1e-9)
            return thumbs[(which, i)]

        for start in range(0, len(pb), step):
            dist = hamming_matrix_block(pb[start:start + step], pa)
            for j, i in zip(*np.nonzero(dist <= near_threshold)):
                # A close pHash proposes a pair; the pixels confirm it.  Images that share a screen layout
                # (one scanner, or the phantom) can come close in pHash without being the same picture;
                # a re-encoded, resized or relabelled copy keeps a correlation near 1 (see CONFIRM_SIZE).
                corr = float(np.mean(thumb(0, i) * thumb(1, start + j)))
                if corr >= NEAR_CONFIRM_CORRELATION:
                    found.append((a.ids[i], b.ids[start + j], f"near duplicate ({int(dist[j, i])} bits, "
                                                               f"correlation {corr:.2f})"))
    seen, out = set(), []
    for x in found:  # one line per pair, the strongest reason first
        if (x[0], x[1]) not in seen:
            seen.add((x[0], x[1]))
            out.append(x)
    return out


__all__ = ["CONFIRM_SIZE", "NEAR_CONFIRM_CORRELATION", "NEAR_THRESHOLD", "DuplicateReport", "assign_groups",
           "compute_hashes", "content_hash", "cross_duplicates", "default_workers", "hamming_matrix",
           "hamming_matrix_block", "image_hashes", "natural_key", "near_pairs", "phash"]
