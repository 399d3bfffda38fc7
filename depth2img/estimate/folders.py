"""Depth estimators from local transformers model folders (config.json + safetensors + preprocessor_config.json).

A folder `models/depth/<name>/` (or any folder in ESTIMATOR_DIRS, or a path given to the CLI) is an estimator
named `<name>` when the installed transformers' AutoModelForDepthEstimation knows its architecture. One that the
installed transformers lacks is listed as unavailable with the release that has it (FolderInfo.reason).

How an image becomes depth, per architecture (ARCHITECTURES says what each outputs):
- preprocessing: the model's own image processor (resize, normalize; ZoeDepth's reflection padding), fed what
  transformers' depth-estimation pipeline feeds it: 8-bit RGB. Images in [-1, 1] are rounded back to 8 bits,
  which is what the WebUI made them from. One exception, done here: DPT with ViT embeddings (DPT-Large,
  DPT-Hybrid) reshapes its tokens into a *square* grid (transformers 4.30 to 5.x), so a processor configured to
  keep the aspect ratio would crash it; it gets the processor's square size instead. (transformers 4.30's
  DPTImageProcessor ignores keep_aspect_ratio and always makes that square, so there nothing changes.)
- post-processing: the processor's post_process_depth_estimation, as the pipeline calls it (back to the image's
  size; ZoeDepth's padding removed; DepthPro scaled by its field of view to meters). transformers releases
  before it existed (the WebUI's 4.30) get what their pipeline does: a bicubic resize to the image's size.
- metric outputs (meters) become inverse depth: 1 / max(d, farthest / MAX_DISTANCE_RATIO), per image (the same
  floor as for uploaded distance maps, depth2img.source.decoding).

A diffusers folder holding a MarigoldDepthPipeline (model_index.json) is an estimator too, where diffusers is
installed (not in the WebUI): MarigoldFolderEstimator.

Weights load on the first estimate and stay until release().
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth2img.base.paths import MODELS_DIR
from depth2img.estimate.interface import (
    DepthEstimator,
    NetworkRuntime,
    autocast_off,
    caller_device,
    probe_precision_caps,
    to_network,
    uint8_images,
)
from depth2img.source.depth_kinds import DEFAULT_DISTANCE_RANGE, MAX_DISTANCE_RATIO

# Where folder estimators are looked for; the WebUI adds its own models/depth (add_estimator_dir).
ESTIMATOR_DIRS: list[Path] = [MODELS_DIR / "depth"]


def add_estimator_dir(path: str | Path) -> None:
    path = Path(path)
    if path not in ESTIMATOR_DIRS:
        ESTIMATOR_DIRS.append(path)


@dataclass(frozen=True)
class Architecture:
    since: str  # the first transformers release that has it ("" = every release depth2img supports)
    label: str
    metric: bool  # post-processed output in meters (else relative inverse depth)


# What each architecture's post-processed output is. Releases measured from pip wheels.
ARCHITECTURES: dict[str, Architecture] = {
    "dpt": Architecture("", "DPT (MiDaS 3.x)", metric=False),
    "glpn": Architecture("", "GLPN", metric=True),
    "depth_anything": Architecture("4.38", "Depth Anything", metric=False),  # metric variants: config, 4.45
    "zoedepth": Architecture("4.43", "ZoeDepth", metric=True),
    "depth_pro": Architecture("4.49", "Depth Pro", metric=True),  # post-processing turns its inverse into meters
    "prompt_depth_anything": Architecture("4.50", "Prompt Depth Anything", metric=False),  # metric: config
}
METRIC_DEPTH_ANYTHING_SINCE = "4.45"  # depth_estimation_type="metric" (Depth Anything V2 metric); ignored before


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def installed_architectures() -> set[str]:
    """model_type values the installed transformers' AutoModelForDepthEstimation knows."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES

    return set(MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES)


def _processor_missing(model_type: str) -> str:
    """Why the installed transformers cannot build this architecture's image processor here ("" if it can).

    transformers 5.x has two backends per processor (torchvision, PIL); some processors exist for torchvision
    only (DepthPro's), and torchvision is not a dependency of this project.
    """
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.utils import is_torchvision_available

    backends = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if isinstance(backends, dict) and "pil" not in backends and not is_torchvision_available():
        names = ", ".join(str(v) for v in backends.values())
        return f"transformers' {names} needs torchvision: install it (pip install torchvision) to use this model"
    return ""


