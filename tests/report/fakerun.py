"""A synthetic study run directory (3 arms x 5 folds, repeated patients, logs), no training needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ARMS = {  # arm -> (weights, separation of the latent score)
    "scratch": ("none", 0.35),
    "imagenet": ("imagenet", 0.6),
    "radimagenet": ("radimagenet", 0.8),
}


def _patients(rng, n_images: int, prefix: str) -> np.ndarray:
    """Patient ids with 1-3 images each."""
    ids, k = [], 0
    while len(ids) < n_images:
        ids += [f"{prefix}{k:04d}"] * int(rng.choice([1, 1, 2, 3]))
        k += 1
    return np.array(ids[:n_images])


def make_run(root: Path, *, n_test: int = 101, n_cv: int = 300, folds: int = 5, seed: int = 0,
             arms: dict | None = None, logs: bool = True, external: dict[str, int] | None = None) -> Path:
    """Write a fake run directory under ``root`` through the run directory's owner and return it.

    ``external`` maps an external set's name to its number of images (scored by every arm's ensemble).
    """
    from thyro.config import StudyConfig
    from thyro.run import DataSummary, JobKey, Results, RunDir, predictions_frame

    rng = np.random.default_rng(seed)
    arms = arms or ARMS
    run = RunDir(root)
    test_pat = _patients(rng, n_test, "T")
    cv_pat = _patients(rng, n_cv, "P")
    ext_pat = {name: _patients(rng, n, f"E{name}") for name, n in (external or {}).items()}
    every = np.unique(np.concatenate([test_pat, cv_pat, *ext_pat.values()]))
    # one label per patient (their nodules share a diagnosis in this stand-in)
    lab = {p: int(rng.uniform() < 0.35) for p in every}
    fold_of = {p: i % folds for i, p in enumerate(np.unique(cv_pat))}
    latent = {p: rng.normal() for p in lab}
    rows, meta = [], {}

    def prob(sep, y, p, noise):
        return 1 / (1 + np.exp(-(sep * (y - 0.5) * 2 + latent[p] * 0.8 + noise * 1.2 - 0.3)))

    def add(image, p, arm, split, fold, value):
        meta[image] = {"patient_id": p, "group": p, "label": lab[p]}
        rows.append({"image": image, "arm": arm, "train_fraction": 1.0, "split": split, "fold": fold,
                     "ensemble": fold is None, "probability": value})

    for arm, (_, sep) in arms.items():
        for i, p in enumerate(cv_pat):
            add(f"cv/{p}_{i}.png", p, arm, "val", fold_of[p], prob(sep, lab[p], p, rng.normal()))
        for split, pats in [("test", test_pat), *ext_pat.items()]:
            fold_probs = np.empty((folds, len(pats)))
            for k in range(folds):
                for i, p in enumerate(pats):
                    fold_probs[k, i] = prob(sep, lab[p], p, rng.normal() * 0.9)
                    add(f"{split}/{p}_{i}.png", p, arm, split, k, fold_probs[k, i])
            for i, p in enumerate(pats):
                add(f"{split}/{p}_{i}.png", p, arm, split, None, fold_probs[:, i].mean())
        if logs:
            for k in range(folds):
                log = run.job_files(JobKey(arm, k)).log
                log.parent.mkdir(parents=True, exist_ok=True)
                ep = np.arange(1, 11)
                pd.DataFrame({
                    "epoch": ep,
                    "train_loss": 0.7 * np.exp(-ep / (4 + sep)) + rng.normal(0, 0.01, ep.size),
                    "val_loss": 0.7 * np.exp(-ep / 6) + 0.1 + rng.normal(0, 0.01, ep.size),
                    "val_auroc": 0.5 + (0.2 + 0.1 * sep) * (1 - np.exp(-ep / 3)) + rng.normal(0, 0.01, ep.size),
                    "lr": 1e-3 * 0.9**ep,
                    "seconds": rng.uniform(1, 2, ep.size),
                }).to_csv(log, index=False)
    run.write_predictions(predictions_frame(rows, pd.DataFrame.from_dict(meta, orient="index"), "pathology"))
    weights = {"none": "none", "imagenet": "imagenet"}
    cfg = StudyConfig.parse({
        "name": "synthetic-example", "data": {"manifest": "manifest.csv", "folds": folds},
        "arms": [{"name": a, "weights": weights.get(w, {"radimagenet": "radimagenet.h5"})} for a, (w, _) in arms.items()],
    })
    run.write_record(cfg, root)
    # keys this version does not write (patients, groups, ...) are kept, as from another thyro version
    run.write_data(DataSummary.from_dict({
        "images_total": int(n_test + n_cv), "patients": len(lab), "groups": len(lab),
        "class_balance": {"images": {"benign": int(sum(1 - v for v in lab.values())), "malignant": int(sum(lab.values()))}},
        "duplicates_merged": 3, "preprocessing": {"size": 224, "crop": "roi"},
    }))
    run.write_results(Results.from_dict({
        "study": "synthetic-example",
        "versions": {"thyro": "0.1.0", "torch": "2.x", "python": "3.x"},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "arms": {a: {"status": "done", "reason": None} for a in arms},
        "labels": {"source": "pathology", "definition": ""},
    }))
    return root
