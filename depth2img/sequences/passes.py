"""Frame sequences on one depth scale: a depth pass over all frames, then independent per-frame jobs.

Per-frame min-max (what every host does) stretches each frame's depth to [-1, 1] on its own, so a static
background's conditioning jumps whenever something nearer enters or leaves: flicker. Here:
- pass 1, depth: every frame's depth map (estimated in batches, one forward per batch of same-size frames, or
  read from a depth folder by file name), post-processed and written to OUT/depth/<stem>.npy; then one range
  for all frames (`global`: near/far percentiles over all frames), a centred moving window (`window N`, for
  shots whose depth drifts), or none (`per-frame`, the hosts' behaviour, for comparison). Maps and ranges go
  into OUT/sequence.json, so a rerun (or another machine) reuses them.
- pass 2, render: each frame is a FrameJob (frame, depth map, range, the same seed for all) run by
  `render_frame` wherever an engine is. Resumable: outputs that exist are skipped; each is written to a
  temporary name and renamed, so an interrupted run loses nothing and leaves no half file.
Bad frames (unreadable, bad depth map) are named and skipped; the run goes on and reports them at the end.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth2img.base import limits
from depth2img.base.errors import SequenceError
from depth2img.base.files import write_atomic, write_text_atomic
from depth2img.process import postprocessing
from depth2img.process.masks import MaskSettings
from depth2img.process.scale import DEFAULT_PERCENTILES, range_of, range_sample
from depth2img.source import decoding, encoding
from depth2img.source.batch_folder import find_depth_for

SEQUENCE_FILE = "sequence.json"
DEPTH_SUBDIR = "depth"
RAW_SUBDIR = "raw"  # under depth/: the unprocessed maps
SEQUENCE_VERSION = 2  # 2: unprocessed maps in depth/raw/, one post-processing scale for all frames
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SCALES = ("global", "window", "per-frame")




# ---- frames ----------------------------------------------------------------------------------


def _natural_key(path: Path) -> list:
    # frame2 before frame10, as a person numbers frames.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_frames(folder: str | Path) -> list[Path]:
    """The image files of a folder in natural order (frame2 before frame10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SequenceError(f"frames folder not found: {folder}")
    frames = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not frames:
        raise SequenceError(f"no frames in {folder}: expected image files ({', '.join(FRAME_SUFFIXES)})")
    return sorted(frames, key=_natural_key)


# ---- shared ranges -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleSettings:
    scale: str = "global"  # "global" | "window" | "per-frame"
    window: int = 0  # frames in the centred moving window (scale "window")
    far_percentile: float = DEFAULT_PERCENTILES[0]
    near_percentile: float = DEFAULT_PERCENTILES[1]

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise SequenceError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.scale == "window" and self.window < 1:
            raise SequenceError(f"scale 'window' needs a window of at least 1 frame, got {self.window}")
        if not 0.0 <= self.far_percentile < self.near_percentile <= 100.0:
            raise SequenceError(
                f"range percentiles need 0 <= far < near <= 100, got far={self.far_percentile}, "
                f"near={self.near_percentile}"
            )






def shared_ranges(samples: Sequence[np.ndarray], settings: ScaleSettings) -> list[tuple[float, float] | None]:
    """One (lo, hi) per frame from the frames' range samples: the same for all (global), over a centred
    window of frames (window), or None (per-frame: each map's own min-max, as the hosts do)."""
    if settings.scale == "per-frame":
        return [None] * len(samples)

    def range_for(chunk: Sequence[np.ndarray]) -> tuple[float, float]:
        return range_of(chunk, settings.far_percentile, settings.near_percentile)

    if settings.scale == "global":
        return [range_for(samples)] * len(samples)
    half = settings.window // 2
    return [range_for(samples[max(0, i - half) : i + half + 1]) for i in range(len(samples))]


# ---- pass 1: depth -----------------------------------------------------------------------------


@dataclass
class DepthPass:
    """What pass 1 found: per frame name its processed depth map file and range; the frames that failed, and why;
    the post-processing scale every frame was processed on (None: each frame its own, scale per-frame)."""

    depth_files: dict[str, Path]
    ranges: dict[str, tuple[float, float] | None]
    failed: dict[str, str]
    estimated: list[str]
    from_depth_dir: list[str]
    reused: list[str]
    estimator_forwards: int = 0
    postprocess_scale: postprocessing.PostprocessScale | None = None


def depth_file_for(out_dir: Path, frame: Path) -> Path:
    return out_dir / DEPTH_SUBDIR / f"{frame.stem}.npy"


def raw_depth_file_for(out_dir: Path, frame: Path) -> Path:
    """Where pass 1 keeps a frame's unprocessed map: the set's scale is taken over these, and a rerun reuses them."""
    return out_dir / DEPTH_SUBDIR / RAW_SUBDIR / f"{frame.stem}.npy"


def run_depth_pass(
    frames: Sequence[Path],
    out_dir: Path,
    estimate: Callable[[list], list[np.ndarray]] | None,
    *,
    depth_dir: str | Path | None = None,
    postprocess: dict | None = None,
    scale: ScaleSettings = ScaleSettings(),
    batch_size: int = 8,
    max_pixels: int = limits.DEFAULT_MAX_PIXELS,
    progress: Callable | None = None,
    background: str = decoding.DEFAULT_BACKGROUND,
) -> DepthPass:
    """Depth maps for all frames: unprocessed ones (reusing OUT/depth/raw/*.npy from an earlier run), then one
    post-processing scale over all of them (unless scale is per-frame), each map post-processed on it and written as
    float32 OUT/depth/*.npy; then the shared ranges over the processed maps.

    estimate(list of PIL images of one size) -> their depth maps: one call per batch (None: only reuse and
    depth_dir maps; frames that would need an estimate fail). progress wraps an iterable (e.g. tqdm).
    """
    postprocess = postprocess_settings(postprocess)
    raw = collect_raw_depth(frames, out_dir, estimate, depth_dir=depth_dir, batch_size=batch_size,
                            max_pixels=max_pixels, progress=progress, background=background)
    names = [f.name for f in frames if f.name in raw.depth_files]
    if not names:
        return raw
    if scale.scale != "per-frame" and not postprocessing.is_identity(**postprocess):
        statistics = [postprocessing.MapStatistics.of(np.load(raw.depth_files[name])) for name in names]
        raw.postprocess_scale = postprocessing.set_scale(
            statistics, postprocess.get("clip_near", 100.0), postprocess.get("clip_far", 0.0)
        )
    by_name = {f.name: f for f in frames}
    samples = []
    for name in names:
        try:
            processed = postprocessing.postprocess(np.load(raw.depth_files[name]), **postprocess,
                                             scale=raw.postprocess_scale)
        except limits.DepthMapError as error:
            raw.failed[name] = str(error)
            continue
        raw.depth_files[name] = encoding.save_depth(processed, depth_file_for(out_dir, by_name[name]))
        samples.append(range_sample(processed))
    for name in raw.failed:
        raw.depth_files.pop(name, None)
    names = [name for name in names if name in raw.depth_files]
    if names:
        raw.ranges = dict(zip(names, shared_ranges(samples, scale), strict=True))
    return raw


def postprocess_settings(postprocess: dict | None) -> dict:
    """The post-processing settings of a template, without a scale: a sequence takes its own over all frames."""
    return {k: v for k, v in (postprocess or {}).items() if k != "scale"}


def collect_raw_depth(
    frames: Sequence[Path], out_dir: Path, estimate, *, depth_dir, batch_size: int, max_pixels: int, progress,
    background: str,
) -> DepthPass:
    """Every frame's unprocessed depth map in OUT/depth/raw/ (depth_files names them): reused from an earlier run,
    read from depth_dir by file name, or estimated in batches of one size."""
    wrap = progress or (lambda iterable, **kwargs: iterable)
    result = DepthPass({}, {}, {}, [], [], [])
    # Frames waiting for the estimator, by size: a batch tensor needs one size, and a batch is estimated as
    # soon as it is full, so only batch_size images per size are ever held in memory.
    waiting: dict[tuple[int, int], list[tuple[Path, object]]] = {}

    def store(frame: Path, depth: np.ndarray) -> None:
        decoding.check_finite(depth, f"the depth map of frame {frame.name}")
        result.depth_files[frame.name] = encoding.save_depth(depth, raw_depth_file_for(out_dir, frame))

    def estimate_batch(size: tuple[int, int]) -> None:
        batch = waiting.pop(size)
        depths = estimate([image for _, image in batch])  # one forward for the batch
        result.estimator_forwards += 1
        for (frame, _), depth in zip(batch, depths, strict=True):
            try:
                store(frame, np.asarray(depth, dtype=np.float32))
                result.estimated.append(frame.name)
            except limits.DepthMapError as error:
                result.failed[frame.name] = str(error)

    for frame in wrap(frames, desc="depth maps", unit="frame"):
        target = raw_depth_file_for(out_dir, frame)
        if target.is_file():
            result.depth_files[frame.name] = target
            result.reused.append(frame.name)
            continue
        given = find_depth_for(depth_dir, frame) if depth_dir else None
        try:
            if given is not None:
                store(frame, decoding.load_depth(given, max_pixels))
                result.from_depth_dir.append(frame.name)
                continue
            image = decoding.open_image(frame, f"frame {frame.name}", max_pixels, background=background)
        except (limits.DepthMapError, OSError) as error:
            result.failed[frame.name] = str(error)
            continue
        if estimate is None:
            result.failed[frame.name] = "no depth map for it and no estimator"
            continue
        waiting.setdefault(image.size, []).append((frame, image))
        if len(waiting[image.size]) >= batch_size:
            estimate_batch(image.size)
    for size in list(waiting):
        estimate_batch(size)
    return result


# ---- sequence.json -----------------------------------------------------------------------------


def read_sequence_file(out_dir: Path) -> dict | None:
    path = out_dir / SEQUENCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SequenceError(f"{path} is not readable JSON ({error}); remove it to start the sequence afresh") from error


def check_same_settings(previous: dict | None, settings: dict, out_dir: Path) -> None:
    """Outputs in OUT are reused only if made with the same settings; otherwise say which differ."""
    if previous is None:
        return
    old = previous.get("settings", {})
    differing = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if differing:
        raise SequenceError(
            f"{out_dir} holds a sequence made with other settings ({', '.join(differing)}); its frames would be "
            "skipped as done: choose another --out, or remove that folder's outputs, depth/ and sequence.json"
        )


def scale_json(scale: postprocessing.PostprocessScale | None) -> dict | None:
    return None if scale is None else scale.as_json()


def write_sequence_file(out_dir: Path, settings: dict, frames: Sequence[Path], depth: DepthPass, size) -> Path:
    entries = []
    for frame in frames:
        entry = {"name": frame.name}
        if frame.name in depth.depth_files:
            depth_range = depth.ranges.get(frame.name)
            entry["depth"] = depth.depth_files[frame.name].relative_to(out_dir).as_posix()
            entry["range"] = list(depth_range) if depth_range is not None else None
        else:
            entry["error"] = depth.failed.get(frame.name, "no depth map")
        entries.append(entry)
    document = {
        "version": SEQUENCE_VERSION,
        "width": size[0],
        "height": size[1],
        "settings": settings,
        # The values every frame's map was post-processed with (clip values, gamma/invert bounds); null: each its own.
        "postprocess_scale": scale_json(depth.postprocess_scale),
        "frames": entries,
    }
    return write_text_atomic(out_dir / SEQUENCE_FILE, json.dumps(document, indent=1) + "\n")


# ---- pass 2: render ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameJob:
    """One frame's render, independent of every other: any engine with the checkpoint can run it."""

    name: str
    frame: Path
    depth: Path
    depth_range: tuple[float, float] | None
    out: Path


def load_frame(job: FrameJob, max_pixels: int = limits.DEFAULT_MAX_PIXELS):
    """(image, post-processed depth map) of one frame, read where the run started (pass 1 wrote the map); any
    transparency is kept for the renderer to flatten (the engine: the template's background; a WebUI: its own)."""
    image = decoding.open_image(job.frame, f"frame {job.name}", max_pixels)
    return image, np.load(job.depth, allow_pickle=False)


def request_for_frame(template, image, depth: np.ndarray, depth_range: tuple[float, float] | None):
    """The GenerationRequest of one frame: the template's settings with this frame's image, depth and range.

    The depth map is already post-processed (pass 1), so no post-processing here.
    """
    return dataclasses.replace(
        template, image=image, depth=depth, depth_range=depth_range, postprocess={}, batch_size=1, output_type="pil"
    )


def frame_request(template, job: FrameJob, max_pixels: int = limits.DEFAULT_MAX_PIXELS):
    return request_for_frame(template, *load_frame(job, max_pixels), job.depth_range)


def save_output(image, job: FrameJob) -> Path:
    """Write a frame's output atomically (a temporary name, then a rename: never half a file)."""
    return write_atomic(job.out, lambda temporary: image.save(temporary))


def render_frame(pipe, template, job: FrameJob, max_pixels: int = limits.DEFAULT_MAX_PIXELS) -> Path:
    """Render one frame here and write it."""
    from depth2img.pipeline.generate import generate  # torch and diffusers: only where a sequence runs

    result = generate(pipe, frame_request(template, job, max_pixels), progress=False)
    return save_output(result.images[0], job)


# A render pass: (template, jobs) -> yields (job, None) once job.out is written, or (job, why it failed), in the
# order frames finish. run_sequence renders here by default; depth2img.sequences.distribute shares frames among workers.
RenderPass = Callable[[object, list[FrameJob]], Iterator[tuple[FrameJob, "str | None"]]]


def frame_jobs(frames: Sequence[Path], out_dir: Path, depth: DepthPass) -> list[FrameJob]:
    """A job per frame with a depth map; outputs keep their frame's file name."""
    return [
        FrameJob(f.name, f, depth.depth_files[f.name], depth.ranges.get(f.name), out_dir / f.name)
        for f in frames
        if f.name in depth.depth_files
    ]


def pending(
    jobs: Sequence[FrameJob], previous: dict | None, postprocess_scale: postprocessing.PostprocessScale | None = None
) -> tuple[list[FrameJob], list[FrameJob], list[FrameJob]]:
    """(to render, done already, stale): an existing output is done if the range and the post-processing scale it
    was rendered with (the previous sequence.json's) are this run's; otherwise it is rendered again (a frame added
    to the folder changes the set's scale, and so every frame's map)."""
    old_ranges = {}
    same_scale = previous is not None and previous.get("postprocess_scale") == scale_json(postprocess_scale)
    for entry in (previous or {}).get("frames", []) if same_scale else []:
        if "depth" in entry:
            old_ranges[entry["name"]] = tuple(entry["range"]) if entry.get("range") is not None else None
    todo, done, stale = [], [], []
    for job in jobs:
        if not job.out.is_file():
            todo.append(job)
        elif job.name in old_ranges and old_ranges[job.name] == job.depth_range:
            done.append(job)
        else:
            stale.append(job)
    return todo + stale, done, stale


# ---- the whole run -----------------------------------------------------------------------------


def scan_frames(frames: Sequence[Path], max_pixels: int) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Each frame's (width, height) from its header, and the frames that cannot be read, with why."""
    from PIL import Image, UnidentifiedImageError

    sizes, failed = {}, {}
    for frame in frames:
        try:
            with Image.open(frame) as image:
                sizes[frame.name] = image.size
            limits.check_pixels(f"frame {frame.name}", *sizes[frame.name], max_pixels)
        except limits.ImageTooLargeError as error:
            sizes.pop(frame.name, None)
            failed[frame.name] = str(error)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            failed[frame.name] = f"frame {frame.name} is not a readable image ({error})"
    return sizes, failed


@dataclass
class SequenceReport:
    rendered: list[str]
    skipped: list[str]  # done in an earlier run
    failed: dict[str, str]  # frame name -> why
    depth: DepthPass | None = None
    size: tuple[int, int] | None = None


def run_sequence(
    frames_dir: str | Path,
    out_dir: str | Path,
    template,
    load_pipe: Callable[[], object],
    *,
    depth_dir: str | Path | None = None,
    scale: ScaleSettings = ScaleSettings(),
    batch_size: int = 8,
    refuse_other_sizes: bool = False,
    settings_extra: dict | None = None,
    max_pixels: int = limits.DEFAULT_MAX_PIXELS,
    say: Callable[[str], None] = print,
    progress: Callable | None = None,
    render_pass: RenderPass | None = None,
) -> SequenceReport:
    """Pass 1 and pass 2 over a folder of frames (see the module docstring).

    template: a GenerationRequest holding the settings every frame shares (prompt, seed, steps, post-processing,
    mask ...; its image and depth are ignored). load_pipe() is called once, only when something must be
    estimated or rendered here. render_pass: where pass 2 runs (default: here, one frame after another).
    Raises SequenceError before any work for what stops the whole run; frames that fail are in the report and
    the run goes on.
    """
    from depth2img.pipeline.size import output_size  # torch: only where a sequence runs

    frames_dir, out_dir = Path(frames_dir), Path(out_dir)
    frames, readable, sizes, failed = _readable_frames(frames_dir, out_dir, max_pixels)
    first = _first_size(readable, sizes, refuse_other_sizes, say)
    width, height, size_note = output_size(template, *first)
    if size_note:
        say(size_note)
    template = dataclasses.replace(template, width=width, height=height)
    settings = sequence_settings(template, scale, depth_dir, settings_extra)
    previous = _start_output(out_dir, template, settings, width, height)

    pipe = _loaded_once(load_pipe)

    def estimate(images):
        return [d.numpy() for d in pipe().estimate_depth(images)]

    depth = run_depth_pass(
        readable, out_dir, estimate, depth_dir=depth_dir, postprocess=template.postprocess, scale=scale,
        batch_size=batch_size, max_pixels=max_pixels, progress=progress, background=template.background,
    )
    failed.update(depth.failed)
    say(_depth_summary(depth, scale, depth_dir, len(readable)))
    write_sequence_file(out_dir, settings, frames, dataclasses.replace(depth, failed=failed), (width, height))

    jobs = frame_jobs(readable, out_dir, depth)
    todo, done, stale = pending(jobs, previous, depth.postprocess_scale)
    if done:
        say(f"{len(done)} frame(s) already rendered in {out_dir}: skipped")
    if stale:
        say(f"{len(stale)} frame(s) rendered with another depth range or post-processing scale before (first "
            f"{stale[0].name}): rendered again")
    results = (render_pass or _render_here(pipe, max_pixels))(template, todo)
    rendered = _collect(results, failed, progress, len(todo))
    return SequenceReport(rendered, [j.name for j in done], failed, depth, (width, height))


def _readable_frames(frames_dir: Path, out_dir: Path, max_pixels: int):
    """(frames, readable frames, their sizes, failed): what stops the run is refused here, before any work."""
    frames = list_frames(frames_dir)
    seen: dict[str, str] = {}
    for frame in frames:
        if frame.stem in seen:
            raise SequenceError(f"frames {seen[frame.stem]} and {frame.name} share the name {frame.stem!r}; depth maps "
                                "are matched to frames by name: rename one")
        seen[frame.stem] = frame.name
    if out_dir.resolve() == frames_dir.resolve():
        raise SequenceError(f"--out {out_dir} is the frames folder: outputs keep the frames' names, so they would "
                            "overwrite them; choose another folder")
    sizes, failed = scan_frames(frames, max_pixels)
    readable = [f for f in frames if f.name in sizes]
    if not readable:
        raise SequenceError(f"none of the {len(frames)} frames in {frames_dir} is readable (first: "
                            f"{next(iter(failed.values()))})")
    return frames, readable, sizes, failed


def _first_size(readable: list[Path], sizes: dict, refuse_other_sizes: bool, say) -> tuple[int, int]:
    """The first frame's size; frames of other sizes are refused or announced (the resize mode fits them)."""
    first = sizes[readable[0].name]
    other_sizes = [f.name for f in readable if sizes[f.name] != first]
    if other_sizes and refuse_other_sizes:
        raise SequenceError(
            f"frame {other_sizes[0]} is {sizes[other_sizes[0]][0]}x{sizes[other_sizes[0]][1]}, the first frame "
            f"{readable[0].name} {first[0]}x{first[1]}: give frames of one size, or let the resize mode fit them"
        )
    if other_sizes:
        say(f"{len(other_sizes)} frame(s) differ in size from {readable[0].name} ({first[0]}x{first[1]}), first "
            f"{other_sizes[0]}: each is fitted to the output size by the resize mode")
    return first


def _start_output(out_dir: Path, template, settings: dict, width: int, height: int) -> dict | None:
    """The previous run's sequence file (checked against these settings), or None after writing a new one."""
    from depth2img.pipeline.request import check_request  # torch: only where a sequence runs

    previous = read_sequence_file(out_dir)
    check_same_settings(previous, settings, out_dir)
    # What every frame would fail on, refused before any work (steps x strength, ...), on a stand-in image.
    check_request(dataclasses.replace(template, image=_blank(width, height), depth=None))
    if previous is None:  # settings first, so maps reused after an interrupted pass 1 are known to match
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / SEQUENCE_FILE, json.dumps({"version": SEQUENCE_VERSION, "settings": settings,
                                                              "frames": []}, indent=1) + "\n")
    return previous


