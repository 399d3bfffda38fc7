import io

import cv2
import numpy as np
import pytest
from PIL import Image

from depth2img import depthmap
from depth2img.depthmap import DepthMapError, ResizeMode


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
    d16 = depthmap.load_depth(tmp_path / "d16.png")
    d8 = depthmap.load_depth(png_bytes(gray8))
    assert d16.dtype == np.float32 and d16.shape == (24, 32)
    assert d16.min() == 0.0 and d16.max() == 1.0
    # 16-bit keeps precision that 8-bit cannot
    assert len(np.unique(d16)) == 32
    np.testing.assert_allclose(d8, d16, atol=1 / 255)


def test_16_bit_png_through_pil_keeps_16_bits():
    gray16 = (ramp() * 65535).round().astype(np.uint16)
    image = Image.open(io.BytesIO(png_bytes(gray16)))
    depth = depthmap.load_depth(image)
    np.testing.assert_allclose(depth, gray16 / 65535.0, atol=1e-6)


def test_tiff_16_bit_and_float32(tmp_path):
    ok, data16 = cv2.imencode(".tiff", (ramp() * 65535).astype(np.uint16))
    assert ok
    ok, data32 = cv2.imencode(".tiff", ramp() * 7.5 + 2.0)
    assert ok
    np.testing.assert_allclose(depthmap.load_depth(data16.tobytes()), ramp(), atol=1e-4)
    np.testing.assert_allclose(depthmap.load_depth(data32.tobytes()), ramp() * 7.5 + 2.0, rtol=1e-6)


def test_npy_file_and_bytes(tmp_path):
    metric = ramp() * 10.0
    np.save(tmp_path / "d.npy", metric)
    np.testing.assert_array_equal(depthmap.load_depth(tmp_path / "d.npy"), metric)
    buffer = io.BytesIO()
    np.save(buffer, metric.astype(np.float64))
    np.testing.assert_allclose(depthmap.load_depth(buffer.getvalue()), metric)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_colour_modes_read_as_luminance_alpha_ignored(mode):
    gray = (ramp() * 255).round().astype(np.uint8)
    image = Image.fromarray(gray, "L").convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(0)  # a fully transparent alpha must not matter
    depth = depthmap.load_depth(image)
    np.testing.assert_allclose(depth, gray / 255.0, atol=1.5 / 255)


def test_rgb_png_file_is_luminance_not_bgr_confused():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    data = png_bytes(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_allclose(depthmap.load_depth(data), 0.299, atol=1e-6)


def test_nan_and_inf_are_rejected_with_a_message():
    bad = ramp()
    bad[0, 0] = np.nan
    with pytest.raises(DepthMapError, match="NaN or infinite"):
        depthmap.load_depth(bad)
    bad[0, 0] = np.inf
    with pytest.raises(DepthMapError, match="NaN or infinite"):
        depthmap.load_depth(bad)


def test_not_an_image_and_missing_file(tmp_path):
    with pytest.raises(DepthMapError, match="not a readable image"):
        depthmap.load_depth(b"definitely not an image")
    with pytest.raises(DepthMapError, match="not found"):
        depthmap.load_depth(tmp_path / "missing.png")
    with pytest.raises(DepthMapError, match="shape"):
        depthmap.load_depth(np.zeros((2, 3, 4, 5)))


def test_postprocessing_steps():
    depth = ramp()
    inverted = depthmap.invert(depth)
    np.testing.assert_allclose(inverted, depth[:, ::-1], atol=1e-6)
    clipped = depthmap.clip_percentiles(depth, near=90, far=10)
    assert clipped.min() == pytest.approx(np.percentile(depth, 10))
    assert clipped.max() == pytest.approx(np.percentile(depth, 90))
    gamma = depthmap.apply_gamma(depth * 4 + 1, 2.0)
    np.testing.assert_allclose(gamma, depth**2, atol=1e-6)
    blurred = depthmap.blur(np.pad(np.ones((1, 1), np.float32), 5), 1.5)
    assert blurred.max() < 1.0 and blurred.sum() == pytest.approx(1.0, rel=1e-2)
    # defaults change nothing
    np.testing.assert_array_equal(depthmap.postprocess(depth), depth)
    with pytest.raises(DepthMapError):
        depthmap.apply_gamma(depth, 0)
    with pytest.raises(DepthMapError):
        depthmap.clip_percentiles(depth, near=10, far=50)


def test_fit_aspect_modes():
    depth = np.arange(12 * 20, dtype=np.float32).reshape(12, 20)  # 20 wide, 12 high
    assert depthmap.fit_aspect(depth, 64, 64, ResizeMode.JUST_RESIZE) is depth
    cropped = depthmap.fit_aspect(depth, 64, 64, ResizeMode.CROP_AND_RESIZE)
    assert cropped.shape == (12, 12)
    np.testing.assert_array_equal(cropped, depth[:, 4:16])
    filled = depthmap.fit_aspect(depth, 64, 64, ResizeMode.RESIZE_AND_FILL)
    assert filled.shape == (20, 20)
    np.testing.assert_array_equal(filled[4:16], depth)
    np.testing.assert_array_equal(filled[0], depth[0])  # edges replicated
    # already the right aspect: untouched
    assert depthmap.fit_aspect(depth, 40, 24, ResizeMode.CROP_AND_RESIZE) is depth


def test_png16_round_trip_and_colorize():
    depth = ramp() * 3 + 1
    data = depthmap.encode_png16(depth)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16 and decoded.max() == 65535 and decoded.min() == 0
    assert depthmap.colorize(depth).shape == (24, 32, 3)
    assert depthmap.to_uint16(np.full((3, 3), 5.0, np.float32)).max() == 0
