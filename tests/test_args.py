import pytest

from depth2img.schema.args import ArgsError, Depth2ImgArgs


def test_defaults_and_named_dict():
    args = Depth2ImgArgs.from_request([{"enabled": True, "invert": "true", "gamma": "1.5"}])
    assert args.enabled and args.invert and args.gamma == 1.5 and args.source == "estimate"
    assert Depth2ImgArgs.from_request(None) == Depth2ImgArgs()


def test_positional_list_as_the_ui_sends():
    args = Depth2ImgArgs.from_request([True, "upload", "aGVsbG8=", "checkpoint-midas", True])
    assert args.source == "upload" and args.depth_image == "aGVsbG8=" and args.invert


@pytest.mark.parametrize(
    "data, key",
    [
        ({"enable": True}, "enable"),
        ({"gamma": 0}, "gamma"),
        ({"clip_near": 101}, "clip_near"),
        ({"blur": -1}, "blur"),
        ({"source": "camera"}, "source"),
        ({"invert": "maybe"}, "invert"),
        ({"gamma": "steep"}, "gamma"),
        ({"enabled": True, "source": "upload"}, "depth_image"),
        ({"clip_near": 10, "clip_far": 20}, "clip_far"),
        ({"depth_range": [1, 1]}, "depth_range"),
        ({"depth_range": [2, 1]}, "depth_range"),
        ({"depth_range": [0, 1, 2]}, "depth_range"),
        ({"depth_range": "near far"}, "depth_range"),
        ({"depth_range": [0, float("inf")]}, "depth_range"),
        ({"depth_range": [True, 2]}, "depth_range"),
        ({"depth_range": 5}, "depth_range"),
        ({"mask_low": -1}, "mask_low"),
        ({"mask_high": 100.5}, "mask_high"),
        ({"mask_from_depth": True, "mask_low": 60, "mask_high": 40}, "mask_low"),
        ({"mask_from_depth": True, "mask_low": 50, "mask_high": 50}, "mask_low"),
        ({"mask_band_mode": "percent"}, "mask_band_mode"),
        ({"mask_combine": "add"}, "mask_combine"),
        ({"mask_feather": -2}, "mask_feather"),
        ({"mask_grow": 2.5}, "mask_grow"),
        ({"mask_grow": "inf"}, "mask_grow"),
        ({"mask_grow": 1000}, "mask_grow"),
        ({"mask_auto": "sometimes"}, "mask_auto"),
    ],
)
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ArgsError, match=key):
        Depth2ImgArgs.from_dict(data)


def test_too_many_positional():
    with pytest.raises(ArgsError, match="positional"):
        Depth2ImgArgs.from_positional([False] * 30)


def test_infotext_round_trip_never_carries_the_image():
    args = Depth2ImgArgs(enabled=True, source="upload", depth_image="AAAA", invert=True, blur=2.0, return_depth=True)
    text = args.to_infotext()
    assert "AAAA" not in str(text)
    assert text["Depth2Img invert"] == "True" and "Depth2Img gamma" not in text
    back = Depth2ImgArgs.from_infotext({**text, "Steps": "20"})
    assert back.enabled and back.invert and back.blur == 2.0
    # The upload job's settings come back without its map: the user gives the map again, and a job asks for it.
    assert back.source == "upload" and back.depth_image is None
    with pytest.raises(ArgsError, match="'depth_image' is required"):
        Depth2ImgArgs.from_dict({k: getattr(back, k) for k in ("enabled", "source", "invert")})
    with pytest.raises(ArgsError, match="'source' must be one of"):
        Depth2ImgArgs.from_infotext({"Depth2Img enabled": "True", "Depth2Img source": "webcam"})
    assert Depth2ImgArgs.from_infotext({"Steps": "20"}) is None


def test_postprocess_kwargs_feed_depthmap():
    import numpy as np

    from depth2img.process.postprocessing import postprocess

    def run(depth, **settings):
        return postprocess(depth, **Depth2ImgArgs(**settings).postprocess_kwargs())

    depth = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]], np.float32)
    # Each setting alone, by hand. invert: max + min - d.
    np.testing.assert_allclose(run(depth, invert=True), [[4, 3, 2, 1, 0]], atol=1e-6)
    # gamma 2, in the map's units: min + (max - min) * ((d - min) / (max - min)) ** 2 = d ** 2 / 4.
    np.testing.assert_allclose(run(depth, gamma=2.0), [[0, 0.25, 1, 2.25, 4]], atol=1e-6)
    # clip_far 25 / clip_near 75: numpy's linear percentiles of 0..4 are 1 and 3.
    np.testing.assert_allclose(run(depth, clip_far=25, clip_near=75), [[1, 1, 2, 3, 3]], atol=1e-6)
    # All three, in the documented order clip -> gamma -> invert, within the clipped bounds 1..3:
    # [1,1,2,3,3] -> 1 + 2 * ((d - 1) / 2) ** 2 = [1,1,1.5,3,3] -> 1 + 3 - that.
    np.testing.assert_allclose(
        run(depth, invert=True, gamma=2.0, clip_far=25, clip_near=75), [[3, 3, 2.5, 1, 1]], atol=1e-6
    )
    # blur 1: a Gaussian of sigma 1 px (OpenCV's 9-tap kernel), by hand on a unit impulse: the centre keeps
    # g(0)^2 and its 4-neighbours g(0) g(1), g(x) = exp(-x^2 / 2) / sum over x = -4..4.
    impulse = np.zeros((11, 11), np.float32)
    impulse[5, 5] = 1.0
    taps = np.exp(-np.arange(-4, 5) ** 2 / 2.0)
    g = taps / taps.sum()
    blurred = run(impulse, blur=1.0)
    assert blurred[5, 5] == pytest.approx(0.159155, abs=1e-5) == pytest.approx(g[4] ** 2, abs=1e-6)
    assert blurred[5, 6] == blurred[4, 5] == pytest.approx(0.096532, abs=1e-5)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)
    # The defaults change nothing: the very same array.
    assert run(depth) is depth


