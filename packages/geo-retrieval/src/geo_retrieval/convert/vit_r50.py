"""The ``vit-r50-in21k`` source: the ImageNet-21k R50+ViT-B/16 weights L2LTR and SMDT start from, as an
initialisation of the ``l2ltr`` recipe (``full``), and :func:`load_init` (``geo-bench train --init DIR``).

Inputs (either):

- the ViT authors' ``R50+ViT-B_16.npz`` (google-research/vision_transformer; read with
  ``numpy.load(allow_pickle=False)``): Flax names ``conv_root/kernel`` (HWIO), ``gn_root/*``,
  ``block<s>/unit<u>/{conv1..3,gn1..3,conv_proj,gn_proj}/*``, ``embedding/*``, ``cls``,
  ``Transformer/posembed_input/pos_embedding``, ``Transformer/encoderblock_<i>/{LayerNorm_0,
  MultiHeadDotProductAttention_1/{query,key,value,out},LayerNorm_2,MlpBlock_3/Dense_0,Dense_1}/*``,
  ``Transformer/encoder_norm/*`` (``head/*``, ``pre_logits/*``: the classifier, dropped);
- timm's ``vit_base_r50_s16_224.orig_in21k`` as a local ``.safetensors`` / ``.pth`` (``patch_embed.backbone.*``,
  ``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
  ``norm``; ``qkv`` split into q, k, v).

What ViT-pytorch's / L2LTR's ``load_from`` does, reproduced: kernels HWIO -> OIHW, attention kernels
(D, heads, D/heads) -> (D, D) transposed, ``LayerNorm_0`` copied into both the query/value norm and
the key-stream norm of the self-cross block (``attention_norm_1`` and ``attention_norm_2``), both
views (``model_grd``, ``model_sat``) from the same file, and the 14x14 position-embedding grid
resized to the recipe's token grid (``image_size / 16``) with ``scipy.ndimage.zoom(order=1)`` on the
(14, 14, D) grid, i.e. linear interpolation with the corner samples aligned (here:
``F.interpolate(bilinear, align_corners=True)`` in float64), the CLS position kept.

The output is a converted-checkpoint folder of the ``l2ltr`` recipe (``full``; dimensions read from
the file, ``num_heads`` (12) and ``image_size`` (128x512) as options) whose manifest kind is
``vit-r50-in21k``: an initialisation, not a trained model.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import load_weights, strip_prefixes, unwrap_state_dict
from ..recipes import build, get_recipe
from .l2ltr import hybrid_trunk_key
from .manifest import UpstreamPreprocessing, read_manifest, write_converted
from .mapping import StateDictMismatchError, map_state_dict
from .sources import register_source

__all__ = ["INIT_SOURCES", "convert_vit_r50", "load_init", "resize_pos_embed"]

#: manifest source kinds that are initialisations (``--init`` refuses other folders)
INIT_SOURCES = ("vit-r50-in21k",)
_VIEWS = ("ground", "aerial")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def resize_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """(1, 1 + g*g, D) -> (1, 1 + h*w, D): the square grid resized as ``scipy.ndimage.zoom(order=1)``
    does (linear, corners aligned), the first (CLS) token kept.

    Example:
        >>> resize_pos_embed(torch.zeros(1, 197, 8), (8, 32)).shape
        torch.Size([1, 257, 8])
    """
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"pos must be (1, 1 + N, D), got {tuple(pos.shape)}")
    n = pos.shape[1] - 1
    g = round(n**0.5)
    if g * g != n:
        raise ValueError(f"pos has {n} grid tokens, not a square grid")
    if (g, g) == tuple(grid):
        return pos
    d = pos.shape[2]
    tok, grid_old = pos[:, :1], pos[0, 1:].to(torch.float64).reshape(g, g, d).permute(2, 0, 1)[None]
    new = F.interpolate(grid_old, size=tuple(grid), mode="bilinear", align_corners=True)
    new = new[0].permute(1, 2, 0).reshape(1, grid[0] * grid[1], d).to(pos.dtype)
    return torch.cat([tok, new], dim=1)


def _flax_to_ours(key: str, value: np.ndarray) -> list[tuple[str, Tensor]]:
    """One Flax ``.npz`` entry -> [(our key below a view's backbone/head, tensor)], or [] if unknown."""
    t = torch.from_numpy(np.ascontiguousarray(value))
    m = re.fullmatch(r"(conv_root|gn_root)/(kernel|scale|bias)", key)
    if m:
        trunk = hybrid_trunk_key(
            f"root.{'conv' if m.group(1) == 'conv_root' else 'gn'}.{'weight' if m.group(2) != 'bias' else 'bias'}"
        )
        return [
            (f"backbone.model.{trunk}", t.permute(3, 2, 0, 1) if m.group(2) == "kernel" else t.reshape(-1))
        ]
    m = re.fullmatch(r"(block\d+)/(unit\d+)/(conv[123]|gn[123]|conv_proj|gn_proj)/(kernel|scale|bias)", key)
    if m:
        part = "downsample" if m.group(3) == "conv_proj" else m.group(3)
        trunk = hybrid_trunk_key(
            f"body.{m.group(1)}.{m.group(2)}.{part}.{'bias' if m.group(4) == 'bias' else 'weight'}"
        )
        if trunk is None:
            return []
        return [
            (f"backbone.model.{trunk}", t.permute(3, 2, 0, 1) if m.group(4) == "kernel" else t.reshape(-1))
        ]
    if key == "embedding/kernel":
        return [("head.embed.weight", t.permute(3, 2, 0, 1).flatten(1))]
    if key == "embedding/bias":
        return [("head.embed.bias", t)]
    if key == "cls":
        return [("head.cls_token", t)]
    if key == "Transformer/posembed_input/pos_embedding":
        return [("head.pos_embed", t)]
    m = re.fullmatch(r"Transformer/encoder_norm/(scale|bias)", key)
    if m:
        return [(f"head.norm.{'weight' if m.group(1) == 'scale' else 'bias'}", t)]
    m = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.+)/(kernel|scale|bias)", key)
    if not m:
        return []
    i, mod, leaf = m.groups()
    p = f"head.blocks.{i}."
    wb = "bias" if leaf == "bias" else "weight"
    if mod == "LayerNorm_0":  # L2LTR copies it into both attention norms
        return [(p + f"norm1.{wb}", t), (p + f"key_norm.{wb}", t.clone())]
    if mod == "LayerNorm_2":
        return [(p + f"norm2.{wb}", t)]
    att = re.fullmatch(r"MultiHeadDotProductAttention_1/(query|key|value|out)", mod)
    if att:
        name = {"query": "q", "key": "k", "value": "v", "out": "proj"}[att.group(1)]
        if leaf == "bias":
            return [(p + f"{name}.bias", t.reshape(-1))]
        d = t.shape[-1] if name == "proj" else t.shape[0]
        return [(p + f"{name}.weight", t.reshape(d, d).t().contiguous())]
    dense = re.fullmatch(r"MlpBlock_3/Dense_([01])", mod)
    if dense:
        name = "mlp.0" if dense.group(1) == "0" else "mlp.3"
        return [(p + f"{name}.{wb}", t.t().contiguous() if leaf == "kernel" else t)]
    return []


def _timm_to_ours(key: str, t: Tensor) -> list[tuple[str, Tensor]]:
    """One timm ``vit_base_r50_s16_224`` tensor -> [(our key, tensor)], or []."""
    if key.startswith("patch_embed.backbone."):
        return [(f"backbone.model.{key[len('patch_embed.backbone.') :]}", t)]
    fixed = {
        "patch_embed.proj.weight": "head.embed.weight",
        "patch_embed.proj.bias": "head.embed.bias",
        "cls_token": "head.cls_token",
        "pos_embed": "head.pos_embed",
        "norm.weight": "head.norm.weight",
        "norm.bias": "head.norm.bias",
    }
    if key in fixed:
        return [(fixed[key], t.flatten(1) if key == "patch_embed.proj.weight" else t)]
    m = re.fullmatch(
        r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", key
    )
    if not m:
        return []
    i, mod, leaf = m.groups()
    p = f"head.blocks.{i}."
    if mod == "norm1":
        return [(p + f"norm1.{leaf}", t), (p + f"key_norm.{leaf}", t.clone())]
    if mod == "attn.qkv":
        q, k, v = t.chunk(3, dim=0)
        return [
            (p + f"q.{leaf}", q.contiguous()),
            (p + f"k.{leaf}", k.contiguous()),
            (p + f"v.{leaf}", v.contiguous()),
        ]
    name = {"norm2": "norm2", "attn.proj": "proj", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}[mod]
    return [(p + f"{name}.{leaf}", t)]


def _read(src: Path) -> tuple[dict[str, Tensor], dict[str, str], str]:
    """The source as {'<view>_<our key>' or source key: tensor}, the dropped keys, and the layout."""
    per_view: list[tuple[str, Tensor]] = []
    dropped: dict[str, str] = {}
    unknown: dict[str, Tensor] = {}
    if src.suffix == ".npz":
        layout = "flax npz"
        with np.load(src, allow_pickle=False) as npz:
            for key in npz.files:
                if key.startswith(("head/", "pre_logits/")):
                    dropped[key] = "the ImageNet-21k classifier, not part of the encoder"
                    unknown[key] = torch.from_numpy(np.ascontiguousarray(npz[key]))
                    continue
                out = _flax_to_ours(key, npz[key])
                if not out:
                    unknown[key] = torch.from_numpy(np.ascontiguousarray(npz[key]))
                per_view += out
    else:
        layout = "timm vit_base_r50_s16_224"
        state = strip_prefixes(unwrap_state_dict(load_weights(src)))
        for key, t in state.items():
            if key.startswith(("head.", "pre_logits.", "fc_norm.")):
                dropped[key] = "the classifier, not part of the encoder"
                unknown[key] = t
                continue
            out = _timm_to_ours(key, t)
            if not out:
                unknown[key] = t
            per_view += out
    source: dict[str, Tensor] = dict(unknown)
    for view in _VIEWS:
        for key, t in per_view:
            source[f"{view}_{key}"] = t
    return source, dropped, layout


@register_source(
    "vit-r50-in21k",
    summary="R50+ViT-B/16 ImageNet-21k (.npz or timm safetensors/pth) -> l2ltr (full) initialisation folder",
    add_arguments=lambda p: _add_arguments(p),
)
def convert_vit_r50(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    num_heads: int = 12,
    image_size: tuple[int, int] | list[int] | None = None,
    **unused: Any,
) -> dict[str, Path]:
    """Convert the R50+ViT-B/16 ImageNet-21k weights into an ``l2ltr`` (full) initialisation folder.

    Raises:
        StateDictMismatchError: tensors that do not fit (names the file and the keys).
        ValueError: an unreadable layout.
    """
    if unused:
        raise TypeError(f"vit-r50-in21k takes num_heads= and image_size=, not {sorted(unused)}")
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no weights file at {os.fspath(src)!r}")
    size = (int(image_size[0]), int(image_size[1])) if image_size is not None else (128, 512)
    try:
        source, dropped, layout = _read(src)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{os.fspath(src)}: not readable as R50+ViT-B/16 weights ({exc})") from None
    try:
        embed, fc1 = source["ground_head.embed.weight"], source["ground_head.blocks.0.mlp.0.weight"]
        stem = source["ground_backbone.model.stem.conv.weight"]
    except KeyError as err:
        raise ValueError(
            f"{os.fspath(src)}: {err.args[0]!r} missing: not R50+ViT-B/16 weights ({layout})"
        ) from None
    depth = 1 + max(int(m.group(1)) for k in source if (m := re.match(r"ground_head\.blocks\.(\d+)\.", k)))
    units: dict[int, int] = {}
    for k in source:
        if m := re.match(r"ground_backbone\.model\.stages\.(\d+)\.blocks\.(\d+)\.", k):
            units[int(m.group(1))] = max(units.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    base = get_recipe("l2ltr", "full")
    recipe = base.replace(
        ground_size=size,
        aerial_size=size,
        backbone_kwargs={
            **dict(base.backbone_kwargs),
            "layers": tuple(units[s] for s in sorted(units)),
            "width_factor": float(stem.shape[0]) / 64.0,
        },
        head_kwargs={
            **dict(base.head_kwargs),
            "dim": int(embed.shape[0]),
            "depth": depth,
            "mlp_ratio": float(fc1.shape[0]) / float(fc1.shape[1]),
            "num_heads": int(num_heads),
        },
    )
    grid = (size[0] // 16, size[1] // 16)
    for view in _VIEWS:
        key = f"{view}_head.pos_embed"
        if key in source:
            source[key] = resize_pos_embed(source[key], grid)
    net = build(recipe)
    mapped = map_state_dict(
        {k: v for k, v in source.items()},
        net.state_dict(),
        lambda k: k if k.startswith(("ground_", "aerial_")) else None,
        path=src,
        what=f"not R50+ViT-B/16 weights for recipe l2ltr, full ({layout})",
        dropped=dropped,
    )
    return write_converted(
        out_dir,
        model=net,
        recipe=recipe,
        mapped=mapped,
        src=src,
        source_kind="vit-r50-in21k",
        preprocessing=UpstreamPreprocessing("pil", "PIL.Image.BILINEAR", size, size, *_IMAGENET),
        descriptor_dim=int(embed.shape[0]),
        source_options={"num_heads": int(num_heads), "image_size": list(size), "layout": layout},
        notes=(
            "An initialisation (ImageNet-21k), not a trained cross-view model: geo-bench train l2ltr --variant full "
            "--init OUT_DIR. Both views hold the same weights, as L2LTR's load_from on model_grd and model_sat.",
            f"Position embeddings resized from the 14x14 grid to {grid[0]}x{grid[1]} (linear, corners aligned, "
            "as scipy.ndimage.zoom(order=1) in ViT-pytorch / L2LTR).",
        ),
    )


def load_init(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, int]:
    """Load an initialisation folder (kind in :data:`INIT_SOURCES`) strictly into ``model``'s encoder part.

    Every tensor of the folder must land on a tensor of ``model`` of the same shape (found by its key,
    or below one common prefix, e.g. a GAN recipe's retrieval module), and every tensor of the modules
    it touches must be filled.

    Returns:
        ``{module: tensors filled}`` (``ground_backbone``, ``ground_head``, ...).

    Raises:
        FileNotFoundError: not a converted folder.
        ValueError: a folder that is not an initialisation.
        StateDictMismatchError: keys or shapes that do not fit (names the folder and the keys).
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    if manifest.source_kind not in INIT_SOURCES:
        raise ValueError(
            f"--init {os.fspath(folder)}: a converted {manifest.source_kind!r} checkpoint, not an initialisation "
            f"({', '.join(INIT_SOURCES)}); evaluate it with geo-bench evaluate --checkpoint"
        )
    state = load_weights(folder / "model.safetensors")
    target = model.state_dict()
    first = next(iter(sorted(state)))
    prefixes = [k[: -len(first)] for k in target if k.endswith(first)]
    prefix = "" if "" in prefixes else (prefixes[0] if len(prefixes) == 1 else "")
    touched = {prefix + k.split(".", 1)[0] for k in state}
    sub = {k: v for k, v in target.items() if any(k.startswith(t + ".") for t in touched)}
    mapped = map_state_dict(
        state,
        sub,
        lambda k: prefix + k,
        path=folder,
        what=f"the initialisation ({manifest.recipe}, {manifest.variant}, overrides in its manifest) does not fit this model",
    )
    missing = model.load_state_dict(mapped.state, strict=False)
    if missing.unexpected_keys:
        raise StateDictMismatchError(folder, "unexpected", [], list(missing.unexpected_keys), [])
    counts: dict[str, int] = {}
    for k in mapped.state:
        counts[k[len(prefix) :].split(".", 1)[0]] = counts.get(k[len(prefix) :].split(".", 1)[0], 0) + 1
    return counts


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-heads", type=int, default=12, help="attention heads (12: ViT-B/16)")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="the recipe's input size (default 128 512: an 8x32 token grid)",
    )
