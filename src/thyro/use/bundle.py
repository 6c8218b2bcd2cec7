"""The model package: a finished study's chosen arm, ready to use on new images.

Layout of a model directory (format version 1)::

    MODEL_DIR/model.json          format, architecture, preprocessing, input adapter, operating points,
                                  test metrics, the list of model files with their SHA-256
    MODEL_DIR/data.json           summary of the training data (copied from the run directory)
    MODEL_DIR/MODEL_CARD.md       the model card, generated from the two files above
    MODEL_DIR/models/foldK.safetensors   one file per fold model (written by ``thyro.models.save_model``;
                                  its metadata holds the architecture and the input adapter)
    MODEL_DIR/model.onnx          optional, written by ``thyro export``

The fold models are used as an ensemble: the package's probability is the mean of the fold models'
probabilities, exactly as the study computed its test predictions (rows with ``fold = "mean"``);
when the study used flip test-time augmentation (``train.tta_flip``), ``model.json`` says so
(``tta_flip``) and every engine applies it too.

This module needs no torch: :func:`load_package` reads and checks the files; the torch models are
loaded by :meth:`ModelPackage.load_torch_models` only when asked.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from thyro import __version__
from thyro.errors import ModelPackageError
from thyro.fileio import sha256_file, write_json, write_text

FORMAT = "thyro-model-package"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
DATA_JSON = "data.json"
CARD = "MODEL_CARD.md"
ONNX_FILE = "model.onnx"

#: Operating points chosen on the out-of-fold predictions: name -> rule of ``thyro.stats.operating``.
OPERATING_RULES: dict[str, str] = {"youden": "youden", "sens90": "sens@0.90", "sens95": "sens@0.95",
                                   "spec90": "spec@0.90"}
RULE_TEXT = {"youden": "Youden's J (max sensitivity + specificity - 1)",
             "sens@0.90": "highest threshold with sensitivity >= 90%",
             "sens@0.95": "highest threshold with sensitivity >= 95%",
             "spec@0.90": "lowest threshold with specificity >= 90%"}
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
        The content of ``data.json`` (training data summary).
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
        from thyro.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, Preprocessor

        trained = self.meta.get("preprocess_version")
        if trained is not None and trained != PREPROCESS_VERSION:
            warnings.warn(f"{self.root}: the model was trained with preprocessing version {trained}; this thyro "
                          f"has version {PREPROCESS_VERSION}: results may differ slightly.", stacklevel=2)
        cfg = PreprocessConfig.parse(self.preprocess, source=f"{self.root / MODEL_JSON} (preprocess)")
        return Preprocessor(cfg)

    def load_torch_models(self) -> list:
        """The fold models (``ThyroNet``), in evaluation mode, on the CPU."""
        from thyro.models import load_model

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
    if not (root / DATA_JSON).is_file():
        problems.append(f"{DATA_JSON} (training data summary)")
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
        data = json.loads((root / DATA_JSON).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{root / DATA_JSON}: not valid JSON ({exc}).") from None
    return ModelPackage(root=root, meta=meta, data=data if isinstance(data, dict) else {"summary": data})


# ----------------------------------------------------------------------------------------------
# Statistics needed for the package (operating points, test AUROC with CI)
# ----------------------------------------------------------------------------------------------

def _prop(p) -> dict:
    """A ``thyro.stats`` Proportion as JSON (value with its Wilson CI; None when undefined)."""
    def f(v):
        return None if v is None or not np.isfinite(v) else float(v)
    return {"value": f(p.value), "ci": [f(p.lower), f(p.upper)], "k": int(p.k), "n": int(p.n)}


def operating_points(labels: np.ndarray, probs: np.ndarray, rules: dict[str, str] | None = None) -> dict[str, dict]:
    """Thresholds chosen on out-of-fold predictions (``thyro.stats.operating``).

    ``rules`` maps a name to a rule of :func:`thyro.stats.operating.choose_threshold` (``"youden"``,
    ``"sens@0.90"``, ``"spec@0.90"``).  A case is called positive when ``probability >= threshold``.
    Each point records its out-of-fold sensitivity and specificity with Wilson CIs.
    """
    from thyro.errors import StatsError
    from thyro.stats.operating import choose_threshold, evaluate_threshold

    out: dict[str, dict] = {}
    for name, rule in (rules or OPERATING_RULES).items():
        try:
            t = choose_threshold(labels, probs, rule)
        except StatsError as exc:
            raise ModelPackageError(f"cannot choose operating point {name!r} on the out-of-fold predictions: "
                                    f"{exc}") from None
        ev = evaluate_threshold(labels, probs, t, rule)
        out[name] = {"threshold": float(t), "rule": RULE_TEXT.get(rule, rule),
                     "sensitivity": _prop(ev.sensitivity)["value"], "specificity": _prop(ev.specificity)["value"]}
    return out


def evaluate_points(labels: np.ndarray, probs: np.ndarray, points: dict[str, dict]) -> dict[str, dict]:
    """Sensitivity, specificity, PPV, NPV, accuracy (Wilson CIs) and counts at each point's threshold."""
    from thyro.stats.operating import evaluate_threshold

    out = {}
    for name, op in points.items():
        ev = evaluate_threshold(labels, probs, op["threshold"], name)
        out[name] = {k: _prop(getattr(ev, k)) for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy")}
        out[name]["confusion"] = {k: int(v) for k, v in ev.confusion.as_dict().items()}
    return out


def auroc_with_ci(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None, *,
                  seed: int = 0, level: float = 0.95) -> dict:
    """AUROC with its CI by ``thyro.stats.auto.interval``: DeLong when every patient has one image,
    the patient-cluster bootstrap otherwise (the method is recorded)."""
    from thyro.stats.auto import interval

    y = np.asarray(labels, dtype=int)
    if len(np.unique(y)) < 2:
        return {"auroc": None, "ci": None, "n": int(y.size), "n_positive": int(y.sum()),
                "note": "one class only: AUROC undefined"}
    r = interval(y, np.asarray(probs, dtype=float), groups, level=level, seed=seed)
    n_groups = None if groups is None else len(np.unique(np.asarray(groups).astype(str)))
    return {"auroc": float(r.auroc), "ci": [float(r.lower), float(r.upper)], "ci_level": float(r.level),
            "ci_method": r.method + ("" if n_groups is None else f" ({n_groups} patients)"),
            "n": int(y.size), "n_positive": int(r.n_pos), "n_groups": n_groups}


# ----------------------------------------------------------------------------------------------
# Writing a package
# ----------------------------------------------------------------------------------------------

def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ModelPackageError(f"{path}: not valid YAML ({exc}).") from None
    return data if isinstance(data, dict) else {}


def _safetensors_metadata(path: Path) -> dict:
    """The JSON-decoded metadata header of a safetensors file (no tensors are read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            raw = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelPackageError(f"{path}: not a readable safetensors file ({exc}).") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            out[key] = value
    # thyro.models.save_model keeps its information under the key "thyro"
    return out["thyro"] if isinstance(out.get("thyro"), dict) else out


def _image_size(preprocess: dict, config: dict, spec: dict) -> int:
    in_spec = spec.get("input_spec") if isinstance(spec.get("input_spec"), dict) else {}
    for source in (preprocess, config, spec, in_spec):
        for key in ("size", "image_size", "input_size"):
            v = source.get(key) if isinstance(source, dict) else None
            if isinstance(v, int):
                return v
            if isinstance(v, (list, tuple)) and v and isinstance(v[-1], int):
                return int(v[-1])
    raise ModelPackageError("cannot tell the model's input size: neither the preprocess block (size) nor the "
                            "model files' metadata state it.")


def _resolve_preprocess(preprocess: dict) -> tuple[dict, int | None]:
    """Every preprocessing setting, defaults included (so later changes of defaults cannot alter
    the package), and the version of the preprocessing algorithm."""
    from thyro.data.preprocess import PREPROCESS_VERSION, PreprocessConfig

    cfg = PreprocessConfig.parse(preprocess, source="preprocess block of the study configuration")
    return cfg.model_dump(mode="json"), PREPROCESS_VERSION


def _manifest_columns(config: dict, data: dict, base_dir: str | None, run: Path) -> list[str]:
    """The header of the study's manifest, when it can be found (empty list otherwise)."""
    candidates = []
    for value, base in ((data.get("manifest"), None), ((config.get("data") or {}).get("manifest"), base_dir)):
        if isinstance(value, str) and value:
            p = Path(value)
            candidates += [p] if p.is_absolute() else [Path(base or run) / p, run / p]
    for p in candidates:
        try:
            with open(p, encoding="utf-8") as fh:
                return [c.strip().lower() for c in fh.readline().split(",")]
        except OSError:
            continue
    return []


def label_provenance(config: dict, data: dict, manifest_columns: list[str] | None = None) -> str:
    """How the labels were obtained, from the data summary, the configuration or the manifest's
    columns (best effort; ``thyro bundle --label-provenance`` states it explicitly)."""
    for source in (data, config.get("data", {}) if isinstance(config.get("data"), dict) else {}):
        for key in ("label_provenance", "label_source", "labels_from", "label"):
            v = source.get(key)
            if isinstance(v, str) and v.strip():
                return v.strip()
    text = (json.dumps(data, default=str) + json.dumps(config, default=str)).lower()
    if "ddti" in text or "tirads" in text or "tirads" in (manifest_columns or []):
        return ("TI-RADS-derived (DDTI): the label is a radiologist's TI-RADS category at or above a cut-off "
                "(\"suspicious\"), not a pathology result; the FNA result is empty in DDTI.")
    if "phantom" in text:
        return "synthetic (thyro phantom): labels drawn from a known probability given the simulated features."
    return "as given in the study's manifest (provenance not recorded: state it before using the model)."


def write_package(out: str | os.PathLike, *, model_files: list[str | os.PathLike], preprocess: dict,
                  operating: dict[str, dict], metrics: dict | None = None, data: dict | None = None,
                  source: dict | None = None, labels: dict | None = None, image_size: int | None = None,
                  default_point: str = DEFAULT_POINT, overwrite: bool = False, tta_flip: bool = False) -> ModelPackage:
    """Write a model directory from fold model files (saved with ``thyro.models.save_model``).

    Used by :func:`bundle`; usable directly for a model trained outside a study run.
    Files are written under a temporary folder beside ``out`` and renamed into place at the end,
    so an interrupted call leaves no half-written package.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ModelPackageError(f"{out}: exists and is not empty; choose another --out or pass --overwrite.")
    if not model_files:
        raise ModelPackageError("no model files to bundle.")
    if default_point not in operating:
        raise ModelPackageError(f"default operating point {default_point!r} is not among {', '.join(operating)}.")
    specs = [_safetensors_metadata(Path(f)) for f in model_files]
    spec0 = specs[0]
    arch = spec0.get("arch")
    if any(s.get("arch") != arch for s in specs):
        raise ModelPackageError("the fold models have different architectures: "
                                + ", ".join(f"{f}: {s.get('arch')}" for f, s in zip(model_files, specs)))
    preprocess, preprocess_version = _resolve_preprocess(preprocess)
    size = image_size or _image_size(preprocess, {}, spec0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "models").mkdir(parents=True)
    try:
        entries = []
        for k, f in enumerate(model_files):
            rel = f"models/fold{k}.safetensors"
            shutil.copyfile(f, tmp / rel)
            entries.append({"file": rel, "fold": k, "sha256": sha256_file(tmp / rel), "source": str(f)})
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "thyro_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "task": "thyroid nodule on ultrasound: malignant (1) vs benign (0); probability = sigmoid(logit)",
            "arch": arch,
            "weights": (source or {}).get("weights") or spec0.get("weights"),
            "image_size": int(size),
            "preprocess": preprocess,
            "preprocess_version": preprocess_version,
            "input_spec": spec0.get("input_spec"),
            "ensemble": "mean of the fold models' probabilities" if len(entries) > 1 else "single model",
            "tta_flip": bool(tta_flip),
            "models": entries,
            "operating_points": operating,
            "default_operating_point": default_point,
            "metrics": metrics or {},
            "labels": labels or {"positive": "malignant", "negative": "benign", "provenance": "not recorded"},
            "source": source or {},
        }
        write_json(tmp / MODEL_JSON, meta)
        write_json(tmp / DATA_JSON, data or {})
        from thyro.use.card import render_card

        write_text(tmp / CARD, render_card(meta, data or {}))
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_package(out)


def bundle(run_dir: str | os.PathLike, arm: str, out: str | os.PathLike, *,
           default_point: str = DEFAULT_POINT, label_provenance_text: str | None = None,
           overwrite: bool = False, seed: int = 0) -> ModelPackage:
    """Turn one arm of a finished study run directory into a model package.

    Reads ``config.yaml`` (preprocessing, arms), ``predictions.csv`` (out-of-fold predictions for the
    operating points; test rows with ``fold = "mean"`` for the test metrics), ``data.json``,
    ``results.json`` (optional) and ``jobs/ARM/foldK/model.safetensors``.

    Raises
    ------
    ModelPackageError
        Naming every missing file, an unknown arm, or an arm without fold models.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ModelPackageError(f"{run}: run directory not found.")
    missing = [n for n in ("config.yaml", "predictions.csv") if not (run / n).is_file()]
    jobs = sorted((run / "jobs" / arm).glob("fold*/model.safetensors"),
                  key=lambda p: int(p.parent.name[4:]) if p.parent.name[4:].isdigit() else 1 << 30)
    if not jobs:
        missing.append(f"jobs/{arm}/fold*/model.safetensors")
    raw_config = _read_yaml(run / "config.yaml") if (run / "config.yaml").is_file() else {}
    # the study runner writes {"study": {...resolved configuration...}, "base_dir": ...}
    config = raw_config["study"] if isinstance(raw_config.get("study"), dict) else raw_config
    arms = [a.get("name") for a in config.get("arms", []) if isinstance(a, dict)]
    if arms and arm not in arms:
        raise ModelPackageError(f"{run / 'config.yaml'}: no arm {arm!r}; "
                                f"the study's arms are: {', '.join(map(str, arms))}.")
    results = {}
    if (run / "results.json").is_file():
        results = json.loads((run / "results.json").read_text(encoding="utf-8"))
        entry = results.get("arms", {}).get(arm) or {}
        if entry.get("status") and entry["status"] != "done":
            reason = f" ({entry['reason']})" if entry.get("reason") else ""
            raise ModelPackageError(f"{run / 'results.json'}: arm {arm!r} has status {entry['status']!r}{reason}, "
                                    "not 'done'; finish it first or bundle another arm.")
    if missing:
        raise ModelPackageError(f"{run}: cannot bundle arm {arm!r}; missing: {', '.join(missing)}.")
    if "preprocess" not in config:
        raise ModelPackageError(f"{run / 'config.yaml'}: no 'preprocess' block; cannot reproduce the preprocessing.")
    data = json.loads((run / "data.json").read_text(encoding="utf-8")) if (run / "data.json").is_file() else {}

    pred = pd.read_csv(run / "predictions.csv", dtype={"fold": str, "image": str, "patient": str, "group": str})
    need = {"arm", "fold", "split", "label", "probability"}
    if need - set(pred.columns):
        lacking = ", ".join(sorted(need - set(pred.columns)))
        raise ModelPackageError(f"{run / 'predictions.csv'}: missing column(s) {lacking}.")
    pred = pred[(pred["arm"] == arm) & pred["label"].notna()]
    oof = pred[pred["split"] == "val"]
    if oof.empty:
        raise ModelPackageError(f"{run / 'predictions.csv'}: no out-of-fold (split = 'val') rows for arm {arm!r}; "
                                "they are needed to choose the operating points.")
    operating = operating_points(oof["label"].to_numpy(int), oof["probability"].to_numpy(float))
    grp_col = "patient" if "patient" in pred.columns else ("group" if "group" in pred.columns else None)
    metrics: dict[str, Any] = {"oof": auroc_with_ci(oof["label"].to_numpy(int), oof["probability"].to_numpy(float),
                                                    oof[grp_col].to_numpy() if grp_col else None, seed=seed)}
    test = pred[(pred["split"] == "test") & (pred["fold"].astype(str) == "mean")]
    if not test.empty:
        y, p = test["label"].to_numpy(int), test["probability"].to_numpy(float)
        metrics["test"] = auroc_with_ci(y, p, test[grp_col].to_numpy() if grp_col else None, seed=seed)
        metrics["test"]["operating_points"] = evaluate_points(y, p, operating)
    else:
        metrics["test"] = {"auroc": None, "note": "no test rows with fold = 'mean' in predictions.csv"}

    arm_cfg = next((a for a in config.get("arms", []) if isinstance(a, dict) and a.get("name") == arm), {})
    columns = _manifest_columns(config, data, raw_config.get("base_dir"), run)
    labels = {"positive": "malignant", "negative": "benign",
              "provenance": label_provenance_text or label_provenance(config, data, columns)}
    tta_flip = bool((config.get("train") or {}).get("tta_flip", False))
    source = {"run_dir": str(run.resolve()), "arm": arm, "backbone": arm_cfg.get("backbone"),
              "weights": arm_cfg.get("weights"), "git_commit": results.get("git_commit"),
              "versions": results.get("versions"), "n_folds": len(jobs)}
    return write_package(out, model_files=jobs, preprocess=config["preprocess"], operating=operating,
                         metrics=metrics, data=data, source=source, labels=labels,
                         image_size=_image_size(config["preprocess"], config, _safetensors_metadata(jobs[0])),
                         default_point=default_point, overwrite=overwrite, tta_flip=tta_flip)
