"""`python -m depth2img` as a user runs it: real subprocesses, the tiny checkpoint, exit codes."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.base.paths import REPO_ROOT
from depth2img.process import fitting


def write_png_header(path, width, height):
    """A PNG that declares width x height but holds almost no data: what a decompression bomb looks like."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def run_cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "depth2img", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "DEPTH2IMG_CACHE": str(REPO_ROOT / ".cache")},
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "in.png")
    depth = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    cv2.imwrite(str(folder / "depth.png"), depth)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:44, 20:44] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.new("L", (32, 32)).save(folder / "small-mask.png")
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(folder / "wide.png")
    write_png_header(folder / "huge.png", 20000, 20000)
    torch.save({"state_dict": {"w": torch.zeros(4096)}}, folder / "full.ckpt")  # an interrupted download:
    (folder / "truncated.ckpt").write_bytes((folder / "full.ckpt").read_bytes()[:3000])
    (folder / "not-an-image.png").write_text("hello")
    bad = np.ones((64, 64), np.float32)
    bad[3, 3] = np.nan
    np.save(folder / "nan.npy", bad)
    two_levels = np.zeros((64, 64), np.uint16)
    two_levels[:, 32:] = 65535  # far left half, near right half: nothing in between
    cv2.imwrite(str(folder / "two-levels.png"), two_levels)
    return folder


