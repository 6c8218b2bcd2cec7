"""What trains, at which rate, and how BatchNorm behaves: the fine-tuning recipe of a job.

A network is cut into *stages* by timm's own parameter grouping (``group_matcher(coarse=True)``: the stem,
each block stage, and last the head with the layers just before it), so the same words mean the same thing
for every architecture:

* ``train_backbone``: ``all`` trains everything; ``none`` is a linear probe (only the head trains, the
  backbone's BatchNorm statistics stay as the weights brought them); ``bn`` trains the head and the
  BatchNorm layers.  (The probe on cached features, :mod:`thyro.train.probe`, fits the head alone: ``none``.)
* ``freeze_stages: k`` keeps the first ``k`` stages frozen (weights and BatchNorm statistics) for the
  whole run: a partly frozen fine-tune.
* ``unfreeze_epochs: n`` (gradual unfreezing): the head alone trains in the first epoch, and stage by stage
  from the top the rest joins, the whole network training from epoch ``n + 1`` on.
* ``batchnorm``: ``train`` updates the BatchNorm statistics from each batch; ``frozen`` keeps a pretrained
  backbone's statistics (its weights still train), which small batches (a few images of one fold) would
  otherwise pull about; ``auto`` freezes them for pretrained backbones trained on batches under
  :data:`SMALL_BATCH` images.
* learning rates: the head at ``lr``; a pretrained backbone at ``lr * backbone_lr_mult``, and with
  ``layer_decay`` below 1 each stage below the head at ``decay`` times the rate of the stage above it
  (timm's layer-wise decay over its fine groups).  Norms and biases get no weight decay.
"""

from __future__ import annotations

import torch
from timm.models import group_parameters
from torch import nn

from thyro.errors import TrainingError

#: ``batchnorm: auto`` freezes a pretrained backbone's statistics below this batch size.
SMALL_BATCH = 32
TRAIN_BACKBONE = ("all", "none", "bn")


def _backbone(model: nn.Module) -> nn.Module:
    return getattr(model, "backbone", model)


def stages(model: nn.Module, coarse: bool = True) -> list[list[str]]:
    """Parameter names of ``model`` by stage, first to last (the head's stage last); names as in
    ``model.named_parameters()``."""
    backbone = _backbone(model)
    prefix = "backbone." if backbone is not model else ""
    try:
        groups = group_parameters(backbone, backbone.group_matcher(coarse=coarse))
    except (AttributeError, NotImplementedError):  # not a timm model: one stage below the head
        head = {n for n, _ in getattr(model, "head", nn.Identity()).named_parameters()}
        names = [n for n, _ in backbone.named_parameters()]
        return [[prefix + n for n in names if n not in head], [prefix + n for n in names if n in head]]
    return [[prefix + n for n in groups[k]] for k in sorted(groups)]


def trainable_stages(epoch: int, n_stages: int, unfreeze_epochs: int) -> int:
    """How many stages, counted from the head, train in ``epoch`` (0-based) under gradual unfreezing."""
    if unfreeze_epochs <= 0 or epoch >= unfreeze_epochs:
        return n_stages
    return max(1, min(n_stages, 1 + (epoch * (n_stages - 1)) // unfreeze_epochs))


def set_trainable(model: nn.Module, train_backbone: str, *, freeze_stages: int = 0, open_stages: int | None = None,
                  freeze_norms: bool = False) -> list[nn.Module]:
    """Set ``requires_grad`` as the recipe says; returns the BatchNorm layers to hold in eval mode.

    ``open_stages``: how many stages from the head are open (gradual unfreezing; None = all).
    ``freeze_norms``: every BatchNorm keeps its statistics (``batchnorm: frozen``).
    """
    if train_backbone not in TRAIN_BACKBONE:
        raise TrainingError(f"train_backbone must be one of {', '.join(TRAIN_BACKBONE)}, got {train_backbone!r}")
    groups = stages(model)
    n = len(groups)
    if freeze_stages >= n:
        raise TrainingError(f"freeze_stages {freeze_stages}: the network has {n} stages (the last is the head); "
                            f"freeze at most {n - 1}.")
    first_open = max(freeze_stages, n - (open_stages or n))
    open_names = {name for g in groups[first_open:] for name in g}
    head = {id(p) for p in getattr(model, "head", nn.Identity()).parameters()}
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    norm_params = {id(p) for m in norms.values() for p in m.parameters()}
    for name, p in model.named_parameters():
        if train_backbone == "none":
            on = id(p) in head
        elif train_backbone == "bn":
            on = id(p) in head or id(p) in norm_params
        else:
            on = name in open_names or id(p) in head
        p.requires_grad_(on)
    if train_backbone == "none" or freeze_norms:
        return list(norms.values())
    # a BatchNorm with no trainable neighbour (a frozen stage) keeps its statistics too
    return [m for name, m in norms.items() if not any(name + "." + s in open_names for s in ("weight", "bias"))
            and train_backbone != "bn"]


def freeze_norm_statistics(cfg, pretrained: bool) -> bool:
    """Whether a job keeps every BatchNorm's statistics (``batchnorm``, see the module docstring)."""
    if cfg.batchnorm == "auto":
        return pretrained and cfg.batch_size < SMALL_BATCH
    return cfg.batchnorm == "frozen" and pretrained


def make_optimizer(model: nn.Module, cfg, backbone_lr_mult: float = 1.0, layer_decay: float = 1.0
                   ) -> torch.optim.Optimizer:
    """AdamW or SGD over every parameter (frozen ones simply get no gradient), in groups by rate and decay.

    No weight decay on norms and biases (as in timm's and torchvision's reference recipes).  The head trains
    at ``lr``; the rest at ``lr * backbone_lr_mult``, times ``layer_decay`` per fine stage below the head.
    """
    fine = stages(model, coarse=False) if layer_decay < 1.0 else None
    depth: dict[str, int] = {}
    if fine is not None:
        for i, names in enumerate(fine):
            depth.update({n: len(fine) - 1 - i for n in names})
    head = {id(p) for p in getattr(model, "head", nn.Identity()).parameters()}
    buckets: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        scale = 1.0 if id(p) in head else backbone_lr_mult * (layer_decay ** depth.get(name, 0))
        buckets.setdefault((p.ndim <= 1, scale), []).append(p)
    groups = [{"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay, "lr": cfg.lr * scale}
              for (no_decay, scale), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)
