"""A held-out test set and k cross-validation folds, stratified by label and grouped by ``group``.

Both levels use scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded): the test set is one fold
of a ``round(1 / test_size)``-fold split of the labelled rows, and the folds split the rest.  No
group is ever in two places, so duplicates and a patient's other images never leak across a split.
Unlabelled rows are not split.  The splits are saved once (JSON, atomically) and every arm of a
study reuses the same file, so comparisons between arms are paired.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from thyro.data.manifest import Manifest, read_manifest
from thyro.errors import DataError
from thyro.fileio import sha256_json, write_json

SPLITS_VERSION = 1


def manifest_fingerprint(manifest: Manifest) -> str:
    """SHA-256 of the labelled rows' (image, label, group), in image order.

    Columns that do not change a split (ROIs, source fields, hashes) do not change it.
    """
    lab = manifest.labelled().df
    rows = sorted(zip(lab["image"].astype(str), lab["label"].astype(int), lab["group"].astype(str)))
    return sha256_json([list(r) for r in rows])


@dataclass
class Splits:
    """Test ids and the validation ids of each fold (training of fold k = the other folds).

    Attributes
    ----------
    test : list of str
        Image ids held out for the final test.
    folds : list of list of str
        Validation image ids of each fold.
    seed : int
    manifest_hash : str
        :func:`manifest_fingerprint` of the manifest the splits were made from.
    meta : dict
        Settings and counts (test_size, n_folds, images/groups/positives per split, manifest path).
    """

    test: list[str]
    folds: list[list[str]]
    seed: int = 0
    manifest_hash: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def val_ids(self, k: int) -> list[str]:
        """Validation ids of fold ``k``."""
        self._check_k(k)
        return list(self.folds[k])

    def train_ids(self, k: int) -> list[str]:
        """Training ids of fold ``k``: every other fold's validation ids."""
        self._check_k(k)
        return [i for j, fold in enumerate(self.folds) if j != k for i in fold]

    def dev_ids(self) -> list[str]:
        """All non-test ids (the union of the folds)."""
        return [i for fold in self.folds for i in fold]

    def _check_k(self, k: int) -> None:
        if not 0 <= k < len(self.folds):
            raise DataError(f"fold {k} does not exist; the splits have folds 0..{len(self.folds) - 1}")

    def to_dict(self) -> dict:
        return {"version": SPLITS_VERSION, "seed": self.seed, "manifest_hash": self.manifest_hash,
                "meta": self.meta, "test": self.test, "folds": self.folds}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the splits as JSON (atomically)."""
        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, manifest: Manifest | str | os.PathLike | None = None, *,
             check_hash: bool = True) -> Splits:
        """Read splits and check them.

        Checks, always: no image id in two places.  With ``manifest``: every id is a labelled row
        of it, no group is in two places, and (``check_hash``) the labelled rows, labels and groups
        are those the splits were made from.

        Raises
        ------
        DataError
            Naming the file and every id or group at fault.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: splits file not found; make one with make_splits(manifest).save(path) (on the "
                            f"command line: thyro data split MANIFEST --out {path}).")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            splits = cls(test=[str(i) for i in data["test"]], folds=[[str(i) for i in f] for f in data["folds"]],
                         seed=int(data.get("seed", 0)), manifest_hash=str(data.get("manifest_hash", "")),
                         meta=dict(data.get("meta", {})))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc}).") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a splits file (needs 'test' and 'folds' lists; {exc!r}).") from None
        if not splits.folds:
            raise DataError(f"{path}: has no folds.")
        where = _places(splits)
        repeated = [i for i, places in where.items() if len(places) > 1]
        if repeated:
            raise DataError(f"{path}: {len(repeated)} image id(s) in more than one split, e.g. "
                            + "; ".join(f"{i} in {', '.join(where[i])}" for i in repeated[:5]))
        if manifest is not None:
            if not isinstance(manifest, Manifest):
                manifest = read_manifest(manifest)
            splits.check(manifest, source=str(path), check_hash=check_hash)
        return splits

    def check(self, manifest: Manifest, *, source: str = "splits", check_hash: bool = True) -> None:
        """Raise DataError unless every id is a labelled row of ``manifest`` and no group crosses splits."""
        df = manifest.df
        labelled = set(df.loc[df["label"].notna(), "image"])
        known = set(df["image"])
        where = _places(self)
        missing = [i for i in where if i not in known]
        if missing:
            raise DataError(f"{source}: {len(missing)} image id(s) are not in the manifest {manifest.path or ''}, "
                            f"e.g. {', '.join(missing[:5])}; the splits belong to another manifest.")
        unlabelled = [i for i in where if i not in labelled]
        if unlabelled:
            raise DataError(f"{source}: {len(unlabelled)} image id(s) have no label in the manifest, "
                            f"e.g. {', '.join(unlabelled[:5])}.")
        group_of = dict(zip(df["image"], df["group"]))
        group_places: dict[str, set[str]] = {}
        for image, places in where.items():
            group_places.setdefault(group_of[image], set()).update(places)
        crossing = {g: p for g, p in group_places.items() if len(p) > 1}
        if crossing:
            lines = "; ".join(f"group {g!r} in {', '.join(sorted(p))}" for g, p in list(crossing.items())[:5])
            raise DataError(f"{source}: {len(crossing)} group(s) cross splits (leakage): {lines}. "
                            f"Make new splits with `thyro data split`.")
        if check_hash and self.manifest_hash and self.manifest_hash != manifest_fingerprint(manifest):
            raise DataError(f"{source}: made from a different manifest (labelled rows, labels or groups of "
                            f"{manifest.path or 'the manifest'} changed since). Make new splits with "
                            f"`thyro data split`, or use the manifest they were made from.")


