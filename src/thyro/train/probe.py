"""A linear probe on cached features (``train_backbone: cached``): the frozen backbone runs once per image.

Fine-tuning runs the whole network forward and back for every image in every epoch.  A linear probe needs
the backbone's pooled features only once: computed in inference mode for each training image and its
horizontal mirror (the one augmentation that keeps an ultrasound image an ultrasound image of the same
nodule), standardised, and fitted with L2-regularised logistic regression (scikit-learn), the strength
chosen by AUROC on group-respecting, stratified inner folds of the training part (patients and duplicates
never split; the held-out fold and the test set are not looked at).  The solution is written into the
model's own classification head (the standardisation folded into its weight and bias), so the result is an
ordinary model: predict, bundle, ONNX export and serve treat it like any other.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from thyro.device import autocast, autocast_dtype, resolve_device, use_channels_last
from thyro.errors import TrainingError
from thyro.fileio import write_csv_rows
from thyro.models.archs import arch as arch_info
from thyro.models.inference import to_input
from thyro.run import JobFiles
from thyro.stats.support import estimable_auroc
from thyro.train.fit import LOG_FIELDS, FitResult

log = logging.getLogger(__name__)

#: Inverse L2 strengths tried (on standardised features).
CS = tuple(float(c) for c in np.logspace(-4, 2, 13))
MAX_INNER_FOLDS = 5


@torch.no_grad()
def pooled_features(model, images: np.ndarray, *, device: torch.device, batch_size: int = 128, amp: str = "auto",
                    flip: bool = True) -> np.ndarray:
    """The pooled features the head reads, ``(N, F)``, or ``(N, 2, F)`` with the mirror image's beside them."""
    model.eval()
    dtype = autocast_dtype(device, amp)
    out = []
    for start in range(0, len(images), batch_size):  # a batch copied at a time: ``images`` may be a read-only memmap
        xb = to_input(torch.from_numpy(np.array(images[start:start + batch_size])).to(device))
        if use_channels_last(device, xb.shape[-1]):
            xb = xb.contiguous(memory_format=torch.channels_last)
        views = [xb, torch.flip(xb, dims=[3])] if flip else [xb]
        with autocast(device, dtype):
            feats = [model.forward_features(v).float().cpu() for v in views]
        out.append(torch.stack(feats, dim=1) if flip else feats[0])
    return torch.cat(out).numpy() if out else np.zeros((0, 2 if flip else 0), np.float32)


def _inner_folds(labels: np.ndarray, groups: list[str], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    per_class = [len({g for g, y in zip(groups, labels) if y == c}) for c in (0, 1)]
    k = min(MAX_INNER_FOLDS, *per_class)
    if k < 2:
        raise TrainingError(f"a cached-feature probe chooses its regularisation on inner folds of the training part, "
                            f"which holds {per_class[0]} benign and {per_class[1]} malignant patient group(s); it "
                            "needs at least 2 of each.")
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(labels, labels, groups))


def _logistic_regression(folds, balanced: bool) -> LogisticRegressionCV:
    """L2 logistic regression over :data:`CS`, chosen by AUROC on ``folds``."""
    kwargs = {}
    if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters:  # scikit-learn >= 1.8
        kwargs = {"l1_ratios": (0.0,), "use_legacy_attributes": False}  # an L2 penalty, the new attributes
    return LogisticRegressionCV(Cs=list(CS), cv=folds, scoring="roc_auc", max_iter=5000,
                                class_weight="balanced" if balanced else None, **kwargs)


def head_probabilities(model, feats: np.ndarray, *, tta_flip: bool) -> np.ndarray:
    """Probabilities from pooled features ``(N, 2, F)`` (each image and its mirror) through ``model``'s head:
    the image's logit, or with ``tta_flip`` the mean of the image's and the mirror's, as the network gives."""
    head = model.head
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(feats[:, :2 if tta_flip else 1], dtype=np.float32))
        weight, bias = head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
        logits = (x @ weight[0] + bias[0])
        logit = 0.5 * (logits[:, 0] + logits[:, 1]) if tta_flip else logits[:, 0]
    return torch.sigmoid(logit).numpy().astype(np.float64)


