import io

import cv2
import numpy as np
import pytest
from PIL import Image

from depth2img.base import limits
from depth2img.base.limits import DepthMapError
from depth2img.process import fitting, postprocessing
from depth2img.process.fitting import ResizeMode
from depth2img.source import decoding, depth_kinds, encoding


def ramp(h=24, w=32):
    return np.tile(np.linspace(0.0, 1.0, w, dtype=np.float32), (h, 1))


def png_bytes(array):
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_8_and_16_bit_png_agree_and_scale_to_unit_range(tmp_path):
    gray16 = (ramp() * 65535).round().astype(np.uint16)
    gray8 = (ramp() * 255).round().astype(np.uint8)
    (tmp_path / "d16.png").write_bytes(png_bytes(gray16))
    d16 = decoding.load_depth(tmp_path / "d16.png")
    d8 = decoding.load_depth(png_bytes(gray8))
    assert d16.dtype == np.float32 and d16.shape == (24, 32)
    assert d16.min() == 0.0 and d16.max() == 1.0
    # 16-bit keeps precision that 8-bit cannot
    assert len(np.unique(d16)) == 32
    np.testing.assert_allclose(d8, d16, atol=1 / 255)


def test_16_bit_png_through_pil_keeps_16_bits():
    gray16 = (ramp() * 65535).round().astype(np.uint16)
    image = Image.open(io.BytesIO(png_bytes(gray16)))
    depth = decoding.load_depth(image)
    np.testing.assert_allclose(depth, gray16 / 65535.0, atol=1e-6)


def test_tiff_16_bit_and_float32(tmp_path):
    ok, data16 = cv2.imencode(".tiff", (ramp() * 65535).astype(np.uint16))
    assert ok
    ok, data32 = cv2.imencode(".tiff", ramp() * 7.5 + 2.0)
    assert ok
    np.testing.assert_allclose(decoding.load_depth(data16.tobytes()), ramp(), atol=1e-4)
    np.testing.assert_allclose(decoding.load_depth(data32.tobytes()), ramp() * 7.5 + 2.0, rtol=1e-6)


def test_npy_file_and_bytes(tmp_path):
    metric = ramp() * 10.0
    np.save(tmp_path / "d.npy", metric)
    np.testing.assert_array_equal(decoding.load_depth(tmp_path / "d.npy"), metric)
    buffer = io.BytesIO()
    np.save(buffer, metric.astype(np.float64))
    np.testing.assert_allclose(decoding.load_depth(buffer.getvalue()), metric)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_colour_modes_read_as_luminance_alpha_ignored(mode):
    gray = (ramp() * 255).round().astype(np.uint8)
    image = Image.fromarray(gray, "L").convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(0)  # a fully transparent alpha must not matter
    depth = decoding.load_depth(image)
    np.testing.assert_allclose(depth, gray / 255.0, atol=1.5 / 255)


