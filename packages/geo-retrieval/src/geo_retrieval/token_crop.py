"""TransGeo's attention-guided non-uniform crop (stage 2): encode only the aerial patches a stage-1
attention map ranks highest.

Convention:
    - TransGeo (Zhu, Shah, Chen, CVPR'22, ``Jeff-Zilence/TransGeo2022``, ``model/Deit.py``
      ``forward_features_crop``) evaluates a stage-2 (``--crop --sat_res S``) aerial branch on
      ``int(keep_rate * N)`` of its N = (S / 16)^2 patch tokens, ``keep_rate`` 0.64 (``crop_rate``,
      hard-coded): the attention map (B, C, h, w) (channel 0 used; upstream's PNG of the stage-1 ``scan``
      read with ``ToTensor``, values in [0, 1]) is resized to the patch grid with
      ``F.interpolate(mode="bilinear")`` (``align_corners=False``), flattened row-major, sorted ascending
      with ``torch.argsort`` (upstream's call, on the CPU where its data loader left the map) and the
      **last** ``int(keep_rate * N)`` indices are kept, in that order (:func:`attention_keep_order`).
    - The kept tokens are the patch embeddings of those patches with their own position embeddings;
      the cls and dist tokens (and theirs) go first; then the blocks, the final norm and the heads as in
      a full forward (:func:`forward_kept_tokens`).
    - A model input carries the selection as a fourth image channel, the **keep-order channel**
      (:func:`keep_order_channel`): on every pixel of a kept patch, 1 + its position in the kept order
      (1 ... k, exact in float32); 0 on dropped patches. So a (B, 4, H, W) aerial batch holds both the
      normalised image and the crop, and the evaluation loop passes one tensor per view; a
      :class:`~geo_retrieval.backbones.Backbone` built with ``select_tokens=True`` reads it back
      (:func:`order_from_channel`). A (B, 3, H, W) input encodes every patch.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "KEEP_RATE",
    "attention_keep_order",
    "forward_kept_tokens",
    "keep_order_channel",
    "order_from_channel",
]

#: TransGeo's ``crop_rate`` (``model/Deit.py``: "keep rate: 0.53 352, 0.64 320, 0.79 288")
KEEP_RATE = 0.64


def _kept(n: int, keep_rate: float) -> int:
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    k = int(keep_rate * n)  # upstream's int(self.crop_rate * order.shape[1])
    if k < 1:
        raise ValueError(f"keep_rate {keep_rate} keeps no token of {n}")
    return k


def attention_keep_order(attention: Tensor, grid: tuple[int, int], keep_rate: float = KEEP_RATE) -> Tensor:
    """The patch indices TransGeo keeps, in its order: (B, k) int64, k = ``int(keep_rate * gh * gw)``.

    Args:
        attention: (B, C, h, w) float attention maps (channel 0 is used), e.g. upstream's PNG / 255.
        grid: (gh, gw) patch grid of the aerial input (its size / 16).
        keep_rate: the share of tokens kept (upstream: 0.64).

    Run it on the CPU to reproduce upstream's order where scores tie (``torch.argsort`` is not stable).
    """
    if not isinstance(attention, Tensor) or not attention.is_floating_point():
        raise TypeError("attention must be a floating Tensor")
    if attention.ndim != 4:
        raise ValueError(f"attention must be (B, C, h, w), got {tuple(attention.shape)}")
    gh, gw = (int(v) for v in grid)
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be positive, got {tuple(grid)}")
    b = attention.shape[0]
    resized = F.interpolate(attention, (gh, gw), mode="bilinear")
    order = torch.argsort(resized[:, 0, :, :].reshape([b, -1]), dim=1)
    return order[:, -_kept(gh * gw, keep_rate) :]


def keep_order_channel(order: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """(B, k) kept patch indices -> (B, 1, gh * patch, gw * patch) float32 keep-order channel (module Convention)."""
    if order.ndim != 2:
        raise ValueError(f"order must be (B, k), got {tuple(order.shape)}")
    gh, gw = (int(v) for v in grid)
    b, k = order.shape
    if k > gh * gw or (k and (int(order.min()) < 0 or int(order.max()) >= gh * gw)):
        raise ValueError(
            f"order must hold at most {gh * gw} indices in [0, {gh * gw}), got {tuple(order.shape)}"
        )
    flat = torch.zeros(b, gh * gw, dtype=torch.float32, device=order.device)
    ranks = torch.arange(1, k + 1, dtype=torch.float32, device=order.device).expand(b, k)
    flat.scatter_(1, order.long(), ranks)
    if int((flat > 0).sum(1).min()) != k:
        raise ValueError("order repeats a patch index")
    grid_map = flat.view(b, 1, gh, gw)
    return grid_map.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def order_from_channel(channel: Tensor, patch: int) -> Tensor:
    """(B, 1, H, W) keep-order channel -> (B, k) kept patch indices in their order (every image keeps k).

    Raises:
        ValueError: images keeping different numbers of patches, or ranks that are not 1 ... k.
    """
    if channel.ndim != 4 or channel.shape[1] != 1:
        raise ValueError(f"channel must be (B, 1, H, W), got {tuple(channel.shape)}")
    ranks = channel[:, 0, ::patch, ::patch].reshape(channel.shape[0], -1)  # each patch's top-left pixel
    kept = ranks > 0
    counts = kept.sum(1)
    k = int(counts[0]) if counts.numel() else 0
    if k == 0 or bool((counts != k).any()):
        raise ValueError(f"every image must keep the same number (> 0) of patches, got {counts.tolist()}")
    # ranks 1..k sort first when dropped patches are pushed past them
    key = torch.where(kept, ranks, torch.full_like(ranks, float("inf")))
    order = torch.argsort(key, dim=1, stable=True)[:, :k]
    expected = torch.arange(1, k + 1, dtype=ranks.dtype, device=ranks.device).expand(ranks.shape[0], k)
    if not torch.equal(ranks.gather(1, order), expected):
        raise ValueError("the keep-order channel must hold the ranks 1 ... k on the kept patches")
    return order


def forward_kept_tokens(model: Any, x: Tensor, order: Tensor) -> Tensor:
    """A timm (distilled) ViT's classifier output on the patches ``order`` only (module Convention).

    Args:
        model: a timm ``VisionTransformer`` / ``VisionTransformerDistilled`` whose position embedding
            holds the prefix tokens first (``no_embed_class`` False) and the full patch grid.
        x: (B, 3, H, W) images at the model's input size.
        order: (B, k) int64 patch indices (row-major), kept in this order.

    Returns:
        (B, D) ``forward_head`` of the final-normed tokens (distilled DeiT: mean of the two heads).
    """
    if getattr(model, "no_embed_class", False) or getattr(model, "dynamic_img_size", False):
        raise ValueError("token selection needs a ViT whose position embedding includes the prefix tokens")
    tokens = model.patch_embed(x)  # (B, N, C)
    b, n, c = tokens.shape
    if order.ndim != 2 or order.shape[0] != b:
        raise ValueError(f"order must be (B={b}, k), got {tuple(order.shape)}")
    prefix = int(model.num_prefix_tokens)
    pos = model.pos_embed
    if pos.shape[1] != n + prefix:
        raise ValueError(f"pos_embed holds {pos.shape[1]} tokens, the input gives {n} patches + {prefix}")
    index = order.to(device=tokens.device, dtype=torch.long)
    kept = tokens.gather(1, index[..., None].expand(-1, -1, c))
    kept_pos = pos[:, prefix:].expand(b, -1, -1).gather(1, index[..., None].expand(-1, -1, c))
    extra = [model.cls_token.expand(b, -1, -1)]
    if getattr(model, "dist_token", None) is not None:
        extra.append(model.dist_token.expand(b, -1, -1))
    h = torch.cat([*extra, kept], dim=1)
    h = h + torch.cat([pos[:, :prefix].expand(b, -1, -1), kept_pos], dim=1)
    h = model.pos_drop(h)
    h = model.patch_drop(h)
    h = model.norm_pre(h)
    h = model.blocks(h)
    h = model.norm(h)
    out = model.forward_head(h)
    if not isinstance(out, Tensor):
        raise TypeError(f"forward_head returned {type(out).__name__}, not a Tensor")
    return out
