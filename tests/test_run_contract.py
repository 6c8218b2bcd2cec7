"""The run directory's contract: one owner writes it, every reader shows the same numbers.

A run directory is written through :mod:`thyro.run`; the report, the model package (and its card),
``thyro compare`` and the web app's model information must then give bitwise identical AUROCs and
confidence intervals for every arm and every set, and no module but the owner names the files.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thyro.run import CONFIG, DATA, FRACTIONS, JOBS, PLAN, PREDICTIONS, REPORT, RESULTS, SPLITS

SRC = Path(__file__).resolve().parents[1] / "src" / "thyro"
ARMS = {"scratch": "none", "domain": {"file": "backbone.safetensors"}}
FOLDS = 2


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Two finished arms, repeated patients, a test set and an external set, fold models included."""
    from thyro.config import StudyConfig
    from thyro.data.manifest import LabelMeaning
    from thyro.models import build_model
    from thyro.run import ArmResult, DataSummary, JobKey, JobRecord, Results, RunDir, predictions_frame

    root = tmp_path_factory.mktemp("contract") / "run"
    run = RunDir(root)
    cfg = StudyConfig.parse({"name": "contract", "data": {"manifest": "m.csv", "folds": FOLDS},
                             "preprocess": {"size": 32},
                             "arms": [{"name": a, "weights": w} for a, w in ARMS.items()]})
    run.write_record(cfg, root.parent)
    rng = np.random.default_rng(5)
    meta, rows = {}, []
    sets = {"val": 60, "test": 40, "site-b": 50}
    for split, n in sets.items():
        for i in range(n):
            patient = f"{split}-p{i // 2}"  # two images per patient: the cluster bootstrap is used
            y = int(rng.uniform() < 0.4)
            meta[f"{split}/{i}.png"] = {"patient_id": patient, "group": patient, "label": y}
    for a, sep in zip(ARMS, (0.6, 1.2)):
        for image, m in meta.items():
            split = image.split("/")[0]
            score = lambda: float(1 / (1 + np.exp(-(sep * (m["label"] - 0.5) * 2 + rng.normal()))))  # noqa: E731
            if split == "val":
                rows.append({"image": image, "arm": a, "train_fraction": 1.0, "split": "val",
                             "fold": int(image.split("/")[1][:-4]) % FOLDS, "ensemble": False, "probability": score()})
                continue
            per_fold = [score() for _ in range(FOLDS)]
            rows += [{"image": image, "arm": a, "train_fraction": 1.0, "split": split, "fold": k, "ensemble": False,
                      "probability": p} for k, p in enumerate(per_fold)]
            rows.append({"image": image, "arm": a, "train_fraction": 1.0, "split": split, "fold": None,
                         "ensemble": True, "probability": float(np.mean(per_fold))})
        for k in range(FOLDS):
            model, _ = build_model("resnet18", "none", seed=k)
            rec = JobRecord(arm=a, fold=k, fraction=1.0, best_epoch=1, val_auroc=None, epochs_run=1,
                            stopped_early=False, seconds=0.1, train_images_per_second=1.0)
            run.finish_job(JobKey(a, k), rec, pd.DataFrame([r for r in rows if r["arm"] == a and r["fold"] == k]),
                           model.eval())
    run.write_predictions(predictions_frame(rows, pd.DataFrame.from_dict(meta, orient="index"), "pathology"))
    run.write_results(Results(study="contract", arms={a: ArmResult(status="done") for a in ARMS},
                              labels=LabelMeaning("pathology")))
    run.write_data(DataSummary(images_total=len(meta)))
    return root


def _ci(d: dict) -> tuple:
    return d["auroc"], d["lower"], d["upper"], d["method"], d["n"]


