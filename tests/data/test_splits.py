"""Splits: stratified, grouped (no leakage), reproducible, checked on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thyro.cli import main
from thyro.data.manifest import Manifest, read_manifest, write_manifest
from thyro.data.splits import Splits, make_splits
from thyro.errors import DataError


def synthetic(n_groups: int = 80, seed: int = 0, pos_rate: float = 0.3, unlabelled: int = 10,
              root: Path = Path(".")) -> Manifest:
    """Groups of 1-4 images (several patients per group for some), labels per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        n_pat = 1 + (rng.random() < 0.2)
        for p in range(n_pat):
            label = int(rng.random() < pos_rate)
            for k in range(rng.integers(1, 4)):
                rows.append({"image": f"g{g}_p{p}_{k}.png", "label": label, "patient_id": f"g{g}p{p}",
                             "group": f"G{g}"})
    for u in range(unlabelled):
        rows.append({"image": f"u{u}.png", "label": pd.NA, "patient_id": f"u{u}", "group": f"U{u}"})
    df = pd.DataFrame(rows)
    df["label"] = df["label"].astype("Int64")
    return Manifest(df, root.resolve())


def _assert_partition(splits: Splits, manifest: Manifest) -> None:
    lab = manifest.labelled().df
    all_ids = splits.test + splits.dev_ids()
    assert sorted(all_ids) == sorted(lab["image"])  # every labelled id once, no unlabelled id
    group_of = dict(zip(lab["image"], lab["group"]))
    place = {}
    for name, ids in [("test", splits.test)] + [(f"f{k}", f) for k, f in enumerate(splits.folds)]:
        for i in ids:
            assert place.setdefault(group_of[i], name) == name, f"group {group_of[i]} crosses"
    for k in range(splits.n_folds):
        assert not set(splits.train_ids(k)) & set(splits.val_ids(k))
        assert set(splits.train_ids(k)) | set(splits.val_ids(k)) == set(splits.dev_ids())


def test_synthetic_partition_stratified_and_reproducible():
    m = synthetic()
    s = make_splits(m, test_size=0.12, folds=5, seed=1)
    _assert_partition(s, m)
    lab = m.labelled().df.set_index("image")["label"]
    overall = lab.mean()
    for ids in [s.test] + s.folds:
        assert abs(lab.loc[ids].mean() - overall) < 0.15
    assert 0.05 < len(s.test) / len(lab) < 0.2
    assert make_splits(m, seed=1).folds == s.folds
    assert make_splits(m, seed=2).folds != s.folds
    assert s.meta["n_unlabelled_skipped"] == 10
    no_test = make_splits(m, test_size=0, folds=3)
    assert no_test.test == [] and no_test.n_folds == 3
    _assert_partition(no_test, m)


def test_small_class_is_a_clear_error():
    m = synthetic(n_groups=40, pos_rate=0.0)
    with pytest.raises(DataError, match="every labelled image is benign"):
        make_splits(m)
    df = m.df.copy()
    first_groups = df["group"].drop_duplicates().head(4)
    df.loc[df["group"].isin(first_groups) & df["label"].notna(), "label"] = 1
    with pytest.raises(DataError, match=r"malignant \(1\) has 4 group\(s\).*5 folds.*at least 6"):
        make_splits(Manifest(df, m.root))
    s = make_splits(Manifest(df, m.root), test_size=0, folds=3)  # 4 groups are enough for 3 folds
    _assert_partition(s, Manifest(df, m.root))
    with pytest.raises(DataError, match="folds must be at least 2"):
        make_splits(m, folds=1)
    twice = Manifest(pd.concat([m.df, m.df.head(1)], ignore_index=True), m.root)
    with pytest.raises(DataError, match="repeated"):
        make_splits(twice)


