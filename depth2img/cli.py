"""`python -m depth2img`: generate, depth, info, convert.

Bad input (missing file, not an image, mask size mismatch, non-depth checkpoint, NaN depth) ends with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


class UserError(Exception):
    """An input problem to report in one line."""


def _open_image(path: str, what: str):
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        image = Image.open(path)
        image.load()
        return image
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{what} is not a readable image: {path} ({error})") from error


def _check_output(path: str) -> Path:
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    return out


def cmd_generate(args) -> int:
    from . import depthmap
    from .args import Depth2ImgArgs
    from .engine import GenerationRequest, generate, load_pipeline

    image = _open_image(args.image, "init image") if args.image else None
    mask = _open_image(args.mask, "mask") if args.mask else None
    depth = None
    if args.depth:
        depth = depthmap.load_depth(args.depth)  # decode errors surface before the model loads
    if mask is not None and image is not None and mask.size != image.size and not (args.width or args.height):
        raise UserError(
            f"mask size {mask.size[0]}x{mask.size[1]} differs from the image's {image.size[0]}x{image.size[1]}; "
            "give a mask of the same size"
        )
    if image is None and depth is None:
        raise UserError("give --image (img2img/inpaint) or --depth (txt2img from a depth map), or both")
    # The same schema as the WebUI's panel and API: bad values are refused naming the setting.
    settings = Depth2ImgArgs(
        invert=args.invert, clip_near=args.clip_near, clip_far=args.clip_far, gamma=args.gamma, blur=args.blur
    )
    out = _check_output(args.out)
    pipe = load_pipeline(args.checkpoint, announce=lambda msg: print(msg, file=sys.stderr))
    request = GenerationRequest(
        prompt=args.prompt,
        image=image,
        depth=depth,
        mask=mask,
        negative_prompt=args.negative_prompt,
        strength=args.strength,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        width=args.width,
        height=args.height,
        resize_mode=depthmap.ResizeMode[args.resize_mode.upper().replace("-", "_")],
        postprocess=settings.postprocess_kwargs(),
    )
    result = generate(pipe, request)
    result.images[0].save(out)
    print(f"{result.mode}: wrote {out}")
    if args.save_depth:
        width, height = result.images[0].size
        depthmap.save_png16(depthmap.resize(result.depth, width, height), _check_output(args.save_depth))
        print(f"depth map (16-bit PNG, white = near): {args.save_depth}")
    return 0


def cmd_depth(args) -> int:
    from . import depthmap
    from .engine import load_pipeline
    from .estimators import get_estimator_info

    info = get_estimator_info(args.estimator)
    if not info.available:
        raise UserError(f"estimator {args.estimator!r} is unavailable: {info.reason}")
    image = _open_image(args.image, "image").convert("RGB")
    out = _check_output(args.out)
    pipe = load_pipeline(args.checkpoint, announce=lambda msg: print(msg, file=sys.stderr))
    depth = pipe.estimate_depth(image)[0].numpy()
    depth = depthmap.resize(depthmap.postprocess(depth, invert_depth=args.invert), image.width, image.height)
    depthmap.save_png16(depth, out)
    print(f"wrote {out} (16-bit PNG, white = near, {depth.shape[1]}x{depth.shape[0]})")
    return 0


def cmd_info(args) -> int:
    from .engine import describe

    print(describe(args.checkpoint))
    return 0


def cmd_convert(args) -> int:
    from .ldm_export import export_diffusers_folder

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors, got {out}")
    if not Path(args.folder).is_dir():
        raise UserError(f"diffusers model folder not found: {args.folder}")
    written = export_diffusers_folder(args.folder, out, open_clip_arch=args.open_clip_arch)
    print(f"wrote {written} and {written.with_suffix('.yaml')} (load both in the WebUI)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m depth2img", description="Stable Diffusion 2 depth-to-image")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="img2img / inpaint / txt2img with depth")
    gen.add_argument("--image", help="init image (omit for txt2img from --depth)")
    gen.add_argument("--depth", help="depth map (8/16-bit PNG, TIFF, .npy; white = near); default: estimated")
    gen.add_argument("--mask", help="inpainting mask, white = repaint, same size as --image")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--strength", type=float, default=0.8)
    gen.add_argument("--steps", type=int, default=30)
    gen.add_argument("--guidance", type=float, default=7.5)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--checkpoint", help="depth checkpoint (.safetensors/.ckpt) or diffusers folder")
    gen.add_argument("--out", required=True)
    gen.add_argument("--save-depth", help="also write the depth map used (16-bit PNG)")
    gen.add_argument(
        "--resize-mode", default="just-resize", choices=["just-resize", "crop-and-resize", "resize-and-fill"]
    )
    gen.add_argument("--invert", action="store_true", help="swap near and far in the depth map")
    gen.add_argument("--clip-near", type=float, default=100.0, help="clamp depth above this percentile")
    gen.add_argument("--clip-far", type=float, default=0.0, help="clamp depth below this percentile")
    gen.add_argument("--gamma", type=float, default=1.0)
    gen.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma in pixels")
    gen.set_defaults(func=cmd_generate)

    dep = sub.add_parser("depth", help="estimate a depth map (16-bit PNG)")
    dep.add_argument("--image", required=True)
    dep.add_argument("--out", required=True)
    dep.add_argument("--checkpoint")
    dep.add_argument("--estimator", default="checkpoint-midas")
    dep.add_argument("--invert", action="store_true")
    dep.set_defaults(func=cmd_depth)

    inf = sub.add_parser("info", help="what a checkpoint file is")
    inf.add_argument("checkpoint")
    inf.set_defaults(func=cmd_info)

    conv = sub.add_parser("convert", help="diffusers depth model folder -> LDM .safetensors for the WebUI")
    conv.add_argument("folder")
    conv.add_argument("--out", required=True)
    conv.add_argument(
        "--open-clip-arch", default=None, help="OpenCLIP arch name for a text tower that is not ViT-H-14-sized"
    )
    conv.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Offline by construction: nothing below may reach a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    from .checkpoints import CheckpointError
    from .depthmap import DepthMapError

    try:
        return args.func(args)
    except (UserError, CheckpointError, DepthMapError, FileExistsError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:  # request validation in the engine (NaN depth, sizes, ...)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
