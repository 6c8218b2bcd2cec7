"""Jobs for schedulers: --only and train check only their arms' weights; jobs are claimed, never trained twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from thyro.cli import main
from thyro.run import JobKey, RunDir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from thyro.data.phantom import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort") / "phantom", n_patients=30, size=64, seed=4)


def write_config(tmp_path: Path, cohort: Path, arms: list[dict], *, epochs: int = 1, size: int = 32) -> Path:
    cfg = {"name": "jobs", "data": {"manifest": str(cohort), "test_size": 0.2, "folds": 2, "seed": 1},
           "preprocess": {"size": size}, "arms": arms,
           "train": {"epochs": epochs, "batch_size": 16, "device": "cpu", "tensorboard": False, "threads": 1,
                     "selection": "last"}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_only_and_train_check_only_their_arms_weights(tmp_path, cohort, monkeypatch, capsys):
    from thyro.train.study import run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    config = write_config(tmp_path, cohort, [{"name": "scratch", "weights": "none"},
                                             {"name": "pre", "weights": {"file": str(tmp_path / "absent.pt")}}])
    run = tmp_path / "run"
    # another arm's missing weights do not stop a selected job
    results = run_study(config, run_dir=run, only=["scratch:0"], report=False)
    assert results.arms["scratch"].folds_done == [0] and results.arms["pre"].status == "incomplete"
    assert main(["-q", "train", str(config), "--arm", "scratch", "--fold", "1", "--run-dir", str(run)]) == 0
    assert RunDir(run).is_done(JobKey("scratch", 1))
    # the arm whose weights are missing: a clear stop naming the file and the option train has
    capsys.readouterr()
    assert main(["-q", "train", str(config), "--arm", "pre", "--fold", "0", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "absent.pt" in err and "--skip-missing" in err
    assert main(["-q", "train", str(config), "--arm", "pre", "--fold", "0", "--run-dir", str(run), "--skip-missing"]) == 0
    res = RunDir(run).read_results()
    assert res.arms["pre"].status == "skipped" and "absent.pt" in res.arms["pre"].reason
    assert res.arms["scratch"].status == "done"


def test_dry_run_trains_and_writes_nothing(tmp_path, cohort, capsys):
    config = write_config(tmp_path, cohort, [{"name": "scratch", "weights": "none"},
                                             {"name": "pre", "weights": {"file": "absent.pt"}}])
    capsys.readouterr()
    # missing weights stop the dry run as they stop the real run ...
    assert main(["study", str(config), "--run-dir", str(tmp_path / "run"), "--dry-run"]) == 2
    assert "absent.pt" in capsys.readouterr().err
    # ... and with --skip-missing it prints the plan, the arm set aside
    assert main(["study", str(config), "--run-dir", str(tmp_path / "run"), "--dry-run", "--skip-missing"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "scratch:0" in out and "pre:1" not in out and "skipped" in out and "absent.pt" in out
    assert "test" in out and "held out" in out and "Synthetic" in out and "estimated training time" in out
    assert not (tmp_path / "run").exists()


#: `thyro study` in a process that waits, before its first claim, until every process of the test is there (a
#: barrier of files), and whose jobs last at least a few seconds: however slowly one of them starts on a busy
#: machine, the other cannot take every job before it is up.
TOGETHER = """
import os, sys, time
from pathlib import Path

from thyro.cli import main
from thyro.run import RunDir
from thyro.train.study import Study

barrier, count = Path(sys.argv[1]), int(sys.argv[2])
claim, run_job, waited = RunDir.claim, Study.run_job, []


def claim_together(self, job, **kwargs):
    if not waited:
        waited.append(True)
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + 300
        while len(list(barrier.iterdir())) < count and time.monotonic() < deadline:
            time.sleep(0.05)
    return claim(self, job, **kwargs)


def run_job_for_a_while(self, *args, **kwargs):
    start = time.monotonic()
    try:
        return run_job(self, *args, **kwargs)
    finally:
        time.sleep(max(0.0, 3.0 - (time.monotonic() - start)))


RunDir.claim, Study.run_job = claim_together, run_job_for_a_while
sys.exit(main(sys.argv[3:]))
"""


def test_two_processes_on_one_run_directory_train_each_job_once(tmp_path, cohort):
    """Two `thyro study` processes started together split the jobs between them (claims), then merge."""
    config = write_config(tmp_path, cohort, [{"name": "a", "weights": "none"}, {"name": "b", "weights": "none"}],
                          epochs=2, size=64)
    run = tmp_path / "run"
    env = {**os.environ, "THYRO_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    script, barrier = tmp_path / "together.py", tmp_path / "barrier"
    script.write_text(TOGETHER)
    barrier.mkdir()
    cmd = [sys.executable, str(script), str(barrier), "2", "study", str(config), "--run-dir", str(run), "--no-report"]
    procs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trained = [m for out in outs for m in re.findall(r"job \d+/\d+ (\S+:\d+)\s*$", out, flags=re.M)]
    expected = sorted(f"{arm}:{k}" for arm in "ab" for k in range(2))
    assert sorted(trained) == expected, outs  # every job trained exactly once over both processes
    assert all(re.search(r"job \d+/\d+ \S+:\d+\s*$", out, flags=re.M) for out in outs), "one process did all"
    rd = RunDir(run)
    assert {a.status for a in rd.read_results().arms.values()} == {"done"}
    preds = rd.read_predictions()
    assert len(preds.rows(arm="a", split="val")) == len(rd.read_splits().dev_ids())


def test_study_jobs_2_trains_every_job_once_and_merges(tmp_path, cohort):
    """`thyro study --jobs 2`: two worker processes share the jobs; one predictions.csv and the report."""
    # jobs long enough (a few seconds each) that the second worker starts before the first has taken them all
    config = write_config(tmp_path, cohort, [{"name": "a", "weights": "none"}, {"name": "b", "weights": "none"}],
                          epochs=6, size=64)
    run = tmp_path / "run"
    env = {**os.environ, "THYRO_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "thyro", "study", str(config), "--run-dir", str(run), "--jobs", "2",
                          "--device", "cpu"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    trained = re.findall(r"job \d+/\d+ (\S+:\d+)\s*$", out.stdout, flags=re.M)
    assert sorted(trained) == sorted(f"{arm}:{k}" for arm in "ab" for k in range(2)), out.stdout
    rd = RunDir(run)
    hosts = {rd.read_job(JobKey(arm, k)).host for arm in "ab" for k in range(2)}
    assert len(hosts) == 2, out.stdout  # two worker processes trained them
    assert rd.report_path.is_file() and {a.status for a in rd.read_results().arms.values()} == {"done"}
    assert len(rd.read_predictions().rows(split="test", ensemble=True)) == 2 * len(rd.read_splits().test)