def _loaded_once(load_pipe: Callable[[], object]) -> Callable[[], object]:
    """load_pipe(), called on first use only (nothing to estimate or render here: never)."""
    pipe_holder: list = []

    def pipe():
        if not pipe_holder:
            pipe_holder.append(load_pipe())
        return pipe_holder[0]

    return pipe


def _render_here(pipe: Callable[[], object], max_pixels: int) -> RenderPass:
    """Pass 2 here, one frame after another."""

    def render_here(template, jobs):
        for job in jobs:
            try:
                render_frame(pipe(), template, job, max_pixels)
                yield job, None
            except (limits.DepthMapError, OSError, ValueError) as error:
                yield job, str(error)

    return render_here


def _collect(results, failed: dict, progress: Callable | None, total: int) -> list[str]:
    """The names of the frames rendered; failures go into `failed`."""
    rendered = []
    wrap = progress or (lambda iterable, **kwargs: iterable)
    for job, error in wrap(results, desc="render", unit="frame", total=total):
        if error is None:
            rendered.append(job.name)
        else:
            failed[job.name] = error
    return rendered


def _blank(width: int, height: int):
    from PIL import Image

    return Image.new("RGB", (width, height))


def _depth_summary(depth: DepthPass, scale: ScaleSettings, depth_dir, frame_count: int) -> str:
    parts = []
    if depth.estimated:
        parts.append(f"{len(depth.estimated)} estimated in {depth.estimator_forwards} batch(es)")
    if depth.from_depth_dir:
        parts.append(f"{len(depth.from_depth_dir)} from {depth_dir}")
    if depth.reused:
        parts.append(f"{len(depth.reused)} reused from an earlier run")
    text = f"depth: {frame_count} frame(s): " + (", ".join(parts) or "none")
    if depth_dir and depth.estimated:
        text += f"; {len(depth.estimated)} had no map in {depth_dir} (first {depth.estimated[0]}) and were estimated"
    ranges = [r for r in depth.ranges.values() if r is not None]
    if scale.scale == "global" and ranges:
        text += (f"; one range for all: {ranges[0][0]:.6g}..{ranges[0][1]:.6g} (percentiles "
                 f"{scale.far_percentile:g}/{scale.near_percentile:g})")
    elif scale.scale == "window" and ranges:
        text += f"; ranges over a {scale.window}-frame window"
    elif scale.scale == "per-frame":
        text += "; each frame on its own min-max"
    return text


def sequence_settings(template, scale: ScaleSettings, depth_dir, extra: dict | None) -> dict:
    """Everything that decides a sequence's outputs, as JSON values (compared on a rerun)."""
    mask = template.depth_mask
    return {
        "prompt": template.prompt,
        "negative_prompt": template.negative_prompt,
        "strength": template.strength,
        "steps": template.steps,
        "guidance": template.guidance,
        "seed": template.seed,
        "width": template.width,
        "height": template.height,
        "resize_mode": int(template.resize_mode),
        "postprocess": postprocess_settings(template.postprocess),
        "depth_mask": dataclasses.asdict(mask) if isinstance(mask, MaskSettings) else None,
        "scale": dataclasses.asdict(scale),
        "depth_dir": str(depth_dir) if depth_dir else None,
        **(extra or {}),
    }