def test_generate_with_user_depth_equals_plain_diffusers(files, tiny_checkpoint, tmp_path):
    from diffusers import StableDiffusionDepth2ImgPipeline

    from depth2img.pipeline.load import load_pipeline
    from depth2img.source.decoding import load_depth

    out = tmp_path / "out.png"
    result = run_cli(
        "generate", "--image", files / "in.png", "--depth", files / "depth.png", "--prompt", "a house",
        "--strength", "0.75", "--steps", "3", "--seed", "11", "--checkpoint", tiny_checkpoint, "--out", out,
        "--save-depth", tmp_path / "used-depth.png", "--width", "64", "--height", "64",
    )
    assert result.returncode == 0, result.stderr
    assert "img2img: wrote" in result.stdout

    pipe = load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)
    plain = StableDiffusionDepth2ImgPipeline(**pipe.components)
    reference = plain(
        prompt="a house",
        image=Image.open(files / "in.png").convert("RGB"),
        depth_map=torch.from_numpy(load_depth(files / "depth.png"))[None],
        strength=0.75,
        num_inference_steps=3,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(11),
    ).images[0]
    # Another process and another code path for the depth channel (ours vs diffusers' prepare_depth_map): float
    # differences of ~1e-6 can move a pixel across a rounding boundary, so one 8-bit level; a wrong depth map,
    # seed or strength changes pixels by tens of levels.
    difference = np.abs(np.asarray(Image.open(out)).astype(int) - np.asarray(reference).astype(int))
    assert difference.max() <= 1
    saved = cv2.imread(str(tmp_path / "used-depth.png"), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint16 and saved.shape == (64, 64)
    expected = load_depth(files / "depth.png")
    np.testing.assert_allclose(saved / 65535.0, (expected - expected.min()) / np.ptp(expected), atol=1 / 65535)


def test_txt2img_and_inpaint_from_the_command_line(files, tiny_checkpoint, tmp_path):
    txt = run_cli(
        "generate", "--depth", files / "depth.png", "--prompt", "x", "--steps", "2", "--width", "64", "--height", "64",
        "--checkpoint", tiny_checkpoint, "--out", tmp_path / "t.png",
    )
    assert txt.returncode == 0, txt.stderr
    assert Image.open(tmp_path / "t.png").size == (64, 64)
    inpaint = run_cli(
        "generate", "--image", files / "in.png", "--mask", files / "mask.png", "--prompt", "x", "--steps", "2",
        "--width", "64", "--height", "64", "--checkpoint", tiny_checkpoint, "--out", tmp_path / "i.png",
    )
    assert inpaint.returncode == 0, inpaint.stderr
    out, original = np.asarray(Image.open(tmp_path / "i.png")), np.asarray(Image.open(files / "in.png"))
    outside = np.asarray(Image.open(files / "mask.png")) == 0
    assert np.array_equal(out[outside], original[outside])


def test_depth_command_writes_by_suffix_at_the_images_size(files, tiny_checkpoint, tmp_path):
    from depth2img.pipeline.load import load_pipeline

    result = run_cli(
        "depth", "--image", files / "wide.png", "--out", tmp_path / "d.png", "--checkpoint", tiny_checkpoint
    )
    assert result.returncode == 0, result.stderr
    png = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (48, 80)
    result = run_cli(
        "depth", "--image", files / "wide.png", "--out", tmp_path / "d.npy", "--checkpoint", tiny_checkpoint
    )
    assert result.returncode == 0, result.stderr
    values = np.load(tmp_path / "d.npy")
    assert values.dtype == np.float32 and values.shape == (48, 80)
    # The reference: the estimator's own map, resized to the image with OpenCV's bicubic.
    pipe = load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)
    raw = pipe.estimate_depth(Image.open(files / "wide.png").convert("RGB"))[0].numpy()
    expected = cv2.resize(raw, (80, 48), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert (tmp_path / "d.npy").stat().st_mode & 0o777 == 0o644


def test_large_photo_defaults_to_the_models_size(files, tiny_checkpoint, tmp_path):
    Image.new("RGB", (1920, 1080), (120, 80, 40)).save(tmp_path / "photo.png")
    result = run_cli(
        "generate", "--image", tmp_path / "photo.png", "--prompt", "x", "--steps", "1", "--strength", "1",
        "--checkpoint", tiny_checkpoint, "--out", tmp_path / "o.png",
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "o.png").size == (704, 384)
    assert "size 704x384" in result.stdout and "--width/--height" in result.stdout


def test_info_reports_what_a_file_is(tiny_checkpoint, tmp_path):
    result = run_cli("info", tiny_checkpoint)
    assert result.returncode == 0 and "SD 2 depth checkpoint" in result.stdout and "MiDaS keys 368" in result.stdout
    from safetensors.torch import save_file

    sd_keys = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 4, 3, 3)}
    save_file(sd_keys, str(tmp_path / "sd.safetensors"))
    result = run_cli("info", tmp_path / "sd.safetensors")
    assert result.returncode == 0 and "not a depth checkpoint" in result.stdout and "4 input channels" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--image", "missing.png", "--prompt", "x", "--out", "o.png"], "not found"),
        (["generate", "--image", "{f}/not-an-image.png", "--prompt", "x", "--out", "o.png"], "not a readable image"),
        (["generate", "--image", "{f}/in.png", "--mask", "{f}/small-mask.png", "--prompt", "x", "--out", "{f}/o.png",
          "--checkpoint", "{ckpt}"], "mask size"),
        (["generate", "--image", "{f}/in.png", "--depth", "{f}/nan.npy", "--prompt", "x", "--out", "o.png"], "NaN"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--checkpoint", "{f}/in.png"],
         "not a depth checkpoint|unknown checkpoint type"),
        (["generate", "--prompt", "x", "--out", "o.png"], "give an init image"),
        (["info", "{f}/nothing.ckpt"], "not found"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--gamma", "0"], "gamma"),
        (["generate", "--image", "{f}/huge.png", "--prompt", "x", "--out", "o.png"], "megapixels.*--max-megapixels"),
        (["generate", "--image", "{f}/in.png", "--depth", "{f}/huge.png", "--prompt", "x", "--out", "o.png"],
         "depth map .*megapixels"),
        (["depth", "--image", "{f}/huge.png", "--out", "{f}/d.png"], "megapixels"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--steps", "0"], "steps must be"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--steps", "1"], "steps x strength"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "{f}/in.png"], "is also an input"),
        (["generate", "--image", "{f}/in.png", "--depth", "{f}/depth.png", "--prompt", "x", "--out", "o.png",
          "--save-depth", "{f}/depth.png"], "is also an input"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.xyz"], "unsupported file type"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--save-depth", "d.jpg"],
         "unsupported file type"),
        (["info", "{f}/truncated.ckpt"], "not a readable checkpoint"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--depth-range", "1", "0"],
         "'depth_range'.*lo < hi"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--mask-depth", "60:40"],
         "'mask_low' .* below 'mask_high'"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--mask-depth", "0:120"],
         "'mask_high' must be between 0.0 and 100.0"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--mask-depth", "near"],
         "--mask-depth must be LOW:HIGH"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--mask-depth", "50:100",
          "--mask-combine", "union"], "needs a painted mask"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--save-mask", "m.png"],
         "--save-mask needs a mask"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--mask-depth", "50:100",
          "--save-mask", "{f}/in.png"], "is also an input"),
        (["generate", "--image", "{f}/in.png", "--depth", "{f}/two-levels.png", "--prompt", "x", "--out", "o.png",
          "--mask-depth", "40:60", "--checkpoint", "{ckpt}", "--width", "64", "--height", "64"],
         "no pixel lies in the depth band 40-60"),
        (["generate", "--depth", "{f}/depth.png", "--prompt", "x", "--out", "o.png", "--mask-depth", "50:100"],
         "needs an init image"),
        (["mask", "--image", "{f}/in.png", "--depth", "{f}/two-levels.png", "--out", "o.png"], "give the band"),
        (["mask", "--image", "{f}/in.png", "--depth", "{f}/two-levels.png", "--out", "o.png", "--mask-depth",
          "0:100", "--mask-invert"], "covers every pixel"),
        (["mask", "--image", "{f}/in.png", "--depth", "{f}/two-levels.png", "--out", "o.png", "--mask-auto",
          "--mask", "{f}/small-mask.png"], "mask size 32x32"),
        (["sequence", "--frames", "{f}", "--out", "{f}/seq", "--prompt", "x", "--scale", "window"],
         "--scale window needs a number"),
        (["sequence", "--frames", "{f}", "--out", "{f}/seq", "--prompt", "x", "--scale", "local"], "--scale must be"),
        (["sequence", "--frames", "{f}", "--out", "{f}/seq", "--prompt", "x", "--depth-range", "0", "1"],
         "computes the depth ranges"),
        (["sequence", "--frames", "{f}/none", "--out", "{f}/seq", "--prompt", "x"], "frames folder not found"),
        (["sequence", "--frames", "{f}", "--out", "{f}", "--prompt", "x"], "is the frames folder"),
        (["sequence", "--frames", "{f}", "--out", "{f}/seq", "--prompt", "x", "--range-percentiles", "90", "10"],
         "far < near"),
        (["generate", "--image", "{f}/in.png", "--prompt", "x", "--out", "o.png", "--depth-kind", "distance"],
         "describe a --depth map"),
        (["generate", "--depth", "{f}/depth.png", "--prompt", "x", "--out", "o.png", "--distance-range", "0", "9",
          "--depth-kind", "distance"], "distance_range.*0 < near < far"),
        (["generate", "--depth", "{f}/depth.png", "--prompt", "x", "--out", "o.png", "--distance-range", "1", "9",
          "--depth-kind", "inverse"], "distance_range.*depth_kind"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files, tiny_checkpoint, args, message, capsys, monkeypatch):
    """In-process (the same main() the command runs): one line on stderr, exit code 2, no input touched."""
    import re

    from depth2img.standalone.cli import main

    monkeypatch.chdir(files)
    before = {p: p.stat().st_mtime_ns for p in files.iterdir()}
    code = main([a.format(f=files, ckpt=tiny_checkpoint) for a in args])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), stderr
    assert {p: p.stat().st_mtime_ns for p in files.iterdir() if p in before} == before
    assert not (files / "o.png").exists()


