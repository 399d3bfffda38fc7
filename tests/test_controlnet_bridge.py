"""ControlNet's depth preprocessors as estimators (depth2img.estimate.controlnet), against a stand-in of ControlNet's
preprocessor registry (tests/webui_standins/controlnet); the live suite runs the real extension."""

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


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_LOADED", {})
    return standin.installed(monkeypatch)


def test_without_controlnet_nothing_is_listed_and_asking_for_one_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, standin.MODULE_NAME, raising=False)
    assert all(info.source != "controlnet" for info in registry_module.list_estimators())
    for ask in (registry_module.get_estimator_info, registry_module.create_estimator):
        with pytest.raises(ValueError, match="sd-webui-controlnet extension, which is not loaded"):
            ask("controlnet:depth_midas")


def test_its_scene_depth_preprocessors_are_listed_as_inverse_controlnet_estimators(registry):
    listed = {info.name: info for info in registry_module.list_estimators() if info.source == "controlnet"}
    # depth_hand_refiner is depth-tagged but no scene depth; canny is no depth at all
    assert sorted(listed) == ["controlnet:depth_leres", "controlnet:depth_midas"]
    assert all(info.available and info.kind == "inverse" for info in listed.values())
    entry = next(e for e in estimators_response(None) if e["name"] == "controlnet:depth_midas")
    assert entry == {"name": "controlnet:depth_midas", "label": "ControlNet depth_midas", "kind": "inverse",
                     "source": "controlnet", "available": True, "reason": ""}
    with pytest.raises(ValueError, match="no depth preprocessor 'canny'.*controlnet:depth_leres"):
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
    assert controlnet_bridge.job_resolution(preprocessor, 4000, 3000) == 2048


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
    with pytest.raises(RuntimeError, match="ControlNet's depth_midas returned float32"):
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