def test_save_load_and_checks(tmp_path):
    m = synthetic(root=tmp_path)
    s = make_splits(m, seed=3)
    path = s.save(tmp_path / "splits.json")
    loaded = Splits.load(path, m)
    assert loaded.test == s.test and loaded.folds == s.folds and loaded.seed == 3
    # an image of a test group moved into a fold: its group now crosses
    data = json.loads(path.read_text())
    group_of = dict(zip(m.df["image"], m.df["group"]))
    test_groups = pd.Series([group_of[i] for i in data["test"]], index=data["test"])
    moved = test_groups[test_groups.duplicated(keep=False)].index[0]  # a test group of 2+ images
    data["test"].remove(moved)
    data["folds"][0].append(moved)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="cross splits"):
        Splits.load(bad, m)
    data = json.loads(path.read_text())
    data["folds"][1].append(data["folds"][0][0])
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="more than one split"):
        Splits.load(bad)
    data = json.loads(path.read_text())
    data["test"].append("ghost.png")
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="not in the manifest.*ghost.png"):
        Splits.load(bad, m)
    changed = Manifest(m.df.copy(), m.root)
    changed.df.loc[changed.df["label"].notna(), "label"] = 1 - changed.df.loc[changed.df["label"].notna(), "label"]
    with pytest.raises(DataError, match="different manifest"):
        Splits.load(path, changed)
    Splits.load(path, changed, check_hash=False)
    extra = Manifest(m.df.assign(site="x"), m.root)  # extra columns do not invalidate the splits
    Splits.load(path, extra)
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        Splits.load(bad)
    with pytest.raises(DataError, match="fold 7 does not exist"):
        s.val_ids(7)


def _leaks(s: Splits, keys: dict[str, list]) -> list:
    """(key, first place, second place) for every key found in two places."""
    place, out = {}, []
    for name, ids in [("test", s.test)] + [(f"f{k}", f) for k, f in enumerate(s.folds)]:
        for i in ids:
            for key in keys[i]:
                if place.setdefault(key, name) != name:
                    out.append((key, place[key], name))
    return out


def test_ddti_splits_leakage_free(ddti_import):
    """No DDTI case and no byte-identical file (found by file SHA-256, independently of the group
    column) lands in two places.  DDTI's cross-case copies are unlabelled or have one labelled
    member, so the check is also run with every image labelled (parity of the case number for the
    unlabelled ones); the same check catches the leak of a split grouped by case alone."""
    m = ddti_import.manifest
    sha = {i: hashlib.sha256(m.abspath(i).read_bytes()).hexdigest() for i in m.df["image"]}
    keys = {i: [("case", c), ("sha", sha[i])] for i, c in zip(m.df["image"], m.df["patient_id"])}
    for seed in (0, 1):
        s = make_splits(m, test_size=0.12, folds=5, seed=seed)
        _assert_partition(s, m)
        assert _leaks(s, keys) == []
        lab = m.labelled().df.set_index("image")["label"]
        assert all(0 < lab.loc[ids].sum() < len(ids) for ids in [s.test] + s.folds)

    df = m.df.copy()
    parity = df["patient_id"].astype(int) % 2
    df["label"] = df["label"].fillna(parity.astype("Int64"))
    full = Manifest(df, m.root)
    copies = pd.DataFrame({"sha": sha, "case": df.set_index("image")["patient_id"]}).groupby("sha")["case"].nunique()
    assert (copies > 1).sum() >= 2  # the check has teeth: copies under different cases are split now
    for seed in (0, 1, 2):
        s = make_splits(full, seed=seed)
        _assert_partition(s, full)
        assert _leaks(s, keys) == []
    by_case = Manifest(df.assign(group=df["patient_id"]), m.root)  # grouping by case alone leaks
    assert any(_leaks(make_splits(by_case, seed=seed), keys) for seed in range(5))


def test_cli_split(tmp_path, capsys):
    m = synthetic(root=tmp_path)
    write_manifest(m.df, tmp_path / "manifest.csv", root=tmp_path)
    out = tmp_path / "splits.json"
    assert main(["-q", "data", "split", str(tmp_path / "manifest.csv"), "--out", str(out), "--seed", "4",
                 "--folds", "4", "--test-size", "0.2"]) == 0
    s = Splits.load(out, read_manifest(tmp_path / "manifest.csv"))
    assert s.n_folds == 4 and s.seed == 4
    assert main(["data", "split", str(tmp_path / "manifest.csv"), "--out", str(out), "--folds", "60"]) == 2
    assert "group(s)" in capsys.readouterr().err
