"""The extension's UI in a real browser (Debian's chromium, driven by Playwright, headless, loopback only)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from depth2img.base.paths import REPO_ROOT

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


def preview_shown(page, webui) -> np.ndarray:
    """Click Preview depth and return the gray map it shows (8-bit, at the estimator's size)."""
    import base64

    from .conftest import decode

    gray = page.locator("#depth2img_img2img_preview_gray img")
    old_src = gray.get_attribute("src") if gray.count() else None
    page.click("#depth2img_img2img_preview")
    page.wait_for_function(
        "old => { const img = document.querySelector('#depth2img_img2img_preview_gray img');"
        " return img && img.src && img.src !== old; }", arg=old_src, timeout=120_000)
    src = gray.get_attribute("src")
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = webui.http.get(src if src.startswith("http") else WEBUI_URL + src, timeout=60).content
    shown = decode(base64.b64encode(data).decode()).astype(float)
    return shown if shown.ndim == 2 else shown[..., 0]


def estimate_like(webui, picture, shown: np.ndarray) -> np.ndarray:
    """The estimate route's map of `picture` (16-bit) at the size of a preview `shown`."""
    import cv2

    from .conftest import decode, rgb_b64

    body = webui.ok("/depth2img/v1/estimate", {"image": rgb_b64(picture)})
    return cv2.resize(decode(body["depth"]).astype(float), shown.shape[::-1], interpolation=cv2.INTER_AREA)


def correlation(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_preview_reads_the_init_image_of_the_sub_tab_in_use(page, webui, tmp_path):
    """A picture in img2img and another in inpaint upload: Preview depth in inpaint upload shows the second's."""
    from PIL import Image

    rng = np.random.default_rng(8)
    pictures = {}
    for name, elem_id, tab in (("first", "img2img_image", "img2img"), ("second", "img_inpaint_base", "Inpaint upload")):
        pictures[name] = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        path = tmp_path / f"{name}.png"
        pictures[name].save(path)
        page.click("#tabs > .tab-nav button:has-text('img2img')")
        page.click(f"#mode_img2img > .tab-nav button:text-is('{tab}')")
        page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
        page.wait_for_timeout(1000)
    open_depth_panel(page)
    page.locator("#depth2img_img2img_source label:has-text('estimate')").click()

    # The preview (8-bit, at the estimator's size) against each picture's estimate (16-bit, resized): another
    # route to the same map, so compared by correlation, and it must be the second picture's.
    shown = preview_shown(page, webui)  # in Inpaint upload, the tab the loop ended in
    own = correlation(shown, estimate_like(webui, pictures["second"], shown))
    other = correlation(shown, estimate_like(webui, pictures["first"], shown))
    assert own > 0.95 and own > other, (own, other)
    # Back in img2img (on Forge a canvas, whose picture is a hidden component): the first picture's.
    page.click("#mode_img2img > .tab-nav button:text-is('img2img')")
    shown = preview_shown(page, webui)
    own = correlation(shown, estimate_like(webui, pictures["first"], shown))
    other = correlation(shown, estimate_like(webui, pictures["second"], shown))
    assert own > 0.95 and own > other, (own, other)


def test_forge_sketch_preview_sees_the_strokes_over_the_picture(page, webui, tmp_path):
    """Forge's Sketch canvas keeps the strokes on a layer of their own (its job lays them over the picture): the
    preview estimates from the picture with the strokes, not from the bare picture."""
    import base64
    import io

    from PIL import Image

    if not webui.is_forge:
        pytest.skip("Forge only: AUTOMATIC1111's sketch editor gives the picture with its strokes in it")
    picture = Image.fromarray(np.random.default_rng(9).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    picture.save(tmp_path / "sketch.png")
    page.click("#tabs > .tab-nav button:has-text('img2img')")
    page.click("#mode_img2img > .tab-nav button:text-is('Sketch')")
    page.locator("#img2img_sketch input[type=file]").set_input_files(str(tmp_path / "sketch.png"))
    page.wait_for_timeout(1000)
    drawing = page.locator("#img2img_img2img_sketch_tab canvas.forge-drawing-canvas").bounding_box()
    for row in range(1, 8):  # scribble over most of the picture
        y = drawing["y"] + drawing["height"] * row / 8
        page.mouse.move(drawing["x"] + 5, y)
        page.mouse.down()
        page.mouse.move(drawing["x"] + drawing["width"] - 5, y, steps=12)
        page.mouse.up()
    page.wait_for_timeout(1000)
    strokes_url = page.locator("#img2img_img2img_sketch_tab .logical_image_foreground textarea").input_value()
    assert strokes_url.startswith("data:image/png;base64,"), strokes_url[:80]
    strokes = Image.open(io.BytesIO(base64.b64decode(strokes_url.split(",", 1)[1]))).convert("RGBA")
    drawn = Image.alpha_composite(picture.convert("RGBA"), strokes.resize(picture.size)).convert("RGB")
    open_depth_panel(page)
    page.locator("#depth2img_img2img_source label:has-text('estimate')").click()
    shown = preview_shown(page, webui)
    own = correlation(shown, estimate_like(webui, drawn, shown))
    bare = correlation(shown, estimate_like(webui, picture, shown))
    assert own > 0.95 and own > bare, (own, bare)


def test_preview_shows_the_depth_band_mask_over_the_image(page, webui, tmp_path):
    """img2img: a picture, a ramp uploaded as its depth, the band 50-100: Preview depth shows the picture with its
    near (right) half tinted red and the far half as it is."""
    import base64

    import cv2
    from PIL import Image

    from .conftest import decode

    picture = Image.fromarray(np.random.default_rng(9).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    picture.save(tmp_path / "picture.png")
    cv2.imwrite(str(tmp_path / "ramp.png"), np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16))
    page.click("#tabs > .tab-nav button:has-text('img2img')")
    page.click("#mode_img2img > .tab-nav button:text-is('img2img')")
    page.locator("#img2img_image input[type=file]").set_input_files(str(tmp_path / "picture.png"))
    page.wait_for_timeout(1000)
    open_depth_panel(page)
    page.locator("#depth2img_img2img_source label:has-text('upload')").click()
    clear = page.locator("#depth2img_img2img_depth_file button[aria-label='Clear']")  # an earlier test's upload
    if clear.count():
        clear.first.click()
    page.locator("#depth2img_img2img_depth_file input[type=file]").set_input_files(str(tmp_path / "ramp.png"))
    page.wait_for_timeout(1000)
    page.locator("#depth2img_img2img_mask_panel .label-wrap").first.click()  # open the band's accordion
    page.locator("#depth2img_img2img_mask_from_depth input").check()
    page.fill("#depth2img_img2img_mask_low input[type=number]", "50")
    page.press("#depth2img_img2img_mask_low input[type=number]", "Enter")
    page.wait_for_timeout(500)
    page.click("#depth2img_img2img_preview")
    shown = page.locator("#depth2img_img2img_preview_mask img")
    shown.wait_for(state="visible", timeout=120_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#depth2img_img2img").screenshot(path=str(SCREENSHOTS / "img2img-depth-band-preview.png"))
    src = shown.get_attribute("src")
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = webui.http.get(src if src.startswith("http") else WEBUI_URL + src, timeout=60).content
    view = decode(base64.b64encode(data).decode())[..., ::-1].astype(int)  # BGR -> RGB
    original = np.asarray(picture).astype(int)
    assert view.shape == original.shape
    assert np.abs(view[:, :40] - original[:, :40]).max() <= 1  # kept: as it is
    assert np.abs(view[:, 56:] - (original[:, 56:] + [255, 0, 0]) / 2).max() <= 1  # repainted: tinted red
    page.locator("#depth2img_img2img_mask_from_depth input").uncheck()  # leave the panel as the others expect it
    page.locator("#depth2img_img2img_source label:has-text('estimate')").click()


def open_depth_panel(page):
    """Opens (and so enables) the img2img tab's Depth2Img accordion unless it already is."""
    if not page.locator("#depth2img_img2img-checkbox input").is_checked():
        page.locator("#depth2img_img2img .label-wrap").first.click()


def batch_folders(tmp_path):
    """Empty input, depth-map and output folders for a batch-tab job."""
    folders = tmp_path / "in", tmp_path / "depth", tmp_path / "out"
    for folder in folders:
        folder.mkdir()
    return folders


def open_img2img_batch_from_directory(page):
    page.click("#tabs > .tab-nav button:has-text('img2img')")
    page.click("#mode_img2img > .tab-nav button:has-text('Batch')")
    # v1.10 splits the batch tab into Upload / From directory; v1.8-v1.9 have only the directory fields.
    # (Scoped to the img2img batch tab: Extras has a hidden "Batch from Directory" button.)
    sub_tabs = page.locator("#img2img_batch_source > .tab-nav")
    if sub_tabs.count():
        sub_tabs.locator("button:has-text('From directory')").click()
    page.locator("#img2img_batch_input_dir textarea").wait_for(state="visible")


def test_batch_folder_box_shows_only_in_the_batch_sub_tab(page, webui):
    """The depth-map folder does something only in img2img's Batch sub-tab: elsewhere it is hidden."""
    page.click("#tabs > .tab-nav button:has-text('img2img')")
    open_depth_panel(page)
    boxes = [page.locator(f"#depth2img_img2img_{name}") for name in ("depth_dir", "batch_depth_scale")]
    for tab in ("img2img", "Inpaint upload"):
        page.click(f"#mode_img2img > .tab-nav button:text-is('{tab}')")
        page.wait_for_timeout(500)
        assert not any(box.is_visible() for box in boxes), tab
    open_img2img_batch_from_directory(page)
    note = page.locator("#depth2img_img2img_depth_dir_note")
    if note.count():  # WebUI before v1.9: no folder box, the panel says why
        assert "v1.9" in note.first.inner_text()
    else:
        for box in boxes:
            box.wait_for(state="visible", timeout=5000)


def batch_outputs(webui, outputs, inputs) -> dict:
    """The batch tab's outputs by the name of their input. AUTOMATIC1111 v1.10 names an output after its input;
    Forge names them as any sample (00000-seed-prompt), in the order it walked the inputs (sorted by name)."""
    produced = sorted(outputs.glob("*.png"))
    if webui.is_forge:
        names = [path.stem for path in sorted(inputs.glob("*.png"))]
        assert len(produced) == len(names), produced
        return dict(zip(names, produced, strict=True))
    return {path.stem.split("-")[-1]: path for path in produced}


def test_batch_tab_matches_depth_maps_by_file_name(page, webui, tmp_path):
    """Two identical inputs with different depth maps of the same names: each output is the one its own map
    gives (the same job sent over the API with that map uploaded), not the other's, not an estimate."""
    import base64
    import json
    import time

    import cv2
    from PIL import Image

    from .conftest import decode, png_b64, rgb_b64

    open_img2img_batch_from_directory(page)
    open_depth_panel(page)
    if not page.locator("#depth2img_img2img_depth_dir").is_visible():
        # WebUI before v1.9: the panel says why instead (no images.read to learn a batch input's file name).
        assert "v1.9" in page.locator("#depth2img_img2img_depth_dir_note").first.inner_text()
        pytest.skip("batch-tab depth folders need WebUI v1.9+; the panel says so")

    inputs, depths, outputs = batch_folders(tmp_path)
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    maps = {"a": ramp, "b": ramp.T.copy()}
    for name, depth in maps.items():
        picture.save(inputs / f"{name}.png")
        cv2.imwrite(str(depths / f"{name}.png"), depth)

    page.fill("#img2img_batch_input_dir textarea", str(inputs))
    page.fill("#img2img_batch_output_dir textarea", str(outputs))
    for field, value in (("#img2img_steps", "3"), ("#img2img_width", "64"), ("#img2img_height", "64")):
        page.fill(f"{field} input[type=number]", value)
        page.press(f"{field} input[type=number]", "Enter")
    page.fill("#img2img_seed input[type=number]", "5")
    page.locator("#depth2img_img2img_source label:has-text('estimate')").click()
    page.fill("#depth2img_img2img_depth_dir textarea", str(depths))
    page.click("#img2img_generate")
    deadline = time.time() + 300
    while time.time() < deadline and len(list(outputs.glob("*.png"))) < 2:
        time.sleep(1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "img2img-batch.png"), full_page=True)
    produced = batch_outputs(webui, outputs, inputs)
    assert list(produced) == ["a", "b"], produced

    def api_result(infotext, depth):
        # The batch job's own settings (its PNG info, applied by the API) with one map uploaded.
        # (Width and height given: the img2img tab's size fields are not read back from infotext by the API.)
        body = {"infotext": infotext, "init_images": [rgb_b64(picture)], "width": 64, "height": 64,
                "alwayson_scripts": {"depth2img": {"args": [{"enabled": True, "source": "upload",
                                                             "depth_image": png_b64(depth)}]}}}
        response = webui.post("/sdapi/v1/img2img", body)
        assert response.status_code == 200, response.text[:2000]
        return decode(response.json()["images"][0])[..., ::-1].astype(int)  # BGR -> RGB

    for name, path in produced.items():
        raw = base64.b64encode(path.read_bytes()).decode()  # the file as saved, with its PNG info
        infotext = webui.ok("/sdapi/v1/png-info", {"image": raw})["info"]
        assert "Depth2Img source: upload" in infotext, infotext
        out = np.asarray(Image.open(path).convert("RGB")).astype(int)
        own = np.abs(out - api_result(infotext, maps[name])).mean()
        other = np.abs(out - api_result(infotext, maps["b" if name == "a" else "a"])).mean()
        # The UI's batch and the API run the same job on the same CPU, by different code paths to the same
        # sampler: near on average (seen up to 1.06 levels under load; the WebUI's single job with and without our
        # args differs by 1.25 on these random weights); the other map's picture is several times further (7-8).
        assert own <= 2.0 and other > 3 * own, json.dumps({"file": path.name, "own": own, "other": other})


def test_batch_tab_one_depth_scale_for_the_whole_folder(page, webui, tmp_path):
    """Two inputs whose depth maps are ramps to 1.0 and to 0.5: with one scale for the folder, both outputs'
    infotexts carry the same depth range, the folder's (a sequence's global range over both maps), and each output
    is what the API gives for that infotext and map; per image, the half-deep map would be stretched instead."""
    import base64
    import time

    import cv2
    from PIL import Image

    from depth2img.process import scale
    from depth2img.sequences import passes
    from depth2img.source import decoding

    from .conftest import decode, png_b64, rgb_b64

    open_img2img_batch_from_directory(page)
    open_depth_panel(page)
    if not page.locator("#depth2img_img2img_batch_depth_scale").is_visible():
        assert "v1.9" in page.locator("#depth2img_img2img_depth_dir_note").first.inner_text()
        pytest.skip("one depth scale for a batch folder needs WebUI v1.9+; the panel says so")

    inputs, depths, outputs = batch_folders(tmp_path)
    rng = np.random.default_rng(12)
    pictures, maps = {}, {}
    for name, top in (("a", 65535), ("b", 32767)):
        pictures[name] = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        pictures[name].save(inputs / f"{name}.png")
        maps[name] = (np.tile(np.linspace(0, 1, 64), (64, 1)) * top).astype(np.uint16)
        cv2.imwrite(str(depths / f"{name}.png"), maps[name])
    decoded = [decoding.load_depth(depths / f"{name}.png") for name in "ab"]
    expected = passes.shared_ranges([scale.range_sample(m) for m in decoded], passes.ScaleSettings("global"))[0]

    page.fill("#img2img_batch_input_dir textarea", str(inputs))
    page.fill("#img2img_batch_output_dir textarea", str(outputs))
    for field, value in (("#img2img_steps", "3"), ("#img2img_width", "64"), ("#img2img_height", "64")):
        page.fill(f"{field} input[type=number]", value)
        page.press(f"{field} input[type=number]", "Enter")
    page.fill("#img2img_seed input[type=number]", "6")
    page.locator("#depth2img_img2img_source label:has-text('estimate')").click()
    page.fill("#depth2img_img2img_depth_dir textarea", str(depths))
    page.locator("#depth2img_img2img_batch_depth_scale label:has-text('one for the whole folder')").click()
    page.click("#img2img_generate")
    deadline = time.time() + 300
    while time.time() < deadline and len(list(outputs.glob("*.png"))) < 2:
        time.sleep(1)
    page.locator("#depth2img_img2img_batch_depth_scale label:has-text('each image')").click()  # back to default
    produced = batch_outputs(webui, outputs, inputs)
    assert list(produced) == ["a", "b"], produced

    def api_result(infotext, name, depth_range):
        # The job's own settings (its PNG info: seed, steps, ...) with the map uploaded and the range named: the
        # API's named args are the whole of the script's settings.
        args = {"enabled": True, "source": "upload", "depth_image": png_b64(maps[name]), "depth_range": depth_range}
        body = {"infotext": infotext, "init_images": [rgb_b64(pictures[name])], "width": 64, "height": 64,
                "alwayson_scripts": {"depth2img": {"args": [args]}}}  # fmt: skip
        response = webui.post("/sdapi/v1/img2img", body)
        assert response.status_code == 200, response.text[:2000]
        return decode(response.json()["images"][0])[..., ::-1].astype(int)  # BGR -> RGB

    ranges = []
    for name, path in produced.items():
        infotext = webui.ok("/sdapi/v1/png-info", {"image": base64.b64encode(path.read_bytes()).decode()})["info"]
        assert "Depth2Img batch_depth_scale: global" in infotext, infotext
        ranges.append(infotext.split("Depth2Img depth_range: ", 1)[1].split(",")[0])
        depth_range = [float(v) for v in ranges[-1].split()]
        out = np.asarray(Image.open(path).convert("RGB")).astype(int)
        own = np.abs(out - api_result(infotext, name, depth_range)).mean()
        assert own <= 1.0, (name, own)  # the UI's batch and the API: the same job on the same CPU
        if name == "b":  # per image, the half-deep map is stretched to the full scale: another picture
            assert np.abs(out - api_result(infotext, name, None)).mean() > 5 * max(own, 0.1)
    assert ranges[0] == ranges[1]
    assert np.allclose([float(v) for v in ranges[0].split()], expected, rtol=1e-5)
