"""Issue 9 over HTTP, against a real WebUI: a fixed depth range, masks from a depth band, the batch tab's scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from .conftest import decode, png_b64, rgb_b64
from .test_live_api import BASE, SIZE, depth_args, images_of, img2img, scene


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


# ---- masks from a depth band ----------------------------------------------------------------------------------


def band_mask(webui, image, depth, **settings) -> np.ndarray:
    """The mask the extension makes for these settings, from its own route (8-bit, white = repaint)."""
    body = {"image": rgb_b64(image), "depth_image": png_b64(depth), **settings}
    return decode(webui.ok("/depth2img/v1/mask", body)["mask"])


def reach_of(mask: np.ndarray, blur: int) -> np.ndarray:
    """Where the WebUI's mask blur can carry a mask: its Gaussian kernel is 2 * int(2.5 * blur + 0.5) + 1 px."""
    import cv2

    kernel = 2 * int(2.5 * blur + 0.5) + 3
    return cv2.dilate((mask > 0).astype(np.uint8), np.ones((kernel, kernel), np.uint8))


def assert_kept_outside(out, image, mask, blur):
    original = np.asarray(image)[..., ::-1]  # decode() gives BGR
    outside = reach_of(mask, blur) == 0
    assert outside.sum() > 0.25 * outside.size  # a real test: a good part of the picture lies outside
    assert np.array_equal(out[outside], original[outside])
    assert np.abs(out[mask == 255].astype(int) - original[mask == 255]).mean() > 1  # and inside, it repainted


@pytest.mark.parametrize("only_masked", [False, True])
def test_a_depth_band_in_img2img_repaints_the_band_only(webui, only_masked):
    """img2img with no painted mask: the band (the near half of a ramp, feathered) becomes the WebUI's inpaint
    mask, blurred by its mask blur, "only masked" as asked; outside, beyond blur and feather, the input's pixels."""
    image, blur = scene(21), 4
    settings = {"mask_low": 50, "mask_feather": 3}
    mask = band_mask(webui, image, ramp16(), **settings)
    assert (mask[:, :24] == 0).all() and (mask[:, 40:] == 255).all()
    body = {"mask_blur": blur, "inpainting_fill": 1, "inpaint_full_res": only_masked, "inpaint_full_res_padding": 4}
    response = img2img(webui, image, depth_args(enabled=True, source="upload", depth_image=png_b64(ramp16()),
                                                mask_from_depth=True, **settings), **body)  # fmt: skip
    [out] = images_of(response)
    assert_kept_outside(out, image, mask, blur)
    infotext = json.loads(response.json()["info"])["infotexts"][0]
    assert "Depth2Img mask_low: 50.0" in infotext and "Depth2Img mask band: " in infotext
    assert "Mask blur: 4" in infotext  # the WebUI's own mask handling ran


