"""The ``transgeo`` source: TransGeo (Zhu, Shah, Chen, CVPR'22, ``Jeff-Zilence/TransGeo2022``) checkpoints.

What upstream writes (``train.py``: ``save_checkpoint``): ``checkpoint.pth.tar`` / ``model_best.pth.tar``
= ``{"epoch", "state_dict", "best_acc1", "optimizer"}``, the state dict of the ``DataParallel`` /
``DistributedDataParallel``-wrapped ``model.TransGeo.TransGeo``: ``module.query_net.*`` (ground) and
``module.reference_net.*`` (aerial), two separate ``model.Deit.DistilledVisionTransformer`` (DeiT-S/16:
12 blocks, width 384, 6 heads; cls and dist tokens; position embeddings of 2 + the patches of the
trained input size), each with two ``args.dim``-output (1000) heads. A branch's output, the
descriptor, is ``(head(norm(x)[:, 0]) + head_dist(norm(x)[:, 1])) / 2``; ``accuracy`` L2-normalises
it. ``best_acc1`` is a numpy float64 (what ``validate`` returns): the file is read with
``weights_only=True`` and numpy's scalar and dtype reconstructors allowed (plain data, no code).

Mapping: onto our ``transgeo`` recipe, variant ``full`` (two separate timm
``deit_small_distilled_patch16_224`` backbones with ``num_classes`` = the heads' width, kind ``logits``,
which is the same mean of the two token heads; the ``avg`` head only L2-normalises):
``query_net.<k>`` -> ``ground_backbone.model.<k>``, ``reference_net.<k>`` -> ``aerial_backbone.model.<k>``
(timm's DeiT keys equal upstream's). The depth, width, MLP ratio and head width are read from the
checkpoint and recorded as ``backbone_kwargs`` overrides; the attention heads are ``--num-heads``
(default width / 64, DeiT's head width: 6 for DeiT-S). The aerial size is read from the aerial
position embedding (a square of side 16 x sqrt(tokens - 2): 256 after stage 1, 320 after stage 2
``--sat_res 320 --crop``, or VIGOR); the ground size is ``--dataset``'s (112x616 on CVUSA / CVACT,
320x640 on VIGOR) and must fit the ground position embedding.

Upstream preprocessing (``dataset/CVUSA.py``, ``dataset/CVACT.py``, ``dataset/VIGOR.py``:
``input_transform``): ``PIL.Image.open(path).convert("RGB")``; torchvision ``Resize(size=(H, W))`` of the
PIL image (``Image.resize`` with ``BILINEAR``); ``ToTensor`` (x / 255 in float32); ``Normalize`` with
ImageNet's mean / std; no polar transform, no crop. Reader ``"pil"`` of
``geo_bench.datasets.upstream_preprocess``.

On CVACT (``dataset/CVACT.py``) the panorama is first cropped to its middle rows
(``img.crop((0, H // 4, W, H // 4 * 3))``: rows 208-624 of 832), recorded as ``ground_crop`` (0.25, 0.75).

Stage 2 (``--stage 2``; by default a checkpoint whose aerial size is not the dataset's stage-1 size, 256
on CVUSA / CVACT, 320 on VIGOR: ``run_CVUSA.sh`` trains stage 2 with ``--sat_res 320 --crop``,
``run_VIGOR.sh`` with ``--sat_res 400 --crop``): upstream evaluates the aerial branch on the 64 % of its
patches that the stage-1 attention maps rank highest (``model/Deit.py`` ``forward_features_crop``; the maps
are the PNGs ``attention/val/<index>.png`` its stage-1 ``scan`` wrote, shipped in the released model
archives, TransGeo#45, read by ``dataset/*.py`` ``test_reference`` with ``ToTensor``). The folder records
``backbone_kwargs.select_tokens`` (the aerial backbone takes the keep-order channel of
:mod:`geo_retrieval.token_crop`) and the preprocessing's ``aerial_tokens`` (method ``transgeo_attention``,
keep rate 0.64, the map files); ``geo-bench evaluate --attention-maps DIR`` applies it. ``--stage 1`` on
such a checkpoint encodes every patch. Limited-FoV checkpoints (``--fov``) are refused (their ground
position embedding does not fit the 360-degree size).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import _safe_torch_load, strip_prefixes, unwrap_state_dict
from ..model import CrossViewModel
from ..recipes import build, get_recipe
from ..token_crop import KEEP_RATE
from .manifest import UpstreamPreprocessing, write_converted
from .mapping import map_state_dict
from .sources import register_source

__all__ = [
    "GROUND_SIZES",
    "PATCH",
    "STAGE1_AERIAL",
    "UPSTREAM",
    "convert_transgeo",
    "inspect_transgeo",
    "transgeo_preprocessing",
]

UPSTREAM = "Jeff-Zilence/TransGeo2022"
PATCH = 16
#: upstream's ground input sizes (H, W) per dataset (``model/TransGeo.py``); 360-degree panoramas
GROUND_SIZES: dict[str, tuple[int, int]] = {
    "cvusa": (112, 616),
    "cvact": (112, 616),
    "vigor": (320, 640),
}
#: the stage-1 aerial size per dataset; another size in the checkpoint means ``--sat_res`` (stage 2)
STAGE1_AERIAL = {"cvusa": 256, "cvact": 256, "vigor": 320}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_BRANCHES = {"query_net.": "ground_backbone.model.", "reference_net.": "aerial_backbone.model."}
_CODE = (
    f"{UPSTREAM}: dataset/CVUSA.py, CVACT.py, VIGOR.py input_transform (PIL Image.open().convert('RGB'), "
    "torchvision Resize / ToTensor / Normalize; CVACT.py crop (0, H // 4, W, H // 4 * 3)), model/TransGeo.py "
    "(sizes), model/Deit.py forward_features_crop (stage 2), train.py validate / accuracy"
)


def _numpy_scalar_globals() -> list[Any]:
    """The numpy scalar reconstructor (under its numpy 1 and numpy 2 names) and dtypes: plain data."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *(
            getattr(np.dtypes, n)
            for n in ("Float64DType", "Float32DType", "Int64DType")
            if hasattr(np, "dtypes")
        ),
    ]


