"""The corpus of a pretraining run and what training reads of it.

The corpus is a folder tree (RadImageNet's ``modality/region/class/*.png`` or plain ``class/*.png``:
an image's class is its folder path below the root) or a CSV with an image column and a class column
(:func:`load_corpus`).  Its images go through the data layer's readers and
:class:`~thyro.data.preprocess.Preprocessor` once, into the data layer's
:class:`~thyro.data.cache.ImageCache` (uint8, memory-mapped, keyed by the image list and the
preprocessing settings), which leaves unreadable files out and lists them; the
:class:`TrainingSet` numbers the classes of the readable images, and training only slices the cache
(:class:`BatchSource`, one :class:`EpochBatches` per process).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from thyro.config import PretrainConfig
from thyro.data.cache import ImageCache
from thyro.data.manifest import Manifest
from thyro.data.readers import IMAGE_SUFFIXES
from thyro.errors import DataError, ImageFailure
from thyro.fileio import read_csv


@dataclass
class Corpus:
    """Images of a pretraining corpus: a manifest (``image``, ``class`` columns) and what was dropped."""

    manifest: Manifest
    notes: list[str] = field(default_factory=list)


def scan_folder(root: Path) -> pd.DataFrame:
    """Every image file below ``root`` (hidden entries skipped), with its class = folder path below ``root``.

    RadImageNet's ``CT/lung/nodule/x.png`` gets class ``CT/lung/nodule``; ``benign/x.png`` gets
    ``benign``; a file directly in ``root`` gets an empty class.
    """
    suffixes = IMAGE_SUFFIXES
    rows: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            rows.append((f"{rel_dir}/{name}" if rel_dir else name, rel_dir))
    return pd.DataFrame(rows, columns=["image", "class"])


def read_corpus_csv(path: Path, image_column: str = "image", class_column: str = "class",
                    need_class: bool = True) -> pd.DataFrame:
    """A CSV with an image column (paths relative to the CSV's folder) and a class column."""
    try:
        df = read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc}).") from None
    if image_column not in df.columns:
        raise DataError(f"{path}: no '{image_column}' column (columns: {', '.join(df.columns)}); "
                        "name the image column (image_column, --image-column).")
    if class_column not in df.columns:
        if need_class:
            raise DataError(f"{path}: no '{class_column}' column (columns: {', '.join(df.columns)}); name the class "
                            "column (class_column, --class-column), or use mode simclr (--mode simclr) for unlabelled "
                            "images.")
        df[class_column] = ""
    out = pd.DataFrame({"image": df[image_column].astype(str).str.strip(),
                        "class": df[class_column].astype(str).str.strip()})
    return out[out["image"] != ""].reset_index(drop=True)


def load_corpus(source: str | os.PathLike, *, mode: str = "supervised", image_column: str = "image",
                class_column: str = "class") -> Corpus:
    """Find the images of ``source`` (folder tree or CSV) and their classes.

    Raises
    ------
    DataError
        No images, or (supervised) fewer than two classes.
    """
    source = Path(source)
    supervised = mode == "supervised"
    if source.is_dir():
        df, root = scan_folder(source), source.resolve()
    elif source.is_file():
        df, root = read_corpus_csv(source, image_column, class_column, need_class=supervised), source.parent.resolve()
    else:
        raise DataError(f"{source}: no such folder or CSV file.")
    notes: list[str] = []
    if df.empty:
        raise DataError(f"{source}: no image files found ({', '.join(IMAGE_SUFFIXES)}).")
    if supervised:
        unclassed = df["class"] == ""
        if unclassed.any():
            notes.append(f"{int(unclassed.sum())} image(s) without a class (directly in the root folder or with an "
                         "empty class cell) are not used in supervised mode")
            df = df[~unclassed].reset_index(drop=True)
        if df["class"].nunique() < 2:
            raise DataError(f"{source}: supervised pretraining needs at least two classes, found "
                            f"{df['class'].nunique()} ({', '.join(sorted(df['class'].unique())) or 'none'}); put the "
                            "images in one folder per class, or use mode simclr (--mode simclr) for unlabelled images.")
    dup = df["image"].duplicated()
    if dup.any():
        notes.append(f"{int(dup.sum())} duplicate image path(s) listed more than once; kept the first")
        df = df[~dup].reset_index(drop=True)
    mdf = pd.DataFrame({"image": df["image"], "label": pd.array([pd.NA] * len(df), dtype="Int64"),
                        "patient_id": df["image"], "group": df["image"], "class": df["class"]})
    return Corpus(Manifest(df=mdf, root=root, path=source.resolve() if source.is_file() else None), notes)


# --------------------------------------------------------------------------------------------------
# the training set: the readable images of the corpus, in the data layer's ImageCache, and its batches


