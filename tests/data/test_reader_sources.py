"""Readers take a path, bytes or a binary file object alike: the same pixels, origin and notes, the same
refusals, and nothing written to disk; the readers' list is the one place a format (and its suffixes) is
named."""

from __future__ import annotations

import builtins
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dicom_sanity import _explicit_meta_implicit_body, _jpeg_dicom
from test_readers import write_dicom

import thyro.data.readers.registry as registry
from thyro.data import readers
from thyro.data.readers import (
    IMAGE_SUFFIXES,
    READERS,
    DicomReader,
    ImageInfo,
    ImageReadError,
    LoadedImage,
    PillowReader,
    Reader,
    Source,
    image_suffixes,
    load_image,
    probe_image,
    reader_for,
)

H, W = 40, 48
RNG = np.random.default_rng(3)
GRAY = RNG.integers(0, 256, size=(H, W), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _files(folder: Path) -> dict[str, Path]:
    """One file of each kind thyro reads, written by Pillow and pydicom."""
    out = {}
    for fmt, suffix, arr in (("PNG", "png", RGB), ("JPEG", "jpg", RGB), ("GIF", "gif", RGB), ("WEBP", "webp", RGB)):
        out[fmt] = folder / f"a.{suffix}"
        Image.fromarray(arr).save(out[fmt], format=fmt)
    out["TIFF16"] = folder / "deep.tiff"
    Image.fromarray(GRAY.astype(np.uint16) * 200).save(out["TIFF16"])
    out["DICOM"] = write_dicom(folder / "native.dcm", GRAY, regions=[(4, 3, 40, 30, 1)])
    out["DICOM-noname"] = write_dicom(folder / "IMG0001", GRAY)  # recognised by its DICM marker alone
    out["DICOM-JPEG"] = _jpeg_dicom(folder / "jpeg.dcm", 2)
    out["DICOM-notes"] = _explicit_meta_implicit_body(folder / "quirk.dcm")
    return out


def _same(a: LoadedImage, b: LoadedImage) -> None:
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert (a.origin, a.size, a.source_mode, a.region, a.notes) == (b.origin, b.size, b.source_mode, b.region, b.notes)


class _NoStream(io.RawIOBase):
    """A binary stream that cannot seek (a pipe, a socket)."""

    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._buf.read(len(b))
        b[:len(chunk)] = chunk
        return len(chunk)


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")
def test_path_bytes_and_file_objects_read_alike(tmp_path):
    files = _files(tmp_path)
    for kind, path in files.items():
        data = path.read_bytes()
        for color in (False, True):
            from_path = load_image(path, color=color, frame=1 if kind == "DICOM-JPEG" else 0)
            for source in (data, bytearray(data), memoryview(data), io.BytesIO(data), _NoStream(data)):
                got = load_image(source, name=str(path), color=color, frame=1 if kind == "DICOM-JPEG" else 0)
                _same(got, from_path)
            assert probe_image(io.BytesIO(data), name=str(path)) == probe_image(path), kind
    assert load_image(files["DICOM"]).origin == (4, 3)  # the region crop travels with every source
    assert load_image(files["DICOM-notes"].read_bytes(), name="upload.dcm").notes[0].startswith("upload.dcm: DICOM: ")


def test_a_file_object_is_read_from_its_position_and_left_open(tmp_path):
    path = _files(tmp_path)["PNG"]
    stream = io.BytesIO(b"HEADER" + path.read_bytes())
    stream.seek(6)
    img = load_image(stream, name="part.png")
    np.testing.assert_array_equal(img.pixels, load_image(path).pixels)
    assert not stream.closed
    stream.seek(6)
    source = Source.of(stream, "part.png")  # one Source reads from the same start each time
    assert probe_image(source).size == (W, H) and load_image(source).pixels.shape == (H, W)
    with open(path, "rb") as fh:  # an open file is named by its own name
        assert load_image(fh).pixels.shape == (H, W)
        fh.seek(0)
        with pytest.raises(ImageReadError, match=r"^.*a\.png: frame 3 requested"):
            load_image(fh, frame=3)


def test_reading_bytes_writes_nothing_to_disk(tmp_path, monkeypatch):
    datas = [p.read_bytes() for k, p in _files(tmp_path).items() if k != "DICOM-notes"]
    real_open = builtins.open

    def no_writes(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+"):
            raise AssertionError(f"a reader opened {file!r} to write")
        return real_open(file, mode, *args, **kwargs)

    def no_temporaries(*args, **kwargs):
        raise AssertionError("a reader made a temporary file")

    monkeypatch.setattr(builtins, "open", no_writes)
    monkeypatch.setattr(io, "open", no_writes)
    for name in ("mkstemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, no_temporaries)
    for data in datas:
        assert load_image(data).pixels.dtype == np.uint8
        assert probe_image(data).size[0] > 0


def test_messages_name_the_given_name(tmp_path, bomb_png):
    with pytest.raises(ImageReadError, match=r"^notes\.png: not an image format"):
        load_image(b"hello", name="notes.png")
    with pytest.raises(ImageReadError, match=r"^<bytes>: not an image format"):
        probe_image(b"hello")
    with pytest.raises(ImageReadError, match=r"^<stream>: "):
        load_image(io.BytesIO(b"\x00" * 10))
    garbage = b"\x00\x01garbage" * 10
    with pytest.raises(ImageReadError, match=r"^x\.dcm: "):  # a DICOM name makes it a DICOM read
        load_image(garbage, name="x.dcm")
    cut = write_dicom(tmp_path / "t.dcm", np.tile(GRAY, (4, 4))).read_bytes()[:-3000]
    with pytest.raises(ImageReadError, match=r"^scan\.dcm: "):
        load_image(cut, name="scan.dcm")


def test_a_bomb_given_as_bytes_is_refused_from_its_header(tmp_path, bomb_png, pixel_limit):
    data = bomb_png(tmp_path / "bomb.png", 13000, 13000).read_bytes()
    assert len(data) < 1_000_000
    t = time.perf_counter()
    for read in (load_image, probe_image):
        for source in (data, io.BytesIO(data)):
            with pytest.raises(ImageReadError) as info:
                read(source, name="upload.png")
            text = str(info.value)
            assert text.startswith("upload.png: image is 13000 x 13000") and "25,000,000" in text
            assert "thyro.settings.set_settings(max_pixels=N)" in text
    assert time.perf_counter() - t < 2.0  # nothing was decoded


def test_one_choice_of_reader_for_load_and_probe(tmp_path):
    files = _files(tmp_path)
    assert isinstance(reader_for(files["DICOM-noname"]), DicomReader)  # by its marker
    assert isinstance(reader_for(b"no marker", name="scan.DCM"), DicomReader)  # by its name
    assert isinstance(reader_for(files["PNG"]), PillowReader)
    assert isinstance(reader_for(files["PNG"].read_bytes()), PillowReader)
    assert probe_image(files["DICOM-noname"]).format == "DICOM"
    assert load_image(files["DICOM-noname"]).source_mode == "DICOM MONOCHROME2"


class _FakeReader(Reader):
    """A format of its own: ``FAKE`` then one byte of width, one of height, then gray pixels."""

    suffixes = (".fake", ".FK")

    def accepts(self, head: bytes, name: str) -> bool:
        return head.startswith(b"FAKE")

    def probe(self, source: Source, *, check_limit: bool = True) -> ImageInfo:
        head = source.head(6)
        return ImageInfo((head[4], head[5]), "L", 1, "FAKE")

    def load(self, source: Source, *, frame: int = 0, color: bool = False, us_region: bool = True) -> LoadedImage:
        with source.open() as fh:
            data = fh.read()
        w, h = data[4], data[5]
        pixels = np.frombuffer(data[6:6 + w * h], np.uint8).reshape(h, w)
        return LoadedImage(readers.colour.as_requested(pixels, color), size=(w, h), source_mode="FAKE")


def test_a_new_format_is_one_reader_in_the_list(monkeypatch):
    assert IMAGE_SUFFIXES == image_suffixes(READERS)  # the one suffix list is the readers' own
    assert set(IMAGE_SUFFIXES) == {s for r in READERS for s in r.suffixes}
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom", ".dic"} == \
        set(IMAGE_SUFFIXES)
    with_fake = (_FakeReader(), *READERS)
    assert image_suffixes(with_fake)[:2] == (".fake", ".fk")
    monkeypatch.setattr(registry, "READERS", with_fake)
    data = b"FAKE" + bytes([3, 2]) + bytes(range(6))
    assert image_suffixes() == image_suffixes(with_fake)
    assert isinstance(reader_for(data), _FakeReader)
    np.testing.assert_array_equal(load_image(data).pixels, np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert probe_image(data).format == "FAKE"
    assert load_image(data, color=True).pixels.shape == (2, 3, 3)


def test_folder_walks_use_the_readers_suffix_list():
    from thyro.data.importers import folders
    from thyro.use import inputs

    assert folders.IMAGE_SUFFIXES is readers.IMAGE_SUFFIXES
    assert inputs.IMAGE_SUFFIXES | inputs.DICOM_SUFFIXES == set(readers.IMAGE_SUFFIXES)
    assert inputs._wanted(Path("scan.WEBP")) and not inputs._wanted(Path("notes.txt"))


def test_importing_the_readers_changes_no_other_library(tmp_path):
    """Warning filters and pydicom's log handler are installed on the first read, once, not at import."""
    import os
    import subprocess
    import sys

    Image.fromarray(GRAY).save(tmp_path / "a.png")
    script = (
        "import logging, sys, warnings\n"
        "import thyro.data.readers as readers\n"
        "import thyro.data.preprocess, thyro.data.validate, thyro.data.importers\n"
        "from PIL import Image\n"
        "def thyros():  # the filters thyro installs (other libraries add their own at import)\n"
        "    return [f for f in warnings.filters if f[2] is Image.DecompressionBombWarning\n"
        "            or 'pydicom' in str(getattr(f[3], 'pattern', f[3]))]\n"
        "handlers = lambda: [type(h).__name__ for h in logging.getLogger('pydicom').handlers]\n"
        "assert thyros() == [], thyros()\n"
        "assert '_NoteHandler' not in handlers(), handlers()\n"
        "readers.load_image(sys.argv[1])\n"
        "readers.probe_image(open(sys.argv[1], 'rb').read())\n"
        "assert len(thyros()) == 2, thyros()\n"
        "assert handlers().count('_NoteHandler') == 1, handlers()\n")
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.png")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(src)})
    assert proc.returncode == 0, proc.stderr
