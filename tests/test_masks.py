"""Masks from a depth band (issue 9 §2): band, invert, grow, feather, combine, auto."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from depth2img.process.masks import (
    MaskError,
    MaskSettings,
    auto_band,
    band_mask,
    combine,
    depth_band_mask,
    feather_mask,
    grow_mask,
    mask_from_depth,
)


def values_0_to_99() -> np.ndarray:
    return np.arange(100, dtype=np.float32).reshape(10, 10)


def distance_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest nonzero pixel of `mask` (OpenCV's exact L2 transform)."""
    return cv2.distanceTransform(np.where(mask > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def test_band_in_percent_of_range():
    depth = values_0_to_99() * 2 + 10  # 10..208: percent = (d - 10) / 198 * 100
    selected = band_mask(depth, 25.5, 60.5)
    # By hand: 25.5 % -> 60.49, 60.5 % -> 129.79, so the values 62, 64, ..., 128 (indices 26..59).
    expected = (np.arange(100) >= 26) & (np.arange(100) <= 59)
    assert np.array_equal(selected.ravel(), expected)


def test_band_ends_are_open_so_0_100_selects_everything():
    depth = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    assert band_mask(depth, 0, 100).all()


def test_band_in_percentiles_of_pixels():
    depth = np.random.default_rng(1).permutation(100).astype(np.float32).reshape(10, 10)
    selected = band_mask(depth, 10, 20, mode="percentile")
    # Linear-interpolated percentiles of 0..99: 10 % -> 9.9, 20 % -> 19.8, so the values 10..19: 10 pixels.
    assert np.array_equal(np.sort(depth[selected]), np.arange(10, 20, dtype=np.float32))


def test_band_on_a_given_scale_clamps_beyond_it():
    depth = np.array([[-0.5, 0.2, 0.45, 0.55, 0.9, 1.7]], np.float32)
    # Percent of the shared range 0..1, not of this map's own -0.5..1.7.
    assert band_mask(depth, 50, 100, value_range=(0.0, 1.0)).tolist() == [[False, False, False, True, True, True]]
    assert band_mask(depth, 0, 30, value_range=(0.0, 1.0)).tolist() == [[True, True, False, False, False, False]]


@pytest.mark.parametrize(
    "low, high, message",
    [(-1, 50, "outside 0-100"), (10, 101, "outside 0-100"), (50, 50, "must be below"), (60, 40, "must be below")],
)
def test_bad_bands_are_refused(low, high, message):
    with pytest.raises(MaskError, match=message):
        mask_from_depth(values_0_to_99(), low, high)
    with pytest.raises(MaskError, match=message):
        MaskSettings(low=low, high=high)


def test_empty_band_is_refused_with_the_band_named():
    depth = np.where(np.arange(100).reshape(10, 10) < 50, 0.0, 1.0).astype(np.float32)  # nothing in between
    with pytest.raises(MaskError, match=r"no pixel lies in the depth band 40-60 \(percent of range"):
        mask_from_depth(depth, 40, 60)


def test_flat_map_is_refused():
    with pytest.raises(MaskError, match="flat"):
        mask_from_depth(np.full((8, 8), 0.3, np.float32), 10, 90)


def test_invert_selects_the_rest_and_refuses_an_empty_inverse():
    depth = values_0_to_99()
    band = mask_from_depth(depth, 50, 100)
    inverse = mask_from_depth(depth, 50, 100, invert=True)
    assert set(np.unique(band)) == {0, 255} and np.array_equal(inverse, 255 - band)
    with pytest.raises(MaskError, match="covers every pixel"):
        mask_from_depth(depth, 0, 100, invert=True)


@pytest.mark.parametrize("radius", [1, 3, 6])
def test_grow_reaches_radius_px_and_no_farther(radius):
    mask = np.zeros((40, 40), np.uint8)
    mask[15:25, 12:20] = 255
    grown = grow_mask(mask, radius)
    distance = distance_outside(mask)
    assert np.all(grown[mask > 0] == 255)
    assert np.all(distance[grown > 0] <= radius + 0.5)  # a digital disc: within half a pixel of the radius
    assert np.all(grown[distance <= radius - 0.5] == 255)
    # Negative shrinks: the same disc, taken away from the mask.
    shrunk = grow_mask(grown, -radius)
    assert np.all(shrunk[mask == 0] == 0) or radius == 0
    assert np.array_equal(shrunk, mask)  # a rectangle grown then shrunk by the same disc comes back


def test_shrinking_to_nothing_is_refused():
    depth = np.zeros((20, 20), np.float32)
    depth[8:11, 8:11] = 1.0  # a 3x3 near object
    with pytest.raises(MaskError, match="shrinking the mask by 2 px leaves no pixel"):
        mask_from_depth(depth, 50, 100, grow=-2)


@pytest.mark.parametrize("px", [1.0, 2.5, 6.0])
def test_feather_stays_within_its_width(px):
    mask = np.zeros((48, 48), np.uint8)
    mask[12:36, 16:32] = 255
    soft = feather_mask(mask, px)
    reach = np.ceil(px)
    outside = distance_outside(mask)
    inside = distance_outside(255 - mask)
    assert np.all(soft[outside > reach] == 0)  # beyond the feather: exactly untouched
    assert np.all(soft[inside > reach] == 255)
    edge = soft[24, 14:18]  # across the left edge (x = 16)
    assert np.all(np.diff(edge.astype(int)) >= 0) and 60 < soft[24, 16] < 255 and 0 < soft[24, 15] < 200


def test_combine_with_a_painted_mask():
    depth_mask = np.array([[255, 255, 0, 0]] * 4, np.uint8)  # the band: the left half
    painted = np.array([[128] * 4, [128] * 4, [0] * 4, [0] * 4], np.uint8)  # half-strength strokes, the top half
    # Written out: replace is the band alone; intersect keeps the weaker of the two where both are painted (the
    # top-left quarter at the strokes' 128); union the stronger anywhere (the band's 255, the strokes' 128).
    expected = {
        "replace": [[255, 255, 0, 0], [255, 255, 0, 0], [255, 255, 0, 0], [255, 255, 0, 0]],
        "intersect": [[128, 128, 0, 0], [128, 128, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        "union": [[255, 255, 128, 128], [255, 255, 128, 128], [255, 255, 0, 0], [255, 255, 0, 0]],
    }
    for how, values in expected.items():
        result = combine(depth_mask, painted, how)
        assert result.dtype == np.uint8 and result.tolist() == values, how
        assert combine(depth_mask, None, how).tolist() == expected["replace"], how  # nothing painted: the band
    right_half = np.array([[0, 0, 255, 255]] * 4, np.uint8)
    with pytest.raises(MaskError, match="do not overlap"):
        combine(depth_mask, right_half, "intersect")
    assert combine(depth_mask, right_half, "union").tolist() == [[255] * 4] * 4
    with pytest.raises(MaskError, match="painted mask is 3x4"):
        combine(depth_mask, np.zeros((4, 3), np.uint8), "union")
    with pytest.raises(MaskError, match="mask combine must be one of"):
        combine(depth_mask, painted, "xor")


def three_planes() -> np.ndarray:
    """Far wall (0.1) left, a table (0.5) in the middle, a near vase (0.9) right, with a little noise."""
    depth = np.full((60, 90), 0.1, np.float32)
    depth[:, 30:60] = 0.5
    depth[:, 60:] = 0.9
    return depth + np.random.default_rng(2).normal(0, 0.01, depth.shape).astype(np.float32)


def test_auto_band_from_the_strokes_depth():
    depth = three_planes()
    painted = np.zeros(depth.shape, np.uint8)
    painted[20:40, 35:60] = 255  # strokes on the table...
    painted[20:21, 60:62] = 255  # ...spilling 2 pixels onto the vase (2 of 502 stroke pixels: under 2 %)
    mask, (low, high), mode = depth_band_mask(depth, MaskSettings(auto=True), painted)
    assert mode == "range" and 0 < low < high < 100
    table = np.zeros(depth.shape, bool)
    table[:, 30:60] = True
    assert np.array_equal(mask > 0, table)  # the whole table, nothing else


def test_auto_band_by_otsu_when_nothing_is_painted():
    depth = three_planes()
    depth[:, 30:60] = 0.15 + np.random.default_rng(3).normal(0, 0.01, (60, 30))  # two groups: far and near
    low, high = auto_band(depth)
    assert high == 100.0
    assert np.array_equal(band_mask(depth, low, high), depth > 0.5)  # the near vase: Otsu's split
    mask, _, _ = depth_band_mask(depth, MaskSettings(auto=True, invert=True), np.zeros(depth.shape, np.uint8))
    assert np.array_equal(mask > 0, depth < 0.5)  # empty strokes count as nothing painted


def test_auto_threshold_agrees_with_opencv_on_8_bits():
    """Our 16-bit Otsu split of a bimodal map falls where OpenCV's 8-bit one does (within one 8-bit level)."""
    rng = np.random.default_rng(4)
    depth = np.concatenate([rng.normal(0.3, 0.05, 500), rng.normal(0.7, 0.05, 500)]).astype(np.float32)
    depth = depth.reshape(20, 50)
    low, _ = auto_band(depth)
    scaled = np.round((depth - depth.min()) / np.ptp(depth) * 255).astype(np.uint8)
    threshold8, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert abs(low / 100 * 255 - threshold8) <= 1.5


def test_settings_defaults_select_everything():
    depth = three_planes()
    mask, band, mode = depth_band_mask(depth, MaskSettings())
    assert band == (0.0, 100.0) and mode == "range" and (mask == 255).all()
