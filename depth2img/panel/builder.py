"""The one depth panel, built by both hosts: the WebUI script (gradio 3.41.2) and the app (current gradio).

Here: the panel's components (defaults from the args schema), its visibility rules, the preview callback
and the infotext keys. The host keeps what is its own: where the panel sits, the WebUI's `enabled`,
`return_depth`, `checkpoint`, `depth_dir` and `batch_depth_scale`, and how depth is estimated
(`estimate(image, estimator name)` -> an HxW array, larger = nearer).

gradio is imported lazily (the core imports without it). The few API differences between gradio 3.41 and
current gradio are the small helpers below, chosen from the installed gradio's signatures, not its version.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from depth2img.base import limits
from depth2img.estimate import registry
from depth2img.process import masks, postprocessing
from depth2img.schema.args import INFOTEXT_PREFIX, MASK_COMBINE_MODES, SOURCES, Depth2ImgArgs
from depth2img.source import decoding, depth_kinds, encoding

# The panel's settings, in the order its components are passed to callbacks: a subset of Depth2ImgArgs'
# fields, in the schema's order (DepthPanel.in_schema_order adds the host's own in between).
PANEL_SETTINGS = (
    "source", "depth_image", "estimator", "invert", "clip_near", "clip_far", "gamma", "blur",
    "depth_kind", "distance_range", "exr_channel",
)  # fmt: skip
# Settings that say how to read an uploaded map: shown only for "upload".
UPLOAD_SETTINGS = ("depth_kind", "distance_range", "exr_channel")
# Optional parts, for hosts that apply them (the schema's last fields, so a host without them keeps the
# positional order): a fixed depth range, and an inpainting mask from a depth band.
EXTRAS = {
    "depth_range": ("depth_range",),
    "mask": (
        "mask_from_depth", "mask_low", "mask_high", "mask_band_mode", "mask_feather", "mask_grow", "mask_invert",
        "mask_combine", "mask_auto",
    ),
}  # fmt: skip

SOURCE_LABELS = {"estimate": "Estimate from the init image", "upload": "Upload a depth map"}
DEPTH_KIND_LABELS = {
    "auto": "auto (EXR: distance; others: white = near)",
    "inverse": "inverse depth (white = near)",
    "distance": "distance (larger = farther: Z pass)",
}
DEPTH_FILE_TYPES = [".png", ".tif", ".tiff", ".exr", ".npy"]
DEPTH_FILE_LABEL = "Depth map (8/16-bit PNG, TIFF, EXR, .npy; 16 bits are kept)"
# Slider ranges: inside the schema's checks, narrowed to what is useful to drag (the API takes the full range).
SLIDERS = {
    "clip_near": dict(minimum=0, maximum=100, step=0.5, label="Near clip (percentile)"),
    "clip_far": dict(minimum=0, maximum=100, step=0.5, label="Far clip (percentile)"),
    "gamma": dict(minimum=0.1, maximum=5, step=0.05, label="Gamma"),
    "blur": dict(minimum=0, maximum=32, step=0.5, label="Blur (sigma, px)"),
}
MASK_SLIDERS = {
    "mask_low": dict(minimum=0, maximum=100, step=0.5, label="Band from (percent: 0 = farthest)"),
    "mask_high": dict(minimum=0, maximum=100, step=0.5, label="Band to (100 = nearest)"),
    "mask_feather": dict(minimum=0, maximum=64, step=1, label="Feather (px)"),
    "mask_grow": dict(minimum=-64, maximum=64, step=1, label="Grow (px; negative shrinks)"),
}
_DEFAULTS = {f.name: f.default for f in fields(Depth2ImgArgs)}


def _slider_step(name: str) -> float:
    return float({**SLIDERS, **MASK_SLIDERS}[name]["step"])


def infotext_key(name: str) -> str:
    return f"{INFOTEXT_PREFIX} {name}"


# ---- compat: gradio 3.41 vs current gradio ---------------------------------------------------------


def _gradio():
    import gradio

    return gradio


def _accepts(cls, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def output_image(label: str, **kwargs):
    """A read-only image with a download button (3.41: show_download_button; current: buttons)."""
    gr = _gradio()
    if _accepts(gr.Image, "format"):
        kwargs["format"] = "png"  # gradio's default, WebP, is lossy
    if _accepts(gr.Image, "buttons"):
        kwargs["buttons"] = ["download"]
    elif _accepts(gr.Image, "show_download_button"):
        kwargs["show_download_button"] = True
    return gr.Image(label=label, interactive=False, type="pil", **kwargs)


def hidden_api() -> dict:
    """Event kwargs that keep an internal event (visibility, thumbnail) out of the app's API page."""
    gr = _gradio()
    if not gr.__version__.startswith("3.") and "api_visibility" in inspect.signature(gr.Button.click).parameters:
        return {"api_visibility": "private"}
    return {"api_name": False}


