"""``thyro demo`` phase by phase: the wall and CPU seconds of each phase beside the demo's own expectation.

    python benchmarks/demo_phases.py --out /tmp/demo-phases      # the full demo (about 9 minutes on 2 cores)
    python benchmarks/demo_phases.py --out /tmp/q --quick        # thyro demo --quick's sizes

The demo logs one line as each phase starts ("1/5 phantom cohort", ..., "5/5 study"); this script notes the
time and the process's CPU seconds (its own and its children's) at each of those lines, so a slower demo can
be traced to the phase that got slower.  It writes ``phases.json`` into ``--out`` and prints it, with the
demo's expected seconds per phase (``thyro.train.demo.expected_seconds``, what ``thyro demo`` prints first)
and the ratio of actual to expected time.  Run it on an idle machine: CPU seconds compare across runs on a
busy one, wall seconds do not.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import time
from pathlib import Path

from thyro.train import demo

PHASES = {"1/5": "phantom cohort", "2/5": "external set", "3/5": "generic backbone", "4/5": "domain backbone",
          "5/5": "study and report"}


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Marks(logging.Handler):
    """Wall and CPU time at each phase line of the demo's log."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.marks: list[tuple[str, float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"\s*([1-5]/5) ", record.getMessage())
        if found:
            self.marks.append((PHASES[found.group(1)], time.perf_counter(), cpu_seconds()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="thyro demo --quick's sizes")
    args = ap.parse_args()
    settings = dict(demo.QUICK) if args.quick else {}
    marks = Marks()
    logger = logging.getLogger("thyro.train.demo")
    logger.setLevel(logging.INFO)
    logger.addHandler(marks)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    results = demo.run_demo(args.out, **settings)
    end, cpu1 = time.perf_counter(), cpu_seconds()
    bounds = marks.marks + [("end", end, cpu1)]
    phases = {name: {"wall": round(bounds[k + 1][1] - t, 1), "cpu": round(bounds[k + 1][2] - c, 1)}
              for k, (name, t, c) in enumerate(bounds[:-1])}
    expected = getattr(results, "expected_seconds", None)  # None from a thyro before the demo estimated
    out = {"total": {"wall": round(end - start, 1), "cpu": round(cpu1 - cpu0, 1),
                     "expected": round(expected, 1) if expected else None,
                     "actual_over_expected": round((end - start) / expected, 2) if expected else None},
           "before_first_phase": {"wall": round(bounds[0][1] - start, 1), "cpu": round(bounds[0][2] - cpu0, 1)},
           "phases": phases,
           "external_auroc": {a: r.external_auroc.get("new-patients") for a, r in results.arms.items()}}
    (args.out / "phases.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
