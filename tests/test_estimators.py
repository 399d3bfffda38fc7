"""Folder estimators (transformers depth models saved locally), the shared runtime policy, the registry.

Every architecture the installed transformers has is built tiny at test time (tests/estimator_fixtures.py) and
compared with transformers' own pipeline("depth-estimation") on the same folder and image. Runs in both
environments: transformers 4.30.2 has DPT and GLPN, 5.x also Depth Anything (relative and metric), ZoeDepth and
Prompt Depth Anything (DepthPro needs torchvision, absent here: tested as unavailable with that reason).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from depth2img.estimate import folders as folder_estimators
from depth2img.estimate import midas, registry  # noqa: E402
from depth2img.estimate.cache import DepthCache  # noqa: E402
from depth2img.estimate.folders import TransformersFolderEstimator, inspect_folder  # noqa: E402
from depth2img.estimate.interface import PrecisionCaps  # noqa: E402
from depth2img.source import depth_kinds
from tests.estimator_fixtures import FIXTURES, available_fixtures, build_folder, randomize  # noqa: E402

HAS_TORCHVISION = transformers.utils.is_torchvision_available()


def photo(height: int = 72, width: int = 100) -> Image.Image:
    """A structured 8-bit RGB image (gradients, a pattern, a box)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 2.5, yy * 3.0, np.sin(xx / 7) * np.cos(yy / 5) * 127 + 128], -1)
    rgb[height // 4 : height // 2, width // 6 : width // 2] = (250, 30, 90)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("depth-models")
    for name in available_fixtures():
        build_folder(name, folder)
    return folder


@pytest.fixture(autouse=True)
def _only_the_test_folders(monkeypatch):
    monkeypatch.setattr(folder_estimators, "ESTIMATOR_DIRS", [])
    monkeypatch.setattr(registry, "_LOADED", {})


def pipeline_depth(folder, image: Image.Image) -> torch.Tensor:
    """transformers' own pipeline on the folder, at the image's size (float32 [H, W])."""
    pipe = transformers.pipeline("depth-estimation", model=str(folder), image_processor=str(folder))
    predicted = pipe(image)["predicted_depth"].float()
    predicted = predicted.reshape(-1, *predicted.shape[-2:])[0]
    if predicted.shape != (image.height, image.width):
        # transformers 4.30's pipeline returns the network's map and resizes only its picture, this way (its
        # postprocess); our estimator returns the same resize.
        predicted = F.interpolate(
            predicted[None, None], size=(image.height, image.width), mode="bicubic", align_corners=False
        )[0, 0]
    return predicted


def as_inverse(depth: torch.Tensor, metric: bool) -> torch.Tensor:
    """What the estimator must return for a map of this kind: metric -> 1 / max(d, max(d) / 1000)."""
    if not metric:
        return depth
    return 1.0 / torch.maximum(depth, depth.max() / depth_kinds.MAX_DISTANCE_RATIO)


def zoedepth_reference(folder, image: Image.Image) -> torch.Tensor:
    """ZoeDepth without transformers' post-processing (which needs torchvision in 5.x): the model on its own
    processor's input, then the documented rule: resize to the padded size, crop int(sqrt(side / 2) * 3)."""
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    model = transformers.AutoModelForDepthEstimation.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        predicted = model(**processor(images=image, return_tensors="pt")).predicted_depth
    pad_h, pad_w = int((image.height / 2) ** 0.5 * 3), int((image.width / 2) ** 0.5 * 3)
    size = (image.height + 2 * pad_h, image.width + 2 * pad_w)
    resized = F.interpolate(predicted[:, None], size=size, mode="bicubic", align_corners=False)[0, 0]
    return resized[pad_h:-pad_h, pad_w:-pad_w]


# ---- parity with transformers' pipeline -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(FIXTURES))
def test_folder_estimator_equals_transformers_pipeline(root, name):
    if name not in available_fixtures():
        pytest.skip(f"transformers {transformers.__version__} has no {FIXTURES[name][0]}")
    folder = root / name
    info = inspect_folder(folder)
    assert info.available, info.reason
    image = photo()
    est = registry.create_estimator(str(folder))
    ours = est.estimate(midas.images_to_tensor(image))  # [-1, 1] tensors, as the WebUI gives them
    assert ours.shape == (1, image.height, image.width) and ours.dtype == torch.float32
    if FIXTURES[name][0] == "zoedepth" and not HAS_TORCHVISION:
        with pytest.raises(NameError):  # transformers' own post-processing cannot run here
            pipeline_depth(folder, image)
        reference = zoedepth_reference(folder, image)
    else:
        reference = pipeline_depth(folder, image)
    expected = as_inverse(reference, info.metric)
    # The same processor input (8-bit pixels), network and resize in float32; only batching and thread
    # scheduling may differ: 1e-5 of the range.
    assert (ours[0] - expected).abs().max() <= 1e-5 * expected.abs().max()
    # The fixture is worth comparing: its depth follows the image.
    assert ours.std() > 0.01 * ours.abs().mean()
    # A PIL image gives the same map (it is the same 8-bit input).
    assert torch.equal(est.estimate(image), ours)


def test_a_batch_equals_its_images_one_by_one(root):
    """The depth cache sends every image it has not seen in one batch."""
    est = registry.create_estimator(str(root / "glpn"))
    first, second = photo(), photo().transpose(Image.FLIP_LEFT_RIGHT)
    batch = est.estimate(torch.cat([midas.images_to_tensor(first), midas.images_to_tensor(second)]))
    for depth, image in zip(batch, (first, second), strict=True):
        alone = est.estimate(image)[0]
        assert (depth - alone).abs().max() <= 1e-5 * alone.abs().max()  # batched kernels may round differently
    assert (batch[0] - batch[1]).abs().max() > 0.01 * batch.abs().max()


def test_pipelines_8_bit_picture_agrees(root):
    """The pipeline's own resized picture ('depth', 8-bit, normalized by its maximum) within one level."""
    folder = root / "dpt"
    image = photo()
    picture = transformers.pipeline("depth-estimation", model=str(folder), image_processor=str(folder))(image)["depth"]
    ours = registry.create_estimator(str(folder)).estimate(image)[0].numpy()
    if transformers.__version__.startswith("4.30"):
        scaled = ours * 255 / ours.max()  # 4.30: output * 255 / max
    else:
        scaled = (ours - ours.min()) / (ours.max() - ours.min()) * 255  # 5.x: min-max
    assert np.abs(scaled - np.asarray(picture, dtype=np.float32)).max() <= 1.0


def test_dpt_hybrid_folder_equals_the_pipeline(tmp_path):
    """DPT-Hybrid (MiDaS 3.0's architecture) saved as a folder, as Intel/dpt-hybrid-midas is."""
    from tests.test_midas import tiny_hybrid_config

    model = midas.randomize_for_fixture(transformers.DPTForDepthEstimation(tiny_hybrid_config()).eval(), seed=2)
    folder = tmp_path / "dpt-hybrid"
    model.save_pretrained(folder, safe_serialization=True)
    transformers.DPTImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)  # its image_size
    image = photo(90, 120)
    ours = registry.create_estimator(str(folder)).estimate(image)[0]
    expected = pipeline_depth(folder, image)
    assert (ours - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_dpt_vit_gets_a_square_input_whatever_its_processor_says(tmp_path):
    """A DPT-ViT folder whose processor keeps the aspect ratio: transformers' DPT reshapes tokens into a square
    grid, so the pipeline fails on a wide image (5.x; 4.30's processor ignores the setting and makes a square).
    The estimator gives the network the processor's square size: the model on that input, resized."""
    model_type, make_config, _ = FIXTURES["dpt"]
    folder = tmp_path / "dpt-keep-aspect"
    model = randomize(transformers.DPTForDepthEstimation(make_config()).eval(), seed=3)
    model.save_pretrained(folder, safe_serialization=True)
    processor = transformers.DPTImageProcessor(
        size={"height": 64, "width": 64}, keep_aspect_ratio=True, ensure_multiple_of=16
    )
    processor.save_pretrained(folder)
    image = photo(64, 128)
    ours = registry.create_estimator(str(folder)).estimate(image)[0]
    try:
        reference = pipeline_depth(folder, image)
    except RuntimeError as error:  # transformers 5.x: the square reshape fails
        assert "shape" in str(error)
        square = transformers.DPTImageProcessor(size={"height": 64, "width": 64})
        net = transformers.DPTForDepthEstimation.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            raw = net(**square(images=image, return_tensors="pt")).predicted_depth
        reference = F.interpolate(raw[:, None], size=(64, 128), mode="bicubic", align_corners=False)[0, 0]
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_metric_output_becomes_one_over_distance_with_the_documented_floor():
    metric = torch.tensor([[[0.0, 0.5, 2.0, 4.0]], [[1.0, 1.0, 1.0, 10.0]]])
    inverse = folder_estimators.metric_to_inverse(metric)
    expected = torch.tensor([[[1 / 0.004, 2.0, 0.5, 0.25]], [[1.0, 1.0, 1.0, 0.1]]])  # floor: 4 / 1000 per image
    torch.testing.assert_close(inverse, expected)


# ---- runtime policy, loading, release, cache ------------------------------------------------------------


def test_half_weights_without_half_kernels_run_a_float32_copy(root, monkeypatch):
    folder = root / "dpt"
    info = inspect_folder(folder)
    half = TransformersFolderEstimator(info, dtype=torch.float16)
    half.load()
    monkeypatch.setattr(half._runtime, "caps", PrecisionCaps(float16=False, bfloat16=True))
    image = photo()
    depth = half.estimate(image)
    assert depth.dtype == torch.float32
    assert {p.dtype for p in half.model.parameters()} == {torch.float16}  # the loaded model is left as it was
    network, _, dtype = half._runtime.resolve()
    assert dtype == torch.float32 and network is not half.model
    full = TransformersFolderEstimator(info).estimate(image)
    # float16-rounded weights (relative error 2^-11 each) in a float32 network: within 1% of the float32 map
    assert (depth - full).abs().max() <= 0.01 * full.abs().max()


def test_autocast_outside_does_not_change_the_result(root):
    est = registry.create_estimator(str(root / "dpt"))
    image = photo()
    plain = est.estimate(image)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under = est.estimate(image)
    assert torch.equal(plain, under)


def test_weights_load_once_and_release_frees_them(root, monkeypatch):
    loads = []
    real = transformers.AutoModelForDepthEstimation.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForDepthEstimation, "from_pretrained", counting)
    folder = str(root / "glpn")
    est = registry.create_estimator(folder)
    assert registry.create_estimator(folder) is est and loads == []  # nothing loads before the first estimate
    image = photo()
    first = est.estimate(image)
    est.estimate(photo(40, 60))
    assert len(loads) == 1
    registry.release_estimators()
    assert est.model is None and est.processor is None
    assert torch.equal(est.estimate(image), first) and len(loads) == 2


