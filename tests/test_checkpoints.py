import collections
import shutil

import pytest
import torch
from safetensors.torch import save_file

from depth2img.base.paths import SHIPPED_DEPTH_CONFIG
from depth2img.checkpoint.load import (
    CheckpointError,
    config_path_for,
    config_shape_mismatch,
    inspect_checkpoint,
    load_state_dict,
    require_depth_checkpoint,
)


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


def _fake_lightning(monkeypatch):
    """A stand-in for pytorch_lightning's ModelCheckpoint class, importable by name so pickle can write it."""
    import sys
    import types

    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self):
            self.best_model_score = torch.tensor(0.25)
            self.monitor = "val/loss"

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.setitem(sys.modules, name, module if name == module.__name__ else types.ModuleType(name))
    return ModelCheckpoint


@pytest.mark.parametrize("zip_format", [True, False])
def test_trainer_written_ckpt_loads(tmp_path, monkeypatch, zip_format):
    """What Lightning trainers write: numpy scalars, callback classes as keys, callback objects, hparams."""
    import numpy as np

    model_checkpoint = _fake_lightning(monkeypatch)
    state = fake_state(ema=True)
    path = tmp_path / "trained.ckpt"
    torch.save(
        {
            "state_dict": state,
            "global_step": np.int64(875000),
            "epoch": np.int32(12),
            "callbacks": {model_checkpoint: {"best_model_score": torch.tensor(0.25)}, "cb": model_checkpoint()},
            "hyper_parameters": {"lr": np.float64(1e-4), "shape": np.array([1, 2]), "dtype": np.dtype("float16")},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]}],
        },
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    monkeypatch.undo()  # loading must not need the class: Lightning is not installed where users load
    info = inspect_checkpoint(path)
    assert info.is_depth_model and info.wrapped
    loaded = load_state_dict(path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_ckpt_needing_arbitrary_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "was-run"

    class Payload:  # what a malicious pickle does: call something on load
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": fake_state(), "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused.*(builtins|io).open"):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="refused"):
        inspect_checkpoint(path)
    assert not marker.exists()


def test_class_outside_the_allow_list_is_refused_by_name(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": fake_state(), "extra": collections.deque([1])}, path)
    with pytest.raises(CheckpointError, match="collections.deque"):
        load_state_dict(path)


def test_truncated_and_junk_ckpt_are_checkpoint_errors(tmp_path):
    full = tmp_path / "full.ckpt"
    torch.save({"state_dict": fake_state()}, full)
    for name, data in [("truncated.ckpt", full.read_bytes()[: full.stat().st_size // 2]), ("junk.ckpt", b"<html>")]:
        path = tmp_path / name
        path.write_bytes(data)
        for action in (inspect_checkpoint, load_state_dict):
            with pytest.raises(CheckpointError, match="not a readable checkpoint.*download it again"):
                action(path)


def test_inspection_is_remembered_until_the_file_changes(tmp_path):
    from depth2img.checkpoint.load import inspect_checkpoint_cached

    path = tmp_path / "m.safetensors"
    save_file(fake_state(), str(path))
    first = inspect_checkpoint_cached(path)
    assert inspect_checkpoint_cached(path) is first
    save_file(fake_state(in_channels=4), str(path))
    import os

    os.utime(path, ns=(1, 1))  # a new mtime even on coarse file systems
    assert not inspect_checkpoint_cached(path).is_depth_model


def test_find_checkpoints_lists_model_files_only(tmp_path):
    from depth2img.checkpoint.load import find_checkpoints

    (tmp_path / "sub").mkdir()
    for name in ("a.safetensors", "sub/b.ckpt", "c.yaml", "d.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert find_checkpoints(tmp_path) == [tmp_path / "a.safetensors", tmp_path / "sub" / "b.ckpt"]
    assert find_checkpoints(tmp_path / "missing") == []


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


def test_a_config_of_another_model_is_named_with_the_tensor_it_contradicts(tiny_checkpoint, tmp_path):
    # The tiny checkpoint (model_channels 32) with the full-size SD 2 depth YAML beside it: diffusers' own error
    # names an internal module and advises flags that would load random weights (issue 15.11).
    from depth2img.pipeline.load import load_pipeline

    checkpoint = tmp_path / "finetune.safetensors"
    shutil.copyfile(tiny_checkpoint, checkpoint)
    shutil.copyfile(SHIPPED_DEPTH_CONFIG, tmp_path / "finetune.yaml")
    with pytest.raises(CheckpointError) as beside:
        load_pipeline(checkpoint, device="cpu")
    message = str(beside.value)
    assert "finetune.safetensors does not match its config, finetune.yaml beside it" in message
    assert "model.diffusion_model.input_blocks.0.0.weight has shape (32, 5, 3, 3)" in message
    assert "model_channels 320" in message and "(320, 5, 3, 3)" in message
    assert "as finetune.yaml" in message and "ignore_mismatched_sizes" not in message

    (tmp_path / "finetune.yaml").unlink()  # no YAML: the shipped one, said so
    with pytest.raises(CheckpointError, match=r"the shipped SD 2 depth config v2-midas-inference.yaml \(no "
                                              r"finetune.yaml beside it\)"):
        load_pipeline(checkpoint, device="cpu")


def test_each_config_setting_a_shape_depends_on_is_checked(tiny_checkpoint):
    from omegaconf import OmegaConf

    state = load_state_dict(tiny_checkpoint)
    config = OmegaConf.to_container(OmegaConf.load(tiny_checkpoint.with_suffix(".yaml")), resolve=True)
    assert config_shape_mismatch(state, config) is None
    params = config["model"]["params"]
    for section, key, value, named in (
        (params["unet_config"]["params"], "in_channels", 9, "in_channels 9"),
        (params["unet_config"]["params"], "out_channels", 8, "out_channels 8"),
        (params["unet_config"]["params"], "context_dim", 1024, "context_dim 1024"),
        (params["first_stage_config"]["params"]["ddconfig"], "ch", 128, "first_stage_config ch 128"),
    ):
        original = section[key]
        section[key] = value
        assert named in (config_shape_mismatch(state, config) or ""), key
        section[key] = original
