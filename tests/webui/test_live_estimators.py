"""Depth from anywhere (issue 8), over HTTP against a real WebUI: a model-folder estimator, the ControlNet
extension's depth preprocessors, EXR uploads.

Set-up: `python -m tests.webui.prepare WEBUI_DIR` writes the folder estimator (models/depth/tiny-dpt). The
ControlNet tests run where the WebUI has ControlNet's depth preprocessors with their annotator weights (skipped
otherwise): AUTOMATIC1111 with the sd-webui-controlnet extension, or Forge (its built-in ControlNet). Forge's
depth_midas and depth_leres read models/ControlNetPreprocessor/midas/dpt_hybrid-midas-501f0c75.pt and
models/ControlNetPreprocessor/leres/res101.pth (random weights of those architectures will do).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from .conftest import decode, rgb_b64
from .test_live_api import SIZE, depth_args, images_of, img2img, scene

FOLDER_ESTIMATOR = "tiny-dpt"  # tests/webui/prepare.py


def listed(webui) -> dict[str, dict]:
    return {entry["name"]: entry for entry in webui.get("/depth2img/v1/estimators").json()}


def estimate(webui, **body) -> dict:
    response = webui.post("/depth2img/v1/estimate", body)
    assert response.status_code == 200, response.text[:2000]
    return response.json()


def unit(depth16: np.ndarray) -> np.ndarray:
    return depth16.astype(np.float64) / 65535


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def job_depth(webui, image, estimator: str) -> tuple[np.ndarray, dict]:
    """The 16-bit depth map an img2img job used with `estimator` (return_depth), and the job's info."""
    response = img2img(webui, image, depth_args(enabled=True, estimator=estimator, return_depth=True))
    *_, depth = images_of(response)
    return depth, json.loads(response.json()["info"])


def test_every_estimator_says_its_kind_and_source(webui):
    entries = listed(webui)
    for entry in entries.values():
        assert set(entry) == {"name", "label", "kind", "source", "available", "reason"}
        assert entry["source"] in ("checkpoint", "folder", "controlnet")
    midas = entries["checkpoint-midas"]
    assert (midas["kind"], midas["source"], midas["available"]) == ("inverse", "checkpoint", True)


@pytest.fixture
def folder_estimator(webui):
    entry = listed(webui).get(FOLDER_ESTIMATOR)
    if entry is None:
        pytest.skip(f"the WebUI has no models/depth/{FOLDER_ESTIMATOR}: run python -m tests.webui.prepare WEBUI_DIR")
    assert (entry["source"], entry["kind"], entry["available"]) == ("folder", "inverse", True), entry
    return FOLDER_ESTIMATOR


def test_a_folder_estimator_estimates_and_a_job_uses_it(webui, folder_estimator):
    image = scene(21)
    ours = unit(decode(estimate(webui, image=rgb_b64(image), estimator=folder_estimator)["depth"]))
    midas = unit(decode(estimate(webui, image=rgb_b64(image))["depth"]))
    assert ours.shape == midas.shape == (SIZE, SIZE) and ours.std() > 0
    assert correlation(ours, midas) < 0.99  # another network than the checkpoint's MiDaS
    depth, info = job_depth(webui, image, folder_estimator)
    assert info["extra_generation_params"]["Depth2Img estimator"] == folder_estimator
    # The job's map is the one the route gives for the same picture (both min-max over 16 bits).
    assert np.abs(unit(depth) - ours).max() < 0.01


@pytest.fixture
def controlnet(webui):
    names = [name for name, entry in listed(webui).items() if entry["source"] == "controlnet"]
    if not names:
        if webui.is_forge:
            pytest.skip("no depth preprocessors of Forge's built-in ControlNet are listed (this extension from "
                        "before its Forge bridge, or Forge's forge_legacy_preprocessors disabled)")
        pytest.skip("the WebUI has no sd-webui-controlnet extension: its depth preprocessors are not listed")
    return names