def test_repeated_estimate_is_served_by_the_cache_keyed_on_weights(root, tmp_path):
    cache = DepthCache()
    image = midas.images_to_tensor(photo())
    est = registry.create_estimator(str(root / "dpt"))
    first = cache.estimate(est, image)
    again = cache.estimate(est, image)
    assert cache.estimator_calls == 1 and torch.equal(first, again)
    # Another folder with other weights is another key, even under the same name
    other = build_folder("dpt", tmp_path, seed=7)
    other_est = TransformersFolderEstimator(inspect_folder(other))
    assert other_est.cache_key != est.cache_key and other_est.name == est.name
    cache.estimate(other_est, image)
    assert cache.estimator_calls == 2
    # Rewritten weights are a new key
    before = other_est.cache_key
    weights = next(other.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert TransformersFolderEstimator(inspect_folder(other)).cache_key != before


def test_a_folder_replaced_in_place_is_a_new_estimator(root, tmp_path):
    # Issue 15.6: built once per path, a folder replaced by another model kept the old kind (inverse vs metric),
    # the old weights and the old depth-cache entries.
    import shutil

    folder = tmp_path / "my-depth"
    shutil.copytree(root / "dpt", folder)
    cache = DepthCache()
    image = midas.images_to_tensor(photo())
    before = registry.create_estimator(str(folder))
    cache.estimate(before, image)
    assert before.kind == "inverse" and registry.create_estimator(str(folder)) is before
    shutil.rmtree(folder)
    shutil.copytree(root / "glpn", folder)  # a metric model now, under the same name and path
    after = registry.create_estimator(str(folder))
    assert after is not before and after.kind == "metric" and after.cache_key != before.cache_key
    assert before.model is None  # the replaced model's weights were let go
    depth = cache.estimate(after, image)
    assert cache.estimator_calls == 2  # not the old model's map from the cache
    assert torch.allclose(depth, after.estimate(image), atol=1e-5)


# ---- registry -------------------------------------------------------------------------------------------


def test_registry_lists_folders_with_kind_and_source(root, monkeypatch):
    monkeypatch.setattr(folder_estimators, "ESTIMATOR_DIRS", [root])
    infos = {i.name: i for i in registry.list_estimators()}
    assert infos["checkpoint-midas"].source == "checkpoint" and infos["checkpoint-midas"].kind == "inverse"
    for name in available_fixtures():
        info = infos[name]
        assert info.available and info.source == "folder", info.reason
        metric = name in ("glpn", "zoedepth", "depth-anything-metric", "prompt-depth-anything")
        assert info.kind == ("metric" if metric else "inverse")
    assert registry.get_estimator_info("glpn") == infos["glpn"]
    assert isinstance(registry.create_estimator("glpn"), TransformersFolderEstimator)


def write_config(folder, model_type: str, weights: str | None = "model.safetensors", processor: bool = True, **extra):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, **extra}))
    if weights:
        (folder / weights).write_bytes(b"")
    if processor:
        (folder / "preprocessor_config.json").write_text("{}")
    return folder


