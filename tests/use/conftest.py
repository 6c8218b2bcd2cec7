"""Fixtures of the use area: a synthetic study run directory, the model package bundled from it,
and small test images (PNG, JPEG, DICOM, and bad files)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SIZE = 64
ARM = "scratch"
N_FOLDS = 2

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _speckle(rng: np.random.Generator, h: int, w: int, blob: tuple[int, int, int] | None = None) -> np.ndarray:
    """A fake B-mode image: a bright sector on black with speckle, and an optional dark nodule."""
    img = np.zeros((h, w), np.uint8)
    tissue = np.clip(rng.gamma(2.0, 45.0, size=(h - 8, w - 16)), 0, 255)
    if blob is not None:
        cy, cx, r = blob
        yy, xx = np.mgrid[: h - 8, : w - 16]
        tissue[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] *= 0.3
    img[4:h - 4, 8:w - 8] = tissue.astype(np.uint8)
    return img


def write_run_dir(root: Path, *, n_folds: int = N_FOLDS, size: int = SIZE, seed: int = 0,
                  label_source: str = "tirads", label_definition: str = "TI-RADS ≥ 4c") -> Path:
    """A study run directory written through its owner (thyro.run), with tiny random-init fold models."""
    from thyro.config import StudyConfig
    from thyro.data.manifest import LabelMeaning
    from thyro.models import build_model
    from thyro.run import ArmResult, DataSummary, JobKey, JobRecord, Results, RunDir, predictions_frame

    run = RunDir(root / "run")
    cfg = StudyConfig.parse({
        "name": "synthetic",
        "data": {"manifest": "ddti/manifest.csv", "folds": n_folds},
        "preprocess": {"size": size, "roi_crop": True, "roi_margin": 0.1},
        "arms": [{"name": ARM, "backbone": "resnet18", "weights": "none"},
                 {"name": "imagenet", "backbone": "resnet18", "weights": "imagenet"}],
    })
    run.write_record(cfg, root)
    meaning = LabelMeaning(label_source, label_definition)
    rng = np.random.default_rng(seed)
    meta, rows = [], []
    # out-of-fold: 48 images, 24 patients (2 images each), informative scores
    for i in range(48):
        label = int(i % 5 < 2)
        meta.append({"image": f"img{i:03d}.png", "patient_id": f"p{i // 2:03d}", "group": f"p{i // 2:03d}", "label": label})
        p = float(np.clip(0.35 + 0.3 * label + rng.normal(0, 0.18), 0.01, 0.99))
        rows.append({"image": f"img{i:03d}.png", "arm": ARM, "train_fraction": 1.0, "split": "val", "fold": (i // 2) % n_folds,
                     "ensemble": False, "probability": p})
    # test: 18 images (6 labelled 1: enough for an AUROC, thyro.stats.support), per fold and mean
    for i in range(48, 66):
        label = int(i % 3 == 0)
        meta.append({"image": f"img{i:03d}.png", "patient_id": f"p{i:03d}", "group": f"p{i:03d}", "label": label})
        per_fold = [float(np.clip(0.4 + 0.25 * label + rng.normal(0, 0.15), 0.01, 0.99)) for _ in range(n_folds)]
        for k, p in enumerate(per_fold):
            rows.append({"image": f"img{i:03d}.png", "arm": ARM, "train_fraction": 1.0, "split": "test", "fold": k,
                         "ensemble": False, "probability": p})
        rows.append({"image": f"img{i:03d}.png", "arm": ARM, "train_fraction": 1.0, "split": "test", "fold": None,
                     "ensemble": True, "probability": float(np.mean(per_fold))})
    for k in range(n_folds):
        model, _ = build_model("resnet18", "none", seed=seed + k)
        job = JobKey(ARM, k)
        mine = [r for r in rows if r["fold"] == k]
        rec = JobRecord(arm=ARM, fold=k, fraction=1.0, best_epoch=3, val_auroc=None, epochs_run=3, stopped_early=False,
                        seconds=1.0, train_images_per_second=10.0)
        run.finish_job(job, rec, pd.DataFrame(mine), model.eval())
    run.write_predictions(predictions_frame(rows, pd.DataFrame(meta).set_index("image"), meaning.source))
    run.write_data(DataSummary(images_total=66, class_balance={"images": {"benign": 36, "malignant": 24}},
                               labels=meaning, patients=30))  # patients: a key another version might write
    run.write_results(Results(arms={ARM: ArmResult(status="done", backbone="resnet18", weights="none"),
                                    "imagenet": ArmResult(status="skipped", reason="weights not found")},
                              git_commit="0123abc", versions={"thyro": "0.1.0"}, labels=meaning))
    return run.root


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return write_run_dir(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="session")
def model_dir(run_dir: Path, tmp_path_factory) -> Path:
    """The package bundled from :func:`run_dir` (shared: tests must not modify it; copy it first)."""
    from thyro.use.bundle import bundle

    out = tmp_path_factory.mktemp("pkg") / "model"
    bundle(run_dir, ARM, out)
    return out


@pytest.fixture(scope="session")
def package(model_dir: Path):
    from thyro.use.bundle import load_package

    return load_package(model_dir)


#: The upload limit of the web app the ``client`` fixture serves (bytes).
SERVE_UPLOAD_LIMIT = 200_000


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app served by uvicorn in a thread, configured as ``thyro serve`` configures it
    (:func:`thyro.use.serve.uvicorn_config`; ``config`` overrides its settings, e.g. ``header_timeout_s``)."""

    def __init__(self, app, **config):
        import threading

        import uvicorn

        from thyro.use.serve import uvicorn_config

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", self.port, log_level="warning", **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def tempdir_at(folder: Path):
    """Redirect tempfile's default folder (Starlette's spooled uploads, thyro's temporary folders) to
    ``folder`` for the duration, so a test can see what the app writes to disk."""
    old = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = old


