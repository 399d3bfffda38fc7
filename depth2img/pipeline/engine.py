"""The standalone engine: diffusers' StableDiffusionDepth2ImgPipeline, built offline from a depth checkpoint.

diffusers has no `from_single_file` for this pipeline, and its generic single-file route goes to a
model hub. So the pipeline is assembled from parts that load locally:
- UNet and VAE: diffusers' `from_single_file` with the LDM YAML as `original_config`;
- text encoder: diffusers' `convert_open_clip_checkpoint` into a CLIPTextModel configured from the
  checkpoint's own tensor shapes;
- tokenizer: derived from the BPE file open-clip-torch ships (depth2img.checkpoint.tokenizer);
- scheduler: built in code from the YAML's schedule;
- depth estimator: the checkpoint's embedded MiDaS, converted to transformers' DPT (depth2img.estimate.midas).
A diffusers-format depth model folder loads with the same class through `from_pretrained`.

`DepthPipeline` changes diffusers' pipeline in three named places only:
- prepare_depth_map: the core's conditioning (per-sample, flat-safe, or a given depth range) and estimator
  (cached, deduplicated);
- prepare_latents: pure noise for txt2img (no init image);
- inpainting: a step-end blend that keeps the unmasked latents on the init image's path, and a final
  pixel composite so nothing outside the mask changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from depth2img.base.paths import DEMO_DIR, USER_CHECKPOINT_DIR
from depth2img.checkpoint.load import (
    TEXT_PREFIX,
    CheckpointError,
    config_path_for,
    inspect_checkpoint,
    load_state_dict,
    require_config_matches,
    require_depth_checkpoint,
)
from depth2img.checkpoint.tokenizer import load_clip_tokenizer
from depth2img.condition.conditioning import check_depth_range, depth_conditioning
from depth2img.estimate import midas
from depth2img.estimate.cache import DepthCache
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.export import tiny
from depth2img.process import fitting, masks, postprocessing
from depth2img.source import decoding

DEFAULT_CHECKPOINT_NAMES = ("512-depth-ema.safetensors", "512-depth-ema.ckpt")


def _base_pipeline_class():
    from transformers.utils import logging as transformers_logging

    # diffusers' depth2img module imports transformers' DPTImageProcessor, which warns at import that it falls
    # back to its PIL backend without torchvision (absent here: its wheel would replace the CPU torch). That
    # processor is never used (MiDaS preprocessing is depth2img.estimate.midas.preprocess): the warning is only noise.
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionDepth2ImgPipeline
    finally:
        transformers_logging.set_verbosity(level)
    return StableDiffusionDepth2ImgPipeline


# ---- choosing and loading a checkpoint --------------------------------------------------------


def default_checkpoint(announce=print) -> Path:
    """models/Stable-diffusion/512-depth-ema.* if present, else the embedded demo checkpoint."""
    for name in DEFAULT_CHECKPOINT_NAMES:
        candidate = USER_CHECKPOINT_DIR / name
        if candidate.is_file():
            return candidate
    path = tiny.build_tiny_depth_checkpoint(DEMO_DIR)
    announce(
        "*** DEMO CHECKPOINT: no depth model found in models/Stable-diffusion/ (512-depth-ema.safetensors or "
        ".ckpt), so the embedded demo checkpoint is used: the real architecture with tiny sizes and RANDOM "
        "weights — the results are noise. Pass --checkpoint or put the real model there. ***"
    )
    return path


def text_encoder_config_from_checkpoint(state: dict[str, torch.Tensor]):
    """CLIPTextConfig of the OpenCLIP text tower in an LDM checkpoint, read from its tensor shapes.

    SD 2 takes the penultimate layer's output, so the diffusers model has one layer fewer than the tower.
    Heads follow OpenCLIP's convention (width / 64), true for ViT-H-14 and our tiny fixture.
    """
    from transformers import CLIPTextConfig

    vocab_size, width = state[TEXT_PREFIX + "token_embedding.weight"].shape
    block = re.compile(re.escape(TEXT_PREFIX) + r"transformer\.resblocks\.(\d+)\.")
    layer_ids = {int(m.group(1)) for key in state if (m := block.match(key))}
    projection = state.get(TEXT_PREFIX + "text_projection")
    return CLIPTextConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(width),
        intermediate_size=int(state[TEXT_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        num_hidden_layers=len(layer_ids) - 1,
        num_attention_heads=max(1, int(width) // 64),
        max_position_embeddings=int(state[TEXT_PREFIX + "positional_embedding"].shape[0]),
        projection_dim=int(projection.shape[1]) if projection is not None else int(width),
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        pad_token_id=0,
        bos_token_id=49406,
        eos_token_id=49407,
    )


def load_text_encoder(state: dict[str, torch.Tensor]):
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModel

    model = CLIPTextModel(text_encoder_config_from_checkpoint(state))
    converted = convert_open_clip_checkpoint(model, state, prefix=TEXT_PREFIX)
    expected = model.state_dict()
    # transformers 5 dropped the `text_model.` level from CLIPTextModel's keys; diffusers still writes it.
    converted = {
        (k if k in expected else k.removeprefix("text_model.")): v for k, v in converted.items()
    }
    # The tower's last block is unused (penultimate layer) and has no place in the diffusers model.
    converted = {k: v for k, v in converted.items() if k in expected}
    missing = [k for k in expected if k not in converted and not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"text encoder weights missing from the checkpoint: {missing[:5]}")
    model.load_state_dict(converted, strict=False)
    return model.eval()


def make_scheduler(config, name: str = "pndm"):
    """A diffusers scheduler with the checkpoint's training schedule (LDM 'linear' = diffusers 'scaled_linear')."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

    params = config["model"]["params"]
    common = dict(
        num_train_timesteps=int(params.get("timesteps", 1000)),
        beta_start=float(params.get("linear_start", 0.00085)),
        beta_end=float(params.get("linear_end", 0.012)),
        beta_schedule="scaled_linear",
        steps_offset=1,
    )
    if name == "pndm":  # the scheduler Stability's diffusers release of this model ships with
        return PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **common)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    if name == "euler":
        return EulerDiscreteScheduler(**common)
    raise ValueError(f"unknown scheduler {name!r}; choose pndm, ddim or euler")