@dataclass(frozen=True)
class FolderInfo:
    name: str
    path: Path
    model_type: str  # transformers' model_type, or "marigold" for a diffusers Marigold folder
    label: str
    kind: str  # what the network outputs: "inverse" | "metric" (meters) | "distance" (relative, 0 = near .. 1 = far)
    available: bool
    reason: str = ""  # why it is unavailable ("" when available)

    @property
    def metric(self) -> bool:
        return self.kind == "metric"


def _weights_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def inspect_folder(folder: str | Path, name: str | None = None) -> FolderInfo:
    """What a model folder is and whether this environment can run it; reads JSON files only."""
    folder = Path(folder)
    name = name or folder.name

    def unavailable(reason: str, model_type: str = "", label: str = "", metric: bool = False) -> FolderInfo:
        return FolderInfo(name, folder, model_type, label or name, "metric" if metric else "inverse", False, reason)

    config_path = folder / "config.json"
    if not config_path.is_file() and (folder / "model_index.json").is_file():
        return inspect_diffusers_folder(folder, name)
    if not config_path.is_file():
        return unavailable(f"the folder {folder.name!r} has no config.json: not a transformers model folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model_type = str(config["model_type"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return unavailable(f"{config_path} is not a transformers config with a model_type ({error})")
    installed = installed_architectures()
    version = transformers_version()
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        if model_type in installed:
            return unavailable(
                f"depth2img does not know whether {model_type!r} outputs inverse or metric depth", model_type
            )
        return unavailable(
            f"{model_type!r} is not a depth estimation architecture (depth2img knows {', '.join(ARCHITECTURES)})",
            model_type,
        )
    metric = arch.metric or config.get("depth_estimation_type") == "metric"
    label = f"{arch.label}{' metric' if metric and not arch.metric else ''} ({name})"
    if model_type not in installed:
        return unavailable(
            f"{arch.label} needs transformers >= {arch.since} (installed: {version})", model_type, label, metric
        )
    if metric and not arch.metric and _version(version) < _version(METRIC_DEPTH_ANYTHING_SINCE):
        return unavailable(
            f"metric {arch.label} needs transformers >= {METRIC_DEPTH_ANYTHING_SINCE} (installed: {version}; "
            "older releases ignore depth_estimation_type and would output wrong depth)",
            model_type,
            label,
            metric,
        )
    if not _weights_files(folder):
        pickled = [p.name for p in folder.glob("*.bin")]
        if pickled:
            reason = (
                f"the folder {folder.name!r} has weights as {', '.join(pickled)} (pickle, which can run code): "
                "depth2img loads safetensors only; save the model with safe_serialization=True"
            )
        else:
            reason = f"the folder {folder.name!r} has no *.safetensors weights"
        return unavailable(reason, model_type, label, metric)
    if not (folder / "preprocessor_config.json").is_file():
        return unavailable(
            f"the folder {folder.name!r} has no preprocessor_config.json: save the model's image processor beside it "
            "(image_processor.save_pretrained(folder))",
            model_type,
            label,
            metric,
        )
    missing = _processor_missing(model_type)
    if missing:
        return unavailable(missing, model_type, label, metric)
    return FolderInfo(name, folder, model_type, label, "metric" if metric else "inverse", True)


def list_folders() -> list[FolderInfo]:
    """Every subfolder of ESTIMATOR_DIRS, as estimators (the first folder of a name wins)."""
    seen: set[str] = set()
    found = []
    for root in ESTIMATOR_DIRS:
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name in seen:
                continue
            seen.add(folder.name)
            found.append(inspect_folder(folder))
    return found


def folder_fingerprint(folder: Path) -> str:
    """Identifies a folder's model for the depth cache: the bytes of its JSON files (configs, the image
    processor's settings) and each weights file's name, size and modification time (hashing gigabytes of
    weights on every start would cost seconds)."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(folder.rglob("*.json")):
        h.update(f"{path.relative_to(folder)}:".encode() + path.read_bytes())
    for path in sorted(folder.rglob("*.safetensors")):
        stat = path.stat()
        h.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()


def metric_to_inverse(depth: torch.Tensor) -> torch.Tensor:
    """Metric depth [B, H, W] (meters, larger = farther) -> inverse depth 1 / max(d, farthest / MAX_DISTANCE_RATIO)."""
    farthest = depth.flatten(1).amax(dim=1).clamp(min=1e-6)[:, None, None]
    return 1.0 / torch.maximum(depth, farthest / MAX_DISTANCE_RATIO)


def _torchvision() -> bool:
    from transformers.utils import is_torchvision_available

    return is_torchvision_available()


def _zoedepth_postprocess(predicted: torch.Tensor, height: int, width: int, padded: bool) -> torch.Tensor:
    """ZoeDepth's post-processing, written here because transformers 5.x's PIL-backend ZoeDepth processor calls
    torchvision for it (NameError without torchvision). The same steps: the processor padded the image by
    int(sqrt(side / 2) * 3) on each side (reflection) before resizing it; resize the prediction bicubically to the
    padded image's size (torchvision's resize of a tensor without antialias is this interpolate), crop the pad.
    """
    pad_h = int(np.sqrt(height / 2) * 3) if padded else 0
    pad_w = int(np.sqrt(width / 2) * 3) if padded else 0
    size = (height + 2 * pad_h, width + 2 * pad_w)
    depth = F.interpolate(predicted.unsqueeze(1), size=size, mode="bicubic", align_corners=False)[:, 0]
    return depth[:, pad_h : pad_h + height, pad_w : pad_w + width]


class FolderEstimator(DepthEstimator):
    """What every model-folder estimator shares: its FolderInfo, where its weights go, its cache key (the
    folder's fingerprint). Subclasses load the weights on first estimate and free them in release()."""

    source = "folder"

    def __init__(
        self, info: FolderInfo, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ):
        if not info.available:
            raise ValueError(f"estimator {info.name!r} is unavailable: {info.reason}")
        self.info = info
        self.name = info.name
        self.label = info.label
        self.kind = info.kind
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or torch.float32
        self._cache_key = f"folder:{info.name}:{folder_fingerprint(info.path)}"

    @property
    def cache_key(self) -> str:
        return self._cache_key


class TransformersFolderEstimator(FolderEstimator):
    """A transformers depth model from a local folder; see the module docstring."""

    def __init__(
        self, info: FolderInfo, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ):
        super().__init__(info, device, dtype)
        self.model = None
        self.processor = None
        self._runtime: NetworkRuntime | None = None

    def load(self) -> None:
        """Load weights and image processor (once; again after release())."""
        if self.model is not None:
            return
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        path = str(self.info.path)
        model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True, use_safetensors=True)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self._runtime = NetworkRuntime(self.model)

    def release(self) -> None:
        self.model = self.processor = self._runtime = None

    def processor_overrides(self) -> dict:
        """Arguments that replace the processor's own where they are wrong for the network (module docstring)."""
        config = self.model.config
        uses_vit_grid = config.model_type == "dpt" and (
            getattr(config, "is_hybrid", False) or getattr(config, "backbone_config", None) is None
        )
        if not uses_vit_grid:
            return {}
        size = getattr(self.processor, "size", None) or {}
        side = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
        side = side or config.image_size
        return {"keep_aspect_ratio": False, "size": {"height": side, "width": side}}

    def estimate(self, images) -> torch.Tensor:
        self.load()
        caller = caller_device(images)
        arrays = uint8_images(images)
        height, width = arrays[0].shape[:2]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError("images in one batch must have the same size")
        inputs = self.processor(images=arrays, return_tensors="pt", **self.processor_overrides())
        with self._runtime.session() as (model, device, dtype):
            outputs = model(**{k: to_network(v, device, dtype) for k, v in inputs.items()})
        for key, value in outputs.items():  # post-processing in float32, whatever the network ran in
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                outputs[key] = value.to(torch.float32)
        depth = self._postprocess(outputs, height, width)
        if self.info.metric:
            depth = metric_to_inverse(depth)
        return depth.to(torch.float32).to(caller)

    def _postprocess(self, outputs, height: int, width: int) -> torch.Tensor:
        sizes = [(height, width)] * len(outputs["predicted_depth"])
        if self.info.model_type == "zoedepth" and not _torchvision():
            return _zoedepth_postprocess(outputs["predicted_depth"], height, width, self.processor.do_pad)
        if hasattr(self.processor, "post_process_depth_estimation"):
            # Positional, as the pipeline passes it: ZoeDepth reads it as the source sizes (padding removal and
            # resize back), the others as target sizes.
            results = self.processor.post_process_depth_estimation(outputs, sizes)
            return torch.stack([r["predicted_depth"].reshape(height, width) for r in results])
        # transformers without post-processing (4.30): what its depth-estimation pipeline does for its picture.
        depth = outputs["predicted_depth"].unsqueeze(1)
        return F.interpolate(depth, size=(height, width), mode="bicubic", align_corners=False)[:, 0]


