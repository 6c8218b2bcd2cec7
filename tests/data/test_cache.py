"""The image cache: contents, keys, reuse, rebuild, bad files, resume, workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import thyro.data.cache_build as cache_mod
from thyro.cli import main
from thyro.data.cache import ImageCache, cache_key, default_cache_dir
from thyro.data.manifest import read_manifest, write_manifest
from thyro.data.phantom import generate_cohort
from thyro.data.preprocess import PreprocessConfig, Preprocessor
from thyro.errors import DataError, Problems

CFG = PreprocessConfig(size=32)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "ph"
    generate_cohort(out, n_patients=10, images_per_patient=(2, 2), size=64, seed=0)
    return out


@pytest.fixture
def manifest(phantom_dir, tmp_path):
    """A private copy of the cohort (tests change files)."""
    import shutil

    dst = tmp_path / "ph"
    shutil.copytree(phantom_dir, dst)
    return dst / "manifest.csv"


def test_build_stores_exactly_the_preprocessed_images(manifest, tmp_path):
    c = ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache")
    man = read_manifest(manifest)
    assert isinstance(c.images, np.memmap) and c.images.dtype == np.uint8
    assert c.images.shape == (len(man), 32, 32)
    assert c.ids == man.ids
    pre = Preprocessor(CFG)
    for i in (0, 7, len(man) - 1):
        assert np.array_equal(c.images[i], pre.from_file(man.paths()[i], roi=man.rois()[i]))
    idx = c.index_of([man.ids[5], man.ids[2]])
    assert idx.tolist() == [5, 2]
    assert np.array_equal(c.get(idx), np.stack([c.images[5], c.images[2]]))
    with pytest.raises(DataError, match="not in the cache"):
        c.index_of(["nope.png"])
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == [c.key]  # published; no partial folder or lock left
    assert sorted(p.name for p in c.path.iterdir()) == ["images.u8", "meta.json", "preprocess.csv"]
    # the per-image report: one row per image, the geometry the preprocessing used
    report = c.report()
    assert report["image"].tolist() == man.ids
    for i in (0, 7):
        _, geometry = pre.process_file(man.paths()[i], roi=man.rois()[i])
        assert report.loc[i, "crop_box"] == " ".join(map(str, geometry.crop_box))
        assert float(report.loc[i, "frame_kept"]) == pytest.approx(geometry.frame_kept, abs=1e-4)
    summary = c.meta["preprocess_summary"]
    assert sum(summary["scan_methods"].values()) == len(man)


def test_reused_without_decoding_and_rebuilt_on_request(manifest, tmp_path, monkeypatch):
    first = ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache")

    def boom(*a, **k):
        raise AssertionError("decoded an image although the cache exists")

    monkeypatch.setattr(Preprocessor, "process_file", boom)
    again = ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache")
    assert again.key == first.key and np.array_equal(np.asarray(again.images), np.asarray(first.images))
    with pytest.raises(Problems):  # rebuild really decodes again
        ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache", rebuild=True)


def test_key_changes_with_settings_files_and_rois(manifest):
    base = cache_key(manifest, CFG)
    assert cache_key(manifest, CFG) == base
    assert cache_key(manifest, PreprocessConfig(size=48)) != base
    assert cache_key(manifest, CFG.model_copy(update={"remove_frame": False})) != base
    man = read_manifest(manifest)
    # an ROI edit matters only when the ROI crop uses it
    df = man.df.copy()
    df.loc[0, "roi"] = json.dumps({"box": [1, 1, 20, 20]})
    write_manifest(df, manifest, root=man.root)
    assert cache_key(manifest, CFG) == base
    roi_cfg = CFG.model_copy(update={"roi_crop": True})
    k_roi = cache_key(manifest, roi_cfg)
    write_manifest(man.df, manifest, root=man.root)
    assert cache_key(manifest, roi_cfg) != k_roi
    # a changed image file (new size/mtime) changes the key
    img = man.paths()[3]
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert cache_key(manifest, CFG) != base
    # content hashing ignores the timestamp but not the bytes
    k_content = cache_key(manifest, CFG, hash_content=True)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 20_000_000))
    assert cache_key(manifest, CFG, hash_content=True) == k_content
    # row order is part of the key (cache rows follow manifest rows)
    write_manifest(man.df.iloc[::-1], manifest, root=man.root)
    assert cache_key(manifest, CFG) != base


def test_unreadable_files_are_listed_together_and_nothing_is_published(manifest, tmp_path):
    man = read_manifest(manifest)
    bad = [man.paths()[2], man.paths()[9]]
    bad[0].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bad[1].unlink()
    with pytest.raises(Problems) as info:
        ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert len(info.value.problems) == 2
    assert man.ids[2] in msg and man.ids[9] in msg and "row 4" in msg and "row 11" in msg
    key = cache_key(manifest, CFG)
    assert not (tmp_path / "cache" / key).exists()
    done = np.load(tmp_path / "cache" / f"{key}.partial" / "done.npy")
    assert done.sum() == len(man) - 2 and not done[2] and not done[9]


def test_failures_are_typed_records_and_build_readable_leaves_them_out(manifest, tmp_path, monkeypatch):
    from thyro.errors import ImageFailure, UnreadableImages

    man = read_manifest(manifest)
    man.paths()[2].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    man.paths()[9].unlink()
    with pytest.raises(UnreadableImages) as info:
        ImageCache.build(man, CFG, cache_dir=tmp_path / "cache")
    assert [(f.image, f.row) for f in info.value.failures] == [(man.ids[2], 2), (man.ids[9], 9)]
    assert all(isinstance(f, ImageFailure) and f.reason for f in info.value.failures)

    calls = {"n": 0}
    real = cache_mod._work

    def counted(task):
        calls["n"] += 1
        return real(task)

    monkeypatch.setattr(cache_mod, "_work", counted)
    cache, used, failures = ImageCache.build_readable(man, CFG, tmp_path / "cache")
    assert calls["n"] == 2  # only the two bad files were tried again; the good rows were carried over
    assert [(f.image, f.row) for f in failures] == [(man.ids[2], 2), (man.ids[9], 9)]
    assert used.ids == [i for k, i in enumerate(man.ids) if k not in (2, 9)] and cache.ids == used.ids
    assert not list((tmp_path / "cache").glob("*.partial"))
    # a rerun finds the finished cache and the remembered failures without decoding anything
    again = ImageCache.build_readable(man, CFG, tmp_path / "cache")
    assert calls["n"] == 2 and again.cache.path == cache.path and again.failures == failures
    fresh = ImageCache.build(used, CFG, cache_dir=tmp_path / "fresh")
    assert np.array_equal(np.asarray(cache.images), np.asarray(fresh.images))


def test_interrupted_build_resumes(manifest, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cache_mod._work

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(cache_mod, "_work", flaky)
    with pytest.raises(KeyboardInterrupt):
        ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache")
    key = cache_key(manifest, CFG)
    done = np.load(tmp_path / "cache" / f"{key}.partial" / "done.npy")
    assert done.sum() == 7
    calls["n"] = -1000  # no more interruptions; count the work left
    c = ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache")
    assert calls["n"] == -1000 + len(c) - 7
    fresh = ImageCache.build(manifest, CFG, cache_dir=tmp_path / "fresh")
    assert np.array_equal(np.asarray(c.images), np.asarray(fresh.images))


def test_default_cache_dir_follows_the_environment(manifest, monkeypatch, tmp_path):
    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache" / "images"
    c = ImageCache.build(manifest, CFG)
    assert c.path.parent == tmp_path / "envcache" / "images"


def test_worker_processes_give_the_same_cache(tmp_path, monkeypatch):
    path = generate_cohort(tmp_path / "big", n_patients=40, images_per_patient=(2, 2), size=64, seed=1)
    monkeypatch.setattr(cache_mod, "MIN_POOL_TASKS", 10)  # use the process pool for these 80 images
    pools = []
    real_pool = cache_mod.ProcessPoolExecutor

    def recording_pool(*args, **kwargs):
        pools.append(kwargs.get("max_workers", args[0] if args else None))
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "ProcessPoolExecutor", recording_pool)
    cfg = PreprocessConfig(size=24)
    pooled = ImageCache.build(path, cfg, cache_dir=tmp_path / "a", workers=2)
    assert pools == [2]  # the work was done by two worker processes
    single = ImageCache.build(path, cfg, cache_dir=tmp_path / "b", workers=1)
    assert pools == [2]  # ... and here in this process
    assert pooled.key == single.key
    assert np.array_equal(np.asarray(pooled.images), np.asarray(single.images))


def test_damaged_cache_is_reported(manifest, tmp_path):
    c = ImageCache.build(manifest, CFG, cache_dir=tmp_path / "cache")
    with open(c.path / "images.u8", "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(DataError, match="rebuild"):
        ImageCache(c.path)


def test_cli_cache_and_preview(manifest, tmp_path, capsys):
    cfg = tmp_path / "study.yaml"
    cfg.write_text("preprocess:\n  size: 40\n")
    args = ["data", "cache", str(manifest), "--config", str(cfg), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    assert "built" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "40x40" in out
    sheet = tmp_path / "sheet.png"
    assert main(["data", "preview", str(manifest), "--out", str(sheet), "--n", "3"]) == 0
    assert sheet.is_file()
    assert main(["data", "cache", str(Path(tmp_path) / "missing.csv")]) == 2
