"""The MiDaS DPT-Hybrid embedded in every SD 2 depth checkpoint, run with transformers' DPT.

Stability's checkpoints carry MiDaS under `depth_model.model.` in the layout of ldm's
`ldm.modules.midas.midas.dpt_depth.DPTDepthModel(backbone="vitb_rn50_384", non_negative=True)`
(a timm ViT-B/16 on a BiT ResNet-50 stem). The same network exists in transformers as
`DPTForDepthEstimation` with `is_hybrid=True`; this module maps the weights both ways and runs it.

- `ldm_to_hf_state_dict` / `hf_to_ldm_state_dict`: one rename table read in both directions, plus the one
  tensor that is not a rename (timm's fused qkv <-> separate query/key/value).
- `predict_depth`: the forward pass, for any input whose sides are multiples of 32. transformers' own forward
  accepts only its configured square `image_size` (and 4.30's neck assumes a square token grid), while
  MiDaS feeds non-square inputs, so we drive the same submodules ourselves.
- `preprocess`: ldm's `AddMiDaS("dpt_hybrid")` transform (keep aspect ratio, "minimal" resize to a
  multiple of 32 near 384, OpenCV bicubic, mean = std = 0.5), batched, safe for float16 inputs.

The key map follows transformers' `convert_dpt_hybrid_to_pytorch.py` (shipped up to 4.47.1), written out
as explicit module pairs so it can be read in either direction.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from depth2img.checkpoint.load import MIDAS_PREFIX  # re-exported: the key layout lives in checkpoints

# MiDaS dpt_hybrid input rules (ldm.modules.midas.api.load_midas_transform("dpt_hybrid")).
NET_SIZE = 384
SIZE_MULTIPLE = 32
_MEAN = np.array([0.5, 0.5, 0.5])  # float64 like ldm's Python lists, so the arithmetic matches bit for bit
_STD = np.array([0.5, 0.5, 0.5])

_BIT_DEPTHS = (3, 4, 9)  # ResNet-50 stages 1-3 (BiT, weight-standardised convs, group norm)
_NUM_LAYERS = 12
_HIDDEN = 768
_VIT_HEAD_CLASSES = 1000

# timm's ImageNet classifier of the ViT. ldm's DPTDepthModel owns it (and checkpoints store it), but MiDaS never
# runs it (forward_flex stops at the final norm), so transformers' model has no such weights.
LDM_ONLY_KEYS = ("pretrained.model.head.weight", "pretrained.model.head.bias")


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------


def dpt_hybrid_config():
    """transformers.DPTConfig of MiDaS DPT-Hybrid (vitb_rn50_384), built in code (nothing is downloaded).

    Differences from transformers' conversion script, which never set them: is_hybrid=True, and
    layer_norm_eps=1e-6 (timm's ViT; DPTConfig's default 1e-12 is BERT's).
    """
    from transformers import DPTConfig

    return DPTConfig(
        is_hybrid=True,
        hidden_size=_HIDDEN,
        num_hidden_layers=_NUM_LAYERS,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=NET_SIZE,
        patch_size=16,
        num_channels=3,
        qkv_bias=True,
        backbone_out_indices=[2, 5, 8, 11],  # hybrid: stages 1-2 come from the ResNet, then ViT blocks 8 and 11
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[256, 512, 768, 768],
        fusion_hidden_size=256,
        head_in_index=-1,
        use_batch_norm_in_fusion_residual=False,
        add_projection=False,
        use_auxiliary_head=False,
        backbone_featmap_shape=[1, 1024, NET_SIZE // 16, NET_SIZE // 16],
        neck_ignore_stages=[0, 1],
        backbone_config={
            "global_padding": "same",
            "layer_type": "bottleneck",
            "depths": list(_BIT_DEPTHS),
            "out_features": ["stage1", "stage2", "stage3"],
            "embedding_dynamic_padding": True,
        },
    )


# ---------------------------------------------------------------------------------------------------------
# Key map (one table, both directions)
# ---------------------------------------------------------------------------------------------------------


def _module_pairs() -> list[tuple[str, str]]:
    """(ldm name, transformers name) of every parameter-holding module or parameter, except qkv and head.

    A key maps through the longest listed prefix; what follows it (".weight", "conv1.weight", ...) is kept.
    """
    vit = "pretrained.model."
    bit_ldm, bit_hf = vit + "patch_embed.backbone.", "dpt.embeddings.backbone.bit."
    pairs = [
        (vit + "cls_token", "dpt.embeddings.cls_token"),
        (vit + "pos_embed", "dpt.embeddings.position_embeddings"),
        (bit_ldm + "stem.conv", bit_hf + "embedder.convolution"),
        (bit_ldm + "stem.norm", bit_hf + "embedder.norm"),
        (vit + "patch_embed.proj", "dpt.embeddings.projection"),
        (vit + "norm", "dpt.layernorm"),
    ]
    for stage, depth in enumerate(_BIT_DEPTHS):
        for block in range(depth):
            # Inside a block the names agree (conv1..3, norm1..3, downsample.conv/norm).
            pairs.append((f"{bit_ldm}stages.{stage}.blocks.{block}", f"{bit_hf}encoder.stages.{stage}.layers.{block}"))
    for i in range(_NUM_LAYERS):
        ldm, hf = f"{vit}blocks.{i}.", f"dpt.encoder.layer.{i}."
        pairs += [
            (ldm + "norm1", hf + "layernorm_before"),
            (ldm + "norm2", hf + "layernorm_after"),
            (ldm + "attn.proj", hf + "attention.output.dense"),
            (ldm + "mlp.fc1", hf + "intermediate.dense"),
            (ldm + "mlp.fc2", hf + "output.dense"),
        ]
    # Reassemble: ldm's act_postprocess3/4 = [readout project, transpose, unflatten, 1x1 conv, (3x3 s2 conv)].
    # The hybrid's first two stages are the ResNet's own feature maps: no weights.
    for n in (3, 4):
        pairs += [
            (f"pretrained.act_postprocess{n}.0.project.0", f"neck.reassemble_stage.readout_projects.{n - 1}.0"),
            (f"pretrained.act_postprocess{n}.3", f"neck.reassemble_stage.layers.{n - 1}.projection"),
        ]
    pairs.append(("pretrained.act_postprocess4.4", "neck.reassemble_stage.layers.3.resize"))
    for n in (1, 2, 3, 4):
        # ldm fuses refinenet4 first; transformers numbers its fusion layers in that order.
        ldm, hf = f"scratch.refinenet{n}.", f"neck.fusion_stage.layers.{4 - n}."
        pairs += [
            (f"scratch.layer{n}_rn", f"neck.convs.{n - 1}"),
            (ldm + "out_conv", hf + "projection"),
        ]
        for unit in (1, 2):
            for conv in (1, 2):
                pairs.append((f"{ldm}resConfUnit{unit}.conv{conv}", f"{hf}residual_layer{unit}.convolution{conv}"))
    for j in (0, 2, 4):  # conv, upsample, conv, relu, conv, relu
        pairs.append((f"scratch.output_conv.{j}", f"head.head.{j}"))
    return pairs


_LDM_TO_HF = dict(_module_pairs())
_HF_TO_LDM = {hf: ldm for ldm, hf in _LDM_TO_HF.items()}
assert len(_HF_TO_LDM) == len(_LDM_TO_HF), "the rename table must be one-to-one"

# timm stores the attention input projection as one [3*768, 768] matrix; transformers as three.
_QKV = {
    f"pretrained.model.blocks.{i}.attn.qkv.{p}": tuple(
        f"dpt.encoder.layer.{i}.attention.attention.{part}.{p}" for part in ("query", "key", "value")
    )
    for i in range(_NUM_LAYERS)
    for p in ("weight", "bias")
}
_QKV_PART = {hf: (ldm, index) for ldm, parts in _QKV.items() for index, hf in enumerate(parts)}


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in table:
            return ".".join([table[head], *parts[n:]])
    return None


def _unknown(keys: list[str], layout: str) -> ValueError:
    shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
    return ValueError(f"not a MiDaS DPT-Hybrid state dict in {layout} layout: unknown keys {shown}")


def ldm_to_hf_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ldm DPTDepthModel state dict (keys without `depth_model.model.`) -> DPTForDepthEstimation's.

    Drops LDM_ONLY_KEYS (timm's unused classifier). query/key/value are views of the qkv tensor (no copy).
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key in LDM_ONLY_KEYS:
            continue
        if key in _QKV:
            for hf_key, part in zip(_QKV[key], value.chunk(3, dim=0), strict=True):
                out[hf_key] = part
            continue
        hf_key = _rename(key, _LDM_TO_HF)
        if hf_key is None:
            unknown.append(key)
        else:
            out[hf_key] = value
    if unknown:
        raise _unknown(unknown, "ldm")
    return out


def hf_to_ldm_state_dict(
    sd: Mapping[str, torch.Tensor], ldm_only: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """DPTForDepthEstimation state dict -> ldm DPTDepthModel's (keys without `depth_model.model.`).

    ldm's model also owns timm's ImageNet classifier (LDM_ONLY_KEYS), which transformers' model lacks and ldm
    loads with strict=True. Pass the original tensors in `ldm_only` to keep them (an exact round trip);
    otherwise they are zeros of the right shape — faithful for depth, because MiDaS never runs that head.
    """
    if not sd:
        raise ValueError("empty state dict: nothing to convert")
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, list] = {}
    unknown = []
    for key, value in sd.items():
        if key in _QKV_PART:
            ldm_key, index = _QKV_PART[key]
            qkv_parts.setdefault(ldm_key, [None, None, None])[index] = value
            continue
        ldm_key = _rename(key, _HF_TO_LDM)
        if ldm_key is None:
            unknown.append(key)
        else:
            out[ldm_key] = value
    if unknown:
        raise _unknown(unknown, "transformers")
    for ldm_key, parts in qkv_parts.items():
        if any(part is None for part in parts):
            raise ValueError(f"query/key/value incomplete for {ldm_key}: cannot rebuild timm's fused qkv")
        out[ldm_key] = torch.cat(parts, dim=0)

    ref = sd.get("dpt.embeddings.cls_token", next(iter(sd.values())))  # dtype and device for the zeros
    shapes = {LDM_ONLY_KEYS[0]: (_VIT_HEAD_CLASSES, _HIDDEN), LDM_ONLY_KEYS[1]: (_VIT_HEAD_CLASSES,)}
    for key in LDM_ONLY_KEYS:
        if ldm_only is not None and key in ldm_only:
            out[key] = ldm_only[key]
        else:
            out[key] = torch.zeros(shapes[key], dtype=ref.dtype, device=ref.device)
    return out


def midas_state_dict(checkpoint_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The MiDaS part of a whole depth checkpoint, prefix removed (ldm layout)."""
    n = len(MIDAS_PREFIX)
    return {k[n:]: v for k, v in checkpoint_state_dict.items() if k.startswith(MIDAS_PREFIX)}


def has_midas(checkpoint_state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(MIDAS_PREFIX) for k in checkpoint_state_dict)


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


def load_midas_from_state_dict(
    checkpoint_state_dict: Mapping[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
):
    """A DPTForDepthEstimation (eval, no grad) holding the checkpoint's MiDaS, loaded with strict=True.

    `checkpoint_state_dict` is a whole depth checkpoint (keys with `depth_model.model.`). dtype/device None keep
    the checkpoint's. The model is built on the meta device and takes the checkpoint's tensors: no random init,
    and no copy where dtype and device already match (it then shares memory with the given tensors).
    """
    from transformers import DPTForDepthEstimation

    ldm_sd = midas_state_dict(checkpoint_state_dict)
    if not ldm_sd:
        raise ValueError(f"no MiDaS weights under '{MIDAS_PREFIX}': not a Stable Diffusion 2 depth checkpoint")
    hf_sd = ldm_to_hf_state_dict(ldm_sd)
    if dtype is None:
        # A checkpoint with mixed float dtypes would give a model that cannot run: use the most common one.
        dtype = Counter(v.dtype for v in hf_sd.values() if v.is_floating_point()).most_common(1)[0][0]
    with torch.device("meta"):
        model = DPTForDepthEstimation(dpt_hybrid_config())
    model.load_state_dict(hf_sd, strict=True, assign=True)  # raises on any missing or unexpected key
    model.to(device=device, dtype=dtype)
    model.eval().requires_grad_(False)
    return model


def _check_size(height: int, width: int) -> None:
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"MiDaS input must have sides that are multiples of {SIZE_MULTIPLE}, got {height}x{width}")


def _vit_layer(layer, hidden: torch.Tensor) -> torch.Tensor:
    """DPTViTLayer.forward (a pre-norm ViT block) computed as timm's Block: one fused qkv projection and
    PyTorch's fused attention. transformers 4.30's own forward (three projections, eager attention) is 1.4x
    slower on the CPU; this matches timm's speed and its numbers.
    """
    attention = layer.attention.attention
    batch, length, channels = hidden.shape
    heads = attention.num_attention_heads
    # Concatenated per call rather than cached, so it can never go stale when the model is moved or cast.
    weight = torch.cat([attention.query.weight, attention.key.weight, attention.value.weight])
    bias = torch.cat([attention.query.bias, attention.key.bias, attention.value.bias])
    x = layer.layernorm_before(hidden)
    qkv = F.linear(x, weight, bias).reshape(batch, length, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    context = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, channels)
    hidden = layer.attention.output.dense(context) + hidden
    return layer.output.dense(layer.intermediate(layer.layernorm_after(hidden))) + hidden


@torch.no_grad()
def predict_depth(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Inverse depth [B, H, W] (larger = nearer) of pixel_values [B, 3, H, W] (H, W multiples of 32).

    The computation of transformers' DPTForDepthEstimation.forward for the hybrid model, with the token grid
    taken from the input instead of the square config.image_size (as MiDaS' forward_flex does), and fused
    qkv and attention in the ViT blocks (as timm).
    Runs in the model's dtype on its device; pixel_values must already be there.
    """
    batch, _, height, width = pixel_values.shape
    _check_size(height, width)
    config = model.config
    grid_h, grid_w = height // config.patch_size, width // config.patch_size

    # BiT stem + stages 1-3, 1x1 projection to tokens, [CLS], position embeddings resized to the grid.
    embeddings = model.dpt.embeddings(pixel_values, interpolate_pos_encoding=True)
    tokens, resnet_maps = embeddings[0], list(embeddings[1])  # a tuple (4.30) or a ModelOutput (5.x)

    vit_indices = set(config.backbone_out_indices[2:])
    vit_states = []
    for index, layer in enumerate(model.dpt.encoder.layer):
        tokens = _vit_layer(layer, tokens)
        if index in vit_indices:
            vit_states.append(tokens)

    # Reassemble (DPTReassembleStage.forward with a non-square grid): readout projection, token grid -> map.
    stage = model.neck.reassemble_stage
    features = resnet_maps
    for i, hidden in enumerate(vit_states, start=2):
        cls_token, hidden = hidden[:, 0], hidden[:, 1:]
        readout = cls_token.unsqueeze(1).expand_as(hidden)
        hidden = stage.readout_projects[i](torch.cat((hidden, readout), -1))
        hidden = hidden.transpose(1, 2).reshape(batch, -1, grid_h, grid_w)
        features.append(stage.layers[i](hidden))

    features = [conv(feature) for conv, feature in zip(model.neck.convs, features, strict=True)]
    fused = model.neck.fusion_stage(features)
    return model.head(fused)


def weights_fingerprint(model) -> str:
    """A hash of every tensor of the model (names, dtypes, shapes, values): the depth cache's key for these weights.

    All of them, since a fine-tune may change any layer; computed once per estimator (about a second for the
    full-size MiDaS on a CPU), beside the seconds a forward takes.
    """
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def randomize_for_fixture(model, seed: int = 0):
    """Give a DPTForDepthEstimation(dpt_hybrid_config()) seeded random weights whose output varies; in place.

    For test fixtures (e.g. a tiny depth checkpoint: this, then hf_to_ldm_state_dict). transformers' default
    init depends on its version and gives a nearly flat depth, mostly clipped to 0 by the final ReLU (75% of
    pixels on 5.x, 99.8% on 4.30). Here every
    parameter is drawn, in sorted name order, from one torch.Generator — the same values on transformers 4.30
    and 5.x — with scales that keep activations O(1): weights N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2),
    biases and embeddings N(0, 0.02^2). The last head conv gets |weights| and bias +0.5, so the depth is
    positive (never clipped by the ReLU) and follows the image.
    """
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            param = params[name]
            shape = tuple(param.shape)
            noise = torch.randn(shape, generator=gen, dtype=torch.float32)
            if param.ndim >= 2 and "embeddings.cls_token" not in name and "position_embeddings" not in name:
                value = noise / math.sqrt(math.prod(shape[1:]))
            elif name.endswith(".weight"):  # 1-D weights are group/layer norm scales
                value = 1.0 + 0.1 * noise
            else:
                value = 0.02 * noise
            if name == "head.head.4.weight":
                value = value.abs()
            elif name == "head.head.4.bias":
                value = torch.full(shape, 0.5)
            param.copy_(value.to(param.dtype))
    return model


# ---------------------------------------------------------------------------------------------------------
# Preprocessing (ldm.data.util.AddMiDaS("dpt_hybrid"))
# ---------------------------------------------------------------------------------------------------------


def _to_multiple(x: float) -> int:
    # ldm's Resize.constrain_to_multiple_of (np.round: halves go to even). Never 0: ldm would crash there.
    return max(int(np.round(x / SIZE_MULTIPLE) * SIZE_MULTIPLE), SIZE_MULTIPLE)


def midas_input_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) MiDaS resizes an image to: keep aspect, scale as little as possible towards 384x384."""
    scale_height = NET_SIZE / height
    scale_width = NET_SIZE / width
    # resize_method="minimal": the side whose scale is closer to 1 decides.
    if abs(1 - scale_width) < abs(1 - scale_height):
        scale_height = scale_width
    else:
        scale_width = scale_height
    return _to_multiple(scale_height * height), _to_multiple(scale_width * width)


def images_to_tensor(images) -> torch.Tensor:
    """PIL image(s) -> float32 [B, 3, H, W] in [-1, 1] (the WebUI's convention); tensors pass through."""
    if isinstance(images, torch.Tensor):
        return images if images.ndim == 4 else images.unsqueeze(0)
    if isinstance(images, Image.Image):
        images = [images]
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("images in one batch must have the same size")
    return torch.from_numpy(np.stack(arrays) * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


def preprocess(images) -> torch.Tensor:
    """MiDaS input [B, 3, h, w] float32 on the CPU, as ldm's AddMiDaS("dpt_hybrid") makes it.

    images: a tensor [B, 3, H, W] (or [3, H, W]) in [-1, 1], any dtype and device, or PIL image(s).
    Each image goes to [0, 1], is resized with OpenCV bicubic to midas_input_size, then normalised with
    mean = std = 0.5. OpenCV gets float32 numpy only: it rejects float16 ("src data type = 23").
    """
    x = images_to_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(x.shape)}")
    # float32 first, then AddMiDaS.pt2np's arithmetic ((x + 1) * 0.5), then HWC for OpenCV.
    x01 = ((x.detach().to(torch.float32) + 1.0) * 0.5).cpu().permute(0, 2, 3, 1).numpy()
    height, width = x01.shape[1:3]
    new_h, new_w = midas_input_size(height, width)
    out = []
    for image in x01:
        resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_CUBIC)
        normalized = (resized - _MEAN) / _STD
        out.append(np.ascontiguousarray(normalized.transpose(2, 0, 1)).astype(np.float32))
    return torch.from_numpy(np.stack(out))
