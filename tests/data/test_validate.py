"""validate_manifest lists every problem with its line and file; inspect summarises a manifest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thyro.cli import main
from thyro.cli._data_view import render
from thyro.data.inspection import class_balance, inspect_manifest
from thyro.data.manifest import read_manifest
from thyro.data.validate import validate_manifest


def _img(path, seed=0, size=(40, 30)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(path)


@pytest.fixture
def messy(tmp_path):
    for i in range(4):
        _img(tmp_path / f"ok{i}.png", i)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    box = json.dumps({"box": [1, 1, 10, 10]}).replace('"', '""')
    outside = json.dumps({"box": [5, 5, 400, 20]}).replace('"', '""')
    lines = [
        "image,label,patient_id,group,roi",
        f'ok0.png,1,p0,p0,"{box}"',                   # 2 fine
        "ok1.png,2,p1,p1,",                           # 3 bad label
        "missing.png,0,p2,p2,",                       # 4 missing file
        "corrupt.png,0,p3,p3,",                       # 5 unreadable
        f'ok0.png,1,p0,p0,"{box}"',                   # 6 repeats line 2
        "ok2.png,yes,p4,p4,{not json",                # 7 bad label + bad roi
        f'ok3.png,0,p5,p5,"{outside}"',               # 8 roi outside the image
        "ok1.png,0,p6,gX,",                           # 9 same id as line 3 (not identical)
        ",0,p7,p7,",                                  # 10 empty image path
        "ok2.png,0,,q,",                              # 11 repeated id + empty patient
        "ok3.png,1,p5,p5b,",                          # 12 repeated id; p5 now in two groups
    ]
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_problem_reported_with_line_and_file(messy):
    problems = validate_manifest(messy)
    found = {(p.row, p.message.split(" ")[0]) for p in problems}
    text = "\n".join(str(p) for p in problems)
    expected_lines = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
    assert {p.row for p in problems} >= expected_lines
    assert 2 not in {p.row for p in problems}
    assert "line 3 (ok1.png): label '2'" in text
    assert "line 4 (missing.png): file not found" in text
    assert "line 5 (corrupt.png): unreadable" in text
    assert "line 6 (ok0.png): repeats line 2 exactly" in text
    assert "line 7 (ok2.png): label 'yes'" in text and "line 7 (ok2.png): bad roi" in text
    assert "line 8 (ok3.png): roi (5, 5, 400, 20) lies outside the 40x30 image" in text
    assert "line 9 (ok1.png): same image id as line 3" in text
    assert "line 10: empty image path" in text
    assert "empty patient_id" in text
    assert "patient 'p5' is in 2 groups" in text
    assert len(found) >= 10
    # rows are reported in order
    rows = [p.row for p in problems]
    assert rows == sorted(rows)


def test_clean_manifest_and_cli_exit_codes(messy, tmp_path, capsys):
    assert main(["-q", "data", "validate", str(messy)]) == 1
    err = capsys.readouterr().err
    assert "missing.png" in err and "corrupt.png" in err and "problem(s)" in err
    good = tmp_path / "good.csv"
    good.write_text("image,label,patient_id,group\nok0.png,1,a,a\nok1.png,0,b,b\nok2.png,,c,c\n")
    assert validate_manifest(good) == []
    assert main(["-q", "data", "validate", str(good)]) == 0
    assert "no problems" in capsys.readouterr().out
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("path,label\nok0.png,1\n")
    [p] = validate_manifest(nohead)
    assert "no 'image' column" in p.message
    assert "manifest not found" in validate_manifest(tmp_path / "nope.csv")[0].message
    header_only = tmp_path / "header.csv"
    header_only.write_text("image,label\n")
    [p] = validate_manifest(header_only)
    assert "no rows" in p.message
    assert main(["-q", "data", "validate", str(header_only)]) == 1
    for command in (["data", "inspect"], ["data", "split", "-o", str(tmp_path / "s.json")]):
        assert main(["-q", *command, str(header_only)]) != 0
        assert "names no images" in capsys.readouterr().err


def test_identical_images_in_two_groups_is_leakage(tmp_path):
    _img(tmp_path / "a.png", 1)
    _img(tmp_path / "b.png", 2)
    csv = tmp_path / "m.csv"
    csv.write_text("image,label,patient_id,group,content_hash\na.png,1,p1,p1,abc\nb.png,0,p2,p2,abc\n")
    [p] = validate_manifest(csv)
    assert p.row == 3 and "same pixels as line 2" in p.message and "leakage" in p.message
    csv.write_text("image,label,patient_id,group,content_hash\na.png,1,p1,p1,abc\nb.png,0,p2,p1,abc\n")
    assert validate_manifest(csv) == []


def test_no_decode_misses_only_truncation(tmp_path):
    _img(tmp_path / "a.png", 1, (200, 200))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    csv = tmp_path / "m.csv"
    csv.write_text("image,label\ncut.png,1\n")
    assert validate_manifest(csv, decode=False) == []
    assert "unreadable" in validate_manifest(csv)[0].message


def test_class_balance_counts_patients_and_groups():
    df = pd.DataFrame({
        "image": list("abcdefg"),
        "label": pd.array([1, 1, 0, 0, 1, pd.NA, pd.NA], dtype="Int64"),
        "patient_id": ["p1", "p1", "p2", "p3", "p3", "p4", "p5"],
        "group": ["g1", "g1", "g2", "g2", "g2", "g4", "g1"],
    })
    b = class_balance(df)
    assert b.loc["malignant (1)"].tolist() == [3, 1, 1]
    assert b.loc["benign (0)"].tolist() == [2, 1, 0]
    assert b.loc["mixed"].tolist() == [0, 1, 1]
    assert b.loc["unlabelled"].tolist() == [2, 2, 1]
    assert b.loc["all"].tolist() == [7, 5, 3]


def test_inspect_on_import(tmp_path, capsys):
    from thyro.cli.console import set_quiet

    (tmp_path / "src" / "benign").mkdir(parents=True)
    (tmp_path / "src" / "malignant").mkdir(parents=True)
    _img(tmp_path / "src" / "benign" / "a.png", 1)
    _img(tmp_path / "src" / "malignant" / "a.png", 1)  # same pixels, other class: one group, a conflict
    _img(tmp_path / "src" / "benign" / "b.png", 2, (32, 32))
    Image.new("RGB", (40, 30), (10, 200, 10)).save(tmp_path / "src" / "malignant" / "c.jpg")
    (tmp_path / "src" / "malignant" / "d.jpg").write_bytes((tmp_path / "src" / "malignant" / "c.jpg").read_bytes())
    assert main(["-q", "data", "import", "folders", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    set_quiet(False)
    m = read_manifest(tmp_path / "out" / "manifest.csv")
    ins = inspect_manifest(m)
    assert ins.sizes == {"40x30": 4, "32x32": 1}
    assert ins.modes == {"L": 3, "RGB": 2}
    assert [len(s) for s in ins.exact_duplicates] == [2, 2]
    assert ins.near_duplicates == []
    assert ins.balance.loc["mixed", "groups"] == 1
    render(ins)
    assert main(["data", "inspect", str(tmp_path / "out" / "manifest.csv")]) == 0
    out = capsys.readouterr().out
    assert "class balance" in out and "40x30" in out and "identical images" in out
    # one set per row, one image per line: no line names images of two sets, or two images
    lines = out[out.index("identical images"):].splitlines()
    for name in ("benign/a.png", "malignant/a.png", "malignant/c.jpg", "malignant/d.jpg"):
        (line,) = [ln for ln in lines if name in ln]
        assert sum(n in line for n in ("a.png", "c.jpg", "d.jpg")) == 1, line
