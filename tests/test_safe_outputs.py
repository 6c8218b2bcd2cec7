"""Outputs safe to open: no CSV thyro writes starts a text cell with =, +, -, @, tab or CR (a spreadsheet
would run it), numbers stay numbers, thyro's readers give the original text back, and Markdown outputs
render no HTML from the data."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from thyro.fileio import (CsvWriter, escape_cell, escape_frame, markdown_text, read_csv, unescape_cell, write_csv)

#: What a manifest from another site can hold (the probes' cells and more).
HOSTILE = ['=HYPERLINK("http://x/","click")', "=cmd|' /C calc'!A0", "+SUM(1;2)", "@SUM(1)", "-2+3", "\tP5",
           "\rP6", "'=already quoted", "-", "=1+1", "@x"]
DANGEROUS = tuple("=+-@\t\r\0")
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _unsafe_cells(path: Path) -> list[str]:
    """Cells of a CSV that a spreadsheet would run: text starting with a formula character."""
    bad = []
    with open(path, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.reader(fh), 1):
            for cell in row:
                if cell[:1] in DANGEROUS and not NUMBER.fullmatch(cell):
                    bad.append(f"{path.name} line {line}: {cell!r}")
    return bad


def test_escaping_round_trips_and_leaves_numbers_alone():
    rng = random.Random(0)
    alphabet = "=+-@'\t\r\0ab1.,\"e "
    samples = HOSTILE + ["", "'", "''", "'abc", "''-1", "-1.5", "+3", "1e5", "-.5", "abc"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(2000)]
    for text in samples:
        safe = escape_cell(text)
        assert unescape_cell(safe) == text, text
        assert safe[:1] not in DANGEROUS or NUMBER.fullmatch(safe), text
    for number in ("-0.5", "+1", "-1e-3", "12", "-.25"):
        assert escape_cell(number) == number  # a spreadsheet reads these as numbers, never as formulas
    assert escape_cell(-0.5) == -0.5 and escape_cell(None) is None


def test_every_writer_shape_round_trips(tmp_path):
    df = pd.DataFrame({"image": HOSTILE, "probability": [-0.5 + k / 10 for k in range(len(HOSTILE))],
                       "=head": ["x"] * len(HOSTILE)})
    cells = write_csv(tmp_path / "a.csv", df)
    assert _unsafe_cells(tmp_path / "a.csv") == []
    assert (None, "=head") in cells and len(cells) == 1 + sum(1 for h in HOSTILE if escape_cell(h) != h)
    back = read_csv(tmp_path / "a.csv", dtype={"image": str}, keep_default_na=False)
    assert list(back.columns) == ["image", "probability", "=head"] and back["image"].tolist() == HOSTILE
    assert back["probability"].tolist() == df["probability"].tolist()  # numbers came back as numbers
    write_csv(tmp_path / "b.csv", [{"k": h, "n": -1} for h in HOSTILE], ["k", "n"])
    assert _unsafe_cells(tmp_path / "b.csv") == []
    assert read_csv(tmp_path / "b.csv", dtype=str, keep_default_na=False)["k"].tolist() == HOSTILE
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as fh:
        writer = CsvWriter(fh)
        writer.writerow(["image", "n"])
        writer.writerows([[h, -2] for h in HOSTILE])
    assert _unsafe_cells(tmp_path / "c.csv") == [] and writer.cells == escape_frame(df[["image"]])[1]


def test_markdown_text_cannot_open_html():
    assert markdown_text("<script>alert(1)</script>") == "&lt;script>alert(1)&lt;/script>"
    assert markdown_text("<img src=x onerror=alert(1)> <!-- c --> <http://x>") == \
        "&lt;img src=x onerror=alert(1)> &lt;!-- c --> &lt;http://x>"
    assert markdown_text("TI-RADS >= 4; p < 0.05; a<b") == "TI-RADS >= 4; p < 0.05; a&lt;b"
    assert markdown_text(3) == 3


# ------------------------------------------------------------------------------------------------
# the probes: a manifest from another site, imported, studied, bundled, predicted, explained, audited

SCRIPT = "<script>alert('x')</script> TI-RADS >= 4"


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    """A table from another site: formula cells in patient ids, groups, a free-text column, a column
    name, image file names; and a label definition with a script tag."""
    from thyro.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("site")
    manifest = generate_cohort(root / "phantom", n_patients=16, images_per_patient=(1, 2), size=64, seed=2)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    patients = sorted(df["patient_id"].unique())
    rename = {p: (HOSTILE[k] if k < len(HOSTILE) else p) for k, p in enumerate(patients)}
    df["patient_id"] = df["patient_id"].map(rename)
    df["group"] = df["patient_id"]
    df["comment"] = [HOSTILE[k % len(HOSTILE)] for k in range(len(df))]
    df["=cmd|' /C calc'!A0"] = "x"
    for k, new in ((0, "=cmd.png"), (1, "-dash.png"), (2, "@at.png")):  # image ids that start a formula
        shutil.move(manifest.parent / df.loc[k, "image"], manifest.parent / new)
        df.loc[k, "image"] = new
    table = manifest.parent / "from-site-b.csv"
    # written as a spreadsheet exports it (CRLF, so the cell with a CR stays one cell), formulas unescaped
    df.drop(columns=["label_source"]).to_csv(table, index=False, lineterminator="\r\n")
    return table, df.drop(columns=["label_source"])


def _cli(args: list[str]) -> None:
    from thyro.cli import main

    assert main(args) == 0, args


@pytest.mark.slow
def test_end_to_end_no_output_cell_can_run_and_readers_give_the_text_back(tmp_path, hostile_site, monkeypatch,
                                                                          capsys):
    from thyro.data.manifest import read_manifest
    from thyro.run import RunDir, read_predictions

    table, original = hostile_site
    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    _cli(["data", "import", "csv", str(table), "--out", str(data), "--label-source", "tirads",
          "--label-definition", SCRIPT])
    # the import report says which cells were escaped; the manifest keeps the values
    report = json.loads((data / "import_report.json").read_text())
    escaped = {(c["row"], c["column"]) for c in report["escaped_cells"]}
    assert (None, "=cmd|' /C calc'!A0") in escaped and any(c == "patient_id" for _, c in escaped)
    assert any("began with =, +, -, @, tab or CR" in n for n in report["notes"])
    assert "leading '" in capsys.readouterr().out
    manifest = read_manifest(data / "manifest.csv")
    by_image = manifest.df.set_index(manifest.df["image"].map(lambda p: Path(p).name))
    for _, row in original.iterrows():
        got = by_image.loc[Path(row["image"]).name]
        # the site's own table is read as it stands: its "'=already quoted" keeps its apostrophe (only files
        # thyro wrote have their escaping undone)
        want = [row[c] for c in ("patient_id", "group", "comment")]
        assert [got["patient_id"], got["group"], got["comment"], got["=cmd|' /C calc'!A0"]] == [*want, "x"]

    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hostile", "data": {"manifest": str(data / "manifest.csv"), "test_size": 0.25, "folds": 2, "seed": 1},
        "preprocess": {"size": 32}, "arms": [{"name": "scratch", "weights": "none"}],
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "tensorboard": False, "selection": "last"}}))
    run = tmp_path / "run"
    _cli(["study", str(config), "--run-dir", str(run)])
    model = tmp_path / "model"
    _cli(["bundle", str(run), "--arm", "scratch", "--out", str(model)])
    _cli(["predict", str(model), str(data / "manifest.csv"), "--out", str(tmp_path / "pred.csv")])
    monkeypatch.chdir(table.parent)  # inputs named as typed: "=cmd.png" is the row's input cell
    _cli(["explain", str(model), "--out", str(tmp_path / "heat"), "--", "=cmd.png", "-dash.png"])
    _cli(["data", "audit", str(data / "manifest.csv"), "--out", str(tmp_path / "audit")])
    _cli(["data", "preview", str(data / "manifest.csv"), "--out", str(tmp_path / "sheet.png"), "--report",
          str(tmp_path / "preview.csv")])

    # no CSV anywhere (run, job folders, cache, outputs) has a cell a spreadsheet would run
    written = [p for p in list(tmp_path.rglob("*.csv")) if p != table]
    names = {p.name for p in written}
    assert {"manifest.csv", "predictions.csv", "log.csv", "pred.csv", "index.csv", "audit_images.csv",
            "preprocess.csv", "preview.csv"} <= names, names
    assert [bad for p in written for bad in _unsafe_cells(p)] == []
    # ...yet formula-like text reached them, and thyro's readers give it back as it was
    preds = RunDir(run).read_predictions().df
    patients = set(original["patient_id"])
    assert "'=already quoted" in patients
    assert patients <= set(preds["patient"])
    out = read_predictions(tmp_path / "pred.csv").df
    assert set(out["patient"]) == patients and {"=cmd.png", "-dash.png"} <= \
        {Path(i).name for i in out["image"]}
    index = read_csv(tmp_path / "heat" / "index.csv", dtype=str, keep_default_na=False)
    assert index["input"].tolist() == ["=cmd.png", "-dash.png"]
    # Markdown outputs render no HTML from the data; the HTML report escapes it
    for md in (run / "report.md", model / "MODEL_CARD.md"):
        text = md.read_text()
        assert "<script" not in text and "&lt;script>" in text, md
    assert "<script>alert" not in (run / "report.html").read_text()