def js_kwargs(js: str | None) -> dict:
    """An event's client-side function: `_js=` in gradio 3, `js=` from gradio 4."""
    if js is None:
        return {}
    return {"_js": js} if _gradio().__version__.startswith("3.") else {"js": js}


# ---- the panel ------------------------------------------------------------------------------------


@dataclass
class DepthPanel:
    components: dict[str, Any]  # setting name -> component, in the schema's order (PANEL_SETTINGS + extras)
    depth_thumbnail: Any
    preview_button: Any
    preview_gray: Any
    preview_color: Any
    preview_mask: Any = None  # with the "mask" extra: the mask the band gives
    mask_over_image: bool = False  # show the mask over the init image (red = repaint) rather than alone
    max_pixels: Callable[[], int] = lambda: limits.DEFAULT_MAX_PIXELS  # read per call: a host setting

    def __getitem__(self, name: str):
        return self.components[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.components)

    @property
    def settings(self) -> list:
        """The setting components in `names` order (callbacks receive their values in this order)."""
        return list(self.components.values())

    def in_schema_order(self, host_components: dict[str, Any]) -> list:
        """The panel's and the host's own setting components (e.g. the WebUI's enabled, return_depth), in
        Depth2ImgArgs' field order: the order of the WebUI's positional API list."""
        named = {**self.components, **host_components}
        order = [f.name for f in fields(Depth2ImgArgs)]
        present = [name for name in order if name in named]
        if present != order[: len(present)]:  # a gap would shift every later position of the list
            raise ValueError(f"the positional list would skip {sorted(set(order[: len(present)]) - set(present))}")
        return [named[name] for name in present]

    @property
    def infotext_fields(self) -> list[tuple[Any, str]]:
        """(component, infotext key) of every setting but the depth image's bytes."""
        return [(c, infotext_key(name)) for name, c in self.components.items() if name != "depth_image"]

    def wire_preview(
        self,
        estimate: Callable[[Any, str], np.ndarray],
        image_inputs: dict | None = None,
        pick_image: Callable[..., Any] | None = None,
        **event_kwargs,
    ):
        """Wire "Preview depth": `image_inputs` ({parameter name: component}) then the panel's settings;
        `pick_image(*image_values)` chooses the init image among them (default: the first one given).
        event_kwargs go to gradio's click (api_name, queue settings, js). Returns the event.

        The image inputs come first: a client-side function (js) sees inputs then outputs, so only the
        first positions are at fixed places (the WebUI puts its sub-tab index at 0)."""
        image_inputs = image_inputs or {}
        count = len(image_inputs)

        def preview(*values):
            images = values[:count]
            image = pick_image(*images) if pick_image else next((i for i in images if i is not None), None)
            args = settings_from_values(values[count:], self.names)
            depth = panel_depth(args, image, estimate, self.max_pixels())
            views = depth_views(depth)
            if self.preview_mask is None:
                return views
            mask = preview_mask(args, depth, image)
            if mask is not None and self.mask_over_image and image is not None:
                mask = mask_over_image(image, mask)
            return (*views, mask)

        fn = _as_gradio_errors(preview)
        # Named parameters (all optional) so the HTTP API documents and accepts them by name.
        fn.__signature__ = inspect.Signature(
            [
                inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                for name in (*image_inputs, *self.names)
            ]
        )
        outputs = [self.preview_gray, self.preview_color] + ([self.preview_mask] if self.preview_mask else [])
        return self.preview_button.click(
            fn=fn,
            inputs=[*image_inputs.values(), *self.settings],
            outputs=outputs,
            **event_kwargs,
        )