def test_rgb_png_file_is_luminance_not_bgr_confused():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    data = png_bytes(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_allclose(decoding.load_depth(data), 0.299, atol=1e-6)


def test_nan_and_inf_are_rejected_with_a_message():
    bad = ramp()
    bad[0, 0] = np.nan
    with pytest.raises(DepthMapError, match="NaN or infinite"):
        decoding.load_depth(bad)
    bad[0, 0] = np.inf
    with pytest.raises(DepthMapError, match="NaN or infinite"):
        decoding.load_depth(bad)


def test_not_an_image_and_missing_file(tmp_path):
    with pytest.raises(DepthMapError, match="not a readable image"):
        decoding.load_depth(b"definitely not an image")
    with pytest.raises(DepthMapError, match="not found"):
        decoding.load_depth(tmp_path / "missing.png")
    with pytest.raises(DepthMapError, match="shape"):
        decoding.load_depth(np.zeros((2, 3, 4, 5)))


def test_postprocessing_steps():
    depth = ramp()
    inverted = postprocessing.invert(depth)
    np.testing.assert_allclose(inverted, depth[:, ::-1], atol=1e-6)
    clipped = postprocessing.clip_percentiles(depth, near=90, far=10)
    assert clipped.min() == pytest.approx(np.percentile(depth, 10))
    assert clipped.max() == pytest.approx(np.percentile(depth, 90))
    gamma = postprocessing.apply_gamma(depth * 4 + 1, 2.0)
    np.testing.assert_allclose(gamma, depth**2 * 4 + 1, atol=1e-5)  # within the map's own bounds, in its units
    blurred = postprocessing.blur(np.pad(np.ones((1, 1), np.float32), 5), 1.5)
    assert blurred.max() < 1.0 and blurred.sum() == pytest.approx(1.0, rel=1e-2)
    # defaults change nothing
    np.testing.assert_array_equal(postprocessing.postprocess(depth), depth)
    with pytest.raises(DepthMapError):
        postprocessing.apply_gamma(depth, 0)
    with pytest.raises(DepthMapError):
        postprocessing.clip_percentiles(depth, near=10, far=50)


def test_fit_aspect_modes():
    depth = np.arange(12 * 20, dtype=np.float32).reshape(12, 20)  # 20 wide, 12 high
    assert fitting.fit_aspect(depth, 64, 64, ResizeMode.JUST_RESIZE) is depth
    cropped = fitting.fit_aspect(depth, 64, 64, ResizeMode.CROP_AND_RESIZE)
    assert cropped.shape == (12, 12)
    np.testing.assert_array_equal(cropped, depth[:, 4:16])
    filled = fitting.fit_aspect(depth, 64, 64, ResizeMode.RESIZE_AND_FILL)
    assert filled.shape == (20, 20)
    np.testing.assert_array_equal(filled[4:16], depth)
    np.testing.assert_array_equal(filled[0], depth[0])  # edges replicated
    # already the right aspect: untouched
    assert fitting.fit_aspect(depth, 40, 24, ResizeMode.CROP_AND_RESIZE) is depth


def test_png16_round_trip_and_colorize():
    depth = ramp() * 3 + 1  # 1..4 across 32 columns: column j is j/31 of the range
    data = encoding.encode_png16(depth)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16 and decoded.shape == (24, 32)
    # Min-max to the full 16 bits, white = near, by hand: round(j / 31 * 65535); a few written out.
    expected = np.round(np.arange(32) / 31 * 65535)
    assert (decoded == decoded[0]).all() and np.abs(decoded[0] - expected).max() <= 1
    assert decoded[0, [0, 1, 15, 16, 31]].tolist() == [0, 2114, 31710, 33825, 65535]
    # Read back by the project's own reader: the map's shape, to 1/65535 of its range.
    np.testing.assert_allclose(decoding.load_depth(data), ramp(), atol=1 / 65535 + 1e-7)
    assert encoding.to_uint16(np.full((3, 3), 5.0, np.float32)).tolist() == [[0] * 3] * 3  # flat: all zero
    # The preview: the 16-bit level's top byte through matplotlib's inferno (near = bright), in RGB order. Levels
    # 0, 1/4, 1/2, 3/4, 1 of the range give bytes 0, 64, 128, 192, 255; inferno's published values there (x 255).
    levels = np.array([[0, 16384, 32768, 49152, 65535]], np.float64)
    inferno = [(0.001462, 0.000466, 0.013866), (0.341500, 0.062325, 0.429425), (0.735683, 0.215906, 0.330245),
               (0.978422, 0.557937, 0.034931), (0.988362, 0.998364, 0.644924)]  # fmt: skip
    shown = encoding.colorize(levels)
    assert shown.dtype == np.uint8 and shown.shape == (1, 5, 3)
    assert np.abs(shown[0].astype(int) - np.round(np.array(inferno) * 255)).max() <= 1
    assert encoding.colorize(depth).shape == (24, 32, 3)


def test_fit_aspect_tall_maps_and_images():
    depth = np.arange(20 * 12, dtype=np.float32).reshape(20, 12)  # 12 wide, 20 high
    cropped = fitting.fit_aspect(depth, 64, 64, ResizeMode.CROP_AND_RESIZE)
    np.testing.assert_array_equal(cropped, depth[4:16, :])
    filled = fitting.fit_aspect(depth, 64, 64, ResizeMode.RESIZE_AND_FILL)
    assert filled.shape == (20, 20)
    np.testing.assert_array_equal(filled[:, 4:16], depth)
    np.testing.assert_array_equal(filled[:, 0], depth[:, 0])
    np.testing.assert_array_equal(filled[:, -1], depth[:, -1])
    rgb = np.random.default_rng(0).integers(0, 255, (20, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fitting.fit_aspect(rgb, 64, 64, ResizeMode.CROP_AND_RESIZE), rgb[4:16])


def test_fit_image_crops_exactly_as_the_depth_map():
    rgb = np.random.default_rng(1).integers(0, 255, (40, 80, 3), dtype=np.uint8)
    fitted = fitting.fit_image(Image.fromarray(rgb), 20, 20, ResizeMode.CROP_AND_RESIZE, Image.NEAREST)
    assert fitted.size == (20, 20)
    # The reference: the centre 40x40 square, cut by hand and scaled by Pillow.
    expected = Image.fromarray(rgb[:, 20:60]).resize((20, 20), Image.NEAREST)
    np.testing.assert_array_equal(np.asarray(fitted), np.asarray(expected))


def test_pil_modes_i_and_f():
    values = (ramp() * 65535).round().astype(np.int32)
    np.testing.assert_allclose(decoding.load_depth(Image.fromarray(values, "I")), values / 65535.0, atol=1e-6)
    metric = ramp() * 7.0 + 0.5
    np.testing.assert_array_equal(decoding.load_depth(Image.fromarray(metric, "F")), metric)


def png_header_only(width, height):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_images_above_the_pixel_limit_are_refused_from_the_header(tmp_path):
    # 9000 x 8000 = 72 MP: over the 64 MP default, under Pillow's own refusal; the data cannot even be decoded,
    # so the message can only come from the header.
    with pytest.raises(limits.ImageTooLargeError, match="9000x8000 .72.0 megapixels.*64 megapixels"):
        decoding.load_depth(png_header_only(9000, 8000))
    with pytest.raises(limits.ImageTooLargeError, match="over .* megapixels"):
        decoding.load_depth(png_header_only(20000, 20000))  # beyond Pillow's hard limit: no size from it
    with pytest.raises(limits.ImageTooLargeError, match="init image .*megapixels"):
        decoding.open_image(png_header_only(9000, 8000), "init image")
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(9000, 8000))
    del big
    with pytest.raises(limits.ImageTooLargeError, match="8000x9000"):
        decoding.load_depth(tmp_path / "big.npy")
    with pytest.raises(limits.ImageTooLargeError):
        decoding.load_depth(np.zeros((100, 100), np.float32), max_pixels=9999)
    # under a raised limit the same header passes the check and fails only as undecodable
    with pytest.raises(DepthMapError, match="not a readable image"):
        decoding.load_depth(png_header_only(9000, 8000), max_pixels=100_000_000)
    assert decoding.load_depth(png_bytes((ramp() * 255).astype(np.uint8)), max_pixels=24 * 32).shape == (24, 32)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy"])
def test_save_depth_writes_what_the_suffix_says(tmp_path, suffix):
    depth = ramp() * 3.0 + 1.0
    path = encoding.save_depth(depth, tmp_path / f"d{suffix}")
    assert path.stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    if suffix == ".npy":
        np.testing.assert_array_equal(np.load(path), depth)
    elif suffix == ".tif":
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), depth)
    else:
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        np.testing.assert_allclose(decoded / 65535.0, (depth - 1.0) / 3.0, atol=1 / 65535)
    with pytest.raises(DepthMapError, match="use one of"):
        encoding.save_depth(depth, tmp_path / "d.jpg")


