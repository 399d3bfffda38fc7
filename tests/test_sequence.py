"""Frame sequences on one depth scale (issue 9 §3): ranges, the depth pass, resumable per-frame jobs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.base.errors import SequenceError
from depth2img.pipeline.generate import generate
from depth2img.pipeline.load import load_pipeline
from depth2img.pipeline.request import GenerationRequest
from depth2img.process.scale import range_sample
from depth2img.sequences.passes import (
    SEQUENCE_FILE,
    FrameJob,
    ScaleSettings,
    list_frames,
    pending,
    run_sequence,
    shared_ranges,
    write_sequence_file,
)

SIZE = 64


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)


def frame_image(index: int, size: int = SIZE) -> Image.Image:
    """A static textured background with a bright square moving right."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(40, 120, (size, size, 3), dtype=np.uint8)
    x = 8 + 8 * index
    pixels[20:40, x : x + 16] = 230
    return Image.fromarray(pixels)


def frame_depth(index: int, size: int = SIZE) -> np.ndarray:
    """A far strip (0.1) at the top, a static background (0.4), the square nearer every frame (0.55 .. 0.95):
    per-frame min-max moves the background's conditioning as the square's depth (the maximum) changes."""
    depth = np.full((size, size), 0.4, np.float32)
    depth[:8] = 0.1
    x = 8 + 8 * index
    depth[20:40, x : x + 16] = 0.55 + 0.1 * index
    return depth


FRAMES = 3  # few and tiny: every frame is a real render


def make_clip(folder, count=FRAMES):
    frames, depths = folder / "frames", folder / "depths"
    frames.mkdir()
    depths.mkdir()
    for i in range(count):
        frame_image(i).save(frames / f"f{i + 1}.png")
        np.save(depths / f"f{i + 1}.npy", frame_depth(i))
    return frames, depths


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path)


@pytest.fixture(scope="module")
def rendered(pipe, tmp_path_factory):
    """One global-scale run, shared by the tests that read it or resume it (on a copy)."""
    folder = tmp_path_factory.mktemp("rendered")
    frames, depths = make_clip(folder)
    report = run_sequence(frames, folder / "out", template(), lambda: pipe, depth_dir=depths, say=quiet)
    return frames, depths, folder / "out", report


def template(**overrides) -> GenerationRequest:
    values = dict(prompt="a street", steps=1, strength=1.0, seed=5, width=SIZE, height=SIZE)
    values.update(overrides)
    return GenerationRequest(**values)


def quiet(*_):
    pass


# ---- frames and ranges --------------------------------------------------------------------------


