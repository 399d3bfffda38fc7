"""ControlNet's depth preprocessors as estimators (depth2img.estimate.controlnet), against stand-ins of the
sd-webui-controlnet extension's preprocessor registry (tests/webui_standins/controlnet) and of Forge's built-in one
(tests/webui_standins/forge_controlnet.py); the live suite runs the real ones."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.estimate import controlnet as controlnet_bridge
from depth2img.estimate import registry as registry_module
from depth2img.webui.routes import estimators_response
from tests.webui_standins import controlnet as standin
from tests.webui_standins import forge_controlnet as forge_standin


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_LOADED", {})
    return standin.installed(monkeypatch)


def test_without_controlnet_nothing_is_listed_and_asking_for_one_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, standin.MODULE_NAME, raising=False)
    monkeypatch.delitem(sys.modules, forge_standin.MODULE_NAME, raising=False)
    assert all(info.source != "controlnet" for info in registry_module.list_estimators())
    for ask in (registry_module.get_estimator_info, registry_module.create_estimator):
        with pytest.raises(ValueError, match="sd-webui-controlnet extension, which is not loaded"):
            ask("controlnet:depth_midas")


# Both registries: depth_hand_refiner is depth-tagged but no scene depth; canny (and on Forge normal_midas and
# None) is no depth at all. Forge's has depth_marigold besides.
@pytest.mark.parametrize("host, names, unknown_message", [
    ("registry", ["depth_leres", "depth_midas"], "no depth preprocessor 'canny'.*controlnet:depth_leres"),
    ("forge", ["depth_leres", "depth_marigold", "depth_midas"],
     "Forge's built-in ControlNet has no depth preprocessor 'canny'.*depth_leres"),
], ids=["sd-webui-controlnet", "forge"])
def test_its_scene_depth_preprocessors_are_listed_as_inverse_controlnet_estimators(request, host, names,
                                                                                   unknown_message):
    request.getfixturevalue(host)
    listed = {info.name: info for info in registry_module.list_estimators() if info.source == "controlnet"}
    assert sorted(listed) == [f"controlnet:{name}" for name in names]
    assert all(info.available and info.kind == "inverse" for info in listed.values())
    entry = next(e for e in estimators_response(None) if e["name"] == "controlnet:depth_midas")
    assert entry == {"name": "controlnet:depth_midas", "label": "ControlNet depth_midas", "kind": "inverse",
                     "source": "controlnet", "available": True, "reason": ""}
    with pytest.raises(ValueError, match=unknown_message):
        registry_module.get_estimator_info("controlnet:canny")


def test_estimate_calls_the_preprocessor_as_its_detect_route_does_at_the_jobs_resolution(registry):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 72, 120) * 2 - 1  # the WebUI's [-1, 1]
    estimator = registry_module.create_estimator("controlnet:depth_leres")
    depth = estimator.estimate(images)

    preprocessor = registry.get_preprocessor("depth_leres")
    rgb = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert len(preprocessor.calls) == 2
    for call, expected_rgb in zip(preprocessor.calls, rgb, strict=True):
        assert np.array_equal(call["image"], expected_rgb)  # the 8-bit RGB picture the WebUI made the tensor from
        assert call["resolution"] == 72  # the short side: the map comes back at the image's size
        assert (call["slider_1"], call["slider_2"]) == (0, 0)  # its own defaults, as the detect route sends
    # Its 8-bit output (white = near) read as inverse depth in [0, 1]; the stand-in's "network" is the red channel.
    assert depth.dtype == torch.float32 and depth.shape == (2, 72, 120)
    assert torch.equal(depth, torch.from_numpy(rgb[..., 0].astype(np.float32) / 255))


def test_pil_input_and_the_resolution_kept_within_its_slider(registry):
    picture = Image.fromarray(np.full((40, 30, 3), (200, 10, 10), np.uint8))
    depth = registry_module.create_estimator("controlnet:depth_midas").estimate(picture)
    preprocessor = registry.get_preprocessor("depth_midas")
    assert preprocessor.calls[0]["resolution"] == 64  # ControlNet's minimum: the map comes back larger
    assert depth.shape == (1, 85, 64) and torch.allclose(depth, torch.tensor(200 / 255), atol=1 / 255)
    assert registry_module.create_estimator("controlnet:depth_midas").job_resolution(4000, 3000) == 2048


def test_release_asks_controlnet_to_unload_and_the_estimator_is_built_once(registry):
    estimator = registry_module.create_estimator("controlnet:depth_midas")
    assert registry_module.create_estimator("controlnet:depth_midas") is estimator
    estimator.estimate(torch.zeros(1, 3, 64, 64))
    preprocessor = registry.get_preprocessor("depth_midas")
    assert preprocessor.loaded
    registry_module.release_estimators()
    assert not preprocessor.loaded and preprocessor.unloads == 1


def test_an_output_that_is_no_8bit_map_is_an_error_naming_the_preprocessor(registry, monkeypatch):
    preprocessor = registry.get_preprocessor("depth_midas")
    monkeypatch.setattr(preprocessor, "cached_call", lambda image, **kw: np.zeros(image.shape[:2], np.float32))
    with pytest.raises(RuntimeError, match="the depth_midas preprocessor of ControlNet returned float32"):
        registry_module.create_estimator("controlnet:depth_midas").estimate(torch.zeros(1, 3, 64, 64))


def test_the_cache_key_changes_when_controlnet_reloads_its_model(registry, monkeypatch):
    # Issue 15.6: keyed by name alone, maps of a model ControlNet had since reloaded were served from the cache.
    from depth2img.estimate.cache import DepthCache

    estimator = registry_module.create_estimator("controlnet:depth_midas")
    image = torch.rand(1, 3, 32, 48) * 2 - 1
    cache = DepthCache()
    cache.estimate(estimator, image)
    keys = [estimator.cache_key]
    estimator.release()  # ControlNet unloads it: the next call loads it again
    keys.append(estimator.cache_key)
    estimator.preprocessor.model = object()  # a preprocessor that keeps its model loaded another one
    keys.append(estimator.cache_key)
    standin.installed(monkeypatch)  # ControlNet's scripts reloaded: new preprocessor objects
    reloaded = registry_module.create_estimator("controlnet:depth_midas")
    keys.append(reloaded.cache_key)
    assert len(set(keys)) == 4 and all(key.startswith("controlnet:depth_midas:") for key in keys)
    cache.estimate(reloaded, image)
    assert cache.estimator_calls == 2
    assert registry_module.create_estimator("controlnet:depth_midas").cache_key == keys[-1]  # stable while unchanged


# ---- Forge's built-in ControlNet ------------------------------------------------------------------------------


@pytest.fixture
def forge(monkeypatch):
    monkeypatch.setattr(registry_module, "_LOADED", {})
    return forge_standin.installed(monkeypatch)


def test_forge_estimate_calls_the_preprocessor_as_its_controlnet_does_at_the_jobs_resolution(forge):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 136, 200) * 2 - 1  # the WebUI's [-1, 1]
    depth = registry_module.create_estimator("controlnet:depth_leres").estimate(images)

    annotator = forge["depth_leres"].annotator
    rgb = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert len(annotator.calls) == 2
    for call, expected_rgb in zip(annotator.calls, rgb, strict=True):
        assert np.array_equal(call["image"], expected_rgb)  # the 8-bit RGB picture the WebUI made the tensor from
        assert call["resolution"] == 136  # the short side: the map comes back at the image's size
        # Its sliders' defaults (Remove Near / Background 0%), as a unit that leaves them alone gets them; not the
        # 64 Forge's detect route sends unless told.
        assert (call["slider_1"], call["slider_2"]) == (0, 0)
    # Its HWC3 uint8 output (white = near) read as inverse depth in [0, 1]; the stand-in's "network" is the red
    # channel.
    assert depth.dtype == torch.float32 and depth.shape == (2, 136, 200)
    assert torch.equal(depth, torch.from_numpy(rgb[..., 0].astype(np.float32) / 255))

    registry_module.create_estimator("controlnet:depth_marigold").estimate(images[:1])
    call = forge["depth_marigold"].calls[0]
    assert (call["resolution"], call["slider_1"], call["slider_2"]) == (136, 0.5, 0.5)  # hidden sliders' values


def test_forge_the_resolution_is_kept_within_the_slider_its_ui_shows(forge):
    # A legacy preprocessor keeps its own range (64..2048) as `resolution`; Forge's UI offers its slider_resolution
    # (the base 128..2048).
    picture = Image.fromarray(np.full((40, 30, 3), (200, 10, 10), np.uint8))
    estimator = registry_module.create_estimator("controlnet:depth_midas")
    depth = estimator.estimate(picture)
    assert forge["depth_midas"].annotator.calls[0]["resolution"] == 128  # the map comes back larger
    assert depth.shape == (1, 171, 128) and torch.allclose(depth, torch.tensor(200 / 255), atol=1 / 255)
    assert estimator.job_resolution(4000, 3000) == 2048


def test_forge_release_unloads_a_legacy_preprocessor_and_the_cache_key_follows_its_model(forge):
    legacy = registry_module.create_estimator("controlnet:depth_midas")
    assert registry_module.create_estimator("controlnet:depth_midas") is legacy
    legacy.estimate(torch.zeros(1, 3, 128, 128))
    annotator = forge["depth_midas"].annotator
    assert annotator.unloads == 1  # Forge unloads a legacy preprocessor after every call
    key = legacy.cache_key
    annotator.on_device = True
    registry_module.release_estimators()
    assert annotator.unloads == 2 and not annotator.on_device
    assert legacy.cache_key == key  # its unload only moves the model: the same one comes back

    patched = registry_module.create_estimator("controlnet:depth_marigold")
    before = patched.cache_key
    patched.estimate(torch.zeros(1, 3, 128, 128))  # sets up its model patcher
    loaded = patched.cache_key
    patched.release()  # nothing to free: Forge's memory management owns it
    assert patched.cache_key == loaded != before
    forge["depth_marigold"].model_patcher = object()  # Forge set up another model
    assert patched.cache_key not in (before, loaded)
    assert all(key.startswith("controlnet:depth_marigold:") for key in (before, loaded))


def test_forge_an_output_that_is_no_8bit_map_is_an_error_naming_the_preprocessor(forge, monkeypatch):
    preprocessor = forge["depth_midas"]
    monkeypatch.setattr(preprocessor, "call_function", lambda img, res, **kw: (img[..., 0] / 255.0, False))
    with pytest.raises(RuntimeError, match="depth_midas preprocessor of Forge's built-in ControlNet returned float64"):
        registry_module.create_estimator("controlnet:depth_midas").estimate(torch.zeros(1, 3, 128, 128))


def test_forge_without_its_depth_preprocessors_asking_for_one_says_where_they_come_from(forge):
    for name in ("depth_midas", "depth_leres", "depth_hand_refiner", "depth_marigold"):
        del forge[name]
    assert controlnet_bridge.estimator_names() == []
    assert all(info.source != "controlnet" for info in registry_module.list_estimators())
    with pytest.raises(ValueError, match="depth preprocessors: none .*forge_legacy_preprocessors"):
        registry_module.create_estimator("controlnet:depth_midas")