# ---- distance maps (larger = farther) -> inverse depth -------------------------------------------------------


def test_normalized_16_bit_distance_png_with_its_range_is_exact_1_over_d(tmp_path):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 65536, (24, 32), dtype=np.uint16)  # black = near
    (tmp_path / "z16.png").write_bytes(png_bytes(raw))
    result = decoding.decode_depth(tmp_path / "z16.png", kind="distance", distance_range=(0.5, 40.0))
    assert result.kind == "distance" and not result.approximate and result.notice == ""
    meters = 0.5 + raw.astype(np.float64) / 65535.0 * 39.5
    np.testing.assert_allclose(result.depth, 1.0 / meters, rtol=1e-5)


def test_normalized_distance_without_a_range_is_approximate_and_says_so():
    raw8 = (ramp() * 255).round().astype(np.uint8)
    result = decoding.decode_depth(png_bytes(raw8), kind="distance")
    assert result.approximate
    assert "approximate" in result.notice and "--distance-range" in result.notice
    near, far = depth_kinds.DEFAULT_DISTANCE_RANGE
    np.testing.assert_allclose(result.depth, 1.0 / (near + raw8 / 255.0 * (far - near)), rtol=1e-5)
    # 8- and 16-bit exports of one map agree here too, up to the 8-bit step: relative error of 1/(1 + 9v) is at
    # most 9 * (0.5 / 255) / (1 + 9v) <= 1.8%
    raw16 = (ramp() * 65535).round().astype(np.uint16)
    np.testing.assert_allclose(decoding.load_depth(png_bytes(raw16), kind="distance"), result.depth, rtol=0.018)