def test_txt2img_from_a_blender_exr_and_a_normalized_distance_png(files, tiny_checkpoint, tmp_path, capsys):
    """In-process: the EXR's Z becomes 1/d (background = the far plane); a Z-pass PNG without its range is
    converted approximately, and the command says so."""
    OpenEXR = pytest.importorskip("OpenEXR")
    from depth2img.standalone.cli import main

    distance = np.tile(np.linspace(2.0, 6.0, 64, dtype=np.float32), (64, 1))
    z = distance.copy()
    z[:8] = 1e10  # Blender's background
    header = {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}
    OpenEXR.File(header, {"ViewLayer.Depth.Z": z, "ViewLayer.Combined.R": z * 0}).write(str(tmp_path / "z.exr"))
    common = ["--prompt", "x", "--steps", "1", "--width", "64", "--height", "64", "--checkpoint", str(tiny_checkpoint)]
    code = main(["generate", "--depth", str(tmp_path / "z.exr"), "--out", str(tmp_path / "a.png"),
                 "--save-depth", str(tmp_path / "a.npy"), *common])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "EXR channel 'ViewLayer.Depth.Z', read as distance" in err and "approximate" not in err
    expected = np.where(np.arange(64)[:, None] < 8, 1 / 6.0, 1.0 / distance).astype(np.float32)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), expected, rtol=1e-6)

    cv2.imwrite(str(tmp_path / "z16.png"), (np.linspace(0, 1, 64)[None].repeat(64, 0) * 65535).astype(np.uint16))
    code = main(["generate", "--depth", str(tmp_path / "z16.png"), "--depth-kind", "distance",
                 "--out", str(tmp_path / "b.png"), *common])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note:" in err and "approximate" in err and "--distance-range" in err
    code = main(["generate", "--depth", str(tmp_path / "z16.png"), "--depth-kind", "distance",
                 "--distance-range", "2", "6", "--out", str(tmp_path / "c.png"), *common])
    assert code == 0 and "approximate" not in capsys.readouterr().err


