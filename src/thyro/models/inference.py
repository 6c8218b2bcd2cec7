"""Inference, written once: uint8 images in, probabilities out.

Every place that scores images uses these pieces, so a model gives the same number in training's
validation, the study's test and external predictions, ``thyro predict``, ``thyro serve`` and the
exported ONNX graph:

* :func:`to_input`: cached uint8 ``(B, S, S)`` pixels to the float ``(B, 1, S, S)`` in ``[0, 1]`` every
  model takes (:class:`~thyro.models.model.ThyroNet` applies the weight source's normalisation);
* :class:`Ensemble`: each model's logit, averaged with the logit of the horizontally flipped image
  when flip test-time augmentation is on, then the mean of the models' probabilities
  (``sigmoid(logit)``): the fold mean of a study, one model in training;
* :func:`predict_proba`: batches, device, mixed precision and channels-last around an ensemble.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from thyro.device import autocast, autocast_dtype, use_channels_last


def to_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, S, S)`` (or ``(B, 1, S, S)``) to float ``(B, 1, S, S)`` in ``[0, 1]``."""
    x = batch if batch.dim() == 4 else batch.unsqueeze(1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class Ensemble(nn.Module):
    """Models scoring the same input: ``(B, 1, S, S)`` float -> (mean probability ``(B,)``, logits ``(B, K)``).

    Parameters
    ----------
    models : list of nn.Module
        One-logit models (fold models of a study; a single model during training).
    tta_flip : bool
        Average each model's logit over the image and its horizontal mirror.
    """

    def __init__(self, models: list[nn.Module], tta_flip: bool = False):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.tta_flip = bool(tta_flip)

    def logit(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """One model's logit ``(B,)`` (flip-averaged when ``tta_flip``)."""
        logit = model(image).reshape(image.shape[0], -1)[:, 0]
        if self.tta_flip:
            logit = 0.5 * (logit + model(torch.flip(image, dims=[3])).reshape(image.shape[0], -1)[:, 0])
        return logit

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.stack([self.logit(m, image).float() for m in self.members], dim=1)
        return torch.sigmoid(logits).mean(dim=1), logits


@torch.no_grad()
def predict_proba(models: Ensemble | nn.Module | list[nn.Module], images: np.ndarray | torch.Tensor, *,
                  tta_flip: bool = False, device: torch.device | str = "cpu", batch_size: int = 256,
                  amp: str = "auto", channels_last: bool = True) -> np.ndarray:
    """Probabilities for uint8 images ``(N, S, S)``, in order (float64).

    ``models`` is an :class:`Ensemble` (its own ``tta_flip`` is used), one model or a list of models.
    """
    if not isinstance(models, Ensemble):
        models = Ensemble(list(models) if isinstance(models, (list, tuple)) else [models], tta_flip)
    device = torch.device(device)
    dtype = autocast_dtype(device, amp)
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    models.eval()
    out = []
    for start in range(0, len(tensor), batch_size):
        xb = to_input(tensor[start:start + batch_size].to(device, non_blocking=True))
        if use_channels_last(device, xb.shape[-1], channels_last):
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            prob, _ = models(xb)
        out.append(prob.float().cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