@pytest.mark.parametrize("model_type", list(folder_estimators.ARCHITECTURES))
def test_architectures_the_installed_transformers_lacks_name_the_release_that_has_them(tmp_path, model_type):
    arch = folder_estimators.ARCHITECTURES[model_type]
    info = inspect_folder(write_config(tmp_path / "m", model_type))
    if model_type in folder_estimators.installed_architectures():
        if model_type == "depth_pro" and not HAS_TORCHVISION:
            assert not info.available and "needs torchvision" in info.reason
        else:
            assert info.available, info.reason
        return
    assert not info.available
    assert info.reason == f"{arch.label} needs transformers >= {arch.since} (installed: {transformers.__version__})"


@pytest.mark.parametrize(
    "model_type, kwargs, reason",
    [
        ("bert", {}, r"'bert' is not a depth estimation architecture"),
        ("dpt", {"weights": None}, r"no \*\.safetensors weights"),
        ("dpt", {"weights": "pytorch_model.bin"}, r"pytorch_model\.bin \(pickle.*safetensors only"),
        ("dpt", {"processor": False}, r"no preprocessor_config\.json"),
    ],
)
def test_unusable_folders_are_listed_with_the_reason(tmp_path, monkeypatch, model_type, kwargs, reason):
    write_config(tmp_path / "models" / "m", model_type, **kwargs)
    (tmp_path / "models" / "empty").mkdir()
    monkeypatch.setattr(folder_estimators, "ESTIMATOR_DIRS", [tmp_path / "models"])
    infos = {i.name: i for i in registry.list_estimators()}
    assert not infos["m"].available and pytest.importorskip("re").search(reason, infos["m"].reason)
    assert not infos["empty"].available and "no config.json" in infos["empty"].reason
    with pytest.raises(ValueError, match="unavailable"):
        registry.create_estimator("m")


