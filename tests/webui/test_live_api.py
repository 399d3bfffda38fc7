"""Over HTTP, against a real WebUI: every behaviour the extension promises (see conftest for set-up)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from .conftest import decode, png_b64, rgb_b64

SIZE = 64
BASE = {"prompt": "a room", "steps": 3, "width": SIZE, "height": SIZE, "cfg_scale": 7, "sampler_name": "Euler",
        "seed": 1234, "batch_size": 1}


def scene(seed=0):
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, SIZE)[None, :, None].repeat(SIZE, 0).repeat(3, 2)
    return Image.fromarray(np.clip(gradient + rng.normal(0, 25, gradient.shape), 0, 255).astype(np.uint8))


def ramp16(vertical=False):
    ramp = np.tile(np.linspace(0, 65535, SIZE), (SIZE, 1)).astype(np.uint16)
    return ramp.T.copy() if vertical else ramp


def depth_args(**values):
    return {"alwayson_scripts": {"depth2img": {"args": [values]}}}


def img2img(webui, image, extra=None, **payload):
    body = {**BASE, "init_images": [rgb_b64(image)], "denoising_strength": 0.9, **payload, **(extra or {})}
    return webui.post("/sdapi/v1/img2img", body)


def images_of(response) -> list[np.ndarray]:
    assert response.status_code == 200, response.text[:2000]
    return [decode(b) for b in response.json()["images"]]


def test_txt2img_from_an_uploaded_depth_map(webui):
    response = webui.post("/sdapi/v1/txt2img", {**BASE, **depth_args(enabled=True, source="upload",
                                                                     depth_image=png_b64(ramp16()))})
    [image] = images_of(response)
    assert image.shape == (SIZE, SIZE, 3) and image.std() > 0
    info = json.loads(response.json()["info"])
    assert "Depth2Img enabled: True" in info["infotexts"][0]


def test_txt2img_hires_fix_follows_the_second_pass_size(webui):
    def hires(depth):
        body = {**BASE, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.6,
                "hr_second_pass_steps": 2, **depth_args(enabled=True, source="upload", depth_image=png_b64(depth),
                                                        return_depth=True)}  # fmt: skip
        if webui.is_forge:  # Forge's API fails on the second pass ("NoneType is not iterable") without it
            body["hr_additional_modules"] = ["Use same choices"]
        response = webui.post("/sdapi/v1/txt2img", body)
        image, shown = images_of(response)  # the picture, then the depth map used (return_depth)
        extra = json.loads(response.json()["info"])["extra_generation_params"]
        return image, shown, decode(extra["Depth2Img depth map"])

    image, shown, used = hires(ramp16())
    assert image.shape == (2 * SIZE, 2 * SIZE, 3)
    # The depth map of the last conditioning, the second pass's, comes at its size (128, not the first pass's 64):
    # the second pass was conditioned by our map at its latent size. It is the uploaded ramp, stretched.
    assert used.dtype == np.uint16 and used.shape == shown.shape[:2] == (2 * SIZE, 2 * SIZE)
    ideal = np.clip(((np.arange(2 * SIZE) + 0.5) / 2 - 0.5) / (SIZE - 1), 0, 1)
    assert np.allclose(used[SIZE] / 65535.0, ideal, atol=5e-3) and (used == used[0]).all()
    # Another map, another picture: the map reaches the job (both passes start from the same seed's noise).
    other, _, used_other = hires(ramp16(vertical=True))
    assert np.allclose(used_other[:, SIZE] / 65535.0, ideal, atol=5e-3)
    assert np.abs(image.astype(int) - other.astype(int)).max() > 0


def test_txt2img_with_a_depth_model_and_no_depth_map_says_what_to_do(webui):
    response = webui.post("/sdapi/v1/txt2img", BASE)
    assert response.status_code == 422 and "upload a depth map" in response.text
    assert webui.get("/sdapi/v1/progress").status_code == 200  # still serving


def test_img2img_estimated_and_uploaded_depth(webui):
    [estimated] = images_of(img2img(webui, scene(), depth_args(enabled=True, source="estimate")))
    assert estimated.std() > 0
    [a] = images_of(img2img(webui, scene(), depth_args(enabled=True, source="upload", depth_image=png_b64(ramp16()))))
    [b] = images_of(img2img(webui, scene(), depth_args(enabled=True, source="upload",
                                                       depth_image=png_b64(ramp16(vertical=True)))))
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0


def test_an_uploaded_map_is_followed_the_same_map_and_seed_give_the_same_image(webui):
    image = scene(13)

    def with_map(depth):
        args = depth_args(enabled=True, source="upload", depth_image=png_b64(depth))
        return images_of(img2img(webui, image, args))[0]

    with_map(ramp16())  # a process's first job may differ in rounding from later ones (seen on v1.8.0 and Forge)
    first, again, other = with_map(ramp16()), with_map(ramp16()), with_map(ramp16(vertical=True))
    assert np.abs(first.astype(int) - again.astype(int)).max() <= 2  # the same job: equal up to rounding
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 5  # another map: another picture


def test_estimate_mode_equals_the_native_webui(webui):
    """Proof that the conditioning is wired exactly: same seed, same image, native vs extension."""
    image = scene(11)
    try:
        webui.set_option("depth2img_takeover", False)
        [native] = images_of(img2img(webui, image))
        [ours] = images_of(img2img(webui, image, depth_args(enabled=True, source="estimate")))
    finally:
        webui.set_option("depth2img_takeover", True)
    [takeover] = images_of(img2img(webui, image))
    assert np.array_equal(native, ours)
    assert np.array_equal(native, takeover)


@pytest.mark.parametrize("only_masked", [False, True])
def test_inpaint_keeps_pixels_outside_the_mask(webui, only_masked):
    import cv2

    image = scene(5)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[20:44, 24:48] = 255
    blur = 4
    body = {"mask": png_b64(mask), "mask_blur": blur, "inpainting_fill": 1, "inpaint_full_res": only_masked,
            "inpaint_full_res_padding": 8}
    [out] = images_of(img2img(webui, image, depth_args(enabled=True, source="estimate"), **body))
    # The WebUI blurs the mask with a Gaussian kernel of 2 * int(2.5 * blur + 0.5) + 1 pixels.
    kernel = 2 * int(2.5 * blur + 0.5) + 3
    reach = cv2.dilate(mask, np.ones((kernel, kernel), np.uint8))
    original = np.asarray(image)[..., ::-1]  # decode() gives BGR
    outside = reach == 0
    assert np.array_equal(out[outside], original[outside])
    assert np.abs(out[mask > 0].astype(int) - original[mask > 0]).mean() > 1


def test_batch_of_four_estimates_once_and_caches(webui):
    image = scene(int(np.random.default_rng().integers(1 << 30)))  # new content: not in the cache
    first = img2img(webui, image, depth_args(enabled=True), batch_size=4)
    assert len(images_of(first)) == 4
    assert json.loads(first.json()["info"])["extra_generation_params"]["Depth2Img estimator calls"] == 1
    again = img2img(webui, image, depth_args(enabled=True), batch_size=4)
    assert json.loads(again.json()["info"])["extra_generation_params"]["Depth2Img estimator calls"] == 0


def test_flat_depth_map_gives_a_finite_image(webui):
    flat = np.full((SIZE, SIZE), 30000, np.uint16)
    [image] = images_of(img2img(webui, scene(), depth_args(enabled=True, source="upload", depth_image=png_b64(flat))))
    assert image.std() > 0


def test_return_depth_and_estimate_route_give_16_bit_pngs_at_the_images_size(webui):
    response = img2img(webui, scene(), depth_args(enabled=True, return_depth=True), width=96, height=64)
    images = images_of(response)
    assert len(images) == 2
    depth = images[-1]  # documented position: last
    assert depth.dtype == np.uint16 and depth.shape == (64, 96) and depth.max() == 65535  # not MiDaS's 384x256
    in_info = decode(json.loads(response.json()["info"])["extra_generation_params"]["Depth2Img depth map"])
    assert in_info.dtype == np.uint16 and in_info.shape == (64, 96)
    # The same map twice (the image list and info): two encodings of one array.
    assert np.array_equal(in_info, depth)
    response = webui.post("/depth2img/v1/estimate", {"image": rgb_b64(scene().resize((96, 64))), "invert": True})
    assert response.status_code == 200, response.text
    body = response.json()
    estimated = decode(body["depth"])
    assert estimated.dtype == np.uint16 and body["bit_depth"] == 16 and body["max"] > body["min"]
    assert estimated.shape == (64, 96) and (body["width"], body["height"]) == (96, 64)


@pytest.mark.parametrize("samples_format", ["jpg", "webp"])
def test_return_depth_works_with_every_samples_format(webui, samples_format):
    before = webui.get("/sdapi/v1/options").json()["samples_format"]
    try:
        webui.set_option("samples_format", samples_format)
        args = depth_args(enabled=True, source="upload", depth_image=png_b64(ramp16()), return_depth=True)
        response = img2img(webui, scene(), args)
        images = images_of(response)  # was HTTP 500 "cannot write mode I;16 as JPEG"
    finally:
        webui.set_option("samples_format", before)
    assert images[-1].dtype == np.uint8 and images[-1].shape[:2] == (SIZE, SIZE)  # viewable 8-bit
    full = decode(json.loads(response.json()["info"])["extra_generation_params"]["Depth2Img depth map"])
    assert full.dtype == np.uint16 and full.shape == (SIZE, SIZE)  # all 16 bits for API users
    assert np.abs(full.astype(int) - ramp16().astype(int)).max() <= 1  # the uploaded ramp, same size: intact
    # The 8-bit image is the map's top byte through the lossy format (the WebUI's quality setting, 80 by
    # default): on a smooth ramp that costs about a level.
    shown = images[-1] if images[-1].ndim == 2 else images[-1][..., 0]
    assert np.abs(shown.astype(int) - (full >> 8).astype(int)).mean() < 2


def test_listing_routes(webui):
    estimators = webui.get("/depth2img/v1/estimators").json()
    assert any(e["name"] == "checkpoint-midas" and e["available"] for e in estimators)
    checkpoints = webui.get("/depth2img/v1/checkpoints").json()
    assert any(webui.depth_model in c["title"] for c in checkpoints)
    assert not any(webui.plain_model in c["title"] for c in checkpoints)
    paths = webui.get("/openapi.json").json()["paths"]
    assert {"/depth2img/v1/estimate", "/depth2img/v1/estimators", "/depth2img/v1/checkpoints"} <= set(paths)


@pytest.mark.parametrize(
    "args, field",
    [
        ({"enabled": True, "source": "upload", "depth_image": "%%% not base64"}, "depth_image"),
        ({"enabled": True, "source": "upload", "depth_image": "aGVsbG8="}, "depth_image"),
        ({"enabled": True, "colour": "blue"}, "colour"),
        ({"enabled": True, "source": "upload", "depth_image": "data:image/png;base64,aGVsbG8="}, "depth_image"),
        ({"enabled": True, "gamma": -2}, "gamma"),
    ],
)
def test_bad_args_are_422_naming_the_field_and_the_server_keeps_serving(webui, args, field):
    response = img2img(webui, scene(), depth_args(**args))
    assert response.status_code == 422, response.text[:500]
    assert field in response.text
    assert len(images_of(img2img(webui, scene()))) == 1  # the next request works


def test_estimate_route_rejects_bad_input(webui):
    for body, field in [({"image": "!!"}, "image"), ({}, "image"), ({"image": rgb_b64(scene()), "gamma": 0}, "gamma"),
                        ({"image": rgb_b64(scene()), "size": 3}, "size")]:
        response = webui.post("/depth2img/v1/estimate", body)
        assert response.status_code == 422 and field in response.text, response.text


def test_images_above_the_size_limit_are_refused_naming_the_field(webui):
    before = webui.get("/sdapi/v1/options").json().get("depth2img_max_megapixels", 64)
    try:
        webui.set_option("depth2img_max_megapixels", 1)  # 1 megapixel
        big = png_b64(np.zeros((1100, 1000), np.uint16))
        response = webui.post("/depth2img/v1/estimate", {"image": big})
        assert response.status_code == 422 and "'image'" in response.text and "limit" in response.text
        response = img2img(webui, scene(), depth_args(enabled=True, source="upload", depth_image=big))
        assert response.status_code == 422 and "depth_image" in response.text and "limit" in response.text
    finally:
        webui.set_option("depth2img_max_megapixels", before)
    assert len(images_of(img2img(webui, scene()))) == 1  # still serving


def test_non_depth_model(webui):
    try:
        webui.load_model(webui.plain_model)
        refused = img2img(webui, scene(), depth_args(enabled=True))
        assert refused.status_code == 422 and "not an SD 2 depth model" in refused.text
        missing = img2img(webui, scene(), depth_args(enabled=True, checkpoint="no-such-depth-model"))
        assert missing.status_code == 422 and "'no-such-depth-model'" in missing.text and "not found" in missing.text
        # Choosing a depth checkpoint switches for this job only; the user's model comes back.
        switched = img2img(webui, scene(), depth_args(enabled=True, checkpoint=webui.depth_model))
        assert len(images_of(switched)) == 1
        assert webui.plain_model in webui.loaded_model()
        # Without the panel, a plain model works as before.
        assert len(images_of(img2img(webui, scene()))) == 1
    finally:
        webui.load_model(webui.depth_model)


def test_infotext_records_the_settings_and_reads_back(webui):
    from depth2img.schema.args import Depth2ImgArgs

    response = img2img(webui, scene(), depth_args(enabled=True, invert=True, gamma=1.5, blur=2.0))
    assert response.status_code == 200
    png_info = webui.ok("/sdapi/v1/png-info", {"image": response.json()["images"][0]})
    text = png_info["info"]
    assert "Depth2Img invert: True" in text and "Depth2Img gamma: 1.5" in text
    assert "depth_image" not in text
    back = Depth2ImgArgs.from_infotext({k: str(v) for k, v in png_info["parameters"].items()})
    assert back.enabled and back.invert and back.gamma == 1.5 and back.blur == 2.0


def test_batch_count_and_batch_size_together(webui):
    # Two init images of mirrored depth, a batch of 2, twice: items 0, 2 are image a's, items 1, 3 image b's.
    a = scene(21)
    b = a.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    args = depth_args(enabled=True)
    response = img2img(webui, a, args, batch_size=2, n_iter=2, init_images=[rgb_b64(a), rgb_b64(b)])
    images = images_of(response)
    info = json.loads(response.json()["info"])
    assert len(images) == 4 and len(info["infotexts"]) == 4
    # Each image is its own seed's (1234 + index: the WebUI's seeds) and says Depth2Img conditioned it.
    for k, text in enumerate(info["infotexts"]):
        assert f"Seed: {1234 + k}," in text and "Depth2Img enabled: True" in text, text
    assert all(np.abs(images[i].astype(int) - images[j].astype(int)).max() > 0 for i in range(4) for j in range(i))
    # Each item got its own image's depth: it is the picture a single job of its image and seed gives (mean
    # difference seen 1.3-1.9 of 255: the UNet's batch-size-dependent kernels on random weights), and far from
    # the same job conditioned on the other image's depth map (seen 13-16), which a batch that reused item 0's
    # depth for every item, or one scale for the batch, would give.
    maps = {name: webui.post("/depth2img/v1/estimate", {"image": rgb_b64(image)}).json()["depth"]
            for name, image in (("a", a), ("b", b))}  # fmt: skip
    for k in range(4):
        image, other = (a, "b") if k % 2 == 0 else (b, "a")
        [alone] = images_of(img2img(webui, image, args, seed=1234 + k))
        [wrong] = images_of(img2img(webui, image, depth_args(enabled=True, source="upload", depth_image=maps[other]),
                                    seed=1234 + k))  # fmt: skip
        own = np.abs(images[k].astype(int) - alone.astype(int)).mean()
        assert own < 4 and np.abs(images[k].astype(int) - wrong.astype(int)).mean() > 3 * own, k


def test_depth_checkpoints_in_the_extension_folder_are_listed(webui, tiny_checkpoint):
    from depth2img.base.paths import SHIPPED_DEPTH_CONFIG, USER_CHECKPOINT_DIR

    USER_CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    link = USER_CHECKPOINT_DIR / "ext-folder-depth.safetensors"
    link.unlink(missing_ok=True)
    link.symlink_to(tiny_checkpoint)
    try:
        titles = [c["title"] for c in webui.get("/depth2img/v1/checkpoints").json()]
        assert any("ext-folder-depth" in t for t in titles), titles
        assert link.with_suffix(".yaml").read_text() == SHIPPED_DEPTH_CONFIG.read_text()
    finally:
        link.unlink()
        link.with_suffix(".yaml").unlink(missing_ok=True)


def test_xyz_grid_axis_varies_a_depth_setting(webui):
    infos = webui.get("/sdapi/v1/script-info").json()
    xyz = next(s for s in infos if s["name"] == "x/y/z plot" and s["is_img2img"])
    labels = xyz["args"][0]["choices"]
    gamma_axis = labels.index("[Depth2Img] Gamma")
    script_args = [arg.get("value") for arg in xyz["args"]]
    script_args[0], script_args[1] = gamma_axis, "0.5, 3"
    script_args[3] = script_args[6] = 0  # Y and Z: "Nothing" (the API takes axis indices)
    script_args[2] = script_args[5] = script_args[8] = []  # no dropdown values
    script_args[10] = True  # include the single images besides the grid
    body = {**BASE, "init_images": [rgb_b64(scene(4))], "denoising_strength": 0.9, "script_name": "x/y/z plot",
            "script_args": script_args}
    response = webui.post("/sdapi/v1/img2img", body)
    pictures = images_of(response)
    infotexts = json.loads(response.json()["info"])["infotexts"]
    assert any("Depth2Img gamma: 0.5" in t for t in infotexts) and any("Depth2Img gamma: 3.0" in t for t in infotexts)
    cells = [p for p in pictures if p.shape == (SIZE, SIZE, 3)]
    assert len(cells) >= 2 and np.abs(cells[0].astype(int) - cells[1].astype(int)).max() > 0
