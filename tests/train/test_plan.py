"""A study resolved before it runs: ``--dry-run`` and the real run refuse the same configurations in the same
words, before anything is trained or written; what the plan holds; its digest guards a run directory."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from thyro.errors import ThyroError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from thyro.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("plan")
    dev = generate_cohort(root / "dev", n_patients=24, images_per_patient=(1, 1), size=64, seed=7)
    ext = generate_cohort(root / "ext", n_patients=10, images_per_patient=(1, 1), size=64, seed=8)
    return dev, ext


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    from thyro.models import create_backbone

    path = tmp_path_factory.mktemp("w") / "r18.pth"
    torch.save(create_backbone("resnet18", seed=0).state_dict(), path)
    return path


def _config(tmp_path: Path, dev: Path, arms: list[dict] | None = None, **extra) -> Path:
    cfg = {"name": "plan", "data": {"manifest": str(dev), "folds": 2, "test_size": 0.2, "seed": 0},
           "preprocess": {"size": 32}, "arms": arms or [{"name": "scratch", "weights": "none"}],
           "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "tensorboard": False}}
    for key, value in extra.items():
        section, _, name = key.partition("__")
        cfg.setdefault(section, {})[name] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _manifest_variant(src: Path, out: Path, **change) -> Path:
    df = pd.read_csv(src)
    df["image"] = [str((src.parent / i).resolve()) for i in df["image"]]
    for column, value in change.items():
        df[column] = value(df) if callable(value) else value
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out


def _nan_file(tmp, r18):
    sd = torch.load(r18, weights_only=True)
    sd["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, tmp / "nan.pth")
    return tmp / "nan.pth"


def _truncated(tmp, r18):
    data = Path(r18).read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])
    return tmp / "cut.pth"


def _hostile(tmp, r18):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp / "ran"), "w"))

    (tmp / "evil.pth").write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    return tmp / "evil.pth"


def _case(name, tmp, dev, ext, r18):
    """(config path, run dir) of one configuration that must be refused."""
    run = tmp / "run"
    if name == "missing weights":
        return _config(tmp, dev, [{"name": "pre", "weights": {"file": str(tmp / "absent.pth")}}]), run
    if name == "weights of another architecture":
        return _config(tmp, dev, [{"name": "pre", "backbone": "resnet50", "weights": {"file": str(r18)}}]), run
    if name in ("NaN weights", "truncated weights", "hostile pickle"):
        make = {"NaN weights": _nan_file, "truncated weights": _truncated, "hostile pickle": _hostile}[name]
        return _config(tmp, dev, [{"name": "pre", "weights": {"file": str(make(tmp, r18))}}]), run
    if name == "too small for the architecture":
        return _config(tmp, dev, [{"name": "inc", "backbone": "inception_v3", "weights": "none"}]), run
    if name == "another study in the run directory":
        from thyro.config import StudyConfig
        from thyro.run import RunDir

        other = yaml.safe_load(_config(tmp, dev).read_text())
        other["train"]["lr"] = 0.5
        RunDir(run).write_record(StudyConfig.parse(other), tmp)
        return _config(tmp, dev), run
    if name == "external set without labels":
        bad = _manifest_variant(ext, tmp / "ext-nolabel" / "manifest.csv", label="")
        return _config(tmp, dev, data__external=[{"name": "siteb", "manifest": str(bad)}]), run
    if name == "external set of one class":
        bad = _manifest_variant(ext, tmp / "ext-one" / "manifest.csv", label=1)
        return _config(tmp, dev, data__external=[{"name": "siteb", "manifest": str(bad)}]), run
    if name == "external set sharing images":
        return _config(tmp, dev, data__external=[{"name": "siteb", "manifest": str(dev)}]), run
    if name == "image missing":
        bad = _manifest_variant(dev, tmp / "dev-missing" / "manifest.csv",
                                image=lambda df: [*df["image"][:-1], str(tmp / "gone.png")])
        return _config(tmp, bad), run
    if name == "tracking store not a folder":
        (tmp / "afile").write_text("x")
        return _config(tmp, dev, train__tracking="mlflow"), tmp / "afile" / "run"
    if name == "inner selection impossible":
        return _config(tmp, dev, train__selection="inner", train__inner_fraction=0.01), run
    raise AssertionError(name)


CASES = ["missing weights", "weights of another architecture", "NaN weights", "truncated weights", "hostile pickle",
         "too small for the architecture", "another study in the run directory", "external set without labels",
         "external set of one class", "external set sharing images", "image missing",
         "tracking store not a folder", "inner selection impossible"]


def _state(run: Path) -> dict:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")} if run.is_dir() else {}


@pytest.mark.parametrize("name", CASES)
def test_dry_run_and_real_run_refuse_alike(name, cohort, r18_file, tmp_path, monkeypatch):
    from thyro.train.study import plan_study, run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    dev, ext = cohort
    config, run = _case(name, tmp_path, dev, ext, r18_file)
    before = _state(run)
    with pytest.raises(ThyroError) as dry:
        plan_study(config, run_dir=run)
    with pytest.raises(ThyroError) as real:
        run_study(config, run_dir=run, report=False)
    assert type(dry.value) is type(real.value) and str(dry.value) == str(real.value)
    assert _state(run) == before, "a refused study wrote to its run directory"
    assert not (tmp_path / "ran").exists()


def test_every_problem_at_once(cohort, r18_file, tmp_path, monkeypatch):
    from thyro.train.study import plan_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    dev, ext = cohort
    bad_ext = _manifest_variant(ext, tmp_path / "e" / "manifest.csv", label=0)
    config = _config(tmp_path, dev, [{"name": "a", "weights": {"file": str(tmp_path / "absent.pth")}},
                                     {"name": "b", "backbone": "resnet50", "weights": {"file": str(r18_file)}}],
                     data__external=[{"name": "siteb", "manifest": str(bad_ext)}])
    with pytest.raises(ThyroError) as exc:
        plan_study(config, run_dir=tmp_path / "run")
    text = str(exc.value)
    assert text.startswith("3 problems") and "absent.pth" in text and "resnet50" in text and "siteb" in text


def test_plan_holds_resolved_arms_and_guards_the_run_directory(cohort, r18_file, tmp_path, monkeypatch):
    from thyro.train.plan import make_plan
    from thyro.train.study import Study, plan_study, run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    dev, _ = cohort
    weights = tmp_path / "w.pth"
    weights.write_bytes(r18_file.read_bytes())
    config = _config(tmp_path, dev, [{"name": "scratch", "weights": "none"},
                                     {"name": "pre", "weights": {"file": "w.pth"},  # relative to the config
                                      "allow_untrained_weights": True}])  # a random stand-in
    study = Study.from_file(config, tmp_path / "run")
    plan = make_plan(study.cfg, study.base_dir, study.run_dir, estimate=True)
    pre = plan.arm("pre")
    assert pre.source.kind == "file" and pre.weights_file == weights.resolve() and pre.coverage == (100, 100)
    assert pre.input_spec.mean == (0.485, 0.456, 0.406) and pre.images_per_second > 0
    assert [j.name for j in plan.jobs] == ["scratch:0", "scratch:1", "pre:0", "pre:1"] and not plan.done
    assert plan.seconds_estimate > 0 and not (tmp_path / "run").exists()
    run_study(config, run_dir=tmp_path / "run", only=["pre:0"], report=False)
    # the weight file changes under a started run directory: refused, for the dry run and the real run alike
    sd = torch.load(weights, weights_only=True)
    sd["conv1.weight"] += 1
    torch.save(sd, weights)
    with pytest.raises(ThyroError, match="other weights for arm.*pre"):
        plan_study(config, run_dir=tmp_path / "run")
    with pytest.raises(ThyroError, match="other weights for arm.*pre"):
        run_study(config, run_dir=tmp_path / "run", report=False)


def test_only_accepts_a_training_fraction(cohort, tmp_path):
    from thyro.config import StudyConfig
    from thyro.errors import ConfigError
    from thyro.train.plan import parse_only

    cfg = StudyConfig.parse({"data": {"manifest": "m.csv", "train_fractions": [0.5]},
                             "arms": [{"name": "scratch"}]})
    assert [j.name for j in parse_only(["scratch@0.5:1"], cfg)] == ["scratch@0.5:1"]
    assert [j.name for j in parse_only(["scratch@50%"], cfg)] == [f"scratch@0.5:{k}" for k in range(5)]
    with pytest.raises(ConfigError, match="not one of the study's"):
        parse_only(["scratch@0.3:1"], cfg)
    # a Python caller reads the parameter it typed; the command line names its own option
    with pytest.raises(ConfigError, match=r"^only='scratch:9': the fold must be 0\.\.4$"):
        parse_only(["scratch:9"], cfg)
    with pytest.raises(ConfigError, match=r"^--only 'scratch:9': the fold must be 0\.\.4$"):
        parse_only(["scratch:9"], cfg, option="--only")


def test_time_estimate_counts_the_tuning_trials():
    """Each setting of ``train.tune`` trains on the inner split's fit part before the job trains: the estimate
    counts those passes (it once counted the job's own epochs only)."""
    from types import SimpleNamespace

    from thyro.config import TrainConfig
    from thyro.train.arms import FineTune
    from thyro.train.estimate import estimate_seconds, tuning_epochs

    plain = TrainConfig(epochs=10)
    tuned = TrainConfig(epochs=10, inner_fraction=0.2, tune={"epochs": [5, 20]})
    assert tuning_epochs(10, plain) == 0
    assert tuning_epochs(10, tuned) == pytest.approx((5 + 20) * 0.8)
    assert tuning_epochs(10, TrainConfig(epochs=10, inner_fraction=0.25, tune={"lr": [1e-3, 1e-4]})) == 15

    def plan(train):
        arm = SimpleNamespace(images_per_second=10.0, fitter=FineTune("all"), train=train)
        return SimpleNamespace(todo=[SimpleNamespace(arm="a")] * 2, arm=lambda name: arm, train_ids=lambda job: range(100))

    assert estimate_seconds(plan(plain)) == pytest.approx(2 * 10 * 100 / 10)
    assert estimate_seconds(plan(tuned)) == pytest.approx(2 * (10 + 20) * 100 / 10)
