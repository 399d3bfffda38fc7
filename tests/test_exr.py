"""EXR depth passes as Blender writes them, built at test time with the OpenEXR package.

Every expected inverse depth is computed here from the distances written into the file (1/d, the background
set to the farthest rendered distance), never by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from depth2img.base.limits import DepthMapError, ImageTooLargeError
from depth2img.source import decoding, depth_kinds

OpenEXR = pytest.importorskip("OpenEXR")

H, W = 24, 32
BLENDER_BACKGROUND = np.float32(1e10)  # what Blender writes where no geometry is (float32 files)


def scene_distance() -> np.ndarray:
    """Distances 2..8 scene units (a slanted floor and a box), the top right corner left empty (background)."""
    rows = np.linspace(8.0, 2.0, H, dtype=np.float32)[:, None]
    distance = np.repeat(rows, W, axis=1)
    distance[10:18, 4:12] = 3.0
    return distance


def background_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[:6, 20:] = True
    return mask


def with_background(distance: np.ndarray, value) -> np.ndarray:
    out = distance.copy()
    out[background_mask()] = value
    return out


def write_exr(path, channels: dict[str, np.ndarray], parts: list[dict] | None = None):
    header = {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}
    if parts is None:
        OpenEXR.File(header, channels).write(str(path))
    else:
        named = [OpenEXR.Part(dict(header), chans, name=f"part{i}") for i, chans in enumerate(parts)]
        OpenEXR.File(named).write(str(path))
    return path


def expected_inverse(distance: np.ndarray, background: np.ndarray) -> np.ndarray:
    farthest = distance[~background].max()
    return np.where(background, 1.0 / farthest, 1.0 / distance).astype(np.float32)


def blender_multilayer(z: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    colour = {f"ViewLayer.Combined.{c}": rng.random((H, W), dtype=np.float32) for c in "RGBA"}
    mist = np.clip((z - 2.0) / 10.0, 0.0, 1.0).astype(np.float32)
    return {**colour, "ViewLayer.Depth.Z": z, "ViewLayer.Mist.Z": mist}


def test_blender_multilayer_float_z_with_1e10_background(tmp_path):
    z = with_background(scene_distance(), BLENDER_BACKGROUND)
    path = write_exr(tmp_path / "render.exr", blender_multilayer(z))
    result = decoding.decode_depth(path)  # kind "auto": an EXR is a distance pass
    assert result.kind == "distance" and result.exr_channel == "ViewLayer.Depth.Z"
    assert not result.approximate and result.notice == ""
    expected = expected_inverse(scene_distance(), background_mask())
    np.testing.assert_allclose(result.depth, expected, rtol=1e-6)
    # The background did not squash the scene: the rendered part spans the whole range, 1/8 .. 1/2.
    assert result.depth.min() == pytest.approx(1 / 8) and result.depth.max() == pytest.approx(1 / 2)


def test_half_float_z_with_inf_background(tmp_path):
    z16 = with_background(scene_distance(), np.inf).astype(np.float16)
    assert np.isinf(z16).sum() == background_mask().sum()
    path = write_exr(tmp_path / "half.exr", {"ViewLayer.Depth.Z": z16})
    result = decoding.decode_depth(path)
    stored = scene_distance().astype(np.float16).astype(np.float32)  # what the file holds, exactly
    np.testing.assert_allclose(result.depth, expected_inverse(stored, background_mask()), rtol=1e-6)
    assert np.isfinite(result.depth).all()


def test_bytes_as_the_api_uploads_them_equal_the_file(tmp_path):
    path = write_exr(tmp_path / "z.exr", {"Z": with_background(scene_distance(), BLENDER_BACKGROUND)})
    np.testing.assert_array_equal(decoding.load_depth(path.read_bytes()), decoding.load_depth(path))


@pytest.mark.parametrize(
    "channels, picked",
    [
        ({"Z": None}, "Z"),  # a plain Z channel
        ({"Depth.V": None, "Image.R": "noise", "Image.G": "noise", "Image.B": "noise"}, "Depth.V"),  # File Output
        ({"R": None, "G": None, "B": None, "A": "ones"}, "R=G=B"),  # single layer, BW depth saved as RGB(A)
        ({"depth": None}, "depth"),  # the only channel, whatever its name
    ],
)
def test_channel_picked_by_blenders_names(tmp_path, channels, picked):
    z = with_background(scene_distance(), BLENDER_BACKGROUND)
    rng = np.random.default_rng(1)
    fill = {None: z, "noise": rng.random((H, W), dtype=np.float32), "ones": np.ones((H, W), np.float32)}
    path = write_exr(tmp_path / "c.exr", {name: fill[kind] for name, kind in channels.items()})
    result = decoding.decode_depth(path)
    assert result.exr_channel == picked
    np.testing.assert_allclose(result.depth, expected_inverse(scene_distance(), background_mask()), rtol=1e-6)


def test_mist_is_normalized_approximate_without_a_range_and_exact_with_one(tmp_path):
    mist = np.tile(np.linspace(0.0, 1.0, W, dtype=np.float32), (H, 1))
    path = write_exr(tmp_path / "mist.exr", {"ViewLayer.Mist.Z": mist})
    rough = decoding.decode_depth(path)
    assert rough.exr_channel == "ViewLayer.Mist.Z" and rough.approximate
    assert "approximate" in rough.notice and "--distance-range" in rough.notice
    near, far = depth_kinds.DEFAULT_DISTANCE_RANGE
    np.testing.assert_allclose(rough.depth, 1.0 / (near + mist * (far - near)), rtol=1e-6)
    exact = decoding.decode_depth(path, distance_range=(5.0, 25.0))
    assert not exact.approximate and exact.notice == ""
    np.testing.assert_allclose(exact.depth, 1.0 / (5.0 + mist * 20.0), rtol=1e-6)


def test_z_is_preferred_to_mist_and_the_override_picks_either(tmp_path):
    z = with_background(scene_distance(), BLENDER_BACKGROUND)
    path = write_exr(tmp_path / "render.exr", blender_multilayer(z))
    assert decoding.decode_depth(path).exr_channel == "ViewLayer.Depth.Z"
    mist = decoding.decode_depth(path, exr_channel="ViewLayer.Mist.Z")
    assert mist.exr_channel == "ViewLayer.Mist.Z" and mist.approximate


def test_two_view_layers_are_ambiguous_until_one_is_chosen(tmp_path):
    z = scene_distance()
    path = write_exr(tmp_path / "two.exr", {"Front.Depth.Z": z, "Back.Depth.Z": z * 2})
    with pytest.raises(DepthMapError, match=r"Back\.Depth\.Z, Front\.Depth\.Z.*--exr-channel"):
        decoding.decode_depth(path)
    chosen = decoding.decode_depth(path, exr_channel="Back.Depth.Z")
    np.testing.assert_allclose(chosen.depth, 1.0 / (z * 2), rtol=1e-6)


def test_channels_in_several_parts(tmp_path):
    z = with_background(scene_distance(), BLENDER_BACKGROUND)
    path = write_exr(tmp_path / "parts.exr", {}, parts=[{"Image.R": np.ones((H, W), np.float32)}, {"Z": z}])
    result = decoding.decode_depth(path)
    assert result.exr_channel == "Z"
    np.testing.assert_allclose(result.depth, expected_inverse(scene_distance(), background_mask()), rtol=1e-6)


def test_nan_is_an_error_naming_the_file_and_channel(tmp_path):
    z = scene_distance()
    z[3, 4] = np.nan
    path = write_exr(tmp_path / "broken.exr", {"ViewLayer.Depth.Z": z})
    with pytest.raises(DepthMapError, match=r"broken\.exr.*ViewLayer\.Depth\.Z.*1 NaN"):
        decoding.decode_depth(path)


@pytest.mark.parametrize(
    "channels, exr_channel, message",
    [
        ({"Z": "z"}, "Depth.Z", r"no channel 'Depth\.Z'; its channels: Z"),
        ({"R": "z", "G": "noise", "B": "z"}, "", r"no depth channel.*its channels: B, G, R"),
        ({"ViewLayer.Depth.Z": "bg"}, "", r"all background"),
    ],
)
def test_unusable_files_say_what_to_do(tmp_path, channels, exr_channel, message):
    rng = np.random.default_rng(2)
    fill = {
        "z": scene_distance(),
        "noise": rng.random((H, W), dtype=np.float32),
        "bg": np.full((H, W), BLENDER_BACKGROUND),
    }
    path = write_exr(tmp_path / "x.exr", {name: fill[kind] for name, kind in channels.items()})
    with pytest.raises(DepthMapError, match=message):
        decoding.decode_depth(path, exr_channel=exr_channel)


def test_pixel_limit_is_read_from_the_header_before_any_pixel(tmp_path):
    path = write_exr(tmp_path / "z.exr", {"Z": scene_distance()})
    data = path.read_bytes()
    header_only = data[:400]  # the pixels are gone: decoding them would fail with another error
    with pytest.raises(ImageTooLargeError, match=rf"{W}x{H}"):
        decoding.load_depth(header_only, max_pixels=W * H - 1)
    with pytest.raises(DepthMapError, match="not a readable EXR"):
        decoding.load_depth(header_only)
    assert decoding.load_depth(data, max_pixels=W * H).shape == (H, W)


def test_decoded_size_of_all_passes_is_bounded(tmp_path):
    many = {f"ViewLayer.Pass{i}.V": np.ones((H, W), np.float32) for i in range(40)}
    path = write_exr(tmp_path / "passes.exr", {**many, "ViewLayer.Depth.Z": scene_distance()})
    with pytest.raises(ImageTooLargeError, match="decoded channels"):
        decoding.load_depth(path, max_pixels=W * H * 4)  # 41 channels x 4 bytes > 32 bytes per limit pixel


def test_inverse_kind_reads_an_exr_as_is_and_a_range_needs_values_in_0_1(tmp_path):
    inverse = 1.0 / scene_distance()
    path = write_exr(tmp_path / "inv.exr", {"Z": inverse})
    result = decoding.decode_depth(path, kind="inverse")
    assert result.kind == "inverse"
    np.testing.assert_array_equal(result.depth, inverse)
    z_path = write_exr(tmp_path / "z.exr", {"Z": scene_distance()})
    with pytest.raises(DepthMapError, match=r"from 2 to 8, not normalized.*leave it out"):
        decoding.decode_depth(z_path, distance_range=(1.0, 5.0))


def test_a_channel_in_several_parts_is_an_error_naming_them_until_one_is_chosen(tmp_path):
    # Issue 15.7: a stereo render (a Z per part) was read from its first part without a word.
    z = scene_distance()
    path = write_exr(tmp_path / "stereo.exr", {}, parts=[{"Z": z}, {"Z": z * 2, "R": z}])
    for given in ("", "Z"):
        with pytest.raises(DepthMapError, match=r"channel 'Z' is in 2 parts \(part0, part1\).*e\.g\. part0\.Z"):
            decoding.decode_depth(path, exr_channel=given)
    second = decoding.decode_depth(path, exr_channel="part1.Z")
    assert second.exr_channel == "part1.Z"
    np.testing.assert_allclose(second.depth, 1.0 / (z * 2), rtol=1e-6)
    first = decoding.decode_depth(path, exr_channel="part0.Z")
    np.testing.assert_allclose(first.depth, 1.0 / z, rtol=1e-6)
    # A name in one part stays reachable by itself; errors list the parts' duplicates qualified.
    np.testing.assert_allclose(decoding.decode_depth(path, exr_channel="R", kind="distance").depth, 1.0 / z,
                               rtol=1e-6)
    with pytest.raises(DepthMapError, match=r"no channel 'G'; its channels: part0\.Z, part1\.Z, R"):
        decoding.decode_depth(path, exr_channel="G")
