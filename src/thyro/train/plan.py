"""A study resolved before it runs: :func:`make_plan` turns configuration + manifest + splits + run directory
into one typed, immutable :class:`Plan`.

Every check a run can fail happens here, and every problem is reported at once, before anything is trained
or written: the configuration against a run directory that holds another study; the manifest and its
images (existence and header: format, size, the pixel limit); the splits, training fractions and inner
selection splits; each external set (labels of both classes, no image shared with the development data);
each arm's weights, loaded as a job loads them (the file found, its container read by its bytes, NaN/Inf,
coverage of the backbone, a mapping by position verified, tensors that look trained) and run once
at its image size (the study's, or the arm's own); the tracking store; disk space for the image cache.  ``thyro study
--dry-run`` prints the plan and stops; the real run executes it, and no job parses the configuration or a
weight specification again: each job gets its arm's :class:`ArmPlan`.

The plan's :attr:`Plan.digest` (the study's identity, the content of the manifest and of the external sets)
and the content digest of each arm's weight file are written into the run directory when the study starts; a
resumed or concurrent process whose plan differs stops instead of mixing results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from thyro.config import ArmConfig, StudyConfig, TrainConfig
from thyro.data.manifest import LabelMeaning, Manifest
from thyro.data.preprocess import PreprocessConfig
from thyro.data.splits import Splits
from thyro.errors import ConfigError, ThyroError, WeightsError
from thyro.fileio import sha256_file, sha256_json
from thyro.models import build_model, provenance_line
from thyro.models.adapter import InputSpec
from thyro.models.archs import arch
from thyro.models.weights.sources import WeightSource
from thyro.run import JobKey, RunDir
from thyro.train.arms import Fitter, Selection
from thyro.train.estimate import estimate_seconds, train_speed
from thyro.train.checks import (
    check_disk,
    check_inner_splits,
    check_run_dir,
    check_tracking,
    make_or_load_splits,
    read_development,
    read_external,
    resolve_path,
    size_notes,
    study_identity,
)


@dataclass(frozen=True)
class ArmPlan:
    """One arm, resolved: its settings, its weight source (parsed once, paths absolute), how it is fitted and
    how its epoch is selected (:mod:`thyro.train.arms`, chosen once here), and what loading its weights gave.

    ``train`` holds the arm's training settings as its fitter uses them.  ``skipped`` holds the reason when
    ``skip_missing`` set the arm aside (its weight file is missing).  ``provenance`` is the weights' provenance line
    (:func:`~thyro.models.provenance_line`) and ``weights_status`` ``verified``, ``unverified`` or ``untrained``
    (None for a random start).
    """

    config: ArmConfig
    train: TrainConfig
    source: WeightSource
    fitter: Fitter
    selection: Selection
    weights_file: Path | None = None
    input_spec: InputSpec | None = None
    layout: str = "timm"
    coverage: tuple[int, int] | None = None
    load_summary: str = ""
    provenance: str | None = None
    weights_status: str | None = None
    skipped: str | None = None
    images_per_second: float | None = None
    preprocess: PreprocessConfig | None = None  # the arm's preprocessing (the study's at the arm's own size)

    @property
    def size(self) -> int:
        """The arm's image side in px."""
        return self.preprocess.size if self.preprocess is not None else PreprocessConfig().size

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pretrained(self) -> bool:
        return self.source.kind != "none"

    @property
    def needs_inner_split(self) -> bool:
        """Whether each job splits its training part (for selection, or for tuning)."""
        return self.selection.needs_inner or bool(self.train.tune.grid)

    @classmethod
    def of(cls, arm: ArmConfig, study: TrainConfig, base_dir: Path, **resolved) -> ArmPlan:
        """``arm`` with its fitter, selection and weight source chosen; ``resolved``: what loading gave (and the
        arm's ``preprocess``)."""
        fitter = Fitter.for_mode(arm.train_backbone)
        try:
            train = fitter.train_config(arm.train_config(study))
        except ConfigError as exc:
            raise ConfigError(f"arm '{arm.name}': {exc}") from None
        return cls(arm, train, arm.weight_source(base_dir), fitter, fitter.selection(train), **resolved)


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
            "arms": {a.name: {"backbone": a.config.backbone, "weights": a.source.describe(), "size": a.size,
                              "file": str(a.weights_file) if a.weights_file else None,
                              "coverage": list(a.coverage) if a.coverage else None, "layout": a.layout,
                              "input": (a.input_spec.describe(a.size, pretrained=a.source.kind != "none")
                                        if a.input_spec else None),
                              "loaded": a.load_summary, "skipped": a.skipped, "provenance": a.provenance,
                              "weights_status": a.weights_status,
                              "train_images_per_second": a.images_per_second} for a in self.arms},
            "external": {e.name: {"manifest": str(e.path), "images": len(e.manifest), "labels": e.labels.to_dict()}
                         for e in self.external},
            "jobs": [{"job": j.name, "done": j.name in self.done} for j in self.jobs],
            "seconds_estimate": self.seconds_estimate, "notes": list(self.notes),
        }


