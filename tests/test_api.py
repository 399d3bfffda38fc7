"""The HTTP API's logic without a server: request validation, the schema, the answers, the listings."""

from __future__ import annotations

import base64
import logging
from io import BytesIO

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.base.errors import Depth2ImgError
from depth2img.schema.args import ArgsError, Depth2ImgArgs
from depth2img.webui.routes import (
    ESTIMATE_FIELDS,
    checkpoints_response,
    estimate_request_schema,
    estimate_response,
    estimators_response,
    parse_estimate_request,
)


def image_b64(size=(8, 8), mode="RGB") -> str:
    buffer = BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_estimate_request_validation():
    request = parse_estimate_request({"image": image_b64(), "invert": True, "gamma": 2})
    assert request.image.size == (8, 8) and request.settings.invert and request.settings.gamma == 2.0
    assert request.depth is None and request.size == (8, 8)
    request = parse_estimate_request({"image": "data:image/png;base64," + image_b64((5, 3))})
    assert request.image.size == (5, 3)
    for body, field in [({"image": "%%"}, "'image'"), ({}, "'image'"), ({"image": image_b64(), "size": 1}, "size"),
                        ({"image": image_b64(), "depth_image": image_b64()}, "either field 'image' or field"),
                        ({"depth_image": "%%"}, "'depth_image'"), ({"depth_image": 3}, "'depth_image'"),
                        ({"depth_image": image_b64(), "distance_range": [2, 1]}, "'distance_range'"),
                        ({"image": image_b64(), "blur": -1}, "'blur'"), ([], "object"),
                        ({"image": base64.b64encode(b"text").decode()}, "'image'"),
                        ({"image": image_b64(), "estimator": "zoe"}, "'estimator'")]:
        with pytest.raises(Depth2ImgError, match=field) as error:
            parse_estimate_request(body)
        assert error.value.status_code == 422


def test_estimate_request_above_the_size_limit_names_the_field():
    with pytest.raises(Depth2ImgError, match="'image'.*limit"):
        parse_estimate_request({"image": image_b64((64, 64))}, max_pixels=1000)


def test_the_request_schema_is_the_args_schema():
    schema = estimate_request_schema()
    assert set(schema["properties"]) == set(ESTIMATE_FIELDS)
    assert schema["oneOf"] == [{"required": ["image"]}, {"required": ["depth_image"]}]
    defaults = Depth2ImgArgs()
    for name, prop in schema["properties"].items():
        if name in ("image", "depth_image"):
            continue
        assert prop.get("default") == getattr(defaults, name), name
        if "minimum" in prop:  # the bounds the schema states are the ones the args schema enforces
            low, high = prop["minimum"], prop["maximum"]
            other = {"clip_near": {"clip_far": 0.0}, "clip_far": {"clip_near": 100.0}}.get(name, {})
            for inside in (low, high):
                if (name, inside) in (("clip_far", 100.0), ("clip_near", 0.0)):
                    continue  # clip_far < clip_near always
                Depth2ImgArgs(**{name: inside, **other})
            for outside in (low - 0.01, high + 0.01):
                with pytest.raises(ArgsError, match=name):
                    Depth2ImgArgs(**{name: outside, **other})
    assert schema["properties"]["estimator"]["enum"] == ["checkpoint-midas"]


