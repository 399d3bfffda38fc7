import numpy as np
import pytest
import torch

from depth2img.base.devices import BackendCaps, backend_caps, bicubic_resize
from depth2img.condition.conditioning import (
    FLAT_CONDITIONING,
    depth_conditioning,
    normalize_per_sample,
    normalize_to_range,
)


def reference_ldm(depth: torch.Tensor, size) -> torch.Tensor:
    """Stability's get_input arithmetic with the hosts' plain (max - min) denominator, whole-batch for B=1."""
    resized = torch.nn.functional.interpolate(depth, size=size, mode="bicubic", align_corners=False)
    low, high = torch.aminmax(resized)
    return 2.0 * (resized - low) / (high - low) - 1.0


def test_matches_reference_for_a_non_flat_map():
    torch.manual_seed(0)
    depth = torch.rand(1, 1, 96, 128) * 30 + 5
    ours = depth_conditioning(depth, (12, 16))
    assert ours.shape == (1, 1, 12, 16) and ours.dtype == torch.float32
    # Bit-equal by construction: the same interpolate kernel on the same tensor in this process, then the same
    # IEEE elementwise operations (+, -, *, / round exactly, whatever the vector width).
    assert torch.equal(ours, reference_ldm(depth, (12, 16)))
    assert ours.min() == -1.0 and ours.max() == 1.0


def test_normalizes_each_sample_on_its_own():
    torch.manual_seed(0)
    a = torch.rand(1, 1, 32, 32)
    b = a * 100 + 50  # same shape of scene, different range
    both = depth_conditioning(torch.cat([a, b]), (8, 8))
    torch.testing.assert_close(both[0], both[1], rtol=0, atol=1e-5)
    assert torch.equal(both[0:1], reference_ldm(a, (8, 8)))


@pytest.mark.parametrize("value", [0.0, 1.0, 1234.5, -3.0])
def test_flat_map_gives_the_documented_finite_constant(value):
    cond = depth_conditioning(torch.full((2, 1, 16, 16), value), (4, 4))
    assert torch.isfinite(cond).all()
    assert (cond == FLAT_CONDITIONING).all()


def test_flat_sample_beside_a_normal_one():
    normal = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    cond = depth_conditioning(torch.cat([torch.zeros_like(normal), normal]), (8, 8))
    assert (cond[0] == FLAT_CONDITIONING).all()
    assert cond[1].min() == -1.0 and cond[1].max() == 1.0


