from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakerun import make_run  # noqa: E402


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory) -> Path:
    """A synthetic finished study: 3 arms x 5 folds, val + test rows, repeated patients, logs."""
    return make_run(tmp_path_factory.mktemp("run") / "study")


@pytest.fixture(scope="session")
def built_report(fake_run, tmp_path_factory):
    """The report of :func:`fake_run`, built once (bootstrap kept small for speed)."""
    from thyro.report import build_report

    out = tmp_path_factory.mktemp("report")
    return build_report(fake_run, out, n_boot=500)
