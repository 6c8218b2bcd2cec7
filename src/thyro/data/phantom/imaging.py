"""B-mode imaging for the phantom and the corpus: speckle, log compression, attenuation, smooth fields.

An echo map (relative reflectivity, float32) is attenuated with depth (what time-gain compensation
leaves), multiplied by fully developed speckle (the squared magnitude of a low-pass filtered complex
Gaussian field: exponential intensity, Rayleigh amplitude; several looks averaged, as compounding
does) and log-compressed to uint8 over a 36 dB dynamic range.
"""

from __future__ import annotations

import cv2
import numpy as np


def speckle(rng: np.random.Generator, h: int, w: int, sx: float, sy: float, looks: int = 5) -> np.ndarray:
    """Speckle intensity, mean 1: the average of ``looks`` independent fully developed speckle patterns.

    Each look is the squared magnitude of a low-pass filtered complex Gaussian field (exponential
    intensity, Rayleigh amplitude); averaging looks mimics spatial compounding (gamma intensity).
    """
    z = rng.standard_normal((2 * looks, h, w), dtype=np.float32)
    inten = np.zeros((h, w), np.float32)
    for k in range(2 * looks):
        f = cv2.GaussianBlur(z[k], (0, 0), sigmaX=sx, sigmaY=sy)
        inten += f * f
    return inten / max(float(inten.mean()), 1e-12)


def bmode(echo: np.ndarray, inten: np.ndarray, gain_db: float = 0.0, dynamic_range: float = 36.0,
          floor_db: float = -22.0) -> np.ndarray:
    """Log-compress ``echo * speckle`` to uint8 (``floor_db`` maps to 0, ``floor_db + dynamic_range`` to 255)."""
    level = 10.0 * np.log10(echo * inten + 1e-7) + gain_db
    out = (level - floor_db) * (255.0 / dynamic_range)
    return np.clip(out, 0, 255).astype(np.uint8)


def smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    f = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)
    return (f - f.mean()) / max(float(f.std()), 1e-6)


def attenuate(echo: np.ndarray, h: int, yy: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Depth attenuation left after time-gain compensation: ``exp(-alpha * depth / h)``."""
    return echo * np.exp(-alpha * yy / h)


def speckle_sigmas(w: int, h: int) -> tuple[float, float]:
    """Speckle grain (lateral, axial sigma) of a ``w`` x ``h`` sector: about 1/80 of its width and 1/150
    of its depth (at least 0.6 and 0.5 pixels)."""
    return max(0.6, w / 80.0), max(0.5, h / 150.0)


def band(v: np.ndarray, lo: float, hi: float, soft: float) -> np.ndarray:
    """Soft indicator of lo <= v <= hi."""
    return sigmoid((v - lo) / soft) * sigmoid((hi - v) / soft)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (clipped, so it never overflows)."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))
