"""A synthetic study run directory (3 arms x 5 folds, repeated patients, logs), no training needed."""

from __future__ import annotations

import json
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
             arms: dict | None = None, logs: bool = True) -> Path:
    """Write a fake run directory under ``root`` and return it."""
    rng = np.random.default_rng(seed)
    arms = arms or ARMS
    root.mkdir(parents=True, exist_ok=True)
    test_pat = _patients(rng, n_test, "T")
    cv_pat = _patients(rng, n_cv, "P")
    # one label per patient (their nodules share a diagnosis in this stand-in)
    lab = {p: int(rng.uniform() < 0.35) for p in np.unique(np.r_[test_pat, cv_pat])}
    fold_of = {p: i % folds for i, p in enumerate(np.unique(cv_pat))}
    latent = {p: rng.normal() for p in lab}
    rows = []

    def prob(sep, y, p, noise):
        return 1 / (1 + np.exp(-(sep * (y - 0.5) * 2 + latent[p] * 0.8 + noise * 1.2 - 0.3)))

    for arm, (_, sep) in arms.items():
        for i, p in enumerate(cv_pat):
            img = f"cv/{p}_{i}.png"
            rows.append((img, p, p, lab[p], arm, str(fold_of[p]), "val", prob(sep, lab[p], p, rng.normal())))
        fold_probs = np.empty((folds, n_test))
        for k in range(folds):
            for i, p in enumerate(test_pat):
                fold_probs[k, i] = prob(sep, lab[p], p, rng.normal() * 0.9)
                rows.append((f"test/{p}_{i}.png", p, p, lab[p], arm, str(k), "test", fold_probs[k, i]))
        for i, p in enumerate(test_pat):
            rows.append((f"test/{p}_{i}.png", p, p, lab[p], arm, "mean", "test", fold_probs[:, i].mean()))
        if logs:
            for k in range(folds):
                d = root / "jobs" / arm / f"fold{k}"
                d.mkdir(parents=True, exist_ok=True)
                ep = np.arange(1, 11)
                pd.DataFrame({
                    "epoch": ep,
                    "train_loss": 0.7 * np.exp(-ep / (4 + sep)) + rng.normal(0, 0.01, ep.size),
                    "val_loss": 0.7 * np.exp(-ep / 6) + 0.1 + rng.normal(0, 0.01, ep.size),
                    "val_auroc": 0.5 + (0.2 + 0.1 * sep) * (1 - np.exp(-ep / 3)) + rng.normal(0, 0.01, ep.size),
                    "lr": 1e-3 * 0.9**ep,
                    "seconds": rng.uniform(1, 2, ep.size),
                }).to_csv(d / "log.csv", index=False)
    df = pd.DataFrame(rows, columns=["image", "patient", "group", "label", "arm", "fold", "split", "probability"])
    df.to_csv(root / "predictions.csv", index=False)
    (root / "config.yaml").write_text(f"name: synthetic-example\nseed: {seed}\ncv:\n  folds: {folds}\narms:\n"
                                      + "".join(f"  - name: {a}\n    weights: {w}\n" for a, (w, _) in arms.items()))
    (root / "data.json").write_text(json.dumps({
        "n_images": int(n_test + n_cv), "n_patients": len(lab), "n_groups": len(lab),
        "class_balance": {"benign": int(sum(1 - v for v in lab.values())), "malignant": int(sum(lab.values()))},
        "duplicates_merged": 3, "preprocessing": {"size": 224, "crop": "roi"},
    }))
    (root / "results.json").write_text(json.dumps({
        "config": {"name": "synthetic-example"},
        "versions": {"thyro": "0.1.0", "torch": "2.x", "python": "3.x"},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "arms": {a: {"status": "done", "reason": None, "backbone": "resnet18", "weights": w} for a, (w, _) in arms.items()},
    }))
    return root
