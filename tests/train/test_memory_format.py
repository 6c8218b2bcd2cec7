"""Channels-last memory format on a CPU: used from 96 px, and it scores what contiguous memory scores."""

from __future__ import annotations

import numpy as np
import torch

from thyro.device import CPU_CHANNELS_LAST_MIN_SIZE, use_channels_last
from thyro.models import build_model
from thyro.models.inference import predict_proba


def test_channels_last_is_chosen_by_device_and_size():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_channels_last(cpu, 64) and use_channels_last(cpu, CPU_CHANNELS_LAST_MIN_SIZE)
    assert use_channels_last(cuda, 32) and not use_channels_last(cuda, 224, wanted=False)
    assert not use_channels_last(cpu, 224, wanted=False)


def test_channels_last_scores_like_contiguous_memory():
    model, _ = build_model("resnet18", "none", seed=3)
    images = np.random.default_rng(0).integers(0, 256, (6, 96, 96), dtype=np.uint8)
    plain = predict_proba(model, images, device=torch.device("cpu"), channels_last=False)
    model.to(memory_format=torch.channels_last)
    fast = predict_proba(model, images, device=torch.device("cpu"), channels_last=True)
    assert plain.shape == (6,) and np.isfinite(plain).all()
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5)
