"""A new user's study on the 25-patient UD-TN sample, as the README leads them to run it (tiny settings: scratch
ResNet-18 at 64 px, 1 epoch, 3 folds, two arms): its test set holds 3 images of 2 patients and its folds 7-8
images, so no AUROC, interval, slope or difference on them may appear as a number anywhere it shows results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thyro.run import RunDir
from thyro.stats.support import MIN_CASES

pytestmark = [pytest.mark.slow, pytest.mark.shared]

CONFIG = """\
name: udtn-small
data: {manifest: data/manifest.csv, test_size: 0.12, folds: 3, seed: 2024}
preprocess: {size: 64}
arms:
  - {name: scratch, backbone: resnet18, weights: none}
  - {name: fast, backbone: resnet18, weights: none, lr: 0.003}
train: {epochs: 1, batch_size: 8, seed: 0, device: cpu, threads: 1, tensorboard: false, tta_flip: false}
"""
#: A figure as the outputs write one: 0.545, -0.053, 83.3%, 0.45 [0.12, 0.80].
NUMBER = re.compile(r"(?<![\w.#-])[-+]?\d+\.\d+")


def _thyro(*args: str, cwd: Path) -> str:
    env = {**os.environ, "COLUMNS": "240", "THYRO_CACHE_DIR": str(cwd / "cache")}
    proc = subprocess.run([sys.executable, "-m", "thyro", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, f"thyro {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def study(udtn_dir, tmp_path_factory):
    """The study, its report, the bundled arm, ``thyro compare`` and the report of a ``thyro predict`` file."""
    root = tmp_path_factory.mktemp("udtn")
    out = {"import": _thyro("data", "import", "folders", str(udtn_dir), "--out", "data", "--label-source",
                            "pathology", cwd=root)}
    (root / "small.yaml").write_text(CONFIG)
    out["study"] = _thyro("study", "small.yaml", "--run-dir", "run", cwd=root)
    out["bundle"] = _thyro("bundle", "run", "--arm", "scratch", "--out", "model", cwd=root)
    out["compare"] = _thyro("compare", "run/predictions.csv", "run/predictions.csv", "--arm-a", "scratch",
                            "--arm-b", "fast", cwd=root)
    out["predict"] = _thyro("predict", "model", "data/manifest.csv", "--out", "mine-pred.csv", cwd=root)
    out["report"] = _thyro("report", "mine-pred.csv", "--out", "pred-report", cwd=root)
    return root, out


def test_the_test_set_and_folds_are_too_small_and_said_to_be(study):
    root, out = study
    run = RunDir(root / "run")
    report = json.loads(run.report_path.with_suffix(".json").read_text())
    test = report["sets"]["test"]
    n_pos, n_neg = test["n_pos"], test["n"] - test["n_pos"]
    assert min(n_pos, n_neg) < MIN_CASES  # the split of the sample: 3 images of 2 patients
    why = f"not estimable: {n_pos} malignant, {n_neg} benign"
    assert test["not_estimable"].startswith(why)
    assert all(r["auroc"] is None and r["missing"].startswith(why) for r in test["table"])
    assert all(c["missing"] and "diff" not in c and c["p_holm"] is None for c in test["comparisons"])
    for part in ("operating", "calibration", "decision"):
        assert all(v.get("not_estimable") for v in test[part].values()), part
    assert all(r["val"] is None and r["test"] is None for r in report["folds"]["rows"])
    # the answer: from the pooled out-of-fold predictions (23 images), with why the test set gives none
    assert report["headline"]["set"] == "val" and report["headline"]["too_small"][0]["set"] == "test"
    html, md = run.report_path.read_text(), run.report_path.with_suffix(".md").read_text()
    section = html.split('<h2 id="set-test"', 1)[1].split("<h2", 1)[0]
    section = re.sub(r"<[^>]+>", " ", re.sub(r"<img[^>]*>", "", section))
    assert set(NUMBER.findall(section)) <= {"0.05"} and why in section  # alpha in a caption, nothing else
    md_test = md.split("## Held-out test set", 1)[1].split("\n## ", 1)[0]
    assert set(NUMBER.findall(md_test)) <= {"0.05"} and why in md_test
    assert f"is too small for an AUROC: {why}" in md.split("\n\n", 3)[2]  # in the answer itself
    # results: the study's summary of each arm
    results = run.read_results()
    assert all(a.test_auroc is None and a.oof_auroc is not None for a in results.arms.values())
    # the console: the study says why, and its table shows no test AUROC
    assert "The held-out test set is too small: not estimable" in " ".join(out["study"].split())
    table = out["study"].split("study udtn-small", 1)[1]
    assert all(line.split("│")[4].strip() == "-" for line in table.splitlines() if line.count("│") >= 5)


def test_the_model_package_and_card_say_not_estimable(study):
    root, out = study
    meta = json.loads((root / "model" / "model.json").read_text())
    test = meta["metrics"]["test"]
    assert "auroc" not in test and test["not_estimable"]["figure"] == "auroc"
    card = (root / "model" / "MODEL_CARD.md").read_text()
    line = next(x for x in card.splitlines() if x.startswith("**Held-out test set"))
    assert "AUROC not estimable: " in line and not NUMBER.search(line)
    assert "test AUROC not estimable" in " ".join(out["bundle"].split())


def test_compare_and_the_report_of_a_predict_file(study):
    root, out = study
    compare = " ".join(out["compare"].split())
    assert "not estimable: " in compare and "DeLong's variance" not in compare
    assert not NUMBER.search(compare.split("method:")[0].split("fold=mean")[1])
    for name in ("report.html", "report.md"):
        text = (root / "pred-report" / name).read_text()
        assert "held-out test" not in text.lower()
        assert "the images in mine-pred.csv (26 images" in text


def test_the_plan_review_warns_before_training(study):
    """What the plan can say before any training, from the manifest and the splits alone."""
    from thyro import metrics
    from thyro.data.manifest import read_manifest

    root, _ = study
    splits = RunDir(root / "run").read_splits()
    review = metrics.review_study(read_manifest(root / "data" / "manifest.csv").df, splits.test, splits.folds,
                                  comparisons=1)
    text = "\n".join(review.warnings)
    assert "3 of 3 folds hold fewer than 5 malignant or benign cases" in text
    assert "The held-out test set (1 malignant, 1 benign) is too small for an AUROC" in text
    assert "The pooled out-of-fold predictions (" in text  # 23 images: no difference detectable


def test_training_shows_no_per_fold_auroc_on_folds_too_small(study):
    root, out = study
    results = RunDir(root / "run").read_results()
    assert all(job.val_auroc is None for job in results.jobs.values())
    assert not re.search(r"val AUROC \d|out-of-fold AUROC \d", out["study"])
