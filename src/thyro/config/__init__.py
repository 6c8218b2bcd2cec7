"""Typed configuration: a study (data, preprocessing, arms, training) and pretraining, YAML in and out.

Paths inside a study file (the manifest, a splits file, weight files) are relative to the file's folder.
Unknown keys and values are errors that name the key and list what is allowed.

One rule merges settings everywhere: built-in defaults < the YAML file < options typed on the command
line (``--set KEY=VALUE`` for a study; only the options a user actually typed, for ``thyro pretrain``).

Training and pretraining share their optimisation and hardware settings (:class:`OptimisationConfig`);
each adds its own.
"""

from thyro.config.merge import merge
from thyro.config.study import (
    PATH_KEYS,
    ArmConfig,
    DataConfig,
    ExternalSet,
    ReportConfig,
    StudyConfig,
    load_study_config,
    path_key_matches,
)
from thyro.config.training import (
    HARDWARE_FIELDS,
    SIMCLR_AUGMENT,
    ArchName,
    AugmentConfig,
    OptimisationConfig,
    PretrainConfig,
    TrainConfig,
    TuneConfig,
)

__all__ = ["ArchName", "ArmConfig", "AugmentConfig", "DataConfig", "ExternalSet", "HARDWARE_FIELDS", "OptimisationConfig",
           "PATH_KEYS", "PretrainConfig", "ReportConfig", "SIMCLR_AUGMENT", "StudyConfig", "TrainConfig", "TuneConfig",
           "load_study_config", "merge", "path_key_matches"]