def test_frames_in_natural_order(tmp_path):
    for name in ("f10.png", "f2.png", "f1.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["f1.jpg", "f2.png", "f10.png"]
    with pytest.raises(SequenceError, match="no frames"):
        list_frames(_empty(tmp_path))
    with pytest.raises(SequenceError, match="not found"):
        list_frames(tmp_path / "missing")


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_range_sample_keeps_real_values_and_bounds_the_size():
    depth = np.random.default_rng(0).random((1000, 700)).astype(np.float32)
    sample = range_sample(depth, 65536)
    assert sample.size <= 65536 and np.isin(sample, depth).all()
    small = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(range_sample(small), small.ravel())  # small maps: every pixel


def test_global_window_and_per_frame_ranges():
    maps = [np.full((4, 4), float(i)) + np.linspace(0, 1, 16).reshape(4, 4) for i in range(5)]
    samples = [range_sample(m) for m in maps]
    everything = np.concatenate([m.ravel() for m in maps])
    glob = shared_ranges(samples, ScaleSettings("global", far_percentile=10, near_percentile=90))
    expected = tuple(np.percentile(everything, [10, 90]))
    assert glob == [expected] * 5
    window = shared_ranges(samples, ScaleSettings("window", window=3, far_percentile=0, near_percentile=100))
    # A centred window of 3: frames i-1..i+1, cut at the ends. Frame i spans i..i+1.
    assert window == [(0.0, 2.0), (0.0, 3.0), (1.0, 4.0), (2.0, 5.0), (3.0, 5.0)]
    assert shared_ranges(samples, ScaleSettings("per-frame")) == [None] * 5
    with pytest.raises(SequenceError, match="flat"):
        shared_ranges([np.zeros(16)] * 2, ScaleSettings())


@pytest.mark.parametrize(
    "kwargs, message",
    [({"scale": "local"}, "scale must be"), ({"scale": "window"}, "window"),
     ({"far_percentile": 60, "near_percentile": 40}, "far < near")],
)
def test_bad_scale_settings(kwargs, message):
    with pytest.raises(SequenceError, match=message):
        ScaleSettings(**kwargs)


def test_global_scale_holds_the_background_still():
    """The point of it all: the background's conditioning stays put while the object comes nearer."""
    from depth2img.condition.conditioning import depth_conditioning

    maps = np.stack([frame_depth(i) for i in range(5)])
    background = torch.from_numpy((maps == np.float32(0.4)).all(axis=0))
    per_frame = depth_conditioning(maps, (SIZE, SIZE))
    (glob,) = set(shared_ranges([range_sample(m) for m in maps], ScaleSettings()))
    shared = depth_conditioning(maps, (SIZE, SIZE), depth_range=glob)

    def background_change(cond):
        return float((cond[1:, 0] - cond[:-1, 0]).abs()[:, background].mean())

    assert background_change(per_frame) > 0.05
    assert background_change(shared) <= background_change(per_frame) / 10


# ---- the run ------------------------------------------------------------------------------------


def test_sequence_renders_every_frame_on_one_scale(pipe, rendered):
    frames, depths, out, report = rendered
    names = [f"f{i + 1}.png" for i in range(FRAMES)]
    assert report.rendered == names and report.failed == {} and report.skipped == []
    document = json.loads((out / SEQUENCE_FILE).read_text())
    ranges = {entry["name"]: tuple(entry["range"]) for entry in document["frames"]}
    assert len(set(ranges.values())) == 1  # one scale for all
    everything = np.concatenate([frame_depth(i).ravel() for i in range(FRAMES)])
    assert ranges["f1.png"] == tuple(np.percentile(everything, [0.5, 99.5]))
    assert (document["width"], document["height"]) == (SIZE, SIZE)
    # Each output is exactly what a single generate gives for that frame, depth, range and seed: the same code
    # path in one process; PNG keeps the 8-bit values, so equal up to rounding of the same floats (1 level).
    alone = generate(pipe, template(image=frame_image(2), depth=frame_depth(2), depth_range=ranges["f3.png"]),
                     progress=False).images[0]
    difference = np.abs(np.asarray(Image.open(out / "f3.png")).astype(int) - np.asarray(alone).astype(int))
    assert difference.max() <= 1
    assert (out / "depth" / "f3.npy").is_file() and (out / "f3.png").stat().st_mode & 0o777 == 0o644


def test_per_frame_scale_is_the_hosts_behaviour(pipe, clip, tmp_path):
    frames, depths = clip
    out = tmp_path / "out"
    run_sequence(frames, out, template(), lambda: pipe, depth_dir=depths, scale=ScaleSettings("per-frame"),
                 say=quiet)
    alone = generate(pipe, template(image=frame_image(1), depth=frame_depth(1)), progress=False).images[0]
    difference = np.abs(np.asarray(Image.open(out / "f2.png")).astype(int) - np.asarray(alone).astype(int))
    assert difference.max() <= 1  # as above: one code path, PNG rounding
    document = json.loads((out / SEQUENCE_FILE).read_text())
    assert all(entry["range"] is None for entry in document["frames"])


def test_estimates_in_batches_and_says_which_were_missing(pipe, clip, tmp_path):
    frames, depths = clip
    frame_image(3).save(frames / "f4.png")  # four frames, one with a map, three estimated
    for name in ("f1.npy", "f3.npy"):
        (depths / name).unlink()
    pipe.depth_cache.clear()
    calls = pipe.depth_cache.estimator_calls
    said = []
    report = run_sequence(frames, tmp_path / "out", template(), lambda: pipe, depth_dir=depths, batch_size=2,
                          say=said.append)
    assert pipe.depth_cache.estimator_calls == calls + 2  # 3 frames to estimate, 2 per forward
    assert report.depth.estimated == ["f1.png", "f3.png", "f4.png"] and report.depth.estimator_forwards == 2
    assert report.depth.from_depth_dir == ["f2.png"]
    assert any("3 had no map in" in line and "first f1.png" in line for line in said)
    # The estimated map is the estimator's own, post-processed as asked (nothing here).
    estimated = np.load(tmp_path / "out" / "depth" / "f3.npy")
    direct = pipe.estimator.estimate(frame_image(2))[0].numpy()  # alone, past the cache
    # Batched vs alone: a batch of 2 can take other GEMM blockings (another accumulation order), a few float32
    # ulps per layer: ~1e-6 of the values here; a wrong frame or a swapped batch item differs by far more.
    np.testing.assert_allclose(estimated, direct, rtol=0, atol=1e-5 * np.abs(direct).max())


def test_rerun_skips_done_frames_and_renders_missing_ones(pipe, rendered, tmp_path):
    frames, depths, done, _ = rendered
    out = shutil.copytree(done, tmp_path / "out")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (out / "f2.png").unlink()
    (out / ".f1.png.abc.tmp.png").write_bytes(b"half")  # what a killed writer could leave: never read
    report = run_sequence(frames, out, template(), lambda: pipe, depth_dir=depths, say=quiet)
    assert report.rendered == ["f2.png"] and sorted(report.skipped) == ["f1.png", "f3.png"]
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("f*.png")}
    assert all(after[name] == before[name] for name in before if name != "f2.png")
    assert report.depth.reused == [f"f{i + 1}.png" for i in range(FRAMES)]
    assert np.array_equal(np.asarray(Image.open(out / "f2.png")), np.asarray(Image.open(done / "f2.png")))


