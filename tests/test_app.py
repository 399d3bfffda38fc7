"""The web app (`python -m depth2img app`), started as users start it, on the demo checkpoint, on a free port.

In a real browser (Debian's chromium driven by Playwright, headless) and through gradio's own HTTP API
(gradio_client). Short by design (64 px, 2 steps) so CI can run it: one server for the whole module.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# tools/test.sh sets DEPTH2IMG_REQUIRE_APP=1 in environment (a): there a missing gradio, Playwright or chromium
# fails the run instead of skipping the app's tests.
REQUIRED = os.environ.get("DEPTH2IMG_REQUIRE_APP") == "1"
if not REQUIRED:
    pytest.importorskip("gradio", reason="the app runs on current releases (environment a); gradio is missing")
import gradio_client  # noqa: E402

from depth2img.base.paths import DEMO_DIR, REPO_ROOT  # noqa: E402

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SCREENSHOTS = REPO_ROOT / "tests" / "webui" / "screenshots"  # git-ignored
START_TIMEOUT_S = 300
JOB_TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app in its own process: (url, out folder, working folder); its log is printed if it fails to start."""
    from depth2img.export.tiny import build_tiny_depth_checkpoint

    checkpoint = build_tiny_depth_checkpoint(DEMO_DIR)  # what the app uses without --checkpoint
    root = tmp_path_factory.mktemp("app")
    out, cwd = root / "out", root / "cwd"
    cwd.mkdir()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = open(root / "app.log", "w")  # noqa: SIM115 (open for the process's lifetime)
    command = [sys.executable, "-m", "depth2img", "app", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), "--out", str(out)]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{(root / 'app.log').read_text()}")
            try:
                with urllib.request.urlopen(url + "/gradio_api/info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not start in {START_TIMEOUT_S} s:\n{(root / 'app.log').read_text()}")
            time.sleep(1)
        yield url, out, cwd
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs: a 96x64 image and a truncated copy, 16-bit depth PNGs (a ramp, a flat one), a file that is no
    image, a NaN .npy, a 32x32 mask stroke."""
    import cv2
    from PIL import Image

    folder = tmp_path_factory.mktemp("inputs")
    scene = Image.open(REPO_ROOT / "examples" / "scene.png").convert("RGB").resize((96, 64))
    scene.save(folder / "scene.png")
    ramp = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
    cv2.imwrite(str(folder / "depth16.png"), ramp)
    (folder / "notes.png").write_text("this is not an image\n")
    nan = np.ones((64, 96), np.float32)
    nan[5, 5] = np.nan
    np.save(folder / "nan.npy", nan)
    (folder / "truncated.png").write_bytes((folder / "scene.png").read_bytes()[:400])
    cv2.imwrite(str(folder / "flat16.png"), np.full((64, 96), 30000, np.uint16))
    stroke = np.zeros((32, 32, 4), np.uint8)
    stroke[8:24, 8:24] = 255
    Image.fromarray(stroke, "RGBA").save(folder / "stroke32.png")
    return folder


def client(url):
    return gradio_client.Client(url, verbose=False)


# ---- the HTTP API (gradio_client) ---------------------------------------------------------------------


def test_gradio_client_generate_writes_unique_files_under_out(server, files):
    import cv2

    url, out, _ = server
    api = client(url)
    call = dict(prompt="a room", steps=2, width=64, height=64, seed=11, api_name="/generate")
    first = api.predict(gradio_client.handle_file(str(files / "scene.png")), **call)
    second = api.predict(gradio_client.handle_file(str(files / "scene.png")), **call)

    for gallery, depth_path, text, seed in (first, second):
        assert seed == 11 and "Seed: 11" in text and "Depth2Img enabled: True" in text
        assert "Size: 64x64" in text and "Depth2Img mode: img2img" in text
        assert len(gallery) == 1
        depth = cv2.imread(depth_path, cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (64, 64)
    # Same seed, same settings: same picture, in two files (never overwritten).
    saved = sorted(p.name for p in out.glob("*.png"))
    assert len(saved) >= 4 and len(set(saved)) == len(saved)
    a, b = (cv2.imread(g[0][0]["image"]) for g in (first, second))
    assert np.array_equal(a, b)
    assert Path(first[0][0]["image"]).name != Path(second[0][0]["image"]).name


def test_gradio_client_errors_are_messages_and_the_app_keeps_serving(server, files):
    from gradio_client.exceptions import AppError

    url, _, _ = server
    api = client(url)
    handle = gradio_client.handle_file
    scene, depth16 = handle(str(files / "scene.png")), handle(str(files / "depth16.png"))
    cases = [
        (dict(source="upload", depth_image=handle(str(files / "notes.png"))), "not a readable image"),
        (dict(source="upload", depth_image=handle(str(files / "nan.npy"))), "NaN"),
        (dict(init_image=scene, estimator="no-such-estimator"), "no-such-estimator"),
        (dict(init_image=scene, source="upload"), "no depth map uploaded"),
        (dict(source="upload", depth_image=depth16, depth_kind="inverse", distance_range="1, 10"), "distance maps"),
        (dict(init_image=handle(str(files / "truncated.png"))), "init image is not a readable image"),
        (dict(init_image=scene, depth_range="1, 0"), "depth_range"),
        (dict(source="upload", depth_image=depth16, mask_from_depth=True), "needs an init image"),
        (dict(), "nothing to start from"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(AppError, match=expected):
            api.predict(prompt="x", steps=2, width=64, height=64, api_name="/generate", **kwargs)
    # A painted mask of another size than the init image.
    mask = {"background": None, "layers": [handle(str(files / "stroke32.png"))], "composite": None}
    with pytest.raises(AppError, match="mask size 32x32 differs"):
        api.predict(init_image=scene, inpaint_mask=mask, prompt="x", steps=2, api_name="/generate")
    # Still serving: a txt2img job from the uploaded depth map succeeds.
    gallery, _, text, _ = api.predict(
        source="upload", depth_image=handle(str(files / "depth16.png")), prompt="x", steps=2, api_name="/generate"
    )
    assert len(gallery) == 1 and "Depth2Img mode: txt2img" in text


def test_gradio_client_preview_depth(server, files):
    from PIL import Image

    url, _, _ = server
    api = client(url)
    depth16 = gradio_client.handle_file(str(files / "depth16.png"))
    gray, colour, mask = api.predict(source="upload", depth_image=depth16, api_name="/preview_depth")
    gray, colour = np.asarray(Image.open(gray).convert("L")), np.asarray(Image.open(colour).convert("RGB"))
    assert gray.shape == (64, 96) and colour.shape == (64, 96, 3) and mask is None  # no band asked for
    assert gray[:, 0].mean() < 5 and gray[:, -1].mean() > 250  # the ramp, white = near, lossless
    # The mask from a depth band, at the init image's size: the nearer half of the ramp.
    *_, mask = api.predict(
        init_image=gradio_client.handle_file(str(files / "scene.png")), source="upload", depth_image=depth16,
        mask_from_depth=True, mask_low=50, api_name="/preview_depth",
    )  # fmt: skip
    mask = np.asarray(Image.open(mask).convert("L"))
    assert mask.shape == (64, 96) and mask[:, -1].min() == 255 and mask[:, 0].max() == 0


def test_gradio_client_mask_from_a_depth_band_and_a_fixed_range(server, files):
    url, out, _ = server
    scene = gradio_client.handle_file(str(files / "scene.png"))
    _, _, text, _ = client(url).predict(
        scene, prompt="x", steps=2, width=64, height=64, mask_from_depth=True, mask_low=40, depth_range="0, 50",
        api_name="/generate",
    )  # fmt: skip
    assert "Depth2Img mode: inpaint" in text and "Depth2Img mask: " in text
    assert any(out.glob("*-mask.png"))
    assert "Depth2Img depth_range: 0.0 50.0" in text


# ---- in a browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        message = "chromium is not installed (apt-get install -y chromium; CI's set-up installs it)"
        pytest.fail(message) if REQUIRED else pytest.skip(message)
    if REQUIRED:
        import playwright.sync_api as sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def open_page(browser, url, outside: list):
    """A fresh page (its own gradio session) that records any request leaving this machine."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    local = ("http://127.0.0.1", "data:", "blob:")
    page.on("request", lambda request: None if request.url.startswith(local) else outside.append(request.url))
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#depth2img_generate", timeout=60_000)
    return page


