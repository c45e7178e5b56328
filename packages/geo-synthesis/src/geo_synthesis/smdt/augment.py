"""SMDT's semantic keep / remove augmentation of ground panoramas (our design from the paper's description).

SMDT (``docs/methods.md#what-smdt-released``) uses the ground segmentation for two augmentation modes: **keep**
(only the trees, or only the road, survive on a **white** background, as in the paper's Fig. 2) and
**remove** (the sky is set to **black**). Probabilities
and where exactly the augmented panoramas enter training are *unverified*; we apply it to the
ground panoramas of the retrieval step (:class:`~geo_synthesis.smdt.model.SMDTModel`).

Convention:
    images (B, C, H, W) float; segmentations (B, H', W') int64 group indices (resized
    nearest-neighbour to (H, W) when they differ). Masked-out pixels get a fill value per mode (a
    float or one value per channel): ``keep_fill`` (white: 1.0 for [0, 1] images) for the keep
    modes and ``remove_fill`` (black: 0.0) for the remove mode; for normalised images pass the
    normalised values, ``(v - mean) / std`` (white 1.0 and black -1.0 for mean = std = 0.5). Per sample one mode is drawn from a seeded
    ``torch.Generator``: :data:`MODES` = ``("none", "keep_tree", "keep_road", "remove_sky")`` with
    probabilities ``(1 - p_keep_tree - p_keep_road - p_remove_sky, p_keep_tree, p_keep_road,
    p_remove_sky)``. Under the default grouping "tree" is the ``vegetation`` group (trees and
    grass); give a grouping with its own ``tree`` group for trees only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MODES", "SemanticAugment", "keep_classes", "remove_classes", "semantic_augment"]

MODES: tuple[str, ...] = ("none", "keep_tree", "keep_road", "remove_sky")


def _labels_like(seg: Tensor, image: Tensor) -> Tensor:
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    if seg.ndim != 3 or seg.shape[0] != image.shape[0]:
        raise ValueError(f"seg must be (B, H, W) with B = {image.shape[0]}, got {tuple(seg.shape)}")
    if seg.is_floating_point():
        raise TypeError(f"seg must hold integer class indices, got {seg.dtype}")
    if tuple(seg.shape[-2:]) != tuple(image.shape[-2:]):
        seg = F.interpolate(seg[:, None].float(), size=image.shape[-2:], mode="nearest-exact")[:, 0]
    return seg.long().to(image.device)


def _fill_tensor(fill: float | Sequence[float], image: Tensor) -> Tensor:
    value = torch.as_tensor(fill, dtype=image.dtype, device=image.device)
    if value.ndim == 0:
        return value
    if value.shape != (image.shape[1],):
        raise ValueError(f"fill must be a float or {image.shape[1]} values, got {tuple(value.shape)}")
    return value.view(1, -1, 1, 1)


def _member(seg: Tensor, classes: Sequence[int]) -> Tensor:
    wanted = torch.as_tensor(list(classes), dtype=torch.long, device=seg.device)
    return torch.isin(seg, wanted)


def keep_classes(
    image: Tensor, seg: Tensor, classes: Sequence[int], fill: float | Sequence[float] = 0.0
) -> Tensor:
    """Keep only the pixels whose label is in ``classes``; the rest become ``fill``.

    Args:
        image: (B, C, H, W).
        seg: (B, H', W') integer labels.
        classes: label indices to keep.
        fill: value of removed pixels (float or C values).

    Returns:
        (B, C, H, W).

    Example:
        >>> keep_classes(torch.ones(1, 1, 1, 3), torch.tensor([[[0, 1, 2]]]), [1]).flatten().tolist()
        [0.0, 1.0, 0.0]
    """
    keep = _member(_labels_like(seg, image), classes)[:, None]
    return torch.where(keep, image, _fill_tensor(fill, image))


def remove_classes(
    image: Tensor, seg: Tensor, classes: Sequence[int], fill: float | Sequence[float] = 0.0
) -> Tensor:
    """Set the pixels whose label is in ``classes`` to ``fill`` (shapes as :func:`keep_classes`).

    Example:
        >>> remove_classes(torch.ones(1, 1, 1, 3), torch.tensor([[[0, 1, 2]]]), [0]).flatten().tolist()
        [0.0, 1.0, 1.0]
    """
    drop = _member(_labels_like(seg, image), classes)[:, None]
    return torch.where(drop, _fill_tensor(fill, image), image)


@dataclass(frozen=True)
class SemanticAugment:
    """Probabilities and class indices of the keep / remove augmentation (see module docstring).

    Attributes:
        p_keep_tree, p_keep_road, p_remove_sky: per-sample probabilities of the three modes (sum
            <= 1; the rest is "none").
        tree, road, sky: group indices of the tree (vegetation), road and sky masks.
        keep_fill: value of the pixels a keep mode blanks (white; the normalised white for
            normalised images), as the paper's Fig. 2 shows.
        remove_fill: value of the removed sky (black; the normalised black for normalised images).
    """

    p_keep_tree: float = 0.0
    p_keep_road: float = 0.0
    p_remove_sky: float = 0.0
    tree: tuple[int, ...] = (2,)
    road: tuple[int, ...] = (1,)
    sky: tuple[int, ...] = (0,)
    keep_fill: float | tuple[float, ...] = 1.0
    remove_fill: float | tuple[float, ...] = 0.0

    def __post_init__(self) -> None:
        probs = (self.p_keep_tree, self.p_keep_road, self.p_remove_sky)
        if any(p < 0 for p in probs) or sum(probs) > 1 + 1e-9:
            raise ValueError(f"mode probabilities must be >= 0 with sum <= 1, got {probs}")
        for name in ("tree", "road", "sky"):
            object.__setattr__(self, name, tuple(int(i) for i in getattr(self, name)))

    @property
    def enabled(self) -> bool:
        return self.p_keep_tree + self.p_keep_road + self.p_remove_sky > 0

    def __call__(
        self, image: Tensor, seg: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return semantic_augment(image, seg, self, generator=generator)


def semantic_augment(
    image: Tensor,
    seg: Tensor,
    config: SemanticAugment,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw one mode per sample and apply it (keep tree / keep road / remove sky / none).

    Args:
        image: (B, C, H, W) panoramas.
        seg: (B, H', W') group labels of the panoramas.
        config: probabilities, class indices and the two fills.
        generator: CPU generator for the draws (seed it for reproducible augmentation).

    Returns:
        ``(augmented (B, C, H, W), modes (B,) int64 indices into MODES)``.

    Example:
        >>> img, seg = torch.ones(2, 3, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long)  # all sky
        >>> out, modes = semantic_augment(img, seg, SemanticAugment(p_remove_sky=1.0))
        >>> modes.tolist(), float(out.abs().sum())
        ([3, 3], 0.0)
    """
    labels = _labels_like(seg, image)
    b = image.shape[0]
    u = torch.rand(b, generator=generator)
    edges = torch.tensor([config.p_keep_tree, config.p_keep_road, config.p_remove_sky]).cumsum(0)
    # mode k >= 1 when u falls in the k-th probability interval; u beyond the last edge is "none"
    modes = torch.where(
        u < edges[-1], torch.bucketize(u, edges, right=True) + 1, torch.zeros_like(u, dtype=torch.long)
    )
    modes = modes.to(image.device)
    tree, road, sky = (_member(labels, c)[:, None] for c in (config.tree, config.road, config.sky))
    m = modes.view(b, 1, 1, 1)
    kept_out = ((m == 1) & ~tree) | ((m == 2) & ~road)  # keep modes: everything else goes white
    removed = (m == 3) & sky  # remove mode: the sky goes black
    out = torch.where(kept_out, _fill_tensor(config.keep_fill, image), image)
    return torch.where(removed, _fill_tensor(config.remove_fill, image), out), modes