def parse_only(only: list[str] | None, cfg: StudyConfig, *, option: str | None = None) -> list[JobKey] | None:
    """Parse ``ARM:FOLD``, ``ARM@FRACTION:FOLD`` or ``ARM`` / ``ARM:*`` (all its folds) selectors into jobs.

    A bad selector is a :class:`ConfigError` that names it as the parameter ``only``, or as ``option`` (the
    command line's name for it) when given.
    """
    if not only:
        return None
    out: list[JobKey] = []
    for item in only:
        where = f"{option} {item!r}" if option else f"only={item!r}"
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
                raise ConfigError(f"{where}: {frac!r} is not one of the study's training fractions "
                                  f"(data.train_fractions: {', '.join(f'{f:g}' for f in fractions)}).")
            fractions = [value]
        if fold in ("", "*"):
            out += [JobKey(arm, k, f) for f in fractions for k in range(cfg.data.folds)]
            continue
        if not fold.isdigit() or not 0 <= int(fold) < cfg.data.folds:
            raise ConfigError(f"{where}: the fold must be 0..{cfg.data.folds - 1}")
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
    problems.attempt(check_run_dir, cfg, rundir)
    manifest_path = resolve_path(cfg.data.manifest, base_dir)
    manifest = problems.attempt(read_development, manifest_path)
    if manifest is None:
        problems.raise_all()
    labelled = manifest.labelled()
    split_result = problems.attempt(make_or_load_splits, cfg, base_dir, rundir, labelled)
    external = []
    for e in cfg.data.external:
        path = resolve_path(e.manifest, base_dir)
        found = problems.attempt(read_external, e.name, path, labelled)
        if found is not None:
            external.append(ExternalPlan(e.name, path, found, found.label_meaning()))
    external = tuple(external)
    names = {j.arm for j in selected} if selected is not None else {a.name for a in cfg.arms}
    arms = []
    for arm in cfg.arms:
        planned = problems.attempt(plan_arm, arm, cfg, base_dir, skip_missing=skip_missing,
                                   estimate=estimate and arm.name in names) if arm.name in names else None
        arms.append(planned or ArmPlan.of(arm, cfg.train, base_dir, preprocess=cfg.arm_preprocess(arm)))
    problems.attempt(check_tracking, cfg, rundir)
    problems.attempt(check_disk, {a.size for a in arms}, labelled, [e.manifest for e in external])
    if split_result is not None:
        problems.attempt(check_inner_splits, [a for a in arms if a.needs_inner_split], cfg.data.train_fractions,
                         labelled, *split_result[:2])
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
                digest=digest, weight_digests=weight_digests,
                notes=tuple(size_notes(cfg, labelled, splits, {e.name: e.manifest for e in external})
                            + [f"arm '{a.name}': {n}" for a in arms if not a.skipped for n in a.fitter.notes(a.train)]))
    if estimate:
        plan = replace(plan, seconds_estimate=estimate_seconds(plan))
    return plan


def all_study_jobs(cfg: StudyConfig) -> list[JobKey]:
    """Every job of the study (arm x training fraction x fold; the whole folds first)."""
    return [JobKey(arm.name, k, f) for f in sorted(cfg.data.train_fractions, reverse=True) for arm in cfg.arms
            for k in range(cfg.data.folds)]


def plan_arm(arm: ArmConfig, cfg: StudyConfig, base_dir: Path, *, skip_missing: bool = False,
             estimate: bool = False) -> ArmPlan:
    """An arm resolved: its weights loaded as a job loads them and the network run once at the study's size.

    A missing weight file stops the study (naming every place looked), or with ``skip_missing`` sets the arm
    aside; a file that is there but unusable always stops it.
    """
    plan = ArmPlan.of(arm, cfg.train, base_dir, preprocess=cfg.arm_preprocess(arm))
    train, source = plan.train, plan.source
    try:
        path = source.resolve(arm.backbone)
    except WeightsError as exc:
        if skip_missing:
            return replace(plan, skipped=str(exc))
        raise WeightsError(f"arm '{arm.name}': {exc}\n(no training has started; skip_missing=True, --skip-missing, runs the other arms "
                           "and records this one as skipped)") from None
    size = plan.size
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
        raise ConfigError(f"arm '{arm.name}': {arm.backbone} cannot take {size}x{size} images (preprocess.size, or "
                          f"the arm's size): {first}. Choose a larger size (its native size is "
                          f"{_native(arm.backbone)}).") from None
    try:
        plan.fitter.check(model, train, size)
    except ConfigError as exc:
        raise ConfigError(f"arm '{arm.name}': {exc}") from None
    speed = train_speed(*plan.fitter.timed(model, train, size), train) if estimate else None
    pretrained = path is not None and report.verification is not None
    return replace(plan, weights_file=path, input_spec=model.input_spec, layout=model.layout,
                   coverage=report.coverage if path is not None else None, load_summary=report.summary(),
                   provenance=provenance_line(report) if pretrained else None,
                   weights_status=report.verification.status if pretrained else None, images_per_second=speed)


def _native(name: str) -> int:
    return arch(name).native_size


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
                          "since); use another run directory (run_dir, --run-dir), or restore them.")
    changed = [arm for arm, d in weights.items() if stored[1].get(arm, d) != d]
    if changed:
        raise ConfigError(f"{rundir.root} was started with other weights for arm(s) {', '.join(changed)} (their "
                          "file's content changed since); use another run directory (run_dir, --run-dir), or restore "
                          "the file.")
