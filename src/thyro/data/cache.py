"""The image cache: every preprocessed image stored once, as uint8, in one memory-mapped file.

Training reads batches from the cache; it never decodes an image file per epoch.

Layout (one folder per cache key under the cache directory)::

    CACHE_DIR/KEY/images.u8     N x S x S uint8, raw C-order bytes (np.memmap)
    CACHE_DIR/KEY/meta.json     key, ids (manifest row order), size, preprocessing settings, timings,
                                and a summary of the scan areas and marks
    CACHE_DIR/KEY/preprocess.csv  per image: scan area and how it was found, crop, share of the frame
                                kept, share of marks removed, warning (``thyro.data.preview.REPORT_COLUMNS``)
    CACHE_DIR/KEY.partial/      the same while building, plus done.npy (which rows are finished) and
                                geometry.jsonl (the finished rows' geometry)
    CACHE_DIR/KEY.lock          held while building (concurrent builders wait, then reuse)
    CACHE_DIR/KEY.skipped.json  [[image, reason], ...]: the images of manifest KEY that could not be read,
                                when its cache was built without them (:meth:`ImageCache.build_readable`)

The key is a hash of the preprocessing settings (with the algorithm version) and, per manifest row,
the image id, the file's size and modification time (or its content hash with ``hash_content``), the
frame, and the ROI when ``roi_crop`` uses it.  The same manifest and settings give the same key in every
run and every arm, so the cache is built once; changing either gives a new key and a new build.

An interrupted build resumes where it stopped (``done.npy`` is saved after the finished images are
flushed to disk); a finished cache is published by renaming the partial folder, so a reader never
sees a half-written cache.  The build itself is :mod:`thyro.data.cache_build`'s.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from thyro.data.cache_build import (
    CACHE_FORMAT,
    MIN_POOL_TASKS,
    REPORT_FILE,
    build_folder,
    carry_over,
    default_workers,
    manifest_frames,
    manifest_rois,
)
from thyro.data.manifest import Manifest, read_manifest, roi_to_json
from thyro.data.preprocess import PreprocessConfig
from thyro.errors import DataError, ImageFailure, UnreadableImages
from thyro.fileio import file_lock, read_csv, sha256_file, sha256_json, write_json

__all__ = ["CACHE_FORMAT", "MIN_POOL_TASKS", "REPORT_FILE", "ImageCache", "ReadableImages", "cache_key",
           "default_cache_dir", "default_workers"]

_KEY_LEN = 24


def default_cache_dir() -> Path:
    """``$THYRO_CACHE_DIR/images``, else ``~/.cache/thyro/images``."""
    root = os.environ.get("THYRO_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "thyro"
    return base / "images"


def _as_manifest(manifest: Manifest | str | os.PathLike) -> Manifest:
    if isinstance(manifest, Manifest):
        return manifest
    return read_manifest(manifest)


def _as_config(cfg: PreprocessConfig | dict | None) -> PreprocessConfig:
    if cfg is None:
        return PreprocessConfig()
    if isinstance(cfg, dict):
        return PreprocessConfig.parse(cfg, source="preprocess")
    return cfg


def _file_stamp(path: Path, hash_content: bool) -> str:
    try:
        if hash_content:
            return sha256_file(path)
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


def cache_key(manifest: Manifest | str | os.PathLike, cfg: PreprocessConfig | dict | None = None, *,
              hash_content: bool = False) -> str:
    """The cache key of a manifest under preprocessing settings (hex string).

    Parameters
    ----------
    manifest : Manifest or path
    cfg : PreprocessConfig, dict or None
    hash_content : bool, default False
        Hash each file's bytes instead of using its size and modification time (slower; survives
        copying the data to another disk).
    """
    manifest, cfg = _as_manifest(manifest), _as_config(cfg)
    rois = manifest_rois(manifest) if cfg.roi_crop else [None] * len(manifest)
    rows = [[image, _file_stamp(path, hash_content), frame, roi_to_json(roi)]
            for image, path, frame, roi in zip(manifest.ids, manifest.paths(), manifest_frames(manifest), rois)]
    return sha256_json({"format": CACHE_FORMAT, "preprocess": cfg.cache_fields(), "stamp": "content" if hash_content
                        else "size+mtime", "rows": rows})[:_KEY_LEN]


class ImageCache:
    """Preprocessed images of a manifest, memory-mapped.

    Attributes
    ----------
    images : np.memmap of uint8, shape (N, S, S)
        Row ``i`` is manifest row ``i``.
    ids : list of str
        Image ids in manifest row order.
    key : str
        Hash of manifest content and preprocessing settings.
    path : Path
        The cache's folder.
    config : PreprocessConfig
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        meta_path = path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: not a finished image cache (meta.json missing); build it with "
                            "`thyro data cache MANIFEST`.") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: unreadable cache metadata ({exc}); delete {path} and rebuild.") from None
        n, size = int(meta["n"]), int(meta["size"])
        data = path / "images.u8"
        expected = n * size * size
        if not data.is_file() or data.stat().st_size != expected:
            raise DataError(f"{data}: missing or of the wrong size (expected {expected} bytes); delete {path} and rebuild.")
        self.path = path
        self.meta = meta
        self.key: str = meta["key"]
        self.ids: list[str] = list(meta["ids"])
        self.size = size
        self.config = PreprocessConfig.parse(meta["preprocess"], source=str(meta_path))
        self.images = np.memmap(data, dtype=np.uint8, mode="r", shape=(n, size, size)) if n else \
            np.zeros((0, size, size), np.uint8)
        self._index = {image: i for i, image in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"ImageCache(n={len(self)}, size={self.size}, key={self.key!r}, path={str(self.path)!r})"

    @property
    def nbytes(self) -> int:
        return len(self) * self.size * self.size

    def index_of(self, ids: str | Sequence[str]) -> np.ndarray:
        """Row indices of image ids (raises DataError naming ids that are not in the cache)."""
        if isinstance(ids, str):
            ids = [ids]
        missing = [i for i in ids if i not in self._index]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            raise DataError(f"{len(missing)} image id(s) not in the cache {self.path}: {shown}"
                            f"{' ...' if len(missing) > 10 else ''}; rebuild the cache from the current manifest.")
        return np.fromiter((self._index[i] for i in ids), dtype=np.int64, count=len(ids))

    def report(self):
        """The per-image preprocessing report (``preprocess.csv``) as a DataFrame, or None for a cache
        built before reports existed."""
        path = self.path / REPORT_FILE
        return read_csv(path, keep_default_na=False) if path.is_file() else None

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """A batch ``(B, S, S)`` uint8 (a copy) by row indices."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), self.size, self.size), np.uint8)
        out[order] = self.images[idx[order]]  # sorted reads are sequential on disk
        return out

    # ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, manifest: Manifest | str | os.PathLike, cfg: PreprocessConfig | dict | None = None,
              cache_dir: str | os.PathLike | None = None, workers: int | None = None, *,
              hash_content: bool = False, rebuild: bool = False) -> ImageCache:
        """Open the cache of ``manifest`` under ``cfg``, building (or finishing) it first if needed.

        Parameters
        ----------
        manifest : Manifest or path
        cfg : PreprocessConfig, dict or None
        cache_dir : path, optional
            Default :func:`default_cache_dir` (``$THYRO_CACHE_DIR/images`` or ``~/.cache/thyro/images``).
        workers : int, optional
            Processes for decoding and preprocessing; default :func:`default_workers`; 1 or a small
            build (fewer than ``MIN_POOL_TASKS`` images to do) works in this process.
        hash_content : bool
            Key on file contents instead of size and modification time.
        rebuild : bool
            Delete an existing cache with this key and build again.

        Raises
        ------
        UnreadableImages
            Listing every image that could not be read or preprocessed (the others are kept, so a
            rerun after fixing the manifest only redoes what changed).
        """
        manifest, cfg = _as_manifest(manifest), _as_config(cfg)
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = cache_key(manifest, cfg, hash_content=hash_content)
        final = cache_dir / key
        cache_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(cache_dir / f"{key}.lock"):
            if rebuild and final.exists():
                shutil.rmtree(final)
            if (final / "meta.json").is_file():
                return cls(final)
            build_folder(manifest, cfg, key, cache_dir, workers)
            return cls(final)

    @classmethod
    def build_readable(cls, manifest: Manifest, cfg: PreprocessConfig | dict | None = None,
                       cache_dir: str | os.PathLike | None = None, workers: int | None = None) -> ReadableImages:
        """The cache of the images of ``manifest`` that can be read; the others are left out, not an error.

        Every file is decoded once: the rows a build finished before it met unreadable files are
        carried over to the build of the readable rows.  The files left out are remembered beside the
        cache (``KEY.skipped.json`` for the full manifest's key), so a rerun finds the finished cache at
        once.  Arguments as in :meth:`build`.

        Raises
        ------
        DataError
            When none of the images can be read.
        """
        cfg = _as_config(cfg)
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        record = cache_dir / f"{cache_key(manifest, cfg)}.skipped.json"
        row_of = {image: i for i, image in enumerate(manifest.ids)}
        failures: list[ImageFailure] = []
        if record.is_file():
            failures = [ImageFailure(image, reason, row_of[image])
                        for image, reason in json.loads(record.read_text(encoding="utf-8")) if image in row_of]
        bad = {f.image for f in failures}
        used = _rows(manifest, ~manifest.df["image"].isin(bad).to_numpy()) if bad else manifest
        for _ in range(3):
            try:
                return ReadableImages(cls.build(used, cfg, cache_dir, workers), used, failures)
            except UnreadableImages as exc:
                failures += [ImageFailure(f.image, f.reason, row_of[f.image]) for f in exc.failures]
                write_json(record, [[f.image, f.reason] for f in failures])
                keep = np.ones(len(used), dtype=bool)
                keep[[f.row for f in exc.failures]] = False
                if not keep.any():
                    raise DataError(f"none of the {len(manifest)} images could be read; e.g. {failures[0].image}: "
                                    f"{failures[0].reason}") from None
                old_key = cache_key(used, cfg)
                used = _rows(used, keep)
                carry_over(cache_dir, old_key, keep, cache_key(used, cfg), cfg.size)
        raise DataError(f"{cache_dir}: the image cache kept failing to build; delete the folder and run again.")


class ReadableImages(NamedTuple):
    """What :meth:`ImageCache.build_readable` returns."""

    cache: ImageCache
    manifest: Manifest             # the rows the cache holds (its row i is this manifest's row i)
    failures: list[ImageFailure]   # the rows of the given manifest left out (``row`` counts in that manifest)


def _rows(manifest: Manifest, keep: np.ndarray) -> Manifest:
    return Manifest(df=manifest.df[keep].reset_index(drop=True), root=manifest.root, path=manifest.path)


