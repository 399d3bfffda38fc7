"""What a job adds to the WebUI's outputs: the depth map as the last image, and for API callers the depth map's
16 bits and the notices in the info.
"""

from __future__ import annotations

from depth2img.source.encoding import depth_output_image
from depth2img.source.transport import png16_base64

# API responses carry the 16-bit depth PNG (base64) here in info's extra_generation_params (with return_depth),
# whatever the WebUI's samples_format: JPEG/WebP cannot hold it.
DEPTH_INFO_KEY = "Depth2Img depth map"
# ... and what the UI shows as the job's comments (e.g. an uploaded distance map read without its range).
NOTICE_INFO_KEY = "Depth2Img notice"


def append_depth_output(p, processed, samples_format: str, info_key: str) -> None:
    """With return_depth: the depth map used, as the last image (16-bit for PNG, 8-bit for JPEG/WebP).

    API callers also get all 16 bits as base64 under info_key in the info's extra_generation_params.
    """
    conditioner = getattr(p, "_depth2img_conditioner", None)
    if conditioner is None or not conditioner.args.return_depth:
        return
    depth = conditioner.output_depth()
    if depth is None:
        return
    processed.images.append(depth_output_image(depth, samples_format))
    processed.infotexts.append("Depth2Img depth map (white = near)")
    if getattr(p, "is_api", False):
        # A new dict: p's is reused by the batch tab and XYZ runs, and this must never reach an image's PNG info.
        processed.extra_generation_params = {**processed.extra_generation_params, info_key: png16_base64(depth)}


def add_api_notices(p, processed, info_key: str) -> None:
    """API jobs: the notices the UI shows as comments (which the API's info lacks), under info_key in the info's
    extra_generation_params (a new dict: never in an image's PNG info)."""
    conditioner = getattr(p, "_depth2img_conditioner", None)
    if conditioner is None or not conditioner.notices or not getattr(p, "is_api", False):
        return
    processed.extra_generation_params = {**processed.extra_generation_params, info_key: " ".join(conditioner.notices)}
