"""Without --out, `thyro predict` writes the CSV to standard output (under -q too), the summary elsewhere."""

from __future__ import annotations

import csv
import io

from thyro.cli import main


def test_quiet_predict_without_out_prints_only_the_csv(model_dir, images, capsys):
    assert main(["-q", "predict", str(model_dir), str(images["png0"]), str(images["jpg"])]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["image"] for r in rows] == [str(images["png0"]), str(images["jpg"])]
    assert all(0 <= float(r["probability"]) <= 1 for r in rows)
    assert captured.err == ""


def test_predict_without_out_keeps_the_summary_off_standard_output(model_dir, images, capsys, tmp_path):
    assert main(["predict", str(model_dir), str(images["png1"])]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("image,probability,")
    assert len(captured.out.splitlines()) == 2
    assert "Predictions" in captured.err
    # with --out, the file gets the CSV and the terminal the table
    out = tmp_path / "p.csv"
    assert main(["predict", str(model_dir), str(images["png1"]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Predictions" in captured.out and "predictions written to" in captured.out
    assert len(out.read_text().splitlines()) == 2 and "image,probability" not in captured.out
