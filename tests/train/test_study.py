"""The study runner end to end on a tiny phantom: predictions, results, resume, --only, missing weights."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from thyro.cli import main
from thyro.errors import ConfigError, WeightsError
from thyro.stats.support import check

EPOCHS = 2


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from thyro.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    return generate_cohort(root / "phantom", n_patients=36, size=64, seed=3)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A seeded random ResNet-18 saved by thyro, standing in for a pretrained backbone."""
    from thyro.models import build_model, save_model

    path = tmp_path_factory.mktemp("weights") / "standin.safetensors"
    model, _ = build_model("resnet18", "none", seed=99)
    save_model(path, model)
    return path


def write_config(tmp_path, cohort, standin, **train):
    cfg = {
        "name": "tiny",
        "data": {"manifest": str(cohort), "test_size": 0.2, "folds": 3, "seed": 1},
        "preprocess": {"size": 32, "remove_frame": True},
        "arms": [{"name": "scratch", "weights": "none"},
                 {"name": "pre", "weights": {"file": str(standin)}, "allow_untrained_weights": True}],
        "train": {"epochs": EPOCHS, "batch_size": 16, "device": "cpu", "tensorboard": False, "selection": "last",
                  "augment": {"enabled": True}, **train},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_study_end_to_end_and_resume(tmp_path, cohort, standin, monkeypatch):
    from thyro.run import PRED_COLUMNS, JobKey, RunDir
    from thyro.train.study import run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    config = write_config(tmp_path, cohort, standin)
    run = tmp_path / "run"
    rd = RunDir(run)
    released = []  # the memory a finished job freed goes back to the system before the next job
    monkeypatch.setattr("thyro.train.study.release_memory", lambda: released.append(1))
    # one job alone, as a scheduler would run it
    first = run_study(config, run_dir=run, only=["scratch:0"], report=False)
    assert first.arms["scratch"].status == "incomplete" and first.arms["scratch"].folds_done == [0]
    done0 = rd.job_files(JobKey("scratch", 0)).done.stat().st_mtime_ns
    assert len(released) == 1

    results = run_study(config, run_dir=run, report=False)
    assert len(released) == 6  # 2 arms x 3 folds, each trained once
    assert rd.job_files(JobKey("scratch", 0)).done.stat().st_mtime_ns == done0, "a finished job was retrained"
    assert {a.status for a in results.arms.values()} == {"done"}
    assert results.versions["torch"] and results.config
    assert results.labels.source == "synthetic"
    assert tuple(pd.read_csv(rd.predictions_path, nrows=1).columns) == PRED_COLUMNS
    preds = rd.read_predictions()
    splits = rd.read_splits()
    for arm in ("scratch", "pre"):
        val = preds.rows(arm=arm, split="val")
        # out-of-fold: every development image exactly once, from the fold that held it out
        assert sorted(val["image"]) == sorted(splits.dev_ids())
        for k in range(3):
            assert set(val[val["fold"] == k]["image"]) == set(splits.val_ids(k))
            # the job's record and the console give the AUROC of exactly these rows (with the same inference),
            # or none where the fold holds too few cases of a class to support one (thyro.stats.support)
            part = val[val.fold == k]
            recorded = rd.read_job(JobKey(arm, k)).val_auroc
            if check("auroc", part.label.to_numpy(), part.group.to_numpy()) is None:
                assert recorded == pytest.approx(roc_auc_score(part.label, part.probability), abs=1e-12)
            else:
                assert recorded is None
        test = preds.rows(arm=arm, split="test")
        assert set(test["fold"].dropna()) == {0, 1, 2} and test["ensemble"].sum() == len(splits.test)
        mean = preds.rows(arm=arm, split="test", ensemble=True).set_index("image")["probability"]
        per_fold = test[~test.ensemble].groupby("image")["probability"].mean()
        pd.testing.assert_series_equal(mean.sort_index(), per_fold.sort_index(), check_names=False)
        assert sorted(mean.index) == sorted(splits.test)
    assert preds.df["probability"].between(0, 1).all()
    data = rd.read_data()
    assert data.images_labelled == len(splits.dev_ids()) + len(splits.test)
    log = pd.read_csv(rd.job_files(JobKey("pre", 1)).log)
    assert len(log) == EPOCHS and {"val_auroc", "train_loss"} <= set(log.columns)
    # the log's validation AUROC at the chosen epoch is the job's out-of-fold AUROC (one definition)
    rec = rd.read_job(JobKey("pre", 1))
    shown = log.loc[log.epoch == rec.best_epoch, "val_auroc"].item()
    assert (np.isnan(shown) and rec.val_auroc is None) or shown == pytest.approx(rec.val_auroc, abs=1e-6)
    files = rd.job_files(JobKey("pre", 1))
    assert not files.last.exists() and files.model.exists() and not files.claim.exists()


def test_missing_weights_stop_before_training(tmp_path, cohort, standin, monkeypatch):
    from thyro.train.study import run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    config = write_config(tmp_path, cohort, tmp_path / "absent.safetensors")
    with pytest.raises(WeightsError, match="absent.safetensors"):
        run_study(config, run_dir=tmp_path / "run", report=False)
    assert not (tmp_path / "run" / "jobs").exists()
    results = run_study(config, run_dir=tmp_path / "run", report=False, skip_missing=True,
                        overrides={"train.epochs": 1})
    assert results.arms["pre"].status == "skipped" and "absent.safetensors" in results.arms["pre"].reason
    assert results.arms["scratch"].status == "done"


def test_config_errors_name_the_key(tmp_path, cohort, standin):
    from thyro.train.study import run_study

    config = write_config(tmp_path, cohort, standin, epochz=3)
    with pytest.raises(ConfigError, match="epochz.*allowed.*epochs"):
        run_study(config, run_dir=tmp_path / "run")
    bad = yaml.safe_load(config.read_text())
    bad["train"].pop("epochz")
    bad["arms"][0]["backbone"] = "resnet19"
    config.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="resnet19.*resnet18"):
        run_study(config, run_dir=tmp_path / "run")
    # the CLI prints the message without a traceback and exits 2
    assert main(["study", str(config), "--run-dir", str(tmp_path / "run")]) == 2