def test_float_distances_in_scene_units_are_exact_and_inf_is_background():
    meters = ramp() * 7.5 + 0.5
    ok, tiff = cv2.imencode(".tiff", meters)
    assert ok
    result = decoding.decode_depth(tiff.tobytes(), kind="distance")
    assert not result.approximate and result.notice == ""
    np.testing.assert_allclose(result.depth, 1.0 / meters, rtol=1e-6)
    with_sky = meters.copy()
    with_sky[:4] = np.inf
    depth = decoding.load_depth(with_sky, kind="distance")
    np.testing.assert_allclose(depth[4:], 1.0 / meters[4:], rtol=1e-6)
    np.testing.assert_allclose(depth[:4], 1.0 / meters[4:].max(), rtol=1e-6)  # the far plane


def test_zero_distances_are_floored_with_a_notice():
    meters = ramp() * 10.0  # the first column is 0
    result = decoding.decode_depth(meters, kind="distance")
    floor = 10.0 / depth_kinds.MAX_DISTANCE_RATIO
    np.testing.assert_allclose(result.depth, 1.0 / np.maximum(meters, floor), rtol=1e-6)
    assert "24 pixels" in result.notice and "distance range" in result.notice


def test_float_map_given_a_range_is_read_as_normalized():
    fraction = ramp()
    depth = decoding.load_depth(fraction, kind="distance", distance_range=(2.0, 4.0))
    np.testing.assert_allclose(depth, 1.0 / (2.0 + 2.0 * fraction), rtol=1e-6)


def test_auto_kind_keeps_images_inverse_unless_a_range_is_given():
    raw16 = (ramp() * 65535).round().astype(np.uint16)
    result = decoding.decode_depth(png_bytes(raw16))
    assert result.kind == "inverse"
    np.testing.assert_allclose(result.depth, raw16 / 65535.0, atol=1e-6)
    ranged = decoding.decode_depth(png_bytes(raw16), distance_range=(1.0, 3.0))
    assert ranged.kind == "distance"
    np.testing.assert_allclose(ranged.depth, 1.0 / (1.0 + 2.0 * raw16 / 65535.0), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="depth"), r"one of auto, inverse, distance"),
        (dict(kind="inverse", distance_range=(1, 2)), r"distance maps only"),
        (dict(kind="distance", distance_range=(0, 2)), r"0 < near < far"),
        (dict(kind="distance", distance_range=(3, 2)), r"0 < near < far"),
        (dict(kind="distance", distance_range=(1,)), r"two numbers"),
    ],
)
def test_bad_kind_or_range_says_what_is_wrong(kwargs, message):
    with pytest.raises(DepthMapError, match=message):
        decoding.decode_depth(ramp(), **kwargs)


def test_negative_only_distances_are_refused():
    with pytest.raises(DepthMapError, match="no positive distances"):
        decoding.load_depth(-ramp() - 1.0, kind="distance")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_depth_maps_exif_orientation_turns_it_as_pillow_turns_a_picture(orientation):
    """Maps decoded by OpenCV (PNG, TIFF, JPEG, WebP) keep the orientation a phone or editor wrote in EXIF."""
    from PIL import ImageOps

    values = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7) * 7
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(values, "L").save(buffer, format="PNG", exif=exif)
    decoded = decoding.decode_depth(buffer.getvalue()).depth
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        expected = np.asarray(ImageOps.exif_transpose(image), np.float32) / 255
    assert decoded.shape == expected.shape
    assert np.allclose(decoded, expected, atol=1e-6)


def test_open_image_turns_a_photo_by_its_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held upright: stored landscape, shown portrait
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, format="JPEG", exif=exif)
    assert decoding.open_image(buffer.getvalue(), "init image").size == (30, 40)


def _crossing(values: np.ndarray) -> int:
    return int(np.argmax(values > 0.5))