def visibility(source: str, has_init_image: bool = True) -> list[dict]:
    """Updates for (depth file, its thumbnail, *UPLOAD_SETTINGS, estimator): what reads an uploaded map only for
    "upload", the estimator only where an init image can be estimated."""
    gr = _gradio()
    upload = source == "upload"
    return [gr.update(visible=upload)] * (2 + len(UPLOAD_SETTINGS)) + [gr.update(visible=has_init_image and not upload)]


# Pairs of sliders that must keep lower < upper (the schema refuses them crossed): (lower, upper).
COUPLED_SLIDERS = (("clip_far", "clip_near"), ("mask_low", "mask_high"))


def keep_apart(lower: float, upper: float, moved: str, step: float, bounds=(0.0, 100.0)) -> tuple[float, float]:
    """(lower, upper) after the user moved one of two coupled sliders: where they would meet or cross, the other
    gives way to one step beyond the moved one; at the end of the range the moved one stops a step short (as the
    DepthMap extension couples its near/far clip)."""
    if lower < upper:
        return lower, upper
    low_end, high_end = bounds
    if moved == "lower":
        lower = min(lower, high_end - step)
        return lower, lower + step
    upper = max(upper, low_end + step)
    return upper - step, upper


def _couple(lower, upper, step: float) -> None:
    """Wire two sliders so that they never cross: an update only for a value that changes (no event loop)."""
    gr = _gradio()

    def moved(which):
        def answer(low, high):
            new_low, new_high = keep_apart(float(low), float(high), which, step)
            return [gr.update(value=new_low) if new_low != low else gr.update(),
                    gr.update(value=new_high) if new_high != high else gr.update()]  # fmt: skip

        return answer

    for which, slider in (("lower", lower), ("upper", upper)):
        slider.change(fn=moved(which), inputs=[lower, upper], outputs=[lower, upper], queue=False, **hidden_api())


def build_depth_panel(
    elem_prefix: str,
    *,
    has_init_image: bool = True,
    estimators: list | None = None,
    max_pixels: Callable[[], int] | None = None,
    extras: Sequence[str] = (),
    mask_over_image: bool = False,
) -> DepthPanel:
    """Create the panel's components in the current gradio layout context and wire its own events
    (visibility, upload thumbnail). The host then calls `panel.wire_preview(...)`.

    has_init_image False (the WebUI's txt2img): only an uploaded map can apply, so the source is fixed to
    "upload" and the estimator is hidden. estimators: depth2img.estimate.registry.EstimatorInfo list (default: the
    registry, availability not judged). max_pixels: the host's size limit for depth maps, read per call.
    extras: names in EXTRAS the host applies ("depth_range", "mask"); a host shows only what it applies.
    mask_over_image: the preview shows the band's mask over the init image (red = repaint), not the mask alone.
    """
    unknown = sorted(set(extras) - set(EXTRAS))
    if unknown:
        raise ValueError(f"unknown panel extras {unknown}; choose from {', '.join(EXTRAS)}")
    gr = _gradio()
    max_pixels = max_pixels or (lambda: limits.DEFAULT_MAX_PIXELS)
    estimators = registry.list_estimators() if estimators is None else estimators
    c = {}  # setting name -> component, filled row by row in the panel's layout

    def elem(name: str) -> str:
        return f"{elem_prefix}_{name}"

    source_value = _DEFAULTS["source"] if has_init_image else "upload"
    upload = source_value == "upload"
    _source_row(gr, c, elem, estimators, has_init_image, source_value)
    depth_thumbnail = _upload_rows(gr, c, elem, upload)
    _postprocess_rows(gr, c, elem)
    if "depth_range" in extras:
        _depth_range_row(gr, c, elem)
    if "mask" in extras:
        _mask_rows(gr, c, elem)
    preview_button, preview_gray, preview_color, preview_mask = _preview_rows(
        gr, elem, with_mask="mask" in extras, mask_over_image=mask_over_image
    )
    _wire_panel(c, depth_thumbnail, has_init_image, max_pixels)
    order = [f.name for f in fields(Depth2ImgArgs)]
    return DepthPanel(
        components={name: c[name] for name in sorted(c, key=order.index)},
        depth_thumbnail=depth_thumbnail,
        preview_button=preview_button,
        preview_gray=preview_gray,
        preview_color=preview_color,
        preview_mask=preview_mask,
        mask_over_image=mask_over_image,
        max_pixels=max_pixels,
    )


