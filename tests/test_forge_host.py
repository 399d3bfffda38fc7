"""The host adapter (depth2img.webui.host) and the script on Forge, against the WebUI stand-ins with Forge's package.

Forge keeps AUTOMATIC1111's script API but its model has no depth_model: the depth model is the selected
checkpoint, its MiDaS read from the file; the depth reaches the UNet through the same conditioning methods;
the canvases' pictures are hidden components after an HTML block. The live suite (tests/webui) runs the same
against a real Forge.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from depth2img.checkpoint.load import MIDAS_PREFIX, inspect_checkpoint, load_state_dict, load_tensors_under
from depth2img.condition.conditioning import depth_conditioning
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.webui import host as webui_host

from .test_script_wiring import FakeMidas, assert_stopped, img2img_p, run_job, ui_args
from .webui_standins import webui


@pytest.fixture(scope="module")
def reference_midas(tiny_checkpoint):
    """The checkpoint's MiDaS as the standalone engine loads it (the whole file), in float32."""
    return CheckpointMidasEstimator.from_checkpoint_state_dict(load_state_dict(tiny_checkpoint), dtype=torch.float32)


def source_and_latent(seed=0):
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(1, 3, 48, 64, generator=generator) * 2 - 1  # the WebUI's init image tensor, -1..1
    return source, torch.zeros(1, 4, 6, 8)


# ---- reading only the MiDaS from the file -----------------------------------------------------------------


def test_only_the_midas_tensors_are_read_from_a_safetensors_file(tiny_checkpoint):
    part = load_tensors_under(tiny_checkpoint, MIDAS_PREFIX)
    whole = load_state_dict(tiny_checkpoint)
    assert set(part) == {k for k in whole if k.startswith(MIDAS_PREFIX)}
    assert len(part) == inspect_checkpoint(tiny_checkpoint).midas_keys > 0
    key = sorted(part)[0]
    assert torch.equal(part[key], whole[key])


def test_only_the_midas_tensors_are_read_from_a_wrapped_ckpt(tmp_path):
    path = tmp_path / "depth.ckpt"
    midas_weight = torch.arange(6.0).reshape(2, 3)
    torch.save({"state_dict": {f"{MIDAS_PREFIX}a.weight": midas_weight, "model.x": torch.ones(2)}}, path)
    part = load_tensors_under(path, MIDAS_PREFIX)
    assert list(part) == [f"{MIDAS_PREFIX}a.weight"]
    assert torch.equal(part[f"{MIDAS_PREFIX}a.weight"], midas_weight)


# ---- the host's depth model and MiDaS ----------------------------------------------------------------------


def forge_host(selected, dtype=torch.float16):
    return webui_host.ForgeHost(lambda: selected, device=lambda: torch.device("cpu"), dtype=lambda: dtype)


def test_forge_runs_the_selected_checkpoints_midas_in_float32_on_the_cpu(tiny_checkpoint, reference_midas):
    host = forge_host(SimpleNamespace(filename=str(tiny_checkpoint), shorthash="abc"), dtype=torch.float16)
    assert host.has_depth_model()
    estimator = host.depth_estimator()
    _, device, dtype = estimator.runtime()
    assert (device.type, dtype) == ("cpu", torch.float32)  # fp16 MiDaS on a CPU: minutes per estimate
    assert estimator.cache_key == "checkpoint-midas:abc"  # as AUTOMATIC1111 keys its loaded model's
    assert host.depth_estimator() is estimator  # read from the file once, not per job
    source, _ = source_and_latent()
    np.testing.assert_allclose(estimator.estimate(source), reference_midas.estimate(source), rtol=1e-4, atol=1e-4)


def test_forge_reads_the_midas_again_when_the_file_changes_and_frees_it_for_another_model(tiny_checkpoint, tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(plain))
    selected = SimpleNamespace(filename=str(tiny_checkpoint), shorthash=None)
    host = forge_host(selected)
    first = host.depth_estimator()
    copy = tmp_path / "depth.safetensors"
    copy.write_bytes(tiny_checkpoint.read_bytes())
    selected.filename = str(copy)
    assert host.depth_estimator() is not first
    selected.filename = str(plain)
    assert not host.has_depth_model()
    assert host.depth_estimator() is None
    assert host._midas is None  # the depth model's MiDaS is not kept for a model without one


def test_automatic1111_uses_the_loaded_models_own_midas():
    midas = FakeMidas(SimpleNamespace(locked=lambda: False))
    model = SimpleNamespace(depth_model=midas, sd_checkpoint_info=SimpleNamespace(shorthash="h"), lowvram=False)
    host = webui_host.AutomaticHost(lambda: model, device=lambda: torch.device("cpu"))
    assert host.has_depth_model()
    assert host.depth_estimator().model is midas
    model.depth_model = None
    assert not host.has_depth_model()


# ---- the img2img canvases' pictures --------------------------------------------------------------------------


class HTML:  # the class names are what the recorder sees of gradio's components
    pass


class LogicalImage:
    pass


class Image:
    pass


