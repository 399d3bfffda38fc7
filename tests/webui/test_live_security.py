"""A real WebUI as a stranger's HTTP calls find it (issue 14): no server file read, no auth bypass, bombs refused.

WEBUI_URL: a WebUI started with --api. WEBUI_AUTH_URL and WEBUI_AUTH ("user:password"): a second one started with
--api --api-auth user:password --hide-ui-dir-config; the tests that need it are skipped without them, as the
whole suite is without WEBUI_URL.
"""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from depth2img.webui.batch import BATCH_PATH_KEY
from depth2img.webui.options import API_FOLDERS_SETTING

from ..hostile_inputs import BOMBS
from .conftest import WebUI, decode, rgb_b64
from .test_live_api import BASE, depth_args, scene

AUTH_URL = os.environ.get("WEBUI_AUTH_URL", "").rstrip("/")
AUTH = tuple(os.environ.get("WEBUI_AUTH", "").split(":", 1)) if os.environ.get("WEBUI_AUTH") else None
needs_auth_instance = pytest.mark.skipif(not (AUTH_URL and AUTH), reason="WEBUI_AUTH_URL / WEBUI_AUTH not set")
ROUTES = [("GET", "/depth2img/v1/estimators", None), ("GET", "/depth2img/v1/checkpoints", None),
          ("POST", "/depth2img/v1/estimate", "estimate"), ("POST", "/depth2img/v1/mask", "mask")]  # fmt: skip


def private_map(folder: Path) -> np.ndarray:
    """A file the caller never had: a 16-bit map with a pattern no estimate of a plain scene resembles."""
    rng = np.random.default_rng(7)
    secret = cv2.resize(rng.integers(0, 65535, (8, 8)).astype(np.float32), (64, 64), interpolation=cv2.INTER_CUBIC)
    secret = np.clip(secret, 0, 65535).astype(np.uint16)
    cv2.imwrite(str(folder / "secret.png"), secret)
    return secret


def init_png_naming(path: str) -> str:
    """A plain init picture whose PNG text chunk is named like the batch tab's recorded source path."""
    info = PngImagePlugin.PngInfo()
    info.add_text(BATCH_PATH_KEY, path)
    buffer = io.BytesIO()
    scene().save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def img2img_with(webui, init_b64: str, **args):
    body = {**BASE, "init_images": [init_b64], "denoising_strength": 0.9, **depth_args(enabled=True, **args)}
    return webui.post("/sdapi/v1/img2img", body)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1]) if a.std() and b.std() else 0.0


def test_the_metadata_path_trick_returns_no_server_file(webui, tmp_path):
    secret = private_map(tmp_path)
    init = init_png_naming(str(tmp_path / "inputs" / "secret.jpg"))
    refused = img2img_with(webui, init, depth_dir=str(tmp_path), return_depth=True)
    assert refused.status_code == 422, refused.text[:500]
    assert "'depth_dir'" in refused.text and "API requests may not name server folders" in refused.text
    assert str(tmp_path) not in refused.text
    webui.set_option(API_FOLDERS_SETTING, True)  # even where the owner lets API requests name folders
    try:
        answered = img2img_with(webui, init, depth_dir=str(tmp_path), return_depth=True)
    finally:
        webui.set_option(API_FOLDERS_SETTING, False)
    assert answered.status_code == 200, answered.text[:500]
    depth = decode(answered.json()["images"][-1])
    assert depth.dtype == np.uint16
    assert abs(correlation(depth, secret)) < 0.5  # estimated from the picture, not the private map


