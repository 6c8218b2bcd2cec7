"""Hashes of decoded images: exact (SHA-256 of the pixels) and perceptual (pHash), and Hamming distances
between perceptual hashes.

The pHash is written out here (a DCT of a 32x32 gray thumbnail, the 8x8 lowest frequencies against
their median, as in Zauner 2010 and the ``imagehash`` package) instead of adding ``imagehash`` as a
dependency: it is ten lines on scipy, and keeps the thumbnail step under our control (Pillow's
Lanczos resize, the same as imagehash).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dctn

import thyro.progress
from thyro.data.manifest import Manifest
from thyro.data.readers import ImageReadError, load_image, to_gray
from thyro.errors import Problems


def content_hash(pixels: np.ndarray) -> str:
    """SHA-256 (first 32 hex digits) of decoded pixels and their shape."""
    h = hashlib.sha256(repr(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()[:32]


def phash(gray: np.ndarray, hash_size: int = 8, highfreq_factor: int = 4) -> int:
    """64-bit perceptual hash (DCT of a 32x32 thumbnail; low 8x8 frequencies > their median)."""
    side = hash_size * highfreq_factor
    thumb = Image.fromarray(np.asarray(gray, dtype=np.uint8)).resize((side, side), Image.Resampling.LANCZOS,
                                                                 reducing_gap=3.0)
    freq = dctn(np.asarray(thumb, dtype=np.float64), type=2, norm="ortho")[:hash_size, :hash_size]
    bits = (freq > np.median(freq)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def image_hashes(path: str | Path) -> tuple[str, str]:
    """``(content_hash, phash as 16 hex digits)`` of one image file (decoded once)."""
    rgb = load_image(path, color=True, us_region=False).pixels
    return content_hash(rgb), f"{phash(to_gray(rgb)):016x}"


def default_workers() -> int:
    """Threads for decoding: the CPUs this process may use, at most 8 (``THYRO_WORKERS`` overrides)."""
    env = os.environ.get("THYRO_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def compute_hashes(manifest: Manifest, *, progress: bool = True, workers: int | None = None) -> pd.DataFrame:
    """Hash every image of a manifest.

    Images are decoded in a thread pool (Pillow, hashlib and numpy release the GIL while they work).

    Parameters
    ----------
    workers : int, optional
        Threads; default :func:`default_workers`.  1 decodes in this thread.

    Returns
    -------
    DataFrame
        Columns ``content_hash`` and ``phash`` (index as the manifest).

    Raises
    ------
    Problems
        Listing every image (row and file) that is missing or cannot be decoded.
    """
    images = manifest.df["image"].tolist()
    n = len(images)
    content, perceptual = [""] * n, [""] * n
    problems: dict[int, str] = {}
    workers = default_workers() if workers is None else max(1, int(workers))

    def one(i: int) -> None:
        try:
            content[i], perceptual[i] = image_hashes(manifest.abspath(images[i]))
        except ImageReadError as exc:
            problems[i] = f"row {i + 2}: {exc}"

    with contextlib.ExitStack() as stack:
        task = stack.enter_context(thyro.progress.task("hashing images", n, unit="image")) if progress else None
        if workers == 1 or n < 2:
            for i in range(n):
                one(i)
                if task:
                    task.advance()
        else:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
            for future in as_completed([pool.submit(one, i) for i in range(n)]):
                future.result()  # re-raise anything unexpected
                if task:
                    task.advance()
    if problems:
        raise Problems("images that cannot be read", [problems[i] for i in sorted(problems)])
    return pd.DataFrame({"content_hash": content, "phash": perceptual}, index=manifest.df.index)


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of 64-bit hashes (``uint64`` array) as ``uint8`` (n x n), vectorised."""
    h = np.asarray(hashes, dtype=np.uint64)
    return hamming_matrix_block(h, h)


def near_pairs(hashes: np.ndarray, threshold: int, *, max_elements: int = 1 << 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs ``(a, b)`` with ``a < b`` whose Hamming distance is at most ``threshold``, and the distances.

    Compares blocks of rows against all hashes with numpy, holding at most about ``max_elements``
    distances at once, so large collections do not need an n x n matrix in memory.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    rows = max(1, max_elements // max(n, 1))
    out_a, out_b, out_d = [], [], []
    for start in range(0, n, rows):
        block = hamming_matrix_block(h[start:start + rows], h)
        a, b = np.nonzero(block <= threshold)
        a = a + start
        keep = b > a
        out_a.append(a[keep])
        out_b.append(b[keep])
        out_d.append(block[a[keep] - start, b[keep]])
    if not out_a:
        empty = np.array([], dtype=np.intp)
        return empty, empty, np.array([], dtype=np.uint8)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_d)


def hamming_matrix_block(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Hamming distances between every hash of ``left`` and every hash of ``right`` (``uint8``)."""
    x = np.asarray(left, dtype=np.uint64)[:, None] ^ np.asarray(right, dtype=np.uint64)[None, :]
    return np.bitwise_count(x).astype(np.uint8) if hasattr(np, "bitwise_count") else _popcount(x)


def _popcount(x: np.ndarray) -> np.ndarray:
    bytes_ = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(bytes_, axis=-1).sum(axis=-1).astype(np.uint8)


__all__ = ["compute_hashes", "content_hash", "default_workers", "hamming_matrix", "hamming_matrix_block",
           "image_hashes", "near_pairs", "phash"]