def test_report_bundle_compare_and_serve_agree_bitwise(run_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from thyro.cli import main
    from thyro.report import build_report
    from thyro.run import RunDir
    from thyro.use.bundle import bundle
    from thyro.use.serve import create_app

    html, _ = build_report(run_dir, tmp_path / "report")
    report = json.loads(html.with_suffix(".json").read_text())
    assert set(report["sets"]) == {"test", "site-b", "val"}  # val: the pooled out-of-fold predictions
    predictions = str(RunDir(run_dir).predictions_path)
    for arm, other in (("scratch", "domain"), ("domain", "scratch")):
        pkg = bundle(run_dir, arm, tmp_path / f"pkg-{arm}")
        card = (pkg.root / "MODEL_CARD.md").read_text()
        health = TestClient(create_app(pkg.root)).get("/health").json()
        for split in ("test", "site-b"):
            expected = _ci(report["sets"][split]["auroc"][arm])
            assert expected[3] == "cluster-bootstrap"
            assert _ci(pkg.meta["metrics"][split]) == expected, (arm, split, "model package")
            assert _ci(health["metrics"][split]) == expected, (arm, split, "web app")
            assert f"AUROC {expected[0]:.3f} [95% CI {expected[1]:.3f} to {expected[2]:.3f}]" in card
            capsys.readouterr()
            assert main(["compare", predictions, predictions, "--arm-a", arm, "--arm-b", other, "--split", split,
                         "--json"]) == 0
            cmp = json.loads(capsys.readouterr().out)
            assert _ci(cmp["a"]) == expected, (arm, split, "thyro compare")
            # given the run directory, compare reads the same run
            assert main(["compare", str(run_dir), str(run_dir), "--arm-a", arm, "--arm-b", other, "--split", split,
                         "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["comparison"] == cmp["comparison"]
            # the paired difference is the report's too
            c = next(c for c in report["sets"][split]["comparisons"] if {c["a"], c["b"]} == {arm, other})
            sign = 1 if c["a"] == arm else -1
            assert sign * c["diff"] == cmp["comparison"]["diff"] and c["p_value"] == cmp["comparison"]["p_value"]
        oof = report["oof"][arm]
        assert _ci(pkg.meta["metrics"]["val"]) == _ci(oof) == _ci(report["sets"]["val"]["auroc"][arm])
        # pooled out of fold, thyro compare gives the report's comparison too
        capsys.readouterr()
        assert main(["compare", predictions, predictions, "--arm-a", arm, "--arm-b", other, "--split", "oof",
                     "--json"]) == 0
        cmp = json.loads(capsys.readouterr().out)
        assert _ci(cmp["a"]) == _ci(oof) and cmp["fold"] == "pooled"
        c = next(c for c in report["sets"]["val"]["comparisons"] if {c["a"], c["b"]} == {arm, other})
        assert (1 if c["a"] == arm else -1) * c["diff"] == cmp["comparison"]["diff"]
        assert c["p_value"] == cmp["comparison"]["p_value"]


#: Modules that own another folder format and name its files: the pretraining work folder, and the Hugging
#: Face cache layout.  (The model package keeps the run's data summary under the run's name for it.)
OTHER_FORMATS = {
    "train/pretrain.py": {"config.yaml", "last.pt", "log.csv"},  # as WORK_* constants
    "models/weights/sources.py": {"model.safetensors"},
}


def test_no_module_but_the_owner_names_a_run_directory_file():
    names = {CONFIG, SPLITS, DATA, PREDICTIONS, RESULTS, REPORT, "done.json", "log.csv", "last.pt",
             "best.safetensors", "model.safetensors"}
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("run/"):
            continue
        allowed = OTHER_FORMATS.get(rel, set())
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                parts = node.value.split("/")
                hits = {n for n in names - allowed if n in parts}
                if JOBS in parts[:-1]:  # a path into the jobs folder (a bare "jobs" is a dictionary key)
                    hits.add(JOBS)
                if hits:
                    offenders.append(f"{rel}:{node.lineno}: {sorted(hits)}")
    assert not offenders, "run-directory files named outside thyro/run/:\n" + "\n".join(offenders)


#: Each JSON file of a run and the one module that reads and writes it.
JSON_OWNERS = {RESULTS: "run/results.py", DATA: "run/summary.py", PLAN: "run/plan_digest.py",
               FRACTIONS: "run/splits.py", SPLITS: "run/splits.py", "done.json": "run/jobs.py"}


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_only_the_owner_names_a_run_json_file_even_in_words():
    """``grep -rn "results.json\\|data.json"`` under src/ finds the run package alone: no other module opens,
    names or describes these files (a model package keeps the data summary under :data:`thyro.run.DATA`).
    ``splits.json`` is also the usual name of a splits file anywhere (:mod:`thyro.data.splits` owns its format)."""
    offenders = []
    for path in sorted(SRC.rglob("*")):
        rel = path.relative_to(SRC).as_posix()
        if not path.is_file() or rel.startswith("run/") or path.suffix not in (".py", ".j2", ".md", ".html", ".txt"):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            hits = [name for name in JSON_OWNERS if name in line and name != SPLITS]
            if hits:
                offenders.append(f"{rel}:{i}: {', '.join(hits)}")
    assert not offenders, "run JSON files named outside thyro/run/:\n" + "\n".join(offenders)


def test_each_run_json_file_has_one_owner_module_in_the_run_package():
    """Inside thyro/run/, a JSON file's name is spelt (outside docstrings) only in the module that owns it."""
    offenders = []
    for path in sorted((SRC / "run").glob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, text in _strings(path):
            offenders += [f"{rel}:{line}: {name} (owner: {owner})" for name, owner in JSON_OWNERS.items()
                          if name in text and rel != owner]
    assert not offenders, "\n".join(offenders)
    for name, owner in JSON_OWNERS.items():
        assert any(name in text for _, text in _strings(SRC / owner)), f"{owner} does not define {name}"


#: What reads a file's content.
READERS = {"open", "load", "loads", "read_text", "read_bytes", "read_csv", "safe_load", "read_json"}
#: RunDir's paths to the run's JSON and YAML files (and a job's record).
RUN_FILE_PATHS = {"results_path", "data_path", "plan_path", "fractions_path", "splits_path", "config_path", "done"}


def test_no_module_but_the_owner_opens_a_run_file_by_its_path():
    """Outside thyro/run/, a run file's path may be shown (in a message) or handed on (as an artefact), but no
    module reads it: they ask :meth:`RunDir.load` or a typed reader."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("run/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in READERS:
                continue
            parts = [func.value] if isinstance(func, ast.Attribute) else []
            touched = {n.attr for arg in parts + list(node.args) for n in ast.walk(arg)
                       if isinstance(n, ast.Attribute) and n.attr in RUN_FILE_PATHS}
            if touched:
                offenders.append(f"{rel}:{node.lineno}: {name}({', '.join(sorted(touched))})")
    assert not offenders, "run files read outside thyro/run/:\n" + "\n".join(offenders)
