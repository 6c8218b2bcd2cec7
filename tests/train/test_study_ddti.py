"""``thyro study configs/ddti.yaml`` on real DDTI images: runs end to end, survives a kill, resumes.

Small image size and few epochs for CI; the full-size run is a benchmark (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def thyro(*args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "thyro", "--quiet", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_ddti_study_runs_and_resumes_after_kill(ddti_dir, tmp_path):
    env = {**os.environ, "THYRO_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-m", "thyro", "data", "import", "ddti", str(ddti_dir),
                          "--out", str(tmp_path / "ddti")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = tmp_path / "ddti" / "manifest.csv"
    run = tmp_path / "run"
    args = ["study", str(REPO / "configs" / "ddti.yaml"), "--run-dir", str(run), "--skip-missing", "--no-report",
            "--set", f"data.manifest={manifest}", "--set", "preprocess.size=32", "--set", "train.epochs=2",
            "--set", "train.batch_size=32", "--set", "train.device=cpu", "--set", "train.tensorboard=false"]

    # start, wait for the first finished job, then kill the process hard
    proc = thyro(*args, env=env)
    deadline = time.time() + 300
    while not list(run.glob("jobs/*/fold*/done.json")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no job finished in time"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in run.glob("jobs/*/fold*/done.json")}
    assert 1 <= len(finished) < 5

    # the same command again: finished jobs are kept, the rest run, everything is merged
    again = subprocess.run([sys.executable, "-m", "thyro", "--quiet", *args], env=env, cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p.parent.name} was retrained"
    results = json.loads((run / "results.json").read_text())
    assert results["arms"]["scratch"]["status"] == "done"
    # no ImageNet/RadImageNet files on a CI machine: those arms are recorded as skipped, with the reason
    for arm in ("imagenet", "radimagenet"):
        assert results["arms"][arm]["status"] == "skipped" and results["arms"][arm]["reason"]
    pred = pd.read_csv(run / "predictions.csv", dtype={"fold": str})
    splits = json.loads((run / "splits.json").read_text())
    val = pred[(pred["arm"] == "scratch") & (pred["split"] == "val")]
    assert len(val) == sum(len(f) for f in splits["folds"]) == val["image"].nunique()
    test = pred[(pred["split"] == "test") & (pred["fold"] == "mean")]
    assert sorted(test["image"]) == sorted(splits["test"])
    # duplicate images filed under different cases share a group, and no group crosses the splits
    groups = pred.drop_duplicates("image").set_index("image")["group"]
    test_groups = set(groups[splits["test"]])
    assert not test_groups & set(groups[[i for f in splits["folds"] for i in f]])
