"""A path typed on the command line starts from the current directory, a path in a file from the file;
`thyro train --arm ARM@FRACTION` runs one data-efficiency job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thyro.cli import main
from thyro.config import load_study_config
from thyro.errors import ConfigError
from thyro.run import JobKey, RunDir


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from thyro.data.phantom import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort") / "phantom", n_patients=30, size=64, seed=4)


def _config(folder: Path, manifest: str, **data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"name": "paths", "data": {"manifest": manifest, "test_size": 0.2, "folds": 2, "seed": 1, **data},
           "preprocess": {"size": 32}, "arms": [{"name": "scratch", "weights": "none"},
                                                {"name": "pre", "weights": {"file": "w/pre.safetensors"}}],
           "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "tensorboard": False, "threads": 1}}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_set_paths_start_from_the_current_directory_file_paths_from_the_file(tmp_path, monkeypatch):
    config = _config(tmp_path / "configs", "../data/manifest.csv")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg, base = load_study_config(config)
    assert base == (tmp_path / "configs").resolve() and cfg.data.manifest == "../data/manifest.csv"
    cfg, base = load_study_config(config, {"data.manifest": "data/mine/manifest.csv",
                                           "arms.1.weights": {"file": "w.safetensors"},
                                           "data.external": [{"name": "b", "manifest": "b/manifest.csv"}],
                                           "data.splits": str(tmp_path / "abs.json"), "train.epochs": 3})
    assert cfg.data.manifest == str(work.resolve() / "data/mine/manifest.csv")
    assert cfg.arms[1].weights == {"file": str(work.resolve() / "w.safetensors")}
    assert cfg.data.external[0].manifest == str(work.resolve() / "b/manifest.csv")
    assert cfg.data.splits == str(tmp_path / "abs.json") and cfg.train.epochs == 3
    assert cfg.arms[0].weights == "none"
    cfg, _ = load_study_config(config, {"arms.1.weights": "imagenet"})
    assert cfg.arms[1].weights == "imagenet"  # a weight source's name is not a path


def test_the_command_line_reads_a_set_manifest_from_the_current_directory(tmp_path, cohort, monkeypatch, capsys):
    config = _config(tmp_path / "configs", "does-not-exist.csv")
    monkeypatch.chdir(cohort.parent.parent)
    rel = Path(cohort.parent.name) / cohort.name
    assert main(["study", str(config), "--dry-run", "--run-dir", str(tmp_path / "run"),
                 "--set", f"data.manifest={rel}", "--skip-missing"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "scratch:0" in out
    assert str(cohort.resolve()) in "".join(out.split())  # the manifest found from here, not from configs/


def test_train_runs_one_data_efficiency_job(tmp_path, cohort, monkeypatch, capsys):
    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(tmp_path, str(cohort), train_fractions=[0.5])
    run = tmp_path / "run"
    assert main(["-q", "train", str(config), "--arm", "scratch@0.5", "--fold", "1", "--run-dir", str(run)]) == 0
    rd = RunDir(run)
    assert rd.is_done(JobKey("scratch", 1, 0.5))
    assert not rd.is_done(JobKey("scratch", 1, 1.0)) and not rd.is_done(JobKey("scratch", 0, 0.5))
    capsys.readouterr()
    assert main(["-q", "train", str(config), "--arm", "scratch@0.3", "--fold", "1", "--run-dir", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "'0.3' is not one of the study's training fractions (data.train_fractions: 0.5, 1)" in err


def test_only_selects_by_job_name(tmp_path, cohort):
    from thyro.config import StudyConfig
    from thyro.train.study import parse_only

    cfg = StudyConfig.parse({"data": {"manifest": "m.csv", "folds": 3, "train_fractions": [0.25, 0.5]},
                             "arms": [{"name": "a"}, {"name": "b"}]})
    assert parse_only(["a@0.5:2"], cfg) == [JobKey("a", 2, 0.5)]
    assert parse_only(["b:1"], cfg) == [JobKey("b", 1, f) for f in (0.25, 0.5, 1.0)]
    assert parse_only(["a@0.25"], cfg) == [JobKey("a", k, 0.25) for k in range(3)]
    with pytest.raises(ConfigError, match="not one of the study's training fractions"):
        parse_only(["a@half:0"], cfg)
