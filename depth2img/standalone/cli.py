"""`python -m depth2img`: generate, depth, mask, sequence, info, convert, app.

Bad input (missing file, not an image, mask size mismatch, non-depth checkpoint, NaN depth) ends with one
line on stderr and exit code 2, never a traceback. A sequence whose frames partly fail goes on with the others,
names them at the end and exits with code 1.

Every depth2img import below is inside the command that needs it, on purpose: the CLI checks its inputs (and
refuses a bad one) before torch, diffusers or transformers load, so bad input costs a fraction of a second and
tens of MB (README: hostile inputs), and `depth` or `mask` never load diffusers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FRAMES_FAILED = 1  # a sequence ran, but some frames could not be rendered (listed on stderr)


class UserError(Exception):
    """An input problem to report in one line."""


# Formats a generated picture is written in (Pillow writes each; chosen by the suffix of --out).
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _max_pixels(args) -> int:
    from PIL import Image

    limit = int(args.max_megapixels * 1_000_000)
    # Pillow refuses images over twice its own limit before we can see their size: follow ours instead.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, limit)
    return limit


def _open_image(path: str, what: str, max_pixels: int, background: str | None = None):
    from depth2img.source import decoding

    return decoding.open_image(path, what, max_pixels, background=background)


def _save_image(image, path: Path) -> None:
    from depth2img.base.files import write_atomic

    write_atomic(path, lambda temporary: image.save(temporary))


def _parse_band(text: str | None) -> tuple[float, float]:
    """--mask-depth LOW:HIGH -> (low, high); the schema checks the numbers."""
    if text is None:
        return 0.0, 100.0
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise UserError(
            f"--mask-depth must be LOW:HIGH in percent (0 = farthest, 100 = nearest), e.g. 60:100; got {text!r}"
        ) from None
    return low, high


def _settings(args):
    """The schema's settings from the shared flags: bad values are refused naming the setting, as in the
    WebUI's panel and API."""
    from depth2img.schema.args import Depth2ImgArgs

    mask_low, mask_high = _parse_band(args.mask_depth)
    painted = getattr(args, "mask", None)
    if args.mask_combine is not None and args.mask_combine != "replace" and not painted:
        raise UserError(f"--mask-combine {args.mask_combine} needs a painted mask (--mask M) to combine with")
    if args.mask_combine is not None and not (args.mask_depth or args.mask_auto):
        raise UserError("--mask-combine applies to a mask from a depth band: add --mask-depth LOW:HIGH or --mask-auto")
    return Depth2ImgArgs(
        invert=args.invert,
        clip_near=args.clip_near,
        clip_far=args.clip_far,
        gamma=args.gamma,
        blur=args.blur,
        depth_kind=getattr(args, "depth_kind", "auto"),
        distance_range=tuple(args.distance_range) if getattr(args, "distance_range", None) else None,
        exr_channel=getattr(args, "exr_channel", ""),
        depth_range=args.depth_range,
        mask_from_depth=bool(args.mask_depth or args.mask_auto),
        mask_low=mask_low,
        mask_high=mask_high,
        mask_band_mode=args.mask_band_mode,
        mask_feather=args.mask_feather,
        mask_grow=args.mask_grow,
        mask_invert=args.mask_invert,
        mask_combine=args.mask_combine or "replace",
        mask_auto=args.mask_auto,
    )


def _mask_coverage(mask) -> str:
    import numpy as np

    return f"{(np.asarray(mask) > 127).mean() * 100:.1f}% of the pixels"


def _load_depth(path: str, settings, max_pixels: int):
    """The user's depth map as inverse depth; how it was read (EXR channel, approximate conversion) on stderr."""
    from depth2img.source import decoding

    decoded = decoding.decode_depth(path, max_pixels=max_pixels, **settings.decode_kwargs())
    if decoded.exr_channel:
        print(f"depth map: EXR channel {decoded.exr_channel!r}, read as {decoded.kind}", file=sys.stderr)
    if decoded.notice:
        print(f"note: {decoded.notice}", file=sys.stderr)
    return decoded.depth


