import pytest

from depth2img.args import ArgsError, Depth2ImgArgs


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
    back = Depth2ImgArgs.from_infotext({**{k: v for k, v in text.items() if "source" not in k}, "Steps": "20"})
    assert back.enabled and back.invert and back.blur == 2.0
    assert Depth2ImgArgs.from_infotext({"Steps": "20"}) is None


def test_postprocess_kwargs_feed_depthmap():
    import numpy as np

    from depth2img.depthmap import postprocess

    depth = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    out = postprocess(depth, **Depth2ImgArgs(invert=True, gamma=2.0).postprocess_kwargs())
    assert out.shape == depth.shape and out[0, 0] > out[-1, -1]


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