def _source_row(gr, c: dict, elem: Callable[[str], str], estimators: list, has_init_image: bool, source_value: str):
    """Depth source and estimator (the estimator's info lists the unavailable ones with the reason)."""
    unavailable = "; ".join(f"{e.name}: {e.reason}" for e in estimators if not e.available)
    upload = source_value == "upload"
    with gr.Row(elem_classes=["depth2img-row"]):
        c["source"] = gr.Radio(
            choices=[(SOURCE_LABELS[s], s) for s in SOURCES],
            value=source_value,
            label="Depth source",
            visible=has_init_image,
            elem_id=elem("source"),
        )
        c["estimator"] = gr.Dropdown(
            choices=[e.name for e in estimators],
            value=_DEFAULTS["estimator"],
            label="Estimator",
            info=f"Unavailable here: {unavailable}" if unavailable else None,
            visible=has_init_image and not upload,
            elem_id=elem("estimator"),
        )


def _upload_rows(gr, c: dict, elem: Callable[[str], str], upload: bool):
    """The uploaded depth map, its thumbnail (returned) and how to read it (UPLOAD_SETTINGS)."""
    with gr.Row(elem_classes=["depth2img-row"]):
        c["depth_image"] = gr.File(
            label=DEPTH_FILE_LABEL,
            type="binary",
            file_types=DEPTH_FILE_TYPES,
            visible=upload,
            elem_id=elem("depth_file"),
        )
        depth_thumbnail = output_image(
            "Uploaded depth map", height=160, visible=upload, elem_id=elem("depth_thumbnail")
        )
    with gr.Row(elem_classes=["depth2img-row"]):
        c["depth_kind"] = gr.Radio(
            choices=[(DEPTH_KIND_LABELS[k], k) for k in depth_kinds.DEPTH_KINDS],
            value=_DEFAULTS["depth_kind"],
            label="The map holds",
            visible=upload,
            elem_id=elem("depth_kind"),
        )
        c["distance_range"] = gr.Textbox(
            value="",
            label="Distance range: near, far",
            info="scene units of a normalized distance map (8/16-bit, EXR Mist); empty: approximate",
            visible=upload,
            elem_id=elem("distance_range"),
        )
        c["exr_channel"] = gr.Textbox(
            value=_DEFAULTS["exr_channel"],
            label="EXR channel",
            info="empty: found by Blender's names",
            visible=upload,
            elem_id=elem("exr_channel"),
        )
    return depth_thumbnail


def _postprocess_rows(gr, c: dict, elem: Callable[[str], str]) -> None:
    """Invert and the post-processing sliders (SLIDERS)."""
    with gr.Row(elem_classes=["depth2img-row"]):
        c["invert"] = gr.Checkbox(_DEFAULTS["invert"], label="Invert (swap near and far)", elem_id=elem("invert"))
    with gr.Row(elem_classes=["depth2img-row"]):
        for name, options in SLIDERS.items():
            c[name] = gr.Slider(value=_DEFAULTS[name], elem_id=elem(name), **options)


def _depth_range_row(gr, c: dict, elem: Callable[[str], str]) -> None:
    """The "depth_range" extra: a fixed range for the conditioning."""
    c["depth_range"] = gr.Textbox(
        value="",
        label="Fixed depth range: lo, hi",
        info="in the processed map's units, conditioned as -1..1 (clamped); empty: the map's own min-max",
        elem_id=elem("depth_range"),
    )


