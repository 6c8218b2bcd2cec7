"""Fine-tuning the rest of a network on the cached activations of its frozen trunk (``train_backbone: cached_trunk``).

The same training as a partly frozen fine-tune (``freeze_stages: k``: the optimiser, its parameter groups and
rates, the schedule, the BatchNorm policy, the average of the weights, selection and early stopping, the
checkpoints, :func:`thyro.train.fit.run_task`), with two differences that caching requires:

* the trunk runs in inference mode, once per image and its mirror (:mod:`thyro.train.features`);
* augmentation is limited to what commutes with caching: each training image is seen as itself or as its
  horizontal mirror (probability ``augment.hflip``, none when ``augment.enabled`` is false); rotations, zoom,
  shifts and intensity changes would change the trunk's activations and are not applied.

Each epoch's validation scores the cached activations of the validation images (and their mirrors, with
``tta_flip``) through the rest, which equals the whole network's output; the job's predictions afterwards come
from the whole network, and the saved model is the whole network (the trunk's weights unchanged).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from thyro.config import TrainConfig
from thyro.device import use_channels_last
from thyro.run import JobFiles
from thyro.train.fit import ArraySet, FitResult, _Supervised, run_task, start_job
from thyro.train.trunk import Cut, rest_probabilities


class _TrunkTask(_Supervised):
    """Supervised training whose inputs are cached trunk activations ``(N, 2, ...)`` (image, mirror)."""

    def __init__(self, model, cut: Cut, train: ArraySet, val: ArraySet, activations: tuple[np.ndarray, np.ndarray],
                 cfg: TrainConfig, files: JobFiles, **kwargs):
        super().__init__(model, train, val, cfg, files, train_backbone="all", **kwargs)
        self.cut = cut
        self.images = torch.from_numpy(activations[0])  # (N, 2, ...) float32 in memory
        self.val_activations = activations[1]
        self.p_mirror = cfg.augment.hflip if cfg.augment.enabled else 0.0

    def inputs(self, idx, gen):
        mirror = (torch.rand(len(idx), generator=gen, device=gen.device) < self.p_mirror).long().cpu()
        x = self.images[idx.cpu(), mirror].to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels.index_select(0, idx.to(self.labels.device)), len(idx)

    def val_probabilities(self) -> np.ndarray:
        return rest_probabilities(self.cut.rest_module(self.evaluated), self.val_activations,
                                  tta_flip=self.cfg.tta_flip, device=self.device,
                                  batch_size=self.cfg.eval_batch_size, channels_last=self.channels_last)


def fit_rest(model: torch.nn.Module, cut: Cut, train: ArraySet, val: ArraySet,
             activations: tuple[np.ndarray, np.ndarray], cfg: TrainConfig, out_dir: str | Path, *,
             resume: bool = True, description: str = "train", select_best: bool = True, pretrained: bool = False,
             on_epoch_end=None) -> FitResult:
    """Train the stages of ``model`` after ``cut`` and its head on the trunk's cached ``activations`` of
    ``train`` and ``val`` (each ``(N, 2, ...)``: image and mirror); as :func:`thyro.train.fit.fit` otherwise
    (``cfg.freeze_stages`` is the cut).  On return ``model`` (the whole network) holds the chosen weights."""
    files, device = start_job(out_dir, train, val, cfg, description)
    task = _TrunkTask(model, cut, train, val, activations, cfg, files, device=device, select_best=select_best,
                      pretrained=pretrained, description=description,
                      channels_last=use_channels_last(device, train.images.shape[-1], cfg.channels_last))
    return run_task(model, task, cfg, files, pretrained=pretrained, resume=resume, description=description,
                    on_epoch_end=on_epoch_end, forward=cut.rest_module(model))


__all__ = ["fit_rest"]