def test_nan_depth_is_refused():
    depth = torch.rand(1, 1, 8, 8)
    depth[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        normalize_per_sample(depth)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_precision_inputs_and_outputs(dtype):
    depth = (torch.rand(1, 1, 40, 40) * 10).to(dtype)
    cond = depth_conditioning(depth, (5, 5), dtype=dtype)
    assert cond.dtype == dtype and torch.isfinite(cond.float()).all()
    expected = reference_ldm(depth.float(), (5, 5)).to(dtype)
    torch.testing.assert_close(cond, expected)


def test_accepts_numpy_and_2d_3d_shapes():
    depth = np.random.default_rng(0).random((16, 24)).astype(np.float32)
    a = depth_conditioning(depth, (2, 3))
    b = depth_conditioning(torch.from_numpy(depth)[None], (2, 3))
    assert a.shape == b.shape == (1, 1, 2, 3) and torch.equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        depth_conditioning(torch.zeros(1, 2, 4, 4), (2, 2))


def test_backend_caps_agree_with_this_torch():
    """The table's claim for the device at hand is what torch really does (CUDA/MPS: tools/gpu_check.sh)."""
    try:
        torch.nn.functional.interpolate(torch.rand(1, 1, 4, 4), size=(3, 3), mode="bicubic", align_corners=False)
        runs = True
    except (RuntimeError, NotImplementedError):
        runs = False
    assert backend_caps("cpu").bicubic == runs


def test_bicubic_fallback_gives_the_native_result():
    """Where a backend lacks bicubic, the CPU computes it: same kernel, so the same numbers as native."""
    x = torch.rand(2, 1, 20, 20)
    native = bicubic_resize(x, (7, 7), BackendCaps(bicubic=True))
    fallback = bicubic_resize(x, (7, 7), BackendCaps(bicubic=False))
    assert fallback.device == x.device and fallback.dtype == torch.float32
    reference = torch.nn.functional.interpolate(x, size=(7, 7), mode="bicubic", align_corners=False)
    assert torch.equal(native, reference) and torch.equal(fallback, reference)


# ---- a given depth range (issue 9 §1) ----


def test_no_range_is_per_sample_min_max_after_bicubic_and_a_flat_sample_is_minus_one():
    torch.manual_seed(1)
    varied = torch.rand(1, 1, 40, 56) * 7 + 2  # 2..9
    shifted = torch.rand(1, 1, 40, 56) * 0.5 + 50  # another range entirely: 50..50.5
    flat = torch.full((1, 1, 40, 56), 3.0)  # inside the first sample's range: a whole-batch min-max would show it
    depth = torch.cat([varied, shifted, flat])
    cond = depth_conditioning(depth, (5, 7))  # depth_range left out: the per-sample path
    assert cond.shape == (3, 1, 5, 7)
    # Independent expectation, written out per sample: bicubic to the latent size (align_corners=False), then
    # numpy's min-max of that sample alone, mapped to [-1, 1] in float64.
    for i in range(2):
        resized = torch.nn.functional.interpolate(depth[i : i + 1], size=(5, 7), mode="bicubic", align_corners=False)
        r = resized.numpy().astype(np.float64)
        expected = 2.0 * (r - r.min()) / (r.max() - r.min()) - 1.0
        # float32 vs float64 arithmetic: the shifted sample's rounding (ulp of 50 over a 0.5 span) is ~2e-5.
        np.testing.assert_allclose(cond[i : i + 1].numpy(), expected, rtol=0, atol=1e-4)
        assert cond[i].min() == -1.0 and cond[i].max() == 1.0
    # The flat sample: the documented constant (module docstring: -1, the reference's training formula for it).
    assert (cond[2] == -1.0).all()


def test_range_maps_lo_to_minus_one_and_hi_to_plus_one():
    # Values chosen so that every step is exact in binary floating point: 2 * (d - 0) / 4 - 1.
    depth = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 5).expand(1, 1, 8, 5).contiguous()
    cond = depth_conditioning(depth, (8, 5), depth_range=(0.0, 4.0))  # same size: bicubic is the identity
    assert torch.equal(cond[0, 0, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))


def test_range_clamps_values_outside_it():
    depth = torch.tensor([-10.0, 0.0, 5.0, 10.0, 99.0]).reshape(1, 1, 1, 5)
    cond = normalize_to_range(depth, (0.0, 10.0))
    assert torch.equal(cond.flatten(), torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0]))


def test_range_holds_one_scale_across_samples():
    """What per-sample min-max cannot do: a farther copy of a scene conditions differently from the scene."""
    torch.manual_seed(2)
    near = torch.rand(1, 1, 32, 32) * 0.5 + 0.5
    far = near * 0.5
    per_sample = depth_conditioning(torch.cat([near, far]), (8, 8))
    torch.testing.assert_close(per_sample[0], per_sample[1], rtol=0, atol=1e-5)  # stretched to the same picture
    fixed = depth_conditioning(torch.cat([near, far]), (8, 8), depth_range=(0.0, 1.0))
    # On one scale [0, 1] -> [-1, 1], halving the depth maps c to (c + 1) / 2 - 1 (bicubic is linear).
    torch.testing.assert_close(fixed[1], (fixed[0] + 1) / 2 - 1, rtol=0, atol=1e-6)
    assert (fixed[1] - fixed[0]).abs().max() > 0.1


def test_flat_map_with_a_range_keeps_its_place_on_the_scale():
    cond = depth_conditioning(torch.full((1, 1, 16, 16), 0.75), (4, 4), depth_range=(0.5, 1.0))
    assert torch.equal(cond, torch.zeros_like(cond))


@pytest.mark.parametrize("bad", [(1.0, 1.0), (2.0, 1.0), (0.0, float("nan")), (0.0,), "wide"])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ValueError, match="depth range"):
        depth_conditioning(torch.rand(1, 1, 8, 8), (2, 2), depth_range=bad)


def test_range_in_half_precision():
    depth = torch.rand(1, 1, 40, 40) * 10
    cond = depth_conditioning(depth, (5, 5), dtype=torch.float16, depth_range=(0.0, 10.0))
    reference = depth_conditioning(depth, (5, 5), depth_range=(0.0, 10.0)).half()
    assert cond.dtype == torch.float16 and torch.equal(cond, reference)  # computed in float32, cast last
