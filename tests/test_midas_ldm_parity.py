"""Parity of depth2img.estimate.midas with Stability's ldm MiDaS (environment b: the `ldm` package is installed).

ldm's architecture is fixed, so this builds the full-size DPT-Hybrid (~123M parameters) once per module:
ldm's own `MiDaSInference("dpt_hybrid")` (what LatentDepth2ImageDiffusion holds as `depth_model`), with
ISL_PATHS patched so nothing is loaded, then seeded weights written into it through hf_to_ldm_state_dict
(loaded with strict=True). Our model is loaded from that checkpoint-layout state dict.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from tests.references import reference  # noqa: E402

reference("ldm")

from depth2img.estimate import midas  # noqa: E402
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator  # noqa: E402

pytestmark = [pytest.mark.ldm, pytest.mark.slow]

REL_TOL = 1e-5


def scene(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1]: gradients and boxes plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    img = torch.stack([xx, yy, torch.sin(6 * xx) * torch.cos(4 * yy)])
    img[:, height // 4 : height // 2, width // 8 : width // 2] = 0.8
    img = img + 0.1 * torch.randn(img.shape, generator=gen)
    return img.clamp(-1, 1).unsqueeze(0)


@pytest.fixture(scope="module")
def models():
    """(ldm MiDaSInference, our DPTForDepthEstimation, checkpoint-layout state dict), same weights."""
    from ldm.modules.midas import api

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(api.ISL_PATHS, "dpt_hybrid", None)  # DPTDepthModel(path=None): no file is read
        torch.manual_seed(0)
        depth_model = api.MiDaSInference(model_type="dpt_hybrid").eval()
    hf = midas.randomize_for_fixture(transformers.DPTForDepthEstimation(midas.dpt_hybrid_config()), seed=0)
    original_head = {k: v for k, v in depth_model.model.state_dict().items() if k in midas.LDM_ONLY_KEYS}
    ldm_sd = midas.hf_to_ldm_state_dict(hf.state_dict(), ldm_only=original_head)
    depth_model.model.load_state_dict(ldm_sd, strict=True)
    # What a depth checkpoint holds: LatentDepth2ImageDiffusion.depth_model = MiDaSInference.
    checkpoint = {f"depth_model.{k}": v for k, v in depth_model.state_dict().items()}
    ours = midas.load_midas_from_state_dict(checkpoint)
    del hf
    return depth_model, ours, checkpoint


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_checkpoint_layout(models):
    depth_model, _, checkpoint = models
    assert len(checkpoint) == 368
    assert all(k.startswith(midas.MIDAS_PREFIX) for k in checkpoint)
    assert "depth_model.model.pretrained.model.patch_embed.backbone.stem.conv.weight" in checkpoint
    # the inverse map reproduces every tensor ldm holds (the original timm head passed through)
    ldm_sd = depth_model.model.state_dict()
    back = midas.hf_to_ldm_state_dict(
        midas.ldm_to_hf_state_dict(ldm_sd), ldm_only={k: ldm_sd[k] for k in midas.LDM_ONLY_KEYS}
    )
    assert set(back) == set(ldm_sd) and all(torch.equal(back[k], ldm_sd[k]) for k in ldm_sd)


def test_zero_head_loads_strictly_and_changes_no_depth(models):
    """Without the original timm head, hf_to_ldm writes zeros: ldm still loads strictly, depth unchanged."""
    depth_model, ours, _ = models
    zero_head = midas.hf_to_ldm_state_dict(ours.state_dict())
    assert not zero_head["pretrained.model.head.weight"].any()
    from ldm.modules.midas.midas.dpt_depth import DPTDepthModel

    torch.manual_seed(1)
    other = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True).eval()
    other.load_state_dict(zero_head, strict=True)
    x = scene(64, 96)
    with torch.no_grad():
        assert torch.equal(other(x), depth_model.model(x))


@pytest.mark.parametrize("size", [(384, 384), (384, 512), (320, 448)])
def test_forward_matches_ldm(models, size):
    depth_model, ours, _ = models
    x = scene(*size)
    with torch.no_grad():
        reference = depth_model.model(x)
    depth = midas.predict_depth(ours, x)
    assert depth.shape == reference.shape == (1, *size)
    assert reference.std() > 0.01 * reference.abs().max()  # not a constant map
    assert rel_diff(depth, reference) <= REL_TOL


@pytest.mark.parametrize("size", [(512, 512), (300, 500), (480, 640), (768, 512), (100, 90)])
def test_preprocess_matches_addmidas(size):
    from ldm.data.util import AddMiDaS

    img = scene(*size)[0]
    # As the WebUI calls it: one image, HWC, in [-1, 1].
    reference = AddMiDaS(model_type="dpt_hybrid")({"jpg": img.permute(1, 2, 0)})["midas_in"]
    ours = midas.preprocess(img[None])[0].numpy()
    assert ours.dtype == reference.dtype == np.float32
    assert ours.shape == reference.shape
    assert np.array_equal(ours, reference)


def test_addmidas_rejects_float16_and_ours_does_not():
    """The real-user bug: OpenCV has no float16 resize; AddMiDaS hands it the tensor's dtype."""
    import cv2
    from ldm.data.util import AddMiDaS

    img = scene(300, 500)[0].half()
    with pytest.raises(cv2.error):
        AddMiDaS(model_type="dpt_hybrid")({"jpg": img.permute(1, 2, 0)})
    ours = midas.preprocess(img[None])
    reference = AddMiDaS(model_type="dpt_hybrid")({"jpg": img.float().permute(1, 2, 0)})["midas_in"]
    assert np.array_equal(ours[0].numpy(), reference)


def test_estimator_matches_webui_flow(models):
    """WebUI (processing.py depth2img_image_conditioning): AddMiDaS -> sd_model.depth_model(midas_in)."""
    from ldm.data.util import AddMiDaS

    depth_model, ours, _ = models
    image = scene(300, 500, seed=3)
    midas_in = AddMiDaS(model_type="dpt_hybrid")({"jpg": image[0].permute(1, 2, 0)})["midas_in"]
    reference = depth_model(torch.from_numpy(midas_in)[None])[:, 0]  # [1, 1, h, w] -> [1, h, w]
    depth = CheckpointMidasEstimator(ours).estimate(image)
    assert depth.shape == reference.shape == (1, 224, 384)
    assert rel_diff(depth, reference) <= REL_TOL
