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
sees a half-written cache.
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from thyro.console import info, progress_task
from thyro.data.manifest import Manifest, parse_roi, read_manifest, roi_to_json
from thyro.data.preprocess import PreprocessConfig, _pool_init, _pool_work
from thyro.data.preview import REPORT_COLUMNS
from thyro.errors import DataError, ImageFailure, UnreadableImages
from thyro.fileio import (
    atomic_path,
    file_lock,
    sha256_file,
    sha256_json,
    write_csv_rows,
    write_failure,
    write_json,
    write_text,
)

CACHE_FORMAT = 1
REPORT_FILE = "preprocess.csv"
_KEY_LEN = 24
#: Below this many images a build runs in this process: starting worker processes (spawn) costs
#: seconds, more than preprocessing a few hundred images takes.
MIN_POOL_TASKS = 200


def default_cache_dir() -> Path:
    """``$THYRO_CACHE_DIR/images``, else ``~/.cache/thyro/images``."""
    root = os.environ.get("THYRO_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "thyro"
    return base / "images"


def default_workers() -> int:
    """Worker processes for a cache build: the usable CPUs less one (for the writer), at most 8.

    On a 2-CPU machine this is 1: the build runs in this process, as a pool would not pay for itself.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


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


def _frames(manifest: Manifest) -> list[int]:
    if "frame" not in manifest.df.columns:
        return [0] * len(manifest)
    out = []
    for i, v in enumerate(manifest.df["frame"].tolist()):
        try:
            out.append(0 if v in ("", None) or (isinstance(v, float) and np.isnan(v)) else int(v))
        except (TypeError, ValueError):
            raise DataError(f"{manifest.path or 'manifest'}: row {i + 2}: frame must be an integer, got {v!r}") from None
    return out


def _rois(manifest: Manifest) -> list[dict | None]:
    if "roi" not in manifest.df.columns:
        return [None] * len(manifest)
    where = str(manifest.path or "manifest")
    return [parse_roi(v, where=f"{where}: row {i + 2}") for i, v in enumerate(manifest.df["roi"].tolist())]


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
    rois = _rois(manifest) if cfg.roi_crop else [None] * len(manifest)
    rows = [[image, _file_stamp(path, hash_content), frame, roi_to_json(roi)]
            for image, path, frame, roi in zip(manifest.ids, manifest.paths(), _frames(manifest), rois)]
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
        return pd.read_csv(path, keep_default_na=False) if path.is_file() else None

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
            _build_partial(manifest, cfg, key, cache_dir, workers)
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
                _carry_over(cache_dir, old_key, keep, cache_key(used, cfg), cfg.size)
        raise DataError(f"{cache_dir}: the image cache kept failing to build; delete the folder and run again.")


class ReadableImages(NamedTuple):
    """What :meth:`ImageCache.build_readable` returns."""

    cache: ImageCache
    manifest: Manifest             # the rows the cache holds (its row i is this manifest's row i)
    failures: list[ImageFailure]   # the rows of the given manifest left out (``row`` counts in that manifest)


def _rows(manifest: Manifest, keep: np.ndarray) -> Manifest:
    return Manifest(df=manifest.df[keep].reset_index(drop=True), root=manifest.root, path=manifest.path)


def _carry_over(cache_dir: Path, old_key: str, keep: np.ndarray, new_key: str, size: int) -> None:
    """Seed the partial cache of the rows ``keep`` from the partial cache a failed build left behind.

    A build with unreadable rows keeps what it decoded in ``OLD_KEY.partial/``; copying the kept rows
    into ``NEW_KEY.partial/`` (all marked done) lets the next build finish without decoding anything
    again.  Nothing happens when there is no such partial cache.
    """
    old = cache_dir / f"{old_key}.partial"
    data = old / "images.u8"
    if not data.is_file() or data.stat().st_size != len(keep) * size * size:
        return
    src = np.memmap(data, dtype=np.uint8, mode="r", shape=(len(keep), size, size))
    rows = np.flatnonzero(keep)
    new = cache_dir / f"{new_key}.partial"
    new.mkdir(parents=True, exist_ok=True)
    dst = np.memmap(new / "images.u8", dtype=np.uint8, mode="w+", shape=(len(rows), size, size))
    for start in range(0, len(rows), 4096):
        dst[start:start + 4096] = src[rows[start:start + 4096]]
    dst.flush()
    del dst, src
    _save_done(np.ones(len(rows), dtype=bool), new / "done.npy")
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# building

# module-level names for the in-process path (the pool pickles the preprocess functions by reference)
_init_worker = _pool_init
_work = _pool_work


def _save_done(done: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, done)


def _allocate(path: Path, nbytes: int) -> None:
    """Create ``path`` with ``nbytes`` of disk reserved now.

    The images are written through a memory map: writing a page of a sparse file on a full disk kills
    the process (SIGBUS) instead of raising, so the room is reserved up front and a full disk is a
    clear error before any work.
    """
    try:
        with open(path, "wb") as fh:
            try:
                if not (nbytes and hasattr(os, "posix_fallocate")):
                    raise OSError(errno.EOPNOTSUPP, "no posix_fallocate")
                os.posix_fallocate(fh.fileno(), 0, nbytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                fh.truncate(nbytes)  # a file system that cannot reserve room: sparse, as before
    except OSError as exc:
        path.unlink(missing_ok=True)
        failure = write_failure(exc, path)
        if failure is not None:
            raise failure from None
        raise


def _build_partial(manifest: Manifest, cfg: PreprocessConfig, key: str, cache_dir: Path, workers: int | None) -> None:
    n, size = len(manifest), cfg.size
    partial = cache_dir / f"{key}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    data_path, done_path = partial / "images.u8", partial / "done.npy"
    done = np.zeros(n, dtype=bool)
    if done_path.is_file() and data_path.is_file() and data_path.stat().st_size == n * size * size:
        with contextlib.suppress(ValueError, OSError):
            loaded = np.load(done_path)
            if loaded.shape == (n,):
                done = loaded.astype(bool)
    else:
        _allocate(data_path, n * size * size)
    t0 = time.perf_counter()
    todo = np.flatnonzero(~done)
    if done.any():
        info(f"resuming image cache {key}: {int(done.sum())} of {n} images already done")
    tasks = []
    paths = manifest.paths()
    rois, frames = _rois(manifest), _frames(manifest)
    for i in todo:
        tasks.append((int(i), str(paths[i]), rois[i], frames[i]))
    errors: list[tuple[int, str]] = []
    geometry_path = partial / "geometry.jsonl"
    geometries = _load_geometries(geometry_path, done)
    if n:
        images = np.memmap(data_path, dtype=np.uint8, mode="r+", shape=(n, size, size))
        try:
            _run_tasks(tasks, cfg, images, done, done_path, errors, workers, geometries, geometry_path)
        finally:
            images.flush()
            _save_geometries(geometries, geometry_path)
            _save_done(done, done_path)
            del images
    if errors:
        errors.sort()
        where = manifest.path or "manifest"
        raise UnreadableImages(f"{where}: {len(errors)} image(s) could not be read or preprocessed for the cache "
                               f"(the other {n - len(errors)} are kept; fix or remove these rows and run again)",
                               [ImageFailure(manifest.ids[i], msg, i) for i, msg in errors])
    summary = _write_report(manifest, geometries, partial / REPORT_FILE)
    write_json(partial / "meta.json", {
        "format": CACHE_FORMAT, "key": key, "n": n, "size": size, "dtype": "uint8", "ids": manifest.ids,
        "preprocess": cfg.model_dump(mode="json"), "manifest": str(manifest.path) if manifest.path else None,
        "build_seconds": round(time.perf_counter() - t0, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "preprocess_summary": summary,
    })
    done_path.unlink()
    geometry_path.unlink(missing_ok=True)
    final = cache_dir / key
    os.replace(partial, final)


def _load_geometries(path: Path, done: np.ndarray) -> dict[int, dict]:
    """The geometry of rows finished by an interrupted build (only rows marked done)."""
    out: dict[int, dict] = {}
    if not path.is_file():
        return out
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            i = int(rec.pop("row"))
            if 0 <= i < len(done) and done[i]:
                out[i] = rec
    return out


def _save_geometries(geometries: dict[int, dict], path: Path) -> None:
    write_text(path, "".join(json.dumps({"row": i, **g}) + "\n" for i, g in sorted(geometries.items())))


def _label_text(label) -> str:
    if label is None or pd.isna(label):
        return ""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return str(int(label))
    return str(label)  # a class name (pretraining corpora)


def _write_report(manifest: Manifest, geometries: dict[int, dict], path: Path) -> dict:
    """Write the per-image report and return its summary (counts by scan method, frame kept, marks)."""
    labels = manifest.df["label"].tolist() if "label" in manifest.df.columns else [None] * len(manifest)
    rows, kept, marks, methods, warned = [], [], [], {}, []
    for i, image in enumerate(manifest.ids):
        g = geometries.get(i)
        if g is None:
            continue
        kept.append(g["frame_kept"])
        marks.append(g["marks_fraction"])
        methods[g["scan_method"]] = methods.get(g["scan_method"], 0) + 1
        if g["warning"]:
            warned.append(image)
        rows.append({"image": image, "label": _label_text(labels[i]),
                     "width": g["source_size"][0], "height": g["source_size"][1], "scan_method": g["scan_method"],
                     "scan_box": " ".join(map(str, g["scan_box"])), "crop_box": " ".join(map(str, g["crop_box"])),
                     "frame_kept": f"{g['frame_kept']:.4f}", "scan_kept": f"{g['scan_kept']:.4f}",
                     "marks_fraction": f"{g['marks_fraction']:.5f}", "warning": g["warning"], "error": ""})
    write_csv_rows(path, rows, REPORT_COLUMNS)
    return {"scan_methods": methods, "n_warnings": len(warned), "warned": warned[:20],
            "frame_kept_median": round(float(np.median(kept)), 4) if kept else None,
            "frame_kept_min": round(float(np.min(kept)), 4) if kept else None,
            "marks_fraction_median": round(float(np.median(marks)), 5) if marks else None,
            "images_with_marks": int(sum(m > 0 for m in marks))}


def _run_tasks(tasks: list, cfg: PreprocessConfig, images: np.memmap, done: np.ndarray, done_path: Path,
               errors: list, workers: int | None, geometries: dict[int, dict], geometry_path: Path) -> None:
    if not tasks:
        return
    workers = default_workers() if workers is None else max(1, int(workers))
    if len(tasks) < MIN_POOL_TASKS:
        workers = 1
    cfg_json = cfg.model_dump(mode="json")
    last_save = time.monotonic()
    with progress_task("Preprocessing images into the cache", len(tasks)) as (progress, task_id):
        if workers == 1:
            _init_worker(cfg_json)
            results = map(_work, tasks)
            pool = None
        else:
            # spawn: safe when torch (OpenMP threads) is loaded in the parent
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_pool_init, initargs=(cfg_json,))
            results = pool.map(_pool_work, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8))))
        try:
            for i, arr, geometry, err in results:
                if err is not None:
                    errors.append((i, err))
                else:
                    images[i] = arr
                    geometries[i] = geometry
                    done[i] = True
                progress.advance(task_id)
                if time.monotonic() - last_save > 5.0:
                    images.flush()
                    _save_geometries(geometries, geometry_path)
                    _save_done(done, done_path)
                    last_save = time.monotonic()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