def _folder_estimator(name: str):
    """The estimator --estimator names, unless it is the checkpoint's MiDaS (None: the pipeline estimates)."""
    from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
    from depth2img.estimate.registry import create_estimator

    if name == CheckpointMidasEstimator.name:
        return None
    try:
        return create_estimator(name)
    except ValueError as error:
        raise UserError(f"--estimator: {error}") from error


def _estimate(estimator, image):
    """Depth (larger = nearer) of a PIL image with a folder estimator, at the image's size."""
    from depth2img.estimate.midas import images_to_tensor
    from depth2img.process import fitting

    depth = estimator.estimate(images_to_tensor(image.convert("RGB")))[0].numpy()
    return fitting.resize(depth, image.width, image.height)


def _request_from_args(args, settings, **inputs):
    """The GenerationRequest that the render flags describe (generate's and sequence's); inputs: image, depth,
    mask."""
    from depth2img.pipeline.request import GenerationRequest
    from depth2img.process import fitting

    return GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        strength=args.strength,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        width=args.width,
        height=args.height,
        resize_mode=fitting.ResizeMode[args.resize_mode.upper().replace("-", "_")],
        postprocess=settings.postprocess_kwargs(),
        depth_range=settings.depth_range,
        depth_mask=settings.mask_settings(),
        background=args.background,
        **inputs,
    )


def cmd_generate(args) -> int:
    from depth2img.base.files import check_output
    from depth2img.process import fitting
    from depth2img.source import encoding

    max_pixels = _max_pixels(args)
    inputs = [args.image, args.depth, args.mask, args.checkpoint]
    # Outputs are checked before any work: a bad name must not cost a generation.
    out = check_output(args.out, "--out", inputs, IMAGE_OUTPUT_SUFFIXES)
    save_depth = save_mask = None
    if args.save_depth:
        save_depth = check_output(args.save_depth, "--save-depth", inputs + [out], encoding.DEPTH_OUTPUT_SUFFIXES)
    settings = _settings(args)
    if not args.depth and (args.depth_kind != "auto" or args.distance_range or args.exr_channel):
        raise UserError("--depth-kind, --distance-range and --exr-channel describe a --depth map; give one")
    if args.depth and args.estimator != "checkpoint-midas":
        raise UserError("--estimator estimates depth from --image: leave it out when giving a --depth map")
    if args.save_mask:
        if not (args.mask or settings.mask_from_depth):
            raise UserError("--save-mask needs a mask: give --mask M, --mask-depth LOW:HIGH or --mask-auto")
        save_mask = check_output(args.save_mask, "--save-mask", inputs + [out, save_depth], IMAGE_OUTPUT_SUFFIXES)
    if args.mask and settings.mask_from_depth and settings.mask_combine == "replace" and not settings.mask_auto:
        print("note: --mask-combine replace (the default): the mask from the depth band replaces --mask; "
              "give --mask-combine intersect or union to combine them", file=sys.stderr)
    image = _open_image(args.image, "init image", max_pixels) if args.image else None
    mask = _open_image(args.mask, "mask", max_pixels) if args.mask else None
    depth = _load_depth(args.depth, settings, max_pixels) if args.depth else None  # before the model loads
    # torch and diffusers only now: a refused input costs no second and no memory (issue: decompression bombs)
    from depth2img.pipeline.generate import generate
    from depth2img.pipeline.load import load_pipeline
    from depth2img.pipeline.request import check_request

    estimator = _folder_estimator(args.estimator)
    if estimator is not None and depth is None and image is not None:
        depth = _estimate(estimator, image)  # the engine takes it as the depth map, as it takes its own estimate
    request = _request_from_args(args, settings, image=image, depth=depth, mask=mask)
    check_request(request)
    pipe = load_pipeline(args.checkpoint, announce=lambda msg: print(msg, file=sys.stderr))
    result = generate(pipe, request)
    if result.size_note:
        print(result.size_note)
    if result.mask_note:
        print(f"{result.mask_note}: {_mask_coverage(result.mask)}")
    _save_image(result.images[0], out)
    print(f"{result.mode}: wrote {out}")
    if save_mask is not None:
        _save_image(result.mask, save_mask)
        print(f"mask (white = repainted): {save_mask}")
    if save_depth is not None:
        width, height = result.images[0].size
        encoding.save_depth(fitting.resize(result.depth, width, height), save_depth)
        print(f"depth map ({width}x{height}, white = near): {save_depth}")
    return 0