def test_bad_input_from_the_shell_has_no_traceback(files):
    result = run_cli("generate", "--image", files / "huge.png", "--prompt", "x", "--out", files / "o.png")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_convert_diffusers_folder_round_trip(tiny_checkpoint, tmp_path):
    """A diffusers-format fine-tune -> LDM .safetensors + .yaml -> loads and generates the same images."""
    from depth2img.export.tiny import TINY_OPEN_CLIP_ARCH
    from depth2img.pipeline.generate import generate
    from depth2img.pipeline.load import load_pipeline
    from depth2img.pipeline.request import GenerationRequest

    folder = tmp_path / "finetune"
    load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32).save_pretrained(folder)
    out = tmp_path / "finetune.safetensors"
    result = run_cli("convert", folder, "--out", out, "--open-clip-arch", TINY_OPEN_CLIP_ARCH)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    assert out.stat().st_mode & 0o777 == 0o644  # readable by a WebUI running as another user
    again = run_cli("convert", folder, "--out", out, "--open-clip-arch", TINY_OPEN_CLIP_ARCH)
    assert again.returncode == 2 and "already exists" in again.stderr

    from_folder = load_pipeline(folder, device="cpu", dtype=torch.float32)
    from_file = load_pipeline(out, device="cpu", dtype=torch.float32)
    sample = torch.randn(1, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, from_file.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = from_folder.unet(sample, 10, encoder_hidden_states=context).sample
        b = from_file.unet(sample, 10, encoder_hidden_states=context).sample
    # The same weights loaded two ways (mmap'd safetensors vs. allocated tensors) can take other kernels: float32
    # rounding differs by a few ulps per accumulation, ~1e-6 of the output's magnitude; a wrong weight differs by
    # far more than 1e-4 of it.
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    request = GenerationRequest(
        prompt="x", image=Image.new("RGB", (64, 64), (90, 40, 20)), steps=2, output_type="np", width=64, height=64
    )
    images_a = generate(from_folder, request, progress=False).images
    images_b = generate(from_file, request, progress=False).images
    assert np.abs(images_a - images_b).max() <= 1e-5


def test_depth_range_flag_conditions_on_that_range(files, tiny_checkpoint, tmp_path):
    """In-process: --depth-range LO HI gives the engine's picture for depth_range=(LO, HI)."""
    from depth2img.pipeline.generate import generate
    from depth2img.pipeline.load import load_pipeline
    from depth2img.pipeline.request import GenerationRequest
    from depth2img.source.decoding import load_depth
    from depth2img.standalone.cli import main

    common = ["generate", "--image", files / "in.png", "--depth", files / "depth.png", "--prompt", "x",
              "--steps", "2", "--width", "64", "--height", "64", "--checkpoint", tiny_checkpoint]
    assert main([str(a) for a in [*common, "--out", tmp_path / "r.png", "--depth-range", "-1", "3"]]) == 0
    assert main([str(a) for a in [*common, "--out", tmp_path / "n.png"]]) == 0
    pipe = load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)
    expected = generate(pipe, GenerationRequest(
        prompt="x", image=Image.open(files / "in.png"), depth=load_depth(files / "depth.png"), steps=2, width=64,
        height=64, depth_range=(-1.0, 3.0)), progress=False).images[0]
    ranged, plain = (np.asarray(Image.open(tmp_path / name)).astype(int) for name in ("r.png", "n.png"))
    # Same process, same code path: equal up to one 8-bit level (rounding of the same floats); the default
    # min-max conditioning is another picture.
    assert np.abs(ranged - np.asarray(expected).astype(int)).max() <= 1
    assert np.abs(ranged - plain).max() > 10


