"""``thyro demo``: the reference study's three-arm design in miniature, offline, on the built-in phantom.

1. a synthetic thyroid-ultrasound cohort small enough to train on in minutes (about 120 patients), and an
   external set of at least 1,000 images from new patients; both have known malignancy probabilities,
   so the best achievable AUROC is known;
2. two backbones pretrained with ``thyro pretrain``: one on a synthetic non-medical corpus (shapes,
   textures, gradients: the stand-in for ImageNet) and one on a synthetic radiology corpus (ultrasound,
   CT and MR classes, plus thyroid nodules by appearance at the scale of the study's crops: the stand-in
   for RadImageNet, which holds thyroid ultrasound too); neither corpus knows any cohort's labels;
3. the study: random initialisation vs the generic vs the domain backbone, the same 5-fold
   cross-validation and held-out test set, every fold model scoring the external set;
4. the report, with the paired tests on the external set that decide the comparison.

The phantom shows the mechanism (what a domain-pretrained start buys when labelled images are few and
what it takes to measure it), not evidence about patients.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import Field

from thyro.data.manifest import read_manifest
from thyro.progress import duration
from thyro.run import Results, RunDir

log = logging.getLogger(__name__)

#: The demo study; ``configs/demo.yaml`` in the repository is this configuration written out.
DEMO_STUDY = {
    "name": "demo",
    "data": {"manifest": "phantom/manifest.csv", "test_size": 0.2, "folds": 5, "seed": 7,
             "external": [{"name": "new-patients", "manifest": "external/manifest.csv"}]},
    "preprocess": {"size": 64, "remove_frame": True, "roi_crop": True, "roi_margin": 0.3, "keep_aspect": True},
    "arms": [
        {"name": "scratch", "backbone": "resnet18", "weights": "none"},
        {"name": "generic", "backbone": "resnet18", "weights": {"file": "backbone/resnet18-generic.safetensors"}},
        {"name": "domain", "backbone": "resnet18", "weights": {"file": "backbone/resnet18-radiology.safetensors"}},
    ],
    # backbone_lr_mult applies to the pretrained arms only: their backbones fine-tune at a tenth of the
    # head's rate (BENCHMARKS.md: full-rate fine-tuning gave 0.808 on the external set, a tenth 0.824)
    "train": {"epochs": 8, "batch_size": 32, "lr": 0.001, "warmup_epochs": 1, "backbone_lr_mult": 0.1,
              "selection": "last", "imbalance": "weighted_loss", "seed": 0},
    # the demo's questions: does a domain (radiology) start beat a generic one, and beat no pretraining?
    "report": {"comparisons": [["domain", "generic"], ["domain", "scratch"]],
               "reference": "the reference study (J Am Coll Radiol 2024, 101 test cases): scratch 0.69, ImageNet "
                            "0.79, RadImageNet 0.83. Here generic stands in for ImageNet and domain for RadImageNet; "
                            "the phantom shows the mechanism, not evidence about patients."},
}


class DemoResults(Results):
    """The demo study's :class:`~thyro.run.Results`, with the best AUROC the phantoms allow (their known
    malignancy probabilities as scores): ``{"development": ..., "new-patients": ...}``."""

    best_auroc: dict[str, float] = Field(default_factory=dict, exclude=True)
    seconds: float | None = Field(default=None, exclude=True)
    expected_seconds: float | None = Field(default=None, exclude=True)

    def summary(self) -> str:
        """One line: every arm's AUROC on the external set beside the best achievable there."""
        ext = {a: r.external_auroc.get("new-patients") for a, r in self.arms.items()}
        return ("external set (" + ", ".join(f"{a} {v:.3f}" for a, v in ext.items() if v is not None)
                + f"); best achievable {self.best_auroc['new-patients']:.3f}. The phantom shows the mechanism, not "
                  "evidence about patients.")


#: Pretraining corpora: images per class.  The radiology corpus puts most of its images into thyroid
#: nodule appearances (the study's task), fewer into other organs and modalities.
GENERIC_PER_CLASS = 70
RADIOLOGY_PER_CLASS = {"appearance": 140, "other": 35}
PRETRAIN_EPOCHS = 6
#: ``thyro demo --quick``: every step at a fraction of the size (about a minute on a 2-core CPU).
QUICK = {"patients": 40, "external_patients": 40, "epochs": 2, "pretrain_epochs": 1, "corpus_scale": 0.15}


#: A fold model's forward pass (scoring) as a share of one training step (forward + backward + update).
SCORING_SHARE = 0.35
#: The estimate times the phantom drawn for this many patients.
_DRAW_SAMPLE_PATIENTS = 3