def test_an_estimator_path_outside_the_model_folders_is_refused_without_listing_it(webui, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    for name in (str(tmp_path), "/etc", "../../models/depth/tiny-dpt"):
        response = img2img_with(webui, rgb_b64(scene()), estimator=name)
        assert response.status_code == 422, response.text[:500]
        assert "'estimator'" in response.text and "inside the model folders" in response.text
        assert "config.json" not in response.text
        response = webui.post("/depth2img/v1/estimate", {"image": rgb_b64(scene()), "estimator": name})
        assert response.status_code == 422 and "config.json" not in response.text, response.text[:500]


def test_checkpoints_and_infotext_carry_no_server_path(webui):
    listed = webui.get("/depth2img/v1/checkpoints").json()
    assert listed and all(set(entry) == {"title", "name", "format", "dtype"} for entry in listed)
    assert not any("/" in entry["name"] or "\\" in entry["name"] for entry in listed)
    answered = img2img_with(webui, rgb_b64(scene()), estimator="tiny-dpt")
    assert answered.status_code == 200, answered.text[:500]
    info = answered.json()["info"]
    assert "Depth2Img estimator" in info and "/models/" not in info and "depth_dir" not in info


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_every_bomb_is_refused_by_the_routes_and_jobs_naming_the_field(webui, name):
    build, is_picture = BOMBS[name]
    bomb = base64.b64encode(build()).decode()
    calls = [("/depth2img/v1/estimate", {"depth_image": bomb}, "depth_image"),
             ("/depth2img/v1/mask", {"image": rgb_b64(scene()), "depth_image": bomb}, "depth_image"),
             ("/sdapi/v1/txt2img", {**BASE, **depth_args(enabled=True, source="upload", depth_image=bomb)},
              "depth_image")]  # fmt: skip
    if is_picture:
        calls.append(("/depth2img/v1/estimate", {"image": bomb}, "image"))
    for path, body, field in calls:
        started = time.perf_counter()
        response = webui.post(path, body)
        elapsed = time.perf_counter() - started
        assert response.status_code == 422 and f"'{field}'" in response.text, (path, response.text[:500])
        assert elapsed < 5, f"{path}: {elapsed:.1f} s"  # bench/bench_hostile.py times it; a decode would take far more
    assert webui.get("/depth2img/v1/estimators").status_code == 200  # the server keeps serving


def basic_client(auth) -> WebUI:
    client = WebUI(AUTH_URL)
    client.http.auth = auth
    return client


def route_call(client: WebUI, method: str, path: str, body_kind: str | None):
    if method == "GET":
        return client.get(path)
    body = {"image": rgb_b64(scene())}
    if body_kind == "mask":
        body["mask_low"] = 50
    return client.post(path, body)


@needs_auth_instance
@pytest.mark.parametrize("method, path, body_kind", ROUTES)
def test_with_api_auth_every_route_answers_401_without_and_200_with_credentials(method, path, body_kind):
    assert basic_client(None).get("/sdapi/v1/options").status_code == 401  # the WebUI's own, for parity
    for auth in (None, (AUTH[0], AUTH[1] + "x"), ("nobody", AUTH[1])):
        response = route_call(basic_client(auth), method, path, body_kind)
        assert response.status_code == 401, (auth, response.status_code, response.text[:200])
    response = route_call(basic_client(AUTH), method, path, body_kind)
    assert response.status_code == 200, response.text[:500]


@needs_auth_instance
def test_hide_ui_dir_config_hides_the_folder_box_and_refuses_depth_dir(tmp_path):
    client = basic_client(AUTH)
    config = client.get("/config").json()
    boxes = [c["props"] for c in config["components"] if c.get("props", {}).get("elem_id", "").endswith("_depth_dir")]
    assert boxes and all(not box.get("visible", True) and box.get("interactive") is False for box in boxes), boxes
    client.post("/sdapi/v1/options", {API_FOLDERS_SETTING: True})
    try:
        private_map(tmp_path)
        init = init_png_naming(str(tmp_path / "secret.jpg"))
        response = img2img_with(client, init, depth_dir=str(tmp_path), return_depth=True)
    finally:
        client.post("/sdapi/v1/options", {API_FOLDERS_SETTING: False})
    assert response.status_code == 422 and "--hide-ui-dir-config" in response.text, response.text[:500]


def test_infotext_of_a_depth_image_png_never_names_the_recorder_key(webui):
    """A PNG the server returns carries no recorder key: nothing in it could name a path on a later upload."""
    answered = img2img_with(webui, init_png_naming("/etc/passwd"))
    assert answered.status_code == 200, answered.text[:500]
    with Image.open(io.BytesIO(base64.b64decode(answered.json()["images"][0]))) as image:
        assert BATCH_PATH_KEY not in image.info
