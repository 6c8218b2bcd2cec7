"""`import thyro` is light and exposes the entry points; `thyro.load(...).predict` takes paths, PIL images and
arrays and returns the predictions CSV's table."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import thyro
from thyro.api import PREDICTION_COLUMNS, as_pixels
from thyro.errors import DataError


def test_import_thyro_loads_nothing_heavy():
    code = ("import sys, thyro; heavy = [m for m in ('torch', 'numpy', 'pandas', 'typer', 'pydantic') "
            "if m in sys.modules]; print(heavy, sorted(set(thyro.__all__) - set(dir(thyro))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


def test_the_entry_points_are_there():
    assert callable(thyro.load) and callable(thyro.study) and callable(thyro.compare) and callable(thyro.report)
    import importlib

    build = importlib.import_module("thyro.report.build")  # the package and the entry point are one object
    assert callable(thyro.report) and thyro.report.build_report is build.build_report
    with pytest.raises(AttributeError):
        thyro.nothing_here  # noqa: B018


def test_predict_takes_paths_pil_images_and_arrays_alike(model_dir, images):
    model = thyro.load(model_dir)
    assert "fold model(s)" in repr(model)
    path = images["png0"]
    pil = Image.open(path)
    grey = np.asarray(pil.convert("L"))
    table = model.predict([path, pil, grey, grey.astype(np.float32) / 255.0, np.dstack([grey] * 3),
                           np.dstack([grey, grey, grey, np.full_like(grey, 255)]), grey[..., None]])
    assert list(table.columns[:len(PREDICTION_COLUMNS)]) == PREDICTION_COLUMNS
    assert table["probability"].dtype == float and str(table["class"].dtype) == "Int64"
    assert table["image"].tolist()[0] == str(path) and table["image"].tolist()[2:4] == ["array[2]", "array[3]"]
    assert (table["error"] == "").all()
    assert np.allclose(table["probability"], table["probability"].iloc[0], atol=1e-6)  # one image, seven ways
    assert table.attrs["threshold"] == model.threshold and table.attrs["labels"]["positive"] == model.labels.positive
    assert ((table["probability"] >= model.threshold).astype(int) == table["class"]).all()
    one = model.predict(grey)  # a single image, not in a list
    assert len(one) == 1 and one["probability"].iloc[0] == pytest.approx(table["probability"].iloc[0], abs=1e-6)
    assert model.predict_proba([path, grey]).shape == (2,)


def test_a_folder_and_a_bad_input_keep_their_rows_in_order(model_dir, images):
    table = thyro.load(model_dir).predict([images["good_dir"], np.zeros((4, 4, 2), np.uint8), images["not_image"]])
    n_good = len(table) - 2  # the folder's images (7, and whatever else other tests leave there), then the two
    assert n_good >= 7 and table["image"][:n_good].str.startswith(str(images["good_dir"])).all()
    assert table["error"].iloc[n_good].startswith("array[1]: expected an image of shape")
    assert table["error"].iloc[-1] and pd.isna(table["class"].iloc[-1]) and np.isnan(table["probability"].iloc[-1])


@pytest.mark.parametrize("bad, message", [
    (np.full((20, 20), 1.5, np.float32), "float pixels must lie in \\[0, 1\\]"),
    (np.zeros((20, 20), np.uint16), "uint16 pixels; pass uint8"),
    (np.zeros((2, 20, 20, 3), np.uint8), "expected an image of shape"),
])
def test_unusable_arrays_are_refused_with_the_fix(bad, message):
    with pytest.raises(DataError, match=message):
        as_pixels(bad)


def test_float_arrays_are_scaled_from_zero_one():
    assert as_pixels(np.array([[0.0, 0.5], [1.0, 0.25]])).tolist() == [[0, 128], [255, 64]]
