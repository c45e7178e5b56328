"""The ``l2ltr`` source: trained L2LTR checkpoints (Yang, Lu, Zhu, NeurIPS'21,
``yanghongji2007/cross_view_localization_L2LTR``; its ViT code derives from ``jeonsworld/ViT-pytorch``).

What upstream writes (``train.py`` ``save_model``): ``torch.save({"model_grd": ..., "model_sat": ...,
"optimizer": ...})`` of two separate ``models.model_crossattn.VisionTransformer`` (R50+ViT-B/16 hybrid
with self-cross attention; ground panorama and polar aerial, both 128x512). Keys under
``transformer.embeddings`` (``hybrid_model.root`` / ``hybrid_model.body.block<s>.unit<u>``,
``patch_embeddings`` 1x1 conv, ``cls_token``, ``position_embeddings``) and ``transformer.encoder``
(``layer.<i>`` with ``attention_norm_1`` / ``attention_norm_2`` (the key stream's LayerNorm),
``attn.{query,key,value,out}``, ``ffn_norm``, ``ffn.fc1`` / ``ffn.fc2``; ``encoder_norm``).

Mapping: onto our ``l2ltr`` recipe, variant ``full`` (backbone ``r50_hybrid``, :mod:`geo_retrieval.hybrid`;
head ``transformer`` with ``self_cross=True``): ``model_grd`` -> ``ground_*``, ``model_sat`` -> ``aerial_*``;
trunk ``root.conv`` / ``root.gn`` -> ``model.stem.conv`` / ``model.stem.norm``,
``body.block<s>.unit<u>.{conv1..3, gn1..3, downsample, gn_proj}`` ->
``model.stages.<s-1>.blocks.<u-1>.{conv1..3, norm1..3, downsample.conv, downsample.norm}``; head
``patch_embeddings`` (D, C, 1, 1) -> ``embed`` (D, C) (the 1x1 conv is that linear map),
``cls_token`` / ``position_embeddings`` -> ``cls_token`` / ``pos_embed``,
``layer.<i>.{attention_norm_1, attention_norm_2, attn.query/key/value/out, ffn_norm, ffn.fc1, ffn.fc2}``
-> ``blocks.<i>.{norm1, key_norm, q/k/v/proj, norm2, mlp.0, mlp.3}``, ``encoder_norm`` -> ``norm``.
The optimiser state is dropped (not named: it is no model). Upstream's layer ``l`` takes keys from
x_{l-2} (layer 1 from x_0), as our ``TransformerHead(self_cross=True)``; its descriptor is the CLS of the
final LayerNorm, L2-normalised.

The model dimensions (width, depth, MLP, ResNet units and width, token grid) are read from the
checkpoint and recorded as recipe overrides; ``num_heads`` cannot be read from weights (12 in the
released ViT-B/16 config; ``--num-heads``), nor the input size (128x512; ``--image-size``).

Upstream preprocessing (``utils/dataloader_usa.py`` ``TestDataloader``): ``PIL.Image.open().convert("RGB")``
-> torchvision ``Resize((128, 512))`` (bilinear) -> ``ToTensor`` -> ``Normalize`` ImageNet, for the
panorama and for the polar aerial PNG made beforehand with SAFA's ``data_preparation.py`` (112x616,
centre S/2, ``scipy.misc.imsave``'s min-max stretch; L2LTR's README names SAFA's and DSM's scripts:
``polar_script="dsm"`` records DSM's 128x512 maps, which the resize leaves unchanged). Recorded with
reader ``"pil"`` and the polar preset ``safa_imsave@1`` (or ``dsm_imsave@1``) on the Pillow-decoded
aerial; ``geo-bench evaluate`` renders that PNG and resizes it as upstream does, bit for bit
(``geo-bench/tests/data/upstream/polar``).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ..checkpoint import _safe_torch_load, strip_prefixes
from ..recipes import build, get_recipe
from .manifest import UpstreamPreprocessing, write_converted
from .mapping import map_state_dict
from .sources import register_source

__all__ = [
    "IMAGE_SIZE",
    "POLAR_SCRIPTS",
    "UPSTREAM",
    "VIEWS",
    "convert_l2ltr",
    "hybrid_trunk_key",
    "l2ltr_preprocessing",
    "vit_block_key",
]

UPSTREAM = "yanghongji2007/cross_view_localization_L2LTR"
#: upstream's ``--img_size`` / ``--img_size_sat`` (H, W)
IMAGE_SIZE = (128, 512)
#: upstream state dict -> our model prefix
VIEWS = {"model_grd": "ground", "model_sat": "aerial"}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CODE = (
    f"{UPSTREAM}: utils/dataloader_usa.py TestDataloader (PIL open, convert RGB, transforms.Resize((128, 512)), "
    "ToTensor, Normalize ImageNet); polar PNGs from SAFA's data_preparation.py"
)
_BLOCK = {
    "attention_norm_1": "norm1",
    "attention_norm_2": "key_norm",
    "attn.query": "q",
    "attn.key": "k",
    "attn.value": "v",
    "attn.out": "proj",
    "ffn_norm": "norm2",
    "ffn.fc1": "mlp.0",
    "ffn.fc2": "mlp.3",
}
_UNIT = {
    "conv1": "conv1",
    "conv2": "conv2",
    "conv3": "conv3",
    "gn1": "norm1",
    "gn2": "norm2",
    "gn3": "norm3",
    "downsample": "downsample.conv",
    "gn_proj": "downsample.norm",
}


def hybrid_trunk_key(key: str) -> str | None:
    """``root.conv.weight`` / ``body.block2.unit3.gn_proj.bias`` (ViT-pytorch's trunk names) -> our
    :func:`~geo_retrieval.hybrid.build_r50_hybrid_trunk` key (``stem.conv.weight``,
    ``stages.1.blocks.2.downsample.norm.bias``), or None."""
    m = re.fullmatch(r"root\.(conv|gn)\.(weight|bias)", key)
    if m:
        return f"stem.{'conv' if m.group(1) == 'conv' else 'norm'}.{m.group(2)}"
    m = re.fullmatch(r"body\.block(\d+)\.unit(\d+)\.(\w+)\.(weight|bias)", key)
    if m and m.group(3) in _UNIT and int(m.group(1)) >= 1 and int(m.group(2)) >= 1:
        return f"stages.{int(m.group(1)) - 1}.blocks.{int(m.group(2)) - 1}.{_UNIT[m.group(3)]}.{m.group(4)}"
    return None


def vit_block_key(key: str) -> str | None:
    """``layer.<i>.attn.query.weight`` (ViT-pytorch / L2LTR) -> ``blocks.<i>.q.weight``, or None."""
    m = re.fullmatch(r"layer\.(\d+)\.(.+)\.(weight|bias)", key)
    if m and m.group(2) in _BLOCK:
        return f"blocks.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    return None


def _rename(key: str) -> str | None:
    view, _, rest = key.partition(".")
    ours = VIEWS.get(view)
    if ours is None:
        return None
    if rest.startswith("transformer.embeddings.hybrid_model."):
        trunk = hybrid_trunk_key(rest[len("transformer.embeddings.hybrid_model.") :])
        return f"{ours}_backbone.model.{trunk}" if trunk else None
    fixed = {
        "transformer.embeddings.patch_embeddings.weight": "embed.weight",
        "transformer.embeddings.patch_embeddings.bias": "embed.bias",
        "transformer.embeddings.cls_token": "cls_token",
        "transformer.embeddings.position_embeddings": "pos_embed",
        "transformer.encoder.encoder_norm.weight": "norm.weight",
        "transformer.encoder.encoder_norm.bias": "norm.bias",
    }
    if rest in fixed:
        return f"{ours}_head.{fixed[rest]}"
    if rest.startswith("transformer.encoder."):
        block = vit_block_key(rest[len("transformer.encoder.") :])
        return f"{ours}_head.{block}" if block else None
    return None


#: whose ``data_preparation.py`` made the polar PNGs -> (preset, rendered size)
POLAR_SCRIPTS = {"safa": ("safa_imsave@1", (112, 616)), "dsm": ("dsm_imsave@1", (128, 512))}


def l2ltr_preprocessing(
    image_size: tuple[int, int] = IMAGE_SIZE, polar_script: str = "safa"
) -> UpstreamPreprocessing:
    """Upstream's CVUSA evaluation preprocessing (module docstring); ``polar_script`` names whose
    ``data_preparation.py`` made the polar PNGs (``"safa"``: 112x616, ``"dsm"``: 128x512)."""
    if polar_script not in POLAR_SCRIPTS:
        raise ValueError(f"polar_script must be one of {sorted(POLAR_SCRIPTS)}, got {polar_script!r}")
    preset, rendered = POLAR_SCRIPTS[polar_script]
    size = (int(image_size[0]), int(image_size[1]))
    return UpstreamPreprocessing(
        reader="pil",
        resize="PIL.Image.BILINEAR",
        ground_size=size,
        aerial_size=size,
        mean=_IMAGENET[0],
        std=_IMAGENET[1],
        polar={
            "preset": preset,
            "size": list(rendered),
            "center": "safa",
            "input": "raw aerial image",
            "decode": "pil",
            "then": "PIL bilinear resize",
        },
        code=_CODE,
    )


def _dims(state: Mapping[str, Tensor], src: Path, image_size: tuple[int, int]) -> dict[str, Any]:
    """The model dimensions of the ``model_grd`` tensors (width, depth, MLP, trunk units and width)."""
    p = "model_grd.transformer."
    try:
        embed = state[p + "embeddings.patch_embeddings.weight"]
        fc1 = state[p + "encoder.layer.0.ffn.fc1.weight"]
        stem = state[p + "embeddings.hybrid_model.root.conv.weight"]
    except KeyError as err:
        raise ValueError(
            f"{os.fspath(src)}: {err.args[0]!r} missing: not an L2LTR hybrid checkpoint ({UPSTREAM})"
        ) from None
    depth = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(re.escape(p) + r"encoder\.layer\.(\d+)\.", k))
    )
    units: dict[int, int] = {}
    for k in state:
        m = re.match(re.escape(p) + r"embeddings\.hybrid_model\.body\.block(\d+)\.unit(\d+)\.", k)
        if m:
            units[int(m.group(1))] = max(units.get(int(m.group(1)), 0), int(m.group(2)))
    pos = state.get(p + "embeddings.position_embeddings")
    grid = (image_size[0] // 16, image_size[1] // 16)
    if isinstance(pos, Tensor) and pos.ndim == 3 and pos.shape[1] != grid[0] * grid[1] + 1:
        raise ValueError(
            f"{os.fspath(src)}: position_embeddings has {pos.shape[1] - 1} tokens, not {grid[0]}x{grid[1]} for a "
            f"{image_size[0]}x{image_size[1]} input: pass --image-size H W"
        )
    return {
        "dim": int(embed.shape[0]),
        "depth": depth,
        "mlp_ratio": float(fc1.shape[0]) / float(fc1.shape[1]),
        "layers": tuple(units[s] for s in sorted(units)),
        "width_factor": float(stem.shape[0]) / 64.0,
    }


@register_source(
    "l2ltr",
    summary="L2LTR (NeurIPS'21) model_checkpoint.pth (model_grd, model_sat) -> l2ltr recipe (full) folder",
    add_arguments=lambda p: _add_arguments(p),
)
def convert_l2ltr(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    num_heads: int = 12,
    image_size: tuple[int, int] | list[int] | None = None,
    polar_script: str = "safa",
    **unused: Any,
) -> dict[str, Path]:
    """Convert an L2LTR ``model_checkpoint.pth`` into a converted-checkpoint folder (module docstring).

    Args:
        src: the ``.pth`` file (``weights_only=True``).
        out_dir: the folder written.
        num_heads: attention heads (12 for the released ViT-B/16 models; weights do not show it).
        image_size: (H, W) of both inputs (128x512).
        polar_script: whose ``data_preparation.py`` made the polar PNGs the model was evaluated on
            (``"safa"``, 112x616, the default; ``"dsm"``, 128x512); recorded as the polar preset.

    Raises:
        StateDictMismatchError: keys or shapes that do not fit (names the file and the keys).
        CorruptCheckpointError, UnsafeCheckpointError: a damaged or unsafe file.
        ValueError: no ``model_grd`` / ``model_sat`` in the file.
    """
    if unused:
        raise TypeError(
            f"l2ltr takes the options num_heads=, image_size= and polar_script=, not {sorted(unused)}"
        )
    preprocessing = l2ltr_preprocessing(
        (int(image_size[0]), int(image_size[1])) if image_size is not None else IMAGE_SIZE, polar_script
    )
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(src)!r}")
    size = (int(image_size[0]), int(image_size[1])) if image_size is not None else IMAGE_SIZE
    ckpt = _safe_torch_load(src)
    if not isinstance(ckpt, Mapping) or not all(v in ckpt for v in VIEWS):
        keys = sorted(map(str, ckpt))[:20] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{os.fspath(src)}: no {list(VIEWS)} (keys: {keys}); is this an {UPSTREAM} checkpoint?"
        )
    state: dict[str, Tensor] = {}
    for view in VIEWS:
        if not isinstance(ckpt[view], Mapping):
            raise ValueError(
                f"{os.fspath(src)}: {view} must be a state dict, got {type(ckpt[view]).__name__}"
            )
        for key, value in strip_prefixes(ckpt[view]).items():
            if isinstance(value, Tensor) and key.endswith("patch_embeddings.weight") and value.ndim == 4:
                value = value.flatten(1)  # the 1x1 conv is our linear embedding
            state[f"{view}.{key}"] = value
    dims = _dims(state, src, size)
    base = get_recipe("l2ltr", "full")
    recipe = base.replace(
        ground_size=size,
        aerial_size=size,
        backbone_kwargs={
            **dict(base.backbone_kwargs),
            "layers": dims["layers"],
            "width_factor": dims["width_factor"],
        },
        head_kwargs={
            **dict(base.head_kwargs),
            "dim": dims["dim"],
            "depth": dims["depth"],
            "mlp_ratio": dims["mlp_ratio"],
            "num_heads": int(num_heads),
        },
    )
    net = build(recipe)
    mapped = map_state_dict(
        state,
        net.state_dict(),
        _rename,
        path=src,
        what=f"not an {UPSTREAM} model_checkpoint.pth (recipe l2ltr, full)",
    )
    return write_converted(
        out_dir,
        model=net,
        recipe=recipe,
        mapped=mapped,
        src=src,
        source_kind="l2ltr",
        preprocessing=preprocessing,
        descriptor_dim=dims["dim"],
        source_options={"num_heads": int(num_heads), "image_size": list(size), "polar_script": polar_script},
        notes=(
            f"{UPSTREAM} kept the checkpoint with the best test-split R@1 (evaluated every 1,110 steps).",
            f"Polar aerials: the PNGs of {polar_script.upper()}'s data_preparation.py (preset "
            f"{POLAR_SCRIPTS[polar_script][0]}, scipy.misc.imsave's min-max stretch included, from the aerial "
            "decoded with Pillow), then PIL bilinear to the input size, as upstream's TestDataloader; the JPEG "
            "library matters (IJG libjpeg 9 in Pillow wheels up to 8.4, libjpeg-turbo since).",
        ),
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-heads", type=int, default=12, help="attention heads (12: ViT-B/16)")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="input size (default 128 512)",
    )
    parser.add_argument(
        "--polar-script",
        default="safa",
        choices=sorted(POLAR_SCRIPTS),
        help="whose data_preparation.py made the polar PNGs: safa (112x616, default) or dsm (128x512)",
    )