def cmd_depth(args) -> int:
    from depth2img.base.files import check_output
    from depth2img.process import fitting, postprocessing
    from depth2img.source import encoding

    max_pixels = _max_pixels(args)
    out = check_output(args.out, "--out", [args.image, args.checkpoint], encoding.DEPTH_OUTPUT_SUFFIXES)
    image = _open_image(args.image, "image", max_pixels, background=args.background)
    from depth2img.pipeline.load import load_pipeline  # after the input passed the gate, as in generate
    estimator = _folder_estimator(args.estimator)
    if estimator is not None:  # no Stable Diffusion checkpoint needed
        depth = _estimate(estimator, image)
    else:
        pipe = load_pipeline(args.checkpoint, announce=lambda msg: print(msg, file=sys.stderr))
        depth = pipe.estimate_depth(image)[0].numpy()
    depth = fitting.resize(postprocessing.postprocess(depth, invert_depth=args.invert), image.width, image.height)
    encoding.save_depth(depth, out)
    print(f"wrote {out} (white = near, {depth.shape[1]}x{depth.shape[0]})")
    return 0


def cmd_mask(args) -> int:
    """The mask from a depth band alone, at the image's size (what generate would use)."""
    import numpy as np

    from depth2img.base.files import check_output
    from depth2img.process import fitting, postprocessing

    max_pixels = _max_pixels(args)
    inputs = [args.image, args.depth, args.mask, args.checkpoint]
    out = check_output(args.out, "--out", inputs, IMAGE_OUTPUT_SUFFIXES)
    settings = _settings(args)
    if not settings.mask_from_depth:
        raise UserError("give the band: --mask-depth LOW:HIGH (percent, 0 = farthest, 100 = nearest) or --mask-auto")
    image = _open_image(args.image, "image", max_pixels, background=args.background)
    painted = _open_image(args.mask, "mask", max_pixels).convert("L") if args.mask else None
    if painted is not None and painted.size != image.size:
        raise UserError(
            f"mask size {painted.width}x{painted.height} differs from the image's {image.width}x{image.height}; "
            "give a mask of the same size"
        )
    depth = _load_depth(args.depth, settings, max_pixels) if args.depth else None
    from depth2img.pipeline.generate import depth_band_mask  # after the inputs passed the gate, as in generate
    from depth2img.pipeline.load import load_pipeline

    estimator = None if args.depth else _folder_estimator(args.estimator)
    if depth is not None:
        pass
    elif estimator is not None:
        depth = _estimate(estimator, image)
    else:
        pipe = load_pipeline(args.checkpoint, announce=lambda msg: print(msg, file=sys.stderr))
        depth = pipe.estimate_depth(image)[0].numpy()
    depth = postprocessing.postprocess(depth, **settings.postprocess_kwargs())
    mode = fitting.ResizeMode[args.resize_mode.upper().replace("-", "_")]
    # An estimated map is fitted by its picture's aspect (the estimator rounds its sides); an uploaded one by its own.
    depth = fitting.fit_aspect(depth, image.width, image.height, mode, source_size=None if args.depth else image.size)
    mask, note = depth_band_mask(
        depth, settings.mask_settings(), painted, image.width, image.height, settings.depth_range
    )
    _save_image(mask, out)
    print(f"{note}: {_mask_coverage(np.asarray(mask))}")
    print(f"wrote {out} ({mask.width}x{mask.height}, white = repaint)")
    return 0