def test_rerun_with_other_settings_is_refused(pipe, rendered):
    frames, depths, out, _ = rendered
    with pytest.raises(SequenceError, match=r"other settings \(prompt, seed\)"):
        run_sequence(frames, out, template(prompt="a river", seed=6), lambda: pipe, depth_dir=depths, say=quiet)


def test_outputs_made_on_another_range_are_rendered_again(tmp_path):
    """pending(): an output counts as done only if the previous run's range for its frame is this run's."""
    jobs = [FrameJob(name, tmp_path / name, tmp_path / "d.npy", (0.0, 1.0), tmp_path / "out" / name)
            for name in ("a.png", "b.png", "c.png", "d.png")]
    (tmp_path / "out").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / "out" / name).write_bytes(b"png")
    previous = {"frames": [{"name": "a.png", "depth": "depth/a.npy", "range": [0.0, 1.0]},
                           {"name": "b.png", "depth": "depth/b.npy", "range": [0.0, 0.9]}]}
    todo, done, stale = pending(jobs, previous)
    assert [j.name for j in done] == ["a.png"]
    assert [j.name for j in stale] == ["b.png", "c.png"]  # another range; no record of its range
    assert [j.name for j in todo] == ["d.png", "b.png", "c.png"]


def test_unreadable_frames_are_named_and_the_rest_renders(pipe, clip, tmp_path):
    frames, depths = clip
    (frames / "f3.png").write_text("not a picture")
    report = run_sequence(frames, tmp_path / "out", template(), lambda: pipe, depth_dir=depths, say=quiet)
    assert list(report.failed) == ["f3.png"] and "not a readable image" in report.failed["f3.png"]
    assert report.rendered == ["f1.png", "f2.png"]
    assert not (tmp_path / "out" / "f3.png").exists()
    entries = json.loads((tmp_path / "out" / SEQUENCE_FILE).read_text())["frames"]
    entry = next(e for e in entries if e["name"] == "f3.png")
    assert "not a readable image" in entry["error"]


