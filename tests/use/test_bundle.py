"""Model package: bundle from a run directory, model card, checks on load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from thyro.errors import ModelPackageError
from thyro.use.bundle import FORMAT_VERSION, bundle, load_package

from .conftest import ARM, N_FOLDS, SIZE


def test_bundle_writes_a_complete_package(model_dir, run_dir):
    pkg = load_package(model_dir)
    assert pkg.meta["format_version"] == FORMAT_VERSION
    assert pkg.image_size == SIZE
    assert pkg.meta["arch"] == "resnet18"
    assert pkg.meta["input_spec"]["channels"] == 3
    assert len(pkg.model_files) == N_FOLDS and all(p.is_file() for p in pkg.model_files)
    # the full preprocessing, defaults included, so it can be reproduced exactly
    assert pkg.preprocess["size"] == SIZE and pkg.preprocess["roi_crop"] is True
    assert "remove_frame" in pkg.preprocess
    assert (model_dir / "data.json").is_file() and (model_dir / "MODEL_CARD.md").is_file()
    assert json.loads((model_dir / "data.json").read_text())["images_total"] == 66


def test_operating_points_and_test_metrics_come_from_the_run(package, run_dir):
    from thyro import metrics
    from thyro.run import RunDir
    from thyro.stats.operating import choose_threshold

    preds = RunDir(run_dir).read_predictions()
    oof = preds.rows(arm=ARM, split="val")
    for name, rule in {"youden": "youden", "sens90": "sens@0.90", "spec90": "spec@0.90"}.items():
        assert package.meta["operating_points"][name]["threshold"] == pytest.approx(
            choose_threshold(oof.label.to_numpy(), oof.probability.to_numpy(), rule))
    assert package.meta["operating_points"]["sens90"]["sensitivity"]["value"] >= 0.9
    test = preds.rows(arm=ARM, split="test", ensemble=True)
    m = package.meta["metrics"]["test"]
    assert m["auroc"] == pytest.approx(roc_auc_score(test.label, test.probability))
    assert m["n"] == len(test) == 18 and m["lower"] <= m["auroc"] <= m["upper"]
    # the very numbers thyro.metrics gives for these rows (the report's function)
    assert m == {**metrics.auroc_summary(test), "operating_points": m["operating_points"]}
    # out-of-fold AUROC: 2 images per patient, so the cluster bootstrap is used
    assert package.meta["metrics"]["val"]["method"] == "cluster-bootstrap"
    assert package.operating_point() == ("youden", package.meta["operating_points"]["youden"]["threshold"])


def test_model_card_states_use_provenance_metrics_limitations(model_dir, package):
    card = (model_dir / "MODEL_CARD.md").read_text()
    for heading in ("## Intended use", "## Training data", "## Labels and their provenance", "## Metrics",
                    "## Limitations", "## Operating points"[1:]):
        assert heading in card
    # the run recorded TI-RADS-derived labels: the card says what the model learnt
    assert "TI-RADS ≥ 4c probability" in card and "not pathology" in card
    # a title and a training-data section that read as prose, not as a dump of keys
    title = card.splitlines()[0]
    assert title.endswith("of a thyroid nodule on ultrasound (resnet18, trained from random initialisation)"), title
    data = card.split("## Training data")[1].split("##")[0]
    assert "- 66 images: 24 TI-RADS ≥ 4c and 36 not TI-RADS ≥ 4c images." in data, data
    assert "labels:" not in data and "class balance" not in data and "_" not in data.replace("data.json", "")
    assert package.meta["labels"]["positive"] == "TI-RADS ≥ 4c"
    auc = package.meta["metrics"]["test"]["auroc"]
    assert f"AUROC {auc:.3f}" in card and "95% CI" in card
    assert "Not for" in card


def test_label_provenance_can_be_given(run_dir, tmp_path):
    pkg = bundle(run_dir, ARM, tmp_path / "m", label_source="cytology")
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "Cytology (fine-needle aspiration" in card and "malignancy probability" in card
    assert pkg.meta["labels"]["source"] == "cytology" and pkg.label_meaning.positive == "malignant"
    with pytest.raises(Exception, match="label_source 'histology' is not one of"):
        bundle(run_dir, ARM, tmp_path / "n", label_source="histology")


def test_bundle_refuses_bad_runs(run_dir, tmp_path):
    with pytest.raises(ModelPackageError, match="no arm 'nope'.*scratch"):
        bundle(run_dir, "nope", tmp_path / "a")
    with pytest.raises(ModelPackageError, match="status 'skipped'"):
        bundle(run_dir, "imagenet", tmp_path / "b")
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / "predictions.csv").unlink()
    with pytest.raises(ModelPackageError, match="predictions.csv"):
        bundle(broken, ARM, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    with pytest.raises(ModelPackageError, match="not empty"):
        bundle(run_dir, ARM, run_dir)


@pytest.fixture
def pkg_copy(model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def test_missing_files_are_named(pkg_copy):
    (pkg_copy / "models" / "fold1.safetensors").unlink()
    (pkg_copy / "data.json").unlink()
    with pytest.raises(ModelPackageError) as exc:
        load_package(pkg_copy)
    assert "models/fold1.safetensors" in str(exc.value) and "data.json" in str(exc.value)
    (pkg_copy / "model.json").unlink()
    with pytest.raises(ModelPackageError, match="model.json is missing"):
        load_package(pkg_copy)


def test_other_format_version_is_refused(pkg_copy):
    meta = json.loads((pkg_copy / "model.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (pkg_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match=f"version {FORMAT_VERSION + 1}.*re-bundle|Re-bundle"):
        load_package(pkg_copy)


def test_changed_model_file_is_detected(pkg_copy):
    f = pkg_copy / "models" / "fold0.safetensors"
    data = bytearray(f.read_bytes())
    data[-10:] = b"\x00" * 10
    f.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="SHA-256"):
        load_package(pkg_copy)


def test_not_a_package(tmp_path):
    with pytest.raises(ModelPackageError, match="not found"):
        load_package(tmp_path / "absent")
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelPackageError, match="not a thyro model package"):
        load_package(tmp_path)


def test_loaded_models_match_the_run_models(package, run_dir):
    import torch

    from thyro.models import load_model

    x = torch.rand(2, 1, SIZE, SIZE)
    models = package.load_torch_models()
    for k, m in enumerate(models):
        ref = load_model(run_dir / "jobs" / ARM / f"fold{k}" / "model.safetensors")
        with torch.inference_mode():
            assert np.allclose(m(x).numpy(), ref(x).numpy())


def test_cli_bundle(run_dir, tmp_path):
    from thyro.cli import main

    assert main(["-q", "bundle", str(run_dir), "--arm", ARM, "--out", str(tmp_path / "m"), "--point", "sens90"]) == 0
    assert load_package(tmp_path / "m").operating_point()[0] == "sens90"
    assert main(["-q", "bundle", str(run_dir), "--arm", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["-q", "bundle", str(run_dir), "--arm", ARM, "--out", str(tmp_path / "y"), "--point", "bogus"]) == 2


def test_write_package_from_model_files_alone(run_dir, tmp_path):
    """A package for a model trained outside a study: minimal inputs still give a loadable package and card."""
    from thyro.use.bundle import write_package

    files = [run_dir / "jobs" / ARM / "fold0" / "model.safetensors"]
    pkg = write_package(tmp_path / "m", model_files=files, preprocess={"size": SIZE},
                        operating={"youden": {"threshold": 0.4}})
    assert pkg.operating_point() == ("youden", 0.4) and len(pkg.model_files) == 1
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "| youden | 0.4000 |" in card and "Not recorded" in card
    with pytest.raises(ModelPackageError, match="not empty"):
        write_package(tmp_path / "m", model_files=files, preprocess={"size": SIZE}, operating={"youden": {"threshold": 0.4}})
    pkg = write_package(tmp_path / "m", model_files=files, preprocess={"size": SIZE},
                        operating={"youden": {"threshold": 0.3}}, overwrite=True)
    assert pkg.operating_point()[1] == 0.3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_bundle_takes_tta_from_the_study_record(run_dir, tmp_path):
    """Flip test-time augmentation and preprocessing come from the study record the run directory holds."""
    from thyro.run import RunDir

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    record = RunDir(run).read_record()
    cfg = record.config.model_copy(update={"train": record.config.train.model_copy(update={"tta_flip": True})})
    RunDir(run).write_record(cfg, record.base_dir)
    pkg = bundle(run, ARM, tmp_path / "m")
    assert pkg.tta_flip and pkg.image_size == SIZE and pkg.preprocess["roi_crop"] is True


def test_without_an_arm_the_best_out_of_fold_arm_is_packaged(run_dir, tmp_path, caplog):
    """The default arm is chosen by cross-validation: the finished arm with the highest out-of-fold AUROC; a
    skipped arm (weights missing) is never chosen, and with no AUROC to choose by the caller is asked to name one."""
    from thyro.cli import main
    from thyro.run import ArmResult, Results, RunDir

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    rd = RunDir(run)
    results = rd.read_results()
    rd.write_results(results.model_copy(update={"arms": {
        ARM: ArmResult(status="done", backbone="resnet18", weights="none", oof_auroc=0.71, test_auroc=0.60),
        "imagenet": ArmResult(status="skipped", reason="weights not found", oof_auroc=None)}}))
    with caplog.at_level("INFO", logger="thyro.use.bundle"):
        pkg = bundle(run, None, tmp_path / "m")
    assert pkg.meta["source"]["arm"] == ARM
    assert f"packaging arm {ARM}" in caplog.text and "0.710" in caplog.text
    assert main(["-q", "bundle", str(run), "--out", str(tmp_path / "m2")]) == 0
    assert load_package(tmp_path / "m2").meta["source"]["arm"] == ARM
    rd.write_results(Results(arms={ARM: ArmResult(status="done", backbone="resnet18", weights="none")}))
    with pytest.raises(ModelPackageError, match=r"name the arm to package \(arm=\.\.\., --arm\)"):
        bundle(run, None, tmp_path / "m3")