def _parse_scale(values: list[str]) -> tuple[str, int]:
    kind = values[0]
    if kind == "window":
        if len(values) != 2 or not values[1].isdigit():
            raise UserError(f"--scale window needs a number of frames, e.g. --scale window 9; got {' '.join(values)}")
        return kind, int(values[1])
    if len(values) != 1 or kind not in ("global", "per-frame"):
        raise UserError(f"--scale must be global, per-frame or window N; got {' '.join(values)}")
    return kind, 0


def _parse_urls(text: str) -> list[str]:
    urls = [url.strip() for url in text.split(",") if url.strip()]
    bad = [url for url in urls if not url.startswith(("http://", "https://"))]
    if not urls or bad:
        raise UserError(f"--workers takes WebUI addresses separated by commas, e.g. http://gpu1:7860,http://gpu2:7860; "
                        f"got {text!r}")
    return urls


def _sequence_render_pass(args, checkpoint: str | None, max_pixels: int):
    """(where pass 2 runs: None = here, what sequence.json records of the engine). Ray is checked and joined
    before any work; its actors start only when there are frames to render."""
    from tqdm import tqdm

    from depth2img.sequences.distribute import share_frames

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)  # between tqdm's redraws, not through them

    if args.ray and args.workers:
        raise UserError("--ray and --workers are two places to render: choose one")
    if args.workers_checkpoint and not args.workers:
        raise UserError("--worker-checkpoint names a checkpoint of the WebUIs given by --workers; give --workers")
    if args.ray_actors is not None and (not args.ray or args.ray_actors < 1):
        raise UserError("--ray-actors needs --ray and a number of at least 1")
    if args.workers:
        from depth2img.sequences.webui_workers import SAMPLER_NAMES, RequestsMissing, WorkerSettings, webui_workers

        settings = WorkerSettings(sampler=SAMPLER_NAMES[args.sampler], checkpoint=args.workers_checkpoint or "")
        try:
            workers = webui_workers(_parse_urls(args.workers), settings, max_pixels)
        except RequestsMissing as error:
            raise UserError(str(error)) from error
        engine = {"engine": "webui", "checkpoint": args.workers_checkpoint or None}
        return (lambda template, jobs: share_frames(workers, template, jobs, say)), engine
    if args.ray:
        from depth2img.sequences.ray_render import RayUnavailable, connect, ray_workers

        try:
            connect(args.ray)
        except RayUnavailable as error:
            raise UserError(str(error)) from error

        def on_ray(template, jobs):
            if not jobs:
                return iter(())
            workers = ray_workers(checkpoint, args.sampler, args.ray_actors, max_pixels, say)
            return share_frames(workers, template, jobs, say)

        return on_ray, {"engine": "diffusers"}  # the same engine as here: its outputs may be resumed here
    return None, {"engine": "diffusers"}


