"""The ResNet trunk of the R50+ViT-B/16 hybrid as L2LTR / SMDT run it (backbone ``r50_hybrid``).

Convention: the ViT authors' hybrid trunk as ported to PyTorch by ViT-pytorch (jeonsworld) and used
by L2LTR (``models/modeling_resnet.py``), built from timm's ``ResNetV2`` parts:

- stem: weight-standardised 7x7 conv, stride 2, padding 3 (no bias) -> GroupNorm(32, eps 1e-6) +
  ReLU -> max-pool 3, stride 2, padding 1;
- stages of *post-activation* bottlenecks (``preact=False``; conv1 1x1 -> GN -> ReLU -> conv2 3x3
  with the stride -> GN -> ReLU -> conv3 1x1 -> GN, + shortcut, ReLU), ``layers`` units per stage
  (3, 4, 9: stride 16, 1024 channels at width factor 1);
- weight standardisation (w - mean) / sqrt(var + 1e-5) (biased variance over each output filter);
  GroupNorm eps 1e-6 with 32 groups in the units;
- the projection shortcut's norm is ``GroupNorm(C, C)`` (one group per channel, eps 1e-5), as
  ViT-pytorch has it (the ViT authors' Flax code uses 32 groups; timm's hybrid follows Flax, so
  timm's ``vit_base_r50_s16_224`` trunk is *not* this one, and its ``same`` padding differs too).

Keys are timm's (``stem.conv``, ``stem.norm``, ``stages.<s>.blocks.<u>.{conv1..3,norm1..3}``,
``...downsample.{conv,norm}``); :mod:`geo_retrieval.convert.l2ltr` and
:mod:`geo_retrieval.convert.vit_r50` map L2LTR checkpoints and the ViT ``.npz`` onto them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

from timm.layers import GroupNormAct, StdConv2d
from timm.models.resnetv2 import ResNetV2

from .backbones import Backbone, register_backbone
from .checkpoint import load_weights, strip_prefixes, unwrap_state_dict

__all__ = ["build_r50_hybrid_trunk"]


def build_r50_hybrid_trunk(layers: Sequence[int] = (3, 4, 9), width_factor: float = 1.0) -> Any:
    """The timm ``ResNetV2`` of the module Convention (no head, no final norm).

    Example:
        >>> import torch
        >>> m = build_r50_hybrid_trunk((1, 1, 1), 0.5)
        >>> m.forward_features(torch.zeros(1, 3, 32, 64)).shape
        torch.Size([1, 512, 2, 4])
    """
    layers = tuple(int(n) for n in layers)
    if not 1 <= len(layers) <= 4 or min(layers) < 1:
        raise ValueError(f"layers must be 1-4 positive unit counts, got {layers}")
    if not width_factor > 0:
        raise ValueError(f"width_factor must be > 0, got {width_factor}")
    model: Any = ResNetV2(
        layers=list(layers),
        channels=(256, 512, 1024, 2048)[: len(layers)],
        num_classes=0,
        global_pool="",
        width_factor=width_factor,  # type: ignore[arg-type]
        stem_type="",
        preact=False,
        conv_layer=partial(StdConv2d, eps=1e-5),
        norm_layer=partial(GroupNormAct, num_groups=32, eps=1e-6),
    )
    for stage in model.stages:
        for block in stage.blocks:
            down = getattr(block, "downsample", None)
            if down is not None and hasattr(down, "norm"):
                c = int(down.conv.out_channels)
                down.norm = GroupNormAct(c, num_groups=c, eps=1e-5, apply_act=False)
    return model


@register_backbone("r50_hybrid")
def _r50_hybrid(
    name: str,
    *,
    pretrained: bool,
    weights: str | os.PathLike[str] | None,
    img_size: Any,
    out_index: int,
    cut: str | None,
    layers: Sequence[int] = (3, 4, 9),
    width_factor: float = 1.0,
) -> Backbone:
    if pretrained:
        raise ValueError(
            "r50_hybrid has no download: convert the ViT authors' R50+ViT-B_16.npz with "
            "python -m geo_retrieval.convert vit-r50-in21k and pass it with --init (or weights=)"
        )
    model = build_r50_hybrid_trunk(layers, width_factor)
    if weights is not None:
        model.load_state_dict(strip_prefixes(unwrap_state_dict(load_weights(weights))), strict=True)
    n = len(model.feature_info)
    if cut is not None:
        modules = [f["module"] for f in model.feature_info]
        if cut not in modules:
            raise ValueError(f"cut {cut!r} is not a feature level; choose from {modules}")
        out_index = modules.index(cut)
    if out_index % n != n - 1:
        raise ValueError("r50_hybrid returns its last stage; pass fewer layers for an earlier cut")
    return Backbone(model, n - 1, "features", name)
