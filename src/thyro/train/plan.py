"""A study resolved before it runs: :func:`make_plan` turns configuration + manifest + splits + run directory
into one typed, immutable :class:`Plan`.

Every check a run can fail happens here, and every problem is reported at once, before anything is trained
or written: the configuration against a run directory that holds another study; the manifest and its
images (existence and header: format, size, the pixel limit); the splits, training fractions and inner
selection splits; each external set (labels of both classes, no image shared with the development data);
each arm's weights, loaded as a job loads them (the file found, its container read by its bytes, NaN/Inf,
coverage of the backbone, a mapping by position checked against the file's BatchNorm statistics) and run
once at the study's image size; the tracking store; disk space for the image cache.  ``thyro study
--dry-run`` prints the plan and stops; the real run executes it, and no job parses the configuration or a
weight specification again: each job gets its arm's :class:`ArmPlan`.

The plan's :attr:`Plan.digest` (the study's identity, the content of the manifest and of the external sets)
and the content digest of each arm's weight file are written into the run directory when the study starts; a
resumed or concurrent process whose plan differs stops instead of mixing results.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from thyro.config import HARDWARE_FIELDS, ArmConfig, StudyConfig, TrainConfig
from thyro.data.dedup import cross_duplicates
from thyro.data.manifest import LabelMeaning, Manifest, read_manifest
from thyro.data.splits import Splits, inner_split, make_splits, nested_subsets
from thyro.data.validate import validate_manifest
from thyro.errors import ConfigError, DataError, ThyroError, WeightsError
from thyro.fileio import sha256_file, sha256_json
from thyro.models.adapter import InputSpec
from thyro.models.weights.sources import WeightSource
from thyro.run import JobKey, RunDir

#: A dry run times this many training steps per arm to estimate the study's duration.
ESTIMATE_STEPS = 2


@dataclass(frozen=True)
class ArmPlan:
    """One arm, resolved: its settings, its weight source (parsed once, paths absolute) and what loading it gave.

    ``skipped`` holds the reason when ``--skip-missing`` set the arm aside (its weight file is missing).
    """

    config: ArmConfig
    train: TrainConfig
    source: WeightSource
    weights_file: Path | None = None
    input_spec: InputSpec | None = None
    layout: str = "timm"
    coverage: tuple[int, int] | None = None
    load_summary: str = ""
    skipped: str | None = None
    images_per_second: float | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pretrained(self) -> bool:
        return self.source.kind != "none"


@dataclass(frozen=True)
class ExternalPlan:
    """An external validation set, checked: labelled, both classes, nothing shared with the development data."""

    name: str
    path: Path
    manifest: Manifest
    labels: LabelMeaning


@dataclass(frozen=True)
class Plan:
    """What a study will do (see the module docstring)."""

    config: StudyConfig
    base_dir: Path
    run_dir: Path
    manifest_path: Path
    manifest: Manifest
    labels: LabelMeaning
    splits: Splits
    splits_origin: str
    subsets: dict
    arms: tuple[ArmPlan, ...]
    jobs: tuple[JobKey, ...]
    done: frozenset[str]
    external: tuple[ExternalPlan, ...]
    selected: tuple[JobKey, ...] | None
    digest: str
    weight_digests: dict = field(default_factory=dict)
    seconds_estimate: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def arm(self, name: str) -> ArmPlan:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(f"no arm named {name!r}; arms: {', '.join(a.name for a in self.arms)}")

    @property
    def labelled(self) -> Manifest:
        return self.manifest.labelled()

    @property
    def skipped(self) -> dict[str, str]:
        return {a.name: a.skipped for a in self.arms if a.skipped}

    @property
    def todo(self) -> list[JobKey]:
        return [j for j in self.jobs if j.name not in self.done]

    def train_ids(self, job: JobKey) -> list[str]:
        return list(self.subsets.get((job.fold, job.fraction)) or self.splits.train_ids(job.fold))

    def to_dict(self) -> dict:
        """JSON-ready description (``--dry-run`` prints it)."""
        return {
            "study": self.config.name, "run_dir": str(self.run_dir), "digest": self.digest,
            "config": self.config.model_dump(mode="json"), "labels": self.labels.to_dict(),
            "splits": {"source": self.splits_origin, "test": len(self.splits.test),
                       "folds": [len(f) for f in self.splits.folds],
                       "train_per_fold": [len(self.splits.train_ids(k)) for k in range(len(self.splits.folds))]},
            "arms": {a.name: {"backbone": a.config.backbone, "weights": a.source.describe(),
                              "file": str(a.weights_file) if a.weights_file else None,
                              "coverage": list(a.coverage) if a.coverage else None, "layout": a.layout,
                              "input": a.input_spec.describe() if a.input_spec else None,
                              "loaded": a.load_summary, "skipped": a.skipped,
                              "train_images_per_second": a.images_per_second} for a in self.arms},
            "external": {e.name: {"manifest": str(e.path), "images": len(e.manifest), "labels": e.labels.to_dict()}
                         for e in self.external},
            "jobs": [{"job": j.name, "done": j.name in self.done} for j in self.jobs],
            "seconds_estimate": self.seconds_estimate, "notes": list(self.notes),
        }


def study_identity(cfg: StudyConfig) -> str:
    """What must match for a run directory to be continued: everything but hardware settings."""
    d = cfg.model_dump(mode="json")
    for key in HARDWARE_FIELDS:
        d["train"].pop(key, None)
    return sha256_json(d)


def parse_only(only: list[str] | None, cfg: StudyConfig) -> list[JobKey] | None:
    """Parse ``ARM:FOLD``, ``ARM@FRACTION:FOLD`` or ``ARM`` / ``ARM:*`` (all its folds) selectors into jobs."""
    if not only:
        return None
    out: list[JobKey] = []
    for item in only:
        arm, _, fold = str(item).partition(":")
        arm, _, frac = arm.partition("@")
        cfg.arm(arm)
        fractions = cfg.data.train_fractions
        if frac:
            try:
                value = float(frac.rstrip("%")) / (100 if frac.endswith("%") else 1)
            except ValueError:
                value = -1.0
            if value not in fractions:
                raise ConfigError(f"--only {item!r}: training fraction {frac!r} is not one of the study's "
                                  f"data.train_fractions ({', '.join(f'{f:g}' for f in fractions)}).")
            fractions = [value]
        if fold in ("", "*"):
            out += [JobKey(arm, k, f) for f in fractions for k in range(cfg.data.folds)]
            continue
        if not fold.isdigit() or not 0 <= int(fold) < cfg.data.folds:
            raise ConfigError(f"--only {item!r}: the fold must be 0..{cfg.data.folds - 1}")
        out += [JobKey(arm, int(fold), f) for f in fractions]
    return out


class _Problems:
    """Every problem found while planning; raised together (the first one's kind) at the end."""

    def __init__(self):
        self.found: list[ThyroError] = []

    def attempt(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ThyroError as exc:
            self.found.append(exc)
            return None

    def raise_all(self) -> None:
        if not self.found:
            return
        if len(self.found) == 1:
            raise self.found[0]
        kind = type(self.found[0])
        raise kind(f"{len(self.found)} problems; nothing was trained or written:\n"
                   + "\n".join("- " + str(e).replace("\n", "\n  ") for e in self.found))


def make_plan(cfg: StudyConfig, base_dir: Path, run_dir: str | os.PathLike, *, only: list[str] | None = None,
              skip_missing: bool = False, estimate: bool = False) -> Plan:
    """Resolve and check a study (see the module docstring); raises every problem at once.

    ``estimate`` times a few training steps of every arm on this machine for :attr:`Plan.seconds_estimate`.
    """
    base_dir, rundir = Path(base_dir), RunDir(run_dir)
    problems = _Problems()
    selected = parse_only(only, cfg)
    problems.attempt(_check_run_dir, cfg, rundir)
    manifest_path = _resolve(cfg.data.manifest, base_dir)
    manifest = problems.attempt(_read_development, manifest_path)
    if manifest is None:
        problems.raise_all()
    labelled = manifest.labelled()
    split_result = problems.attempt(_splits, cfg, base_dir, rundir, labelled)
    external = tuple(e for e in (problems.attempt(_external, e.name, _resolve(e.manifest, base_dir), labelled)
                                 for e in cfg.data.external) if e is not None)
    names = {j.arm for j in selected} if selected is not None else {a.name for a in cfg.arms}
    arms = []
    for arm in cfg.arms:
        planned = problems.attempt(plan_arm, arm, cfg, base_dir, skip_missing=skip_missing,
                                   estimate=estimate and arm.name in names) if arm.name in names else None
        arms.append(planned or ArmPlan(arm, arm.train_config(cfg.train), arm.weight_source(base_dir)))
    problems.attempt(_check_tracking, cfg, rundir)
    problems.attempt(_check_disk, cfg, labelled, external)
    if split_result is not None:
        problems.attempt(_check_inner_splits, cfg, labelled, *split_result[:2])
    problems.raise_all()
    splits, subsets, origin = split_result
    skipped = {a.name for a in arms if a.skipped}
    jobs = tuple(j for j in all_study_jobs(cfg) if j.arm not in skipped and (selected is None or any(
        s.arm == j.arm and s.fold == j.fold and s.fraction == j.fraction for s in selected)))
    done = frozenset(j.name for j in jobs if rundir.is_done(j))
    digest = _digest(cfg, manifest_path, external)
    weight_digests = {a.name: _content(a.weights_file) for a in arms if a.weights_file is not None}
    _check_digest(rundir, digest, weight_digests)
    plan = Plan(cfg, base_dir, rundir.root, manifest_path, manifest, manifest.label_meaning(), splits, origin,
                subsets, tuple(arms), jobs, done, external, tuple(selected) if selected is not None else None,
                digest=digest, weight_digests=weight_digests)
    if estimate:
        plan = _with_estimate(plan)
    return plan


def _resolve(p: str, base: Path) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def all_study_jobs(cfg: StudyConfig) -> list[JobKey]:
    """Every job of the study (arm x training fraction x fold; the whole folds first)."""
    return [JobKey(arm.name, k, f) for f in sorted(cfg.data.train_fractions, reverse=True) for arm in cfg.arms
            for k in range(cfg.data.folds)]


def _check_run_dir(cfg: StudyConfig, rundir: RunDir) -> None:
    existing = rundir.read_record()
    if existing is not None and study_identity(existing.config) != study_identity(cfg):
        raise ConfigError(
            f"{rundir.root} holds a different study (its {rundir.config_path.name} differs from this configuration "
            "in more than hardware settings); use another --run-dir, or delete that folder to start over.")


def _read_development(path: Path) -> Manifest:
    manifest = read_manifest(path)
    problems = [p for p in validate_manifest(path, decode=False) if p.row is not None and p.file]
    if problems:
        raise DataError(f"{path}: {len(problems)} image problem(s) found before training:\n"
                        + "\n".join(f"- {p}" for p in problems[:20]) + ("\n- ..." if len(problems) > 20 else "")
                        + "\n(`thyro data validate` lists them all.)")
    if manifest.labelled().df.empty:
        raise DataError(f"{path}: no image has a label; a study needs labelled images (1 malignant, 0 benign).")
    return manifest


def _splits(cfg: StudyConfig, base_dir: Path, rundir: RunDir, labelled: Manifest):
    if rundir.splits_path.exists():
        splits, origin = rundir.read_splits(labelled), str(rundir.splits_path)
    elif cfg.data.splits:
        path = _resolve(cfg.data.splits, base_dir)
        splits, origin = Splits.load(path, labelled), str(path)
    else:
        splits = make_splits(labelled, test_size=cfg.data.test_size, folds=cfg.data.folds, seed=cfg.data.seed)
        origin = "made from the manifest"
    if len(splits.folds) != cfg.data.folds:
        raise ConfigError(f"the splits have {len(splits.folds)} folds but the configuration asks for "
                          f"{cfg.data.folds}")
    subsets = rundir.read_fractions() or {}
    partial = [f for f in cfg.data.train_fractions if f < 1.0]
    if partial and not all((k, f) in subsets for k in range(len(splits.folds)) for f in partial):
        lab = dict(zip(labelled.df["image"], labelled.df["label"].astype(int)))
        grp = dict(zip(labelled.df["image"], labelled.df["group"]))
        subsets = {}
        for k in range(len(splits.folds)):
            ids = splits.train_ids(k)
            made = nested_subsets(ids, [lab[i] for i in ids], [grp[i] for i in ids], partial,
                                  seed=cfg.data.seed * 1000 + k, where=f"training part of fold {k}")
            subsets.update({(k, f): v for f, v in made.items()})
    return splits, subsets, origin


def _check_inner_splits(cfg: StudyConfig, labelled: Manifest, splits: Splits, subsets: dict) -> None:
    """Every job's training part must hold an inner selection split (``train.selection: inner`` or tuning)."""
    lab = dict(zip(labelled.df["image"], labelled.df["label"].astype(int)))
    grp = dict(zip(labelled.df["image"], labelled.df["group"]))
    for arm in cfg.arms:
        train = arm.train_config(cfg.train)
        if arm.train_backbone == "cached" or (train.selection != "inner" and not train.tune.grid):
            continue
        for f in cfg.data.train_fractions:
            for k in range(len(splits.folds)):
                ids = subsets.get((k, f)) or splits.train_ids(k)
                inner_split(ids, [lab[i] for i in ids], [grp[i] for i in ids], train.inner_fraction,
                            seed=train.seed * 1000 + k, where=f"training part of {JobKey(arm.name, k, f)}")


def _external(name: str, path: Path, development: Manifest) -> ExternalPlan:
    """An external set's labelled manifest, checked: labels of both classes, no image of the development data."""
    import numpy as np

    where = f"external set {name!r} ({path})"
    try:
        manifest = read_manifest(path)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    labelled = manifest.labelled()
    if len(labelled) < len(manifest):
        rows = [int(i) + 2 for i in np.flatnonzero(manifest.df["label"].isna().to_numpy())[:10]]
        if labelled.df.empty:
            raise DataError(f"{where}: no image has a label (an external set is for validation: label it, "
                            f"or drop it from data.external); unlabelled rows: {rows}")
        raise DataError(f"{where}: {len(manifest) - len(labelled)} image(s) without a label, at rows {rows}; "
                        "every image of an external set needs one.")
    classes = set(labelled.df["label"].astype(int))
    if classes != {0, 1}:
        raise DataError(f"{where}: every image is {'malignant (1)' if 1 in classes else 'benign (0)'}; an AUROC "
                        "needs both classes.")
    shared = cross_duplicates(development, labelled, progress=False)
    if shared:
        lines = "; ".join(f"{b} = {a} ({how})" for a, b, how in shared[:10])
        raise DataError(f"{where}: {len(shared)} image(s) are also in the development data, so the set is not "
                        f"external: {lines}{' ...' if len(shared) > 10 else ''}. Remove them from one of the "
                        "manifests.")
    return ExternalPlan(name, path, labelled, labelled.label_meaning())


def plan_arm(arm: ArmConfig, cfg: StudyConfig, base_dir: Path, *, skip_missing: bool = False,
             estimate: bool = False) -> ArmPlan:
    """An arm resolved: its weights loaded as a job loads them and the network run once at the study's size.

    A missing weight file stops the study (naming every place looked), or with ``skip_missing`` sets the arm
    aside; a file that is there but unusable always stops it.
    """
    import torch

    from thyro.models import build_model

    train = arm.train_config(cfg.train)
    source = arm.weight_source(base_dir)
    try:
        path = source.resolve(arm.backbone)
    except WeightsError as exc:
        if skip_missing:
            return ArmPlan(arm, train, source, skipped=str(exc))
        raise WeightsError(f"arm '{arm.name}': {exc}\n(no training has started; --skip-missing runs the other arms "
                           "and records this one as skipped)") from None
    size = cfg.preprocess.size
    try:
        model, report = build_model(arm.backbone, source, in_chans_mode=arm.in_chans_mode, dropout=arm.dropout,
                                    seed=train.seed * 1000, allow_partial=arm.partial_weights, image_size=size)
    except WeightsError as exc:
        raise WeightsError(f"arm '{arm.name}' ({arm.backbone}, weights {source.describe()}): {exc}") from None
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 1, size, size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"arm '{arm.name}': {arm.backbone} cannot take {size}x{size} images (preprocess.size): "
                          f"{first}. Choose a larger preprocess.size (its native size is "
                          f"{_native(arm.backbone)}).") from None
    speed = _train_speed(model, train, size) if estimate else None
    return ArmPlan(arm, train, source, weights_file=path, input_spec=model.input_spec, layout=model.layout,
                   coverage=report.coverage if path is not None else None, load_summary=report.summary(),
                   images_per_second=speed)


def _native(name: str) -> int:
    from thyro.models.archs import arch

    return arch(name).native_size


def _train_speed(model, train: TrainConfig, size: int) -> float:
    """Training images per second of ``model`` on this machine (a few steps on random images)."""
    import torch
    import torch.nn.functional as F

    from thyro.device import resolve_device, use_channels_last

    device = resolve_device(train.device)
    model.to(device).train()
    batch = min(train.batch_size, 16)
    x = torch.rand(batch, 1, size, size, device=device)
    if use_channels_last(device, size, train.channels_last):
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch, device=device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    start = None
    for step in range(ESTIMATE_STEPS + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up
        loss = F.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ESTIMATE_STEPS * batch / max(time.perf_counter() - start, 1e-9)


def _check_tracking(cfg: StudyConfig, rundir: RunDir) -> None:
    if cfg.train.tracking != "mlflow":
        return
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("train.tracking: mlflow needs the mlflow package: pip install 'thyro[tracking]' "
                          "(or set train.tracking: none).")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        parent = next((p for p in [rundir.root, *rundir.root.parents] if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(f"train.tracking: mlflow writes its store to {rundir.mlflow_dir}, and {parent} is not "
                              "a writable folder; choose another --run-dir or set MLFLOW_TRACKING_URI.")


def _check_disk(cfg: StudyConfig, labelled: Manifest, external: tuple[ExternalPlan, ...]) -> None:
    """The image cache (uint8, size x size per image) must fit on the cache's disk."""
    from thyro.data.cache import default_cache_dir

    folder = default_cache_dir()
    probe = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if probe is None:
        return
    need = (len(labelled) + sum(len(e.manifest) for e in external)) * cfg.preprocess.size ** 2
    free = shutil.disk_usage(probe).free
    if need > free:
        raise DataError(f"the image cache needs about {need / 2**20:,.0f} MiB in {folder} and {free / 2**20:,.0f} MiB "
                        "are free; free space there or set THYRO_CACHE_DIR to a larger disk.")


_file_digests: dict[tuple[str, int, int], str] = {}


def _content(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_digests:
        _file_digests[key] = sha256_file(path)
    return _file_digests[key]


def _digest(cfg: StudyConfig, manifest: Path, external: tuple[ExternalPlan, ...]) -> str:
    return sha256_json({"study": study_identity(cfg), "manifest": _content(manifest),
                        "external": {e.name: _content(e.path) for e in external}})


def _check_digest(rundir: RunDir, digest: str, weights: dict[str, str]) -> None:
    """A run directory is continued only with the data and weight files it was started with."""
    stored = rundir.read_plan_digest()
    if stored is None:
        return
    if stored[0] != digest:
        raise ConfigError(f"{rundir.root} was started with other data (the manifest or an external set changed "
                          "since); use another --run-dir, or restore them.")
    changed = [arm for arm, d in weights.items() if stored[1].get(arm, d) != d]
    if changed:
        raise ConfigError(f"{rundir.root} was started with other weights for arm(s) {', '.join(changed)} (their "
                          "file's content changed since); use another --run-dir, or restore the file.")


def _with_estimate(plan: Plan) -> Plan:
    """The plan with the seconds its unfinished jobs take on this machine (training steps timed per arm)."""
    from dataclasses import replace

    total = 0.0
    for job in plan.todo:
        arm = plan.arm(job.arm)
        if not arm.images_per_second:
            continue
        train_images = len(plan.train_ids(job))
        epochs = 1 if arm.config.train_backbone == "cached" else arm.train.epochs
        total += epochs * train_images / arm.images_per_second
    return replace(plan, seconds_estimate=total)
