"""Depth checkpoints: load safely, tell what a file is, find its config.

A depth checkpoint is recognised by its keys, not its name: the UNet's `conv_in` takes 5 channels
(4 latent + 1 depth) and the MiDaS estimator is embedded under `depth_model.model.*`.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from depth2img.base.paths import SHIPPED_DEPTH_CONFIG
from depth2img.checkpoint import safe_unpickle

UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
# safetensors headers name dtypes tersely ("F16"); torch names them "torch.float16".
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64"}
MIDAS_PREFIX = "depth_model.model."  # the embedded MiDaS DPT-Hybrid
TEXT_PREFIX = "cond_stage_model.model."  # the OpenCLIP text tower
EMA_PREFIX = "model_ema."
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


@dataclass
class CheckpointInfo:
    """What a checkpoint file is, for the UI and the CLI."""

    path: Path
    format: str  # "safetensors" | "ckpt" | "diffusers"
    is_depth_model: bool
    unet_in_channels: int | None
    midas_keys: int
    dtype: str | None
    has_ema: bool
    wrapped: bool  # a Lightning-style {"state_dict": ...} wrapper
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kind = "SD 2 depth checkpoint" if self.is_depth_model else "not a depth checkpoint"
        parts = [
            f"{self.path.name}: {kind}",
            f"format {self.format}",
            f"UNet input channels {self.unet_in_channels}",
            f"MiDaS keys {self.midas_keys}",
            f"dtype {self.dtype}",
            f"EMA weights {'yes' if self.has_ema else 'no'}",
        ]
        text = "; ".join(parts)
        if self.problems:
            text += "\n  " + "\n  ".join(self.problems)
        return text


def _torch_load(path: Path, mmap: bool = False) -> object:
    """torch.load of a .ckpt with the data-only unpickler; every failure becomes a CheckpointError.

    A file that needs arbitrary code to unpickle is refused, never executed (see safe_unpickle).
    mmap reads only what is touched (a multi-GB file's keys and shapes stay instant); only zip files have it.
    """
    try:
        return torch.load(
            str(path),
            map_location="cpu",
            pickle_module=safe_unpickle,
            weights_only=False,  # the restriction is safe_unpickle's; torch refuses a pickle_module otherwise
            mmap=mmap and zipfile.is_zipfile(path),
        )
    except safe_unpickle.RefusedGlobal as error:
        raise CheckpointError(
            f"{path} holds more than tensors and plain data ({error}) and was refused; "
            "convert it to .safetensors with a trusted tool, or use the original release file"
        ) from error
    except Exception as error:  # truncated downloads: "failed finding central directory", EOFError, ...
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error}); "
            "it may be incomplete: download it again"
        ) from error


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors or .ckpt file, unwrapped from a `state_dict` wrapper."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types per version
            raise CheckpointError(f"{path} is not a readable .safetensors file ({error})") from error
    return _unwrap(_torch_load(path), path)[0]


def load_tensors_under(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """Only the tensors whose keys start with `prefix` (e.g. MIDAS_PREFIX), keys kept whole.

    For a host whose own loader dropped that part (Forge keeps the UNet, VAE and text encoder of a depth
    checkpoint, not its MiDaS): a .safetensors file gives just those tensors; a .ckpt is memory-mapped where it
    can be, and only those tensors are copied out of it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}
        except Exception as error:  # safetensors raises its own error types per version
            raise CheckpointError(f"{path} is not a readable .safetensors file ({error})") from error
    state = _unwrap(_torch_load(path, mmap=True), path)[0]
    return {key: tensor.clone() for key, tensor in state.items() if key.startswith(prefix)}