@pytest.mark.parametrize("only_masked", [False, True])
def test_a_depth_band_in_inpaint_combines_with_the_painted_mask(webui, only_masked):
    """Inpaint with a painted mask (the top half) and the band (the right half) intersected: only the top right
    is repainted; the band's bottom right and the painted top left keep the input's pixels."""
    image, blur = scene(22), 2
    painted = np.zeros((SIZE, SIZE), np.uint8)
    painted[: SIZE // 2] = 255
    settings = {"mask_low": 50, "mask_combine": "intersect"}
    mask = band_mask(webui, image, ramp16(), mask=png_b64(painted), **settings)
    assert (mask[:24, 40:] == 255).all() and (mask[40:] == 0).all() and (mask[:, :24] == 0).all()
    body = {"mask": png_b64(painted), "mask_blur": blur, "inpainting_fill": 1, "inpaint_full_res": only_masked,
            "inpaint_full_res_padding": 4}  # fmt: skip
    [out] = images_of(img2img(webui, image, depth_args(enabled=True, source="upload", depth_image=png_b64(ramp16()),
                                                       mask_from_depth=True, **settings), **body))  # fmt: skip
    assert_kept_outside(out, image, mask, blur)


def test_an_empty_depth_band_stops_the_job_with_a_message(webui):
    args = depth_args(enabled=True, source="upload", depth_image=png_b64(ramp16()), mask_from_depth=True,
                      mask_low=60, depth_range=[0, 2])  # fmt: skip
    response = img2img(webui, scene(23), args)
    assert response.status_code == 422 and "no pixel lies in the depth band" in response.text
    assert webui.get("/sdapi/v1/progress").status_code == 200  # still serving


# ---- POST /depth2img/v1/mask ------------------------------------------------------------------------------------


def test_mask_route_estimates_or_takes_a_depth_map(webui):
    image = Image.fromarray(np.random.default_rng(4).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    estimated = webui.ok("/depth2img/v1/mask", {"image": rgb_b64(image), "mask_band_mode": "percentile",
                                                "mask_low": 50})  # fmt: skip
    mask = decode(estimated["mask"])
    assert mask.shape == (48, 80) and mask.dtype == np.uint8
    assert 0.4 < (mask == 255).mean() < 0.6  # the nearer half of the pixels, by percentile
    given = band_mask(webui, image, ramp16(), mask_low=50, mask_invert=True)  # the far (left) half
    assert given.shape == (48, 80) and (given[:, :30] == 255).all() and (given[:, 50:] == 0).all()


@pytest.mark.parametrize(
    "body, field",
    [({"mask_low": 120}, "mask_low"), ({"mask_low": 60, "mask_high": 40}, "mask_low"),
     ({"mask_low": 60, "depth_range": [0, 2]}, "mask_low"), ({"image": "not base64!"}, "image"),
     ({"depth_image": "QUJD"}, "depth_image"), ({"band": 3}, "band")],
)  # fmt: skip
def test_mask_route_rejects_bad_input_naming_the_field(webui, body, field):
    response = webui.post("/depth2img/v1/mask", {"image": rgb_b64(scene(1)), "depth_image": png_b64(ramp16()), **body})
    assert response.status_code == 422 and field in response.json()["detail"], response.text


def test_xyz_band_axis_masks_each_cell_by_its_band(webui):
    """X/Y/Z plot over "[Depth2Img] Mask band low" (the panel left off: the axis turns the mask on): each cell's
    picture keeps the input's pixels outside its own band's mask."""
    infos = webui.get("/sdapi/v1/script-info").json()
    xyz = next(s for s in infos if s["name"] == "x/y/z plot" and s["is_img2img"])
    script_args = [arg.get("value") for arg in xyz["args"]]
    script_args[0], script_args[1] = xyz["args"][0]["choices"].index("[Depth2Img] Mask band low"), "50, 80"
    script_args[3] = script_args[6] = 0  # Y and Z: "Nothing" (the API takes axis indices)
    script_args[2] = script_args[5] = script_args[8] = []  # no dropdown values
    script_args[10] = True  # include the single images besides the grid
    image, blur = scene(24), 4
    body = {**BASE, "init_images": [rgb_b64(image)], "denoising_strength": 0.9, "mask_blur": blur,
            "inpainting_fill": 1, "inpaint_full_res": False, "script_name": "x/y/z plot", "script_args": script_args,
            **depth_args(source="upload", depth_image=png_b64(ramp16()))}  # fmt: skip
    response = webui.post("/sdapi/v1/img2img", body)
    pictures = images_of(response)
    infotexts = json.loads(response.json()["info"])["infotexts"]
    cells = [(p, t) for p, t in zip(pictures, infotexts, strict=True) if p.shape == (SIZE, SIZE, 3)]
    assert len(cells) == 2, [t[:80] for t in infotexts]
    for (out, infotext), low in zip(cells, (50, 80), strict=True):
        assert f"Depth2Img mask_low: {float(low)}" in infotext and "Depth2Img mask_from_depth: True" in infotext
        assert_kept_outside(out, image, band_mask(webui, image, ramp16(), mask_low=low), blur)