def _mask_rows(gr, c: dict, elem: Callable[[str], str]) -> None:
    """The "mask" extra: an inpainting mask from a depth band."""
    with gr.Accordion("Inpaint mask from a depth band", open=False, elem_id=elem("mask_panel")):
        with gr.Row(elem_classes=["depth2img-row"]):
            c["mask_from_depth"] = gr.Checkbox(
                _DEFAULTS["mask_from_depth"], label="Repaint a depth band", elem_id=elem("mask_from_depth")
            )
            c["mask_auto"] = gr.Checkbox(
                _DEFAULTS["mask_auto"],
                label="Auto band (from painted strokes' depth, else Otsu)",
                elem_id=elem("mask_auto"),
            )
            c["mask_invert"] = gr.Checkbox(
                _DEFAULTS["mask_invert"], label="Invert (repaint outside the band)", elem_id=elem("mask_invert")
            )
        with gr.Row(elem_classes=["depth2img-row"]):
            for name in ("mask_low", "mask_high"):
                c[name] = gr.Slider(value=_DEFAULTS[name], elem_id=elem(name), **MASK_SLIDERS[name])
            c["mask_band_mode"] = gr.Radio(
                choices=[("percent of the range", "range"), ("percentile of the pixels", "percentile")],
                value=_DEFAULTS["mask_band_mode"],
                label="Band in",
                elem_id=elem("mask_band_mode"),
            )
        with gr.Row(elem_classes=["depth2img-row"]):
            for name in ("mask_feather", "mask_grow"):
                c[name] = gr.Slider(value=_DEFAULTS[name], elem_id=elem(name), **MASK_SLIDERS[name])
            c["mask_combine"] = gr.Radio(
                choices=list(MASK_COMBINE_MODES),
                value=_DEFAULTS["mask_combine"],
                label="With a painted mask",
                elem_id=elem("mask_combine"),
            )


def _preview_rows(gr, elem: Callable[[str], str], with_mask: bool, mask_over_image: bool):
    """Preview depth: the button and the gray, colour (and mask) views."""
    with gr.Row(elem_classes=["depth2img-row"]):
        preview_button = gr.Button("Preview depth", elem_id=elem("preview"))
    with gr.Row(elem_classes=["depth2img-row"]):
        preview_gray = output_image("Depth (gray)", elem_id=elem("preview_gray"))
        preview_color = output_image("Depth (colour)", elem_id=elem("preview_color"))
        preview_mask = None
        if with_mask:
            label = "Mask over the image (red = repaint)" if mask_over_image else "Mask from the band (white = repaint)"
            preview_mask = output_image(label, elem_id=elem("preview_mask"))

    return preview_button, preview_gray, preview_color, preview_mask


def _wire_panel(c: dict, depth_thumbnail, has_init_image: bool, max_pixels: Callable[[], int]) -> None:
    """The panel's own events: coupled sliders, visibility by source, the upload's thumbnail."""
    for lower, upper in COUPLED_SLIDERS:
        if lower in c and upper in c:
            _couple(c[lower], c[upper], step=min(_slider_step(lower), _slider_step(upper)))
    upload_options = [c[name] for name in UPLOAD_SETTINGS]
    c["source"].change(
        fn=lambda value: visibility(value, has_init_image),
        inputs=[c["source"]],
        outputs=[c["depth_image"], depth_thumbnail, *upload_options, c["estimator"]],
        queue=False,
        **hidden_api(),
    )
    # The thumbnail decodes the upload at once: a file that is not a depth map is reported before any job (on
    # the queue: gradio shows the message of a queued event's error).
    for trigger in (c["depth_image"], c["depth_kind"]):
        trigger.change(
            fn=_as_gradio_errors(lambda *values: thumbnail(*values, max_pixels=max_pixels())),
            inputs=[c["depth_image"], *upload_options],
            outputs=[depth_thumbnail],
            **hidden_api(),
        )


# ---- callbacks (plain functions: testable without gradio) -------------------------------------------


def settings_from_values(values: Sequence, names: Sequence[str] = PANEL_SETTINGS) -> Depth2ImgArgs:
    """Depth2ImgArgs from the panel's values in `names` order; bad values raise ArgsError naming the key."""
    named = dict(zip(names, values, strict=True))
    # gradio gives None for an empty file box; the schema wants it absent.
    return Depth2ImgArgs.from_dict({k: v for k, v in named.items() if v is not None})