def test_frames_of_another_size(pipe, clip, tmp_path):
    frames, depths = clip
    frame_image(1, size=80).save(frames / "f2.png")
    with pytest.raises(SequenceError, match="frame f2.png is 80x80, the first frame f1.png 64x64"):
        run_sequence(frames, tmp_path / "refused", template(), lambda: pipe, depth_dir=depths,
                     refuse_other_sizes=True, say=quiet)
    assert not (tmp_path / "refused").exists()  # refused before any work
    said = []
    report = run_sequence(frames, tmp_path / "out", template(), lambda: pipe, depth_dir=depths, say=said.append)
    assert report.failed == {} and Image.open(tmp_path / "out" / "f2.png").size == (SIZE, SIZE)
    assert any("first f2.png" in line for line in said)


def test_outputs_never_overwrite_the_frames(pipe, clip):
    frames, depths = clip
    with pytest.raises(SequenceError, match="is the frames folder"):
        run_sequence(frames, frames, template(), lambda: pipe, depth_dir=depths, say=quiet)


def test_frames_sharing_a_name_are_refused(pipe, clip, tmp_path):
    frames, depths = clip
    frame_image(0).save(frames / "f1.jpg")
    with pytest.raises(SequenceError, match="frames f1.jpg and f1.png share the name .f1."):
        run_sequence(frames, tmp_path / "out", template(), lambda: pipe, depth_dir=depths, say=quiet)


def test_depth_band_mask_per_frame_on_the_shared_scale(pipe, clip, tmp_path):
    from depth2img.process.masks import MaskSettings

    frames, depths = clip
    out = tmp_path / "out"
    # Band 50-100 % of the shared range 0.1..0.95: the square in every frame (0.55..0.95), never the background
    # (0.4) or the strip (0.1); beyond the mask the frames are their input pixels.
    run_sequence(frames, out, template(depth_mask=MaskSettings(low=50, high=100)), lambda: pipe, depth_dir=depths,
                 say=quiet)
    for i in range(FRAMES):
        result, original = np.asarray(Image.open(out / f"f{i + 1}.png")), np.asarray(frame_image(i))
        outside = frame_depth(i) < 0.5
        assert np.array_equal(result[outside], original[outside])


def test_depth_pass_batches_frames_of_one_size_as_they_come(tmp_path):
    """Grouping only (the estimator here is the frame's luminance, a stand-in that shows what each forward got)."""
    from depth2img.sequences.passes import run_depth_pass

    frames = []
    for i, size in enumerate([64, 64, 80, 64, 80]):
        frames.append(tmp_path / f"f{i + 1}.png")
        frame_image(i, size=size).save(frames[-1])
    forwards = []

    def luminance(images):
        forwards.append([image.size for image in images])
        return [np.asarray(image.convert("L"), np.float32) for image in images]

    result = run_depth_pass(frames, tmp_path / "out", luminance, batch_size=2, postprocess={"invert_depth": True})
    assert forwards == [[(64, 64), (64, 64)], [(80, 80), (80, 80)], [(64, 64)]]  # full batches go at once
    assert result.estimator_forwards == 3 and sorted(result.estimated) == [f"f{i}.png" for i in range(1, 6)]
    saved = np.load(tmp_path / "out" / "depth" / "f3.npy")
    gray = np.asarray(frame_image(2, size=80).convert("L"), np.float32)
    assert np.array_equal(saved, gray.max() + gray.min() - gray)  # post-processed (inverted) as asked


def depth_dir_frames(tmp_path, maps: dict[str, np.ndarray]) -> tuple[list, object]:
    """Frames named by maps' keys whose depth maps come from a depth folder (.npy, read as they are)."""
    depths = tmp_path / "depths"
    depths.mkdir()
    frames = []
    for name, depth in maps.items():
        frames.append(tmp_path / name)
        np.save(depths / f"{frames[-1].stem}.npy", depth)
    return frames, depths


