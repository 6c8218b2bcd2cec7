"""Readers: Pillow formats and DICOM variants become uint8 gray/RGB with a known origin."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space, set_pixel_data
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, UltrasoundMultiFrameImageStorage, generate_uid

from thyro.data.readers import ImageReadError, is_dicom, load_image, read_gray
from thyro.errors import DataError


def _base(multi: bool = False) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = "P1"
    return ds


def write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", *, bits: int | None = None,
                regions: list[tuple[int, int, int, int, int]] | None = None, preamble: bool = True,
                pixel_data: bool = True, **attrs) -> Path:
    """Write ``arr`` ((H,W), (H,W,3) or (F,H,W[,3])) as an uncompressed DICOM file.

    ``regions``: (x0, y0, x1, y1, spatial_format) items of the Sequence of Ultrasound Regions (inclusive corners).
    """
    multi = arr.ndim == 4 or (arr.ndim == 3 and photometric.startswith("MONO"))
    ds = _base(multi)
    data = arr
    if photometric.startswith("YBR"):
        data = convert_color_space(arr, "RGB", "YBR_FULL")
        set_pixel_data(ds, data, "YBR_FULL", bits or 8)
        ds.PhotometricInterpretation = photometric
        if photometric == "YBR_FULL_422":
            # subsample chroma horizontally as a scanner would: Y0 Y1 Cb Cr per pixel pair
            h, w = data.shape[:2]
            pairs = data.reshape(h, w // 2, 2, 3)
            packed = np.empty((h, w // 2, 4), dtype=np.uint8)
            packed[..., 0] = pairs[..., 0, 0]
            packed[..., 1] = pairs[..., 1, 0]
            packed[..., 2] = pairs[..., :, 1].mean(axis=-1).round().astype(np.uint8)
            packed[..., 3] = pairs[..., :, 2].mean(axis=-1).round().astype(np.uint8)
            ds.PixelData = packed.tobytes()
    else:
        set_pixel_data(ds, data, photometric, bits or (8 if arr.dtype == np.uint8 else 16))
    if regions:
        items = []
        for x0, y0, x1, y1, fmt in regions:
            item = Dataset()
            item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
            item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
            item.RegionSpatialFormat = fmt
            items.append(item)
        ds.SequenceOfUltrasoundRegions = items
    for key, value in attrs.items():
        setattr(ds, key, value)
    if not pixel_data:
        del ds.PixelData
    ds.save_as(path, enforce_file_format=preamble)
    return path



H, W = 32, 48


def _gradient() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return ((x * 5 + y * 2) % 256).astype(np.uint8)


def _rgb() -> np.ndarray:
    g = _gradient()
    return np.stack([g, 255 - g, np.full_like(g, 60)], axis=-1)


# ---------------------------------------------------------------- Pillow

@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_gray_roundtrip(tmp_path, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    Image.fromarray(_gradient()).save(path, format=fmt)
    img = load_image(path)
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == (H, W)
    np.testing.assert_array_equal(img.pixels, _gradient())
    assert img.origin == (0, 0)


def test_rgb_to_gray_matches_pillow_and_color_keeps_channels(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(_rgb()).save(path)
    gray = read_gray(path)
    np.testing.assert_array_equal(gray, np.asarray(Image.fromarray(_rgb()).convert("L")))
    col = load_image(path, color=True).pixels
    assert col.shape == (H, W, 3)
    np.testing.assert_array_equal(col, _rgb())


def test_gray_as_color_repeats_channel(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(_gradient()).save(path)
    col = load_image(path, color=True).pixels
    assert col.shape == (H, W, 3)
    assert (col[..., 0] == col[..., 2]).all()


def test_jpeg_decodes_close_to_source(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(_rgb()).save(path, quality=95)
    gray = read_gray(path).astype(int)
    ref = np.asarray(Image.fromarray(_rgb()).convert("L")).astype(int)
    assert np.abs(gray - ref).mean() < 4


def test_16bit_png_is_stretched(tmp_path):
    arr = (_gradient().astype(np.uint16) * 16)  # a 12-bit image stored in 16 bits
    path = tmp_path / "d.png"
    Image.fromarray(arr).save(path)
    out = read_gray(path)
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    # order preserved
    assert (np.diff(out.astype(int).ravel()[np.argsort(arr.ravel(), kind="stable")]) >= 0).all()


def test_palette_rgba_cmyk(tmp_path):
    rgb = Image.fromarray(_rgb())
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png", color=True).pixels
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - _rgb().astype(int)).mean() < 25

    rgba = np.dstack([_rgb(), np.full((H, W), 255, np.uint8)])
    rgba[:, :10, 3] = 0  # transparent strip -> black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png", color=True).pixels
    assert (out[:, :10] == 0).all()
    np.testing.assert_array_equal(out[:, 10:], _rgb()[:, 10:])

    rgb.convert("CMYK").save(tmp_path / "k.tiff")
    out = load_image(tmp_path / "k.tiff", color=True).pixels
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - _rgb().astype(int)).mean() < 3


def test_exif_orientation_applied(tmp_path):
    im = Image.fromarray(_gradient())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "o.jpg"
    im.save(path, exif=exif, quality=100)
    out = read_gray(path)
    assert out.shape == (W, H)


def test_multipage_tiff_frames(tmp_path):
    a, b = _gradient(), 255 - _gradient()
    path = tmp_path / "m.tiff"
    Image.fromarray(a).save(path, save_all=True, append_images=[Image.fromarray(b)])
    np.testing.assert_array_equal(read_gray(path, frame=1), b)
    with pytest.raises(ImageReadError, match="frame 2.*2 frame"):
        read_gray(path, frame=2)


# ---------------------------------------------------------------- DICOM

def test_dicom_monochrome2_and_1(tmp_path):
    p2 = write_dicom(tmp_path / "m2.dcm", _gradient())
    np.testing.assert_array_equal(read_gray(p2), _gradient())
    p1 = write_dicom(tmp_path / "m1.dcm", _gradient(), "MONOCHROME1")
    np.testing.assert_array_equal(read_gray(p1), 255 - _gradient())


def test_dicom_detected_by_preamble_not_name(tmp_path):
    path = write_dicom(tmp_path / "IMG0001", _gradient())
    assert is_dicom(path)
    assert load_image(path).source_mode == "DICOM MONOCHROME2"
    np.testing.assert_array_equal(read_gray(path), _gradient())


def test_dicom_rgb_and_ybr(tmp_path):
    rgb = _rgb()
    p = write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")
    np.testing.assert_array_equal(load_image(p, color=True).pixels, rgb)
    p = write_dicom(tmp_path / "ybr.dcm", rgb, "YBR_FULL")
    out = load_image(p, color=True).pixels
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 2
    p = write_dicom(tmp_path / "ybr422.dcm", rgb, "YBR_FULL_422")
    out = load_image(p, color=True).pixels
    assert out.shape == (H, W, 3)
    # chroma is subsampled; luma kept exactly -> gray close to the source
    assert np.abs(read_gray(p).astype(int) - read_gray(tmp_path / "rgb.dcm").astype(int)).mean() < 4


def test_dicom_multiframe_choose_frame(tmp_path):
    frames = np.stack([_gradient(), 255 - _gradient(), np.full((H, W), 7, np.uint8)])
    p = write_dicom(tmp_path / "mf.dcm", frames, NumberOfFrames=3)
    np.testing.assert_array_equal(read_gray(p), frames[0])
    np.testing.assert_array_equal(read_gray(p, frame=2), frames[2])
    with pytest.raises(ImageReadError, match=r"mf\.dcm.*frame 3.*3 frame"):
        read_gray(p, frame=3)


def test_dicom_12bit_window_and_rescale(tmp_path):
    raw = (_gradient().astype(np.uint16) * 16)  # 0..4080
    p = write_dicom(tmp_path / "w.dcm", raw, bits=12, WindowCenter=1024, WindowWidth=1024)
    out = read_gray(p)
    assert out[raw <= 511].max() == 0 and out[raw >= 1537].min() == 255
    inside = (raw > 600) & (raw < 1400)
    assert 0 < out[inside].min() and out[inside].max() < 255
    p = write_dicom(tmp_path / "s.dcm", raw, bits=12)  # no window: stretched
    out = read_gray(p)
    assert out.min() == 0 and out.max() == 255


def test_dicom_ultrasound_region_crop(tmp_path):
    arr = _gradient()
    # a Doppler strip (format 3) and the 2-D tissue region (format 1)
    p = write_dicom(tmp_path / "us.dcm", arr, regions=[(4, 26, 40, 31, 3), (6, 3, 37, 20, 1)])
    img = load_image(p)
    assert img.origin == (6, 3)
    assert img.pixels.shape == (18, 32)
    np.testing.assert_array_equal(img.pixels, arr[3:21, 6:38])
    assert img.size == (W, H)
    full = load_image(p, us_region=False)
    assert full.origin == (0, 0) and full.pixels.shape == (H, W)


def test_dicom_without_pixel_data(tmp_path):
    p = write_dicom(tmp_path / "sr.dcm", _gradient(), pixel_data=False)
    with pytest.raises(ImageReadError, match=r"sr\.dcm.*no pixel data"):
        read_gray(p)


# ---------------------------------------------------------------- bad files

def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb()).resize((256, 256)).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg.*(truncated|corrupt)"):
        read_gray(path)


def test_not_an_image_and_missing(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.png.*not an image format"):
        read_gray(path)
    with pytest.raises(DataError, match="not found"):
        read_gray(tmp_path / "nope.png")


def test_truncated_dicom(tmp_path):
    p = write_dicom(tmp_path / "t.dcm", np.tile(_gradient(), (4, 4)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 3000])
    with pytest.raises(ImageReadError, match=r"t\.dcm"):
        read_gray(p)


def test_dicom_rle_compressed_multiframe_with_region(tmp_path):
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    frames = np.stack([_gradient(), 255 - _gradient()])
    p = write_dicom(tmp_path / "mf.dcm", frames, regions=[(2, 4, 41, 27, 1)], NumberOfFrames=2)
    ds = dcmread(p)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    img = load_image(tmp_path / "rle.dcm", frame=1)
    assert img.origin == (2, 4)
    np.testing.assert_array_equal(img.pixels, frames[1][4:28, 2:42])


def test_dicom_jpeg_baseline_ybr_422(tmp_path):
    """Scanners usually store JPEG Baseline with YBR_FULL_422; pydicom decodes it (Pillow plugin) to RGB."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    rgb = np.asarray(Image.fromarray(_rgb()).resize((96, 64), Image.Resampling.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, subsampling=1)  # 4:2:2
    ds = _base()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpg.dcm", enforce_file_format=True)
    out = load_image(tmp_path / "jpg.dcm", color=True).pixels
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 6


def test_garbage_named_dcm(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ImageReadError, match=r"x\.dcm"):
        read_gray(path)
