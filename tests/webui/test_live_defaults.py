"""Right by default, on a real WebUI (issue 15): an off panel changes nothing; a phone photo is read as displayed."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from .conftest import decode, png_b64, rgb_b64
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


def wide_picture() -> Image.Image:
    """150x64: MiDaS's map of it has its sides rounded to multiples of 32, another aspect than the picture's."""
    rng = np.random.default_rng(21)
    gradient = np.linspace(0, 255, 150)[None, :, None].repeat(64, 0).repeat(3, 2)
    return Image.fromarray(np.clip(gradient + rng.normal(0, 40, gradient.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize(("resize_mode", "only_masked"), [(1, False), (2, False), (0, True), (1, True)],
                         ids=["crop", "fill", "only-masked", "only-masked-crop"])
def test_inpainting_estimated_depth_lines_up_as_the_same_map_uploaded(webui, resize_mode, only_masked):
    # Issue 15.2: in inpainting the depth is the whole init image's, fitted to the job; fitted by the estimated
    # map's own rounded aspect it moved against the picture and its mask. It must equal the same map uploaded
    # at the picture's size (what /estimate returns).
    picture = wide_picture()
    uploaded = webui.ok("/depth2img/v1/estimate", {"image": rgb_b64(picture)})["depth"]
    mask = np.zeros((64, 150), np.uint8)
    mask[16:48, 40:100] = 255
    body = {"mask": png_b64(mask), "mask_blur": 0, "inpainting_fill": 1, "inpaint_full_res": only_masked,
            "inpaint_full_res_padding": 4, "resize_mode": resize_mode}
    maps = []
    for source in ({"source": "estimate"}, {"source": "upload", "depth_image": uploaded}):
        response = img2img(webui, picture, depth_args(enabled=True, return_depth=True, **source), **body)
        maps.append(images_of(response)[-1].astype(float))
    assert maps[0].shape == maps[1].shape and maps[1].std() > 1000
    # The same map, once through a 16-bit PNG: quantization and float rounding only.
    np.testing.assert_allclose(maps[0], maps[1], atol=0.01 * 65535)
