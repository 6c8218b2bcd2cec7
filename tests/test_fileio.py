"""Locks and job claims: exclusive across processes, taken over from a dead holder, never from a live one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from thyro.fileio import claim_file, claim_holder

HOLD = textwrap.dedent("""
    import sys, time
    from thyro.fileio import claim_file
    with claim_file(sys.argv[1]) as mine:
        print("held" if mine else "refused", flush=True)
        time.sleep(60)
""")


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_claim_is_refused_and_a_dead_ones_is_taken_over(tmp_path):
    claim = tmp_path / "job" / "claim"
    proc = _holder(claim)
    try:
        assert claim_holder(claim) is not None and f"pid {proc.pid}" in claim_holder(claim)
        with claim_file(claim) as mine:
            assert mine is False  # another live process on this machine holds it
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    t0 = time.monotonic()
    with claim_file(claim) as mine:  # its holder died: taken over at once, not after the lifetime
        assert mine is True
        assert f"pid {os.getpid()}" in claim_holder(claim)
    assert time.monotonic() - t0 < 30
    assert claim_holder(claim) is None and not claim.exists()


def test_a_claim_from_another_machine_expires_after_its_lifetime(tmp_path, monkeypatch):
    """On a shared filesystem a holder on another node cannot be asked whether it lives: its claim stands
    until it has not been refreshed for a lifetime."""
    monkeypatch.setenv("THYRO_LOCK_LIFETIME", "2")
    claim = tmp_path / "claim"
    other = tmp_path / "claim|node-b.cluster|4242|abc"
    other.write_text(str(other))
    os.link(other, claim)  # what flufl.lock's holder on node-b leaves
    with claim_file(claim) as mine:
        assert mine is False
    assert "node-b.cluster pid 4242" == claim_holder(claim)
    old = time.time() - 60  # not refreshed for a minute, far beyond the lifetime and the clock slop
    os.utime(claim, (old, old))
    deadline = time.monotonic() + 30
    while True:
        with claim_file(claim) as mine:
            if mine:
                break
        assert time.monotonic() < deadline, "the expired claim was never taken over"