def test_an_architecture_of_unknown_output_is_not_guessed(tmp_path):
    unknown = sorted(folder_estimators.installed_architectures() - set(folder_estimators.ARCHITECTURES))
    if not unknown:
        pytest.skip("the installed transformers has no depth architecture depth2img does not know")
    info = inspect_folder(write_config(tmp_path / "m", unknown[0]))
    assert not info.available and "inverse or metric" in info.reason


def test_metric_depth_anything_label_and_kind(tmp_path):
    info = inspect_folder(write_config(tmp_path / "da", "depth_anything", depth_estimation_type="metric"))
    assert info.metric and "metric" in info.label


def test_unknown_names_and_missing_paths_say_what_exists(tmp_path):
    with pytest.raises(ValueError, match=r"unknown estimator 'zoe'; choices: checkpoint-midas"):
        registry.get_estimator_info("zoe")
    with pytest.raises(ValueError, match="estimator folder not found"):
        registry.create_estimator(str(tmp_path / "nothing"))


# ---- CLI ------------------------------------------------------------------------------------------------


def test_cli_depth_and_generate_with_a_folder_estimator(root, tiny_checkpoint, tmp_path, capsys):
    from depth2img.standalone.cli import main

    photo(48, 80).save(tmp_path / "in.png")
    folder = root / "dpt"
    code = main(
        ["depth", "--image", str(tmp_path / "in.png"), "--estimator", str(folder), "--out", str(tmp_path / "d.npy")]
    )
    assert code == 0, capsys.readouterr().err
    expected = TransformersFolderEstimator(inspect_folder(folder)).estimate(photo(48, 80))[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), expected, rtol=1e-6)

    code = main([
        "generate", "--image", str(tmp_path / "in.png"), "--estimator", str(folder), "--prompt", "x", "--steps", "2",
        "--width", "80", "--height", "48", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "g.png"),
        "--save-depth", str(tmp_path / "g.npy"),
    ])
    assert code == 0, capsys.readouterr().err
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), expected, rtol=1e-6)

    code = main(["depth", "--image", str(tmp_path / "in.png"), "--estimator", "zoe", "--out", str(tmp_path / "z.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--estimator: unknown estimator 'zoe'; choices: checkpoint-midas" in err


# ---- Marigold (diffusers) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def marigold_folder(tmp_path_factory):
    """A tiny MarigoldDepthPipeline (the tiny SD 2 VAE and text tower, an 8-channel UNet), saved as a folder."""
    diffusers = pytest.importorskip("diffusers")
    if not hasattr(diffusers, "MarigoldDepthPipeline"):
        pytest.skip(f"diffusers {diffusers.__version__} has no MarigoldDepthPipeline")
    from depth2img.checkpoint.tokenizer import load_clip_tokenizer
    from depth2img.export import tiny

    models = tiny.build_tiny_models(seed=0, depth_estimator=False)
    unet = diffusers.UNet2DConditionModel(**{**tiny.tiny_unet_config(), "in_channels": 8})  # image + depth latents
    tiny.randomize(unet, torch.Generator().manual_seed(1))
    pipe = diffusers.MarigoldDepthPipeline(
        unet=unet.eval(),
        vae=models["vae"],
        scheduler=diffusers.DDIMScheduler(),
        text_encoder=models["text_encoder"],
        tokenizer=load_clip_tokenizer(),
        prediction_type="depth",
        default_denoising_steps=2,
        default_processing_resolution=64,
    )
    folder = tmp_path_factory.mktemp("marigold") / "marigold"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def test_marigold_folder_equals_its_pipeline_read_as_relative_distance(marigold_folder):
    from diffusers import MarigoldDepthPipeline

    info = inspect_folder(marigold_folder)
    assert info.available and info.kind == "distance", info.reason
    image = photo(48, 64)
    est = registry.create_estimator(str(marigold_folder))
    ours = est.estimate(midas.images_to_tensor(image))
    pipe = MarigoldDepthPipeline.from_pretrained(str(marigold_folder))
    pipe.set_progress_bar_config(disable=True)
    relative = pipe(image, generator=torch.Generator().manual_seed(0), output_type="pt").prediction[0, 0]
    near, far = depth_kinds.DEFAULT_DISTANCE_RANGE
    expected = 1.0 / (near + relative.clamp(0, 1) * (far - near))  # a normalized distance map without its range
    assert ours.shape == (1, 48, 64)
    assert (ours[0] - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert ours.std() > 0.01 * ours.mean()
    assert torch.equal(est.estimate(image), ours)  # the fixed seed: one image, one map (the cache relies on it)


def test_marigold_disparity_is_inverse_and_other_diffusers_folders_are_not_estimators(marigold_folder, tmp_path):
    import shutil

    disparity = tmp_path / "disparity"
    shutil.copytree(marigold_folder, disparity)
    index = json.loads((disparity / "model_index.json").read_text())
    (disparity / "model_index.json").write_text(json.dumps({**index, "prediction_type": "disparity"}))
    assert inspect_folder(disparity).kind == "inverse"
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    info = inspect_folder(other)
    assert not info.available and "StableDiffusionPipeline, not a depth estimator" in info.reason


def test_a_name_the_file_system_refuses_is_an_unknown_estimator_not_an_os_error():
    # Found by the route parsers' fuzz: a 5000-character name made Path.is_dir raise OSError (ENAMETOOLONG) where
    # the CLI's --estimator takes paths; callers expect a ValueError naming the choices.
    from depth2img.estimate import registry

    for name in ("x" * 5000, "a/" + "y" * 5000):
        with pytest.raises(ValueError, match="unknown estimator|not found|accepted only"):
            registry.get_estimator_info(name)
