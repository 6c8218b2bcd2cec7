"""The run directory of a study: the one package that knows its files.

Every stage reads and writes a study's run directory through this package: the study runner writes
through :class:`RunDir` and merges its finished jobs into the predictions and results with
:mod:`thyro.run.merge`; the report, the model package, ``thyro train``, ``thyro compare``, tracking and the
command line read the whole run as one typed :class:`Run` (:meth:`RunDir.load`).  No other module names
these files, so there is one interpretation of each (the same AUROC cannot get two confidence intervals
from two readers).  Each file has one module here, holding its name, its type, its reader and its writer::

    RUN/config.yaml         the study record: the resolved configuration and the folder its paths start
                            from (:mod:`~thyro.run.record`)
    RUN/splits.json         held-out test ids and the cross-validation folds (:mod:`~thyro.run.splits`,
                            written by :mod:`thyro.data.splits`)
    RUN/fractions.json      the nested training subsets of each fold, when data.train_fractions asks for
                            them (:mod:`~thyro.run.splits`)
    RUN/plan.json           the digest of the plan the study started with (:mod:`~thyro.run.plan_digest`)
    RUN/data.json           what the data held: counts, label provenance, preprocessing
                            (:class:`~thyro.run.summary.DataSummary`)
    RUN/predictions.csv     every prediction, one typed table (:class:`~thyro.run.predictions.Predictions`)
    RUN/results.json        per arm: status, weights, AUROC point estimates; versions; per-job records
                            (:class:`~thyro.run.results.Results`)
    RUN/report.html .md .json
    RUN/mlruns/             the local MLflow file store, when ``train.tracking: mlflow``
    RUN/jobs/ARM/foldK/     one training job (:mod:`~thyro.run.jobs`: its record, predictions, log and model
                            with :class:`~thyro.run.jobs.ModelMetadata`); ``ARM/fracF/foldK`` for a
                            training fraction below 1 (data-efficiency curves)

Files written by earlier versions of thyro load: keys they lack take their defaults (and are not
written back), keys this version does not know are kept.
"""

from thyro.data.manifest import LABEL_SOURCES
from thyro.run.directory import MLRUNS, REPORT, RunDir, describe_holder, load_run
from thyro.run.jobs import JOBS, JobFiles, JobKey, JobRecord, ModelMetadata, fraction_text
from thyro.run.loaded import Run
from thyro.run.plan_digest import PLAN
from thyro.run.predictions import (
    OOF,
    PRED_COLUMNS,
    PREDICTIONS,
    RESERVED_SPLITS,
    TEST,
    Predictions,
    check_predictions,
    predictions_frame,
    read_predictions,
)
from thyro.run.record import CONFIG, StudyRecord
from thyro.run.results import RESULTS, ArmResult, ReportFiles, Results
from thyro.run.splits import FRACTIONS, SPLITS
from thyro.run.summary import DATA, DataSummary, ExternalSummary, read_data_summary, write_data_summary

__all__ = [
    "ArmResult", "CONFIG", "DATA", "DataSummary", "ExternalSummary", "FRACTIONS", "JOBS", "JobFiles", "JobKey",
    "JobRecord", "LABEL_SOURCES", "MLRUNS", "ModelMetadata", "OOF", "PLAN", "PRED_COLUMNS", "PREDICTIONS",
    "Predictions", "REPORT", "RESERVED_SPLITS", "RESULTS", "ReportFiles", "Results", "Run", "RunDir", "SPLITS",
    "StudyRecord", "TEST", "check_predictions", "describe_holder", "fraction_text", "load_run", "predictions_frame",
    "read_data_summary", "read_predictions", "write_data_summary",
]