# ---- Marigold (a diffusers pipeline folder) -------------------------------------------------------------

MARIGOLD_CLASS = "MarigoldDepthPipeline"
MARIGOLD_SEED = 0  # Marigold denoises from noise: a fixed seed makes one image give one map (the cache relies on it)


def inspect_diffusers_folder(folder: Path, name: str) -> FolderInfo:
    """A diffusers pipeline folder: an estimator when it holds a MarigoldDepthPipeline and diffusers has one."""
    label = f"Marigold ({name})"

    def unavailable(reason: str) -> FolderInfo:
        return FolderInfo(name, folder, "marigold", label, "distance", False, reason)

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return unavailable(f"{folder / 'model_index.json'} is not readable JSON ({error})")
    pipeline_class = index.get("_class_name", "") if isinstance(index, dict) else ""
    if pipeline_class != MARIGOLD_CLASS:
        return unavailable(
            f"the folder {folder.name!r} holds a diffusers {pipeline_class or 'pipeline'}, not a depth estimator "
            f"(depth2img runs {MARIGOLD_CLASS} folders)"
        )
    prediction = index.get("prediction_type") or "depth"
    if prediction not in ("depth", "disparity"):
        return unavailable(
            f"the folder {folder.name!r}: Marigold prediction_type {prediction!r} is not depth or disparity"
        )
    # disparity is inverse depth; "depth" is affine-invariant depth, 0 = near .. 1 = far (a relative distance)
    kind = "inverse" if prediction == "disparity" else "distance"
    try:
        from diffusers import MarigoldDepthPipeline  # noqa: F401
    except ImportError:
        return unavailable(
            "Marigold needs diffusers with MarigoldDepthPipeline (0.28 or later), which this environment lacks "
            "(the WebUI does not ship diffusers): pip install diffusers"
        )
    if not any(folder.rglob("*.safetensors")):
        return unavailable(
            f"the folder {folder.name!r} has no *.safetensors weights (depth2img loads safetensors only)"
        )
    return FolderInfo(name, folder, "marigold", label, kind, True)


