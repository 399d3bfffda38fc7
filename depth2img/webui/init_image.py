"""The init image of the img2img sub-tab the user is in, for the panel's preview.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from depth2img.base.errors import Depth2ImgError

# The init image components of the img2img sub-tabs, in the order of the WebUI's mode index (5 = batch).
INIT_IMAGE_ELEM_IDS = ("img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base")
BATCH_TAB_INDEX = len(INIT_IMAGE_ELEM_IDS)


def as_pil(value) -> Image.Image | None:
    """A gradio image value (PIL, numpy, gradio 3's sketch/inpaint dict) as PIL, or None."""
    if isinstance(value, dict):  # gradio 3 sketch/inpaint editors
        value = value.get("image")
    if value is None or isinstance(value, Image.Image):
        return value
    try:
        return Image.fromarray(np.asarray(value))
    except (TypeError, ValueError):
        return None


def pick_init_image(tab_index, images_by_id: dict, strokes_by_id: dict | None = None) -> Image.Image | None:
    """The init image of the img2img sub-tab the user is in (the WebUI's mode index), as PIL or None.

    strokes_by_id: strokes kept apart from the picture (Forge's sketch canvases), laid over it as the WebUI does
    for the job (alpha compositing).
    """
    index = int(tab_index or 0)
    if index >= BATCH_TAB_INDEX:
        raise Depth2ImgError(
            "the batch tab has no single init image to preview: preview in another img2img tab, or upload a depth map"
        )
    elem_id = INIT_IMAGE_ELEM_IDS[index]
    picture = as_pil(images_by_id.get(elem_id))
    strokes = as_pil((strokes_by_id or {}).get(elem_id))
    if picture is None or strokes is None:
        return picture
    if strokes.size != picture.size:
        strokes = strokes.resize(picture.size)
    return Image.alpha_composite(picture.convert("RGBA"), strokes.convert("RGBA"))