def cmd_sequence(args) -> int:
    from tqdm import tqdm

    from depth2img.pipeline.load import load_pipeline
    from depth2img.sequences.passes import ScaleSettings, run_sequence

    max_pixels = _max_pixels(args)
    if args.depth_range is not None:
        raise UserError("sequence computes the depth ranges itself (--scale); --depth-range is for single images")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    kind, window = _parse_scale(args.scale)
    scale = ScaleSettings(kind, window, *args.range_percentiles)
    settings = _settings(args)
    if kind != "per-frame" and (settings.invert or settings.gamma != 1.0 or settings.clip_near < 100.0
                                or settings.clip_far > 0.0):
        print("note: --invert, --gamma and --clip-* work on each frame's own range, before the shared range is "
              "taken: frames can still shift against each other", file=sys.stderr)
    template = _request_from_args(args, settings)  # each frame's image, depth and range come in pass 2
    checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else None
    render_pass, engine = _sequence_render_pass(args, checkpoint, max_pixels)
    report = run_sequence(
        args.frames,
        args.out,
        template,
        lambda: load_pipeline(args.checkpoint, scheduler=args.sampler,
                              announce=lambda msg: print(msg, file=sys.stderr)),
        depth_dir=args.depth_dir,
        scale=scale,
        batch_size=args.batch_size,
        refuse_other_sizes=args.size_mismatch == "refuse",
        settings_extra={"checkpoint": checkpoint, "sampler": args.sampler, **engine},
        max_pixels=max_pixels,
        progress=tqdm,
        render_pass=render_pass,
    )
    print(f"rendered {len(report.rendered)}, skipped {len(report.skipped)} (done before), "
          f"failed {len(report.failed)}: {args.out}")
    if report.failed:
        for name, reason in report.failed.items():
            print(f"failed: {name}: {reason}", file=sys.stderr)
        return EXIT_FRAMES_FAILED
    return 0


def cmd_info(args) -> int:
    from depth2img.checkpoint.load import describe

    print(describe(args.checkpoint))
    return 0


def cmd_convert(args) -> int:
    from depth2img.export.ldm_export import export_diffusers_folder

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors, got {out}")
    if not Path(args.folder).is_dir():
        raise UserError(f"diffusers model folder not found: {args.folder}")
    written = export_diffusers_folder(args.folder, out, open_clip_arch=args.open_clip_arch)
    print(f"wrote {written} and {written.with_suffix('.yaml')} (load both in the WebUI)")
    return 0


