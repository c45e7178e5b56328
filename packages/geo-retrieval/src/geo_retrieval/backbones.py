"""Named feature backbones built on timm: one registry, one factory.

Convention: every backbone maps images (B, 3, H, W) to a feature map (B, C, h, w). ``out_channels``
(C) and ``reduction`` (the stride H / h) are read from timm's ``feature_info`` of the layer taken,
never hard-coded; a structural change the registry makes (Toker's removed max-pool) updates them.
Vision transformers return their patch tokens reshaped row-major to (B, C, h, w); the class token
and the raw tokens are available through :meth:`Backbone.forward_tokens`.

Weights: ``pretrained=True`` asks timm for its default weights (network); ``weights=PATH`` loads a
local file (``.safetensors`` preferred, ``.pt``/``.pth``/``.bin`` through ``weights_only=True``)
through timm's pretrained route, so model-specific filters run (ViT position-embedding resampling to
a new ``img_size``) and the classifier is dropped; ``module.`` / ``_orig_mod.`` prefixes are
stripped and the load is strict: every backbone tensor must be present in the file.

Registry (:func:`list_backbones`):

- ``vgg16``: VGG-16 conv features (SAFA: the map after pool5, stride 32; ``out_index=3`` is conv4_3
  at stride 8 as DSM uses; ``ceil_mode=True`` reproduces TensorFlow ``SAME`` pooling, so a 112x616
  input gives 4x20 like SAFA).
- ``resnet34_layer3``: ResNet-34 stem + layer1-3 with the stem max-pool removed (Toker et al.):
  stride 8, 256 channels. Layer names equal torchvision's, so torchvision weights load.
- ``resnet34_nomaxpool``: the same trunk cut at ``cut`` (default ``layer4``: stride 16, 512 channels,
  GeoDTR's backbone).
- ``convnext_*``: any timm ConvNeXt; ``pool=True`` (default) returns timm's pooled, layer-normed
  embedding as a (B, C, 1, 1) map (Sample4Geo's descriptor); ``pool=False`` the last stage map.
  ``test_convnext*`` (timm's 0.2 M-parameter test ConvNeXts) build the same way (parity fixtures).
- ``vit_*``: any timm VisionTransformer (``img_size=(H, W)`` required for non-square inputs).
- ``deit_*``: any timm DeiT (``img_size=(H, W)`` as for ``vit_*``); with ``num_classes=D > 0`` it
  keeps timm's classifier and returns its logits as a (B, D, 1, 1) map (``kind="logits"``): for the
  distilled DeiTs the mean of ``head(cls)`` and ``head_dist(dist)``, TransGeo's descriptor. With
  ``num_classes=0`` (default) it returns the patch tokens as ``vit_*`` does. With ``num_classes=D`` and
  ``select_tokens=True`` it also takes (B, 4, H, W) inputs whose fourth channel is a keep-order channel
  (:mod:`geo_retrieval.token_crop`: TransGeo's stage-2 crop) and encodes only those patches.
- ``r50_vit``: the R50+ViT-B/16 hybrid ``vit_base_r50_s16_224`` (L2LTR); ``r50_vit_tiny``: the small
  hybrid ``vit_tiny_r_s16_p8_224`` for CPU runs.
- ``timm:<name>``: any other timm model with ``forward_intermediates`` (escape hatch).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import timm
import torch
from torch import Tensor, nn

from geo_transforms.registry import Registry

from .checkpoint import load_weights, strip_prefixes, unwrap_state_dict
from .heads.dsm import circular_w_padding_
from .token_crop import forward_kept_tokens, order_from_channel

__all__ = ["Backbone", "create_backbone", "list_backbones", "register_backbone"]

#: A timm model: an ``nn.Module`` plus timm's feature API (``feature_info``, ``forward_features``,
#: ``forward_intermediates``, ``prune_intermediate_layers``, ViT ``patch_embed``...), which neither
#: ``nn.Module``'s type nor timm's ``create_model`` (typed ``nn.Module``) declares.
TimmModel = Any


class Backbone(nn.Module):
    """A timm model cut at one feature level.

    Args:
        model: the timm model (classifier removed, layers after the taken one pruned).
        out_index: the ``feature_info`` index taken (non-negative).
        kind: ``"features"`` (CNN map), ``"vit"`` (tokens reshaped), ``"pooled"`` (timm's pooled
            embedding as a (B, C, 1, 1) map) or ``"logits"`` (timm's classifier output, (B, D, 1, 1)).
        name: the registry name it was created with.

    Attributes:
        out_channels: C of the output map.
        reduction: total stride of the taken level (H / h for sizes divisible by it).
        num_prefix_tokens: class/register tokens of a ViT (0 for CNNs).
    """

    def __init__(
        self, model: TimmModel, out_index: int, kind: str, name: str = "", *, select_tokens: bool = False
    ) -> None:
        super().__init__()
        if select_tokens and kind != "logits":
            raise ValueError(
                f"select_tokens needs a ViT with a classifier (kind 'logits'), got kind {kind!r}"
            )
        #: (B, 4, H, W) inputs carry a keep-order channel (:mod:`geo_retrieval.token_crop`)
        self.select_tokens = bool(select_tokens)
        if kind not in ("features", "vit", "pooled", "logits"):
            raise ValueError(f"kind must be 'features', 'vit', 'pooled' or 'logits', got {kind!r}")
        self.model: TimmModel = model
        self.out_index = out_index
        self.kind = kind
        self.name = name
        info = model.feature_info[out_index]
        self.out_channels: int = int(
            model.num_features
            if kind == "pooled"
            else model.num_classes
            if kind == "logits"
            else info["num_chs"]
        )
        self.reduction: int = int(info["reduction"])
        self.num_prefix_tokens: int = int(getattr(model, "num_prefix_tokens", 0)) if kind == "vit" else 0
        self._is_last = out_index == len(model.feature_info) - 1

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind}, out_channels={self.out_channels}, reduction={self.reduction}"

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"x must be (B, C, H, W), got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> feature map (B, C, h, w) ((B, C, 1, 1) for ``kind="pooled"`` / ``"logits"``).

        With ``select_tokens``, (B, 4, H, W): the image and a keep-order channel; only the kept patches
        are encoded (:func:`geo_retrieval.token_crop.forward_kept_tokens`).
        """
        self._check(x)
        if self.select_tokens and x.shape[1] == 4:
            patch = int(self.model.patch_embed.patch_size[0])
            order = order_from_channel(x[:, 3:], patch)
            return forward_kept_tokens(self.model, x[:, :3], order)[:, :, None, None]
        if self.kind in ("pooled", "logits"):
            feats = self.model.forward_features(x)
            out = self.model.forward_head(feats, pre_logits=self.kind == "pooled")
            if not isinstance(out, Tensor):  # a distilled DeiT in distilled training returns a pair
                raise TypeError(f"{self.name!r}'s classifier returned {type(out).__name__}, not a Tensor")
            return out[:, :, None, None]
        if self.kind == "vit":
            _, tokens, (h, w) = self.forward_tokens(x)
            return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        (out,) = self.model.forward_intermediates(x, indices=[self.out_index], intermediates_only=True)
        return out

    def forward_tokens(self, x: Tensor) -> tuple[Tensor | None, Tensor, tuple[int, int]]:
        """ViT only: images (B, 3, H, W) -> (cls (B, C) or None, patch tokens (B, h*w, C), (h, w)).

        Tokens are in row-major grid order; at the last level they are final-normed as timm's
        ``forward_features``.
        """
        self._check(x)
        if self.kind != "vit":
            raise TypeError(f"forward_tokens needs a ViT backbone, {self.name!r} is {self.kind!r}")
        h, w = (
            self.model.patch_embed.dynamic_feat_size((x.shape[-2], x.shape[-1]))
            if getattr(self.model, "dynamic_img_size", False)
            else self.model.patch_embed.grid_size
        )
        if self._is_last:
            tokens = self.model.forward_features(x)
            prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        else:
            (out,) = self.model.forward_intermediates(
                x,
                indices=[self.out_index],
                output_fmt="NLC",
                intermediates_only=True,
                return_prefix_tokens=True,
            )
            patches, prefix = out
        cls = prefix[:, 0] if prefix is not None and prefix.shape[1] > 0 else None
        return cls, patches, (int(h), int(w))


# ----------------------------------------------------------------------------------------------
# registry

_BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone", patterns=True)


def register_backbone(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator registering a builder ``fn(name, **kwargs) -> Backbone`` under ``name``.

    ``name`` may be an fnmatch pattern (``"convnext_*"``); exact names win over patterns. An
    existing name raises ``ValueError`` unless ``overwrite=True``.
    """
    return _BACKBONES.register(name, overwrite=overwrite)


def list_backbones(filter: str | None = None) -> list[str]:
    """Registered backbone names and patterns, sorted (only those matching the fnmatch ``filter``)."""
    return _BACKBONES.names(filter)


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    img_size: int | tuple[int, int] | None = None,
    out_index: int = -1,
    cut: str | None = None,
    **kwargs: Any,
) -> Backbone:
    """Create a registered backbone.

    Args:
        name: registry name (see :func:`list_backbones`).
        pretrained: load timm's default pretrained weights (needs the network or the HF cache).
        weights: local weight file; overwrites ``pretrained``. Strict: every tensor of the backbone
            must be in the file (pass ``strict=False`` to relax, e.g. for foreign layouts a timm
            filter renames).
        img_size: (H, W) for models whose parameters depend on it (ViT position embeddings);
            ignored by CNNs.
        out_index: ``feature_info`` index of the level returned (negative counts from the end).
        cut: alternative to ``out_index``: the timm module name of the last level kept
            (e.g. ``"layer3"``).
        **kwargs: builder options (``ceil_mode`` for vgg16, ``pool`` for convnext,
            ``frozen_stages``: freeze the levels before this index, ``circular_w``: wrap columns in
            every conv as DSM's aerial branch) and timm ``create_model`` keywords.

    Returns:
        A :class:`Backbone` mapping (B, 3, H, W) to (B, out_channels, h, w).

    Example:
        >>> bb = create_backbone("resnet34_layer3")
        >>> bb.out_channels, bb.reduction
        (256, 8)
        >>> bb(torch.zeros(1, 3, 32, 64)).shape
        torch.Size([1, 256, 4, 8])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    fn = _BACKBONES.get(name)
    circular_w = bool(kwargs.pop("circular_w", False))
    backbone = fn(
        name,
        pretrained=pretrained,
        weights=weights,
        img_size=img_size,
        out_index=out_index,
        cut=cut,
        **kwargs,
    )
    if circular_w:
        circular_w_padding_(backbone)
    return backbone


# ----------------------------------------------------------------------------------------------
# shared construction


def _timm_model(
    timm_name: str,
    *,
    pretrained: bool,
    weights: str | os.PathLike[str] | None,
    strict: bool = True,
    num_classes: int = 0,
    **timm_kwargs: Any,
) -> TimmModel:
    """A timm model without classifier (or with ``num_classes`` outputs); local weights go through timm's
    pretrained route."""
    overlay = None
    state_dict = None
    if weights is not None:
        state_dict = strip_prefixes(unwrap_state_dict(load_weights(weights)))
        overlay = {"state_dict": state_dict, "custom_load": False}
        pretrained = True
    try:
        model = timm.create_model(
            timm_name,
            pretrained=pretrained,
            pretrained_cfg_overlay=overlay,
            num_classes=num_classes,
            **timm_kwargs,
        )
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"timm has no model {timm_name!r}") from err
        raise
    if state_dict is not None and weights is not None and strict:
        # timm relaxes strictness when it drops the classifier (num_classes=0): check ourselves.
        missing = sorted(k for k in model.state_dict() if k not in state_dict)
        if missing:
            raise ValueError(
                f"weights file {os.fspath(weights)!r} lacks {len(missing)} tensors of {timm_name!r}, "
                f"e.g. {missing[:5]}; pass strict=False only for foreign layouts timm converts"
            )
    return model


def _resolve_index(model: TimmModel, out_index: int, cut: str | None) -> int:
    info = list(model.feature_info)
    if cut is not None:
        modules = [f["module"] for f in info]
        if cut not in modules:
            raise ValueError(f"cut {cut!r} is not a feature level; choose from {modules}")
        return modules.index(cut)
    n = len(info)
    if not -n <= out_index < n:
        raise ValueError(f"out_index must be in [{-n}, {n}), got {out_index}")
    return out_index % n


def _freeze(model: TimmModel, index: int, frozen_stages: int) -> None:
    """Freeze every parameter computed before feature level ``frozen_stages`` (exclusive end)."""
    if frozen_stages <= 0:
        return
    if frozen_stages > index + 1:
        raise ValueError(f"frozen_stages={frozen_stages} exceeds the {index + 1} levels kept")
    x_probe = torch.ones(1, 3, 64, 64)
    # parameters used to compute level frozen_stages-1 = those reached by a gradient from it
    # (probe in eval mode so batch-norm statistics are not touched)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    (out,) = model.forward_intermediates(x_probe, indices=[frozen_stages - 1], intermediates_only=True)
    out.sum().backward()
    model.train(was_training)
    for p in model.parameters():
        if p.grad is not None:
            p.requires_grad_(False)
        p.grad = None


def _cnn(
    name: str,
    timm_name: str,
    *,
    pretrained: bool,
    weights: Any,
    out_index: int,
    cut: str | None,
    frozen_stages: int = 0,
    strict: bool = True,
    **kwargs: Any,
) -> Backbone:
    model = _timm_model(timm_name, pretrained=pretrained, weights=weights, strict=strict, **kwargs)
    return _feature_level(model, name, out_index, cut, frozen_stages)


def _feature_level(
    model: TimmModel, name: str, out_index: int, cut: str | None, frozen_stages: int
) -> Backbone:
    """Keep a timm features model up to one level (pruning the rest), freeze its first stages, wrap it."""
    index = _resolve_index(model, out_index, cut)
    model.prune_intermediate_layers([index], prune_head=True)
    _freeze(model, index, frozen_stages)
    return Backbone(model, index, "features", name)


@register_backbone("vgg16")
def _vgg16(
    name: str,
    *,
    pretrained: bool,
    weights: Any,
    img_size: Any,
    out_index: int,
    cut: str | None,
    ceil_mode: bool = False,
    frozen_stages: int = 0,
    **kwargs: Any,
) -> Backbone:
    backbone = _cnn(
        name,
        "vgg16",
        pretrained=pretrained,
        weights=weights,
        out_index=out_index,
        cut=cut,
        frozen_stages=frozen_stages,
        **kwargs,
    )
    for m in backbone.modules():
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = ceil_mode
    return backbone


@register_backbone("resnet34_layer3")
def _resnet34_layer3(
    name: str,
    *,
    pretrained: bool,
    weights: Any,
    img_size: Any,
    out_index: int,
    cut: str | None,
    frozen_stages: int = 0,
    **kwargs: Any,
) -> Backbone:
    if out_index != -1 or cut not in (None, "layer3"):
        raise ValueError("resnet34_layer3 is fixed at layer3; use 'timm:resnet34' for other cuts")
    return _resnet34_without_maxpool(name, pretrained, weights, "layer3", frozen_stages, **kwargs)


def _resnet34_without_maxpool(
    name: str, pretrained: bool, weights: Any, cut: str, frozen_stages: int, **kwargs: Any
) -> Backbone:
    model = _timm_model("resnet34", pretrained=pretrained, weights=weights, **kwargs)
    # Toker et al. and GeoDTR drop the stem max-pool: every level after it has half the stride.
    model.maxpool = nn.Identity()
    for i, info in enumerate(model.feature_info):
        if i >= 1:  # level 0 is act1, before the pool
            info["reduction"] = info["reduction"] // 2
    return _feature_level(model, name, -1, cut, frozen_stages)


@register_backbone("resnet34_nomaxpool")
def _resnet34_nomaxpool(
    name: str,
    *,
    pretrained: bool,
    weights: Any,
    img_size: Any,
    out_index: int,
    cut: str | None,
    frozen_stages: int = 0,
    **kwargs: Any,
) -> Backbone:
    if out_index != -1:
        raise ValueError("resnet34_nomaxpool is cut by name: pass cut='layer1' ... 'layer4' (default layer4)")
    return _resnet34_without_maxpool(name, pretrained, weights, cut or "layer4", frozen_stages, **kwargs)


@register_backbone("convnext_*")
def _convnext(
    name: str,
    *,
    pretrained: bool,
    weights: Any,
    img_size: Any,
    out_index: int,
    cut: str | None,
    pool: bool = True,
    frozen_stages: int = 0,
    strict: bool = True,
    **kwargs: Any,
) -> Backbone:
    if pool:
        if out_index != -1 or cut is not None:
            raise ValueError("pool=True returns the pooled last level; pass pool=False to cut earlier")
        model = _timm_model(name, pretrained=pretrained, weights=weights, strict=strict, **kwargs)
        index = len(model.feature_info) - 1
        _freeze(model, index, frozen_stages)
        return Backbone(model, index, "pooled", name)
    return _cnn(
        name,
        name,
        pretrained=pretrained,
        weights=weights,
        out_index=out_index,
        cut=cut,
        frozen_stages=frozen_stages,
        strict=strict,
        **kwargs,
    )


register_backbone("test_convnext*")(_convnext)


def _vit(
    name: str,
    timm_name: str,
    *,
    pretrained: bool,
    weights: Any,
    img_size: Any,
    out_index: int,
    cut: str | None,
    strict: bool = True,
    num_classes: int = 0,
    select_tokens: bool = False,
    **kwargs: Any,
) -> Backbone:
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size) if not isinstance(img_size, int) else img_size
    model = _timm_model(
        timm_name, pretrained=pretrained, weights=weights, strict=strict, num_classes=num_classes, **kwargs
    )
    if not hasattr(model, "patch_embed") or not hasattr(model, "num_prefix_tokens"):
        raise ValueError(f"{timm_name!r} is not a timm VisionTransformer")
    if num_classes:
        if out_index not in (-1, len(model.feature_info) - 1) or cut is not None:
            raise ValueError(
                "num_classes > 0 returns the classifier's logits; pass num_classes=0 to cut earlier"
            )
        return Backbone(model, len(model.feature_info) - 1, "logits", name, select_tokens=select_tokens)
    if select_tokens:
        raise ValueError(
            "select_tokens needs num_classes > 0 (the classifier's logits, TransGeo's descriptor)"
        )
    index = _resolve_index(model, out_index, cut)
    if index != len(model.feature_info) - 1:
        model.prune_intermediate_layers([index], prune_norm=True, prune_head=True)
    return Backbone(model, index, "vit", name)


@register_backbone("vit_*")
def _vit_family(name: str, **kwargs: Any) -> Backbone:
    return _vit(name, name, **kwargs)


@register_backbone("deit_*")
def _deit_family(name: str, **kwargs: Any) -> Backbone:
    return _vit(name, name, **kwargs)


@register_backbone("r50_vit")
def _r50_vit(name: str, **kwargs: Any) -> Backbone:
    return _vit(name, "vit_base_r50_s16_224", **kwargs)


@register_backbone("r50_vit_tiny")
def _r50_vit_tiny(name: str, **kwargs: Any) -> Backbone:
    return _vit(name, "vit_tiny_r_s16_p8_224", **kwargs)


@register_backbone("timm:*")
def _timm_any(
    name: str,
    *,
    pretrained: bool,
    weights: Any,
    img_size: Any,
    out_index: int,
    cut: str | None,
    **kwargs: Any,
) -> Backbone:
    timm_name = name.split(":", 1)[1]
    if img_size is not None:
        kwargs["img_size"] = img_size
    return _cnn(
        name, timm_name, pretrained=pretrained, weights=weights, out_index=out_index, cut=cut, **kwargs
    )
