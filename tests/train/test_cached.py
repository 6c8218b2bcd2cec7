"""Cached arms: the probe's features and the trunk's activations computed once per image and mirror, shared by
every fold and a rerun; the probe's predictions from the cache equal the network's; a cut is checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from thyro.errors import ConfigError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from thyro.data.phantom import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort") / "phantom", n_patients=36, size=64, seed=3)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    from thyro.models import build_model, save_model

    path = tmp_path_factory.mktemp("weights") / "standin.safetensors"
    save_model(path, build_model("resnet18", "none", seed=99)[0])
    return path


def _config(tmp_path, cohort, standin, arms):
    cfg = {"name": "cached", "data": {"manifest": str(cohort), "test_size": 0.2, "folds": 3, "seed": 1},
           "preprocess": {"size": 32}, "arms": arms,
           "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "tensorboard": False, "tta_flip": True}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cached_arms_compute_once_and_predict_as_the_network(tmp_path, cohort, standin, monkeypatch):
    from thyro.models import load_model
    from thyro.models.inference import predict_proba
    from thyro.run import JobKey, RunDir
    from thyro.train import features
    from thyro.train.study import Study

    computed = []
    real = features._compute
    monkeypatch.setattr(features, "_compute", lambda part, cache, *a, **k: computed.append(type(part).__name__)
                        or real(part, cache, *a, **k))
    weights = {"file": str(standin)}
    config = _config(tmp_path, cohort, standin, [
        {"name": "probe", "backbone": "resnet18", "weights": weights, "train_backbone": "cached",
         "allow_untrained_weights": True},  # a random stand-in for pretrained weights
        {"name": "trunk", "backbone": "resnet18", "weights": weights, "train_backbone": "cached_trunk",
         "allow_untrained_weights": True, "train": {"freeze_stages": 3}}])
    study = Study.from_file(config, tmp_path / "run")
    study.run(report=False)
    assert sorted(computed) == ["Trunk", "method"], "one feature pass and one trunk pass for 2 arms x 3 folds"
    rd = RunDir(tmp_path / "run")
    prep = study.prepare(study.plan())
    preds = rd.read_predictions()
    for fold in range(3):
        model = load_model(rd.job_files(JobKey("probe", fold)).model)
        rows = preds.rows(arm="probe", split="val", fold=fold)
        images = prep.dev.arrays(list(rows["image"])).images
        expected = predict_proba(model, images, tta_flip=True, batch_size=7)
        assert np.abs(rows["probability"].to_numpy() - expected).max() < 1e-6
        trunk = load_model(rd.job_files(JobKey("trunk", fold)).model).state_dict()
        start = load_model(standin).state_dict()
        assert torch.equal(trunk["backbone.layer2.0.conv1.weight"], start["backbone.layer2.0.conv1.weight"])
        assert not torch.equal(trunk["backbone.layer3.0.conv1.weight"], start["backbone.layer3.0.conv1.weight"])
        assert "L2 strength C=" in rd.read_job(JobKey("probe", fold)).selection
    Study.from_file(config, tmp_path / "again").run(only=["probe"], report=False)  # a rerun reads the cache
    assert len(computed) == 2


def test_a_cut_is_checked_and_refused_in_one_sentence(tmp_path, cohort, standin):
    from thyro.models import build_model
    from thyro.train.study import Study
    from thyro.train.trunk import find_cut

    model, _ = build_model("resnet18", "none")
    cut = find_cut(model, 1, 32)
    assert cut.trunk[-1] == "maxpool" and cut.rest[0] == "layer1.0"  # parameterless modules join the trunk
    original = model.backbone.forward_features
    model.backbone.forward_features = lambda x: 2 * original(x)  # no longer a plain sequence of stages
    with pytest.raises(ConfigError, match="not a plain sequence of its stages"):
        find_cut(model, 1, 32)
    with pytest.raises(ConfigError, match="1 to 5"):
        find_cut(build_model("resnet18", "none")[0], 6, 32)
    config = _config(tmp_path, cohort, standin, [{"name": "t", "weights": {"file": str(standin)},
                                                  "train_backbone": "cached_trunk", "allow_untrained_weights": True}])
    with pytest.raises(ConfigError, match="arm 't'.*freeze_stages"):
        Study.from_file(config, tmp_path / "run").plan()
