"""`thyro data import folders --patient-pattern REGEX` reads the patient from the file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thyro.cli import main
from thyro.data.importers import import_folders
from thyro.errors import ConfigError, Problems


def _tree(root: Path, names: dict[str, list[str]]) -> Path:
    rng = np.random.default_rng(0)
    for folder, files in names.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(root / folder / name)
    return root


def test_a_named_group_or_the_first_group_is_the_patient(tmp_path):
    src = _tree(tmp_path / "src", {"benign": ["P001_1.png", "P001_2.png", "P002_1.png"],
                                   "malignant": ["P003_left.png", "P003_right.png"]})
    res = import_folders(src, tmp_path / "a", patient_pattern=r"^(?P<patient>P\d+)_", near_threshold=-1)
    df = res.manifest.df
    assert dict(zip(df["image"].map(lambda p: Path(p).name), df["patient_id"])) == {
        "P001_1.png": "P001", "P001_2.png": "P001", "P002_1.png": "P002", "P003_left.png": "P003",
        "P003_right.png": "P003"}
    assert df.groupby("patient_id")["group"].nunique().eq(1).all() and df["group"].nunique() == 3
    first = import_folders(src, tmp_path / "b", patient_pattern=r"^([A-Z]\d+)", near_threshold=-1)
    assert sorted(first.manifest.df["patient_id"].unique()) == ["P001", "P002", "P003"]
    assert any("--patient-pattern" in n for n in first.notes)


def test_a_pattern_with_a_slash_reads_the_path(tmp_path):
    src = _tree(tmp_path / "src", {"case7/benign": ["a.png"], "case8/malignant": ["a.png", "b.png"]})
    res = import_folders(src, tmp_path / "out", patient_pattern=r"^(case\d+)/", near_threshold=-1)
    assert sorted(res.manifest.df["patient_id"]) == ["case7", "case8", "case8"]


def test_files_the_pattern_misses_are_all_named_and_nothing_is_written(tmp_path):
    src = _tree(tmp_path / "src", {"benign": ["P001_1.png", "scan.png"], "malignant": ["P002_1.png", "x_2.png"]})
    with pytest.raises(Problems) as info:
        import_folders(src, tmp_path / "out", patient_pattern=r"^(P\d+)_")
    text = str(info.value)
    assert "scan.png" in text and "x_2.png" in text and "P001_1.png" not in text
    assert info.value.problems == [str(src / "benign" / "scan.png"), str(src / "malignant" / "x_2.png")]
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_a_bad_regex_is_a_clear_error(tmp_path, capsys):
    src = _tree(tmp_path / "src", {"benign": ["a.png"]})
    with pytest.raises(ConfigError, match=r"patient_pattern '\(P': not a regular expression"):
        import_folders(src, tmp_path / "out", patient_pattern="(P")
    # the command line refuses it itself, naming the option its user typed
    assert main(["-q", "data", "import", "folders", str(src), "--out", str(tmp_path / "out"),
                 "--patient-pattern", "(P"]) == 2
    err = capsys.readouterr().err
    assert "--patient-pattern" in err and "not a regular expression" in err and "patient_pattern" not in err


def test_the_command_line_option(tmp_path, capsys):
    src = _tree(tmp_path / "src", {"benign": ["P1_a.png", "P1_b.png"], "malignant": ["P2_a.png"]})
    assert main(["-q", "data", "import", "folders", str(src), "--out", str(tmp_path / "out"),
                 "--patient-pattern", "^(P[0-9]+)_", "--near-threshold", "-1"]) == 0
    import pandas as pd

    assert sorted(pd.read_csv(tmp_path / "out" / "manifest.csv")["patient_id"]) == ["P1", "P1", "P2"]
    assert main(["-q", "data", "import", "folders", str(src), "--out", str(tmp_path / "out2"),
                 "--patient-pattern", "^(Q[0-9]+)_"]) == 2
    err = capsys.readouterr().err
    assert "P1_a.png" in err and "Traceback" not in err