def test_estimate_response_is_a_16_bit_png_at_the_requested_size():
    depth = np.tile(np.linspace(0, 2, 384, dtype=np.float32), (288, 1))
    response = estimate_response(depth, size=(128, 96))
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(response["depth"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16 and decoded.shape == (96, 128)
    assert (response["width"], response["height"], response["bit_depth"]) == (128, 96, 16)
    # The ramp, resized: OpenCV's cubic kernel (a = -0.75) misses a linear ramp by up to 0.05 of a source step,
    # and the 16-bit min-max scaling stretches the +-0.2 % border overshoot: 5e-3 of the range covers both.
    ideal = np.clip(((np.arange(128) + 0.5) * 3 - 0.5) / 383, 0, 1)
    assert np.allclose(decoded[50] / 65535, ideal, atol=5e-3)
    assert response["min"] == pytest.approx(0, abs=0.01) and response["max"] == pytest.approx(2, abs=0.01)


def test_estimators_response_says_why_one_is_unavailable():
    [without] = estimators_response(False)
    assert without["name"] == "checkpoint-midas" and not without["available"]
    assert "depth checkpoint" in without["reason"]
    [with_model] = estimators_response(True)
    assert with_model["available"] and with_model["reason"] == ""
    assert set(with_model) == {"name", "label", "kind", "source", "available", "reason"}
    assert (with_model["kind"], with_model["source"]) == ("inverse", "checkpoint")


def test_checkpoints_response_lists_depth_models_and_skips_bad_files_naming_them(tiny_checkpoint, tmp_path, caplog):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(plain))
    truncated = tmp_path / "interrupted.ckpt"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # a zip's start: torch.load fails at the central directory
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    entries = [("depth [abc]", str(tiny_checkpoint)), ("plain", str(plain)), ("cut", str(truncated)),
               ("junk", str(junk))]
    with caplog.at_level(logging.WARNING):
        listed = checkpoints_response(entries)
    assert [(e["title"], e["format"]) for e in listed] == [("depth [abc]", "safetensors")]
    # A caller may be a stranger: the file's name, never the server path (issue 14).
    assert listed[0]["name"] == tiny_checkpoint.name and str(tiny_checkpoint.parent) not in str(listed)
    for bad in (truncated, junk):
        assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1, bad
    assert not any(str(plain) in r.getMessage() for r in caplog.records)  # not a depth model: not an error


def test_an_uploaded_distance_map_is_answered_as_inverse_depth_with_its_notice():
    """depth_image instead of image: read as depth_kind says (here a normalized Z-pass PNG, black = near)."""
    from depth2img.webui.routes import answer_estimate_request

    distance = np.tile(np.linspace(0, 65535, 40), (30, 1)).astype(np.uint16)  # left near, right far
    body = {"depth_image": base64.b64encode(cv2.imencode(".png", distance)[1].tobytes()).decode(),
            "depth_kind": "distance"}

    def no_estimate(image, name):
        raise AssertionError("an uploaded map is not estimated")

    approximate = answer_estimate_request(parse_estimate_request(body), no_estimate)
    exact = answer_estimate_request(parse_estimate_request({**body, "distance_range": [1, 4]}), no_estimate)
    assert "approximate" in approximate["notice"] and exact["notice"] == ""
    assert (exact["width"], exact["height"]) == (40, 30)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(exact["depth"]), np.uint8), cv2.IMREAD_UNCHANGED)
    # 1/d for d = 1 + v * 3, computed here, against the 16-bit min-max answer (and its min and max)
    inverse = 1 / (1 + distance[0].astype(np.float64) / 65535 * 3)
    assert exact["min"] == pytest.approx(inverse.min(), rel=1e-5) and exact["max"] == pytest.approx(inverse.max())
    assert np.allclose(decoded[0] / 65535, (inverse - inverse.min()) / (inverse.max() - inverse.min()), atol=2e-5)


# ---- POST /depth2img/v1/mask (issue 9) ---------------------------------------------------------------------


def ramp_b64(width=16, height=8) -> str:
    ok, data = cv2.imencode(".png", np.tile(np.linspace(0, 65535, width), (height, 1)).astype(np.uint16))
    return base64.b64encode(data.tobytes()).decode()


def decode_mask(b64: str) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(base64.b64decode(b64))))