def demo_work(*, patients: int = 120, external_patients: int = 500, size: int = 64, phantom_size: int = 128,
              epochs: int | None = None, pretrain_epochs: int = PRETRAIN_EPOCHS,
              corpus_scale: float = 1.0) -> dict[str, float]:
    """The work each phase of :func:`run_demo` does: ``phantoms`` in patients drawn (a corpus image counted
    by its pixels against a patient's two 128 px views), ``pretraining`` and ``study`` in training steps of
    one image (a fold model scoring an image counts ``SCORING_SHARE`` of one)."""
    train_epochs = epochs if epochs is not None else DEMO_STUDY["train"]["epochs"]
    corpus_images = sum(sum(counts.values()) for counts, _ in _corpora(corpus_scale).values())
    images = 2 * patients  # 1-3 views each
    test = DEMO_STUDY["data"]["test_size"] * images
    folds = DEMO_STUDY["data"]["folds"]
    held_out = (images - test) / folds
    per_job = train_epochs * (images - test - held_out) + SCORING_SHARE * (
        train_epochs * held_out + held_out + test + 2 * external_patients)
    return {"phantoms": patients + external_patients + corpus_images / 2 * (max(size, 64) / phantom_size) ** 2,
            "pretraining": corpus_images * pretrain_epochs,
            "study": len(DEMO_STUDY["arms"]) * folds * per_job}


def expected_seconds(*, patients: int = 120, external_patients: int = 500, size: int = 64, phantom_size: int = 128,
                     epochs: int | None = None, pretrain_epochs: int = PRETRAIN_EPOCHS, corpus_scale: float = 1.0,
                     device: str | None = None, seed: int = 0) -> dict[str, float]:
    """Seconds each phase of :func:`run_demo` is expected to take on this machine: :func:`demo_work` at the
    speeds measured here, the same timed steps a study's dry run uses (:func:`thyro.train.estimate.train_speed`, a
    few training steps of ResNet-18 at the demo's size) and the phantom drawn for a few patients."""
    import torch  # lazy: torch; the command line imports this module for --help

    from thyro.config import TrainConfig  # lazy: torch (the configuration checks architectures)
    from thyro.data.phantom import generate_cohort  # lazy: OpenCV and SciPy, kept off --help
    from thyro.models import build_model  # lazy: torch
    from thyro.train.estimate import train_speed  # lazy: torch

    model, _ = build_model("resnet18", "none", seed=seed)
    train = TrainConfig(**{**DEMO_STUDY["train"], "device": device or "auto"})
    speed = train_speed(model, torch.rand(min(train.batch_size, 16), 1, size, size), train)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_cohort(Path(tmp) / "c", n_patients=_DRAW_SAMPLE_PATIENTS, size=phantom_size, seed=seed)
        per_patient = (time.perf_counter() - start) / _DRAW_SAMPLE_PATIENTS
    work = demo_work(patients=patients, external_patients=external_patients, size=size, phantom_size=phantom_size,
                     epochs=epochs, pretrain_epochs=pretrain_epochs, corpus_scale=corpus_scale)
    return {"phantoms": work["phantoms"] * per_patient, "pretraining": work["pretraining"] / speed,
            "study": work["study"] / speed}


def run_demo(out: str | Path = "thyro-demo", *, patients: int = 120, external_patients: int = 500, size: int = 64,
             phantom_size: int = 128, epochs: int | None = None, pretrain_epochs: int = PRETRAIN_EPOCHS,
             device: str | None = None, seed: int = 0, jobs: int = 1, corpus_scale: float = 1.0,
             worker_init: Callable[[], None] | None = None) -> DemoResults:
    """Run the demonstration into ``out``; returns the study's results (and the phantoms' best AUROCs).

    Every step is kept on disk and skipped when rerun, so an interrupted demo continues.
    ``corpus_scale`` scales the pretraining corpora's images per class (a quick look, or a test);
    ``worker_init`` is handed to the study's worker processes (:meth:`thyro.train.study.Study.run`).
    """
    from thyro.train.study import run_study  # lazy: torch; the command line imports this module for --help

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    left = _phases_left(out)
    expected = dict.fromkeys(("phantoms", "pretraining", "study"), 0.0)
    if left:  # timing steps only for work still to do
        expected = expected_seconds(
            patients=patients, external_patients=external_patients, size=size, phantom_size=phantom_size,
            epochs=epochs, pretrain_epochs=pretrain_epochs, corpus_scale=corpus_scale, device=device, seed=seed)
    expected = _announce(out, {k: (v if k in left else 0.0) for k, v in expected.items()})
    best = _cohorts(out, patients, external_patients, phantom_size, seed)
    _backbones(out, size, pretrain_epochs, device, seed, corpus_scale)
    cfg = yaml.safe_load(yaml.safe_dump(DEMO_STUDY))
    cfg["preprocess"]["size"] = size
    if epochs is not None:
        cfg["train"]["epochs"] = epochs
    config_path = out / "demo.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    log.info("5/5 study: scratch vs generic vs domain-pretrained, 5-fold CV, held-out test set, external set")
    results = run_study(config_path, run_dir=out / "run", device=device, report=True, workers=jobs,
                        worker_init=worker_init)
    return DemoResults(**dict(results), best_auroc=best, seconds=time.perf_counter() - t0, expected_seconds=expected)


def _phases_left(out: Path) -> set[str]:
    """The phases of the demo in ``out`` not yet finished on disk."""
    left = set()
    if not ((out / "phantom" / "manifest.csv").exists() and (out / "external" / "manifest.csv").exists()):
        left.add("phantoms")
    if not all((out / "backbone" / f"resnet18-{name}.safetensors").exists() for name in ("generic", "radiology")):
        left.add("pretraining")
    rundir = RunDir(out / "run")
    done = rundir.read_results() if rundir.results_path.exists() else None
    if done is None or not done.complete:
        left.add("study")
    return left