def test_post_processing_takes_one_scale_over_the_whole_sequence(tmp_path):
    """Issue 15.5: gamma (like invert and clip) took each frame's own min-max, so one depth range was not one scale
    (both frames below spanned 0..1 after it). Now the set's bounds (0.1..0.9 over both frames) serve every frame,
    sequence.json records them, and the shared range is taken over the maps processed on them."""
    from depth2img.sequences.passes import run_depth_pass

    maps = {"f1.png": np.linspace(0.2, 0.6, 64, dtype=np.float32).reshape(8, 8),
            "f2.png": np.linspace(0.1, 0.9, 64, dtype=np.float32).reshape(8, 8)}
    frames, depths = depth_dir_frames(tmp_path, maps)
    scale = ScaleSettings("global", far_percentile=0.0, near_percentile=100.0)
    result = run_depth_pass(frames, tmp_path / "out", None, depth_dir=depths, postprocess={"gamma": 2.0}, scale=scale)
    for frame in frames:  # gamma within 0.1..0.9 for both: 0.1 + 0.8 * ((d - 0.1) / 0.8) ** 2
        expected = 0.1 + 0.8 * ((maps[frame.name].astype(np.float64) - 0.1) / 0.8) ** 2
        np.testing.assert_allclose(np.load(result.depth_files[frame.name]), expected, rtol=1e-5)
    assert np.load(result.depth_files["f1.png"])[0, 0] == pytest.approx(0.1125)  # 0.2: a sixteenth of the way up
    assert result.ranges["f1.png"] == result.ranges["f2.png"] == pytest.approx((0.1, 0.9))
    assert result.postprocess_scale.bounds == pytest.approx((0.1, 0.9)) and result.postprocess_scale.clip is None
    # Per-frame: each frame on its own bounds, as a single job does (f1 keeps its 0.2..0.6).
    per_frame = run_depth_pass(frames, tmp_path / "per", None, depth_dir=depths, postprocess={"gamma": 2.0},
                               scale=ScaleSettings("per-frame"))
    expected = 0.2 + 0.4 * ((maps["f1.png"].astype(np.float64) - 0.2) / 0.4) ** 2
    np.testing.assert_allclose(np.load(per_frame.depth_files["f1.png"]), expected, rtol=1e-5)
    assert per_frame.postprocess_scale is None


def test_clip_and_invert_take_the_sequences_percentiles_and_bounds(tmp_path):
    """Clip at the set's 25th/75th percentiles (pooled over both frames), then invert within the set's clipped
    bounds: the same raw value gives the same processed value in every frame."""
    from depth2img.sequences.passes import run_depth_pass

    f1 = np.arange(0, 8, dtype=np.float32).repeat(8).reshape(8, 8)  # rows of 0..7
    f2 = f1 + 8  # rows of 8..15: pooled, 0..15 with 64 values each
    frames, depths = depth_dir_frames(tmp_path, {"f1.png": f1, "f2.png": f2})
    post = {"clip_near": 75.0, "clip_far": 25.0, "invert_depth": True}
    result = run_depth_pass(frames, tmp_path / "out", None, depth_dir=depths, postprocess=post,
                            scale=ScaleSettings("global", far_percentile=0.0, near_percentile=100.0))
    low, high = np.percentile(np.concatenate([f1.ravel(), f2.ravel()]), [25, 75])  # 3.75, 11.25
    for name, raw in (("f1.png", f1), ("f2.png", f2)):
        expected = low + high - np.clip(raw, low, high)
        np.testing.assert_allclose(np.load(result.depth_files[name]), expected, rtol=1e-6)
    assert result.postprocess_scale.clip == pytest.approx((3.75, 11.25))
    # sequence.json records the values every frame was processed with.
    write_sequence_file(tmp_path / "out", {}, frames, result, (8, 8))
    recorded = json.loads((tmp_path / "out" / SEQUENCE_FILE).read_text())["postprocess_scale"]
    assert recorded["clip"] == pytest.approx([3.75, 11.25]) and recorded["bounds"] == pytest.approx([3.75, 11.25])
