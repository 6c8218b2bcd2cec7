"""The web app: JSON API with FastAPI's TestClient, then the page end to end in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from thyro.use.serve import create_app

from .conftest import SIZE, LiveServer

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


def _png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _decode(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_health(client, package):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["n_models"] == 2 and h["image_size"] == SIZE
    assert h["threshold"] == pytest.approx(package.operating_point()[1])
    # what the model predicts, for the page's labels line (the package's labels are TI-RADS-derived)
    assert h["labels"]["summary"] == "label 1 = TI-RADS ≥ 4c; labels: radiologists' TI-RADS categories, not pathology"


def test_page_and_static_files_are_served_without_external_resources(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="canvas"' in page.text and "/static/app.js" in page.text
    js = client.get("/static/app.js")
    assert 'id="labels"' in page.text and '$("labels").textContent' in js.text  # the page says what label 1 means
    assert js.status_code == 200 and "/predict" in js.text
    assert 'form.append("preprocessed", "true")' in js.text  # the page shows the model's input: it asks for it
    for text in (page.text, js.text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text  # no CDN: works offline


def test_predict_png_matches_the_cli_prediction(client, model_dir, images):
    from thyro.use.predict import predict

    r = client.post("/predict", files={"file": ("us0.png", _png_bytes(images["png0"]), "image/png")},
                    data={"preprocessed": "true"})
    assert r.status_code == 200, r.text
    j = r.json()
    ref = predict(model_dir, [images["png0"]], progress=False).rows[0]
    assert j["probability"] == pytest.approx(ref.probability, abs=1e-6)
    # the run behind the package has TI-RADS-derived labels: the class is named for what was learnt
    assert j["class"] == ref.cls and j["prediction"] == ref.prediction
    assert j["prediction"] in ("TI-RADS ≥ 4c", "not TI-RADS ≥ 4c")
    assert _decode(j["heatmap_png"]).size == (SIZE, SIZE)
    assert _decode(j["preprocessed_png"]).size == (SIZE, SIZE)


def test_predict_with_roi_and_dicom(client, model_dir, images):
    from thyro.use.predict import predict

    roi = {"box": [20, 15, 70, 60]}
    r = client.post("/predict", files={"file": ("us1.png", _png_bytes(images["png1"]), "image/png")},
                    data={"roi": json.dumps(roi), "heatmap": "false"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert json.loads(j["roi"]) == roi and j["heatmap_png"] is None
    assert j["preprocessed_png"] is None  # a large image, sent only when asked for
    ref = predict(model_dir, [images["png1"]], roi=roi, progress=False).rows[0]
    assert j["probability"] == pytest.approx(ref.probability, abs=1e-6)
    r = client.post("/predict", files={"file": ("scan", images["dcm"].read_bytes(), "application/dicom")})
    assert r.status_code == 200, r.text
    prev = client.post("/preview", files={"file": ("scan", images["dcm"].read_bytes(), "application/dicom")}).json()
    assert (prev["width"], prev["height"]) == (104, 88)


@pytest.fixture(scope="module")
def whole_image_model(model_dir, tmp_path_factory):
    """The test package, changed to a model trained on whole images (no ROI crop)."""
    dst = tmp_path_factory.mktemp("whole") / "model"
    shutil.copytree(model_dir, dst)
    meta = json.loads((dst / "model.json").read_text(encoding="utf-8"))
    meta["preprocess"]["roi_crop"] = False
    (dst / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    return dst


def test_box_is_used_by_an_roi_model_and_shown_on_the_original(client, images):
    roi = {"box": [30, 25, 80, 70]}
    r = client.post("/predict", files={"file": ("us2.png", _png_bytes(images["png2"]), "image/png")},
                    data={"roi": json.dumps(roi)})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["roi_used"] is True and j["note"] is None
    x0, y0, x1, y1 = j["crop_box"]  # the box grown by the model's ROI margin (10%), inside the image
    assert 24 <= x0 <= 30 and 20 <= y0 <= 25 and 80 <= x1 <= 86 and 70 <= y1 <= 75
    with Image.open(images["png2"]) as im:
        w, h = im.size
    assert j["image_size"] == [w, h]
    original = _decode(j["heatmap_original_png"])  # full resolution, with the colour bar beside it
    assert original.size[1] >= h and original.size[0] > w
    assert _decode(j["heatmap_png"]).size == (SIZE, SIZE)


def test_whole_image_model_says_the_box_is_not_used(whole_image_model, images):
    with TestClient(create_app(whole_image_model)) as c:
        plain = c.post("/predict", files={"file": ("us2.png", _png_bytes(images["png2"]), "image/png")},
                       data={"heatmap": "false"}).json()
        boxed = c.post("/predict", files={"file": ("us2.png", _png_bytes(images["png2"]), "image/png")},
                       data={"roi": json.dumps({"box": [30, 25, 80, 70]}), "heatmap": "false"}).json()
    assert plain["roi_used"] is False and plain["note"] is None
    assert boxed["roi_used"] is False and "not used" in boxed["note"]
    assert boxed["probability"] == pytest.approx(plain["probability"], abs=1e-9)  # the box changes nothing
    assert boxed["crop_box"] == plain["crop_box"] and boxed["heatmap_original_png"] is None


def test_bad_uploads_get_4xx_and_the_app_stays_up(client, images):
    cases = [
        ({"file": ("notes.png", b"not an image at all", "image/png")}, {}, 400),
        ({"file": ("nopix.dcm", images["dicom_no_pixels"].read_bytes(), "application/dicom")}, {}, 400),
        ({"file": ("tiny.png", images["tiny"].read_bytes(), "image/png")}, {}, 400),
        ({"file": ("empty.png", b"", "image/png")}, {}, 400),
        ({"file": ("us0.png", images["png0"].read_bytes(), "image/png")}, {"roi": "{not json"}, 400),
        ({"file": ("us0.png", images["png0"].read_bytes(), "image/png")}, {"roi": '{"box": [5, 5, 1, 1]}'}, 400),
        ({"file": ("big.png", b"\0" * 400_000, "image/png")}, {}, 413),
        ({}, {}, 422),
    ]
    for files, data, status in cases:
        r = client.post("/predict", files=files, data=data)
        assert r.status_code == status, (files.get("file", ("-",))[0], r.status_code, r.text)
        assert r.json()["detail"]
        assert client.get("/health").status_code == 200
    r = client.post("/predict", files={"file": ("notes.png", b"not an image at all", "image/png")})
    detail = r.json()["detail"]
    assert detail.startswith("notes.png:") and "thyro-serve-" not in detail  # no temporary paths leak


def test_uploads_leave_no_files_behind(client, app_tmp, model_dir, images):
    before = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*"))
    for _ in range(3):
        client.post("/predict", files={"file": ("us0.png", images["png0"].read_bytes(), "image/png")})
        client.post("/predict", files={"file": ("bad.png", b"garbage", "image/png")})
    assert list(app_tmp.rglob("*")) == []  # uploads are read from memory: no file, no folder
    assert sorted(p.relative_to(model_dir) for p in model_dir.rglob("*")) == before


# ------------------------------------------------------------------------------------------------
# End to end in headless Chromium
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live_server(model_dir):
    with LiveServer(create_app(model_dir)) as live:
        yield live.url


def _demo_image(tmp_path: Path, images) -> Path:
    """A real ultrasound image when the shared data is present, else a synthetic one."""
    shared = Path(os.environ.get("THYRO_SHARED_DATA", REPO.parent / "shared" / "data")) / "udtn-sample"
    found = sorted(shared.rglob("*.jpg")) if shared.is_dir() else []
    return found[0] if found else images["png0"]


def test_browser_upload_box_and_result(live_server, images, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(live_server + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('fold model')")
            page.set_input_files("#file", str(_demo_image(tmp_path, images)))
            page.wait_for_function("!document.getElementById('predict').disabled", timeout=20000)
            # draw a box on the canvas
            box = page.locator("#canvas").bounding_box()
            x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + box["width"] * 0.35, y0 + box["height"] * 0.35, steps=5)
            page.mouse.up()
            assert "box (image pixels)" in page.locator("#box").text_content()
            page.click("#predict")
            page.wait_for_selector("#result:not([hidden])", timeout=30000)
            prob = page.locator("#probability").text_content()
            assert prob.endswith("%") and 0 <= float(prob.split()[0]) <= 100
            assert page.locator("#class").text_content() in ("TI-RADS ≥ 4c", "not TI-RADS ≥ 4c")
            assert page.locator("#probability-name").text_content() == "TI-RADS ≥ 4c probability"
            assert page.evaluate("document.getElementById('heatmap').naturalWidth") == SIZE
            assert page.evaluate("document.getElementById('heatmap_original').naturalWidth") > SIZE
            assert page.evaluate("document.getElementById('preprocessed').naturalWidth") == SIZE  # asked for
            assert "with box" in page.locator("#status").text_content()
            assert page.locator("#note").is_hidden()
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            # a bad file: a message, and the page keeps working
            bad = tmp_path / "bad.png"
            bad.write_bytes(b"not an image")
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#error:not([hidden])", timeout=20000)
            assert "not a readable image" in page.locator("#error").text_content()
            # drag and drop works too, and the page recovers from the error
            data = base64.b64encode(images["png3"].read_bytes()).decode()
            transfer = page.evaluate_handle(
                """(b64) => { const bin = atob(b64); const arr = new Uint8Array(bin.length);
                for (let i = 0; i < bin.length; i++) arr[i] = bin.charCodeAt(i);
                const dt = new DataTransfer(); dt.items.add(new File([arr], 'dropped.png', {type: 'image/png'}));
                return dt; }""", data)
            page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
            page.wait_for_function("!document.getElementById('predict').disabled", timeout=20000)
            assert page.locator("#error").is_hidden() and "dropped.png" in page.locator("#status").text_content()
            page.click("#predict")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Done: dropped.png')",
                                   timeout=30000)
        finally:
            browser.close()
    assert not [e for e in errors if "400" not in e], errors  # only the deliberate bad upload's 400
    assert shot.stat().st_size > 10_000
    target = os.environ.get("THYRO_SCREENSHOT_DIR")  # set to docs/ to refresh the README screenshot
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(target) / "serve.png")


def test_browser_whole_image_model_says_the_box_is_not_used(whole_image_model, images, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with LiveServer(create_app(whole_image_model)) as live:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 760})
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(live.url + "/")
                page.set_input_files("#file", str(images["png1"]))
                page.wait_for_function("!document.getElementById('predict').disabled", timeout=20000)
                box = page.locator("#canvas").bounding_box()
                page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=5)
                page.mouse.up()
                page.click("#predict")
                page.wait_for_selector("#result:not([hidden])", timeout=30000)
                assert page.locator("#note").is_visible()
                assert "not used" in page.locator("#note").text_content()
                status = page.locator("#status").text_content()
                assert "(box not used)" in status and "with box" not in status
            finally:
                browser.close()
    assert not errors, errors
