"""`python -m depth2img app`: a web page on the diffusers engine (current gradio).

One pipeline, loaded once. gradio's queue runs the jobs that use it (preview, generate) one at a time
(concurrency id "pipeline"); other users wait in line and all get their images. The depth panel is
depth2img.panel.builder's, the one the WebUI shows. Files go to --out only (gradio's upload cache included), under
unique names, written atomically. The HTTP API is gradio's own: see the README for a gradio_client call.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import secrets
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from depth2img.base import limits
from depth2img.base.files import write_atomic
from depth2img.base.paths import DEMO_DIR
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.estimate.midas import images_to_tensor
from depth2img.estimate.registry import create_estimator, list_estimators
from depth2img.panel import builder
from depth2img.pipeline.generate import generate
from depth2img.pipeline.load import load_pipeline, make_scheduler
from depth2img.pipeline.request import GenerationRequest
from depth2img.process import fitting
from depth2img.source import decoding, encoding

SCHEDULERS = ("pndm", "ddim", "euler")
# The WebUI's names for them, so the settings text reads as a WebUI infotext (PNDM without PRK steps = PLMS).
SAMPLER_NAMES = {"pndm": "PLMS", "ddim": "DDIM", "euler": "Euler"}
RESIZE_MODES = {
    "just resize": fitting.ResizeMode.JUST_RESIZE,
    "crop and resize": fitting.ResizeMode.CROP_AND_RESIZE,
    "resize and fill": fitting.ResizeMode.RESIZE_AND_FILL,
}
CONCURRENCY_ID = "pipeline"
DEMO_BANNER = (
    "**Demo checkpoint: the pictures are noise.** No depth model was found, so the app runs the embedded demo "
    "checkpoint (the real architecture with tiny sizes and random weights). For real results, start it with "
    "`python -m depth2img app --checkpoint /path/to/512-depth-ema.safetensors`, or put `512-depth-ema.safetensors` "
    "(or `.ckpt`) in `models/Stable-diffusion/`."
)


class StopRequested(Exception):
    """Raised from the denoising loop's step callback when the user pressed Stop."""


@dataclass
class _RunningJob:
    stop: threading.Event = field(default_factory=threading.Event)  # set by Stop, read between steps
    done: threading.Event = field(default_factory=threading.Event)  # set when the job has ended, however
    stopped_at: str = ""  # "after step k of n" when Stop ended it


def painted_mask(editor_value) -> Image.Image | None:
    """White where anything was painted on the editor's layers; None when nothing was (no inpainting)."""
    if not editor_value:
        return None
    layers = [layer for layer in editor_value.get("layers") or [] if layer is not None]
    if not layers:
        return None
    alpha = np.zeros((layers[0].height, layers[0].width), dtype=bool)
    for layer in layers:
        if layer.size != layers[0].size:
            raise ValueError("the mask's layers differ in size: clear the mask and paint it again")
        alpha |= np.asarray(layer.convert("RGBA"))[..., 3] > 0
    if not alpha.any():
        return None
    return Image.fromarray(alpha.astype(np.uint8) * 255, mode="L")


def mask_editor_over(path: str | None) -> dict | None:
    """The mask editor's value for a new init image: the picture as its background, nothing painted yet."""
    return {"background": path, "layers": [], "composite": path} if path else None


def infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """The WebUI's infotext layout: prompt, negative prompt, then "key: value" pairs, values that hold a comma,
    colon or newline JSON-quoted (the WebUI's own quoting rule, so its PNG Info reads them back)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in params.items()))
    return "\n".join(lines)


def _quote(value) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


class DepthApp:
    def __init__(
        self, pipe, out_dir: str | Path, max_pixels: int = limits.DEFAULT_MAX_PIXELS,
        background: str = decoding.DEFAULT_BACKGROUND,
    ):  # fmt: skip
        self.pipe = pipe
        self.out_dir = Path(out_dir).resolve()
        self.max_pixels = max_pixels
        self.background = background  # transparent parts of a picture are flattened on it, as in the WebUI
        self.panel_names: tuple[str, ...] = builder.PANEL_SETTINGS  # the built page's, set by build()
        self.is_demo = pipe.checkpoint_path is not None and Path(pipe.checkpoint_path).parent == DEMO_DIR
        # Each scheduler is built once from the loaded one's training schedule (the engine's one recipe).
        schedule = pipe.scheduler.config
        config = {
            "model": {
                "params": {
                    "timesteps": schedule.num_train_timesteps,
                    "linear_start": schedule.beta_start,
                    "linear_end": schedule.beta_end,
                }
            }
        }
        self.schedulers = {name: make_scheduler(config, name) for name in SCHEDULERS}
        # The scheduler swap and the call must not interleave (the queue runs one job, the API may not).
        self.lock = threading.Lock()
        self._running: dict[str, _RunningJob] = {}  # session -> its running job (a page runs one at a time)
        # Judged once: what this environment and this checkpoint can run does not change while the app serves.
        self.estimators = {info.name: info for info in list_estimators(has_depth_checkpoint=True)}

    # ---- depth ----
    def estimate(self, image, estimator: str) -> np.ndarray:
        """Depth (larger = nearer) of the init image (PIL, or a path from the page) with the named estimator:
        the checkpoint's MiDaS in the pipeline, or a model folder's network (depth2img.estimate.registry)."""
        self._check_estimator(estimator)
        if not isinstance(image, Image.Image):
            image = self.open_upload(image, "the init image")
        image = decoding.flatten(image, self.background)
        with self.lock:
            if estimator == CheckpointMidasEstimator.name:
                return self.pipe.estimate_depth(image)[0].numpy()
            network = create_estimator(estimator, device=self.pipe.device)
            return network.estimate(images_to_tensor(image))[0].cpu().numpy()

    def open_upload(self, path: str, what: str) -> Image.Image:
        # As bytes: messages name the input, not gradio's cache path.
        return decoding.open_image(Path(path).read_bytes(), what, self.max_pixels)

    def _check_estimator(self, name: str) -> None:
        info = self.estimators.get(name)
        if info is None:
            raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(self.estimators)}")
        if not info.available:
            raise ValueError(f"estimator {name!r} is unavailable here: {info.reason}")

    # ---- generation ----
    def generate(self, values: dict, request=None, progress=None, warn=None):
        """One job from the page's values by name (the job's inputs and the panel's settings); returns (image
        paths, 16-bit depth PNG path, settings text, seed used). warn(message): a notice for the user, shown while
        the job runs (the page passes gr.Warning; default: the server's stderr)."""
        warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
        args, scheduler, job = self._job_from_values(values, warn)
        result = self._run(job, scheduler, request, progress)
        text = self._settings_text(args, job, scheduler, result)
        paths, depth_path = self.save(result, job.seed, text)
        return [str(p) for p in paths], str(depth_path), text, job.seed

    def _job_from_values(self, values: dict, warn) -> tuple:
        """(the panel's settings, the scheduler's name, the GenerationRequest) from the page's values."""
        args = builder.settings_from_values([values.get(name) for name in self.panel_names], self.panel_names)
        scheduler, resize_mode = values.get("scheduler") or "pndm", values.get("resize_mode") or "just resize"
        if scheduler not in self.schedulers:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}")
        init_image = values.get("init_image")
        image = self.open_upload(init_image, "the init image") if init_image else None
        depth = None
        if args.source == "upload":
            decoded = builder.uploaded_depth(args, self.max_pixels)
            depth = decoded.depth
            if decoded.notice:  # e.g. a distance map read without its range: approximate
                warn(decoded.notice)
            if float(depth.max()) <= float(depth.min()):
                warn("The depth map is flat (one value everywhere): it gives the model no shape to keep.")
        elif image is not None and args.estimator != CheckpointMidasEstimator.name:
            # A model folder's estimate, at the image's size (as the CLI does): the engine takes it as the map.
            depth = fitting.resize(self.estimate(image, args.estimator), image.width, image.height)
        elif image is not None:
            self._check_estimator(args.estimator)
        if image is None and depth is None:
            raise ValueError("nothing to start from: add an init image, or upload a depth map for txt2img")
        seed = values.get("seed")
        seed = int(seed) if seed is not None and int(seed) >= 0 else secrets.randbelow(2**32)
        job = GenerationRequest(
            background=self.background,
            prompt=values.get("prompt") or "",
            negative_prompt=values.get("negative_prompt") or None,
            image=image,
            mask=painted_mask(values.get("inpaint_mask")),
            depth=depth,
            steps=int(values.get("steps") or 30),
            guidance=float(values["guidance"] if values.get("guidance") is not None else 7.5),
            strength=float(values.get("strength") or 0.8),
            seed=seed,
            width=int(values.get("width") or 0) or None,
            height=int(values.get("height") or 0) or None,
            batch_size=int(values.get("batch_size") or 1),
            resize_mode=RESIZE_MODES[resize_mode],
            postprocess=args.postprocess_kwargs(),
            depth_range=args.depth_range,
            depth_mask=args.mask_settings(),
        )

        return args, scheduler, job

    def _run(self, job, scheduler: str, request, progress):
        """generate() under the pipeline's lock, stoppable between steps by this page's Stop."""
        session = getattr(request, "session_hash", None) or "api"
        job_state = self._running[session] = _RunningJob()

        def on_step(done: int, total: int) -> None:
            if job_state.stop.is_set():
                raise StopRequested(f"after step {done} of {total}")
            if progress is not None:
                progress((done, total), desc="Denoising", unit="steps")

        if progress is not None:
            progress(0, desc="Depth and prompt")
        try:
            with self.lock:
                self.pipe.scheduler = self.schedulers[scheduler]
                result = generate(self.pipe, job, progress=False, on_step=on_step)
        except StopRequested as stopped:
            job_state.stopped_at = str(stopped)
            raise
        finally:
            self._running.pop(session, None)
            job_state.done.set()

        return result

    def _settings_text(self, args, job, scheduler: str, result) -> str:
        """The job's settings as the WebUI's infotext."""
        settings = dataclasses.replace(args, enabled=True).to_infotext()
        return infotext(
            job.prompt,
            job.negative_prompt or "",
            {
                "Steps": job.steps,
                "Sampler": SAMPLER_NAMES[scheduler],
                "CFG scale": job.guidance,
                "Seed": job.seed,
                "Size": f"{result.images[0].width}x{result.images[0].height}",
                "Model": Path(self.pipe.checkpoint_path).stem if self.pipe.checkpoint_path else "diffusers",
                **({"Denoising strength": job.strength} if result.mode != "txt2img" else {}),
                "Depth2Img mode": result.mode,
                **settings,
                **({"Depth2Img mask": result.mask_note} if result.mask_note else {}),
            },
        )

    def stop(self, request=None, wait_s: float = 60.0) -> str:
        """Stop this page's running job at the next denoising step, wait for it to end, and say how it ended.

        The Stop button also cancels the page's generate event: gradio drops a job still waiting in line, and
        stops listening to a running one (a thread, which only this flag ends), so this is where the page
        learns the step it stopped at.
        """
        session = getattr(request, "session_hash", None) or "api"
        job = self._running.get(session)
        if job is None:
            return "Nothing of this page was running (a job still waiting in line is dropped)."
        job.stop.set()
        if not job.done.wait(wait_s):
            return "Stopping: the job ends at its next denoising step."
        if job.stopped_at:
            return f"Stopped {job.stopped_at}; no image was made."
        return "The job had already finished."

    def save(self, result, seed: int, text: str) -> tuple[list[Path], Path]:
        """PNG files under --out with fresh names (never over an existing file), the settings in their info:
        the pictures, the 16-bit depth map and, for inpainting, the mask."""
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}-{secrets.token_hex(4)}"
        while any(self.out_dir.glob(f"{stem}*")):  # the random part makes this practically never loop
            stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}-{secrets.token_hex(4)}"
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)  # what the WebUI's PNG Info reads
        paths = []
        for index, picture in enumerate(result.images):
            path = self.out_dir / f"{stem}-{index}.png"
            write_atomic(path, lambda temporary, picture=picture: picture.save(temporary, format="PNG", pnginfo=info))
            paths.append(path)
        width, height = result.images[0].size
        depth = fitting.resize(result.depth, width, height)  # at the pictures' size, as the CLI writes it
        depth_path = encoding.save_depth(depth, self.out_dir / f"{stem}-depth.png")
        if result.mask is not None:  # inpainting: the mask used (painted, from a depth band, or both)
            write_atomic(self.out_dir / f"{stem}-mask.png", lambda temporary: result.mask.save(temporary, format="PNG"))
        return paths, depth_path

    # ---- the page ----
    def build(self):
        import gradio as gr

        # gradio's cache (uploads, served copies) under --out is emptied of files older than a day, hourly.
        with gr.Blocks(title="Depth2Img", analytics_enabled=False, delete_cache=(3600, 86400)) as blocks:
            gr.Markdown("# Depth2Img — Stable Diffusion 2 depth-to-image")
            if self.is_demo:
                gr.Markdown(DEMO_BANNER, elem_id="depth2img_demo_banner")
            with gr.Row():
                with gr.Column():
                    job_inputs, panel = self._input_column(gr)
                with gr.Column():
                    generate_button, stop_button, gallery, depth_download, used_seed, settings_text = (
                        self._output_column(gr)
                    )
            self._wire(job_inputs, panel, generate_button, stop_button, gallery, depth_download, used_seed,
                       settings_text)  # fmt: skip
        return blocks

    def _input_column(self, gr):
        """The job's inputs (by name, in the API's order) and the depth panel."""
        init_image = gr.Image(
            label="Init image (leave empty for txt2img from an uploaded depth map)",
            type="filepath",
            image_mode=None,
            sources=["upload", "clipboard"],
            elem_id="depth2img_init_image",
        )
        prompt = gr.Textbox("", label="Prompt", lines=2, elem_id="depth2img_prompt")
        negative_prompt = gr.Textbox("", label="Negative prompt", lines=1, elem_id="depth2img_negative")
        with gr.Row():
            steps = gr.Slider(1, 150, value=30, step=1, label="Steps", elem_id="depth2img_steps")
            guidance = gr.Slider(0, 30, value=7.5, step=0.5, label="Guidance (CFG scale)")
            strength = gr.Slider(
                0.01, 1, value=0.8, step=0.01, label="Strength (denoising)", elem_id="depth2img_strength"
            )
        with gr.Row():
            seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", elem_id="depth2img_seed")
            scheduler = gr.Dropdown(list(SCHEDULERS), value="pndm", label="Scheduler")
            batch_size = gr.Slider(1, 8, value=1, step=1, label="Number of images")
        with gr.Row():
            # 0: the source's aspect at about 512x512 (the engine's default_size)
            width = gr.Slider(0, 2048, value=0, step=8, label="Width (0 = auto)", elem_id="depth2img_width")
            height = gr.Slider(
                0, 2048, value=0, step=8, label="Height (0 = auto)", elem_id="depth2img_height"
            )
            resize_mode = gr.Dropdown(list(RESIZE_MODES), value="just resize", label="Resize mode")
        with gr.Accordion("Depth", open=True):
            panel = builder.build_depth_panel(
                "depth2img",
                estimators=list(self.estimators.values()),
                max_pixels=lambda: self.max_pixels,
                extras=("depth_range", "mask"),  # the engine applies both
            )
            self.panel_names = panel.names
        with gr.Accordion("Inpaint: paint the area to repaint", open=False):
            inpaint_mask = gr.ImageEditor(
                label="Mask (paint over the init image; white = repaint)",
                type="pil",
                sources=["upload"],
                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                elem_id="depth2img_mask",
            )
        job_inputs = dict(
            init_image=init_image, inpaint_mask=inpaint_mask, prompt=prompt, negative_prompt=negative_prompt,
            steps=steps, guidance=guidance, strength=strength, seed=seed, scheduler=scheduler, width=width,
            height=height, resize_mode=resize_mode, batch_size=batch_size,
        )  # fmt: skip
        return job_inputs, panel

    def _output_column(self, gr):
        """Generate and Stop, and where the results show."""
        with gr.Row():
            generate_button = gr.Button("Generate", variant="primary", elem_id="depth2img_generate")
            stop_button = gr.Button("Stop", variant="stop", elem_id="depth2img_stop")
        gallery = gr.Gallery(label="Images", format="png", columns=2, elem_id="depth2img_gallery")
        depth_download = gr.File(label="Depth map (16-bit PNG, white = near)", elem_id="depth2img_depth")
        used_seed = gr.Number(
            None, label="Seed used", precision=0, interactive=False, elem_id="depth2img_used_seed"
        )
        settings_text = gr.Textbox(
            label="Settings (the WebUI's infotext keys)", lines=4, elem_id="depth2img_settings"
        )
        return generate_button, stop_button, gallery, depth_download, used_seed, settings_text

    def _wire(self, job_inputs, panel, generate_button, stop_button, gallery, depth_download, used_seed,
              settings_text):  # fmt: skip
        """Preview, the mask editor's background, Generate (api_name "generate") and Stop."""
        queue = dict(concurrency_limit=1, concurrency_id=CONCURRENCY_ID)
        panel.wire_preview(
            self.estimate,
            image_inputs={"init_image": job_inputs["init_image"]},
            pick_image=self._init_image_for_preview,
            api_name="preview_depth",
            **queue,
        )
        # The mask editor paints over the init image.
        job_inputs["init_image"].change(
            fn=mask_editor_over,
            inputs=[job_inputs["init_image"]],
            outputs=[job_inputs["inpaint_mask"]],
            queue=False,
            **builder.hidden_api(),
        )
        inputs = {**job_inputs, **panel.components}
        event = generate_button.click(
            fn=self._generate_event(list(inputs)),
            inputs=list(inputs.values()),
            outputs=[gallery, depth_download, settings_text, used_seed],
            show_progress_on=[gallery],
            api_name="generate",
            **queue,
        )
        # On the queue (gradio shows its message) but never waiting behind a job: no concurrency limit.
        stop_button.click(
            fn=self._stop_event(),
            concurrency_limit=None,
            concurrency_id="stop",
            cancels=[event],
            **builder.hidden_api(),
        )

    def _init_image_for_preview(self, path: str | None) -> Image.Image | None:
        return self.open_upload(path, "the init image") if path else None

    def _generate_event(self, names: list[str]):
        """generate() as a gradio event with parameters `names` (the API's names, all optional: omitted ones take
        the page's defaults), input problems and Stop as page messages; the app keeps serving."""
        import gradio as gr

        def run_generate(*args):
            # gradio appends the request and the progress tracker, as the signature below places them.
            *values, request, progress = args
            try:
                named = dict(zip(names, values, strict=True))
                return self.generate(named, request=request, progress=progress, warn=gr.Warning)
            # Expected outcomes, not faults: a message in the page, no traceback in the log.
            except StopRequested:
                # The Stop button's own event tells the page where it stopped (this event may be cancelled
                # already): leave the outputs as they are.
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            except ValueError as error:  # the core's input errors name the problem and what to do
                raise gr.Error(str(error), print_exception=False) from error
            except Exception as error:
                traceback.print_exc()
                message = f"generation failed: {type(error).__name__}: {error} (details in the server log)"
                raise gr.Error(message) from error

        # What gradio reads to name the API's parameters and to inject the request (by annotation) and the
        # progress tracker (by default value).
        keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
        run_generate.__signature__ = inspect.Signature(
            [inspect.Parameter(name, keyword, default=None) for name in names]
            + [
                inspect.Parameter("request", keyword, default=None, annotation=gr.Request),
                inspect.Parameter("progress", keyword, default=gr.Progress()),
            ]
        )
        run_generate.__annotations__ = {"request": gr.Request}
        return run_generate

    def _stop_event(self):
        import gradio as gr

        def stop(request: gr.Request):
            gr.Info(self.stop(request))

        stop.__annotations__["request"] = gr.Request  # see _generate_event
        return stop


def launch(
    checkpoint: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7861,
    share: bool = False,
    out: str | Path = "outputs/app",
    max_pixels: int = limits.DEFAULT_MAX_PIXELS,
    block: bool = True,
    background: str = decoding.DEFAULT_BACKGROUND,
):
    """Load the pipeline once and serve the page; returns gradio's Blocks (block=False: in a background thread)."""
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # gradio keeps uploads and served files in its cache: under --out, so nothing is written elsewhere.
    os.environ["GRADIO_TEMP_DIR"] = str(out_dir / ".gradio-cache")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry or version check
    pipe = load_pipeline(checkpoint, announce=lambda message: print(message, file=sys.stderr))
    app = DepthApp(pipe, out_dir, max_pixels=max_pixels, background=background)
    blocks = app.build()
    blocks.queue(default_concurrency_limit=1)
    blocks.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(out_dir)],
        show_error=True,
        prevent_thread_lock=not block,
        quiet=False,
    )
    return blocks