def _load(src: Path) -> Any:
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
        return _safe_torch_load(src)


def _rename(key: str) -> str | None:
    for theirs, ours in _BRANCHES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return None


def _state_dict(obj: Any, src: Path) -> dict[str, Tensor]:
    try:
        state = strip_prefixes(unwrap_state_dict(obj))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{os.fspath(src)}: not a TransGeo checkpoint ({exc}); is this a {UPSTREAM} checkpoint.pth.tar?"
        ) from None
    needed = [f"{b}{k}" for b in _BRANCHES for k in ("pos_embed", "cls_token", "dist_token", "head.weight")]
    absent = [k for k in needed if k not in state]
    if absent:
        shown = ", ".join(sorted(state)[:5])
        raise ValueError(
            f"{os.fspath(src)}: not a {UPSTREAM} checkpoint: no {', '.join(absent[:4])}"
            f"{' ...' if len(absent) > 4 else ''} (its first keys: {shown}; {len(state)} in all)"
        )
    return state


def inspect_transgeo(state: dict[str, Tensor], *, num_heads: int | None = None) -> dict[str, Any]:
    """The architecture a TransGeo state dict (``query_net.*`` / ``reference_net.*``, prefixes stripped)
    was trained with: ``backbone_kwargs`` of our DeiT backbone and the aerial size (H, W).

    Raises:
        ValueError: the two branches differ, or the aerial position embedding is not a square grid.
    """
    embed_dim = int(state["query_net.cls_token"].shape[-1])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"query_net\.blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else 0
    fc1 = state.get("query_net.blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0
    heads = int(num_heads) if num_heads is not None else max(1, embed_dim // 64)
    if embed_dim % heads:
        raise ValueError(f"--num-heads {heads} does not divide the width {embed_dim}")
    num_classes = int(state["query_net.head.weight"].shape[0])
    tokens = int(state["reference_net.pos_embed"].shape[1]) - 2
    side = math.isqrt(max(tokens, 0))
    if side * side != tokens or side == 0:
        raise ValueError(
            f"reference_net.pos_embed holds {tokens} patch tokens, not a square grid: not a TransGeo aerial branch"
        )
    return {
        "backbone_kwargs": {
            "num_classes": num_classes,
            "depth": depth,
            "embed_dim": embed_dim,
            "num_heads": heads,
            "mlp_ratio": mlp_ratio,
        },
        "aerial_size": (side * PATCH, side * PATCH),
    }


def transgeo_preprocessing(
    dataset: str, aerial_size: tuple[int, int], *, stage: int = 1
) -> UpstreamPreprocessing:
    """Upstream's evaluation preprocessing (module docstring) for ``dataset`` with the aerial size of the
    checkpoint; ``stage=2`` adds the attention-guided crop (``aerial_tokens``)."""
    if dataset not in GROUND_SIZES:
        raise ValueError(f"dataset must be one of {sorted(GROUND_SIZES)}, got {dataset!r}")
    tokens = None
    if stage == 2:
        tokens = {
            "method": "transgeo_attention",
            "keep_rate": KEEP_RATE,
            "patch": PATCH,
            "maps": "attention/val/<index>.png of the stage-1 scan (index: the reference's position in the "
            "test list), PIL .convert('RGB'), ToTensor, channel 0",
            "select": "F.interpolate(bilinear) to the patch grid, torch.argsort ascending on the CPU, the last "
            "int(keep_rate * N) patches in that order",
        }
    return UpstreamPreprocessing(
        reader="pil",
        resize="PIL.Image.BILINEAR",
        ground_size=GROUND_SIZES[dataset],
        aerial_size=(int(aerial_size[0]), int(aerial_size[1])),
        mean=_IMAGENET[0],
        std=_IMAGENET[1],
        ground_crop=(0.25, 0.75) if dataset == "cvact" else None,
        aerial_tokens=tokens,
        code=_CODE,
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        choices=sorted(GROUND_SIZES),
        help="the dataset the checkpoint was trained on: sets the ground size (112x616 on CVUSA / CVACT, "
        "320x640 on VIGOR); the aerial size comes from the checkpoint",
    )
    parser.add_argument(
        "--stage",
        type=int,
        choices=[1, 2],
        default=None,
        help="2: a stage-2 (--crop) checkpoint, evaluated on the aerial patches ranked highest by stage-1 "
        "attention maps (geo-bench evaluate --attention-maps); default: 2 when the aerial size is not the "
        "dataset's stage-1 size (256 on CVUSA / CVACT, 320 on VIGOR)",
    )
    parser.add_argument(
        "--num-heads",
        dest="num_heads",
        type=int,
        default=None,
        help="attention heads per block (default: width / 64, DeiT's; 6 for DeiT-S)",
    )


@register_source(
    "transgeo",
    summary="TransGeo (CVPR'22) checkpoint.pth.tar -> transgeo recipe (full) folder",
    add_arguments=_add_arguments,
)
def convert_transgeo(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dataset: str,
    num_heads: int | None = None,
    stage: int | None = None,
    **unused: Any,
) -> dict[str, Path]:
    """Convert a TransGeo ``checkpoint.pth.tar`` into a converted-checkpoint folder.

    Args:
        src: the checkpoint (read with ``weights_only=True``; numpy scalars allowed).
        out_dir: the folder written (``model.safetensors``, ``recipe.json``, ``manifest.json``).
        dataset: ``"cvusa"``, ``"cvact"`` or ``"vigor"``: upstream's ground size.
        num_heads: attention heads per block (default: width / 64).
        stage: 1 or 2 (see the module docstring); default 2 when the aerial size is not the dataset's
            stage-1 size.

    Returns:
        ``{"model", "recipe", "manifest"}`` paths.

    Raises:
        StateDictMismatchError: keys or shapes that do not fit (names the file and the keys).
        CorruptCheckpointError, UnsafeCheckpointError: a damaged or unsafe file.
        ValueError: an unknown dataset, or a file that is no TransGeo checkpoint (names the file).
    """
    if unused:
        raise TypeError(f"transgeo takes the options dataset=, num_heads= and stage=, not {sorted(unused)}")
    if stage not in (None, 1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    if dataset not in GROUND_SIZES:
        raise ValueError(f"--dataset must be one of {sorted(GROUND_SIZES)}, got {dataset!r}")
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(src)!r}")
    raw = _load(src)
    state = _state_dict(raw, src)
    try:
        arch = inspect_transgeo(state, num_heads=num_heads)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(src)}: {exc}") from None
    ground_size = GROUND_SIZES[dataset]
    aerial = arch["aerial_size"]
    if stage is None:
        stage = 2 if aerial[0] != STAGE1_AERIAL[dataset] else 1
    backbone_kwargs = dict(arch["backbone_kwargs"])
    if stage == 2:
        backbone_kwargs["select_tokens"] = True
    recipe = get_recipe("transgeo", "full").replace(
        backbone_kwargs=backbone_kwargs, ground_size=ground_size, aerial_size=aerial
    )
    net = build(recipe)
    if not isinstance(net, CrossViewModel) or net.shared_backbone:
        raise ValueError("the transgeo recipe must build two separate backbones")
    g_tokens = int(state["query_net.pos_embed"].shape[1]) - 2
    want = (ground_size[0] // PATCH) * (ground_size[1] // PATCH)
    what = f"not a {UPSTREAM} checkpoint of {dataset!r} (recipe transgeo, full)"
    if g_tokens != want:
        what += (
            f"; its ground position embedding has {g_tokens} patch tokens, {dataset}'s 360-degree "
            f"{ground_size[0]}x{ground_size[1]} panorama {want} (a limited-FoV or another dataset's checkpoint?)"
        )
    mapped = map_state_dict(state, net.state_dict(), _rename, path=src, what=what)
    notes = [
        f"{UPSTREAM} collects the descriptors unnormalised and L2-normalises them in accuracy(); here the "
        "head normalises them (the ranking is the same).",
    ]
    if stage == 2:
        notes.append(
            f"stage 2 (--sat_res {aerial[0]} --crop): upstream evaluates the aerial branch on the "
            f"{KEEP_RATE:.0%} of its patches ranked highest by the stage-1 attention maps attention/val/<index>.png "
            "(in the released model archives); geo-bench evaluate --attention-maps DIR applies them. Under "
            "--preprocess ours every patch is encoded."
        )
    elif aerial[0] != STAGE1_AERIAL[dataset]:
        notes.append(
            f"aerial {aerial[0]}x{aerial[1]} converted as stage 1 (--stage 1): every patch is encoded; a "
            "stage-2 (--crop) checkpoint is evaluated upstream on the patches its attention maps keep."
        )
    extra: dict[str, Any] = {}
    if isinstance(raw, dict):
        for key in ("epoch", "best_acc1"):
            value = raw.get(key)
            if isinstance(value, (int, float, np.integer, np.floating)):
                extra[key] = value.item() if isinstance(value, (np.integer, np.floating)) else value
    preprocessing = transgeo_preprocessing(dataset, aerial, stage=stage)
    return write_converted(
        out_dir,
        model=net,
        recipe=recipe,
        mapped=mapped,
        src=src,
        source_kind="transgeo",
        preprocessing=preprocessing,
        descriptor_dim=int(arch["backbone_kwargs"]["num_classes"]),
        source_options={
            "dataset": dataset,
            "num_heads": arch["backbone_kwargs"]["num_heads"],
            "stage": stage,
        },
        source_extra=extra,
        notes=tuple(notes),
    )
