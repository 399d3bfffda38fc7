"""The extension's UI in a real browser (Debian's chromium, driven by Playwright, headless, loopback only)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from depth2img.paths import REPO_ROOT

from .conftest import WEBUI_URL

SCREENSHOTS = REPO_ROOT / "tests" / "webui" / "screenshots"  # git-ignored
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def page(webui):
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("the browser test needs Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(WEBUI_URL, wait_until="domcontentloaded")
        page.wait_for_selector("#tabs", timeout=120_000)
        yield page
        browser.close()


def test_accordion_upload_and_preview_in_img2img(page, tmp_path):
    import cv2

    depth = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
    depth_file = tmp_path / "depth16.png"
    cv2.imwrite(str(depth_file), depth)

    page.click("#tabs > .tab-nav button:has-text('img2img')")
    accordion = page.locator("#depth2img_img2img")
    accordion.wait_for(state="visible")
    assert "Depth2Img" in accordion.inner_text()
    accordion.locator(".label-wrap").first.click()  # open the panel
    page.locator("#depth2img_img2img_source label:has-text('upload')").click()
    page.locator("#depth2img_img2img_depth_file input[type=file]").set_input_files(str(depth_file))
    page.wait_for_timeout(1000)
    page.click("#depth2img_img2img_preview")
    gray = page.locator("#depth2img_img2img_preview_gray img")
    gray.wait_for(state="visible", timeout=60_000)
    page.locator("#depth2img_img2img_preview_color img").wait_for(state="visible", timeout=60_000)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    accordion.scroll_into_view_if_needed()
    accordion.screenshot(path=str(SCREENSHOTS / "img2img-depth2img-preview.png"))
    page.screenshot(path=str(SCREENSHOTS / "img2img-page.png"), full_page=True)
    src = gray.get_attribute("src")
    assert src and (src.startswith("data:image") or "/file=" in src)