@pytest.fixture(scope="module")
def app_tmp(tmp_path_factory):
    """The temporary folder the app is allowed to write to (tempfile's default, redirected)."""
    return tmp_path_factory.mktemp("servetmp")


@pytest.fixture(scope="module")
def client(model_dir, app_tmp):
    """FastAPI's TestClient of the web app on ``model_dir``, uploads limited to SERVE_UPLOAD_LIMIT."""
    from fastapi.testclient import TestClient

    from thyro.use.serve import create_app

    with tempdir_at(app_tmp), TestClient(create_app(model_dir, max_upload_bytes=SERVE_UPLOAD_LIMIT)) as c:
        yield c


def _us_dicom(path: Path, sop_class: str, shape: tuple[int, int], pixels: bytes | None,
              frames: int | None = None) -> Path:
    """Write an 8-bit MONOCHROME2 ultrasound DICOM file of ``sop_class`` (pixel data optional; with
    ``frames``, a multi-frame file)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = "anon"
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if pixels is not None:
        ds.PixelData = pixels
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_dicom(path: Path, pixels: np.ndarray | None) -> Path:
    """A minimal ultrasound DICOM file (MONOCHROME2, 8 bit), optionally without pixel data."""
    shape = pixels.shape if pixels is not None else (80, 96)
    data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes() if pixels is not None else None
    return _us_dicom(path, "1.2.840.10008.5.1.4.1.1.6.1", shape, data)  # Ultrasound Image Storage


def write_dicom_frames(path: Path, frames: list[np.ndarray]) -> Path:
    """A multi-frame (cine) ultrasound DICOM file, MONOCHROME2, 8 bit, one frame per array."""
    from pydicom.uid import UltrasoundMultiFrameImageStorage

    stack = np.ascontiguousarray(np.stack(frames), dtype=np.uint8)
    return _us_dicom(path, UltrasoundMultiFrameImageStorage, stack.shape[1:], stack.tobytes(), frames=len(frames))


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs: PNGs in a nested folder, a JPEG, a DICOM, and bad files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    good = root / "good"
    (good / "sub").mkdir(parents=True)
    paths: dict[str, Path] = {}
    for k in range(5):
        p = (good / "sub" if k % 2 else good) / f"us{k}.png"
        Image.fromarray(_speckle(rng, 96, 128, (40, 50 + 3 * k, 14))).save(p)
        paths[f"png{k}"] = p
    jpg = good / "us_rgb.jpg"
    Image.fromarray(np.repeat(_speckle(rng, 90, 120)[..., None], 3, axis=2)).save(jpg, quality=92)
    paths["jpg"] = jpg
    paths["dcm"] = write_dicom(good / "us.dcm", _speckle(rng, 88, 104, (30, 40, 12)))
    bad = root / "bad"
    bad.mkdir()
    paths["not_image"] = bad / "notes.png"
    paths["not_image"].write_text("this is not an image\n", encoding="utf-8")
    paths["dicom_no_pixels"] = write_dicom(bad / "nopixels.dcm", None)
    paths["tiny"] = bad / "tiny.png"
    Image.fromarray(_speckle(rng, 12, 24)).save(paths["tiny"])
    paths["small"] = bad / "small.png"
    Image.fromarray(rng.integers(30, 200, size=(40, 48), dtype=np.uint8)).save(paths["small"])
    paths["good_dir"] = good
    paths["bad_dir"] = bad
    return paths
