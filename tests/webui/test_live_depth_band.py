"""Issue 9 over HTTP, against a real WebUI: a fixed depth range, masks from a depth band, the batch tab's scale."""

from __future__ import annotations

import json

import numpy as np

from .conftest import png_b64
from .test_live_api import BASE, SIZE, depth_args, images_of


def ramp16(top: int = 65535) -> np.ndarray:
    return np.tile(np.linspace(0, top, SIZE), (SIZE, 1)).astype(np.uint16)


def txt2img(webui, depth: np.ndarray, **args):
    body = {**BASE, **depth_args(enabled=True, source="upload", depth_image=png_b64(depth), **args)}
    return webui.post("/sdapi/v1/txt2img", body)


def test_a_fixed_depth_range_holds_the_scale_instead_of_stretching_each_map(webui):
    """A ramp to 1.0 on the range 0..2 and the same ramp to 0.5 on 0..1 condition alike (both: depth - 1);
    either differs from the map's own min-max, which stretches it to -1..1."""
    full, half = ramp16(), ramp16(32767)  # decoded 0..1 and 0..0.5
    [full_on_2] = images_of(txt2img(webui, full, depth_range=[0, 2]))
    [half_on_1] = images_of(txt2img(webui, half, depth_range=[0, 1]))
    [stretched] = images_of(txt2img(webui, full))
    same = np.abs(full_on_2.astype(int) - half_on_1.astype(int))
    other = np.abs(full_on_2.astype(int) - stretched.astype(int))
    # 16-bit rounding of the half ramp moves its conditioning by < 1e-4: at most a level or two of 255.
    assert same.max() <= 2, same.max()
    assert other.mean() > 20 * max(same.mean(), 0.05), (other.mean(), same.mean())
    response = txt2img(webui, full, depth_range=[0, 2])
    assert "Depth2Img depth_range: 0.0 2.0" in json.loads(response.json()["info"])["infotexts"][0]


def test_a_bad_depth_range_is_422_naming_the_field(webui):
    response = txt2img(webui, ramp16(), depth_range=[2, 1])
    assert response.status_code == 422 and "depth_range" in response.text
