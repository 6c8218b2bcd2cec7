"""predict and explain on messy inputs: multi-frame files under a stated policy, bad ROI cells and
arguments, decompression bombs; every case a row or a one-line error, never a traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thyro.cli import main
from thyro.data.preprocess import Preprocessor
from thyro.use.predict import predict

from .conftest import _speckle, write_dicom_frames


@pytest.fixture(scope="module")
def cine(tmp_path_factory):
    """A 3-frame DICOM whose frames differ (a nodule moving across the image)."""
    rng = np.random.default_rng(11)
    frames = [_speckle(rng, 88, 104, (40, 25 + 25 * k, 14)) for k in range(3)]
    return write_dicom_frames(tmp_path_factory.mktemp("cine") / "cine.dcm", frames)


def _frame_probs(package, path, n):
    """Each frame scored on its own, through the package's preprocessing and fold models."""
    import torch

    pre = Preprocessor(package.preprocess)
    x = torch.from_numpy(np.stack([pre.from_file(path, frame=k) for k in range(n)])).float().div(255).unsqueeze(1)
    with torch.inference_mode():
        return torch.stack([torch.sigmoid(m(x)) for m in package.load_torch_models()]).mean(0).numpy()


def test_frames_first_scores_frame_0_and_says_how_many(package, cine, images):
    s = predict(package, [cine, images["png0"]], progress=False)
    row = s.rows[0]
    assert row.input == str(cine) and "3 frames: frame 0 scored" in row.warning
    assert row.probability == pytest.approx(_frame_probs(package, cine, 3)[0], abs=1e-6)
    assert "frames" not in s.rows[1].warning  # a single-frame file gets no such warning


def test_frames_all_gives_one_row_per_frame_grouped_under_the_file(package, cine, images, tmp_path):
    out = tmp_path / "p.csv"
    s = predict(package, [images["png0"], cine, images["png1"]], progress=False, frames="all", out=out)
    names = [r.input for r in s.rows]
    assert names == [str(images["png0"]), f"{cine}#frame=0", f"{cine}#frame=1", f"{cine}#frame=2",
                     str(images["png1"])]
    ref = _frame_probs(package, cine, 3)
    got = np.array([r.probability for r in s.rows[1:4]])
    assert np.allclose(got, ref, atol=1e-6) and np.ptp(ref) > 1e-4  # the frames really differ
    assert all(not r.warning for r in s.rows[1:4])
    assert pd.read_csv(out)["image"].tolist() == names


def test_frames_mean_averages_the_frames(package, cine, images):
    s = predict(package, [cine, images["png0"]], progress=False, frames="mean", batch_size=2)
    assert [r.input for r in s.rows] == [str(cine), str(images["png0"])]
    assert s.rows[0].probability == pytest.approx(float(_frame_probs(package, cine, 3).mean()), abs=1e-6)
    assert "mean of 3 frames" in s.rows[0].warning


def test_frames_policy_on_the_command_line(model_dir, cine, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["-q", "predict", str(model_dir), str(cine), "--frames", "all", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 3
    assert main(["-q", "predict", str(model_dir), str(cine), "--frames", "every"]) == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())  # the command line's own check, in a box
    assert "Invalid value for '--frames'" in err and "'every' is not one of 'first', 'all', 'mean'" in err


def test_explain_frames_all_draws_every_frame(model_dir, cine, tmp_path):
    from thyro.use.explain import explain

    res = explain(model_dir, [cine], tmp_path / "cams", frames="all", progress=False)
    assert [r["input"] for r in res] == [f"{cine}#frame={k}" for k in range(3)]
    assert len({r["png"] for r in res}) == 3 and all((tmp_path / "cams" / r["png"]).is_file() for r in res)
    first = explain(model_dir, [cine], tmp_path / "cams1", progress=False)
    assert "3 frames" in first[0]["warning"]


def test_bad_roi_cell_fails_its_row_only(model_dir, images, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"image": [str(images["png0"]), str(images["png1"])],
                  "roi": ["[" * 50_000 + "]" * 50_000, ""]}).to_csv(manifest, index=False)
    out = tmp_path / "p.csv"
    assert main(["-q", "predict", str(model_dir), str(manifest), "--out", str(out)]) == 1  # exit 1: a row failed
    df = pd.read_csv(out, keep_default_na=False)
    assert "m.csv row 2: roi is nested more than 4 levels" in df["error"][0]
    assert df["probability"][1] != "" and df["error"][1] == ""
    assert main(["-q", "predict", str(model_dir), str(images["png0"]), "--roi", "{" + "[" * 5000]) == 2
    assert "--roi: roi is nested" in capsys.readouterr().err


def test_bomb_gets_an_error_row_and_the_rest_goes_on(model_dir, images, tmp_path, bomb_png):
    bomb = bomb_png(tmp_path / "bomb.png", 13000, 13000, complete=True)
    s = predict(model_dir, [bomb, images["png0"]], progress=False)
    assert "13000 x 13000" in s.rows[0].error and "over the limit of 25,000,000 pixels" in s.rows[0].error
    assert s.rows[1].probability is not None and s.n_failed == 1
    from thyro.use.explain import explain

    res = explain(model_dir, [bomb], tmp_path / "cams", progress=False)
    assert "13000 x 13000" in res[0]["error"]
