"""Two-branch cross-view model: backbone + head per view, and the similarity between the views.

Convention: ``ground`` images are (Bg, 3, H, W) street panoramas (or FoV crops), ``aerial`` images
(Ba, 3, h, w) satellite tiles (raw or polar-transformed, a recipe choice). ``encode_*`` return the
heads' unit descriptors (B, D) (for ``similarity="dsm"``: unit feature maps (B, C, h', w')) and
``similarity(g, a)`` is (Bg, Ba) with row i = ground i, the layout the losses expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .backbones import Backbone, create_backbone
from .heads import create_head, dsm_similarity
from .losses import cosine_similarity_matrix

__all__ = ["CrossViewModel", "build_model"]


class CrossViewModel(nn.Module):
    """Ground and aerial encoders plus the matching function.

    Args:
        ground_backbone: (B, 3, H, W) -> (B, C, h, w).
        aerial_backbone: the aerial backbone, or ``None`` to share ``ground_backbone`` (one set of
            weights, Sample4Geo; the attribute then stays ``None`` and the weights are stored once,
            under ``ground_backbone.``).
        ground_head: ground feature map -> descriptor.
        aerial_head: aerial feature map -> descriptor, or ``None`` to share ``ground_head``.
        similarity: ``"cosine"`` (descriptor inner products) or ``"dsm"`` (DSM alignment of unit
            maps; :meth:`similarity` then returns the aligned similarity and
            :meth:`match` also the orientation shift).

    Example:
        >>> model = build_model(backbone="resnet34_layer3", head="gem", ground_size=(32, 64), aerial_size=(32, 32))
        >>> g, a = model(torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 32))
        >>> model.similarity(g, a).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        ground_backbone: nn.Module,
        aerial_backbone: nn.Module | None,
        ground_head: nn.Module,
        aerial_head: nn.Module | None = None,
        similarity: str = "cosine",
    ) -> None:
        super().__init__()
        if similarity not in ("cosine", "dsm"):
            raise ValueError(f"similarity must be 'cosine' or 'dsm', got {similarity!r}")
        self.ground_backbone = ground_backbone
        # a shared module is registered once (state-dict keys only under ground_*); the aerial
        # attribute is then None and the ground module is used for both views
        self.aerial_backbone = None if aerial_backbone is ground_backbone else aerial_backbone
        self.ground_head = ground_head
        self.aerial_head = None if aerial_head is ground_head else aerial_head
        self.similarity_kind = similarity

    @property
    def shared_backbone(self) -> bool:
        """True when one backbone encodes both views."""
        return self.aerial_backbone is None

    def encode_ground(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ground images -> (B, D) unit descriptors (DSM: unit maps)."""
        return self.ground_head(self.ground_backbone(x))

    def encode_aerial(self, x: Tensor) -> Tensor:
        """(B, 3, h, w) aerial images -> (B, D) unit descriptors (DSM: unit maps)."""
        backbone = self.ground_backbone if self.aerial_backbone is None else self.aerial_backbone
        head = self.ground_head if self.aerial_head is None else self.aerial_head
        return head(backbone(x))

    def similarity(self, ground_desc: Tensor, aerial_desc: Tensor) -> Tensor:
        """(Bg, ...) and (Ba, ...) descriptors -> (Bg, Ba) similarities (row = ground)."""
        if self.similarity_kind == "dsm":
            return dsm_similarity(ground_desc, aerial_desc).similarity
        return cosine_similarity_matrix(ground_desc, aerial_desc)

    def match(self, ground_desc: Tensor, aerial_desc: Tensor) -> tuple[Tensor, Tensor | None]:
        """(similarity (Bg, Ba), orientation shift (Bg, Ba) in aerial feature columns or None)."""
        if self.similarity_kind == "dsm":
            sim, shift = dsm_similarity(ground_desc, aerial_desc)
            return sim, shift
        return cosine_similarity_matrix(ground_desc, aerial_desc), None

    def forward(self, ground: Tensor, aerial: Tensor) -> tuple[Tensor, Tensor]:
        """Encode both views: returns (ground descriptors, aerial descriptors)."""
        return self.encode_ground(ground), self.encode_aerial(aerial)


def _feature_shape(backbone: nn.Module, size: tuple[int, int]) -> tuple[int, int, int]:
    """(C, h, w) of the backbone's map for an input of ``size``, from one dummy forward (eval, no grad)."""
    was_training = backbone.training
    backbone.eval()
    try:
        param = next(backbone.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, int(size[0]), int(size[1]), device=device, dtype=dtype))
    finally:
        backbone.train(was_training)
    if out.ndim != 4:
        raise ValueError(f"backbone must return (B, C, h, w), got {tuple(out.shape)}")
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


