"""OpenEXR depth passes (Blender and other renderers), read with the `OpenEXR` package.

Why not OpenCV: OpenCV 5 (current releases) has no EXR codec at all, and OpenCV 4.x (the WebUI's) reads a
Blender multilayer file as None and a Z-only file as zeros.

Which channel holds the depth, in this order (the first rule that finds exactly one channel wins; two
matches at one rule are an error that lists them, so nothing is picked silently):
1. the name the caller gives (`exr_channel`, CLI `--exr-channel`); in a multi-part file also `part.channel`;
2. the Z pass: `<view layer>.Depth.Z` (Blender multilayer, float32) or a plain `Z` channel;
3. a File Output node's value socket: `<socket>.V`;
4. the Mist pass: `<view layer>.Mist.Z` (0-1 between the mist's start and end: a *normalized* distance);
5. a file with one channel: that channel;
6. R, G and B that hold the same values (Blender's single-layer EXR of a depth pass).

In a multi-part file (a stereo render, a layer per part) a channel name found in one part is read from it; a
name found in several parts is no one channel: picking it is an error that names the parts, and `part.channel`
chooses one.

Values are returned as they are stored: scene units for Z (background pixels 1e10 in float files, inf in
half files: the caller treats them as the far plane), 0-1 for Mist. NaN is refused naming the file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from depth2img.base.limits import DepthMapError, ImageTooLargeError, check_pixels

EXR_MAGIC = b"\x76\x2f\x31\x01"

# OpenEXR decodes every channel of every part at once (it cannot read one channel): a multilayer render holds
# tens of passes. Besides the pixel limit, the decoded size of all channels is bounded by this many bytes per
# pixel of the limit (2 GB at the default 64 megapixels): 8 float32 channels at the limit, or ~30 at 4K.
MAX_BYTES_PER_LIMIT_PIXEL = 32


class ExrError(DepthMapError):
    """An EXR file that cannot give a depth map; the message names the file and what to do."""


@dataclass(frozen=True)
class ExrDepth:
    values: np.ndarray  # float32 HxW as stored (may hold inf or 1e10 background); never NaN
    channel: str  # the channel read ("R=G=B" for equal colour channels)
    normalized: bool  # True for the Mist pass: 0 = mist start, 1 = mist end, not scene units


def is_exr(data: bytes) -> bool:
    return data[:4] == EXR_MAGIC


def _openexr():
    try:
        import OpenEXR
    except ImportError as error:
        raise ExrError(
            "reading EXR files needs the OpenEXR package: install it with `pip install OpenEXR` "
            "(the WebUI's install.py does this), or export the depth pass as a 16-bit PNG or float TIFF"
        ) from error
    return OpenEXR


def _open(data: bytes, name: str, header_only: bool):
    OpenEXR = _openexr()
    try:
        return OpenEXR.File(io.BytesIO(data), separate_channels=True, header_only=header_only)
    except RuntimeError as error:  # OpenEXR's only error type: truncated, corrupt, unsupported
        raise ExrError(f"{name} is not a readable EXR file ({error}); re-export it from your 3D tool") from error


def _window_size(header: dict) -> tuple[int, int]:
    low, high = header["dataWindow"]
    return int(high[0] - low[0] + 1), int(high[1] - low[1] + 1)


@dataclass(frozen=True)
class _Channel:
    part: int  # the index of the part that holds it
    name: str  # its name in that part
    header: object  # OpenEXR's channel header (type, sampling)


@dataclass(frozen=True)
class _Channels:
    """A file's channels by the names a caller may give: `listed` (a channel's own name where one part has it,
    `part.channel` where several do: what errors list and the automatic rules choose among) and `known` (listed,
    plus `part.channel` for every channel of a multi-part file)."""

    listed: dict[str, _Channel]
    known: dict[str, _Channel]
    parts_of: dict[str, list[str]]  # a channel name found in several parts: those parts' names


def _channels(parts) -> _Channels:
    part_names = [part.name() or f"part{index}" for index, part in enumerate(parts)]
    places: dict[str, list[tuple[str, _Channel]]] = {}
    for index, part in enumerate(parts):
        for channel in part.header["channels"]:
            places.setdefault(channel.name, []).append((part_names[index], _Channel(index, channel.name, channel)))
    listed, known, parts_of = {}, {}, {}
    for name, found in places.items():
        qualified = {f"{part_name}.{name}": channel for part_name, channel in found} if len(parts) > 1 else {}
        if len(found) == 1:
            listed[name] = found[0][1]
        else:
            listed.update(qualified)
            parts_of[name] = [part_name for part_name, _ in found]
        known.update(qualified)
    known.update(listed)
    return _Channels(listed, known, parts_of)


def _in_several_parts(name: str, channel: str, parts: list[str]) -> ExrError:
    return ExrError(
        f"{name}: channel {channel!r} is in {len(parts)} parts ({', '.join(parts)}); choose one as part.channel "
        f"with --exr-channel (API: exr_channel), e.g. {parts[0]}.{channel}"
    )


def check_header(data: bytes, name: str, max_pixels: int) -> int:
    """Refuse a file whose data windows exceed max_pixels (or whose channels would decode to too many bytes),
    from its header, before any pixel is decoded. Returns the number of parts the header declares."""
    file = _open(data, name, header_only=True)
    total_bytes = 0
    for part in file.parts:
        header = part.header
        if "deep" in str(header.get("type", "")).lower():
            raise ExrError(f"{name} holds deep (multi-sample) data, which is not a depth pass; export a flat EXR")
        width, height = _window_size(header)
        check_pixels(name, width, height, max_pixels)
        total_bytes += width * height * 4 * len(header["channels"])  # float32 at most per sample
    if total_bytes > max_pixels * MAX_BYTES_PER_LIMIT_PIXEL:
        raise ImageTooLargeError(
            name, f"{total_bytes / 1e9:.1f} GB of decoded channels (all passes of all layers)", max_pixels
        )
    return len(file.parts)


def _pick(channels: _Channels, channel: str, name: str, values_of) -> tuple[str, bool]:
    """(channel name, normalized) by the module docstring's rules; values_of(name) gives a channel's pixels."""
    names = list(channels.listed)
    listing = ", ".join(names)
    if channel:
        if channel in channels.parts_of:
            raise _in_several_parts(name, channel, channels.parts_of[channel])
        if channel not in channels.known:
            raise ExrError(f"{name} has no channel {channel!r}; its channels: {listing}")
        return channel, channels.known[channel].name.endswith("Mist.Z")

    def own(n: str) -> str:  # the rules read a channel's name in its part
        return channels.listed[n].name

    rules = [
        ("a Z pass", [n for n in names if own(n).endswith(".Depth.Z") or own(n) == "Z"], False),
        ("a File Output value", [n for n in names if own(n).endswith(".V") or own(n) == "V"], False),
        ("a Mist pass", [n for n in names if own(n).endswith(".Mist.Z")], True),
        ("the only channel", names if len(names) == 1 else [], False),
    ]
    for what, matches, normalized in rules:
        if len(matches) == 1:
            return matches[0], normalized
        if len(matches) > 1:
            same = {own(n) for n in matches}
            if len(same) == 1 and same <= set(channels.parts_of):
                raise _in_several_parts(name, same.pop(), channels.parts_of[own(matches[0])])
            raise ExrError(
                f"{name} has several channels that could be {what} ({', '.join(matches)}); "
                "choose one with --exr-channel (API: exr_channel)"
            )
    if {"R", "G", "B"} <= set(names):
        r, g, b = (values_of(c) for c in "RGB")
        if np.array_equal(r, g, equal_nan=True) and np.array_equal(r, b, equal_nan=True):
            return "R=G=B", False
    raise ExrError(
        f"{name} has no depth channel (no *.Depth.Z, Z, *.V or *.Mist.Z, and R, G, B are not equal); "
        f"its channels: {listing}; choose one with --exr-channel (API: exr_channel)"
    )


def read_exr_depth(data: bytes, name: str, max_pixels: int, channel: str = "") -> ExrDepth:
    """The depth channel of an EXR file's bytes (see the module docstring). `name` appears in every error."""
    parts = check_header(data, name, max_pixels)
    file = _open(data, name, header_only=False)
    if len(file.parts) != parts:  # OpenEXR drops the parts whose pixels it cannot read instead of raising
        raise ExrError(f"{name} is not a readable EXR file (truncated or corrupt pixel data); re-export it")
    channels = _channels(file.parts)

    def values_of(channel_name: str) -> np.ndarray:
        found = channels.known[channel_name]
        return file.parts[found.part].channels[found.name].pixels

    picked, normalized = _pick(channels, channel, name, values_of)
    source = "R" if picked == "R=G=B" else picked
    header = channels.known[source].header
    if header.xSampling != 1 or header.ySampling != 1:
        raise ExrError(f"{name}: channel {picked!r} is subsampled; export the depth pass at full resolution")
    values = np.asarray(values_of(source))
    if not np.issubdtype(values.dtype, np.floating):  # UINT channels are IDs, not depth
        raise ExrError(f"{name}: channel {picked!r} holds {values.dtype} (IDs), not depth; choose a float channel")
    values = values.astype(np.float32)  # half -> float32 keeps inf and every value
    nan = int(np.isnan(values).sum())
    if nan:
        raise ExrError(
            f"{name}: channel {picked!r} has {nan} NaN pixels; re-render or fill them (e.g. the compositor's "
            "Z Combine or an Inpaint node) before using it as a depth map"
        )
    return ExrDepth(values=values, channel=picked, normalized=normalized)


def largest_window(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) of the largest part's data window, from the header only (for the decoding gate)."""
    sizes = [_window_size(part.header) for part in _open(data, name, header_only=True).parts]
    return max(sizes, key=lambda size: size[0] * size[1], default=(0, 0))