def cmd_app(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise UserError(f"the app needs gradio ({error}): pip install gradio") from error
    from depth2img.standalone.app import launch

    launch(
        checkpoint=args.checkpoint,
        host=args.host,
        port=args.port,
        share=args.share,
        out=args.out,
        max_pixels=_max_pixels(args),
        background=args.background,
    )
    return 0


def _true_or_false(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return lowered == "true"


def _add_max_megapixels(parser: argparse.ArgumentParser) -> None:
    """The input limits, and the colour transparent inputs are flattened on (every command that reads pictures)."""
    from depth2img.base.limits import DEFAULT_MAX_PIXELS
    from depth2img.source.decoding import DEFAULT_BACKGROUND

    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_PIXELS / 1_000_000,
        help="refuse input images larger than this (default %(default)g)",
    )
    parser.add_argument(
        "--background",
        type=_colour,
        default=DEFAULT_BACKGROUND,
        metavar="COLOUR",
        help="transparent parts of input pictures are flattened on this colour, as the WebUI does "
        "(default %(default)s; a name or #rrggbb)",
    )


def _colour(value: str) -> str:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a colour: {value!r} (give a name such as white, or #rrggbb)") from error
    return value


def _add_render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--strength", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    size_help = "default: the source's aspect at about 512x512 (multiples of 64)"
    parser.add_argument("--width", type=int, help=size_help)
    parser.add_argument("--height", type=int, help=size_help)
    parser.add_argument("--checkpoint", help="depth checkpoint (.safetensors/.ckpt) or diffusers folder")


def _add_depth_options(parser: argparse.ArgumentParser) -> None:
    """Post-processing and the conditioning's range: the depth map as generate, mask and sequence see it."""
    from depth2img.standalone.flags import add_mirrored

    parser.add_argument(
        "--resize-mode", default="just-resize", choices=["just-resize", "crop-and-resize", "resize-and-fill"]
    )
    add_mirrored(parser, "invert", "clip_near", "clip_far", "gamma", "blur", "depth_range")


def _add_mask_options(parser: argparse.ArgumentParser) -> None:
    from depth2img.schema.args import MASK_COMBINE_MODES
    from depth2img.standalone.flags import add_mirrored

    parser.add_argument(
        "--mask-depth",
        metavar="LOW:HIGH",
        help="inpainting mask from a depth band, in percent (0 = farthest, 100 = nearest), e.g. 60:100 = the "
        "nearest 40%% of the depth range",
    )
    add_mirrored(parser, "mask_band_mode", "mask_feather", "mask_grow", "mask_invert")
    # Not a mirror: no flag (None) is how _settings tells "not given" from the schema's default, replace.
    parser.add_argument(
        "--mask-combine",
        choices=MASK_COMBINE_MODES,
        help="with --mask: the depth band replaces it (default), or intersects or joins it",
    )
    add_mirrored(parser, "mask_auto")


def _add_estimator(parser: argparse.ArgumentParser) -> None:
    from depth2img.standalone.flags import add_mirrored

    add_mirrored(parser, "estimator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m depth2img", description="Stable Diffusion 2 depth-to-image")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate_command(sub)
    _add_depth_command(sub)
    _add_mask_command(sub)
    _add_sequence_command(sub)
    _add_info_command(sub)
    _add_convert_command(sub)
    _add_app_command(sub)
    return parser


def _add_generate_command(sub) -> None:
    from depth2img.standalone.flags import add_mirrored

    parser = sub.add_parser("generate", help="img2img / inpaint / txt2img with depth")
    parser.add_argument("--image", help="init image (omit for txt2img from --depth)")
    parser.add_argument(
        "--depth", help="depth map (8/16-bit PNG, TIFF, .npy, EXR; white = near unless --depth-kind); default: estimate"
    )
    add_mirrored(parser, "depth_kind", "distance_range", "exr_channel")
    parser.add_argument("--mask", help="inpainting mask, white = repaint, same size as --image")
    _add_render_options(parser)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--save-depth", help="also write the depth map used, at the image's size (.png 16-bit, .tif/.npy float32)"
    )
    _add_depth_options(parser)
    _add_mask_options(parser)
    parser.add_argument("--save-mask", help="also write the inpainting mask used (white = repainted)")
    _add_estimator(parser)
    _add_max_megapixels(parser)
    parser.set_defaults(func=cmd_generate)


def _add_depth_command(sub) -> None:
    from depth2img.standalone.flags import add_mirrored

    parser = sub.add_parser("depth", help="estimate a depth map (white = near) at the image's size")
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", required=True, help=".png (16-bit, white = near), .tif or .npy (float32)")
    parser.add_argument("--checkpoint")
    add_mirrored(parser, "invert", help=None)  # no help here, as before
    _add_estimator(parser)
    _add_max_megapixels(parser)
    parser.set_defaults(func=cmd_depth)


def _add_mask_command(sub) -> None:
    parser = sub.add_parser("mask", help="write the mask from a depth band alone, at the image's size")
    parser.add_argument("--image", required=True)
    parser.add_argument("--depth", help="depth map (white = near); default: estimated from --image")
    parser.add_argument("--mask", help="painted mask (white strokes) for --mask-auto or --mask-combine")
    parser.add_argument("--checkpoint", help="depth checkpoint whose MiDaS estimates the depth")
    parser.add_argument("--out", required=True, help="the mask, .png (white = repaint)")
    _add_depth_options(parser)
    _add_mask_options(parser)
    _add_estimator(parser)
    _add_max_megapixels(parser)
    parser.set_defaults(func=cmd_mask)


def _add_sequence_command(sub) -> None:
    parser = sub.add_parser("sequence", help="render a folder of frames on one depth scale (resumable)")
    parser.add_argument("--frames", required=True, help="folder of frames (image files, natural order)")
    parser.add_argument(
        "--out", required=True, help="folder for the outputs (the frames' names), depth/, sequence.json"
    )
    _add_render_options(parser)
    parser.add_argument("--depth-dir", help="depth maps matched to the frames by file name; missing ones are estimated")
    parser.add_argument(
        "--scale",
        nargs="+",
        default=["global"],
        metavar="global|window N|per-frame",
        help="one depth range for all frames (default), a centred window of N frames, or each frame's own. "
        "--invert, --clip-*, --gamma and --blur apply to each frame's map first, on that frame's own values "
        "(percentiles, min-max); the shared range is then taken over the processed maps",
    )
    parser.add_argument(
        "--range-percentiles",
        nargs=2,
        type=float,
        default=[0.5, 99.5],
        metavar=("FAR", "NEAR"),
        help="the shared range spans these percentiles of the frames' depth (default 0.5 99.5)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="frames per depth-estimator forward (default 8)")
    parser.add_argument(
        "--size-mismatch",
        choices=["resize", "refuse"],
        default="resize",
        help="frames of another size than the first: fitted by --resize-mode (default) or refused",
    )
    parser.add_argument(
        "--sampler",
        default="pndm",
        choices=["pndm", "ddim", "euler"],
        help="the scheduler (default pndm, the model's own); on --workers the WebUI's PLMS, DDIM or Euler",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS|auto|local",
        help="render on a Ray cluster (pip install ray): its address, auto (the cluster this machine is in) or "
        "local (start one here); one pipeline per actor, one actor per GPU (--ray-actors N to choose). The nodes "
        "need depth2img importable and --checkpoint at the same path",
    )
    parser.add_argument("--ray-actors", type=int, metavar="N", help="actors (pipelines) to start on the Ray cluster")
    parser.add_argument(
        "--workers",
        metavar="URL[,URL...]",
        help="render on running AUTOMATIC1111 WebUIs (started with --api, this extension installed) through their "
        "API: frames are shared among them, a failing one's frames go to the others. Outputs are what each WebUI "
        "gives (its samplers are not this engine's)",
    )
    parser.add_argument(
        "--worker-checkpoint",
        dest="workers_checkpoint",
        metavar="NAME",
        help="the WebUIs' depth checkpoint to load (name or title, kept loaded); default: each one's loaded model",
    )
    _add_depth_options(parser)
    _add_mask_options(parser)
    _add_max_megapixels(parser)
    parser.set_defaults(func=cmd_sequence)


def _add_info_command(sub) -> None:
    parser = sub.add_parser("info", help="what a checkpoint file is")
    parser.add_argument("checkpoint")
    parser.set_defaults(func=cmd_info)


def _add_convert_command(sub) -> None:
    parser = sub.add_parser("convert", help="diffusers depth model folder -> LDM .safetensors for the WebUI")
    parser.add_argument("folder")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--open-clip-arch", default=None, help="OpenCLIP arch name for a text tower that is not ViT-H-14-sized"
    )
    parser.set_defaults(func=cmd_convert)


def _add_app_command(sub) -> None:
    parser = sub.add_parser("app", help="a web page on this engine (needs gradio)")
    parser.add_argument(
        "--checkpoint", help="depth checkpoint or diffusers folder; default: models/Stable-diffusion/ or the demo"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument(
        "--share", type=_true_or_false, default=False, metavar="true|false", help="a public gradio.live link"
    )
    parser.add_argument("--out", default="outputs/app", help="folder for the pictures, depth maps and gradio's cache")
    _add_max_megapixels(parser)
    parser.set_defaults(func=cmd_app)


def main(argv: list[str] | None = None) -> int:
    # Offline by construction: nothing below may reach a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    # Errors from the light modules only: importing checkpoints here would load torch before the inputs are
    # checked (its CheckpointError is a ValueError, caught below).
    from depth2img.base.limits import DepthMapError, ImageTooLargeError

    try:
        return args.func(args)
    except ImageTooLargeError as error:
        print(f"error: {error} (--max-megapixels raises it)", file=sys.stderr)
        return EXIT_USAGE
    except (UserError, DepthMapError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:  # checkpoints, request validation in the engine (NaN depth, sizes, steps, ...)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