def relative_distance_to_inverse(distance: torch.Tensor) -> torch.Tensor:
    """Affine-invariant depth (0 = near .. 1 = far, the scene's true range unknown) -> inverse depth, read as a
    normalized distance map without its range (depthmap.DEFAULT_DISTANCE_RANGE): approximate by nature."""
    near, far = DEFAULT_DISTANCE_RANGE
    return 1.0 / (near + distance.clamp(0.0, 1.0) * (far - near))


class MarigoldFolderEstimator(FolderEstimator):
    """diffusers' MarigoldDepthPipeline from a local folder: one ensemble member, the model's default steps and
    processing resolution, output at the image's size, a fixed seed."""

    def __init__(
        self, info: FolderInfo, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ):
        super().__init__(info, device, dtype)
        self.pipe = None

    def load(self) -> None:
        if self.pipe is not None:
            return
        from diffusers import MarigoldDepthPipeline

        # The runtime policy's float32 fallback, applied when loading: this estimator owns its weights.
        dtype = self.dtype if probe_precision_caps(self.device).supports(self.dtype) else torch.float32
        pipe = MarigoldDepthPipeline.from_pretrained(str(self.info.path), local_files_only=True, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device=self.device, dtype=dtype)

    def release(self) -> None:
        self.pipe = None

    def estimate(self, images) -> torch.Tensor:
        from PIL import Image

        self.load()
        caller = caller_device(images)
        pictures = [Image.fromarray(array) for array in uint8_images(images)]
        generator = torch.Generator("cpu").manual_seed(MARIGOLD_SEED)
        with torch.no_grad(), autocast_off(self.device):
            output = self.pipe(pictures, generator=generator, output_type="pt", match_input_resolution=True)
        depth = output.prediction[:, 0].to(torch.float32)
        if self.kind == "distance":
            depth = relative_distance_to_inverse(depth)
        return depth.to(caller)