def build_model(
    backbone: str = "vgg16",
    head: str = "safa",
    *,
    shared: bool = False,
    ground_size: tuple[int, int] = (112, 616),
    aerial_size: tuple[int, int] = (112, 616),
    aerial_backbone: str | None = None,
    aerial_head: str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    aerial_backbone_kwargs: Mapping[str, Any] | None = None,
    aerial_head_kwargs: Mapping[str, Any] | None = None,
    similarity: str | None = None,
    **head_kwargs: Any,
) -> CrossViewModel:
    """Build a :class:`CrossViewModel` from registry names, sizing heads from real feature maps.

    Each backbone is created (``pretrained`` / ``weights`` / ``img_size`` etc. via
    ``backbone_kwargs``; ViTs get ``img_size`` = the view's size unless given), a dummy forward at
    the view's input size gives (C, h, w), and the head is created with ``in_channels=C`` and
    ``feature_size=(h, w)`` plus ``head_kwargs``.

    ``head="dsm"`` selects DSM: the aerial backbone and head wrap columns (circular W padding), the
    ground branch zero-pads, and ``similarity`` defaults to ``"dsm"``.

    Args:
        backbone: ground backbone name (and aerial unless ``aerial_backbone``).
        head: head name for both views (unless ``aerial_head``); heads are never shared.
        shared: one backbone for both views (needs the same name and kwargs).
        ground_size: (H, W) of ground inputs.
        aerial_size: (h, w) of aerial inputs.
        aerial_backbone, aerial_head: names for the aerial branch if different.
        backbone_kwargs: passed to :func:`create_backbone` for the ground (and, by default, aerial).
        aerial_backbone_kwargs: overrides for the aerial backbone.
        aerial_head_kwargs: overrides merged into ``head_kwargs`` for the aerial head.
        similarity: ``"cosine"`` or ``"dsm"`` (default from the head).
        **head_kwargs: head options (``num_heads``, ``pool``, ``flatten``, ``out_dim``, ...).
    """
    backbone_kwargs = dict(backbone_kwargs or {})
    aerial_bb_name = aerial_backbone or backbone
    aerial_bb_kwargs = {**backbone_kwargs, **dict(aerial_backbone_kwargs or {})}
    aerial_head_name = aerial_head or head
    is_dsm = head == "dsm"
    similarity = similarity or ("dsm" if is_dsm else "cosine")
    if shared and (aerial_bb_name != backbone or aerial_backbone_kwargs):
        raise ValueError("shared=True needs one backbone name and one set of kwargs for both views")
    if is_dsm and shared:
        raise ValueError(
            "DSM needs separate backbones (the aerial branch wraps columns, the ground one zero-pads)"
        )

    def make_backbone(name: str, kwargs: dict[str, Any], size: tuple[int, int]) -> Backbone:
        kwargs = dict(kwargs)
        if name.startswith(("vit_", "deit_", "r50_vit")) and kwargs.get("img_size") is None:
            kwargs["img_size"] = tuple(size)
        return create_backbone(name, **kwargs)

    ground_bb = make_backbone(backbone, backbone_kwargs, ground_size)
    if shared:
        if ground_bb.kind == "vit" and tuple(ground_size) != tuple(aerial_size):
            raise ValueError(
                f"a shared ViT backbone needs equal view sizes (one position embedding), got {ground_size} and {aerial_size}"
            )
        aerial_bb = None
    else:
        if is_dsm:
            aerial_bb_kwargs.setdefault("circular_w", True)
        aerial_bb = make_backbone(aerial_bb_name, aerial_bb_kwargs, aerial_size)

    gc, gh, gw = _feature_shape(ground_bb, ground_size)
    ac, ah, aw = _feature_shape(aerial_bb if aerial_bb is not None else ground_bb, aerial_size)
    g_head_kwargs = dict(head_kwargs)
    a_head_kwargs = {**head_kwargs, **dict(aerial_head_kwargs or {})}
    if is_dsm:
        g_head_kwargs.setdefault("circular", False)
    if aerial_head_name == "dsm":
        a_head_kwargs.setdefault("circular", True)
    ground_head = create_head(head, in_channels=gc, feature_size=(gh, gw), **g_head_kwargs)
    aerial_head_mod = create_head(aerial_head_name, in_channels=ac, feature_size=(ah, aw), **a_head_kwargs)
    return CrossViewModel(ground_bb, aerial_bb, ground_head, aerial_head_mod, similarity=similarity)
