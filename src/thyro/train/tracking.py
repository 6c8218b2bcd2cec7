"""Experiment tracking: a study's jobs and results in MLflow, the tracker many researchers already use.

``train.tracking: mlflow`` logs one MLflow run per job (its settings, per-epoch losses and AUROC, the
chosen epoch and out-of-fold AUROC) and one run for the study (its configuration, every arm's AUROCs,
and the report, results and predictions as artefacts), in the experiment named after the study.

Nothing is sent anywhere by default: runs go to a local MLflow file store in the run directory
(``RUN/mlruns``), with no environment set-up: MLflow 3 opens a file store only when
``MLFLOW_ALLOW_FILE_STORE=true``, which thyro sets for the stores it writes.  To browse one, MLflow's UI
(the full ``mlflow`` package) needs the same switch:
``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN/mlruns`` (the study logs this line).
Set ``MLFLOW_TRACKING_URI`` to log to your own tracking server or database instead.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from urllib.parse import urlparse

from thyro.errors import ConfigError
from thyro.optional import require
from thyro.run import JobKey, Results, RunDir

log = logging.getLogger(__name__)

#: The environment variable MLflow 3 wants before it opens a file store (thyro sets it for its own store).
FILE_STORE_SWITCH = "MLFLOW_ALLOW_FILE_STORE"


def is_file_store(uri: str) -> bool:
    """Whether an MLflow tracking URI names a file store (``file:`` or a plain path), not a server or database."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/"))  # C:\... is a path


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(v)[:500]  # MLflow's parameter value limit
    return out


class NoTracker:
    """Tracking off: every call does nothing."""

    def job_started(self, job: JobKey, params: dict) -> None:
        pass

    def epoch(self, job: JobKey, epoch: int, row: dict) -> None:
        pass

    def job_finished(self, job: JobKey, metrics: dict[str, float | None]) -> None:
        pass

    def study_finished(self, rundir: RunDir) -> None:
        pass


class MlflowTracker(NoTracker):
    """Logs to MLflow through its client API (no global run state, so worker processes do not mix)."""

    def __init__(self, rundir: RunDir, experiment: str):
        require("mlflow", purpose="train.tracking: mlflow (or set train.tracking: none)")
        from mlflow.tracking import MlflowClient  # lazy: the optional mlflow package

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            rundir.mlflow_dir.mkdir(parents=True, exist_ok=True)
            uri = rundir.mlflow_dir.resolve().as_uri()
        if is_file_store(uri):
            # MLflow 3 keeps its file store behind this switch ("maintenance mode"); a local store in the run
            # folder is what tracking here is for, and worker processes inherit the setting.
            os.environ.setdefault(FILE_STORE_SWITCH, "true")
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        except Exception as exc:  # MlflowException and what its stores raise (a database driver missing, ...)
            text = " ".join(str(exc).split())[:400] or type(exc).__name__
            raise ConfigError(f"train.tracking: mlflow: the tracking store {uri} cannot be used: {text} (unset "
                              "MLFLOW_TRACKING_URI for a local store in the run directory, or set "
                              "train.tracking: none).") from None
        self._runs: dict[JobKey, str] = {}

    @property
    def browse_command(self) -> str:
        """The command that shows the runs in MLflow's web UI (which comes with the full ``mlflow`` package)."""
        switch = f"{FILE_STORE_SWITCH}=true " if is_file_store(self.uri) else ""
        return f"{switch}mlflow ui --backend-store-uri {self.uri}"

    def _log(self, run_id: str, *, params: dict | None = None, metrics: dict | None = None, step: int = 0) -> None:
        from mlflow.entities import Metric, Param  # lazy: the optional mlflow package

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v not in (None, "")],
            params=[Param(k, v) for k, v in _flat(params or {}).items()])

    def job_started(self, job: JobKey, params: dict) -> None:
        run = self.client.create_run(self.experiment_id, run_name=job.name, tags={
            "thyro.arm": job.arm, "thyro.fold": str(job.fold), "thyro.train_fraction": str(job.fraction)})
        self._runs[job] = run.info.run_id
        self._log(run.info.run_id, params=params)

    def epoch(self, job: JobKey, epoch: int, row: dict) -> None:
        run_id = self._runs.get(job)
        if run_id:
            self._log(run_id, metrics={k: row[k] for k in ("train_loss", "val_loss", "val_auroc") if k in row},
                      step=epoch + 1)

    def job_finished(self, job: JobKey, metrics: dict[str, Any]) -> None:
        run_id = self._runs.pop(job, None)
        if run_id:
            self._log(run_id, metrics=metrics)
            self.client.set_terminated(run_id)

    def study_finished(self, rundir: RunDir) -> None:
        """Log the finished study: its configuration, every arm's AUROCs and the files that show it."""
        results = rundir.load().results or Results()
        run = self.client.create_run(self.experiment_id, run_name="study", tags={"thyro.kind": "study"})
        metrics: dict[str, float | None] = {}
        for arm, entry in results.arms.items():
            metrics[f"{arm}.oof_auroc"] = entry.oof_auroc
            metrics[f"{arm}.test_auroc"] = entry.test_auroc
            for name, v in entry.external_auroc.items():
                metrics[f"{arm}.{name}_auroc"] = v
        self._log(run.info.run_id, params=results.config, metrics=metrics)
        for path in rundir.artefacts():
            self.client.log_artifact(run.info.run_id, str(path))
        self.client.set_terminated(run.info.run_id)
        log.info(f"MLflow runs in {self.uri}; browse them with: {self.browse_command}")


def make_tracker(kind: str, rundir: RunDir, experiment: str) -> NoTracker:
    """The tracker ``train.tracking`` asks for."""
    return MlflowTracker(rundir, experiment) if kind == "mlflow" else NoTracker()