@dataclass
class TrainingSet:
    """What the loop trains on (small and picklable: it travels from rank 0 to the other ranks)."""

    cache_path: Path
    cache_key: str
    n_cached: int
    size: int
    rows: np.ndarray          # int64 cache rows used
    targets: np.ndarray       # int64 class index per row (-1 when unlabelled)
    classes: list[str]
    failures: list[ImageFailure]
    notes: list[str]
    pixel_mean: float         # 0-1 units, over a sample of the used images
    pixel_std: float

    @property
    def images_file(self) -> Path:
        return self.cache_path / "images.u8"

    def images(self) -> np.ndarray:
        return np.memmap(self.images_file, dtype=np.uint8, mode="r", shape=(self.n_cached, self.size, self.size))


def _pixel_stats(images: np.ndarray, rows: np.ndarray, sample: int = 4096, seed: int = 0) -> tuple[float, float]:
    pick = np.sort(np.random.default_rng(seed).choice(rows, size=min(sample, len(rows)), replace=False))
    x = images[pick].astype(np.float64) / 255.0
    return float(x.mean()), float(max(x.std(), 1e-3))


def make_training_set(corpus: Corpus, cache: ImageCache, used: Manifest, failures: list[ImageFailure], mode: str,
                      min_per_class: int = 1) -> TrainingSet:
    """Number the classes and drop (supervised) those below ``min_per_class`` readable images."""
    notes = list(corpus.notes)
    if failures:
        notes.append(f"{len(failures)} unreadable image(s) skipped (listed in skipped.csv)")
    classes_col = used.df["class"].to_numpy()
    rows = np.arange(len(used), dtype=np.int64)
    targets = np.full(len(rows), -1, np.int64)
    classes: list[str] = []
    if mode == "supervised":
        counts = Counter(classes_col.tolist())
        small = sorted(c for c, k in counts.items() if k < min_per_class)
        if small:
            notes.append(f"{len(small)} class(es) with fewer than {min_per_class} readable images dropped: "
                         + ", ".join(f"{c} ({counts[c]})" for c in small[:10]) + (" ..." if len(small) > 10 else ""))
            rows = rows[~np.isin(classes_col, small)]
        singles = sorted(c for c, k in counts.items() if k == 1 and c not in small)
        if singles:
            notes.append(f"warning: {len(singles)} class(es) have a single image (kept; min_per_class 2, "
                         "--min-per-class 2, drops them): " + ", ".join(singles[:10]) + (" ..." if len(singles) > 10 else ""))
        classes = sorted(set(classes_col[rows].tolist()))
        if len(classes) < 2:
            raise DataError(f"after skipping unreadable images and small classes {len(classes)} class(es) remain; "
                            "supervised pretraining needs at least two.")
        index = {c: i for i, c in enumerate(classes)}
        targets = np.array([index[c] for c in classes_col[rows]], dtype=np.int64)
    mean, std = _pixel_stats(cache.images, rows)
    return TrainingSet(cache_path=Path(cache.path), cache_key=cache.key, n_cached=len(cache), size=cache.size,
                       rows=rows, targets=targets, classes=classes, failures=failures, notes=notes,
                       pixel_mean=mean, pixel_std=std)


class BatchSource(torch.utils.data.Dataset):
    """``dataset[list_of_positions]`` -> (uint8 images (b, S, S), targets (b,)); opens the cache lazily
    (memory maps do not travel to loader workers, paths do)."""

    def __init__(self, tset: TrainingSet):
        self.tset = tset
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tset.rows)

    def __getitem__(self, positions):
        if self._images is None:
            self._images = self.tset.images()
        pos = np.sort(np.asarray(positions, dtype=np.int64))  # ascending rows: sequential reads
        rows = self.tset.rows[pos]
        return torch.from_numpy(np.ascontiguousarray(self._images[rows])), torch.from_numpy(self.tset.targets[pos])


class EpochBatches(torch.utils.data.Sampler):
    """This rank's batches (lists of positions) of the current epoch; :meth:`set` before each epoch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def set(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def prepare(source: str | os.PathLike, cfg: PretrainConfig, *, cache_dir: str | os.PathLike,
            image_column: str = "image", class_column: str = "class") -> TrainingSet:
    """Load the corpus, build (or reuse) its image cache and make the training set (one process)."""
    corpus = load_corpus(source, mode=cfg.mode, image_column=image_column, class_column=class_column)
    cache, used, failures = ImageCache.build_readable(corpus.manifest, cfg.preprocess, cache_dir,
                                                      workers=cfg.workers if cfg.workers else None)
    return make_training_set(corpus, cache, used, failures, cfg.mode, cfg.min_per_class)
