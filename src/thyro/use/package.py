"""The model package: a finished study's chosen arm, ready to use on new images.

Layout of a model directory (format version 2)::

    MODEL_DIR/model.json          format, architecture, preprocessing, input adapter, what the labels mean,
                                  operating points, metrics per set (out-of-fold, test, external sets, as
                                  thyro.metrics computes them for the report), the model files with their SHA-256
    MODEL_DIR/<data summary>      the run directory's summary of the training data, copied under its name
                                  (:data:`thyro.run.DATA`; read and written by :mod:`thyro.run`)
    MODEL_DIR/MODEL_CARD.md       the model card, generated from the two files above
    MODEL_DIR/models/foldK.safetensors   one file per fold model (written by ``thyro.models.save_model``;
                                  its metadata holds the architecture and the input adapter)
    MODEL_DIR/model.onnx          optional, written by ``thyro export``

The fold models are used as an ensemble: the package's probability is the mean of the fold models'
probabilities, exactly as the study computed its test predictions (rows with ``fold = "mean"``);
when the study used flip test-time augmentation (``train.tta_flip``), ``model.json`` says so
(``tta_flip``) and every engine applies it too.

This module (reading a package) needs no torch: :func:`load_package` reads and checks the files; the torch models are
loaded by :meth:`ModelPackage.load_torch_models` only when asked.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from thyro import __version__
from thyro.data.manifest import LabelMeaning
from thyro.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, Preprocessor
from thyro.errors import ModelPackageError, ThyroError
from thyro.fileio import sha256_file
from thyro.run import DATA, read_data_summary

log = logging.getLogger(__name__)

FORMAT = "thyro-model-package"
FORMAT_VERSION = 2
MODEL_JSON = "model.json"
CARD = "MODEL_CARD.md"
ONNX_FILE = "model.onnx"

#: The operating point a package uses unless told otherwise (names: ``thyro.metrics.OPERATING_RULES``).
DEFAULT_POINT = "youden"


# ----------------------------------------------------------------------------------------------
# The package as read from disk
# ----------------------------------------------------------------------------------------------

@dataclass
class ModelPackage:
    """A model directory, checked and read.

    Attributes
    ----------
    root : Path
        The model directory.
    meta : dict
        The content of ``model.json``.
    data : dict
        The training data summary (:class:`thyro.run.DataSummary`'s content, as the study wrote it).
    """

    root: Path
    meta: dict
    data: dict = field(default_factory=dict)

    # -- what the package says ------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def preprocess(self) -> dict:
        return dict(self.meta["preprocess"])

    @property
    def model_files(self) -> list[Path]:
        return [self.root / m["file"] for m in self.meta["models"]]

    @property
    def tta_flip(self) -> bool:
        """Whether each model's logit is averaged over the image and its horizontal flip (as in the study)."""
        return bool(self.meta.get("tta_flip", False))

    @property
    def onnx_path(self) -> Path:
        return self.root / ONNX_FILE

    @property
    def label_meaning(self):
        """What label 1 means and where the labels came from (:class:`thyro.data.manifest.LabelMeaning`)."""
        return LabelMeaning.from_dict(self.meta.get("labels"))

    def operating_point(self, name: str | None = None) -> tuple[str, float]:
        """``(name, threshold)`` of an operating point (default: the package's default)."""
        points = self.meta.get("operating_points") or {}
        name = name or self.meta.get("default_operating_point") or DEFAULT_POINT
        if name not in points:
            raise ModelPackageError(
                f"{self.root / MODEL_JSON}: no operating point {name!r}; "
                f"the package has: {', '.join(points) or 'none'}")
        return name, float(points[name]["threshold"])

    # -- what it does ------------------------------------------------------------------------
    def preprocessor(self):
        """The training preprocessing (a ``thyro.data.preprocess.Preprocessor``).

        Warns when this thyro's preprocessing algorithm has another version than the one the
        model was trained with (the pixels may then differ slightly).
        """
        trained = self.meta.get("preprocess_version")
        if trained is not None and trained != PREPROCESS_VERSION:
            log.warning(f"{self.root}: the model was trained with preprocessing version {trained}; this thyro "
                        f"has version {PREPROCESS_VERSION}: results may differ slightly.")
        cfg = PreprocessConfig.parse(self.preprocess, source=f"{self.root / MODEL_JSON} (preprocess)")
        return Preprocessor(cfg)

    def load_torch_models(self) -> list:
        """The fold models (``ThyroNet``), in evaluation mode, on the CPU."""
        from thyro.models import load_model  # lazy: thyro.models imports torch; reading a package needs none

        models = []
        for path in self.model_files:
            model = load_model(path)
            model.eval()
            models.append(model)
        return models


def load_package(model_dir: str | os.PathLike, *, verify_hashes: bool = True) -> ModelPackage:
    """Read and check a model directory written by :func:`bundle` (or :func:`write_package`).

    Raises
    ------
    ModelPackageError
        When ``model.json`` or any file it lists is missing, a file's hash differs, or the package
        is of another format version.  The message names every missing or bad file.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelPackageError(f"{root}: model directory not found "
                                "(make one with `thyro bundle RUN_DIR --arm ARM --out DIR`).")
    mj = root / MODEL_JSON
    if not mj.is_file():
        raise ModelPackageError(f"{root}: not a thyro model package: {MODEL_JSON} is missing "
                                "(make one with `thyro bundle RUN_DIR --arm ARM --out DIR`).")
    try:
        meta = json.loads(mj.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{mj}: not valid JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelPackageError(f"{mj}: not a thyro model package (format is {found!r}, expected {FORMAT!r}).")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelPackageError(
            f"{mj}: model package format version {version!r} (written by thyro {meta.get('thyro_version', '?')}); "
            f"this thyro ({__version__}) reads version {FORMAT_VERSION}. Re-bundle the run with this version: "
            "`thyro bundle RUN_DIR --arm ARM --out DIR`.")
    missing_keys = [k for k in ("image_size", "preprocess", "models", "operating_points") if k not in meta]
    if missing_keys:
        raise ModelPackageError(f"{mj}: missing key(s) {', '.join(missing_keys)}; re-bundle the run.")
    problems = []
    if not (root / DATA).is_file():
        problems.append(f"{DATA} (training data summary)")
    if not meta["models"]:
        problems.append("model files (model.json lists none)")
    for m in meta["models"]:
        path = root / m["file"]
        if not path.is_file():
            problems.append(f"{m['file']} (fold model)")
        elif verify_hashes and m.get("sha256") and sha256_file(path) != m["sha256"]:
            problems.append(f"{m['file']} (SHA-256 differs from model.json: the file was changed or truncated)")
    if problems:
        raise ModelPackageError(f"{root}: incomplete model package; missing or bad: " + "; ".join(problems)
                                + ". Re-bundle the run with `thyro bundle`.")
    try:
        data = read_data_summary(root / DATA)
    except ThyroError as exc:
        raise ModelPackageError(str(exc)) from None
    return ModelPackage(root=root, meta=meta, data=data.to_dict() if data is not None else {})


