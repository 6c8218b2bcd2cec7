"""Batch-wise augmentation on the training device."""

from __future__ import annotations

import torch

from thyro.config import AugmentConfig
from thyro.train.augment import BatchAugment


def batch(b=4, s=32):
    x = torch.zeros(b, 1, s, s)
    x[:, :, 4:12, 2:10] = 1.0  # a bright block at the top left
    return x


def test_disabled_is_identity():
    x = batch()
    assert torch.equal(BatchAugment(AugmentConfig(enabled=False))(x.clone(), torch.Generator()), x)


def test_seeded_repeats_and_stays_in_range():
    aug = BatchAugment(AugmentConfig())
    a = aug(batch(), torch.Generator().manual_seed(3))
    b = aug(batch(), torch.Generator().manual_seed(3))
    c = aug(batch(), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 1, 32, 32) and a.min() >= 0 and a.max() <= 1


def test_horizontal_flip_only_mirrors():
    cfg = AugmentConfig(rotate_deg=0, scale=(1.0, 1.0), translate=0, hflip=1.0, brightness=0, contrast=0, gamma=0,
                        speckle=0)
    x = batch()
    y = BatchAugment(cfg)(x.clone(), torch.Generator().manual_seed(0))
    assert torch.allclose(y, torch.flip(x, dims=[3]), atol=1e-5)


def test_no_vertical_flip_by_default():
    """The bright block stays in the top half (skin line at the top) under the default transforms."""
    cfg = AugmentConfig(brightness=0, contrast=0, gamma=0, speckle=0)
    y = BatchAugment(cfg)(batch(64), torch.Generator().manual_seed(1))
    top, bottom = y[:, :, :16].sum(dim=(1, 2, 3)), y[:, :, 16:].sum(dim=(1, 2, 3))
    assert bool((top > bottom).all())
