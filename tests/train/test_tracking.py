"""MLflow tracking works with no environment set-up, and says how to browse the store."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("mlflow")

from thyro.errors import ConfigError  # noqa: E402
from thyro.run import JobKey, RunDir  # noqa: E402
from thyro.train.tracking import FILE_STORE_SWITCH, MlflowTracker, is_file_store  # noqa: E402


@pytest.fixture
def clean_env(monkeypatch):
    """No MLflow variables, as in a new user's shell (restored afterwards)."""
    for name in ("MLFLOW_TRACKING_URI", FILE_STORE_SWITCH):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def test_a_local_store_needs_no_environment_variable(tmp_path, clean_env):
    rundir = RunDir(tmp_path / "run")
    tracker = MlflowTracker(rundir, "exp")
    tracker.job_started(JobKey("scratch", 0), {"train": {"epochs": 1}})
    tracker.job_finished(JobKey("scratch", 0), {"oof_auroc": 0.7})
    assert rundir.mlflow_dir.is_dir()
    assert tracker.browse_command == f"{FILE_STORE_SWITCH}=true mlflow ui --backend-store-uri {tracker.uri}"
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [r.data.metrics["oof_auroc"] for r in runs] == [0.7]


def test_a_users_file_store_uri_works_too(tmp_path, clean_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mine").as_uri())
    tracker = MlflowTracker(RunDir(tmp_path / "run"), "exp")
    assert tracker.uri.startswith("file:") and os.environ[FILE_STORE_SWITCH] == "true"
    assert not RunDir(tmp_path / "run").mlflow_dir.exists()


def test_a_store_that_cannot_be_used_is_one_clear_error(tmp_path, clean_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://host/x")
    with pytest.raises(ConfigError, match=r"tracking store nosuchscheme://host/x cannot be used: .*unset "
                                          r"MLFLOW_TRACKING_URI"):
        MlflowTracker(RunDir(tmp_path / "run"), "exp")


@pytest.mark.parametrize("uri, local", [("file:///tmp/x", True), ("/tmp/x", True), ("mlruns", True),
                                        ("sqlite:///x.db", False), ("http://127.0.0.1:5000", False),
                                        ("C:/runs/x", True)])
def test_file_stores_are_told_apart_from_servers(uri, local):
    assert is_file_store(uri) is local