def _announce(out: Path, expected: dict[str, float]) -> float:
    """Log the time each phase not yet done on disk is expected to take (0 for those done)."""
    if any(v == 0.0 for v in expected.values()):
        log.info(f"continuing the demo in {out}: finished steps are kept")
    log.info(f"expected time on this machine: about {duration(sum(expected.values()))} (drawing the phantoms "
             f"{duration(expected['phantoms'])}, pretraining two backbones {duration(expected['pretraining'])}, "
             f"the three-arm study {duration(expected['study'])}; from a few timed training steps)")
    return sum(expected.values())


def _cohorts(out: Path, patients: int, external_patients: int, phantom_size: int, seed: int) -> dict[str, float]:
    """Steps 1 and 2: the phantom cohort and the external set (made once); the best AUROC each allows."""
    from thyro.data.phantom import best_auroc, generate_cohort  # lazy: OpenCV and SciPy, kept off --help

    cohort = out / "phantom" / "manifest.csv"
    if not cohort.exists():
        log.info(f"1/5 phantom cohort: {patients} synthetic patients, {phantom_size} px images")
        generate_cohort(out / "phantom", n_patients=patients, size=phantom_size, seed=seed)
    external = out / "external" / "manifest.csv"
    if not external.exists():
        log.info(f"2/5 external set: {external_patients} new synthetic patients, 2 views each")
        generate_cohort(out / "external", n_patients=external_patients, images_per_patient=(2, 2),
                        size=phantom_size, seed=seed + 1000)
    best = {"development": best_auroc(read_manifest(cohort)), "new-patients": best_auroc(read_manifest(external))}
    log.info(f"    best achievable AUROC (known malignancy probabilities): cohort {best['development']:.3f}, "
             f"external set {best['new-patients']:.3f}")
    return best


def _corpora(corpus_scale: float) -> dict[str, tuple[dict[str, int], str]]:
    """The two pretraining corpora: images per class and what they stand for."""
    from thyro.data.phantom import APPEARANCE_CLASSES, CORPUS_CLASSES, GENERIC_CLASSES  # lazy: OpenCV, SciPy

    def count(n: int) -> int:
        return max(2, round(n * corpus_scale))

    radiology = {**{c: count(RADIOLOGY_PER_CLASS["other"]) for c in CORPUS_CLASSES},
                 **{c: count(RADIOLOGY_PER_CLASS["appearance"]) for c in APPEARANCE_CLASSES}}
    return {
        "generic": ({c: count(GENERIC_PER_CLASS) for c in GENERIC_CLASSES},
                    "non-medical shapes and textures (the ImageNet stand-in)"),
        "radiology": (radiology, "ultrasound, CT and MR classes and thyroid nodules by appearance, cropped and "
                                 "letterboxed as the study crops (the RadImageNet stand-in)"),
    }


def _backbones(out: Path, size: int, pretrain_epochs: int, device: str | None, seed: int,
               corpus_scale: float) -> None:
    """Steps 3 and 4: the generic and the domain backbone, each pretrained once on its synthetic corpus."""
    from thyro.config import AugmentConfig, PretrainConfig  # lazy: torch (the configuration checks architectures)
    from thyro.data.phantom import generate_corpus  # lazy: OpenCV and SciPy, kept off --help
    from thyro.data.preprocess import PreprocessConfig  # lazy: OpenCV
    from thyro.train.pretrain import pretrain  # lazy: torch

    corpora = _corpora(corpus_scale)
    # Corpus images are made at the study's input size and used as they are: no scan-area search (an
    # appearance crop has no screen around it), letterboxed like the study's crops, mild augmentation.
    # Zooming in further, or a scan-area search that cut the letterbox away, taught the backbone nodules
    # at shapes and scales the study never shows it (BENCHMARKS.md).
    preprocess = PreprocessConfig(size=size, remove_frame=False, roi_crop=False, keep_aspect=True,
                                  inpaint_marks=False)
    for step, (name, (counts, what)) in enumerate(corpora.items(), start=3):
        backbone = out / "backbone" / f"resnet18-{name}.safetensors"
        if backbone.exists():
            log.info(f"{step}/5 {name} backbone already pretrained: {backbone}")
            continue
        log.info(f"{step}/5 pretraining ResNet-18 on a synthetic {name} corpus: {len(counts)} classes, "
                 f"{sum(counts.values())} images: {what}")
        corpus = generate_corpus(out / f"corpus-{name}", n_per_class=counts, size=max(size, 64),
                                 seed=seed + step, classes=list(counts))
        pretrain(corpus, backbone, PretrainConfig(
            arch="resnet18", epochs=pretrain_epochs, batch_size=64, optimizer="adamw", lr=1e-3,
            augment=AugmentConfig(scale=(0.95, 1.15), translate=0.05, rotate_deg=10),
            preprocess=preprocess, device=device or "auto", seed=seed))
