"""Building an image cache's folder (:mod:`thyro.data.cache` says what a cache is and when to build).

A build preprocesses the manifest's images (in this process, or in worker processes for large builds)
into ``KEY.partial/`` of the cache directory: ``images.u8`` (room reserved up front), ``done.npy`` (the
finished rows, saved every few seconds after the images are flushed), ``geometry.jsonl`` (the finished
rows' scan areas and crops) and, at the end, ``preprocess.csv`` and ``meta.json``; then the folder is
renamed to ``KEY/``.  An interrupted build resumes from ``done.npy``; a build that met unreadable images
keeps the rest and raises :class:`~thyro.errors.UnreadableImages`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

import thyro.progress
from thyro.data.manifest import Manifest, parse_roi
from thyro.data.preprocess import PreprocessConfig
from thyro.data.preprocess.pool import pool_init, pool_work
from thyro.data.preview import REPORT_COLUMNS
from thyro.errors import DataError, ImageFailure, UnreadableImages
from thyro.fileio import atomic_path, write_csv_rows, write_failure, write_json, write_text

log = logging.getLogger(__name__)

#: Version of the cache folder's layout (part of every key).
CACHE_FORMAT = 1
REPORT_FILE = "preprocess.csv"
#: Below this many images a build runs in this process: starting worker processes (spawn) costs
#: seconds, more than preprocessing a few hundred images takes.
MIN_POOL_TASKS = 200


def default_workers() -> int:
    """Worker processes for a cache build: the usable CPUs less one (for the writer), at most 8.

    On a 2-CPU machine this is 1: the build runs in this process, as a pool would not pay for itself.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


def manifest_frames(manifest: Manifest) -> list[int]:
    if "frame" not in manifest.df.columns:
        return [0] * len(manifest)
    out = []
    for i, v in enumerate(manifest.df["frame"].tolist()):
        try:
            out.append(0 if v in ("", None) or (isinstance(v, float) and np.isnan(v)) else int(v))
        except (TypeError, ValueError):
            raise DataError(f"{manifest.path or 'manifest'}: row {i + 2}: frame must be an integer, got {v!r}") from None
    return out


def manifest_rois(manifest: Manifest) -> list[dict | None]:
    if "roi" not in manifest.df.columns:
        return [None] * len(manifest)
    where = str(manifest.path or "manifest")
    return [parse_roi(v, where=f"{where}: row {i + 2}") for i, v in enumerate(manifest.df["roi"].tolist())]


def carry_over(cache_dir: Path, old_key: str, keep: np.ndarray, new_key: str, size: int) -> None:
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


# module-level names for the in-process path (the pool pickles the preprocess functions by reference)
_init_worker = pool_init
_work = pool_work


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


def build_folder(manifest: Manifest, cfg: PreprocessConfig, key: str, cache_dir: Path, workers: int | None) -> None:
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
        log.info(f"resuming image cache {key}: {int(done.sum())} of {n} images already done")
    tasks = []
    paths = manifest.paths()
    rois, frames = manifest_rois(manifest), manifest_frames(manifest)
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
    with thyro.progress.task("Preprocessing images into the cache", len(tasks), unit="image") as progress:
        if workers == 1:
            _init_worker(cfg_json)
            results = map(_work, tasks)
            pool = None
        else:
            # spawn: safe when torch (OpenMP threads) is loaded in the parent
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=pool_init, initargs=(cfg_json,))
            results = pool.map(pool_work, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8))))
        try:
            for i, arr, geometry, err in results:
                if err is not None:
                    errors.append((i, err))
                else:
                    images[i] = arr
                    geometries[i] = geometry
                    done[i] = True
                progress.advance()
                if time.monotonic() - last_save > 5.0:
                    images.flush()
                    _save_geometries(geometries, geometry_path)
                    _save_done(done, done_path)
                    last_save = time.monotonic()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