@pytest.mark.parametrize("mode", [ResizeMode.CROP_AND_RESIZE, ResizeMode.RESIZE_AND_FILL])
@pytest.mark.parametrize("target", [(512, 512), (512, 768), (1024, 256)])
def test_a_map_of_rounded_aspect_lines_up_with_its_picture(mode, target):
    # MiDaS works at multiples of 32: a 912x512 picture gets a 672x384 map (aspect 1.75, not 1.78). Fitted by
    # its own aspect the depth moved against the picture by pixels at the edges (issue 15.2); fitted by the
    # picture's (source_size) an edge lands where the picture's own edge does.
    width, height = target
    for axis, at in ((1, 880), (0, 500)):  # an edge near the far side, across each axis
        picture = np.zeros((512, 912), np.float32)
        if axis == 1:
            picture[:, at:] = 1
        else:
            picture[at:, :] = 1
        truth = fitting.resize(fitting.fit_aspect(picture, width, height, mode), width, height)
        estimated = fitting.resize(picture, 672, 384)
        fitted = fitting.fit_aspect(estimated, width, height, mode, source_size=(912, 512))
        fitted = fitting.resize(fitted, width, height)
        line = (lambda a: a[a.shape[0] // 2]) if axis == 1 else (lambda a: a[:, a.shape[1] // 2])
        assert abs(_crossing(line(fitted)) - _crossing(line(truth))) <= 1, (axis, _crossing(line(truth)))
    # A map already of the picture's aspect is not resampled; just resize leaves every map to the one stretch.
    same = np.random.default_rng(0).random((256, 456), dtype=np.float32)
    assert fitting.fit_aspect(same, 456, 256, mode, source_size=(912, 512)) is same
    assert fitting.fit_aspect(estimated, width, height, ResizeMode.JUST_RESIZE, source_size=(912, 512)) is estimated


def test_a_given_depth_range_is_the_scale_gamma_and_invert_work_within():
    # Issue 15.5: with a user's depth_range (0..2 here) gamma and invert took the map's own min and max (0..1), so
    # the range no longer meant what the user gave. Within it: invert is 2 - d, gamma 2 * (d / 2) ** 2.
    from depth2img.schema.args import Depth2ImgArgs

    depth = np.array([[0.0, 0.5, 1.0]], np.float32)
    inverted = postprocessing.postprocess(
        depth, **Depth2ImgArgs(invert=True, depth_range=(0.0, 2.0)).postprocess_kwargs()
    )
    np.testing.assert_allclose(inverted, [[2.0, 1.5, 1.0]])
    gamma = postprocessing.postprocess(depth, **Depth2ImgArgs(gamma=2.0, depth_range=(0.0, 2.0)).postprocess_kwargs())
    np.testing.assert_allclose(gamma, [[0.0, 0.125, 0.5]])
    # Without a range each map is its own scale, in its own units: invert is 1 - d, gamma d ** 2 on 0..1.
    np.testing.assert_allclose(postprocessing.postprocess(depth, invert_depth=True), [[1.0, 0.5, 0.0]])
    np.testing.assert_allclose(postprocessing.postprocess(depth + 1, gamma=2.0), [[1.0, 1.25, 2.0]])


def test_a_sets_scale_is_its_pooled_percentiles_and_bounds():
    a = np.arange(0, 10, dtype=np.float32).reshape(2, 5)
    b = np.arange(10, 30, dtype=np.float32).reshape(4, 5)
    stats = [postprocessing.MapStatistics.of(a), postprocessing.MapStatistics.of(b)]
    # no clip: min and max
    assert postprocessing.set_scale(stats) == postprocessing.PostprocessScale(bounds=(0.0, 29.0))
    clipped = postprocessing.set_scale(stats, clip_near=90.0, clip_far=10.0)
    pooled = np.arange(0, 30, dtype=np.float64)
    assert clipped.clip == pytest.approx(tuple(np.percentile(pooled, [10, 90])))  # 2.9, 26.1
    assert clipped.bounds == pytest.approx(clipped.clip)
    # Every map is processed on it: a's low end is cut at the set's 10th percentile, not its own.
    out = postprocessing.postprocess(a, clip_near=90.0, clip_far=10.0, invert_depth=True, scale=clipped)
    np.testing.assert_allclose(out, 2.9 + 26.1 - np.clip(a, 2.9, 26.1), rtol=1e-6)
    with pytest.raises(DepthMapError, match="no depth maps"):
        postprocessing.set_scale([])
    with pytest.raises(DepthMapError, match="far < near"):
        postprocessing.set_scale(stats, clip_near=10.0, clip_far=20.0)
    # A map larger than the grid is sampled on a regular grid of actual values.
    big = np.arange(300 * 300, dtype=np.float32).reshape(300, 300)
    grid, step = postprocessing.grid_sample(big, max_pixels=10000)
    assert step == 3 and grid.shape == (100, 100) and grid[1, 1] == big[3, 3]
