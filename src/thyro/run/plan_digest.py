"""The plan digest of a run (``plan.json``): the digest of the plan the study started with and of each arm's
weight file (:attr:`thyro.train.plan.Plan.digest`), so no process mixes other data or weights into a run."""

from __future__ import annotations

import time
from pathlib import Path

from thyro.run._files import RunFile, read_file, write_file

PLAN = "plan.json"


class PlanDigest(RunFile):
    digest: str = ""
    weights: dict[str, str] = {}
    written: str = ""


def read_plan_digest(path: Path) -> tuple[str, dict[str, str]] | None:
    """``(plan digest, {arm: weight digest})``, or None before a study has started here."""
    saved = read_file(PlanDigest, path)
    if saved is None or not saved.digest:
        return None
    return saved.digest, dict(saved.weights)


def write_plan_digest(path: Path, digest: str, weights: dict[str, str]) -> None:
    """Record the plan's digest; weight digests of arms already recorded are kept (call under the lock)."""
    old = read_plan_digest(path)
    merged = {**(old[1] if old else {}), **weights}
    write_file(path, PlanDigest(digest=digest, weights=merged, written=time.strftime("%Y-%m-%dT%H:%M:%S")))
