"""ONNX export of the fold ensemble and prediction with onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from thyro.cli import main
from thyro.errors import ModelPackageError
from thyro.use.export import export_onnx
from thyro.use.predict import predict

from .conftest import SIZE


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    """A copy of the package with model.onnx written by the CLI."""
    import shutil

    dst = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(model_dir, dst)
    assert main(["-q", "export", str(dst)]) == 0
    return dst


def test_onnx_graph_is_one_ensemble_with_dynamic_batch(exported, package):
    path = exported / "model.onnx"
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert int(meta["image_size"]) == SIZE and json.loads(meta["operating_points"]).keys() == package.meta["operating_points"].keys()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "image" and inp.shape[1:] == [1, SIZE, SIZE] and not isinstance(inp.shape[0], int)
    x = np.random.default_rng(3).random((5, 1, SIZE, SIZE), dtype=np.float32)
    prob, logits = sess.run(["probability", "fold_logits"], {"image": x})
    assert prob.shape == (5,) and logits.shape == (5, 2)
    models = package.load_torch_models()
    with torch.inference_mode():
        ref_logits = np.stack([m(torch.from_numpy(x)).numpy() for m in models], axis=1)
    assert np.abs(logits - ref_logits).max() < 1e-4
    assert np.allclose(prob, 1 / (1 + np.exp(-ref_logits)).mean(1), atol=1e-5)


def test_export_reports_the_difference(run_dir, tmp_path, monkeypatch):
    from thyro.use import export as export_mod
    from thyro.use.bundle import write_package

    one = write_package(tmp_path / "one", model_files=[run_dir / "jobs" / "scratch" / "fold0" / "model.safetensors"],
                        preprocess={"size": SIZE}, operating={"youden": {"threshold": 0.5}})
    res = export_onnx(one, tmp_path / "m.onnx", opset=18)
    assert res["max_diff"] < 1e-4 and res["opset"] == 18 and res["n_models"] == 1
    assert (tmp_path / "m.onnx").is_file()
    monkeypatch.setattr(export_mod, "verify", lambda *a, **k: 0.5)  # an export that went wrong
    with pytest.raises(ModelPackageError, match="differs from PyTorch"):
        export_onnx(one, tmp_path / "strict.onnx")
    assert not (tmp_path / "strict.onnx").exists()  # nothing half-written


def test_a_head_with_large_logits_exports(run_dir, tmp_path):
    """A fold's logits of 50 or more (a linear probe's head on an unusual image gives such values) carry float32
    round-off of about 1e-5: the check is relative for them, absolute for the probabilities."""
    from thyro.models.checkpoint import load_model, save_model
    from thyro.use.bundle import write_package
    from thyro.use.export import sample_inputs, verify

    model = load_model(run_dir / "jobs" / "scratch" / "fold0" / "model.safetensors")
    head = model.head
    with torch.no_grad():
        head.weight.mul_(20000.0)
    save_model(tmp_path / "loud.safetensors", model)
    loud = write_package(tmp_path / "loud", model_files=[tmp_path / "loud.safetensors"], preprocess={"size": SIZE},
                         operating={"youden": {"threshold": 0.5}})
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(np.concatenate(sample_inputs(SIZE))))
    assert float(logits.abs().max()) > 50  # the case the absolute bound refused
    res = export_onnx(loud, tmp_path / "loud.onnx")
    assert res["max_diff"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "loud.onnx"), providers=["CPUExecutionProvider"])
    x = sample_inputs(SIZE)[1]
    prob, fold_logits = session.run(["probability", "fold_logits"], {"image": x})
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.allclose(fold_logits[:, 0], ref, rtol=1e-4, atol=1e-4)
    assert np.abs(prob - 1 / (1 + np.exp(-ref))).max() < 1e-4  # the probability stays within the absolute bound

    class Off(torch.nn.Module):  # a graph whose logits are off by 0.1 %: refused however large they are
        def forward(self, x):
            lg = model(x).unsqueeze(1) * 1.001
            return torch.sigmoid(lg).mean(1), lg

    assert verify(tmp_path / "loud.onnx", Off().eval(), [x]) > 5e-4


def test_predict_with_onnx_engine_matches_torch(exported, images):
    files = [images["good_dir"], images["not_image"]]
    a = predict(exported, files, engine="torch", progress=False)
    b = predict(exported, files, engine="onnx", progress=False)
    pa = np.array([r.probability if r.probability is not None else np.nan for r in a.rows])
    pb = np.array([r.probability if r.probability is not None else np.nan for r in b.rows])
    assert np.allclose(pa, pb, atol=1e-5, equal_nan=True)
    assert [r.cls for r in a.rows] == [r.cls for r in b.rows]
    assert b.n_failed == 1


def test_onnx_engine_without_export_says_what_to_do(model_dir, images):
    with pytest.raises(ModelPackageError, match="thyro export"):
        predict(model_dir, [images["png0"]], engine="onnx", progress=False)


def test_onnx_of_other_models_is_refused(exported, run_dir, images, tmp_path):
    from thyro.use.bundle import write_package

    other = write_package(tmp_path / "other", model_files=[run_dir / "jobs" / "scratch" / "fold0" / "model.safetensors"],
                          preprocess={"size": SIZE}, operating={"youden": {"threshold": 0.5}})
    with pytest.raises(ModelPackageError, match="other model files"):
        predict(other, [images["png0"]], engine="onnx", onnx_path=exported / "model.onnx", progress=False)


def test_onnx_prediction_does_not_import_torch(exported, images, tmp_path):
    out = tmp_path / "p.csv"
    code = (
        "import sys\n"
        "from thyro.use.predict import predict\n"
        f"s = predict({str(exported)!r}, [{str(images['good_dir'])!r}], out={str(out)!r}, engine='onnx', progress=False)\n"
        "assert s.n == 7 and s.n_failed == 0, s\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    assert out.is_file()


def test_flip_tta_is_applied_by_every_engine_when_the_study_used_it(run_dir, images, tmp_path):
    from thyro.use.bundle import write_package
    from thyro.use.engines import TorchEngine

    files = [run_dir / "jobs" / "scratch" / "fold0" / "model.safetensors"]
    pkg = write_package(tmp_path / "tta", model_files=files, preprocess={"size": SIZE},
                        operating={"youden": {"threshold": 0.5}}, tta_flip=True)
    assert pkg.tta_flip and "horizontal flip" in (tmp_path / "tta" / "MODEL_CARD.md").read_text()
    x = (np.random.default_rng(5).random((3, SIZE, SIZE)) * 255).astype(np.uint8)
    t = torch.from_numpy(x).float().div(255).unsqueeze(1)
    models = pkg.load_torch_models()
    with torch.inference_mode():
        ref = np.mean([torch.sigmoid(0.5 * (m(t) + m(torch.flip(t, dims=[3])))).numpy() for m in models], axis=0)
        plain = np.mean([torch.sigmoid(m(t)).numpy() for m in models], axis=0)
    assert np.allclose(TorchEngine.from_package(pkg)(x), ref, atol=1e-6)
    assert not np.allclose(ref, plain, atol=1e-6)  # the flip changes something, so the test can fail
    export_onnx(pkg)
    a = predict(pkg, [images["png0"], images["png1"]], engine="torch", progress=False)
    b = predict(pkg, [images["png0"], images["png1"]], engine="onnx", progress=False)
    assert np.allclose([r.probability for r in a.rows], [r.probability for r in b.rows], atol=1e-5)


def test_readme_export_then_predict_lines_run_as_written(model_dir, images, tmp_path, monkeypatch):
    """The README's `thyro export` and `thyro predict --engine onnx` lines, run as they are written."""
    import shlex
    import shutil
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = [line.split("#")[0].strip() for line in readme.splitlines() if line.strip().startswith("thyro ")]
    export = next(line for line in lines if line.startswith("thyro export"))
    onnx_predict = next(line for line in lines if line.startswith("thyro predict") and "--engine onnx" in line)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(model_dir, tmp_path / "model")
    shutil.copytree(images["good_dir"], tmp_path / "new_images")
    for line in (export, onnx_predict):
        assert main(["-q", *shlex.split(line)[1:]]) == 0, line
    out = next(a for a in shlex.split(onnx_predict) if a.endswith(".csv"))
    assert len(pd.read_csv(tmp_path / out)) == 7  # every image in new_images/ scored
