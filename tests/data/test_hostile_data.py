"""Hostile and careless inputs to the data commands: each case ends in a clear error naming the file or
row, never a traceback, and nothing already written is lost."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_readers import write_dicom

from thyro.cli import main
from thyro.data.readers import ImageReadError, load_image, probe_image
from thyro.errors import DataError, Problems


def _png(path: Path, h: int = 30, w: int = 40, value: int = 90) -> Path:
    rng = np.random.default_rng(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(10, 250, size=(h, w), dtype=np.uint8)).save(path)
    return path


def _manifest(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _cli(args: list[str], capsys) -> tuple[int, str]:
    """Run the command line in-process; an uncaught exception (a traceback) fails the test by itself."""
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


# ------------------------------------------------------------------------------------------------
# Decompression bombs: refused from the header, before decoding, by every reader path
# ------------------------------------------------------------------------------------------------

def test_png_bomb_is_refused_from_its_header(tmp_path, bomb_png, pixel_limit):
    bomb = bomb_png(tmp_path / "bomb.png", 13000, 13000)
    t = time.perf_counter()
    for read in (load_image, probe_image):
        with pytest.raises(ImageReadError) as info:
            read(bomb)
        text = str(info.value)
        assert str(bomb) in text and "13000 x 13000" in text and "25,000,000" in text
    assert time.perf_counter() - t < 2.0  # nothing was decoded


def test_bomb_beyond_pillows_own_guard_is_a_clear_error(tmp_path, bomb_png, pixel_limit):
    # 20000 x 20000 is over twice Image.MAX_IMAGE_PIXELS: Pillow raises DecompressionBombError at open
    bomb = bomb_png(tmp_path / "huge.png", 20000, 20000)
    pixel_limit.set_settings(max_pixels=500_000_000)  # even above thyro's limit, Pillow's guard stays a clear error
    with pytest.raises(ImageReadError, match="huge.png: image is over the pixel limit"):
        probe_image(bomb)
    with pytest.raises(ImageReadError, match="huge.png"):
        load_image(bomb)


def test_validate_and_inspect_report_bombs_without_a_traceback(tmp_path, bomb_png, capsys, pixel_limit):
    _png(tmp_path / "ok.png")
    bomb_png(tmp_path / "bomb.png", 20000, 20000)
    m = _manifest(tmp_path / "manifest.csv", [
        {"image": "ok.png", "label": 0, "patient_id": "a", "group": "a"},
        {"image": "bomb.png", "label": 1, "patient_id": "b", "group": "b"}])
    for extra in ([], ["--no-decode"]):
        code, out = _cli(["data", "validate", str(m), *extra], capsys)
        assert code == 1, out
        assert "line 3 (bomb.png): unreadable" in out and "pixel limit" in out
    code, out = _cli(["data", "inspect", str(m)], capsys)
    assert code == 0 and "1 image(s) unreadable" in out and "bomb.png" in out


def test_import_lists_the_bomb_and_writes_nothing(tmp_path, bomb_png, pixel_limit):
    from thyro.data.importers import import_folders

    _png(tmp_path / "src" / "benign" / "a.png")
    (tmp_path / "src" / "malignant").mkdir()
    bomb_png(tmp_path / "src" / "malignant" / "bomb.png", 13000, 13000)
    with pytest.raises(Problems, match=r"bomb\.png.*13000 x 13000"):
        import_folders(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_pixel_limit_is_configurable_and_named_in_the_message(tmp_path, capsys, pixel_limit, monkeypatch):
    img = _png(tmp_path / "ok.png", 30, 40)
    m = _manifest(tmp_path / "manifest.csv", [{"image": "ok.png", "label": 0, "patient_id": "a", "group": "a"}])
    code, out = _cli(["--max-pixels", "1000", "data", "validate", str(m)], capsys)
    assert code == 1 and "40 x 30 = 1,200 pixels, over the limit of 1,000 pixels" in out
    assert "thyro.settings.set_settings(max_pixels=N)" in out  # the Python way is named beside the flag
    # the command line reads THYRO_MAX_PIXELS (typer); the library reads only thyro.settings
    monkeypatch.setenv("THYRO_MAX_PIXELS", "1199")
    code, out = _cli(["data", "validate", str(m)], capsys)
    assert code == 1 and "limit of 1,199 pixels" in out
    monkeypatch.setenv("THYRO_MAX_PIXELS", "1200")
    assert _cli(["data", "validate", str(m)], capsys)[0] == 0
    monkeypatch.setenv("THYRO_MAX_PIXELS", "lots")
    code, out = _cli(["data", "validate", str(m)], capsys)
    assert code == 2 and "--max-pixels" in out  # the command line refuses it, naming the option
    pixel_limit.set_settings(max_pixels=pixel_limit.DEFAULT_MAX_PIXELS)
    monkeypatch.setenv("THYRO_MAX_PIXELS", "10")
    assert load_image(img).pixels.shape == (30, 40)  # no environment variable reaches the library
    with pixel_limit.settings_context(max_pixels=1199), pytest.raises(ImageReadError, match="limit of 1,199 pixels"):
        load_image(img)
    with pixel_limit.settings_context(max_pixels=1200):
        assert load_image(img).pixels.shape == (30, 40)


def test_dicom_pixel_limit_from_its_header(tmp_path, pixel_limit):
    path = write_dicom(tmp_path / "big.dcm", np.zeros((8, 8), np.uint8))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60000, 60000  # declares 3.6 gigapixels; the pixel data is not even there
    ds.save_as(path)
    for read in (load_image, probe_image):
        with pytest.raises(ImageReadError, match=r"big\.dcm: image is 60000 x 60000"):
            read(path)


# ------------------------------------------------------------------------------------------------
# ROI JSON: one parser with size and depth limits
# ------------------------------------------------------------------------------------------------

NESTED = "[" * 50_000 + "]" * 50_000


def test_nested_roi_in_a_manifest_is_a_row_problem(tmp_path, capsys):
    from thyro.data.manifest import read_manifest

    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", value=3)
    m = _manifest(tmp_path / "manifest.csv", [
        {"image": "a.png", "label": 0, "patient_id": "a", "group": "a", "roi": NESTED},
        {"image": "b.png", "label": 1, "patient_id": "b", "group": "b", "roi": '{"box": [NaN, 1, 5, 5]}'}])
    code, out = _cli(["data", "validate", str(m)], capsys)
    assert code == 1
    assert "line 2 (a.png): bad roi" in out and "nested more than 4 levels" in out
    assert "line 3 (b.png): bad roi" in out and "NaN" in out
    with pytest.raises(DataError, match=r"manifest\.csv: row 2: roi is nested"):
        read_manifest(m).rois()


def test_roi_limits_in_every_parser_entry(tmp_path):
    from thyro.data.manifest import MAX_ROI_CHARS, parse_roi
    from thyro.cli.use import parse_roi_arg

    with pytest.raises(DataError, match="--roi: roi is nested"):
        parse_roi_arg("{" + NESTED)
    deep = tmp_path / "roi.json"
    deep.write_text('{"box": ' + NESTED + "}")
    with pytest.raises(DataError, match=r"roi\.json: roi is nested"):
        parse_roi_arg(str(deep))
    with pytest.raises(DataError, match="over the limit"):
        parse_roi('{"polygons": [' + "[0, 0]," * MAX_ROI_CHARS + "]}", where="field")
    with pytest.raises(DataError, match="finite numbers"):
        parse_roi('{"box": [0, 0, 1e999, 5]}', where="field")
    assert parse_roi('{"polygons": [[[1, 2], [3, 4], [5, 1]]]}') == {"polygons": [[[1, 2], [3, 4], [5, 1]]]}


# ------------------------------------------------------------------------------------------------
# Paths: one spelling per image; surrounding spaces are an error; imports never overwrite silently
# ------------------------------------------------------------------------------------------------

def test_dot_slash_and_plain_name_are_one_image(tmp_path):
    from thyro.data.importers import import_csv
    from thyro.data.validate import validate_manifest

    _png(tmp_path / "img4.jpg")
    m = _manifest(tmp_path / "table.csv", [
        {"image": "./img4.jpg", "label": 0, "patient_id": "a", "group": "a"},
        {"image": "img4.jpg", "label": 0, "patient_id": "b", "group": "b"}])
    problems = [str(p) for p in validate_manifest(m)]
    assert any("line 3 (img4.jpg): same image id as line 2 ('./img4.jpg' and 'img4.jpg' are one file)" in p
               for p in problems), problems
    with pytest.raises(Problems, match="one file"):
        import_csv(m, tmp_path / "out")


def test_import_writes_one_spelling(tmp_path):
    from thyro.cli.console import set_quiet
    from thyro.data.importers import import_csv
    from thyro.data.validate import validate_manifest

    for name in ("a.png", "sub/b.png", "sub/c.png"):
        _png(tmp_path / "data" / name, value=len(name) * 7 + ord(name[-5]))
    m = _manifest(tmp_path / "data" / "table.csv", [
        {"image": "./a.png", "label": 0, "patient_id": "a", "group": "a"},
        {"image": "sub//b.png", "label": 1, "patient_id": "b", "group": "b"},
        {"image": "sub\\c.png", "label": 1, "patient_id": "c", "group": "c"}])
    assert validate_manifest(m) == []
    set_quiet(True)
    try:
        res = import_csv(m, tmp_path / "data")
    finally:
        set_quiet(False)
    assert sorted(res.manifest.df["image"]) == ["a.png", "sub/b.png", "sub/c.png"]
    assert validate_manifest(res.manifest_path) == []


def test_surrounding_spaces_are_a_validate_error(tmp_path):
    from thyro.data.importers import import_csv
    from thyro.data.validate import validate_manifest

    _png(tmp_path / "img.png")
    m = _manifest(tmp_path / "table.csv", [{"image": " img.png ", "label": 0, "patient_id": "a", "group": "a"}])
    problems = [str(p) for p in validate_manifest(m)]
    assert problems == ["line 2 (img.png): image path ' img.png ' has spaces at its start or end; remove them from "
                        "the manifest (or rename the file if its name really has them)"]
    with pytest.raises(Problems, match="spaces"):
        import_csv(m, tmp_path / "out")


def _fake_ddti(root: Path) -> Path:
    root.mkdir(parents=True)
    _png(root / "1_1.png")
    (root / "1.xml").write_text("<?xml version='1.0'?><case><number>1</number><tirads>4c</tirads>"
                                "<mark><image>1</image><svg></svg></mark></case>", encoding="utf-8")
    return root


@pytest.mark.parametrize("importer", ["folders", "csv", "ddti"])
def test_import_refuses_to_overwrite_a_manifest_without_force(tmp_path, importer, capsys):
    src = tmp_path / "src"
    if importer == "folders":
        _png(src / "benign" / "a.png")
        args = ["data", "import", "folders", str(src)]
    elif importer == "csv":
        _png(src / "a.png")
        _manifest(src / "table.csv", [{"image": "a.png", "label": 0, "patient_id": "a", "group": "a"}])
        args = ["data", "import", "csv", str(src / "table.csv")]
    else:
        _fake_ddti(src)
        args = ["data", "import", "ddti", str(src)]
    out = tmp_path / "out"
    out.mkdir()
    edited = "image,label,patient_id,group\na.png,1,patient-7,patient-7\n"  # a hand-edited manifest
    (out / "manifest.csv").write_text(edited)
    code, text = _cli(["-q", *args, "--out", str(out)], capsys)
    assert code == 2 and "manifest.csv already exists" in text and "--force" in text
    assert (out / "manifest.csv").read_text() == edited  # nothing lost
    code, text = _cli(["-q", *args, "--out", str(out), "--force"], capsys)
    assert code == 0, text
    assert (out / "manifest.csv").read_text() != edited


def test_decoding_and_preprocessing_a_large_image_stays_lean(tmp_path):
    """The largest image the default limit accepts takes about 9 bytes a pixel at its peak (it took 24:
    np.isin's int64 copy of the connected-component labels, and an RGB array before the grey one)."""
    import subprocess
    import sys

    import cv2

    import thyro
    from thyro.data.preprocess import find_sector

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure peak memory")
    h, w = 4000, 6000  # 24 megapixels: two sectors side by side, split by a black line, text on the right
    img = np.zeros((h, w, 3), np.uint8)
    img[200:3800, 300:2950] = 120
    img[200:3800, 3000:5600] = 140
    img[100:140, 5700:5950] = 255
    path = tmp_path / "large.jpg"
    cv2.imwrite(str(path), img)
    del img
    script = (
        "import sys\n"
        "from thyro.data.preprocess import Preprocessor\n"
        "def status(key):\n"
        "    return next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith(key)) / 1024\n"
        "pre = Preprocessor({'size': 224})\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS')\n"
        "out = pre.from_file(sys.argv[1])\n"
        "print(status('VmHWM') - before, out.shape)\n")
    src = str(Path(thyro.__file__).resolve().parents[1])  # a fresh process: this one's heap is fragmented
    res = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": src})
    assert res.returncode == 0, res.stderr[-2000:]
    used, shape = res.stdout.split(" ", 1)
    assert shape.strip() == "(224, 224)"
    assert float(used) < 12 * h * w / 2**20, f"{float(used):.0f} MiB for {h * w / 1e6:.0f} megapixels"
    # the lean region computation finds the same sector as before (both views merged, the text left out)
    gray = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
    x0, y0, x1, y1 = find_sector(gray)
    assert abs(x0 - 300) <= 25 and abs(x1 - 5600) <= 25 and abs(y0 - 200) <= 25 and abs(y1 - 3800) <= 25