def upload_init_image(page, path) -> None:
    page.locator("#depth2img_init_image input[type=file]").set_input_files(str(path))
    page.locator("#depth2img_init_image img").first.wait_for(timeout=JOB_TIMEOUT_MS)


def set_number(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def small_job(page, steps: int = 2, size: int = 64) -> None:
    set_number(page, "depth2img_steps", steps)
    set_number(page, "depth2img_width", size)
    set_number(page, "depth2img_height", size)
    page.locator("#depth2img_prompt textarea").fill("a room")


def error_text(page) -> str:
    toast = page.locator(".toast-body").first
    toast.wait_for(state="visible", timeout=JOB_TIMEOUT_MS)
    return toast.inner_text()


def test_browser_preview_generate_and_download_16_bit_depth(server, browser, files, tmp_path):
    import cv2

    url, out, cwd = server
    outside: list[str] = []
    page = open_page(browser, url, outside)
    assert "results are noise" in page.locator("#depth2img_demo_banner").inner_text().replace("pictures", "results")
    upload_init_image(page, files / "scene.png")
    page.click("#depth2img_preview")
    for view in ("gray", "color"):
        page.locator(f"#depth2img_preview_{view} img").first.wait_for(timeout=JOB_TIMEOUT_MS)
    small_job(page)
    set_number(page, "depth2img_seed", 1234)
    page.click("#depth2img_generate")
    page.locator("#depth2img_gallery img").first.wait_for(timeout=JOB_TIMEOUT_MS)

    settings = page.locator("#depth2img_settings textarea").input_value()
    assert "Seed: 1234" in settings and "Depth2Img enabled: True" in settings and "Size: 64x64" in settings
    assert page.locator("#depth2img_used_seed input").input_value() == "1234"
    with page.expect_download() as download:
        page.locator("#depth2img_depth a[download]").first.click()
    saved = tmp_path / "depth.png"
    download.value.save_as(saved)
    depth = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (64, 64) and depth.max() == 65535

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "app-generated.png"), full_page=True)
    page.close()
    assert outside == [], "the page fetched something from outside this machine"
    assert list(cwd.iterdir()) == [], "the app wrote outside --out"
    assert any(out.glob("*-1234-*-0.png")) and any(out.glob("*-1234-*-depth.png"))