def _places(splits: Splits) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for i in splits.test:
        where.setdefault(i, []).append("test")
    for k, fold in enumerate(splits.folds):
        for i in fold:
            where.setdefault(i, []).append(f"fold {k}")
    return where


def make_splits(manifest: Manifest, *, test_size: float = 0.12, folds: int = 5, seed: int = 0) -> Splits:
    """Split a manifest's labelled rows into a test set and ``folds`` folds.

    Parameters
    ----------
    manifest : Manifest
    test_size : float, default 0.12
        Share of labelled images (approximately: whole groups move) held out; the test set is one
        fold of a ``round(1 / test_size)``-fold split.  0 means no test set.
    folds : int, default 5
        Cross-validation folds on the rest (at least 2).
    seed : int, default 0

    Raises
    ------
    DataError
        Fewer than two classes, or a class with fewer groups than a split needs.
    """
    if not 0 <= test_size < 0.5:
        raise DataError(f"test_size must be in [0, 0.5), got {test_size}")
    if folds < 2:
        raise DataError(f"folds must be at least 2, got {folds}")
    lab = manifest.labelled().df
    if lab.empty:
        raise DataError(f"{manifest.path or 'manifest'}: no labelled rows to split.")
    repeated = lab["image"][lab["image"].duplicated()].unique().tolist()
    if repeated:
        raise DataError(f"{manifest.path or 'manifest'}: image id(s) repeated, e.g. {', '.join(repeated[:5])}; "
                        f"run `thyro data validate` and keep one row per image.")
    ids = lab["image"].to_numpy(dtype=object)
    y = lab["label"].astype(int).to_numpy()
    groups = lab["group"].astype(str).to_numpy()
    n_test_folds = round(1 / test_size) if test_size > 0 else 0
    _check_class_sizes(y, groups, folds + (1 if n_test_folds else 0), folds, n_test_folds, manifest)

    rng_seed = int(seed)
    if n_test_folds:
        sgkf = StratifiedGroupKFold(n_splits=n_test_folds, shuffle=True, random_state=rng_seed)
        dev_idx, test_idx = next(sgkf.split(ids, y, groups))
        if len(set(y[test_idx].tolist())) < 2:
            raise DataError(f"{manifest.path or 'manifest'}: the test set of {len(test_idx)} image(s) holds one class "
                            f"only; use a larger test_size or another seed.")
    else:
        dev_idx, test_idx = np.arange(len(ids)), np.array([], dtype=int)
    _check_class_sizes(y[dev_idx], groups[dev_idx], folds, folds, 0, manifest, after_test=True)
    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=rng_seed)
    fold_ids: list[list[str]] = []
    for _, val in sgkf.split(ids[dev_idx], y[dev_idx], groups[dev_idx]):
        fold_ids.append(sorted(ids[dev_idx][val].tolist()))
    test_ids = sorted(ids[test_idx].tolist())

    def describe(sel: list[str]) -> dict:
        m = lab.set_index("image").loc[sel]
        return {"images": len(sel), "groups": int(m["group"].nunique()), "positives": int((m["label"] == 1).sum())}

    meta = {"test_size": test_size, "n_folds": folds, "manifest": str(manifest.path) if manifest.path else "",
            "n_labelled": len(ids), "n_unlabelled_skipped": int(len(manifest.df) - len(ids)),
            "test": describe(test_ids) if test_ids else {"images": 0, "groups": 0, "positives": 0},
            "folds": [describe(f) for f in fold_ids]}
    for k, f in enumerate(meta["folds"]):
        if f["positives"] == 0 or f["positives"] == f["images"]:
            raise DataError(f"fold {k} holds one class only ({f}); use fewer folds or another seed.")
    splits = Splits(test=test_ids, folds=fold_ids, seed=rng_seed, manifest_hash=manifest_fingerprint(manifest), meta=meta)
    splits.check(manifest, source="new splits")
    return splits