def controlnet_detect(webui, preprocessor: str, image, resolution: int, sliders=(0, 0)) -> np.ndarray:
    """ControlNet's own /controlnet/detect map of `image` (the same route in sd-webui-controlnet and Forge)."""
    response = webui.post("/controlnet/detect", {
        "controlnet_module": preprocessor, "controlnet_input_images": [rgb_b64(image)],
        "controlnet_processor_res": resolution, "controlnet_threshold_a": sliders[0],
        "controlnet_threshold_b": sliders[1]})
    assert response.status_code == 200, response.text[:2000]
    (picture,) = response.json()["images"]
    return decode(picture)


def controlnet_preprocessor(webui, controlnet, preprocessor: str) -> str:
    """`controlnet:<preprocessor>` where it is listed and ControlNet itself can run it (it has the weights);
    skips otherwise."""
    name = f"controlnet:{preprocessor}"
    if name not in controlnet:
        pytest.skip(f"this WebUI's ControlNet has no {preprocessor} (it lists {', '.join(controlnet)})")
    try:
        controlnet_detect(webui, preprocessor, scene(22), 64)
    except AssertionError as error:  # no weights and no network, most often
        pytest.skip(f"ControlNet's own /controlnet/detect cannot run {preprocessor} here: {str(error)[:300]}")
    return name


@pytest.mark.parametrize("preprocessor", ["depth_midas", "depth_leres"])
def test_a_controlnet_preprocessor_estimates_and_a_job_uses_it(webui, controlnet, preprocessor):
    name = controlnet_preprocessor(webui, controlnet, preprocessor)
    entry = listed(webui)[name]
    assert (entry["kind"], entry["available"]) == ("inverse", True)
    image = scene(22)
    answer = estimate(webui, image=rgb_b64(image), estimator=name)
    ours = unit(decode(answer["depth"]))
    assert ours.shape == (SIZE, SIZE) and answer["max"] > answer["min"]
    depth, info = job_depth(webui, image, name)
    assert info["extra_generation_params"]["Depth2Img estimator"] == name
    assert np.abs(unit(depth) - ours).max() < 0.01


@pytest.fixture
def forge_only(webui):
    if not webui.is_forge:
        pytest.skip("Forge only: it compares with Forge's ControlNet at its resolution slider's minimum (128)")


@pytest.mark.parametrize("preprocessor", ["depth_midas", "depth_leres"])
def test_forge_a_controlnet_preprocessor_gives_forges_own_detect_map(webui, forge_only, controlnet, preprocessor):
    """On Forge the bridge calls the preprocessor as Forge's ControlNet does: the route's map is Forge's own
    /controlnet/detect map at the job's resolution (the picture's short side, 64, raised to the 128 minimum of the
    resolution slider Forge shows) with the sliders at their defaults (0 and 0: depth_leres' Remove Near /
    Background %; depth_midas takes none), read as white = near and resized to the picture."""
    from depth2img.webui.routes import estimate_response

    name = controlnet_preprocessor(webui, controlnet, preprocessor)
    image = scene(23)
    detected = controlnet_detect(webui, preprocessor, image, 128)
    assert detected.dtype == np.uint8 and detected.shape == (128, 128, 3)  # HWC3, at the resolution asked
    expected = decode(estimate_response(detected[..., 0].astype(np.float32) / 255, size=image.size)["depth"])
    got = decode(estimate(webui, image=rgb_b64(image), estimator=name)["depth"])
    assert got.shape == expected.shape == (SIZE, SIZE)
    assert np.abs(unit(got) - unit(expected)).max() < 0.01


# ---- EXR ------------------------------------------------------------------------------------------------------


