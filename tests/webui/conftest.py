"""Live tests against a running AUTOMATIC1111 WebUI (v1.10.x) with this extension in its extensions/.

Skipped unless WEBUI_URL is set (e.g. http://127.0.0.1:7860). The WebUI must have been started with --api
and have the fixture checkpoints: `python -m tests.webui.prepare WEBUI_DIR` writes them.
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest

WEBUI_URL = os.environ.get("WEBUI_URL", "").rstrip("/")
# The fixture checkpoints tests.webui.prepare writes: tiny ones for AUTOMATIC1111, SD 2-wide ones for Forge.
DEPTH_MODEL = "tiny-depth"
PLAIN_MODEL = "tiny-sd2"
FORGE_DEPTH_MODEL = "forge-depth"
FORGE_PLAIN_MODEL = "forge-sd2"


def pytest_collection_modifyitems(config, items):
    if WEBUI_URL:
        return
    skip = pytest.mark.skip(reason="WEBUI_URL is not set: no running WebUI to test against")
    for item in items:
        if "tests/webui" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


class WebUI:
    def __init__(self, url: str):
        import requests

        self.url = url
        self.http = requests.Session()
        # Forge closes the connection after an error answer (its API middleware re-raises: "Exception in ASGI
        # application"), and a reused connection is then reset: one connection per request.
        self.http.headers["Connection"] = "close"
        self._is_forge = None

    @property
    def is_forge(self) -> bool:
        """Forge (its own options beside AUTOMATIC1111's) rather than AUTOMATIC1111."""
        if self._is_forge is None:
            self._is_forge = "forge_additional_modules" in self.get("/sdapi/v1/options").json()
        return self._is_forge

    @property
    def depth_model(self) -> str:
        return FORGE_DEPTH_MODEL if self.is_forge else DEPTH_MODEL

    @property
    def plain_model(self) -> str:
        return FORGE_PLAIN_MODEL if self.is_forge else PLAIN_MODEL

    def get(self, path, **kwargs):
        return self.http.get(self.url + path, timeout=600, **kwargs)

    def post(self, path, payload, **kwargs):
        return self.http.post(self.url + path, json=payload, timeout=600, **kwargs)

    def ok(self, path, payload):
        response = self.post(path, payload)
        assert response.status_code == 200, response.text[:2000]
        return response.json()

    def model_title(self, name: str) -> str:
        self.post("/sdapi/v1/refresh-checkpoints", {})
        for model in self.get("/sdapi/v1/sd-models").json():
            if model["model_name"] == name:
                return model["title"]
        raise AssertionError(f"{name} is not in the WebUI's model list: run tests.webui.prepare")

    def load_model(self, name: str) -> None:
        self.ok("/sdapi/v1/options", {"sd_model_checkpoint": self.model_title(name)})
        assert name in self.loaded_model(), f"the WebUI did not load {name} (see its log)"

    def loaded_model(self) -> str:
        return self.get("/sdapi/v1/options").json()["sd_model_checkpoint"]

    def set_option(self, key, value) -> None:
        self.ok("/sdapi/v1/options", {key: value})


@pytest.fixture(scope="session")
def webui():
    client = WebUI(WEBUI_URL)
    client.load_model(client.depth_model)
    client.set_option("depth2img_takeover", True)
    return client


def png_b64(array: np.ndarray) -> str:
    import cv2

    ok, data = cv2.imencode(".png", array)
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def rgb_b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode(b64: str) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