def test_forge_canvas_pictures_are_the_hidden_component_after_the_named_html_block():
    seen = webui_host.InitImageComponents()
    components, strokes = {}, {}
    for elem_id in ("img2img_image", "img2img_sketch", "img2maskimg"):
        seen.saw(HTML(), elem_id, None)
        strokes[elem_id] = LogicalImage()
        seen.saw(strokes[elem_id], "uuid_1", ["logical_image_foreground"])
        components[elem_id] = LogicalImage()
        seen.saw(components[elem_id], "uuid_1", ["logical_image_background"])
    components["img_inpaint_base"] = Image()  # Forge's "Inpaint upload" tab keeps a plain image
    seen.saw(components["img_inpaint_base"], "img_inpaint_base", None)
    seen.saw(LogicalImage(), "uuid_9", ["logical_image_foreground"])  # another canvas: no init image
    seen.saw(LogicalImage(), "uuid_9", ["logical_image_background"])
    assert seen.by_id == components
    # The strokes of a sketch canvas are part of its init image; the inpaint canvas's are its mask.
    assert seen.strokes_by_id == {"img2img_sketch": strokes["img2img_sketch"]}


def test_the_preview_lays_a_sketch_canvas_strokes_over_its_picture():
    from PIL import Image as PILImage

    from depth2img.webui.init_image import INIT_IMAGE_ELEM_IDS, pick_init_image

    picture = PILImage.new("RGB", (8, 6), (10, 20, 30))
    strokes = PILImage.new("RGBA", (8, 6), (0, 0, 0, 0))
    strokes.putpixel((2, 3), (255, 0, 0, 255))
    sketch = INIT_IMAGE_ELEM_IDS.index("img2img_sketch")
    shown = pick_init_image(sketch, {"img2img_sketch": picture}, {"img2img_sketch": strokes})
    assert shown.convert("RGB").getpixel((2, 3)) == (255, 0, 0)
    assert shown.convert("RGB").getpixel((5, 1)) == (10, 20, 30)
    assert pick_init_image(sketch, {"img2img_sketch": picture}, {"img2img_sketch": None}) is picture
    assert pick_init_image(sketch, {"img2img_sketch": picture}) is picture  # AUTOMATIC1111: strokes are in it


def test_automatic1111_init_images_are_the_components_with_the_ids():
    seen = webui_host.InitImageComponents()
    image = Image()
    seen.saw(image, "img2img_image", "some-class")
    seen.saw(Image(), "txt2img_prompt", None)
    assert seen.by_id == {"img2img_image": image}


# ---- the script on Forge -------------------------------------------------------------------------------------


@pytest.fixture
def forge(tiny_checkpoint):
    with webui("1.10.1", forge=True) as env:
        env.script = env.load_script()
        info = env.sd_models.CheckpointInfo(str(tiny_checkpoint))
        info.register()
        env.depth_title = info.title
        env.shared.opts.data["sd_model_checkpoint"] = info.title
        # Forge's model object: the UNet, VAE and text encoder only (no depth_model), loaded inside the job.
        env.shared.sd_model = SimpleNamespace(sd_checkpoint_info=info, filename=str(tiny_checkpoint))
        env.script.CACHE.clear()
        yield env


def test_the_script_finds_forge():
    with webui("1.10.1", forge=True) as env:
        assert isinstance(env.load_script().HOST, webui_host.ForgeHost)
    with webui("1.10.1") as env:
        assert isinstance(env.load_script().HOST, webui_host.AutomaticHost)


def test_on_forge_an_img2img_job_is_conditioned_on_the_checkpoints_midas(forge, reference_midas):
    p = img2img_p(forge)
    _, runner = run_job(forge, p, ui_args(enabled=True, return_depth=False))
    assert runner.job_error is None, runner.job_error
    source, latent = source_and_latent(1)
    got = p.img2img_image_conditioning(source, latent)
    expected = depth_conditioning(reference_midas.estimate(source), (6, 8), device=latent.device, dtype=latent.dtype)
    assert got.shape == (1, 1, 6, 8)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


def test_on_forge_a_depth_model_always_runs_through_the_extension(forge):
    forge.shared.opts.data["depth2img_takeover"] = False  # AUTOMATIC1111's native path would run; Forge has none
    p = img2img_p(forge)
    run_job(forge, p, ui_args())
    source, latent = source_and_latent()
    assert not (p.img2img_image_conditioning(source, latent) == 7.0).all()  # 7.0: the stand-in's native conditioning


def test_on_forge_a_selected_model_without_depth_stops_an_enabled_job(forge, tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain-sd2.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(plain))
    info = forge.sd_models.CheckpointInfo(str(plain))
    info.register()
    forge.shared.opts.data["sd_model_checkpoint"] = info.title
    p = img2img_p(forge)
    _, runner = run_job(forge, p, ui_args(enabled=True))
    assert_stopped(p, runner, "not an SD 2 depth model")


def test_on_forge_the_panels_depth_checkpoint_is_chosen_for_the_job_from_the_selected_one(forge, tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain-sd2.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(plain))
    info = forge.sd_models.CheckpointInfo(str(plain))
    info.register()
    forge.shared.opts.data["sd_model_checkpoint"] = info.title  # Forge loads the model later, in the job
    p = img2img_p(forge)
    _, runner = run_job(forge, p, ui_args(enabled=True, checkpoint=forge.depth_title))
    assert runner.job_error is None, runner.job_error
    assert p.override_settings["sd_model_checkpoint"] == forge.depth_title
    source, latent = source_and_latent()
    assert p.img2img_image_conditioning(source, latent).shape == (1, 1, 6, 8)
