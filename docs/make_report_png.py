"""Regenerate docs/report.png: the first screen of a study report, in headless Chromium at 1280 px.

Usage::

    python docs/make_report_png.py                      # a small demo study (about 10 minutes on 2 CPU cores)
    python docs/make_report_png.py --run thyro-demo/run  # the report of a study you already ran

Without ``--run`` it runs ``thyro demo`` shrunk (60 phantom patients, 300 external patients, 64 px,
4 epochs, smaller pretraining corpora) into ``--work``; a rerun continues where it stopped.  The report
is rebuilt, opened in Chromium (``$THYRO_CHROMIUM``, default /usr/bin/chromium) through Playwright, and
the top 1280 x 900 pixels are saved.  It also checks that the page is no wider than the window.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("THYRO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTH, HEIGHT = 1280, 900


def small_demo(work: Path) -> Path:
    """A shrunk ``thyro demo`` (the full one takes about 8 minutes more); returns its run directory."""
    from thyro.train.demo import run_demo

    run_demo(work, patients=60, external_patients=300, size=64, epochs=4, pretrain_epochs=3, corpus_scale=0.4,
             device="cpu")
    return work / "run"


def screenshot(html: Path, out: Path) -> int:
    """Save the first screen of ``html`` to ``out``; returns the page's scroll width."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        width = page.evaluate("document.documentElement.scrollWidth")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=False)
        browser.close()
    return int(width)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory of a finished study (default: run a small demo)")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "report-demo", help="where the small demo runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args(argv)
    from thyro.report import build_report

    run = args.run or small_demo(args.work)
    html, _ = build_report(run)
    width = screenshot(html, args.out)
    print(f"{args.out}: first screen of {html} (page width {width} px at a {WIDTH} px window)")
    return 0 if width <= WIDTH else 1


if __name__ == "__main__":
    sys.exit(main())
