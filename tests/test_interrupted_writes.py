"""What a process killed mid-write leaves is found and removed by the next run: temporaries named after
their host and process, swept when that process is gone (never a live one's, another host's only when
clearly stale), folders being replaced put back, stale job claims released; and a kill -9 loop over
study, bundle and export leaves no orphan after the next run."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from thyro.fileio import (FOREIGN_STALE_S, atomic_dir, atomic_path, host_tag, parse_temporary, release_stale_claims,
                          sweep_orphans, temp_prefix, write_text)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}

HOLD = textwrap.dedent("""
    import sys, time
    from thyro.fileio import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"x" * 4096)
        print(tmp, flush=True)
        time.sleep(120)
""")


def _writer(target: Path) -> tuple[subprocess.Popen, Path]:
    """A process in the middle of writing ``target`` (its temporary exists), and that temporary."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
    return proc, Path(proc.stdout.readline().strip())


def _leftovers(root: Path) -> list[Path]:
    """Anything under ``root`` that an interrupted write or claim can leave (this version's names or the
    earlier ones: ``.NAME.XXXXXXXX.tmp``, ``.NAME.tmp-PID``, ``claim|host|pid|n``)."""
    out = []
    for p in root.rglob("*"):
        name = p.name
        if (name.startswith(".") and ("tmp" in name or ".old-" in name)) or "|" in name or name == "claim":
            out.append(p)
    return sorted(out)


def test_temporaries_carry_host_and_pid(tmp_path):
    with atomic_path(tmp_path / "model.onnx", suffix=".onnx") as tmp:
        assert tmp.name.startswith(temp_prefix("model.onnx")) and tmp.name.endswith(".onnx")
        found = parse_temporary(tmp)
        assert (found.target, found.host, found.pid, found.suffix) == ("model.onnx", host_tag(), os.getpid(), ".onnx")
        tmp.write_bytes(b"x")
    assert (tmp_path / "model.onnx").read_bytes() == b"x" and not tmp.exists()
    assert parse_temporary(tmp_path / "model.onnx") is None and parse_temporary(tmp_path / ".a.tmp") is None


class _Records(logging.Handler):
    """The library's log records, as a command's terminal would receive them."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_killed_writers_temporary_is_removed_by_the_next_write_a_live_ones_kept(tmp_path):
    logger, seen = logging.getLogger("thyro"), _Records()
    logger.addHandler(seen)  # on thyro's logger itself: the command line's set-up stops it propagating
    dead, dead_tmp = _writer(tmp_path / "last.pt")
    live, live_tmp = _writer(tmp_path / "best.safetensors")
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        assert dead_tmp.exists()  # kill -9: nothing could clean up
        write_text(tmp_path / "log.csv", "epoch\n1\n")  # the next run's first write into the folder
        assert not dead_tmp.exists() and live_tmp.exists()
        said = [r.getMessage() for r in seen.records]
        assert len(said) == 1 and seen.records[0].levelno == logging.WARNING, said
        assert "\n" not in said[0] and f"pid {dead.pid}: no longer running" in said[0] and dead_tmp.name in said[0]
    finally:
        logger.removeHandler(seen)
        live.send_signal(signal.SIGKILL)
        live.wait()


def test_another_hosts_temporary_goes_only_when_clearly_stale(tmp_path):
    fresh = tmp_path / ".last.pt.thyro-tmp-othernode-123-abcdefgh.tmp"
    stale = tmp_path / ".best.safetensors.thyro-tmp-othernode-123-abcdefgh.tmp"
    fresh.write_bytes(b"x")
    stale.write_bytes(b"x")
    old = time.time() - FOREIGN_STALE_S - 60
    os.utime(stale, (old, old))
    done = sweep_orphans(tmp_path, announce=False)
    assert [p for p, _ in done.removed] == [stale] and fresh.exists()


def test_a_reused_pid_does_not_keep_a_dead_writers_temporary(tmp_path):
    """The temporary names a pid that now belongs to a process started after the file was last written:
    that process is not its writer."""
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        tmp = tmp_path / f".x.thyro-tmp-{host_tag()}-{later.pid}-abcdefgh.tmp"
        tmp.write_bytes(b"x")
        kept = sweep_orphans(tmp_path, announce=False)
        assert not kept and tmp.exists()  # written while that process lived: it may be the writer
        old = time.time() - 3600
        os.utime(tmp, (old, old))  # last written an hour before the process started
        assert sweep_orphans(tmp_path, announce=False) and not tmp.exists()
    finally:
        later.kill()
        later.wait()


def test_a_folder_moved_aside_is_put_back_when_its_replacement_never_arrived(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "model.json").write_text("v1")
    # what a kill between atomic_dir's two renames leaves: the old folder aside, the new one not in place
    aside = tmp_path / f".model.thyro-tmp-{host_tag()}-999999-abcdefgh.old"
    half = tmp_path / f".model.thyro-tmp-{host_tag()}-999999-ijklmnop"
    os.replace(out, aside)
    half.mkdir()
    done = sweep_orphans(tmp_path, announce=False)
    assert done.restored == [out] and (out / "model.json").read_text() == "v1" and not half.exists()


def test_stale_claims_of_dead_local_processes_are_released(tmp_path):
    from thyro.fileio import claim_holder

    job = tmp_path / "jobs" / "scratch" / "fold0"
    job.mkdir(parents=True)
    code = textwrap.dedent("""
        import sys, time
        from thyro.fileio import claim_file
        with claim_file(sys.argv[1]) as mine:
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(job / "claim")], stdout=subprocess.PIPE, text=True,
                            env=ENV)
    assert proc.stdout.readline().strip() == "held"
    assert not release_stale_claims(job)  # its holder lives
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (job / "claim").exists() and any("|" in p.name for p in job.iterdir())
    done = release_stale_claims(job)
    assert done.claims == [job / "claim"] and list(job.iterdir()) == []
    # another host's claim stands until it has not been refreshed for its lifetime
    other = job / f"claim|node-b.cluster|4242|{12345}"
    other.write_text(str(other))
    os.link(other, job / "claim")
    ahead = time.time() + 100
    os.utime(job / "claim", (ahead, ahead))  # flufl.lock keeps a held lock's mtime at its expiry
    assert not release_stale_claims(job) and claim_holder(job / "claim") == "node-b.cluster pid 4242"
    past = time.time() - 100
    os.utime(job / "claim", (past, past))
    assert release_stale_claims(job).claims == [job / "claim"] and list(job.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# kill -9 over the real commands

def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thyro", *args], capture_output=True, text=True, env=ENV,
                          timeout=600, **kw)


