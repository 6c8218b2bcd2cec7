"""Activations of a frozen part of a network, computed once per image and its mirror and kept on disk.

A linear probe reads the pooled features of a frozen backbone; a cached-trunk fine-tune reads the activations
of its frozen first stages.  Neither changes while a study runs, so each image (and its horizontal mirror)
goes through the frozen part once, and every fold, every arm with the same backbone and weights, the
external sets, the data-efficiency fractions and a rerun of the study read the stored values.

Layout (beside the image cache, one folder per key under ``$THYRO_CACHE_DIR/features``)::

    features/KEY/values.f32   N x 2 x SHAPE float32, raw C-order bytes (np.memmap); [:, 0] the image,
                              [:, 1] its mirror; row i is row i of the image cache
    features/KEY/meta.json    key, what was computed (architecture, cut, weights digest), the image cache's
                              key and content digest, shape
    features/KEY.lock         held while computing (a concurrent process waits, then reads)

The key is a hash of what the frozen part is (architecture, where it is cut, the content digest of its
weights and buffers, the precision it ran in) and of the images (the content digest of the preprocessed
image cache, which itself is keyed by the preprocessing settings and the image files).  The folder is
written through :func:`thyro.fileio.atomic_dir`: a reader never sees a half-written one, and the temporary
of a killed process is swept by the next write.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from thyro import progress
from thyro.data.cache import ImageCache, default_cache_dir
from thyro.device import autocast, autocast_dtype, use_channels_last
from thyro.errors import DataError
from thyro.fileio import atomic_dir, file_lock, sha256_json, write_json
from thyro.models.inference import to_input

log = logging.getLogger(__name__)

#: The layout's version: a change makes new keys.
FEATURE_FORMAT = 1
VALUES_FILE = "values.f32"
_KEY_LEN = 24


def default_features_dir() -> Path:
    """``features`` beside the image cache (``$THYRO_CACHE_DIR/features``, else ``~/.cache/thyro/features``)."""
    return default_cache_dir().parent / "features"


def state_digest(state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """The content digest of a module's parameters and buffers, or of a state dict (names, shapes, dtypes and
    values)."""
    h = hashlib.sha256()
    items = state.state_dict().items() if isinstance(state, nn.Module) else state.items()
    for name, tensor in sorted(items):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_image_digests: dict[tuple[str, int, int], str] = {}


def images_digest(cache: ImageCache) -> str:
    """The content digest of a finished image cache's pixels and ids (remembered per file and time)."""
    data = cache.path / "images.u8"
    st = data.stat() if data.exists() else None
    memo = (str(data.resolve()), st.st_size, st.st_mtime_ns) if st is not None else None
    if memo is not None and memo in _image_digests:
        return _image_digests[memo]
    h = hashlib.sha256(json.dumps([cache.size, cache.ids]).encode())
    for start in range(0, len(cache), 256):
        h.update(np.ascontiguousarray(cache.images[start:start + 256]).tobytes())
    digest = h.hexdigest()
    if memo is not None:
        _image_digests[memo] = digest
    return digest


@dataclass(frozen=True)
class Activations:
    """The stored activations of one image cache: ``values`` ``(N, 2, *shape)`` float32 (memory-mapped; row i
    is row i of the image cache, ``[:, 1]`` its mirror), looked up by image id."""

    path: Path
    values: np.ndarray
    ids: tuple[str, ...]

    def rows(self, ids: Sequence[str], views: int = 2) -> np.ndarray:
        """The activations of ``ids`` in that order, ``(len(ids), views, *shape)`` (a copy in memory)."""
        index = {image: i for i, image in enumerate(self.ids)}
        missing = [i for i in ids if i not in index]
        if missing:
            raise DataError(f"{len(missing)} image id(s) not in the feature cache {self.path}: "
                            f"{', '.join(map(repr, missing[:5]))}; delete the folder and run again.")
        idx = np.fromiter((index[i] for i in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), views, *self.values.shape[2:]), np.float32)
        out[order] = self.values[idx[order], :views]  # sorted reads are sequential on disk
        return out


def _open(folder: Path) -> Activations:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    shape = (int(meta["n"]), 2, *[int(s) for s in meta["shape"]])
    values = np.memmap(folder / VALUES_FILE, dtype=np.float32, mode="r", shape=shape) if shape[0] else \
        np.zeros(shape, np.float32)
    return Activations(folder, values, tuple(meta["ids"]))


@torch.no_grad()
def _compute(part: Callable[[torch.Tensor], torch.Tensor], cache: ImageCache, out: Path, *,
             device: torch.device, batch_size: int, amp: str, description: str) -> tuple[int, ...]:
    """Write ``part`` of every image of ``cache`` and of its mirror into ``out``; returns the per-image shape."""
    dtype, channels_last = autocast_dtype(device, amp), use_channels_last(device, cache.size)
    values, shape = None, ()
    with progress.task(description, 2 * len(cache), unit="image") as bar:
        for start in range(0, len(cache), batch_size):
            xb = to_input(torch.from_numpy(cache.get(range(start, min(start + batch_size, len(cache))))).to(device))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            for view, x in enumerate((xb, torch.flip(xb, dims=[3]))):
                with autocast(device, dtype):
                    y = part(x).float().cpu().contiguous().numpy()
                if values is None:
                    shape = tuple(y.shape[1:])
                    values = np.memmap(out / VALUES_FILE, dtype=np.float32, mode="w+",
                                       shape=(len(cache), 2, *shape))
                values[start:start + len(y), view] = y
                bar.advance(len(y))
    if values is not None:
        values.flush()
        del values
    return shape


def cached_activations(part: Callable[[torch.Tensor], torch.Tensor], cache: ImageCache, identity: dict, *,
                       device: torch.device, batch_size: int = 32, amp: str = "auto",
                       description: str = "features", folder: str | Path | None = None) -> Activations:
    """The activations of ``part`` for every image of ``cache`` and its mirror, computed once.

    Parameters
    ----------
    part : callable
        Float ``(B, 1, S, S)`` in ``[0, 1]`` to ``(B, *shape)``, in inference mode (a frozen network part).
    cache : ImageCache
        The preprocessed images.
    identity : dict
        What ``part`` is, JSON-ready (architecture, cut, :func:`state_digest` of its weights): the key.
    device, batch_size, amp : where and how the activations are computed.
    description : the progress task's name.
    folder : the feature cache's folder (default :func:`default_features_dir`).
    """
    root = Path(folder) if folder is not None else default_features_dir()
    dtype = autocast_dtype(device, amp)
    key = sha256_json({"format": FEATURE_FORMAT, "part": identity, "precision": str(dtype or "float32"),
                       "images": images_digest(cache), "views": ["image", "mirror"]})[:_KEY_LEN]
    final = root / key
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{key}.lock"):
        if (final / "meta.json").is_file():
            return _open(final)
        with atomic_dir(final) as tmp:
            shape = _compute(part, cache, tmp, device=device, batch_size=batch_size, amp=amp,
                             description=description)
            write_json(tmp / "meta.json", {"format": FEATURE_FORMAT, "key": key, "part": identity,
                                           "image_cache": cache.key, "n": len(cache), "shape": list(shape),
                                           "ids": cache.ids})
        log.info(f"{description}: {2 * len(cache)} images and mirrors -> {final}")
        return _open(final)


__all__ = ["Activations", "FEATURE_FORMAT", "cached_activations", "default_features_dir", "images_digest",
           "state_digest"]