@contextlib.contextmanager
def _quiet_empty_float32_list():
    """Drop diffusers' "modules ... should be kept in float32: []" warning, and only with an empty list.

    from_single_file(torch_dtype=...) casts with .to() itself and warns about it even when no module needs
    float32 (the list is empty for these models): nothing is lost, so the message is noise for our users.
    """
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()

    logger = logging.getLogger("diffusers.models.modeling_utils")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _device_and_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, dtype


def load_pipeline(
    path: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    scheduler: str = "pndm",
    announce=print,
) -> DepthPipeline:
    """A DepthPipeline (a real StableDiffusionDepth2ImgPipeline) from a depth checkpoint or diffusers folder.

    `None` uses the default checkpoint (see default_checkpoint). Nothing is downloaded.
    """
    from omegaconf import OmegaConf

    device, dtype = _device_and_dtype(device, dtype)
    path = Path(path) if path is not None else default_checkpoint(announce)
    info = require_depth_checkpoint(path)
    if info.format == "diffusers":
        # Our pipeline estimates with depth2img.estimate.midas's exact MiDaS preprocessing, not the feature extractor;
        # folders saved from a DepthPipeline have none.
        extra = {} if (path / "feature_extractor").is_dir() else {"feature_extractor": None}
        pipe = DepthPipeline.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype, **extra)
        pipe.depth_estimator.to(torch.float32)
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        config_path = config_path_for(path)
        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
        state = load_state_dict(path)
        require_config_matches(path, state, config, config_path)
        # float32 is what from_single_file builds anyway: passing it would only add a cast (and its warning).
        dtype_arg = {} if dtype == torch.float32 else {"torch_dtype": dtype}
        with _quiet_empty_float32_list():
            unet = UNet2DConditionModel.from_single_file(state, original_config=str(config_path), **dtype_arg)
            vae = AutoencoderKL.from_single_file(state, original_config=str(config_path), **dtype_arg)
        text_encoder = load_text_encoder(state).to(dtype)
        # MiDaS stays float32: its batch norms are unreliable in half precision.
        depth_estimator = midas.load_midas_from_state_dict(state, dtype=torch.float32)
        del state
        pipe = DepthPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=load_clip_tokenizer(),
            unet=unet,
            scheduler=make_scheduler(config, scheduler),
            depth_estimator=depth_estimator,
            feature_extractor=None,
        )
    pipe.checkpoint_path = path
    return pipe.to(device)


# ---- the pipeline -----------------------------------------------------------------------------

_Base = _base_pipeline_class()
_TXT2IMG: contextvars.ContextVar[bool] = contextvars.ContextVar("depth2img_txt2img", default=False)
_DEPTH_RANGE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar(
    "depth2img_depth_range", default=None
)