def test_generate_with_a_depth_band_keeps_the_rest(files, tiny_checkpoint, tmp_path):
    result = run_cli(
        "generate", "--image", files / "in.png", "--depth", files / "depth.png", "--prompt", "x", "--steps", "2",
        "--strength", "1", "--width", "64", "--height", "64", "--checkpoint", tiny_checkpoint,
        "--mask-depth", "50:100", "--mask-feather", "2", "--out", tmp_path / "o.png", "--save-mask", tmp_path / "m.png",
    )
    assert result.returncode == 0, result.stderr
    assert "inpaint: wrote" in result.stdout and "depth band 50-100 (percent of range" in result.stdout
    out, original = (np.asarray(Image.open(p)).astype(int) for p in (tmp_path / "o.png", files / "in.png"))
    # depth.png is a left-to-right ramp 0..1 over 64 columns: the band 50-100 % is columns 32..63 (31/63 < 0.5);
    # the feather reaches 2 px, so columns 0..29 are the input's pixels exactly.
    assert np.array_equal(out[:, :30], original[:, :30])
    assert np.abs(out[:, 34:] - original[:, 34:]).mean() > 1.0
    mask = np.asarray(Image.open(tmp_path / "m.png"))
    assert (mask[:, :30] == 0).all() and (mask[:, 34:] == 255).all() and 0 < mask[0, 31] < 255


