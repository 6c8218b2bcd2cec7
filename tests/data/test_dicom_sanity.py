"""DICOM files whose header disagrees with itself or with the pixel data are refused before decoding, with
one line naming the file and the mismatch, by every reader (validate, import, predict, serve alike); what
pydicom warns about in a file it still reads becomes thyro's own note, never a raw warning."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_readers import write_dicom
from thyro.data.readers import ImageReadError, check_dicom, load_image, probe_image

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, size=(40, 48), dtype=np.uint8)
REPO = Path(__file__).resolve().parents[2]


def _one_bit_over_eight(path: Path) -> Path:
    """The probe's file: BitsAllocated 1 while PixelData holds 8-bit pixels (decoded, it was a 0/1 image)."""
    return write_dicom(path, GRAY, BitsAllocated=1, BitsStored=1, HighBit=0)


BAD = {
    "one bit over eight-bit data": (dict(BitsAllocated=1, BitsStored=1, HighBit=0),
                                    "PixelData holds 1,920 bytes but 40 rows x 48 columns x 1 frame(s) x 1 sample(s) "
                                    "at BitsAllocated 1 need 240; 1,920 bytes is what BitsAllocated 8 would need"),
    "bits stored beyond allocated": (dict(BitsStored=12, HighBit=11), "BitsStored 12 with BitsAllocated 8"),
    "high bit": (dict(HighBit=6), "HighBit 6 with BitsStored 8 (HighBit must be 7)"),
    "sixteen bits over eight-bit data": (dict(BitsAllocated=16, BitsStored=16, HighBit=15),
                                         "need 3,840; 1,920 bytes is what BitsAllocated 8 would need"),
    "samples for colour": (dict(SamplesPerPixel=3), "SamplesPerPixel 3 (MONOCHROME2 needs 1)"),
    "photometric for samples": (dict(PhotometricInterpretation="RGB"), "SamplesPerPixel 1 (RGB needs 3)"),
    "frames beyond the data": (dict(NumberOfFrames=3), "at BitsAllocated 8 need 5,760"),
    "rows beyond the data": (dict(Rows=80), "80 rows x 48 columns"),
    "bits allocated": (dict(BitsAllocated=12, BitsStored=12, HighBit=11), "BitsAllocated 12 (1 or a multiple of 8"),
    "pixel representation": (dict(PixelRepresentation=2), "PixelRepresentation 2"),
    "no photometric value": (dict(PhotometricInterpretation="GREEN"), "'GREEN' is not a DICOM value"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_inconsistent_headers_are_refused_in_one_line_before_decoding(tmp_path, case, monkeypatch):
    attrs, expected = BAD[case]
    path = write_dicom(tmp_path / "bad.dcm", GRAY, **attrs)
    import pydicom.pixels

    def never(*a, **k):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", never)
    for read in (load_image, probe_image):
        with pytest.raises(ImageReadError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path}: inconsistent DICOM image: ") and expected in message, message
        assert "\n" not in message and "refused before decoding" in message


def test_consistent_files_still_read(tmp_path):
    """Gray, 16-bit, colour, YBR 4:2:2, multi-frame and odd-length (padded) files pass the check."""
    cases = {
        "gray": write_dicom(tmp_path / "g.dcm", GRAY),
        "sixteen": write_dicom(tmp_path / "s.dcm", (GRAY.astype(np.uint16) * 200)),
        "rgb": write_dicom(tmp_path / "c.dcm", np.dstack([GRAY] * 3), "RGB"),
        "ybr422": write_dicom(tmp_path / "y.dcm", np.dstack([GRAY] * 3), "YBR_FULL_422"),
        "frames": write_dicom(tmp_path / "f.dcm", np.stack([GRAY, 255 - GRAY])),
        "odd": write_dicom(tmp_path / "o.dcm", GRAY[:39, :47]),
    }
    for name, path in cases.items():
        assert load_image(path).pixels.shape[:2] == (39, 47) if name == "odd" else (40, 48), name
        assert probe_image(path).notes == ()


def _jpeg_dicom(path: Path, frames: int = 1, *, rows: int | None = None, offsets: bool = True) -> Path:
    """A JPEG baseline (encapsulated) DICOM file of ``frames`` copies of GRAY, made with Pillow."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    buf = io.BytesIO()
    Image.fromarray(GRAY).save(buf, format="JPEG", quality=95)
    ds = pydicom.dcmread(write_dicom(path, GRAY))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()] * frames, has_bot=offsets)
    ds["PixelData"].VR = "OB"
    ds.NumberOfFrames = frames
    if rows is not None:
        ds.Rows = rows
    ds.save_as(path, enforce_file_format=True)
    return path


def test_encapsulated_pixel_data_is_checked_against_the_header(tmp_path):
    good = _jpeg_dicom(tmp_path / "jpeg.dcm", 2)
    assert probe_image(good).frames == 2
    check_dicom(__import__("pydicom").dcmread(good), good)  # consistent: no error
    import pydicom

    ds = pydicom.dcmread(good)
    ds.NumberOfFrames = 5  # three more frames than fragments (and the offset table lists 2)
    ds.save_as(tmp_path / "frames.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="NumberOfFrames 5 but the encapsulated pixel data holds 2 fragment"):
        load_image(tmp_path / "frames.dcm")
    with pytest.raises(ImageReadError, match="JPEG header says 40 x 48, the DICOM header 64 x 48"):
        probe_image(_jpeg_dicom(tmp_path / "rows.dcm", rows=64))
    ds = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", GRAY))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit  # says compressed; the data is raw pixels
    _write_unchecked(ds, tmp_path / "notencap.dcm")
    with pytest.raises(ImageReadError, match="not encapsulated"):
        load_image(tmp_path / "notencap.dcm")


def _write_unchecked(ds, path: Path, *, implicit: bool = False) -> Path:
    """Write ``ds`` under its file meta, its dataset encoded as given, with none of pydicom's checks that the
    two agree (what a faulty exporter writes)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, implicit
    write_dataset(body, ds)
    path.write_bytes(head.getvalue() + body.getvalue())
    return path


def test_rle_segments_are_checked(tmp_path):
    import pydicom
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(write_dicom(tmp_path / "g.dcm", GRAY))
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    assert np.array_equal(load_image(tmp_path / "rle.dcm").pixels, GRAY)
    ds = pydicom.dcmread(tmp_path / "rle.dcm")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15  # one RLE segment cannot hold 16-bit samples
    ds.save_as(tmp_path / "rle16.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="RLE header has 1 segment"):
        load_image(tmp_path / "rle16.dcm")


def test_every_command_refuses_the_one_bit_file_alike(tmp_path, capsys):
    """validate and import list it, predict gives it an error row (no probability), serve answers 400;
    each names the file and says BitsAllocated 1."""
    from fastapi.testclient import TestClient

    from thyro.cli import main

    for cls in ("malignant", "benign"):
        (tmp_path / "img" / cls).mkdir(parents=True)
    bad = _one_bit_over_eight(tmp_path / "img" / "malignant" / "onebit.dcm")
    good = tmp_path / "img" / "benign" / "good.png"
    Image.fromarray(GRAY).save(good)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"image": ["img/malignant/onebit.dcm", "img/benign/good.png"], "label": [1, 0]}).to_csv(
        manifest, index=False)
    want = "inconsistent DICOM image: PixelData holds 1,920 bytes but 40 rows x 48 columns"

    assert main(["data", "validate", str(manifest)]) == 1
    assert want in capsys.readouterr().err
    assert main(["data", "import", "csv", str(manifest), "--out", str(tmp_path / "imp")]) != 0
    assert want in capsys.readouterr().err and not (tmp_path / "imp" / "manifest.csv").exists()
    assert main(["data", "import", "folders", str(tmp_path / "img"), "--out", str(tmp_path / "imp2")]) != 0
    assert want in capsys.readouterr().err and not (tmp_path / "imp2" / "manifest.csv").exists()

    model_dir = _tiny_package(tmp_path)
    out = tmp_path / "pred.csv"
    main(["predict", str(model_dir), str(bad), str(good), "--out", str(out)])
    rows = pd.read_csv(out, keep_default_na=False)
    onebit = rows[rows["image"].str.endswith("onebit.dcm")].iloc[0]
    assert onebit["probability"] == "" and want in onebit["error"]
    assert rows[rows["image"].str.endswith("good.png")].iloc[0]["probability"] != ""

    from thyro.use.serve import create_app

    with TestClient(create_app(model_dir)) as client:
        r = client.post("/predict", files={"file": ("onebit.dcm", bad.read_bytes(), "application/dicom")})
    assert r.status_code == 400 and r.json()["detail"].startswith("onebit.dcm: inconsistent DICOM image")


def _tiny_package(tmp_path: Path) -> Path:
    from thyro.models import build_model, save_model
    from thyro.use.bundle import write_package

    model, _ = build_model("resnet18", "none", seed=0)
    files = [save_model(tmp_path / "fold0.safetensors", model.eval())]
    write_package(tmp_path / "model", model_files=files, preprocess={"size": 32},
                  operating={"youden": {"threshold": 0.5, "rule": "fixed"}}, data={})
    return tmp_path / "model"


def _explicit_meta_implicit_body(path: Path) -> Path:
    """A readable file whose meta says Explicit VR while its dataset is Implicit VR: pydicom warns and reads."""
    import pydicom

    return _write_unchecked(pydicom.dcmread(write_dicom(path, GRAY)), path, implicit=True)


# pytest resets the process's warning filters for each test and shows pydicom's copy in its summary; the
# command line run below checks what a user sees
@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")
def test_pydicom_warnings_become_thyros_notes_never_raw_output(tmp_path):
    path = _explicit_meta_implicit_body(tmp_path / "quirk.dcm")
    loaded = load_image(path)
    assert np.array_equal(loaded.pixels, GRAY)
    assert loaded.notes == (f"{path}: DICOM: Expected explicit VR, but found implicit VR - using implicit VR for "
                            "reading",)
    assert probe_image(path).notes == loaded.notes
    # a command line run (validate: no model to load) shows thyro's note once, and nothing raw reaches stderr
    pd.DataFrame({"image": ["quirk.dcm"], "label": [1]}).to_csv(tmp_path / "m.csv", index=False)
    proc = subprocess.run([sys.executable, "-W", "default", "-m", "thyro", "data", "validate", str(tmp_path / "m.csv")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("DICOM: Expected explicit VR, but found implicit VR") == 1, proc.stderr
    assert "Warning" not in proc.stderr and "warn_and_log" not in proc.stderr, proc.stderr
    # and a prediction carries it in its warning column
    from thyro.use.predict import predict

    row = predict(_tiny_package(tmp_path), [path], progress=False).rows[0]
    assert row.error == "" and "DICOM: Expected explicit VR, but found implicit VR" in row.warning


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")
def test_notes_stay_with_their_own_read_across_threads(tmp_path):
    """Reads on several threads at once (the web app's) each get their own notes."""
    from concurrent.futures import ThreadPoolExecutor

    quirky = [_explicit_meta_implicit_body(tmp_path / f"q{k}.dcm") for k in range(4)]
    plain = [write_dicom(tmp_path / f"p{k}.dcm", GRAY) for k in range(4)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: (p, load_image(p).notes), (quirky + plain) * 5))
    for path, notes in results:
        assert (len(notes) == 1 and notes[0].startswith(f"{path}: DICOM:")) if path in quirky else notes == ()