def test_mask_request_and_response_from_an_uploaded_depth_map():
    from depth2img.webui.routes import mask_response, parse_mask_request

    request = parse_mask_request({"image": image_b64((16, 8)), "depth_image": ramp_b64(), "mask_low": 50})
    assert request.args.mask_from_depth and request.depth is not None and request.painted is None
    answer = mask_response(request, request.depth)
    mask = decode_mask(answer["mask"])
    assert mask.shape == (8, 16) and mask.dtype == np.uint8 and (answer["width"], answer["height"]) == (16, 8)
    assert (mask[:, :8] == 0).all() and (mask[:, 8:] == 255).all()
    # Post-processing applies before the band: inverted, the far (left) half is the near one.
    inverted = parse_mask_request({"image": image_b64((16, 8)), "depth_image": ramp_b64(), "mask_low": 50,
                                   "invert": True})  # fmt: skip
    assert (decode_mask(mask_response(inverted, inverted.depth)["mask"])[:, :8] == 255).all()


def test_mask_request_combines_with_a_painted_mask():
    from depth2img.webui.routes import mask_response, parse_mask_request

    painted = np.zeros((8, 16), np.uint8)
    painted[:4] = 255
    buffer = BytesIO()
    Image.fromarray(painted).save(buffer, format="PNG")
    body = {"image": image_b64((16, 8)), "depth_image": ramp_b64(), "mask_low": 50, "mask_combine": "union",
            "mask": base64.b64encode(buffer.getvalue()).decode()}  # fmt: skip
    request = parse_mask_request(body)
    mask = decode_mask(mask_response(request, request.depth)["mask"])
    assert (mask[:4] == 255).all() and (mask[4:, 8:] == 255).all() and (mask[4:, :8] == 0).all()


@pytest.mark.parametrize(
    "body, field",
    [({"mask_low": 120}, "mask_low"), ({"mask_low": 60, "mask_high": 40}, "mask_low"), ({"image": "%%"}, "image"),
     ({"image": None}, "image"), ({"depth_image": "%%"}, "depth_image"), ({"mask": image_b64((4, 4))}, "mask"),
     ({"mask_from_depth": True}, "mask_from_depth"), ({"estimator": "nope"}, "estimator"),
     ({"mask_combine": "xor"}, "mask_combine")],
)  # fmt: skip
def test_mask_request_errors_name_the_field(body, field):
    from depth2img.webui.routes import parse_mask_request

    body = {k: v for k, v in {"image": image_b64((16, 8)), **body}.items() if v is not None}
    with pytest.raises(Depth2ImgError) as error:
        parse_mask_request(body)
    assert error.value.status_code == 422 and field in error.value.detail


def test_an_empty_band_is_an_error_naming_the_band_fields():
    from depth2img.webui.routes import mask_response, parse_mask_request

    # A ramp conditioned on 0..2 lies in 0-50 percent of that range: 60-100 selects no pixel.
    request = parse_mask_request({"image": image_b64((16, 8)), "depth_image": ramp_b64(), "mask_low": 60,
                                  "depth_range": [0, 2]})  # fmt: skip
    with pytest.raises(Depth2ImgError, match="'mask_low', 'mask_high'.*no pixel") as error:
        mask_response(request, request.depth)
    assert error.value.status_code == 422


# What POST /depth2img/v1/mask documents for each setting, written out (README "HTTP API"; Depth2ImgArgs' defaults):
# (JSON type, default, (minimum, maximum) or None, enum or None).
MASK_SETTINGS_DOC = {
    "estimator": ("string", "checkpoint-midas", None, None),  # its enum: the estimator list, checked below
    "depth_kind": ("string", "auto", None, ["auto", "inverse", "distance"]),
    "distance_range": (["array", "null"], None, None, None),
    "exr_channel": ("string", "", None, None),
    "invert": ("boolean", False, None, None),
    "clip_near": ("number", 100.0, (0.0, 100.0), None),
    "clip_far": ("number", 0.0, (0.0, 100.0), None),
    "gamma": ("number", 1.0, (0.05, 20.0), None),
    "blur": ("number", 0.0, (0.0, 128.0), None),
    "depth_range": (["array", "null"], None, None, None),
    "mask_low": ("number", 0.0, (0.0, 100.0), None),
    "mask_high": ("number", 100.0, (0.0, 100.0), None),
    "mask_band_mode": ("string", "range", None, ["range", "percentile"]),
    "mask_feather": ("number", 0.0, (0.0, 256.0), None),
    "mask_grow": ("integer", 0, (-256, 256), None),
    "mask_invert": ("boolean", False, None, None),
    "mask_combine": ("string", "replace", None, ["replace", "intersect", "union"]),
    "mask_auto": ("boolean", False, None, None),
}


