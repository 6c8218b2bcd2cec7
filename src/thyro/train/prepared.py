"""What every job of a study reads, made once when the study starts: the image caches of the development data
and of the external sets, the splits and training subsets, and the run directory's record of them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from thyro.config import StudyConfig
from thyro.data.cache import ImageCache
from thyro.data.inspection import class_balance
from thyro.data.manifest import LabelMeaning, Manifest
from thyro.data.splits import Splits
from thyro.run import OOF, TEST, DataSummary, ExternalSummary, JobKey, RunDir, fraction_text
from thyro.train.fit import ArraySet
from thyro.train.plan import Plan


@dataclass
class ImageSet:
    """Labelled images of one source (the development data or an external set) and their cache."""

    manifest: Manifest  # labelled rows
    cache: ImageCache
    label_meaning: LabelMeaning

    def arrays(self, ids: list[str] | None = None) -> ArraySet:
        """The images and labels of ``ids`` (default: every image), in that order."""
        df = self.manifest.df
        ids = list(df["image"]) if ids is None else list(ids)
        labels = dict(zip(df["image"], df["label"].astype(int)))
        idx = self.cache.index_of(ids)
        images = np.asarray(self.cache.images[np.sort(idx)])[np.argsort(np.argsort(idx))]
        groups = dict(zip(df["image"], df["group"]))
        return ArraySet(images, np.array([labels[i] for i in ids]), ids, [groups[i] for i in ids])

    def labels(self, ids: list[str]) -> np.ndarray:
        """The labels of ``ids`` (0 benign, 1 malignant), in that order, without reading their images."""
        df = self.manifest.df
        labels = dict(zip(df["image"], df["label"].astype(int)))
        return np.array([labels[i] for i in ids])

    def groups(self, ids: list[str]) -> list[str]:
        g = dict(zip(self.manifest.df["image"], self.manifest.df["group"]))
        return [g[i] for i in ids]


@dataclass
class Prepared:
    """What every job of a study reads: the development images and splits, the training subsets of each
    fraction, and the external validation sets; ``sizes`` holds the images at every size the arms use
    (:meth:`at`), ``dev`` and ``external`` those of the first."""

    dev: ImageSet
    splits: Splits
    subsets: dict  # (fold, fraction) -> training image ids
    external: dict[str, ImageSet]
    sizes: dict[int, tuple[ImageSet, dict[str, ImageSet]]] = field(default_factory=dict)

    def at(self, size: int) -> Prepared:
        """The same study with its images at ``size`` px (an arm's own size)."""
        if size not in self.sizes or self.sizes[size][0] is self.dev:
            return self
        dev, external = self.sizes[size]
        return replace(self, dev=dev, external=external)

    @property
    def labelled(self) -> Manifest:
        return self.dev.manifest

    @property
    def label_meaning(self) -> LabelMeaning:
        return self.dev.label_meaning

    def train_ids(self, job: JobKey) -> list[str]:
        return self.subsets.get((job.fold, job.fraction)) or self.splits.train_ids(job.fold)

    def label_sources(self) -> dict[str, str]:
        out = {OOF: self.dev.label_meaning.source, TEST: self.dev.label_meaning.source}
        out.update({name: s.label_meaning.source for name, s in self.external.items()})
        return out


def prepare(cfg: StudyConfig, base_dir: Path, rundir: RunDir, plan: Plan) -> Prepared:
    """Build the image caches of the development data and the external sets, and record the study (its
    configuration, splits, training subsets and the plan's digest) in the run directory.

    Decoding every image happens here: an image that fails to decode stops the study before anything is
    written, so a failed start leaves nothing that would stop the next attempt.
    """
    labelled = plan.labelled
    sizes: dict[int, tuple[ImageSet, dict[str, ImageSet]]] = {}
    for arm in plan.arms:  # one image cache per size the arms use (the study's preprocessing otherwise)
        if arm.size not in sizes:
            pre = cfg.arm_preprocess(arm.config)
            sizes[arm.size] = (ImageSet(labelled, ImageCache.build(labelled, pre), plan.labels),
                               {e.name: ImageSet(e.manifest, ImageCache.build(e.manifest, pre), e.labels)
                                for e in plan.external})
    partial = [f for f in cfg.data.train_fractions if f < 1.0]
    with rundir.locked():
        if not rundir.splits_path.exists():
            rundir.write_splits(plan.splits)
        if partial and rundir.read_fractions() is None:
            rundir.write_fractions(plan.subsets, cfg.data.seed)
        record = rundir.read_record()
        if record is None or record.config.report != cfg.report:  # the report's block may change
            rundir.write_record(cfg, base_dir)
        rundir.write_plan_digest(plan.digest, plan.weight_digests)
    dev, external = next(iter(sizes.values()))
    prep = Prepared(dev, plan.splits, plan.subsets, external, sizes)
    rundir.write_data(data_summary(cfg, plan, prep))
    return prep


def _balance(df) -> dict[str, dict[str, int]]:
    b = class_balance(df)
    return {unit: {k: int(v) for k, v in b[unit].items()} for unit in b.columns}


def data_summary(cfg: StudyConfig, plan: Plan, prep: Prepared) -> DataSummary:
    """The run's data summary: counts by class for images, patients and groups (the same function as
    ``thyro data import`` and ``inspect``), splits, label provenance, external sets and preprocessing."""
    manifest, df = plan.manifest, prep.labelled.df
    summary = DataSummary(
        manifest=str(plan.manifest_path),
        labels=plan.labels,
        images_total=int(len(manifest)),
        images_labelled=int(len(df)),
        images_unlabelled=int(len(manifest) - len(df)),
        class_balance=_balance(manifest.df),
        groups_merging_patients=int((df.groupby("group")["patient_id"].nunique() > 1).sum()),
        test_images=len(prep.splits.test),
        fold_sizes=[len(f) for f in prep.splits.folds],
        preprocess=cfg.preprocess.model_dump(mode="json"),
    )
    if len(cfg.data.train_fractions) > 1:
        summary.train_fractions = {fraction_text(f): [len(prep.train_ids(JobKey("", k, f)))
                                                      for k in range(len(prep.splits.folds))]
                                   for f in cfg.data.train_fractions}
    if plan.external:
        summary.external = {e.name: ExternalSummary(
            manifest=str(e.path), labels=e.labels, images=len(e.manifest), class_balance=_balance(e.manifest.df))
            for e in plan.external}
    return summary