def test_run_dir_of_another_study_is_refused(tmp_path, cohort, standin, monkeypatch):
    from thyro.train.study import run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    config = write_config(tmp_path, cohort, standin)
    run_study(config, run_dir=tmp_path / "run", only=["scratch:0"], report=False, overrides={"train.epochs": 1})
    with pytest.raises(ConfigError, match="different study"):
        run_study(config, run_dir=tmp_path / "run", only=["scratch:0"], report=False,
                  overrides={"train.lr": 0.5})


def test_repository_configs_are_valid():
    """configs/*.yaml parse; configs/demo.yaml is the configuration `thyro demo` runs."""
    from pathlib import Path

    from thyro.config import StudyConfig, load_study_config
    from thyro.train.demo import DEMO_STUDY

    configs = Path(__file__).resolve().parents[2] / "configs"
    for name in ("jacr2024", "ddti", "demo"):
        cfg, _ = load_study_config(configs / f"{name}.yaml")
        assert cfg.data.folds == 5 and cfg.arms
    jacr, _ = load_study_config(configs / "jacr2024.yaml")
    assert [a.name for a in jacr.arms] == ["scratch", "imagenet", "radimagenet"]
    assert {a.backbone for a in jacr.arms} == {"resnet18"} and jacr.preprocess.size == 224
    demo, _ = load_study_config(configs / "demo.yaml")
    assert demo == StudyConfig.parse(DEMO_STUDY)


def test_mlflow_tracking_writes_runs_to_a_local_store(tmp_path, cohort, standin, monkeypatch):
    """train.tracking: mlflow logs each job (per-epoch metrics) and the study (AUROCs, the report) locally."""
    from mlflow.tracking import MlflowClient

    from thyro.run import JobKey, RunDir
    from thyro.train.study import run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = write_config(tmp_path, cohort, standin, tracking="mlflow", epochs=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["arms"] = cfg["arms"][:1]
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    results = run_study(config, run_dir=run, report=True)
    store = RunDir(run).mlflow_dir
    assert store.is_dir()
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"scratch:0", "scratch:1", "scratch:2", "study"}
    job = runs["scratch:1"]
    assert job.data.params["train.epochs"] == "2" and job.data.params["arm.weights"] == "none"
    assert [m.step for m in client.get_metric_history(job.info.run_id, "train_loss")] == [1, 2]
    # a per-fold AUROC is logged where the fold supports one (as log.csv and the job's record show it)
    recorded = RunDir(run).read_job(JobKey("scratch", 1)).val_auroc
    history = client.get_metric_history(job.info.run_id, "val_auroc")
    assert [m.step for m in history] == ([1, 2] if recorded is not None else [])
    assert job.data.metrics.get("oof_auroc") == (pytest.approx(recorded) if recorded is not None else None)
    study = runs["study"]
    # what the study logs is what the results show: an AUROC where the set supports one, else nothing
    for key in ("oof_auroc", "test_auroc"):
        value = getattr(results.arms["scratch"], key)
        assert (study.data.metrics.get(f"scratch.{key}") is None if value is None
                else study.data.metrics[f"scratch.{key}"] == pytest.approx(value))
    artifacts = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"report.html", "predictions.csv"} <= artifacts
