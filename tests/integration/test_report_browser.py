"""The HTML report in real headless Chromium: the page loads and every figure decodes."""

from __future__ import annotations

import pytest

from live import chromium_path
from trainlab.analysis.collect import collect_study
from trainlab.analysis.report import write_report
from trainlab.experiments import open_store, sweep

pytestmark = pytest.mark.integration


def test_the_html_report_shows_every_figure_in_chromium(tmp_path, study_base):
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    sweep("browser", {**study_base, "epochs": 3}, grid={"optim.lr": [3e-3, 1e-3]}, repeats=2,
          storage=url, runs_dir=tmp_path / "runs", echo=lambda line: None)  # fmt: skip
    files = write_report(collect_study(open_store(url), "browser"), tmp_path / "out", fmt="html")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(files.main.as_uri(), wait_until="load", timeout=30_000)
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete, "
                "w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width}))"
            )
            headings = page.locator("h2").all_inner_texts()
            cells = page.locator("table").first.locator("tbody tr").count()
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) == len(files.figures) >= 5
    for image in images:  # decoded by the browser, with real pixels, and laid out on the page
        assert image["ok"] and image["w"] > 100 and image["h"] > 100 and image["shown"] > 100, image
    assert "Results" in headings and "Learning curves" in headings
    assert cells == 2 and not errors