def _check_class_sizes(y: np.ndarray, groups: np.ndarray, needed: int, folds: int, n_test_folds: int,
                       manifest: Manifest, after_test: bool = False) -> None:
    where = manifest.path or "manifest"
    classes = {0: "benign (0)", 1: "malignant (1)"}
    present = set(np.unique(y).tolist())
    if len(present) < 2:
        only = classes[next(iter(present))]
        raise DataError(f"{where}: every labelled image is {only}; splits need both classes.")
    for c, name in classes.items():
        n_groups = len(set(groups[y == c].tolist()))
        if n_groups < needed:
            what = (f"{folds} folds after the test set" if after_test else
                    f"{folds} folds" + (" and a test set" if n_test_folds else ""))
            raise DataError(f"{where}: class {name} has {n_groups} group(s); {what} need at least {needed} so that "
                            f"every split holds both classes. Use fewer folds, a larger test_size, or more data.")


def nested_subsets(ids: list[str], labels, groups, fractions: list[float], seed: int = 0,
                   where: str = "training part") -> dict[float, list[str]]:
    """Nested, group-respecting, class-stratified subsets of ``ids`` for each fraction (data-efficiency curves).

    Groups are ordered once at random (``seed``) within each stratum (groups whose images are all benign,
    all malignant, or mixed); the subset for a fraction takes the first ``round(fraction * n)`` groups of
    each stratum, so a smaller fraction's subset lies inside every larger one, and every arm trains on
    the same images.

    Raises
    ------
    DataError
        When a fraction leaves the subset without benign or without malignant images.
    """
    ids = list(ids)
    y = np.asarray(labels, dtype=int)
    g = np.asarray(groups).astype(str)
    uniq = sorted(set(g.tolist()))
    pattern = {}
    for gid in uniq:
        ys = set(y[g == gid].tolist())
        pattern[gid] = 2 if len(ys) > 1 else ys.pop()
    rng = np.random.default_rng(seed)
    order = {k: [uniq[i] for i in rng.permutation(len(uniq))] for k in (0, 1, 2)}
    order = {k: [gid for gid in v if pattern[gid] == k] for k, v in order.items()}
    out: dict[float, list[str]] = {}
    for f in sorted(fractions):
        keep = set()
        for groups_k in order.values():
            keep.update(groups_k[: int(np.floor(f * len(groups_k) + 0.5))])
        chosen = [i for i, gid in zip(ids, g) if gid in keep]
        ys = {int(y[k]) for k, gid in enumerate(g) if gid in keep}
        if ys != {0, 1}:
            missing = "malignant (1)" if 1 not in ys else "benign (0)"
            raise DataError(f"train_fractions {f:g} leaves the {where} with no {missing} image ({len(chosen)} "
                            f"image(s) kept of {len(ids)}); use a larger fraction or drop it.")
        out[f] = chosen
    return out


def inner_split(ids: list[str], labels, groups, fraction: float, seed: int = 0,
                where: str = "training part") -> tuple[list[str], list[str]]:
    """Split a training part into ``(fit, select)``: about ``fraction`` of its groups held out, stratified
    by label and grouped (no patient or duplicate on both sides), for choosing epochs and settings
    without touching the fold that is scored afterwards.

    Raises :class:`DataError` when no split gives the held-out part both classes.
    """
    ids = list(ids)
    y = np.asarray(labels, dtype=int)
    g = np.asarray(groups).astype(str)
    n_splits = max(2, int(round(1 / fraction)))
    if len(set(g[y == 1].tolist())) < n_splits or len(set(g[y == 0].tolist())) < n_splits:
        raise DataError(f"the {where} has too few benign or malignant groups to hold {fraction:g} of them out for "
                        "selection; lower train.inner_fraction, use train.selection: last, or use more data.")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=int(seed))
    for fit_idx, sel_idx in sgkf.split(np.zeros(len(ids)), y, g):
        if len(set(y[sel_idx].tolist())) == 2 and len(set(y[fit_idx].tolist())) == 2:
            return [ids[i] for i in fit_idx], [ids[i] for i in sel_idx]
    raise DataError(f"the {where} cannot be split into a training and a selection part that both hold benign and "
                    "malignant images; use train.selection: last, or more data.")