def test_mask_command_writes_the_mask_alone(files, tmp_path):
    """In-process, from a given depth map (no model): band, invert, and auto from painted strokes."""
    from depth2img.standalone.cli import main

    base = ["mask", "--image", str(files / "in.png"), "--depth", str(files / "depth.png")]
    assert main([*base, "--mask-depth", "25:75", "--out", str(tmp_path / "band.png")]) == 0
    band = np.asarray(Image.open(tmp_path / "band.png"))
    # The ramp's columns c have depth c / 63: 25..75 percent of the range is columns 16..47.
    expected = np.zeros((64, 64), np.uint8)
    expected[:, 16:48] = 255
    assert np.array_equal(band, expected)
    assert main([*base, "--mask-depth", "25:75", "--mask-invert", "--out", str(tmp_path / "inv.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "inv.png")), 255 - expected)
    # mask.png paints the square rows/columns 20..43: the band comes from the depth under it (columns 20..43).
    assert main([*base, "--mask-auto", "--mask", str(files / "mask.png"), "--out", str(tmp_path / "auto.png")]) == 0
    auto = np.asarray(Image.open(tmp_path / "auto.png")) > 0
    columns = np.flatnonzero(auto.all(axis=0))
    assert auto.any(axis=0).sum() == len(columns)  # whole columns: a band of the ramp
    assert columns[0] <= 20 and columns[-1] >= 43 and columns[0] >= 8 and columns[-1] <= 55
    assert (tmp_path / "auto.png").stat().st_mode & 0o777 == 0o644


def test_sequence_command_goes_on_past_a_bad_frame_and_exits_1(tiny_checkpoint, tmp_path, capsys):
    """In-process: two good frames render (tqdm shows progress), the unreadable one is named, exit code 1."""
    from depth2img.standalone.cli import main

    frames, depths = tmp_path / "frames", tmp_path / "depths"
    frames.mkdir()
    depths.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a01", "a02"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(frames / f"{name}.png")
        np.save(depths / f"{name}.npy", rng.random((64, 64)).astype(np.float32))
    (frames / "a03.png").write_text("broken")
    code = main([str(a) for a in [
        "sequence", "--frames", frames, "--out", tmp_path / "out", "--depth-dir", depths, "--prompt", "x",
        "--steps", "1", "--strength", "1", "--width", "64", "--height", "64", "--checkpoint", tiny_checkpoint,
    ]])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "rendered 2, skipped 0 (done before), failed 1" in captured.out
    assert "failed: a03.png: frame a03.png is not a readable image" in captured.err
    assert "render: 100%" in captured.err  # tqdm, with its rate and ETA
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a01.png", "a02.png"]


def test_mask_command_fits_the_depth_map_like_generate(files, tmp_path):
    """A 2:1 depth map for a square image, crop-and-resize: the band is taken on the centre crop's range."""
    from depth2img.standalone.cli import main

    columns = np.arange(128, dtype=np.float32)
    np.save(tmp_path / "wide.npy", np.tile((columns / 127) ** 2, (64, 1)))  # not linear: a crop changes the band
    args = ["mask", "--image", files / "in.png", "--depth", tmp_path / "wide.npy", "--resize-mode", "crop-and-resize",
            "--mask-depth", "0:50", "--out", tmp_path / "m.png"]
    code = main([str(a) for a in args])
    assert code == 0
    # By hand: the crop keeps columns 32..95, depth (32/127)² .. (95/127)²; 50 % of that range is 0.3115, reached
    # at column 70.9, so crop columns 0..38 are in the band.
    expected = np.zeros((64, 64), np.uint8)
    expected[:, :39] = 255
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), expected)


def test_mask_command_lines_up_an_estimated_map_with_its_picture(tiny_checkpoint, tmp_path):
    # 150x64: MiDaS rounds its map's sides to multiples of 32 (another aspect). The estimated band mask must be
    # the one the same map gives when uploaded at the picture's size (issue 15.2), under each resize mode.
    from depth2img.pipeline.load import load_pipeline
    from depth2img.standalone.cli import main

    image = Image.fromarray(np.random.default_rng(6).integers(0, 255, (64, 150, 3), dtype=np.uint8))
    image.save(tmp_path / "photo.png")
    estimated = load_pipeline(tiny_checkpoint, device="cpu").estimate_depth(image)[0].numpy()
    assert estimated.shape[1] * 64 != estimated.shape[0] * 150
    np.save(tmp_path / "uploaded.npy", fitting.resize(estimated, 150, 64))
    for mode in ("crop-and-resize", "resize-and-fill"):
        masks = []
        for depth in ([], ["--depth", tmp_path / "uploaded.npy"]):
            out = tmp_path / f"mask-{mode}-{len(depth)}.png"
            args = ["mask", "--image", tmp_path / "photo.png", "--checkpoint", tiny_checkpoint, *depth,
                    "--resize-mode", mode, "--mask-depth", "30:70", "--out", out]
            assert main([str(a) for a in args]) == 0
            masks.append(np.asarray(Image.open(out)))
        assert 0 < (masks[1] == 255).mean() < 1 and np.array_equal(masks[0], masks[1]), mode
