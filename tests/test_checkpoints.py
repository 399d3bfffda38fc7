import collections

import pytest
import torch
from safetensors.torch import save_file

from depth2img.checkpoints import (
    CheckpointError,
    config_path_for,
    inspect_checkpoint,
    load_state_dict,
    require_depth_checkpoint,
)
from depth2img.paths import SHIPPED_DEPTH_CONFIG


def fake_state(in_channels=5, midas=True, dtype=torch.float32, ema=False):
    state = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, in_channels, 3, 3, dtype=dtype),
        "first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3, dtype=dtype),
    }
    if midas:
        state["depth_model.model.scratch.output_conv.0.weight"] = torch.zeros(2, 2, 3, 3, dtype=dtype)
        state["depth_model.model.pretrained.model.cls_token"] = torch.zeros(1, 1, 4, dtype=dtype)
    if ema:
        state["model_ema.decay"] = torch.tensor(0.999)
    return state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("wrapped", [False, True])
def test_ckpt_identified_with_or_without_wrapper(tmp_path, dtype, wrapped):
    state = fake_state(dtype=dtype, ema=True)
    path = tmp_path / "depth.ckpt"
    torch.save({"state_dict": state, "global_step": 123} if wrapped else state, path)
    info = inspect_checkpoint(path)
    assert info.is_depth_model and info.unet_in_channels == 5 and info.midas_keys == 2
    assert info.wrapped is wrapped and info.has_ema and info.format == "ckpt"
    assert str(dtype).replace("torch.", "") in info.dtype
    assert set(load_state_dict(path)) == set(state)


def test_safetensors_identified_from_header(tmp_path):
    path = tmp_path / "depth.safetensors"
    save_file(fake_state(dtype=torch.float16), str(path))
    info = inspect_checkpoint(path)
    assert info.is_depth_model and info.format == "safetensors" and info.dtype == "float16"
    assert "SD 2 depth checkpoint" in info.summary()


def test_non_depth_checkpoints_say_why(tmp_path):
    path = tmp_path / "sd21.safetensors"
    save_file(fake_state(in_channels=4, midas=False), str(path))
    info = inspect_checkpoint(path)
    assert not info.is_depth_model
    assert any("4 input channels" in p for p in info.problems)
    assert any("MiDaS" in p for p in info.problems)
    with pytest.raises(CheckpointError, match="not an SD 2 depth checkpoint"):
        require_depth_checkpoint(path)


class Payload:  # stands for any object that needs real unpickling
    pass


def test_ckpt_needing_arbitrary_unpickling_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": fake_state(), "callback": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="refused"):
        inspect_checkpoint(path)


def test_ordered_dict_and_unreadable_files(tmp_path):
    path = tmp_path / "od.ckpt"
    torch.save(collections.OrderedDict(fake_state()), path)
    assert inspect_checkpoint(path).is_depth_model
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable"):
        inspect_checkpoint(junk)
    with pytest.raises(CheckpointError, match="not found"):
        inspect_checkpoint(tmp_path / "missing.ckpt")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        inspect_checkpoint(other)


def test_config_beside_the_checkpoint_wins(tmp_path):
    path = tmp_path / "model.safetensors"
    assert config_path_for(path) == SHIPPED_DEPTH_CONFIG
    (tmp_path / "model.yaml").write_text("model: {}")
    assert config_path_for(path) == tmp_path / "model.yaml"


def test_shipped_config_is_the_depth_config():
    from omegaconf import OmegaConf

    config = OmegaConf.load(SHIPPED_DEPTH_CONFIG)
    assert config.model.target == "ldm.models.diffusion.ddpm.LatentDepth2ImageDiffusion"
    assert config.model.params.unet_config.params.in_channels == 5
    assert config.model.params.depth_stage_config.params.model_type == "dpt_hybrid"