class DepthPipeline(_Base):
    """diffusers' depth2img pipeline with the core's depth handling (see the module docstring)."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, depth_estimator, feature_extractor):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            depth_estimator=depth_estimator,
            feature_extractor=feature_extractor,
        )
        self.depth_cache = DepthCache()
        self.checkpoint_path: Path | None = None
        self._call_lock = threading.RLock()

    def __call__(self, *args, txt2img: bool = False, depth_range: tuple[float, float] | None = None, **kwargs):
        """diffusers' __call__; txt2img=True starts from pure noise (the image only gives the size);
        depth_range=(lo, hi) conditions on that fixed range instead of each map's min-max.

        Safe from several threads (a web app's workers): the mode is this call's (a context variable, not
        pipeline state), and calls take turns, since diffusers' schedulers keep per-call state
        (set_timesteps, PNDM's history) on the one scheduler object.
        """
        with self._call_lock:
            token = _TXT2IMG.set(txt2img)
            range_token = _DEPTH_RANGE.set(depth_range)
            try:
                return super().__call__(*args, **kwargs)
            finally:
                _DEPTH_RANGE.reset(range_token)
                _TXT2IMG.reset(token)

    @property
    def estimator(self):
        if getattr(self, "_estimator", None) is None or self._estimator.model is not self.depth_estimator:
            self._estimator = CheckpointMidasEstimator(self.depth_estimator)
        return self._estimator

    def estimate_depth(self, images) -> torch.Tensor:
        """Depth [B, h, w] (larger = nearer) of PIL image(s) or a [B, 3, H, W] tensor in [-1, 1]."""
        return self.depth_cache.estimate(self.estimator, midas.images_to_tensor(images))

    # diffusers hook 1: the conditioning.
    def prepare_depth_map(self, image, depth_map, batch_size, do_classifier_free_guidance, dtype, device):
        height, width = _image_size(image)
        if depth_map is None:
            depth_map = self.estimate_depth(image)
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        conditioning = depth_conditioning(
            depth_map, latent_size, device=device, dtype=dtype, depth_range=_DEPTH_RANGE.get()
        )
        if conditioning.shape[0] < batch_size:
            conditioning = conditioning.repeat(batch_size // conditioning.shape[0], 1, 1, 1)
        return torch.cat([conditioning] * 2) if do_classifier_free_guidance else conditioning

    # diffusers hook 2: txt2img starts from pure noise instead of a noised init image.
    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None):
        if not _TXT2IMG.get():
            return super().prepare_latents(
                image, timestep, batch_size, num_images_per_prompt, dtype, device, generator
            )
        from diffusers.utils.torch_utils import randn_tensor

        height, width = image.shape[-2:]
        shape = (
            batch_size * num_images_per_prompt,
            self.vae.config.latent_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma


def _image_size(image) -> tuple[int, int]:
    first = image[0] if isinstance(image, (list, tuple)) else image
    if isinstance(first, Image.Image):
        return first.height, first.width
    if isinstance(first, np.ndarray):
        raise TypeError("pass PIL images or tensors: diffusers swaps width and height of bare numpy images here")
    return tuple(first.shape[-2:])


# ---- one request, all modes -------------------------------------------------------------------


@dataclass
class GenerationRequest:
    prompt: str
    image: Image.Image | None = None  # None = txt2img from the depth map
    depth: decoding.DepthSource | None = None  # None = estimate from the image
    mask: Image.Image | None = None  # white = repaint (inpainting)
    negative_prompt: str | None = None
    strength: float = 0.8
    steps: int = 30
    guidance: float = 7.5
    seed: int = 0
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    resize_mode: fitting.ResizeMode = fitting.ResizeMode.JUST_RESIZE
    postprocess: dict = field(default_factory=dict)  # keyword arguments of postprocessing.postprocess
    depth_range: tuple[float, float] | None = None  # (lo, hi) of the processed map -> [-1, 1]; None = its min-max
    depth_mask: masks.MaskSettings | None = None  # a mask from a depth band: img2img becomes inpainting
    output_type: str = "pil"  # "pil" | "np" (float32 [B, H, W, 3] in [0, 1], as diffusers returns it)
    # Transparent parts of the image are flattened on this colour before anything reads it (the WebUI's rule).
    background: str = decoding.DEFAULT_BACKGROUND


@dataclass
class GenerationResult:
    images: list[Image.Image] | np.ndarray
    depth: np.ndarray  # the processed depth map that conditioned the images (larger = nearer)
    mode: str
    size_note: str = ""  # how the output size was chosen when the request gave none
    mask: Image.Image | None = None  # inpainting: the mask used (L, output size, white = repainted)
    mask_note: str = ""  # a mask from a depth band: the band it used


# SD 2's depth model was trained at 512x512: without a requested size, outputs keep the source's aspect at
# about this many pixels, in multiples of SIZE_MULTIPLE (a 1920x1080 photo becomes 704x384, not 1920x1080).
DEFAULT_PIXELS = 512 * 512
SIZE_MULTIPLE = 64


def default_size(source_width: int, source_height: int) -> tuple[int, int]:
    """The source's aspect ratio at about DEFAULT_PIXELS, both sides multiples of SIZE_MULTIPLE."""
    scale = (DEFAULT_PIXELS / (source_width * source_height)) ** 0.5
    width = max(SIZE_MULTIPLE, round(source_width * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    height = max(SIZE_MULTIPLE, round(source_height * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return width, height


def _snap(value: int) -> int:
    return max(8, value - value % 8)


def output_size(request: GenerationRequest, source_width: int, source_height: int) -> tuple[int, int, str]:
    """(width, height, note): the requested size (multiples of 8), the other side from the source's aspect
    when only one is given, else default_size(); the note says which rule chose it."""
    if request.width and request.height:
        return _snap(request.width), _snap(request.height), ""
    if request.width or request.height:
        aspect = source_width / source_height
        width = request.width or round(request.height * aspect)
        height = request.height or round(request.width / aspect)
        return _snap(width), _snap(height), f"size {_snap(width)}x{_snap(height)} (the other side from the aspect)"
    width, height = default_size(source_width, source_height)
    return width, height, (
        f"size {width}x{height}: the source's aspect at about 512x512, the size SD 2's depth model works at "
        "(--width/--height to override)"
    )


def check_request(request: GenerationRequest) -> None:
    """Refuse, before any work, what the pipeline would fail on with an obscure error."""
    if request.image is None and request.depth is None:
        raise ValueError(
            "nothing to start from: give an init image (img2img, inpaint) or a depth map (txt2img), or both"
        )
    if request.mask is not None and request.image is None:
        raise ValueError("inpainting needs an init image as well as the mask")
    if request.depth_mask is not None and request.image is None:
        raise ValueError("a mask from a depth band needs an init image (it makes img2img an inpainting job)")
    if request.mask is not None and request.mask.size != request.image.size:
        raise ValueError(
            f"mask size {request.mask.width}x{request.mask.height} differs from the image's "
            f"{request.image.width}x{request.image.height}; give a mask of the same size"
        )
    if request.steps < 1:
        raise ValueError(f"steps must be at least 1, got {request.steps}")
    if not 0.0 < request.strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {request.strength}")
    # diffusers runs int(steps * strength) of the schedule's steps when starting from an init image.
    if request.image is not None and int(request.steps * request.strength) < 1:
        raise ValueError(
            f"steps x strength must give at least one denoising step: {request.steps} x {request.strength} "
            f"gives {int(request.steps * request.strength)}; raise --steps or --strength"
        )
    if request.batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {request.batch_size}")
    if request.depth_range is not None:
        check_depth_range(request.depth_range)


def generate(
    pipe: DepthPipeline,
    request: GenerationRequest,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Run one request: img2img, inpaint (image + mask) or txt2img (depth, no image).

    The init image, the mask and the depth map get the same fit to the output size (request.resize_mode,
    the WebUI's semantics): stretched, centre-cropped, or padded with their edges.
    on_step(done, total) is called after each denoising step (a web page's progress bar); an exception raised
    from it stops the run between steps and propagates (diffusers' depth2img pipeline has no interrupt flag).
    """
    check_request(request)
    mask = request.mask
    image = decoding.flatten(request.image, request.background) if request.image is not None else None
    if request.depth is not None:
        depth = decoding.load_depth(request.depth)
    else:
        depth = pipe.estimate_depth(image)[0].numpy()

    source = image.size if image is not None else (depth.shape[1], depth.shape[0])
    width, height, size_note = output_size(request, *source)
    mode = "txt2img" if image is None else ("inpaint" if mask is not None else "img2img")
    if image is not None:
        image = fitting.fit_image(image, width, height, request.resize_mode, Image.LANCZOS)
    if mask is not None:
        mask = fitting.fit_image(mask.convert("L"), width, height, request.resize_mode, Image.NEAREST)

    post = dict(request.postprocess)
    if post.get("scale") is None and request.depth_range is not None:
        post["scale"] = postprocessing.PostprocessScale.within_range(request.depth_range)  # as Depth2ImgArgs has it
    depth = postprocessing.postprocess(depth, **post)
    # An estimated map covers its picture at the estimator's resolution, whose sides it rounds: fitted by the
    # picture's aspect. An uploaded map is fitted by its own (README: depth maps).
    estimated_from = source if request.depth is None else None  # the init image's size before its fit
    depth = fitting.fit_aspect(depth, width, height, request.resize_mode, source_size=estimated_from)
    depth_tensor = torch.from_numpy(np.ascontiguousarray(depth))[None]
    mask_note = ""
    if request.depth_mask is not None:
        mask, mask_note = depth_band_mask(depth, request.depth_mask, mask, width, height, request.depth_range)
        mode = "inpaint"

    generator = torch.Generator("cpu").manual_seed(int(request.seed))
    pipe.set_progress_bar_config(disable=not progress)
    call = dict(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        depth_map=depth_tensor,
        strength=1.0 if mode == "txt2img" else request.strength,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        num_images_per_prompt=request.batch_size,
        generator=generator,
        output_type="np" if mode == "inpaint" else request.output_type,
        depth_range=request.depth_range,
    )
    if on_step is not None:
        call["callback_on_step_end"] = _step_reporter(on_step)
    if mode == "txt2img":
        # The base pipeline needs an image for its size; prepare_latents ignores its content.
        images = pipe(image=Image.new("RGB", (width, height), (127, 127, 127)), txt2img=True, **call).images
    elif mode == "inpaint":
        images = _inpaint(pipe, image, mask, call)
        if request.output_type == "pil":
            images = pipe.image_processor.numpy_to_pil(images)
    else:
        images = pipe(image=image, **call).images
    return GenerationResult(
        images=images, depth=depth, mode=mode, size_note=size_note, mask=mask, mask_note=mask_note
    )


def depth_band_mask(
    depth: np.ndarray,
    settings: masks.MaskSettings,
    painted: Image.Image | None,
    width: int,
    height: int,
    depth_range: tuple[float, float] | None = None,
) -> tuple[Image.Image, str]:
    """The inpainting mask (L, width x height) from a band of the processed, fitted depth map, and a note
    naming the band: depth2img.process.masks.image_band_mask, the one recipe every host uses."""
    return masks.image_band_mask(depth, settings, painted, width, height, depth_range)


def _step_reporter(on_step: Callable[[int, int], None]):
    def report(pipeline, step, timestep, tensors):
        on_step(step + 1, pipeline.num_timesteps)
        return {}

    return report


def _inpaint(pipe: DepthPipeline, image: Image.Image, mask: Image.Image, call: dict) -> np.ndarray:
    """img2img whose unmasked latents follow the init image's noising path, then a pixel composite.

    Returns float images [B, H, W, 3] in [0, 1]; outside the mask they are exactly the init image.
    """
    device = pipe._execution_device
    dtype = pipe.unet.dtype
    pixels = pipe.image_processor.preprocess(image).to(device=device, dtype=pipe.vae.dtype)
    init_latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    init_latents = init_latents.to(dtype)
    latent_h, latent_w = init_latents.shape[-2:]
    keep = 1.0 - torch.from_numpy(np.asarray(mask.resize((latent_w, latent_h), Image.BILINEAR), np.float32) / 255.0)
    keep = (keep > 0.5).to(device=device, dtype=dtype)[None, None]
    # A separate generator: the unmasked area's noise must not shift the main generator's stream.
    noise_generator = torch.Generator("cpu").manual_seed(int(call["generator"].initial_seed()) + 1)
    noise = torch.randn(init_latents.shape, generator=noise_generator).to(device=device, dtype=dtype)

    report = call.pop("callback_on_step_end", None)

    def blend(pipeline, step, timestep, tensors):
        latents = tensors["latents"]
        timesteps = pipeline.scheduler.timesteps
        later = timesteps[timesteps < timestep]
        if len(later):
            target = pipeline.scheduler.add_noise(init_latents, noise, later[:1])
        else:
            target = init_latents
        if report is not None:
            report(pipeline, step, timestep, tensors)
        return {"latents": latents * (1 - keep) + target.expand_as(latents) * keep}

    generated = pipe(image=image, callback_on_step_end=blend, **call).images
    init = np.asarray(image, dtype=np.float32)[None] / 255.0
    weight = np.asarray(mask, dtype=np.float32)[None, ..., None] / 255.0
    return init * (1.0 - weight) + generated * weight


def describe(path: str | Path) -> str:
    """What a checkpoint file or folder is (the CLI's `info`)."""
    info = inspect_checkpoint(path)
    text = info.summary()
    if info.format != "diffusers":
        text += f"\n  config: {config_path_for(path)}"
    return text
