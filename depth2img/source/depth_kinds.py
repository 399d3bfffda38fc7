"""What a depth map holds (its depth kind) and the one conversion between kinds: distance (larger = farther) ->
inverse depth 1/d (larger = nearer), which SD 2's depth model was trained on.

What a file holds (`kind`, the args' `depth_kind`):
- "inverse": larger = nearer (MiDaS, Depth Anything, the DepthMap extension): used as is.
- "distance": larger = farther (a renderer's Z pass, a metric depth map, a normalized Z-pass PNG where black
  = near). It becomes inverse depth 1/d (distance_to_inverse), which is what SD 2's depth model was trained
  on (MiDaS' relative inverse depth), not a flipped copy (1 - d bends every slope).
- "auto" (the default): EXR files are "distance" (they carry a renderer's Z), and so is any map given a
  distance_range; every other map is "inverse".
A normalized distance map (8/16-bit images, EXR Mist, any map given a distance_range) holds 0 = near .. 1 = far:
its distances are near + v * (far - near), exact only with the scene's [near, far]; without one
DEFAULT_DISTANCE_RANGE is used and the result says it is approximate. Float maps (EXR Z, float TIFF, .npy)
hold distances in scene units: exact as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depth2img.base.limits import DepthMapError

DEPTH_KINDS = ("auto", "inverse", "distance")


# A normalized distance map without a given range is read as if its near end were at 1 and its far end at 10
# (scene units do not matter: inverse depth is normalized per sample later). A far/near ratio of 10 is a room,
# a street or a landscape's foreground; exact for no particular scene, so such results are marked approximate.
DEFAULT_DISTANCE_RANGE = (1.0, 10.0)


# Distances at or above this (Blender writes 1e10 where no geometry is; half-float files hold inf) are background:
# they become the far plane (the farthest real distance) and are left out of the range, which they would
# otherwise stretch so far that the whole scene became one gray.
BACKGROUND_DISTANCE = 1e9


# The floor of 1/d for distances in scene units: a distance below farthest / MAX_DISTANCE_RATIO counts as that
# (zero or negative values from a broken pass included), so one stray pixel cannot squash the rest of the map.
MAX_DISTANCE_RATIO = 1000.0


def check_distance_range(distance_range) -> tuple[float, float]:
    try:
        near, far = (float(v) for v in distance_range)
    except (TypeError, ValueError) as error:
        raise DepthMapError(f"a distance range is two numbers [near, far], got {distance_range!r}") from error
    if not (np.isfinite(near) and np.isfinite(far) and 0.0 < near < far):
        raise DepthMapError(
            f"a distance range needs 0 < near < far (in scene units; near is the camera's clip start or the "
            f"nearest surface, never 0: inverse depth 1/d is infinite there), got [{near:g}, {far:g}]"
        )
    return near, far


def distance_to_inverse(
    distance: np.ndarray,
    *,
    normalized: bool,
    distance_range: tuple[float, float] | None = None,
    name: str = "the depth map",
) -> DecodedDepth:
    """Distance (larger = farther) -> inverse depth 1/d (larger = nearer).

    - Background (>= BACKGROUND_DISTANCE or +inf) takes the far plane's inverse depth and stays out of the range.
    - normalized maps, or any map given distance_range: values 0..1 are near + v * (far - near); without a
      range DEFAULT_DISTANCE_RANGE, and the result is marked approximate.
    - otherwise distances in scene units: 1 / max(d, farthest / MAX_DISTANCE_RATIO).
    """
    distance = np.asarray(distance, dtype=np.float32)
    if np.isnan(distance).any() or np.isneginf(distance).any():
        bad = int((np.isnan(distance) | np.isneginf(distance)).sum())
        raise DepthMapError(f"{name} has {bad} NaN or -inf distances; fill or remove them before using the map")
    background = np.isposinf(distance) | (distance >= BACKGROUND_DISTANCE)
    scene = distance[~background]
    if scene.size == 0:
        raise DepthMapError(
            f"{name} is all background (distances >= {BACKGROUND_DISTANCE:g} or inf): nothing was rendered; "
            "check that the depth pass is the one you meant"
        )
    notes, approximate = [], False
    if normalized or distance_range is not None:
        low, high = float(scene.min()), float(scene.max())
        if low < -1e-6 or high > 1.0 + 1e-6:
            raise DepthMapError(
                f"{name} holds values from {low:g} to {high:g}, not normalized distances 0..1: a map in scene "
                "units needs no distance range (leave it out); a normalized one must stay within 0..1"
            )
        if distance_range is None:
            approximate = True
            distance_range = DEFAULT_DISTANCE_RANGE
            notes.append(
                f"{name} holds normalized distances (0 = near, 1 = far) and no distance range was given: "
                f"converted as if near = {DEFAULT_DISTANCE_RANGE[0]:g} and far = {DEFAULT_DISTANCE_RANGE[1]:g}, "
                "so the result is approximate; give the scene's range (CLI --distance-range NEAR FAR, "
                "API distance_range) for exact inverse depth"
            )
        near, far = distance_range
        inverse = 1.0 / (near + np.clip(distance, 0.0, 1.0) * (far - near))
        far_plane = 1.0 / far
    else:
        farthest = float(scene.max())
        if farthest <= 0.0:
            raise DepthMapError(f"{name} has no positive distances (the farthest is {farthest:g}); is it inverted?")
        floor = farthest / MAX_DISTANCE_RATIO
        clamped = int((scene < floor).sum())
        if clamped:
            notes.append(
                f"{name}: {clamped} pixels are nearer than 1/{MAX_DISTANCE_RATIO:g} of the farthest distance "
                f"(e.g. 0) and were set to {floor:g}; if the map is normalized 0..1, give a distance range"
            )
        inverse = 1.0 / np.maximum(distance, floor)
        far_plane = 1.0 / farthest
    inverse = np.where(background, far_plane, inverse).astype(np.float32)
    return DecodedDepth(inverse, "distance", approximate=approximate, notice=" ".join(notes))


@dataclass
class DecodedDepth:
    """A user depth map as the pipeline uses it, and how it was read."""

    depth: np.ndarray  # float32 HxW, finite, larger = nearer
    kind: str  # "inverse" or "distance": how the file was read ("auto" resolved)
    approximate: bool = False  # a normalized distance map converted without its distance range
    notice: str = ""  # what the user should know about the conversion ("" when nothing); the CLI prints it
    exr_channel: str = ""  # the EXR channel read ("" for other formats)