def _unwrap(data: object, path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    wrapped = isinstance(data, dict) and isinstance(data.get("state_dict"), dict)
    state = data["state_dict"] if wrapped else data
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not contain a state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, wrapped


def _shapes_and_dtypes(path: Path) -> tuple[dict[str, tuple[int, ...]], set[str], bool]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        # Only the header is read: inspecting a 5 GB file stays instant.
        try:
            with safe_open(str(path), framework="pt") as handle:
                shapes, dtypes = {}, set()
                for key in handle.keys():
                    sliced = handle.get_slice(key)
                    shapes[key] = tuple(sliced.get_shape())
                    name = str(sliced.get_dtype())
                    dtypes.add(_SAFETENSORS_DTYPES.get(name, name.lower()))
        except Exception as error:
            raise CheckpointError(f"{path} is not a readable .safetensors file ({error})") from error
        return shapes, dtypes, False
    # mmap: only the keys and shapes are needed, so a multi-GB .ckpt is not read into memory.
    state, wrapped = _unwrap(_torch_load(path, mmap=True), path)
    return {k: tuple(v.shape) for k, v in state.items()}, {str(v.dtype) for v in state.values()}, wrapped


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Identify a checkpoint file (or a diffusers model folder) by its keys."""
    path = Path(path)
    if path.is_dir():
        return _inspect_diffusers_folder(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{path}: unknown checkpoint type; expected one of {', '.join(CHECKPOINT_SUFFIXES)}")
    shapes, dtypes, wrapped = _shapes_and_dtypes(path)
    conv_in = shapes.get(UNET_CONV_IN)
    in_channels = conv_in[1] if conv_in and len(conv_in) == 4 else None
    midas_keys = sum(1 for key in shapes if key.startswith(MIDAS_PREFIX))
    problems = []
    if in_channels is None:
        problems.append("no Stable Diffusion UNet found (missing model.diffusion_model.* keys)")
    elif in_channels != 5:
        problems.append(f"the UNet takes {in_channels} input channels; a depth model takes 5 (latent + depth)")
    if midas_keys == 0:
        problems.append("no embedded MiDaS estimator (depth_model.model.* keys)")
    weight_dtypes = sorted(d.replace("torch.", "").lower() for d in dtypes)
    return CheckpointInfo(
        path=path,
        format="safetensors" if path.suffix == ".safetensors" else "ckpt",
        is_depth_model=not problems,
        unet_in_channels=in_channels,
        midas_keys=midas_keys,
        dtype="/".join(weight_dtypes) if weight_dtypes else None,
        has_ema=any(key.startswith(EMA_PREFIX) for key in shapes),
        wrapped=wrapped,
        problems=problems,
    )


def inspect_checkpoint_cached(path: str | Path) -> CheckpointInfo:
    """inspect_checkpoint, remembered per (path, mtime, size): model lists ask often."""
    path = Path(path)
    stat = path.stat()
    return _inspect_by_stat(str(path), stat.st_mtime, stat.st_size)


@functools.lru_cache(maxsize=256)
def _inspect_by_stat(path: str, _mtime: float, _size: int) -> CheckpointInfo:
    return inspect_checkpoint(path)


def _inspect_diffusers_folder(path: Path) -> CheckpointInfo:
    import json

    problems = []
    in_channels = None
    unet_config = path / "unet" / "config.json"
    if unet_config.is_file():
        in_channels = json.loads(unet_config.read_text()).get("in_channels")
        if in_channels != 5:
            problems.append(f"the UNet takes {in_channels} input channels; a depth model takes 5")
    else:
        problems.append("no unet/config.json: not a diffusers model folder")
    has_estimator = (path / "depth_estimator" / "config.json").is_file()
    if not has_estimator:
        problems.append("no depth_estimator/ folder (a diffusers depth model ships its DPT estimator)")
    return CheckpointInfo(
        path=path,
        format="diffusers",
        is_depth_model=not problems,
        unet_in_channels=in_channels,
        midas_keys=0,
        dtype=None,
        has_ema=False,
        wrapped=False,
        problems=problems,
    )


def require_depth_checkpoint(path: str | Path) -> CheckpointInfo:
    info = inspect_checkpoint(path)
    if not info.is_depth_model:
        raise CheckpointError(
            f"{info.path} is not an SD 2 depth checkpoint: " + "; ".join(info.problems)
            + ". Use 512-depth-ema.ckpt/.safetensors or a fine-tune of it."
        )
    return info


def yaml_beside(checkpoint: str | Path) -> Path:
    """Where the WebUI looks for a checkpoint's config: the YAML with the same name, beside it."""
    return Path(checkpoint).with_suffix(".yaml")


def config_path_for(checkpoint: str | Path) -> Path:
    """The LDM config for a checkpoint: the YAML beside it (the WebUI's rule) if there is one, else ours."""
    beside = yaml_beside(checkpoint)
    return beside if beside.is_file() else SHIPPED_DEPTH_CONFIG


def config_shape_mismatch(state: Mapping[str, torch.Tensor], config: dict) -> str | None:
    """The first of the checkpoint's tensors whose shape its LDM config contradicts, said with the config's
    setting; None if they agree. Checked before diffusers builds the models, whose own error names its internal
    module and advises flags that would load random weights. Written here: no library says which config value
    a tensor's shape contradicts."""
    params = config.get("model", {}).get("params", {})
    unet = params.get("unet_config", {}).get("params", {})
    vae = params.get("first_stage_config", {}).get("params", {}).get("ddconfig", {})
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    if {"model_channels", "in_channels", "out_channels"} <= unet.keys():
        width, inputs, outputs = unet["model_channels"], unet["in_channels"], unet["out_channels"]
        expected["model.diffusion_model.input_blocks.0.0.weight"] = (
            (width, inputs, 3, 3), f"unet_config model_channels {width} and in_channels {inputs}")
        expected["model.diffusion_model.time_embed.0.weight"] = (
            (4 * width, width), f"unet_config model_channels {width}")
        expected["model.diffusion_model.out.2.weight"] = (
            (outputs, width, 3, 3), f"unet_config out_channels {outputs} and model_channels {width}")
    if "context_dim" in unet:
        for key in (k for k in state if k.startswith("model.diffusion_model.") and k.endswith("attn2.to_k.weight")):
            inner = tuple(state[key].shape)[0]
            expected[key] = ((inner, unet["context_dim"]), f"unet_config context_dim {unet['context_dim']}")
            break
    if {"ch", "in_channels"} <= vae.keys():
        expected["first_stage_model.encoder.conv_in.weight"] = (
            (vae["ch"], vae["in_channels"], 3, 3), f"first_stage_config ch {vae['ch']}")
    for key, (shape, setting) in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            return f"tensor {key} has shape {tuple(state[key].shape)}, the config's {setting} make it {shape}"
    return None


def require_config_matches(checkpoint: Path, state: Mapping[str, torch.Tensor], config: dict, config_path: Path):
    """Raise CheckpointError naming the tensor, the config and what to put beside the checkpoint."""
    problem = config_shape_mismatch(state, config)
    if problem is None:
        return
    which = (f"{config_path.name} beside it" if config_path == yaml_beside(checkpoint)
             else f"the shipped SD 2 depth config {config_path.name} (no {yaml_beside(checkpoint).name} beside it)")
    raise CheckpointError(
        f"{checkpoint.name} does not match its config, {which}: {problem}. Put the YAML this model was made with "
        f"beside the checkpoint as {yaml_beside(checkpoint).name} (512-depth-ema and its fine-tunes: "
        f"v2-midas-inference.yaml from Stability's stablediffusion repository)"
    )


def find_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())


def describe(path: str | Path) -> str:
    """What a checkpoint file or folder is (the CLI's `info`)."""
    info = inspect_checkpoint(path)
    text = info.summary()
    if info.format != "diffusers":
        text += f"\n  config: {config_path_for(path)}"
    return text