def _kill_once(args: list[str], watch: Path, deadline_s: float, *, targeted: bool) -> bool:
    """Start ``thyro ARGS`` and SIGKILL it the moment a temporary appears under ``watch`` (``targeted``) or
    when ``deadline_s`` has passed.  True when something was left to clean up."""
    proc = subprocess.Popen([sys.executable, "-m", "thyro", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + deadline_s
    try:
        while proc.poll() is None and time.time() < deadline:
            if targeted and any(parse_temporary(p) for p in watch.rglob(".*")):
                break
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return bool(_leftovers(watch))


def _kill_during_a_write(args: list[str], watch: Path, rng: random.Random, *, random_after: float | None = None,
                         starts: int = 5) -> bool:
    """SIGKILL ``thyro ARGS`` the moment a temporary appears under ``watch``; with ``random_after``, once at a
    random time up to that many seconds.  A small file's write can finish between the poll that sees its
    temporary and the kill: a targeted kill that left nothing is started again (the run resumes where the
    last one died), up to ``starts`` times.  True when a kill left something to clean up."""
    if random_after is not None:
        return _kill_once(args, watch, rng.uniform(0.5, random_after), targeted=False)
    return any(_kill_once(args, watch, 300, targeted=True) for _ in range(starts))


@pytest.mark.slow
def test_kill_9_loop_over_study_bundle_and_export_leaves_no_orphan(tmp_path):
    from thyro.data.phantom import generate_cohort

    rng = random.Random(int(os.environ.get("THYRO_TEST_SEED", "21")))
    cohort = generate_cohort(tmp_path / "phantom", n_patients=20, size=64, seed=5)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "name": "killed", "data": {"manifest": str(cohort), "test_size": 0.25, "folds": 2, "seed": 1},
        "preprocess": {"size": 32},
        "arms": [{"name": "scratch", "weights": "none"}],
        "train": {"epochs": 2, "batch_size": 8, "device": "cpu", "tensorboard": False, "selection": "last"},
    }))
    run = tmp_path / "run"
    env_cache = {"THYRO_CACHE_DIR": str(tmp_path / "cache")}
    ENV.update(env_cache)
    left = []
    study = ["study", str(config), "--run-dir", str(run), "--no-report"]
    left.append(_kill_during_a_write(study, run, rng))  # mid-checkpoint
    left.append(_kill_during_a_write(study, run, rng, random_after=8.0))
    done = _run(study)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _leftovers(run) == []  # the dead runs' temporaries and claims are gone
    if any(left):
        assert "left by interrupted runs" in done.stderr

    model = tmp_path / "model"
    bundle = ["bundle", str(run), "--arm", "scratch", "--out", str(model)]
    left.append(_kill_during_a_write(bundle, tmp_path, rng))  # mid-copy of the package
    assert _run(bundle).returncode == 0
    assert [p for p in _leftovers(tmp_path) if p.parent == tmp_path] == [] and (model / "model.json").is_file()

    export = ["export", str(model)]
    left.append(_kill_during_a_write(export, model, rng))
    assert _run(export).returncode == 0
    assert _leftovers(model) == [] and (model / "model.onnx").is_file()
    assert sum(left) >= 3, left  # the targeted kills did leave something to clean up
    assert socket.gethostname()  # the names above were this host's