def uploaded_depth(args: Depth2ImgArgs, max_pixels: int = limits.DEFAULT_MAX_PIXELS) -> depth_kinds.DecodedDepth:
    """The uploaded map read as the settings say (depth kind, distance range, EXR channel)."""
    if not args.depth_image:
        raise limits.DepthMapError("no depth map uploaded: upload one (PNG, TIFF, EXR or .npy), or choose 'estimate'")
    return decoding.decode_depth(args.depth_image, **args.decode_kwargs(), max_pixels=max_pixels)


def panel_depth(
    args: Depth2ImgArgs,
    image,
    estimate: Callable[[Any, str], np.ndarray],
    max_pixels: int = limits.DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """The processed depth map the panel's settings give: the upload, or `estimate(image, estimator name)`,
    post-processed. The host's estimate refuses an unknown or unavailable estimator (ValueError)."""
    if args.source == "upload":
        depth = uploaded_depth(args, max_pixels).depth
    else:
        if image is None:
            raise limits.DepthMapError("no init image to estimate depth from: add one, or upload a depth map")
        depth = np.asarray(estimate(image, args.estimator), dtype=np.float32)
    return postprocessing.postprocess(depth, **args.postprocess_kwargs())


def gray_image(depth: np.ndarray):
    from PIL import Image

    return Image.fromarray((encoding.to_uint16(depth) >> 8).astype(np.uint8))


def depth_views(depth: np.ndarray):
    """(gray, colour) PIL views of a processed depth map."""
    from PIL import Image

    return gray_image(depth), Image.fromarray(encoding.colorize(depth))


def preview_images(
    args: Depth2ImgArgs,
    image,
    estimate: Callable[[Any, str], np.ndarray],
    max_pixels: int = limits.DEFAULT_MAX_PIXELS,
):
    """(gray, colour) PIL previews of the processed depth map."""
    return depth_views(panel_depth(args, image, estimate, max_pixels))


def preview_mask(args: Depth2ImgArgs, depth: np.ndarray, image=None):
    """The mask the depth band gives (L, the init image's size, else the map's), or None when the band is off.

    As every host makes it (depth2img.process.masks.image_band_mask), without a painted mask: "auto" uses Otsu here.
    """
    from PIL import Image

    settings = args.mask_settings()
    if settings is None:
        return None
    width, height = image.size if isinstance(image, Image.Image) else (depth.shape[1], depth.shape[0])
    mask, _ = masks.image_band_mask(depth, settings, None, width, height, args.depth_range)
    return mask


def mask_over_image(image, mask):
    """The mask over its picture (RGB, the picture's size): what it repaints tinted red, by the mask's strength."""
    from PIL import Image

    picture = image.convert("RGB")
    tinted = Image.blend(picture, Image.new("RGB", picture.size, (255, 0, 0)), 0.5)
    return Image.composite(tinted, picture, mask.convert("L").resize(picture.size))


def thumbnail(depth_file, depth_kind="auto", distance_range="", exr_channel="", max_pixels=limits.DEFAULT_MAX_PIXELS):
    """A small gray view of an uploaded depth map as it will be read (None clears it)."""
    if depth_file is None:
        return None
    values = dict(depth_image=depth_file, depth_kind=depth_kind, distance_range=distance_range, exr_channel=exr_channel)
    args = Depth2ImgArgs.from_dict({k: v for k, v in values.items() if v is not None})
    depth = uploaded_depth(args, max_pixels).depth
    preview = gray_image(depth)
    preview.thumbnail((256, 256))
    return preview


def _as_gradio_errors(fn: Callable) -> Callable:
    """Show the core's input errors (ValueError and its kin: args, depth maps, host errors) in the page."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as error:
            gr = _gradio()
            # An input problem, not a fault: no traceback in the server log where gradio allows it (4+).
            quiet = {"print_exception": False} if _accepts(gr.Error, "print_exception") else {}
            raise gr.Error(str(error), **quiet) from error

    return wrapper
