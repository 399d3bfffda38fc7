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


def test_batch_tab_matches_depth_maps_by_file_name(page, tmp_path):
    """Two identical inputs with different depth maps of the same names give different outputs."""
    import time

    import cv2
    from PIL import Image

    inputs, depths, outputs = tmp_path / "in", tmp_path / "depth", tmp_path / "out"
    for folder in (inputs, depths, outputs):
        folder.mkdir()
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    for name, depth in (("a", ramp), ("b", ramp.T.copy())):
        picture.save(inputs / f"{name}.png")
        cv2.imwrite(str(depths / f"{name}.png"), depth)

    page.click("#tabs > .tab-nav button:has-text('img2img')")
    page.click("#mode_img2img .tab-nav button:has-text('Batch')")
    page.click("#img2img_batch_from_dir_tab-button, button:has-text('From directory')")
    page.fill("#img2img_batch_input_dir textarea", str(inputs))
    page.fill("#img2img_batch_output_dir textarea", str(outputs))
    for field, value in (("#img2img_steps", "3"), ("#img2img_width", "64"), ("#img2img_height", "64")):
        page.fill(f"{field} input[type=number]", value)
        page.press(f"{field} input[type=number]", "Enter")
    page.fill("#img2img_seed input[type=number]", "5")
    accordion = page.locator("#depth2img_img2img")
    if not page.locator("#depth2img_img2img-checkbox input").is_checked():
        accordion.locator(".label-wrap").first.click()
    page.locator("#depth2img_img2img_source label:has-text('estimate')").click()
    page.fill("#depth2img_img2img_depth_dir textarea", str(depths))
    page.click("#img2img_generate")
    deadline = time.time() + 300
    while time.time() < deadline and len(list(outputs.glob("*.png"))) < 2:
        time.sleep(1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "img2img-batch.png"), full_page=True)
    produced = sorted(outputs.glob("*.png"))
    assert [p.stem.split("-")[-1] for p in produced] == ["a", "b"], produced
    a, b = (np.asarray(Image.open(p).convert("RGB")).astype(int) for p in produced)
    assert a.shape == (64, 64, 3) and np.abs(a - b).max() > 0