def check_probe_head(model, description: str) -> None:
    """A cached-feature probe writes one linear head."""
    info = arch_info(model.arch)
    if len(info.head) != 1 or not isinstance(model.head, torch.nn.Linear):
        raise TrainingError(f"{description}: a cached-feature probe needs one linear head; {model.arch} has "
                            f"{', '.join(info.head)}. Use train_backbone: none (a probe trained by the loop).")


def fit_probe(model, train, groups: list[str], val, cfg, out_dir: str | Path, *, description: str = "probe",
              features: tuple[np.ndarray, np.ndarray] | None = None):
    """Fit ``model``'s head on cached features of ``train`` (see the module docstring); ``val`` is only logged.

    ``features``: the pooled features ``(N, 2, F)`` of ``train`` and of ``val`` (each image and its mirror), as
    :func:`thyro.train.features.cached_activations` keeps them; computed here when not given.

    Returns a :class:`~thyro.train.fit.FitResult` with one "epoch".
    """
    check_probe_head(model, description)
    head = model.head
    files = JobFiles(Path(out_dir))
    files.folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    model.to(device)
    if features is None:
        features = tuple(pooled_features(model, part.images, device=device, batch_size=cfg.eval_batch_size,
                                         amp=cfg.amp) for part in (train, val))
    feats, val_feats = features
    n, _, width = feats.shape
    x = feats.reshape(2 * n, width)  # each image and its mirror: a pair that never straddles inner folds
    y = np.repeat(train.labels.astype(int), 2)
    g = np.repeat(np.asarray(groups, dtype=object), 2)
    scaler = StandardScaler().fit(x)
    scaler.scale_ = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    clf = _logistic_regression(_inner_folds(y, list(g), cfg.seed), cfg.imbalance != "none")
    # One BLAS thread for the fit: its products are small (hundreds of rows x the feature width), and BLAS
    # threads woken for each one wait on torch's threads or on anything else the machine runs; on 2 idle cores
    # the same fit (same iterations, bit-identical head) took 10 s a fold with the default threads and 0.41 s
    # with one (benchmarks/cached_speed.py fit).
    with threadpool_limits(limits=1, user_api="blas"):
        clf.fit(scaler.transform(x), y)
    strength = float(np.ravel(clf.C_)[0])
    coef = clf.coef_[0] / scaler.scale_
    bias = float(clf.intercept_[0] - np.sum(clf.coef_[0] * scaler.mean_ / scaler.scale_))
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef).to(head.weight)[None])
        head.bias.copy_(torch.tensor([bias]).to(head.bias))
    probs = head_probabilities(model, val_feats, tta_flip=cfg.tta_flip)
    val_auroc = estimable_auroc(val.labels, probs, val.groups)  # None on a set too small for an AUROC
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    train_p = 1.0 / (1.0 + np.exp(-(x @ coef + bias)))
    train_loss = float(-np.mean(y * np.log(np.clip(train_p, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - train_p, 1e-7, 1))))
    seconds = time.perf_counter() - t0
    row = {"epoch": 1, "train_loss": round(train_loss, 6),
           "val_loss": round(float(-np.mean(val.labels * np.log(p) + (1 - val.labels) * np.log(1 - p))), 6),
           "val_auroc": round(val_auroc, 6) if val_auroc is not None else "", "lr": f"C={strength:.3g}",
           "seconds": round(seconds, 3)}
    write_csv_rows(files.log, [row], LOG_FIELDS)
    log.info(f"{description}: linear probe on cached features, L2 strength C={strength:.3g} chosen on inner folds "
             f"of the training part ({n} images and their mirrors)")
    return FitResult(best_epoch=1, best_auroc=val_auroc if val_auroc is not None else math.nan, epochs_run=1,
                     stopped_early=False, history=[row], seconds=seconds,
                     images_per_second=2 * n / seconds if seconds > 0 else math.nan)
