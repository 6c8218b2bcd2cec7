"""Prediction: inputs of every kind, exact training preprocessing, ensemble, CSV, bad files, streaming."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from thyro.cli import main
from thyro.data.preprocess import Preprocessor
from thyro.errors import DataError
from thyro.use.engines import TorchEngine
from thyro.use.inputs import InputItem, collect_inputs
from thyro.use.predict import CSV_COLUMNS, iter_predictions, predict

from .conftest import SIZE


class RecordingEngine:
    """Scores by mean pixel value and records the batches it was given."""

    name = "recording"

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __call__(self, batch):
        self.batches.append(batch.copy())
        return batch.reshape(len(batch), -1).mean(1) / 255.0


def test_collect_inputs_expands_folders_recursively_and_manifests(images, tmp_path):
    items = collect_inputs([images["good_dir"]])
    names = sorted(i.path.name for i in items)
    assert names == sorted(["us0.png", "us1.png", "us2.png", "us3.png", "us4.png", "us_rgb.jpg", "us.dcm"])
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"image": [str(images["png0"]), str(images["png1"])], "label": [1, ""],
                  "roi": ['{"box": [10, 10, 60, 50]}', ""]}).to_csv(manifest, index=False)
    items = collect_inputs([manifest], roi={"box": [0, 0, 30, 30]})
    assert items[0].roi == {"box": [10, 10, 60, 50]}  # the manifest's own ROI wins
    assert items[1].roi == {"box": [0, 0, 30, 30]}    # the --roi default for rows without one
    missing = collect_inputs([tmp_path / "nope.png"])
    assert missing[0].error


def test_predict_applies_training_preprocessing_and_fold_ensemble(package, images):
    files = [images["png0"], images["png1"], images["dcm"], images["jpg"]]
    summary = predict(package, files, progress=False)
    got = np.array([r.probability for r in summary.rows])
    # independent computation: the package's preprocessing config, each fold model, mean of sigmoids
    pre = Preprocessor(package.preprocess)
    x = torch.from_numpy(np.stack([pre.from_file(f) for f in files])).float().div(255).unsqueeze(1)
    with torch.inference_mode():
        ref = torch.stack([torch.sigmoid(m(x)) for m in package.load_torch_models()]).mean(0).numpy()
    assert np.allclose(got, ref, atol=1e-6)
    _, threshold = package.operating_point()
    assert [r.cls for r in summary.rows] == [int(p >= threshold) for p in got]
    assert summary.n == 4 and summary.n_failed == 0


def test_roi_is_cropped_exactly_as_in_training(package, images):
    roi = {"box": [20, 15, 70, 60]}
    eng = RecordingEngine()
    items = [InputItem(images["png2"], "a", roi), InputItem(images["png2"], "b", None)]
    rows = list(iter_predictions(package, items, eng, batch_size=8))
    pre = Preprocessor(package.preprocess)
    assert np.array_equal(eng.batches[0][0], pre.from_file(images["png2"], roi=roi))
    assert np.array_equal(eng.batches[0][1], pre.from_file(images["png2"]))
    assert not np.array_equal(eng.batches[0][0], eng.batches[0][1])  # roi_crop is on in this package
    assert json.loads(rows[0].roi) == roi and rows[1].roi == ""


def test_streams_in_batches_and_batch_size_does_not_change_results(package, images):
    files = [images["good_dir"]]
    eng = RecordingEngine()
    items = collect_inputs(files)
    rows = list(iter_predictions(package, items, eng, batch_size=3))
    assert [len(b) for b in eng.batches] == [3, 3, 1]
    rows1 = list(iter_predictions(package, items, RecordingEngine(), batch_size=1))
    assert [r.probability for r in rows] == [r.probability for r in rows1]
    a = predict(package, files, batch_size=1, progress=False)
    b = predict(package, files, batch_size=4, progress=False)
    assert np.allclose([r.probability for r in a.rows], [r.probability for r in b.rows], atol=1e-6)


def test_bad_files_get_error_rows_and_the_rest_goes_on(package, images, tmp_path):
    out = tmp_path / "pred.csv"
    inputs = [images["png0"], images["not_image"], images["dicom_no_pixels"], images["tiny"], images["small"],
              tmp_path / "missing.png", images["png1"]]
    summary = predict(package, inputs, out=out, batch_size=2, progress=False)
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == CSV_COLUMNS and len(df) == len(inputs)
    assert df["image"].tolist() == [str(p) for p in inputs]  # order kept
    by = dict(zip(df["image"], df.to_dict("records")))
    for bad in ("not_image", "dicom_no_pixels", "tiny"):
        row = by[str(images[bad])]
        assert row["error"] and row["probability"] == "", bad
    assert "pixel" in by[str(images["dicom_no_pixels"])]["error"].lower()
    assert "minimum" in by[str(images["tiny"])]["error"]
    assert "not found" in by[str(tmp_path / "missing.png")]["error"]
    # smaller than the model input: upscaled, with a warning
    small = by[str(images["small"])]
    assert small["error"] == "" and 0 <= float(small["probability"]) <= 1 and "upscaled" in small["warning"]
    assert summary.n_failed == 4


def test_cli_predict_exit_codes_and_csv(model_dir, images, tmp_path):
    out = tmp_path / "ok.csv"
    assert main(["-q", "predict", str(model_dir), str(images["good_dir"]), "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) == 7 and df["probability"].between(0, 1).all() and set(df["class"]) <= {0, 1}
    assert main(["-q", "predict", str(model_dir), str(images["png0"]), str(images["not_image"]),
                 "--out", str(tmp_path / "bad.csv")]) == 1
    assert len(pd.read_csv(tmp_path / "bad.csv")) == 2
    # a bad model directory: one clear message, exit 2
    assert main(["-q", "predict", str(tmp_path), str(images["png0"])]) == 2


def test_cli_roi_argument(model_dir, images, tmp_path):
    out = tmp_path / "roi.csv"
    roi = '{"box": [20, 15, 70, 60]}'
    assert main(["-q", "predict", str(model_dir), str(images["png0"]), "--roi", roi, "--out", str(out)]) == 0
    assert json.loads(pd.read_csv(out)["roi"][0]) == {"box": [20, 15, 70, 60]}
    assert main(["-q", "predict", str(model_dir), str(images["png0"]), "--roi", '{"box": [5, 5, 1, 1]}']) == 2


def test_empty_folder_is_an_error(package, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        predict(package, [tmp_path / "empty"], progress=False)


def test_torch_engine_batch_of_uint8(package):
    eng = TorchEngine(package.load_torch_models())
    p = eng(np.zeros((3, SIZE, SIZE), np.uint8))
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))


def test_real_udtn_sample_gets_a_probability_for_every_image(package, udtn_dir, tmp_path):
    out = tmp_path / "udtn.csv"
    summary = predict(package, [udtn_dir], out=out, batch_size=8, progress=False)
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 26  # 25 unique images, one filed in two folders
    assert summary.n_failed == 0 and (df["error"] == "").all()
    probs = df["probability"].astype(float)
    assert probs.between(0, 1).all()
    # the image filed twice gets the same probability both times
    df["name"] = df["image"].map(lambda s: s.rsplit("/", 1)[-1])
    dup = df[df.duplicated("name", keep=False)]
    assert len(dup) == 2 and dup["probability"].astype(float).nunique() == 1
    assert df["name"].nunique() == 25


def test_predict_keeps_the_manifests_columns_and_report_and_compare_read_it(model_dir, images, tmp_path, capsys):
    """On a labelled manifest, predict carries label, patient_id, group and other columns into its CSV,
    so `thyro report` and `thyro compare` read the file as it is; failed images are left out with a note."""
    import json

    from thyro.cli import main
    from thyro.report import build_report

    root = images["good_dir"]
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    rows = [{"image": n, "label": k % 2, "patient_id": f"p{k // 2}", "group": f"p{k // 2}", "site": "A"}
            for k, n in enumerate(names)]
    rows.append({"image": "missing.png", "label": 1, "patient_id": "px", "group": "px", "site": "A"})
    manifest = root / "labelled.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out_a, out_b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["-q", "predict", str(model_dir), str(manifest), "--out", str(out_a)]) == 1  # one file missing
    df = pd.read_csv(out_a)
    assert list(df.columns[:5]) == ["image", "probability", "probability_of", "model_label_source",
                                    "model_label_definition"]
    assert {"label", "patient_id", "group", "site"} <= set(df.columns)
    assert df.set_index("image").loc[names, "label"].tolist() == [r["label"] for r in rows[:-1]]
    assert (df["probability_of"] == "TI-RADS ≥ 4c").all() and (df["model_label_source"] == "tirads").all()
    html, _ = build_report(out_a, tmp_path / "report", n_boot=100)
    data = json.loads(html.with_suffix(".json").read_text())
    s = data["sets"]["test"]
    assert s["n"] == len(names) and s["n_clusters"] == len(names) // 2 + len(names) % 2
    assert any("could not be scored" in n for n in data["notes"])
    # a second model's file on the same manifest: compare pairs them by image
    assert main(["-q", "predict", str(model_dir), str(manifest), "--out", str(out_b), "--engine", "torch"]) == 1
    capsys.readouterr()
    assert main(["compare", str(out_a), str(out_b), "--json", "--n-boot", "100"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_common"] == len(names)
    c = r["comparison"]  # a handful of images: too few for a difference, which compare says (thyro.stats.support)
    if c.get("not_estimable"):
        assert c["not_estimable"]["n_pos"] + c["not_estimable"]["n_neg"] == len(names) and "diff" not in c
    else:
        assert c["diff"] == 0.0


def test_unsure_scan_area_is_a_warning_row(model_dir, tmp_path):
    from PIL import Image

    img = np.zeros((90, 120), np.uint8)
    img[10:20, 10:20] = 200  # no tissue image to be found: the whole frame is used, with a warning
    path = tmp_path / "odd.png"
    Image.fromarray(img).save(path)
    row = predict(model_dir, [path], progress=False).rows[0]
    assert not row.error and row.probability is not None
    assert "whole frame" in row.warning