def test_browser_bad_depth_file_is_a_message_then_txt2img_works(server, browser, files):
    url, _, _ = server
    page = open_page(browser, url, [])
    page.locator("#depth2img_source label:has-text('Upload')").click()
    upload = page.locator("#depth2img_depth_file input[type=file]")
    upload.set_input_files(str(files / "notes.png"))
    assert "not a readable image" in error_text(page)

    page.locator("#depth2img_depth_file button[aria-label='Clear']").first.click()
    upload.set_input_files(str(files / "depth16.png"))
    page.locator("#depth2img_depth_thumbnail img").first.wait_for(timeout=JOB_TIMEOUT_MS)
    small_job(page)
    page.click("#depth2img_generate")
    page.locator("#depth2img_gallery img").first.wait_for(timeout=JOB_TIMEOUT_MS)
    assert "Depth2Img mode: txt2img" in page.locator("#depth2img_settings textarea").input_value()

    # A flat map is usable (it conditions on a constant) but likely a mistake: a warning, and the picture.
    page.locator("#depth2img_depth_file button[aria-label='Clear']").first.click()
    upload.set_input_files(str(files / "flat16.png"))
    page.locator("#depth2img_depth_thumbnail img").first.wait_for(timeout=JOB_TIMEOUT_MS)
    seed_before = page.locator("#depth2img_used_seed input").input_value()
    page.click("#depth2img_generate")
    page.locator(".toast-body", has_text="flat").wait_for(timeout=JOB_TIMEOUT_MS)
    page.wait_for_function(
        f"document.querySelector('#depth2img_used_seed input').value !== '{seed_before}'", timeout=JOB_TIMEOUT_MS
    )
    page.close()


def test_browser_two_pages_generating_at_once_both_get_images(server, browser, files):
    url, _, _ = server
    pages = [open_page(browser, url, []) for _ in range(2)]
    for index, page in enumerate(pages):
        upload_init_image(page, files / "scene.png")
        small_job(page, steps=4)
        set_number(page, "depth2img_seed", 100 + index)
    for page in pages:
        page.click("#depth2img_generate")
    for index, page in enumerate(pages):
        page.locator("#depth2img_gallery img").first.wait_for(timeout=JOB_TIMEOUT_MS)
        assert f"Seed: {100 + index}" in page.locator("#depth2img_settings textarea").input_value()
        page.close()


def test_browser_stop_ends_the_job_between_steps(server, browser, files):
    url, _, _ = server
    page = open_page(browser, url, [])
    upload_init_image(page, files / "scene.png")
    small_job(page, steps=150, size=256)  # long enough (~30 s here) to press Stop in the middle
    set_number(page, "depth2img_strength", 1)
    page.click("#depth2img_generate")
    page.locator("#depth2img_gallery").get_by_text("Denoising").wait_for(timeout=JOB_TIMEOUT_MS)
    page.click("#depth2img_stop")
    message = page.locator(".toast-body", has_text="Stopped after step")
    try:
        message.wait_for(timeout=JOB_TIMEOUT_MS)
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "app-stopped.png"), full_page=True)
    done, total = (int(n) for n in message.inner_text().split("after step ")[1].split(";")[0].split(" of "))
    assert total == 151 and done < total  # PLMS takes one extra step
    assert page.locator("#depth2img_gallery img").count() == 0
    # The pipeline is free again: a short job goes through at once.
    small_job(page, steps=2)
    page.click("#depth2img_generate")
    page.locator("#depth2img_gallery img").first.wait_for(timeout=JOB_TIMEOUT_MS)
    page.close()


def test_browser_painted_mask_inpaints(server, browser, files):
    url, _, _ = server
    page = open_page(browser, url, [])
    upload_init_image(page, files / "scene.png")
    page.get_by_text("Inpaint: paint the area to repaint").click()
    editor = page.locator("#depth2img_mask")
    editor.locator("button[aria-label='Brush']").click()
    canvas = editor.locator("canvas").last
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    small_job(page)
    page.click("#depth2img_generate")
    page.locator("#depth2img_gallery img").first.wait_for(timeout=JOB_TIMEOUT_MS)
    assert "Depth2Img mode: inpaint" in page.locator("#depth2img_settings textarea").input_value()
    page.close()
