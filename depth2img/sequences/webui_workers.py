"""Render a sequence's frames on running AUTOMATIC1111 WebUIs that have this extension, through their HTTP API.

Each frame is one POST /sdapi/v1/img2img: the frame as the init image, its depth map (already post-processed by
the sequence's pass 1) uploaded as a 16-bit PNG in `alwayson_scripts.depth2img.args`, the shared range as
`depth_range`, and the job's prompt, seed, sampler, steps, cfg, strength and size. The WebUI's samplers are not
the engine's, so outputs match what that WebUI gives for the same request, not a local run's pixels.

The 16-bit PNG holds the map min-max scaled to 0..65535, which the WebUI reads back as 0..1; the shared range
is sent in those units, so the conditioning is the local one up to the PNG's 1/65535 steps.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from depth2img.base import limits
from depth2img.sequences.distribute import WorkerFailed
from depth2img.sequences.passes import FrameJob, load_frame
from depth2img.source import decoding
from depth2img.source.transport import png16_base64, png_base64

# The WebUI's sampler for each of the engine's schedulers (PNDM as diffusers runs it is PLMS).
SAMPLER_NAMES = {"pndm": "PLMS", "ddim": "DDIM", "euler": "Euler"}
# One frame on a busy WebUI (a CPU one included) may take minutes; longer than this counts as a failed worker.
REQUEST_TIMEOUT_S = 900.0
CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WorkerSettings:
    sampler: str = "PLMS"  # the WebUI's sampler name
    checkpoint: str = ""  # a depth checkpoint the WebUIs know (name or title); "" = each one's loaded model
    timeout: float = REQUEST_TIMEOUT_S


def depth_png_and_range(
    depth: np.ndarray, depth_range: tuple[float, float] | None
) -> tuple[str, list[float] | None]:
    """(base64 16-bit PNG of the map, the range in the PNG's 0..1 units). The PNG is min-max scaled
    (encoding.to_uint16), so the range follows the same affine map; a flat map is all zeros, and the range is
    shifted by its value so that the frame keeps its place on the shared scale."""
    encoded = png16_base64(depth)
    if depth_range is None:
        return encoded, None
    low, high = float(depth.min()), float(depth.max())
    span = high - low if high > low else 1.0
    return encoded, [(depth_range[0] - low) / span, (depth_range[1] - low) / span]


def depth2img_args(depth: np.ndarray, depth_range, mask_settings) -> dict:
    """The extension's named args for one frame: the uploaded map as is (pass 1 post-processed it)."""
    depth_image, png_range = depth_png_and_range(depth, depth_range)
    args = {"enabled": True, "source": "upload", "depth_image": depth_image, "depth_kind": "inverse",
            "depth_range": png_range}
    if mask_settings is not None:
        args.update(mask_from_depth=True, mask_low=mask_settings.low, mask_high=mask_settings.high,
                    mask_band_mode=mask_settings.mode, mask_feather=mask_settings.feather,
                    mask_grow=mask_settings.grow, mask_invert=mask_settings.invert,
                    mask_combine=mask_settings.combine, mask_auto=mask_settings.auto)
    return args


def img2img_payload(template, image, depth: np.ndarray, depth_range, settings: WorkerSettings,
                    checkpoint_title: str = "") -> dict:
    """The body of POST /sdapi/v1/img2img for one frame (template: the sequence's GenerationRequest, with its
    output size already chosen)."""
    payload = {
        # Flattened here on the sequence's colour, as pass 1 did for its depth: the WebUI's own would differ.
        "init_images": [png_base64(decoding.flatten(image, template.background))],
        "prompt": template.prompt,
        "negative_prompt": template.negative_prompt or "",
        "seed": template.seed,
        "sampler_name": settings.sampler,
        "steps": template.steps,
        "cfg_scale": template.guidance,
        "denoising_strength": template.strength,
        "width": template.width,
        "height": template.height,
        "resize_mode": int(template.resize_mode),
        "batch_size": 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "alwayson_scripts": {"depth2img": {"args": [depth2img_args(depth, depth_range, template.depth_mask)]}},
    }
    if checkpoint_title:
        # Loaded for this job and kept loaded: restoring the previous model after every frame would reload twice
        # per frame.
        payload["override_settings"] = {"sd_model_checkpoint": checkpoint_title}
        payload["override_settings_restore_afterwards"] = False
    return payload


def _detail(response) -> str:
    """The WebUI's error message (FastAPI's `detail`, or the start of the body)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason
    if isinstance(body, dict):
        for key in ("detail", "error", "errors"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:300]


def _bare_title(title: str) -> str:
    # "tiny-depth.safetensors [0123abcd]" -> "tiny-depth.safetensors"
    return title.rsplit(" [", 1)[0] if title.endswith("]") else title


def _matches(title: str, name: str) -> bool:
    bare = _bare_title(title)
    stem = bare.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return name in (title, bare, stem)


class WebUIWorker:
    """One running WebUI; render() sends one frame and waits for its image (one request at a time)."""

    def __init__(self, url: str, settings: WorkerSettings, max_pixels: int = limits.DEFAULT_MAX_PIXELS):
        self.url = url.rstrip("/")
        self.name = self.url
        self.settings = settings
        self.max_pixels = max_pixels
        self.checkpoint_title: str | None = None  # found by check(), before the first frame

    def _call(self, method: str, path: str, timeout: float, **kwargs):
        import requests

        # A new connection per request, in a session closed after it: Forge resets a connection after an error
        # answer, and a refused frame must not make the next request meet it (the worker would be taken for dead).
        # The header alone is not enough: a connection the server closes late, or not at all, stays pooled.
        try:
            with requests.Session() as http:
                return http.request(method, self.url + path, timeout=timeout, headers={"Connection": "close"},
                                    **kwargs)
        except requests.RequestException as error:
            raise WorkerFailed(f"unreachable: check that a WebUI runs at that URL, started with --api "
                               f"({type(error).__name__}: {error})") from error

    def _json(self, path: str):
        response = self._call("GET", path, CHECK_TIMEOUT_S)
        if response.status_code == 404:
            raise WorkerFailed(f"{path} not found: is this an AUTOMATIC1111 WebUI started with --api and the "
                               "depth2img extension?")
        if response.status_code != 200:
            raise WorkerFailed(f"GET {path}: HTTP {response.status_code}: {_detail(response)}")
        try:
            return response.json()
        except ValueError as error:
            raise WorkerFailed(f"GET {path} did not answer JSON ({error})") from error

    def check(self) -> None:
        """The WebUI answers, has this extension, and the depth checkpoint to use: given, or its loaded model."""
        titles = [entry.get("title", "") for entry in self._json("/depth2img/v1/checkpoints")]
        wanted = self.settings.checkpoint
        if wanted:
            found = [title for title in titles if _matches(title, wanted)]
            if not found:
                raise WorkerFailed(f"has no depth checkpoint {wanted!r} (it has: {', '.join(titles) or 'none'})")
            self.checkpoint_title = found[0]
            return
        loaded = str(self._json("/sdapi/v1/options").get("sd_model_checkpoint", ""))
        if not any(_matches(title, loaded) or _matches(loaded, _bare_title(title)) for title in titles):
            raise WorkerFailed(f"its loaded model {loaded!r} is not a depth checkpoint: choose one of "
                               f"{', '.join(titles) or '(none there)'} with --worker-checkpoint")
        self.checkpoint_title = ""

    def render(self, template, job: FrameJob):
        if self.checkpoint_title is None:
            self.check()
        image, depth = load_frame(job, self.max_pixels)  # a frame that cannot be read fails alone
        payload = img2img_payload(template, image, depth, job.depth_range, self.settings, self.checkpoint_title)
        response = self._call("POST", "/sdapi/v1/img2img", self.settings.timeout, json=payload)
        if 400 <= response.status_code < 500:  # the WebUI refused this frame's request (it names the field)
            raise ValueError(f"{self.name} refused the frame: HTTP {response.status_code}: {_detail(response)}")
        if response.status_code != 200:
            raise WorkerFailed(f"HTTP {response.status_code}: {_detail(response)}")
        try:
            data = base64.b64decode(response.json()["images"][0])
            return decoding.open_image(data, f"the image {self.name} returned", self.max_pixels).convert("RGB")
        except (ValueError, KeyError, IndexError, TypeError, limits.DepthMapError) as error:
            raise WorkerFailed(f"answered without a readable image ({type(error).__name__}: {error})") from error


class RequestsMissing(RuntimeError):
    """requests (the HTTP client) is not installed."""


def webui_workers(urls: list[str], settings: WorkerSettings, max_pixels: int) -> list[WebUIWorker]:
    """One worker per URL (the same URL twice: two requests at a time to that WebUI, which queues them)."""
    try:
        import requests  # noqa: F401
    except ImportError as error:
        raise RequestsMissing(f"--workers needs requests: pip install requests ({error})") from error
    workers = [WebUIWorker(url, settings, max_pixels) for url in urls]
    for index, worker in enumerate(workers):
        if sum(other.url == worker.url for other in workers) > 1:
            worker.name = f"{worker.url} (#{index + 1})"  # messages must say which of the two failed
    return workers
