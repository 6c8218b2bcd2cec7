"""Importers: DDTI XML layout, class folders and manifest-schema CSV."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thyro.cli import main
from thyro.data.importers import import_csv, import_ddti, import_folders
from thyro.data.importers.ddti import parse_svg, tirads_label
from thyro.data.manifest import parse_roi, read_manifest
from thyro.errors import ConfigError, DataError, Problems

@pytest.fixture(autouse=True)
def _quiet():
    from thyro.cli.console import is_quiet, set_quiet

    old = is_quiet()
    set_quiet(True)
    yield
    set_quiet(old)


def _picture(seed: int, h: int = 36, w: int = 56) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _poly(x0: int, y0: int, n: int = 5) -> list[dict]:
    return [{"x": x0 + int(4 * np.cos(2 * np.pi * i / n)) + 5, "y": y0 + int(4 * np.sin(2 * np.pi * i / n)) + 5}
            for i in range(n)]


def _svg(*polys, arrows: int = 0) -> str:
    regions = [{"points": p, "annotation": {}, "regionType": "freehand"} for p in polys]
    regions += [{"points": [{"x": 1, "y": 1}, {"x": 5, "y": 5}], "annotation": {}, "regionType": "arrow"}] * arrows
    return json.dumps(regions)


def _case_xml(number: str, tirads: str, marks: dict[int, str], **fields) -> str:
    body = "".join(f"    <{k}>{fields.get(k, '')}</{k}>\n" for k in
                   ("age", "sex", "composition", "echogenicity", "margins", "calcifications"))
    mark_xml = "".join(f"    <mark>\n        <image>{k}</image>\n        <svg>{svg}</svg>\n    </mark>\n"
                       for k, svg in marks.items())
    return (f"<case>\n    <number>{number}</number>\n{body}    <tirads>{tirads}</tirads>\n"
            f"    <reportbacaf></reportbacaf>\n{mark_xml}</case>")


def _fake_ddti(root: Path, xml_root: Path | None = None) -> Path:
    xml_root = xml_root or root
    root.mkdir(parents=True, exist_ok=True)
    xml_root.mkdir(parents=True, exist_ok=True)
    _picture(1).save(root / "1_1.jpg", quality=95)
    _picture(2).save(root / "1_2.jpg", quality=95)
    (xml_root / "1.xml").write_text(_case_xml("1", "5", {1: _svg(_poly(5, 5), _poly(30, 10), arrows=1),
                                                         2: _svg(_poly(10, 10))}, age="54", sex="F",
                                              composition="solid"))
    _picture(3).save(root / "2_1.jpg", quality=95)
    (xml_root / "2.xml").write_text(_case_xml("2", "3", {1: _svg(_poly(20, 20))[:30]}))  # cut JSON
    _picture(4).save(root / "3_1.jpg", quality=95)
    (xml_root / "3.xml").write_text(_case_xml("3", "", {1: ""}))  # no TI-RADS, empty outline
    _picture(5).save(root / "4_1.jpg", quality=95)
    (xml_root / "4.xml").write_text(_case_xml("4", "4B", {1: _svg(_poly(0, 0)), 3: _svg(_poly(1, 1))}))
    (xml_root / "5.xml").write_text(_case_xml("5", "2", {}))  # no images
    _picture(6).save(root / "6_1.jpg", quality=95)  # no XML
    return root


# ---------------------------------------------------------------- DDTI (synthetic)

def test_ddti_synthetic_layout(tmp_path):
    src = _fake_ddti(tmp_path / "ddti")
    res = import_ddti(src, tmp_path / "out")
    m = read_manifest(res.manifest_path)
    df = m.df.set_index("image")
    names = {Path(i).name: i for i in m.ids}
    assert set(names) == {"1_1.jpg", "1_2.jpg", "2_1.jpg", "3_1.jpg", "4_1.jpg", "6_1.jpg"}
    assert all(m.abspath(i).is_file() for i in m.ids)  # relative paths resolve, nothing copied
    assert not list((tmp_path / "out").glob("*.jpg"))
    label = {n: df.loc[i, "label"] for n, i in names.items()}
    assert label["1_1.jpg"] == 1 and label["2_1.jpg"] == 0 and label["4_1.jpg"] == 0
    assert pd.isna(label["3_1.jpg"]) and pd.isna(label["6_1.jpg"])
    assert df.loc[names["4_1.jpg"], "tirads"] == "4b"
    assert df.loc[names["1_1.jpg"], "composition"] == "solid" and str(df.loc[names["1_1.jpg"], "age"]) == "54"
    assert df.loc[names["1_2.jpg"], "patient_id"] == "1"
    roi = parse_roi(df.loc[names["1_1.jpg"], "roi"])
    assert len(roi["polygons"]) == 2  # two outlines, the arrow skipped
    assert parse_roi(df.loc[names["2_1.jpg"], "roi"]) is None  # cut JSON: no complete outline
    text = "\n".join(res.warnings)
    for needle in ("2.xml: image 1", "3.xml: image 1: empty", "4.xml: outline for image 3",
                   "5.xml: no images", "6_1.jpg: no 6.xml"):
        assert needle in text, needle
    assert any("arrow" in n for n in res.notes)
    c = res.counts
    assert (c["images"], c["labelled"], c["malignant"], c["benign"], c["patients"]) == (6, 4, 2, 2, 5)
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["counts"] == c


def test_ddti_positive_from_and_separate_xml_folder(tmp_path):
    src = _fake_ddti(tmp_path / "img", tmp_path / "xml")
    res = import_ddti(src, tmp_path / "out", xml_dir=tmp_path / "xml", positive_from="4b")
    lab = {Path(i).name: v for i, v in zip(res.manifest.df["image"], res.manifest.df["label"])}
    assert lab["4_1.jpg"] == 1 and lab["1_1.jpg"] == 1 and lab["2_1.jpg"] == 0
    with pytest.raises(DataError, match="--xml-dir"):
        import_ddti(src, tmp_path / "out2")
    with pytest.raises(ConfigError, match="positive_from"):
        import_ddti(src, tmp_path / "out3", xml_dir=tmp_path / "xml", positive_from="3")


def test_ddti_broken_xml_all_listed_nothing_written(tmp_path):
    src = _fake_ddti(tmp_path / "ddti")
    (src / "1.xml").write_text("<case><number>1</number><tirads>5</tirads>")  # not well formed
    (src / "2.xml").write_text(_case_xml("2", "7x", {}))  # not a category
    _picture(9).save(src / "9_1.jpg")
    (src / "9.xml").write_text(_case_xml("9", "2", {}))
    (src / "4_1.jpg").write_bytes((src / "4_1.jpg").read_bytes()[:200])  # truncated image
    out = tmp_path / "out"
    with pytest.raises(Problems) as info:
        import_ddti(src, out)
    text = str(info.value)
    assert "1.xml: not well-formed XML" in text and "2.xml" in text and "'7x'" in text
    assert not (out / "manifest.csv").exists()
    # the XML problems fixed, the truncated image is reported by name
    (src / "1.xml").write_text(_case_xml("1", "5", {}))
    (src / "2.xml").write_text(_case_xml("2", "3", {}))
    with pytest.raises(Problems, match=r"4_1\.jpg"):
        import_ddti(src, out)
    assert not (out / "manifest.csv").exists()


def test_ddti_strict_turns_warnings_into_errors(tmp_path):
    src = _fake_ddti(tmp_path / "ddti")
    with pytest.raises(Problems, match=r"strict.*\n.*2\.xml"):
        import_ddti(src, tmp_path / "out", strict=True)


def test_ddti_two_marks_for_one_image_are_merged(tmp_path):
    src = tmp_path / "d"
    src.mkdir()
    _picture(1).save(src / "7_1.jpg")
    mark = "<mark><image>1</image><svg>{}</svg></mark>"
    (src / "7.xml").write_text(f"<case><number>7</number><tirads>4c</tirads>"
                               f"{mark.format(_svg(_poly(2, 2)))}{mark.format(_svg(_poly(30, 20)))}</case>")
    res = import_ddti(src, tmp_path / "out")
    roi = parse_roi(res.manifest.df["roi"].iat[0])
    assert len(roi["polygons"]) == 2 and res.manifest.df["label"].iat[0] == 1


def test_parse_svg_and_tirads_rules():
    polys, problems, arrows = parse_svg(_svg(_poly(0, 0), _poly(9, 9), arrows=2))
    assert len(polys) == 2 and problems == [] and arrows == 2
    cut = _svg(_poly(0, 0), _poly(9, 9))
    cut = cut[: cut.rindex('"x"')]  # second outline cut mid-way
    polys, problems, _ = parse_svg(cut)
    assert len(polys) == 1 and "kept 1 complete outline" in problems[0]
    assert parse_svg("")[1] == ["empty <svg> (no outline)"]
    assert "needs 3" in parse_svg(json.dumps([{"points": [{"x": 1, "y": 2}], "regionType": "freehand"}]))[1][0]
    assert [tirads_label(c) for c in ("2", "3", "4a", "4b", "4c", "5", None)] == [0, 0, 0, 0, 1, 1, None]
    assert tirads_label("4a", "4a") == 1


# ---------------------------------------------------------------- DDTI (real)

def test_ddti_real_counts_match_the_xml(ddti_import, ddti_dir):
    counts = {}
    for xml in ddti_dir.glob("*.xml"):
        m = re.search(r"<tirads>(.*?)</tirads>", xml.read_text())
        n_images = len(list(ddti_dir.glob(f"{xml.stem}_*.jpg")))
        t = m.group(1).strip().lower() if m else ""
        counts[t] = counts.get(t, 0) + n_images
    c = ddti_import.counts
    assert c["images"] == len(list(ddti_dir.glob("*.jpg")))
    assert c["patients"] == len(list(ddti_dir.glob("*.xml")))
    assert c["unlabelled"] == counts.get("", 0)
    assert c["malignant"] == counts.get("4c", 0) + counts.get("5", 0)
    assert c["benign"] == sum(v for k, v in counts.items() if k in ("2", "3", "4a", "4b"))
    df = ddti_import.manifest.df
    assert (df["roi"] != "").sum() >= 0.95 * len(df)
    for roi in df["roi"][df["roi"] != ""].head(50):
        assert parse_roi(roi)["polygons"]
    assert ddti_import.duplicates.merged  # byte-identical copies across cases


# ---------------------------------------------------------------- folders

def _folder_tree(root: Path) -> Path:
    (root / "A" / "Benign").mkdir(parents=True)
    (root / "A" / "MALIGNANT" / "deep").mkdir(parents=True)
    (root / "B" / "benign").mkdir(parents=True)
    (root / "Tumour").mkdir(parents=True)
    (root / "misc").mkdir(parents=True)
    _picture(1).save(root / "A" / "Benign" / "b1.png")
    _picture(2).save(root / "A" / "Benign" / "b2.jpg")
    _picture(3).save(root / "A" / "MALIGNANT" / "deep" / "m1.png")
    (root / "B" / "benign" / "b1.png").write_bytes((root / "A" / "Benign" / "b1.png").read_bytes())
    _picture(4).save(root / "Tumour" / "t1.bmp")
    _picture(5).save(root / "misc" / "x.png")
    (root / "A" / "notes.txt").write_text("not an image")
    return root


def test_folders_classes_recursive_and_duplicates(tmp_path):
    src = _folder_tree(tmp_path / "src")
    res = import_folders(src, tmp_path / "out")
    df = res.manifest.df
    lab = {(Path(i).parent.name, Path(i).name): v for i, v in zip(df["image"], df["label"])}
    assert lab == {("Benign", "b1.png"): 0, ("benign", "b1.png"): 0, ("Benign", "b2.jpg"): 0, ("deep", "m1.png"): 1}
    assert len(df) == 4  # b1 twice, b2, m1; Tumour and misc ignored
    assert sorted(df["label"].tolist()) == [0, 0, 0, 1]
    copies = df[df["patient_id"] == "b1"]
    assert len(copies) == 2 and copies["group"].nunique() == 1
    assert (copies["duplicate_of"] != "").sum() == 1
    assert any("'Tumour'" in n for n in res.notes) and any("'misc'" in n for n in res.notes)
    res2 = import_folders(src, tmp_path / "out2", classes="tumour=1,misc=")
    lab2 = dict(zip(res2.manifest.df["patient_id"], res2.manifest.df["label"]))
    assert lab2["t1"] == 1 and pd.isna(lab2["x"])


def test_folders_dicom_without_extension(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import set_pixel_data
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    set_pixel_data(ds, np.asarray(_picture(3).convert("L")), "MONOCHROME2", 8)
    (tmp_path / "src" / "Malignant").mkdir(parents=True)
    ds.save_as(tmp_path / "src" / "Malignant" / "IM0001", enforce_file_format=True)
    _picture(4).save(tmp_path / "src" / "Malignant" / "b.png")
    res = import_folders(tmp_path / "src", tmp_path / "out")
    assert sorted(Path(i).name for i in res.manifest.df["image"]) == ["IM0001", "b.png"]
    assert (res.manifest.df["label"] == 1).all()


def test_folders_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        import_folders(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "noclass" / "x").mkdir(parents=True)
    _picture(1).save(tmp_path / "noclass" / "x" / "a.png")
    with pytest.raises(DataError, match="no class folder.*--classes"):
        import_folders(tmp_path / "noclass", tmp_path / "out")
    with pytest.raises(ConfigError, match="'yes'"):
        import_folders(tmp_path / "noclass", tmp_path / "out", classes="x=yes")
    with pytest.raises(DataError, match="not found"):
        import_folders(tmp_path / "missing", tmp_path / "out")
    bad = tmp_path / "bad" / "benign"
    bad.mkdir(parents=True)
    (bad / "c1.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (bad / "c2.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(Problems) as info:
        import_folders(tmp_path / "bad", tmp_path / "out")
    assert "c1.jpg" in str(info.value) and "c2.png" in str(info.value)


def test_udtn_sample_duplicate_in_two_folders(udtn_dir, tmp_path):
    res = import_folders(udtn_dir, tmp_path / "out")
    df = res.manifest.df
    n_files = len(list(udtn_dir.rglob("*.jpg")))
    assert len(df) == n_files
    by_stem = df.groupby("patient_id")
    twice = [pid for pid, sub in by_stem if len(sub) > 1]
    assert len(twice) == 1
    sub = df[df["patient_id"] == twice[0]]
    assert sub["group"].nunique() == 1 and (sub["duplicate_of"] != "").sum() == 1
    for image, label in zip(df["image"], df["label"]):
        assert label == (1 if "/Malignant/" in image else 0)


# ---------------------------------------------------------------- CSV

def test_a_linked_folder_is_named_as_it_is_reached(tmp_path, monkeypatch):
    """Images reached through a symbolic link keep their path through it (no climb to the file system's
    root and down to the link's target); a manifest that shares no folder with its images names them
    absolutely; both manifests read every image."""
    far = tmp_path / "storage" / "site" / "export" / "2024"
    _folder_tree(far)
    work = tmp_path / "work"
    work.mkdir()
    (work / "images").symlink_to(far, target_is_directory=True)
    monkeypatch.chdir(work)
    res = import_folders(Path("images"), Path("data") / "mine")
    paths = res.manifest.df["image"].tolist()
    assert paths and all(p.startswith("../../images/") for p in paths), paths
    m = read_manifest(work / "data" / "mine" / "manifest.csv")
    assert all(m.abspath(i).is_file() for i in m.ids)
    # a CSV in the linked folder: its rows keep the link too
    (work / "images" / "mine.csv").write_text("image,label\nA/Benign/b1.png,0\nA/MALIGNANT/deep/m1.png,1\n")
    res = import_csv(Path("images") / "mine.csv", Path("data") / "csv")
    assert res.manifest.df["image"].tolist() == ["../../images/A/Benign/b1.png", "../../images/A/MALIGNANT/deep/m1.png"]
    from thyro.data.importers._common import relative_image_path

    assert relative_image_path(Path("/srv/a/x.png"), Path("/home/u/out")) == "/srv/a/x.png"
    assert relative_image_path(Path("/home/u/img/x.png"), Path("/home/u/out")) == "../img/x.png"


def test_csv_import_rewrites_paths_and_groups(tmp_path):
    (tmp_path / "imgs").mkdir()
    _picture(1).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "b.png").write_bytes((tmp_path / "imgs" / "a.png").read_bytes())
    _picture(2).save(tmp_path / "imgs" / "c.png")
    csv = tmp_path / "mine.csv"
    csv.write_text("image,label,patient_id,site\nimgs/a.png,1,p1,x\nimgs/b.png,1,p2,y\nimgs/c.png,0,p3,z\n")
    res = import_csv(csv, tmp_path / "out" / "deeper")
    m = read_manifest(res.manifest_path)
    assert all(m.abspath(i).is_file() for i in m.ids)
    g = dict(zip(m.df["patient_id"], m.df["group"]))
    assert g["p1"] == g["p2"] == "p1" and g["p3"] == "p3"
    assert m.df["site"].tolist() == ["x", "y", "z"]
    res2 = import_csv(csv)
    assert res2.manifest_path == tmp_path / "mine.grouped.csv"
    csv.write_text("image,label\nimgs/a.png,maybe\nimgs/missing.png,0\n")
    with pytest.raises(Problems) as info:
        import_csv(csv, tmp_path / "out3")
    assert "'maybe'" in str(info.value) and "missing.png" in str(info.value)
    assert not (tmp_path / "out3" / "manifest.csv").exists()


# ---------------------------------------------------------------- CLI

def test_cli_import_commands(tmp_path, capsys):
    src = _fake_ddti(tmp_path / "ddti")
    assert main(["-q", "data", "import", "ddti", str(src), "--out", str(tmp_path / "o1"), "--positive-from", "5"]) == 0
    assert (tmp_path / "o1" / "manifest.csv").is_file()
    folders = _folder_tree(tmp_path / "f")
    assert main(["-q", "data", "import", "folders", str(folders), "--out", str(tmp_path / "o2"),
                 "--classes", "tumour=1"]) == 0
    assert main(["-q", "data", "import", "csv", str(tmp_path / "o2" / "manifest.csv"), "--out", str(tmp_path / "o3")]) == 0
    assert read_manifest(tmp_path / "o3" / "manifest.csv").df["label"].tolist() == \
        read_manifest(tmp_path / "o2" / "manifest.csv").df["label"].tolist()
    capsys.readouterr()
    assert main(["data", "import", "folders", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o4")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_label_meaning_in_import_inspect_preview_and_audit(tmp_path, capsys):
    """What label 1 means is printed by import, inspect and audit, and titles the preview sheet."""
    from thyro.data.preview import sheet_title

    src = _fake_ddti(tmp_path / "ddti")
    capsys.readouterr()
    assert main(["data", "import", "ddti", str(src), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    line = "label 1 = TI-RADS ≥ 4c; labels: radiologists' TI-RADS categories, not pathology"
    assert line in out and "TI-RADS ≥ 4c (1)" in out and "not TI-RADS ≥ 4c (0)" in out and "malignant" not in out
    manifest = tmp_path / "o" / "manifest.csv"
    assert main(["data", "inspect", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert line in out and "TI-RADS ≥ 4c (1)" in out
    assert sheet_title(read_manifest(manifest)) == f"manifest.csv: {line}"
    assert main(["-q", "data", "audit", str(manifest), "--out", str(tmp_path / "audit")]) == 0
    assert line in capsys.readouterr().out
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["labels"]["positive"] == "TI-RADS ≥ 4c"
    # labels whose provenance nobody stated: import says so, and how to state it
    folders = _folder_tree(tmp_path / "f")
    assert main(["data", "import", "folders", str(folders), "--out", str(tmp_path / "o2"),
                 "--classes", "tumour=1"]) == 0
    assert "labels: not recorded; say how they were obtained with --label-source" in capsys.readouterr().out
    assert main(["data", "import", "folders", str(folders), "--out", str(tmp_path / "o3"), "--classes", "tumour=1",
                 "--label-source", "cytology", "--label-definition", "Bethesda V-VI"]) == 0
    assert ("label 1 = malignant (Bethesda V-VI); labels: cytology (fine-needle aspiration, Bethesda category)"
            in capsys.readouterr().out)
