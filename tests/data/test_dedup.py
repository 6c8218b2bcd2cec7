"""Duplicates: exact (decoded pixels) and near (pHash) copies merge patients into one group."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thyro.data.dedup import NEAR_THRESHOLD, assign_groups, hamming_matrix, phash
from thyro.data.manifest import manifest_from_records
from thyro.errors import Problems


def _texture(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth random picture (blobs), so that JPEG re-encoding keeps it recognisable."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def _manifest(tmp_path: Path, rows: list[tuple[str, np.ndarray | bytes, int | None, str]]):
    records = []
    for name, content, label, patient in rows:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            Image.fromarray(content).save(path, quality=95) if name.endswith(".jpg") else Image.fromarray(content).save(path)
        records.append({"image": name, "label": label, "patient_id": patient, "group": patient})
    return manifest_from_records(records, tmp_path)


def test_hamming_matrix_matches_python_popcount():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, size=50, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 50, dtype=np.uint64)
    d = hamming_matrix(h)
    for a in range(0, 50, 7):
        for b in range(0, 50, 5):
            assert d[a, b] == bin(int(h[a]) ^ int(h[b])).count("1")
    assert (np.diag(d) == 0).all()


def test_exact_duplicates_across_formats_merge_patients(tmp_path):
    a, b = _texture(1), _texture(2)
    m = _manifest(tmp_path, [("p10_a.png", a, 1, "10"), ("p2_a.bmp", a, 1, "2"), ("p3_b.png", b, 0, "3"),
                             ("p3_c.png", _texture(3), 0, "3")])
    out, rep = assign_groups(m, progress=False)
    g = dict(zip(out.df["image"], out.df["group"]))
    assert g["p10_a.png"] == g["p2_a.bmp"] == "2"  # natural order: "2" before "10"
    assert g["p3_b.png"] == g["p3_c.png"] == "3"
    assert rep.exact == [["p10_a.png", "p2_a.bmp"]]
    assert rep.merged == [["2", "10"]]
    assert out.df.set_index("image").loc["p2_a.bmp", "duplicate_of"] == "p10_a.png"
    assert out.df.set_index("image").loc["p3_b.png", "duplicate_of"] == ""
    # a second pass changes nothing
    again, rep2 = assign_groups(out, progress=False)
    assert again.df["group"].tolist() == out.df["group"].tolist()
    assert rep2.merged == []


def test_near_duplicate_found_and_different_images_kept_apart(tmp_path):
    a = _texture(5, 96, 128)
    buf = io.BytesIO()
    Image.fromarray(a).resize((112, 84)).save(buf, format="JPEG", quality=60)  # resized + re-encoded copy
    m = _manifest(tmp_path, [("a.png", a, 1, "1"), ("a_copy.jpg", buf.getvalue(), 1, "2")]
                  + [(f"other{i}.png", _texture(100 + i, 96, 128), 0, f"{10 + i}") for i in range(8)])
    out, rep = assign_groups(m, progress=False)
    assert [(x, y) for x, y, _ in rep.near] == [("a.png", "a_copy.jpg")]
    assert rep.near[0][2] <= NEAR_THRESHOLD
    assert rep.exact == []
    groups = out.df.set_index("image")["group"]
    assert groups["a.png"] == groups["a_copy.jpg"]
    assert out.df["group"].nunique() == 9  # the 8 different pictures stay apart
    off, rep_off = assign_groups(m, near_threshold=-1, progress=False)
    assert rep_off.near == [] and off.df["group"].nunique() == 10


def test_label_conflicts_and_existing_groups(tmp_path):
    a = _texture(7)
    m = _manifest(tmp_path, [("x.png", a, 1, "p1"), ("y.png", a, 0, "p2"), ("z.png", _texture(8), 0, "p3"),
                             ("w.png", _texture(9), 1, "p4")])
    m.df.loc[m.df["image"] == "w.png", "group"] = "site-A"
    m.df.loc[m.df["image"] == "z.png", "group"] = "site-A"  # a user-given group spanning two patients
    out, rep = assign_groups(m, progress=False)
    assert rep.label_conflicts == [["x.png", "y.png"]]
    g = out.df.set_index("image")["group"]
    assert g["z.png"] == g["w.png"] == "site-A"
    assert g["x.png"] == g["y.png"] == "p1"


def test_unreadable_images_all_listed(tmp_path):
    m = _manifest(tmp_path, [("ok.png", _texture(1), 1, "1"), ("bad1.png", b"not an image", 0, "2"),
                             ("bad2.jpg", b"\xff\xd8\xff\xe0garbage", 0, "3")])
    with pytest.raises(Problems) as info:
        assign_groups(m, progress=False)
    text = str(info.value)
    assert "bad1.png" in text and "bad2.jpg" in text and "ok.png" not in text
    assert len(info.value.problems) == 2


def test_phash_is_stable_under_brightness_but_not_content():
    a = _texture(11, 96, 128)
    brighter = np.clip(a.astype(int) + 12, 0, 255).astype(np.uint8)
    other = _texture(12, 96, 128)
    d = hamming_matrix(np.array([phash(a), phash(brighter), phash(other)], dtype=np.uint64))
    assert d[0, 1] <= NEAR_THRESHOLD < d[0, 2]


def test_ddti_byte_identical_images_share_groups(ddti_import, ddti_dir):
    """Byte-identical DDTI files (found here independently, by file SHA-256) end in one group."""
    df = ddti_import.manifest.df
    by_name = {Path(p).name: i for i, p in enumerate(df["image"])}
    digests: dict[str, list[str]] = {}
    for f in sorted(ddti_dir.glob("*.jpg")):
        digests.setdefault(hashlib.sha256(f.read_bytes()).hexdigest(), []).append(f.name)
    sets = [names for names in digests.values() if len(names) > 1]
    assert sets, "DDTI is known to hold byte-identical copies"
    cross_case = [s for s in sets if len({n.split("_")[0] for n in s}) > 1]
    assert cross_case, "some copies sit under different case numbers"
    for names in sets:
        groups = {df["group"].iat[by_name[n]] for n in names}
        assert len(groups) == 1, names
        dups = [df["duplicate_of"].iat[by_name[n]] for n in names]
        assert sum(d == "" for d in dups) == 1
    # near-duplicate detection merges nothing beyond the byte-identical copies: the number of groups
    # is the number of cases minus the merges the copies force (computed here with pandas alone)
    case_of = {n: n.split("_")[0] for n in by_name}
    parent = {c: c for c in set(case_of.values())}

    def find(c):
        while parent[c] != c:
            c = parent[c]
        return c

    for names in cross_case:
        roots = {find(case_of[n]) for n in names}
        first = min(roots)
        for r in roots:
            parent[r] = first
    expected_groups = len({find(c) for c in parent})
    assert df["group"].nunique() == expected_groups
    assert pd.Series(ddti_import.duplicates.merged).map(len).sum() == sum(
        len({case_of[n] for n in s}) for s in cross_case)


def test_stored_hashes_survive_the_csv_roundtrip(tmp_path):
    from thyro.data.manifest import read_manifest, write_manifest

    a = _texture(21)
    m = _manifest(tmp_path, [("a.png", a, 1, "1"), ("b.png", a, 1, "2"), ("c.png", _texture(22), 0, "3")])
    out, _ = assign_groups(m, progress=False)
    out.df.loc[out.df["image"] == "c.png", "phash"] = "0012345678901234"  # all digits, leading zeros
    write_manifest(out.df, tmp_path / "m.csv", root=out.root)
    back = read_manifest(tmp_path / "m.csv")
    assert back.df["phash"].tolist() == out.df["phash"].tolist()
    again, rep = assign_groups(back, hashes=back.df[["content_hash", "phash"]], progress=False)
    assert again.df["group"].tolist() == out.df["group"].tolist() and rep.exact == [["a.png", "b.png"]]


def test_near_pairs_blocks_match_full_matrix():
    from thyro.data.dedup import near_pairs

    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**62, size=40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=40).astype(np.uint64)
    h = np.concatenate([base, base ^ flips])  # each hash has a twin 1 bit away
    d = hamming_matrix(h)
    want = {(a, b) for a, b in zip(*np.nonzero(np.triu(d <= 3, k=1)))}
    for max_elements in (1 << 24, 100, 1):  # one block, several, one row at a time
        a, b, dist = near_pairs(h, 3, max_elements=max_elements)
        assert set(zip(a.tolist(), b.tolist())) == want
        assert (dist == d[a, b]).all()
    assert len(want) >= 40


def test_cross_duplicates_tells_new_patients_in_one_layout_from_copies(tmp_path):
    """Phantom images of different patients share the screen layout (close pHashes) but are not the same
    picture; a re-encoded, resized copy of a development image is."""
    from thyro.data.dedup import cross_duplicates
    from thyro.data.manifest import read_manifest, write_manifest
    from thyro.data.phantom import generate_cohort

    dev = read_manifest(generate_cohort(tmp_path / "dev", n_patients=30, size=128, seed=0))
    new = read_manifest(generate_cohort(tmp_path / "new", n_patients=60, images_per_patient=(2, 2), size=128,
                                        seed=1000))
    assert cross_duplicates(dev, new) == []
    # a copy of a development image, re-encoded as JPEG and resized, joins the new set
    src = dev.abspath(dev.ids[3])
    with Image.open(src) as im:
        im.convert("RGB").resize((115, 115)).save(new.root / "images" / "copy.jpg", quality=60)
    df = new.df.copy()
    row = df.iloc[[0]].assign(image="images/copy.jpg", patient_id="copy", group="copy")
    write_manifest(pd.concat([df, row], ignore_index=True).drop(columns=["content_hash", "phash"], errors="ignore"),
                   new.root / "manifest.csv")
    found = cross_duplicates(dev, read_manifest(new.root / "manifest.csv"))
    assert [(a, b) for a, b, _ in found] == [(dev.ids[3], "images/copy.jpg")]
    assert "near duplicate" in found[0][2]