@pytest.mark.parametrize("value", [[0.25, 4], (0.25, 4.0), "0.25 4", "0.25,4", "(0.25, 4.0)", "[0.25, 4]"])
def test_depth_range_forms(value):
    assert Depth2ImgArgs.from_dict({"depth_range": value}).depth_range == (0.25, 4.0)


def test_depth_range_default_is_none_and_round_trips_through_infotext():
    assert Depth2ImgArgs().depth_range is None and Depth2ImgArgs.from_dict({"depth_range": ""}).depth_range is None
    assert "Depth2Img depth_range" not in Depth2ImgArgs(enabled=True).to_infotext()
    args = Depth2ImgArgs(enabled=True, depth_range=(0.1, 1 / 3))
    text = args.to_infotext()
    assert "," not in text["Depth2Img depth_range"]  # the WebUI's infotext separates entries with commas
    assert Depth2ImgArgs.from_infotext(text).depth_range == (0.1, 1 / 3)  # every digit kept


def test_mask_defaults_change_nothing():
    args = Depth2ImgArgs()
    assert args.mask_settings() is None
    assert not any(k.startswith("Depth2Img mask") for k in Depth2ImgArgs(enabled=True).to_infotext())


def test_mask_settings_from_named_args_and_infotext():
    from depth2img.process.masks import MaskSettings

    args = Depth2ImgArgs.from_request([{
        "mask_from_depth": True, "mask_low": "40", "mask_high": 90, "mask_band_mode": "percentile",
        "mask_feather": 4, "mask_grow": "-3", "mask_invert": True, "mask_combine": "intersect", "mask_auto": False,
    }])
    expected = MaskSettings(low=40, high=90, mode="percentile", feather=4, grow=-3, invert=True, combine="intersect")
    assert args.mask_settings() == expected
    back = Depth2ImgArgs.from_infotext(args.to_infotext())
    assert back.mask_settings() == expected and isinstance(back.mask_grow, int)


def test_depth_kind_range_and_channel_from_the_api_and_back_from_infotext():
    args = Depth2ImgArgs.from_dict({"depth_kind": "distance", "distance_range": [0.5, 40], "exr_channel": "Depth.V"})
    assert args.distance_range == (0.5, 40.0)
    assert args.decode_kwargs() == dict(kind="distance", distance_range=(0.5, 40.0), exr_channel="Depth.V")
    text = args.to_infotext()
    back = Depth2ImgArgs.from_infotext(text)
    assert back.depth_kind == "distance" and back.distance_range == (0.5, 40.0) and back.exr_channel == "Depth.V"
    assert Depth2ImgArgs().depth_kind == "auto"
    assert Depth2ImgArgs.from_dict({"distance_range": None}).distance_range is None


@pytest.mark.parametrize(
    "data",
    [
        {"depth_kind": "metric"},
        {"distance_range": [1]},
        {"distance_range": "far"},
        {"distance_range": [0, 10]},
        {"distance_range": [5, 1]},
    ],
)
def test_bad_depth_kind_or_range_names_the_key(data):
    with pytest.raises(ArgsError, match=next(iter(data))):
        Depth2ImgArgs.from_dict(data)


def test_a_range_with_inverse_kind_is_refused():
    with pytest.raises(ArgsError, match="distance_range.*depth_kind"):
        Depth2ImgArgs.from_dict({"depth_kind": "inverse", "distance_range": [1, 2]})


def test_infotext_carries_no_server_path():
    """Every shared PNG carries the infotext: a folder's name at most (issue 14)."""
    args = Depth2ImgArgs(enabled=True, depth_dir="/srv/private/shots/depth/", estimator="/srv/models/depth/dpt-large")
    text = args.to_infotext()
    assert "/srv" not in str(text) and "\\" not in str(text)
    assert text["Depth2Img depth folder"] == "depth" and text["Depth2Img estimator"] == "dpt-large"
    back = Depth2ImgArgs.from_infotext(text)
    assert back.depth_dir == "" and back.estimator == "dpt-large"  # a fact, not a pasted setting
    windows = Depth2ImgArgs(enabled=True, depth_dir="D:\\shots\\depth", estimator="D:\\models\\depth\\dpt")
    assert "D:" not in str(windows.to_infotext())


def test_settings_that_relate_two_values_are_checked_only_for_the_feature_that_is_on():
    assert Depth2ImgArgs(mask_low=80, mask_high=20).mask_settings() is None  # the band is off: no error
    with pytest.raises(ArgsError, match="'mask_low'"):
        Depth2ImgArgs(mask_from_depth=True, mask_low=80, mask_high=20)
