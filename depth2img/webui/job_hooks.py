"""One job's start and stop: its checks, its depth conditioning attached where the WebUI computes its own, the
mask from a depth band, and stopping the job over an error.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from depth2img.base.errors import Depth2ImgError
from depth2img.estimate import registry
from depth2img.schema.args import Depth2ImgArgs
from depth2img.webui.job import DepthConditioner, JobGeometry, job_error

# ---- the job's hooks ------------------------------------------------------------------------------


def attach_conditioning(p, conditioner: DepthConditioner, calls_key: str = "Depth2Img estimator calls") -> None:
    """Make the WebUI call `conditioner` wherever it computes its own depth conditioning for `p`.

    The WebUI calls p.img2img_image_conditioning (img2img, inpaint) and p.txt2img_image_conditioning
    (txt2img, hires fix); with "only masked" inpainting, p.paste_to is the crop the job generates.
    """

    def record(result):
        p.extra_generation_params[calls_key] = conditioner.estimator_calls
        return result

    def img2img_conditioning(source_image, latent_image, image_mask=None, round_image_mask=True):
        conditioner.inpainting = image_mask is not None
        paste_to = getattr(p, "paste_to", None)
        if image_mask is not None and getattr(p, "inpaint_full_res", False) and paste_to:
            x, y, w, h = paste_to
            conditioner.geometry.crop_region = (x, y, x + w, y + h)
        return record(conditioner.conditioning(latent_image, source_image))

    def txt2img_conditioning(x, width=None, height=None):
        return record(conditioner.conditioning(x, None))

    p.img2img_image_conditioning = img2img_conditioning
    p.txt2img_image_conditioning = txt2img_conditioning
    p._depth2img_conditioner = conditioner
    for notice in conditioner.notices:  # shown under the result in the UI (the WebUI's job comments)
        p.comment(f"Depth2Img: {notice}")


def stop_job(p, message: str, status_code: int = 422) -> None:
    """Stop the job with a message: the WebUI catches exceptions from process(), not from these hooks."""

    def fail(*_args, **_kwargs):
        raise Depth2ImgError(message, status_code)

    p.img2img_image_conditioning = fail
    p.txt2img_image_conditioning = fail


# ---- a mask from a depth band ---------------------------------------------------------------------

# On p: the mask this extension set, and the user's own it replaced (p is reused by the batch tab and XYZ runs).
OWN_MASK_ATTR = "_depth2img_mask"
USERS_MASK_ATTR = "_depth2img_users_mask"
MASK_NOTE_KEY = "Depth2Img mask band"


def users_mask(p):
    """The mask the user (or the batch tab's mask folder) gave this job, never one this extension set on the
    same p for an earlier image; p.image_mask is put back to it. None for plain img2img and txt2img."""
    mask = getattr(p, "image_mask", None)
    if mask is not None and mask is getattr(p, OWN_MASK_ATTR, None):
        mask = getattr(p, USERS_MASK_ATTR, None)
        p.image_mask = mask
    setattr(p, OWN_MASK_ATTR, None)
    return mask


def apply_depth_band_mask(p, conditioner: DepthConditioner, painted, as_webui_reads: Callable) -> None:
    """Give the job the inpainting mask of its depth band as the WebUI's own mask (p.image_mask, at the init
    image's size), before the WebUI's p.init() processes it: the WebUI then blurs it (mask blur), crops to it
    ("only masked"), inverts it ("inpaint not masked": the final mask, as any mask), fills and pastes back as
    for a painted mask, and plain img2img becomes an inpaint job with the tab's inpaint settings.

    painted: the user's mask or None; as_webui_reads(mask) -> L image: the WebUI's create_binary_mask, so the
    strokes (mask_auto) and the combination see the mask the WebUI would.
    """
    if not hasattr(p, "init_images"):
        raise Depth2ImgError(
            "depth2img arg 'mask_from_depth': a mask from a depth band needs an init image; use img2img or inpaint "
            "(txt2img has none)"
        )
    painted_l = as_webui_reads(painted) if painted is not None else None
    mask, note = conditioner.inpaint_mask(painted_l)
    setattr(p, USERS_MASK_ATTR, painted)
    setattr(p, OWN_MASK_ATTR, mask)
    p.image_mask = mask
    p.extra_generation_params[MASK_NOTE_KEY] = note


# ---- one job, from the script's process() ------------------------------------------------------------


def check_depth_dir_allowed(settings: Depth2ImgArgs, *, is_api: bool, api_folders: bool, dirs_hidden: bool) -> None:
    """A depth folder is a server path: honoured for the batch tab's own jobs; over the API only where the owner's
    setting allows it; never with --hide-ui-dir-config (the WebUI's switch for "no server folders from the UI")."""
    if not (settings.enabled and settings.depth_dir):
        return
    if dirs_hidden:
        raise Depth2ImgError(
            "depth2img arg 'depth_dir': this WebUI does not take server folders (--hide-ui-dir-config): "
            "upload a depth map (depth_image) instead"
        )
    if is_api and not api_folders:
        raise Depth2ImgError(
            "depth2img arg 'depth_dir': API requests may not name server folders (off in the server's Settings, "
            "Depth2Img, 'Let API requests name a depth map folder'): upload a depth map (depth_image) instead"
        )


def check_estimator_name(name: str) -> None:
    try:
        registry.get_estimator_info(name)
    except ValueError as error:
        raise Depth2ImgError(f"depth2img arg 'estimator': {error}") from error


def start_job(p, settings: Depth2ImgArgs, painted, *, depth, binary_mask: Callable, **conditioner_kwargs) -> None:
    """The job's depth conditioning (and mask from a depth band) in place of the WebUI's; its infotext.

    painted: the user's own mask (users_mask), binary_mask(mask) -> the mask as the WebUI reads painted ones;
    conditioner_kwargs: DepthConditioner's estimator, cache, background, max_pixels.
    """
    is_img2img = hasattr(p, "init_images")
    conditioner = DepthConditioner(
        settings,
        JobGeometry(p.width, p.height, getattr(p, "resize_mode", 0)),
        init_images=list(p.init_images) if is_img2img and p.init_images else None,
        depth=depth,
        **conditioner_kwargs,
    )
    if settings.mask_from_depth:
        apply_depth_band_mask(p, conditioner, painted, binary_mask)
    attach_conditioning(p, conditioner)
    if settings.enabled:
        p.extra_generation_params.update(settings.to_infotext())


def stop_job_for(p, error: Exception) -> None:
    """Stop the job over an error from process(): anything escaping it is only logged by the WebUI, which then
    generates without our hooks (the user's depth map ignored; txt2img fails on 5 vs 9 channels)."""
    stop = job_error(error)
    if stop.status_code >= 500:
        traceback.print_exc()
    stop_job(p, str(stop), stop.status_code)
