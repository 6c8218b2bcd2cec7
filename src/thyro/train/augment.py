"""Batch-wise ultrasound augmentation on the training device.

The loader only slices uint8 arrays from the cache; every random transform happens here, on whole
batches, on the same device as the model (one ``affine_grid``/``grid_sample`` call per batch).

Defaults suit B-mode ultrasound: small rotations, scale and translation, horizontal flips (left/right
lobes and probe orientation vary), brightness/contrast/gamma (gain and dynamic-range settings differ
between scanners) and multiplicative speckle-like noise.  No vertical flip by default: the skin line is
always at the top of an ultrasound image and acoustic shadowing runs downwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from thyro.config import AugmentConfig


class BatchAugment:
    """Apply :class:`AugmentConfig` to a float batch ``(B, C, H, W)`` in ``[0, 1]``.

    All randomness comes from the ``generator`` passed to :meth:`__call__` (on the batch's device), so a
    seeded run repeats exactly on the CPU.
    """

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def _uniform(self, n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if not cfg.enabled:
            return x
        b, device = x.shape[0], x.device
        # --- geometry: one affine matrix per sample (output -> input sampling grid) ---
        angle = self._uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen, device) * (math.pi / 180.0)
        scale = self._uniform(b, cfg.scale[0], cfg.scale[1], gen, device)
        tx = self._uniform(b, -cfg.translate, cfg.translate, gen, device) * 2.0
        ty = self._uniform(b, -cfg.translate, cfg.translate, gen, device) * 2.0
        sx = torch.where(torch.rand(b, generator=gen, device=device) < cfg.hflip, -1.0, 1.0)
        sy = torch.where(torch.rand(b, generator=gen, device=device) < cfg.vflip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # rotation/zoom composed with the flips: [[c, -s], [s, c]] @ diag(sx, sy), then the shift
        theta = torch.stack([
            torch.stack([cos * sx, -sin * sy, tx], dim=1),
            torch.stack([sin * sx, cos * sy, ty], dim=1),
        ], dim=1)
        geometric = cfg.rotate_deg > 0 or cfg.scale != (1.0, 1.0) or cfg.translate > 0 or cfg.hflip > 0 or cfg.vflip > 0
        if geometric:
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # --- intensity ---
        shape = (b, 1, 1, 1)
        if cfg.gamma > 0:
            log_g = self._uniform(b, -math.log1p(cfg.gamma), math.log1p(cfg.gamma), gen, device)
            x = x.clamp_min(1e-6) ** torch.exp(log_g).view(shape).to(x.dtype)
        if cfg.contrast > 0:
            c = self._uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, gen, device).view(shape).to(x.dtype)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * c + mean
        if cfg.brightness > 0:
            x = x + self._uniform(b, -cfg.brightness, cfg.brightness, gen, device).view(shape).to(x.dtype)
        if cfg.speckle > 0:
            noise = torch.randn(x.shape, generator=gen, device=device, dtype=x.dtype)
            x = x * (1 + cfg.speckle * noise)
        return x.clamp_(0.0, 1.0)