def blender_exr(distance: np.ndarray) -> str:
    """A Blender multilayer EXR (float32 ViewLayer.Depth.Z, colour beside it), base64."""
    import tempfile
    from pathlib import Path

    OpenEXR = pytest.importorskip("OpenEXR")
    rng = np.random.default_rng(0)
    channels = {f"ViewLayer.Combined.{c}": rng.random(distance.shape, dtype=np.float32) for c in "RGBA"}
    channels["ViewLayer.Depth.Z"] = distance.astype(np.float32)
    header = {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "render.exr"
        OpenEXR.File(header, channels).write(str(path))
        return base64.b64encode(path.read_bytes()).decode()


def exr_scene() -> tuple[np.ndarray, np.ndarray]:
    """Distances 2..8 (a floor), a box at 3, the top right corner background (Blender's 1e10): the file's values
    and the inverse depth expected from them (1/d; background at the farthest rendered distance), min-max."""
    distance = np.repeat(np.linspace(8.0, 2.0, SIZE, dtype=np.float32)[:, None], SIZE, axis=1)
    distance[30:50, 10:30] = 3.0
    background = np.zeros_like(distance, bool)
    background[:12, 40:] = True
    inverse = np.where(background, 1.0 / distance[~background].max(), 1.0 / distance)
    return np.where(background, np.float32(1e10), distance), (inverse - inverse.min()) / np.ptp(inverse)


def test_an_exr_z_pass_is_read_as_inverse_depth_by_the_route_and_a_job(webui):
    distance, expected = exr_scene()
    exr = blender_exr(distance)
    answer = estimate(webui, depth_image=exr)  # "auto": an EXR holds distances
    assert answer["notice"] == "" and (answer["width"], answer["height"]) == (SIZE, SIZE)
    assert np.abs(unit(decode(answer["depth"])) - expected).max() < 1e-4  # 16-bit rounding
    args = depth_args(enabled=True, source="upload", depth_image=exr, return_depth=True)
    response = img2img(webui, scene(), args)
    *_, used = images_of(response)
    assert np.abs(unit(used) - expected).max() < 1e-4  # same size: nothing resized


def test_a_normalized_distance_map_without_its_range_comes_with_a_notice(webui):
    mist = np.tile(np.linspace(0, 65535, SIZE), (SIZE, 1)).astype(np.uint16)  # 0 = near .. 1 = far
    from .conftest import png_b64

    answer = estimate(webui, depth_image=png_b64(mist), depth_kind="distance")
    assert "approximate" in answer["notice"]
    exact = estimate(webui, depth_image=png_b64(mist), depth_kind="distance", distance_range=[1, 4])
    assert exact["notice"] == ""
    inverse = 1 / (1 + mist[0].astype(np.float64) / 65535 * 3)
    assert np.abs(unit(decode(exact["depth"]))[0] - (inverse - inverse.min()) / np.ptp(inverse)).max() < 1e-4
    response = img2img(webui, scene(), depth_args(enabled=True, source="upload", depth_image=png_b64(mist),
                                                  depth_kind="distance"))
    images_of(response)
    info = json.loads(response.json()["info"])
    assert "approximate" in info["extra_generation_params"]["Depth2Img notice"]
    assert "approximate" not in info["infotexts"][0]  # the notice is no setting: not in the PNG info


def test_checkpoint_midas_estimates_as_the_checkpoints_own_midas(webui):
    """The route's checkpoint-midas map is the depth checkpoint's MiDaS on the same picture: computed here from the
    fixture file tests.webui.prepare copied into the WebUI (AUTOMATIC1111 runs ldm's MiDaS module of the loaded
    model; Forge drops it and the extension reads it from the file)."""
    from depth2img.base.paths import cache_dir
    from depth2img.checkpoint.load import load_state_dict
    from depth2img.estimate.cache import DepthCache
    from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
    from depth2img.webui.job import estimate_image
    from depth2img.webui.routes import estimate_response

    fixture = cache_dir() / "fixtures" / f"{webui.depth_model}.safetensors"
    reference = CheckpointMidasEstimator.from_checkpoint_state_dict(load_state_dict(fixture), dtype=torch.float32)
    image = scene(12)
    depth = estimate_image(reference, DepthCache(), image, "#ffffff")
    expected = decode(estimate_response(depth, size=image.size)["depth"])
    got = decode(estimate(webui, image=rgb_b64(image), estimator="checkpoint-midas")["depth"])
    assert got.shape == expected.shape == (SIZE, SIZE)
    # ldm's MiDaS against transformers' DPT on the same weights: equal up to float rounding (a few 16-bit levels).
    difference = np.abs(unit(got) - unit(expected))
    assert difference.max() < 0.01 and difference.mean() < 0.002, (difference.max(), difference.mean())
    assert correlation(got, expected) > 0.999
