"""Each arm at its own size: its own image cache, model, bundle, predictions and ONNX input; the native size of a
pretrained architecture when the study leaves preprocess.size unset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from thyro.config import StudyConfig
from thyro.errors import ConfigError


def test_a_study_without_a_size_runs_pretrained_arms_at_their_native_size():
    cfg = StudyConfig.parse({"data": {"manifest": "m.csv"}, "arms": [
        {"name": "b3", "backbone": "efficientnet_b3", "weights": "imagenet"},
        {"name": "r18", "backbone": "resnet18"},
        {"name": "own", "backbone": "efficientnet_b3", "weights": "imagenet", "size": 64}]})
    assert [cfg.arm_preprocess(a).size for a in ("b3", "r18", "own")] == [288, 224, 64]
    again = StudyConfig.parse(cfg.model_dump(mode="json"))  # resolved once: the dump reads the same everywhere
    assert [a.size for a in again.arms] == [288, None, 64]
    fixed = StudyConfig.parse({"data": {"manifest": "m.csv"}, "preprocess": {"size": 96}, "arms": [
        {"name": "b3", "backbone": "efficientnet_b3", "weights": "imagenet"}]})
    assert fixed.arm_preprocess("b3").size == 96  # a study that sets its size keeps it for every arm
    assert "size" not in fixed.model_dump()["arms"][0]  # and dumps as before


def test_size_native_is_the_architectures_own_size_in_a_study_that_sets_its_size():
    cfg = StudyConfig.parse({"data": {"manifest": "m.csv"}, "preprocess": {"size": 96}, "arms": [
        {"name": "b3", "backbone": "efficientnet_b3", "weights": "imagenet", "size": "native"},
        {"name": "r18", "backbone": "resnet18", "size": "Native"},
        {"name": "typed", "backbone": "resnet18", "size": "64"}]})  # as --set arms.2.size=64 may give it
    assert [cfg.arm_preprocess(a).size for a in ("b3", "r18", "typed")] == [288, 224, 64]
    assert [a["size"] for a in cfg.model_dump(mode="json")["arms"]] == [288, 224, 64]  # resolved to a number
    for bad in ("nativ", 7, 5000, 3.5, True, "large"):
        with pytest.raises(ConfigError, match=r"arms\.0\.size.*8 to 4096, or native"):
            StudyConfig.parse({"data": {"manifest": "m.csv"}, "arms": [{"name": "a", "size": bad}]})


def test_arms_at_two_sizes_run_study_report_bundle_predict_export(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from thyro.data.phantom import generate_cohort
    from thyro.models import build_model, save_model
    from thyro.run import JobKey, RunDir
    from thyro.train.study import run_study
    from thyro.use.bundle import bundle
    from thyro.use.export import export_onnx
    from thyro.use.predict import predict

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    manifest = generate_cohort(tmp_path / "phantom", n_patients=24, size=64, seed=5)
    standin = tmp_path / "lite0.safetensors"
    save_model(standin, build_model("efficientnet_lite0", "none", seed=1)[0])
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "name": "sizes", "data": {"manifest": str(manifest), "test_size": 0.2, "folds": 2, "seed": 0},
        "preprocess": {"size": 32},
        "arms": [{"name": "small", "backbone": "resnet18", "weights": "none"},
                 {"name": "lite", "backbone": "efficientnet_lite0", "weights": {"file": str(standin)}, "size": 48,
                  "allow_untrained_weights": True}],
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "tensorboard": False}}))
    results = run_study(config, run_dir=tmp_path / "run")
    assert results.report is not None
    assert len([p for p in (tmp_path / "cache" / "images").iterdir() if p.is_dir()]) == 2  # a cache per size
    rundir = RunDir(tmp_path / "run")
    assert rundir.model_metadata(JobKey("lite", 0)).preprocess["size"] == 48
    assert rundir.model_metadata(JobKey("small", 0)).preprocess["size"] == 32
    for arm, size in (("small", 32), ("lite", 48)):
        package = bundle(tmp_path / "run", arm, tmp_path / arm)
        assert package.image_size == size and package.preprocess["size"] == size
        images = list(pd.read_csv(manifest)["image"][:3])
        summary = predict(package, [str(manifest.parent / i) for i in images], progress=False)
        assert len(summary.rows) == 3 and np.isfinite([r.probability for r in summary.rows]).all()
        exported = export_onnx(tmp_path / arm)
        assert exported["image_size"] == size and exported["max_diff"] < 1e-4


def test_the_plan_says_the_side_each_arm_runs_at():
    """The plan's input line names the side the arm feeds its network; the weights' own side only when they
    were trained at another one (a random start was trained at none)."""
    from thyro.models.adapter import InputSpec

    spec = InputSpec(input_size=224)
    assert spec.describe().endswith("; trained at 224 px")
    assert spec.describe(32, pretrained=False).endswith("; 32 px")
    assert spec.describe(224).endswith("; 224 px")
    assert spec.describe(64).endswith("; 64 px (the weights were trained at 224 px)")
