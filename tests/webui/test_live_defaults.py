"""Right by default, on a real WebUI (issue 15): an off panel changes nothing; a phone photo is read as displayed."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from .conftest import decode, rgb_b64
from .test_live_api import BASE, SIZE, depth_args, images_of, img2img, scene

STALE_OR_CROSSED = [
    {"clip_near": 10, "clip_far": 20},
    {"mask_from_depth": True, "mask_low": 80, "mask_high": 20},
    {"estimator": "controlnet:depth_removed"},
    {"estimator": "a-deleted-folder"},
    {"source": "upload", "depth_image": "not base64 at all"},
]


@pytest.mark.parametrize("values", STALE_OR_CROSSED)
@pytest.mark.parametrize("route", ["txt2img", "img2img"])
def test_an_off_panel_changes_nothing_whatever_its_settings_hold(webui, values, route):
    if route == "img2img":
        plain = images_of(img2img(webui, scene()))
        off = images_of(img2img(webui, scene(), depth_args(enabled=False, **values)))
    else:  # txt2img with a depth model: the WebUI's own failure, with or without our off panel
        plain_answer = webui.post("/sdapi/v1/txt2img", BASE)
        off_answer = webui.post("/sdapi/v1/txt2img", {**BASE, **depth_args(enabled=False, **values)})
        assert off_answer.status_code == plain_answer.status_code, off_answer.text[:500]
        assert "depth2img arg" not in off_answer.text
        return
    assert len(off) == len(plain) == 1
    assert np.abs(off[0].astype(int) - plain[0].astype(int)).max() <= 2  # the same job (CPU kernels' rounding)


def phone_photo_b64() -> tuple[str, str]:
    """(the photo as stored: landscape with EXIF orientation 6, the same photo turned by hand), as base64 PNG."""
    stored = scene().resize((SIZE, SIZE // 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    data = buffer.getvalue()
    turned = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    return base64.b64encode(data).decode(), rgb_b64(turned)


def test_a_phone_photo_is_estimated_as_displayed(webui):
    photo, turned = phone_photo_b64()
    answers = [webui.ok("/depth2img/v1/estimate", {"image": image}) for image in (photo, turned)]
    assert [(a["width"], a["height"]) for a in answers] == [(SIZE // 2, SIZE)] * 2  # portrait
    np.testing.assert_allclose(decode(answers[0]["depth"]).astype(float), decode(answers[1]["depth"]).astype(float),
                               atol=2)  # fmt: skip
    masks = [webui.ok("/depth2img/v1/mask", {"image": image, "mask_low": 50}) for image in (photo, turned)]
    assert np.array_equal(decode(masks[0]["mask"]), decode(masks[1]["mask"]))
    assert decode(masks[0]["mask"]).shape == (SIZE, SIZE // 2)
