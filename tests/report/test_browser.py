"""The HTML report renders in headless Chromium without JavaScript errors or broken images, and fits a
1280 px window (``docs/make_report_png.py`` regenerates docs/report.png the same way).

Set ``THYRO_SCREENSHOT=PATH`` to save a screenshot of the top of the report.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("THYRO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"chromium not found at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


WIDTH = 1280


def _scroll_width(browser, html) -> int:
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto(Path(html).resolve().as_uri())
    page.wait_for_load_state("load")
    width = page.evaluate("document.documentElement.scrollWidth")
    page.close()
    return int(width)


def test_report_renders_cleanly(browser, built_report):
    html, _ = built_report
    page = browser.new_page(viewport={"width": WIDTH, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    failed: list[str] = []
    page.on("requestfailed", lambda req: failed.append(req.url[:80]))
    page.goto(Path(html).resolve().as_uri())
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => ({alt: e.alt, ok: e.complete && e.naturalWidth > 0}))"
    )
    assert len(images) >= 6, images
    broken = [i["alt"] for i in images if not i["ok"]]
    assert not broken, f"images that did not load: {broken}"
    assert not errors, f"JavaScript errors: {errors}"
    assert not failed, f"failed requests (the report must be self-contained): {failed}"
    assert page.locator("#headline-test tr").count() == 4  # header + 3 arms
    assert "Label 1 = malignant" in page.locator("#labels").inner_text()
    assert "has the highest AUROC" in page.locator("#answer").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    shot = os.environ.get("THYRO_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot, full_page=False)
    page.close()


def test_broken_image_is_detected(browser, tmp_path):
    """The check itself works: a page with an undecodable image fails it."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img alt="x" src="data:image/png;base64,AAAA"></body></html>')
    page = browser.new_page()
    page.goto(bad.as_uri())
    page.wait_for_load_state("load")
    ok = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert ok == [False]
    page.close()


def test_page_fits_1280_px_with_a_very_long_skip_message(browser, tmp_path):
    """A skipped arm's long message (every place a weight file was looked for) stays on one short line,
    the whole text folded, and nothing widens the page."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from fakerun import make_run

    from thyro.report import build_report
    from thyro.run import ArmResult, RunDir

    run = make_run(tmp_path / "run", n_cv=60, n_test=40, logs=False)
    rd = RunDir(run)
    res = rd.read_results()
    looked = "\n".join(f"  - /home/user/.cache/torch/hub/checkpoints/{'x' * 150}/resnet18-{k}.pth" for k in range(40))
    res.arms["radimagenet-with-a-rather-long-arm-name"] = ArmResult(
        status="skipped", weights="radimagenet:" + "/very/long/path" * 40,
        reason="RadImageNet weights not found: " + "y" * 400 + ". Looked in:\n" + looked)
    rd.write_results(res)
    html, _ = build_report(run, n_boot=100)
    assert _scroll_width(browser, html) <= WIDTH
    text = json.loads(html.with_suffix(".json").read_text())["skipped"][0]["short"]
    assert len(text) <= 90 and text.endswith("…")