def test_the_mask_request_schema_documents_what_the_parser_accepts():
    from depth2img.estimate.registry import list_estimators
    from depth2img.webui.routes import mask_request_schema, parse_mask_request

    schema = mask_request_schema()
    assert set(schema["properties"]) == {"image", "depth_image", "mask", *MASK_SETTINGS_DOC}
    assert schema["required"] == ["image"] and schema["additionalProperties"] is False
    for name, (kind, default, bounds, choices) in MASK_SETTINGS_DOC.items():
        prop = schema["properties"][name]
        assert prop["type"] == kind, name
        assert prop.get("default") == default and type(prop.get("default")) is type(default), name
        assert (prop.get("minimum"), prop.get("maximum")) == (bounds or (None, None)), name
        if choices is not None:
            assert prop["enum"] == choices, name
    assert schema["properties"]["estimator"]["enum"] == [entry.name for entry in list_estimators()]
    assert "checkpoint-midas" in schema["properties"]["estimator"]["enum"]

    def parse(**settings):
        return parse_mask_request({"image": image_b64((16, 8)), **settings})

    def refused(key, **settings):
        with pytest.raises(Depth2ImgError) as error:
            parse(**settings)
        assert error.value.status_code == 422 and f"field {key!r}" in error.value.detail, (settings, error.value.detail)

    # The defaults the schema states are the ones a request without the setting gets (the band turned on).
    defaults = parse().args
    for name, (_, default, _, _) in MASK_SETTINGS_DOC.items():
        assert getattr(defaults, name) == default, name
    assert defaults.mask_from_depth is True
    # Every documented value is taken as given; one step past either end of a range, or the wrong type, is refused
    # by a message naming the key.
    for name, (kind, _, bounds, choices) in MASK_SETTINGS_DOC.items():
        for value in choices or []:
            assert getattr(parse(**{name: value}).args, name) == value
        if choices is not None:
            refused(name, **{name: "bogus"})
        if bounds is not None:
            low, high = bounds
            step = 1 if kind == "integer" else 0.01
            # Inside the range, away from the pairs' own order (clip_far < clip_near, mask_low < mask_high).
            inside = (low + high) / 2 if kind == "number" else 3
            partner = {"clip_far": {"clip_near": 100.0}, "clip_near": {"clip_far": 0.0},
                       "mask_low": {"mask_high": 100.0}, "mask_high": {"mask_low": 0.0}}.get(name, {})  # fmt: skip
            assert getattr(parse(**{name: inside}, **partner).args, name) == inside
            refused(name, **{name: high + step})
            refused(name, **{name: low - step})
            refused(name, **{name: "many"})
        if kind == "boolean":
            assert getattr(parse(**{name: True}).args, name) is True
            refused(name, **{name: "maybe"})
        if kind == ["array", "null"]:
            assert getattr(parse(**{name: [1, 4]}).args, name) == (1.0, 4.0)
            refused(name, **{name: [1]})
    refused("estimator", estimator="bogus")
    for unknown in ("mask_lo", "mask_from_depth"):  # a typo, and the route's own setting: named, not ignored
        with pytest.raises(Depth2ImgError, match=rf"^unknown field\(s\) {unknown};"):
            parse(**{unknown: 50})
    with pytest.raises(Depth2ImgError, match=r"^fields 'mask_low' \(60.0\) must be below 'mask_high' \(40.0\)"):
        parse(mask_low=60, mask_high=40)
    with pytest.raises(Depth2ImgError, match="'image'"):
        parse_mask_request({"mask_low": 50})  # the one required field
