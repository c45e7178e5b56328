"""Orientation-aware matching of one ground descriptor against a dense map of aerial descriptors.

The functional core of CCVPE's localisation and orientation decoders (Xia et al., TPAMI 2023): the
ground descriptor of a panorama is a sequence of ``W'`` column descriptors (one per feature column,
each ``c`` long); every cell of the aerial map holds a descriptor of the same layout, describing the
panorama a north-centred camera would see there. Rotating the camera by one column is a cyclic
shift of the sequence, so the score of cell ``(y, x)`` at rotation ``k`` is the cosine similarity of
the ground descriptor with the cell descriptor rolled by ``k`` columns.

Convention:
    - Descriptor layout: a flat length ``D = W' * c``, column-major (index ``j * c + ch``), as CCVPE
      flattens its ``(W', c)`` ground descriptor; aerial maps are ``(B, D, h, w)`` in the same layout.
    - Rotation bins: bin ``k`` (``0 <= k < W'``) is the heading ``k * 360 / W'`` degrees, clockwise
      from north, of the panorama's centre column (the synthetic world's ``yaw``). A panorama at
      heading ``k * 360 / W'`` equals the north-centred one rolled by ``-k * W / W'`` columns, so its
      column descriptor ``j`` matches the north-centred cell descriptor ``j + k``:
      ``score[k] = cos(g, roll(a, -k columns))``; CCVPE's ``torch.roll(sat, -i*c)``, bin ``i``.
    - Scores are cosine similarities in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bin_headings", "heading_prior_mask", "rotation_scores"]


def rotation_scores(ground: Tensor, aerial: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine similarity of each ground descriptor with every aerial cell at every rotation.

    Args:
        ground: (B, W', c) ground column descriptors.
        aerial: (B, W' * c, h, w) aerial descriptor map, column-major channels.
        eps: floor on the norms (a zero descriptor scores 0, never NaN).

    Returns:
        (B, W', h, w): ``out[b, k, y, x] = cos(ground[b], roll(aerial[b, :, y, x], -k columns))``.
    """
    if ground.ndim != 3:
        raise ValueError(f"ground must be (B, W', c), got {tuple(ground.shape)}")
    b, cols, c = ground.shape
    if aerial.ndim != 4 or aerial.shape[0] != b or aerial.shape[1] != cols * c:
        raise ValueError(
            f"aerial must be (B, W' * c, h, w) = ({b}, {cols * c}, h, w) for ground {tuple(ground.shape)}, "
            f"got {tuple(aerial.shape)}"
        )
    h, w = aerial.shape[-2:]
    a = aerial.reshape(b, cols, c, h, w)
    # sum_j g[j] . a[j + k] = sum_m g[m - k] . a[m]: stack the ground rolled by k (a (W', W', c)
    # circulant per sample), one contraction for all rotations and cells
    idx = (torch.arange(cols).view(1, -1) - torch.arange(cols).view(-1, 1)) % cols  # [k, m] -> m - k
    circulant = ground[:, idx.to(ground.device)]  # (B, W'(k), W'(m), c)
    dots = torch.einsum("bkmc,bmchw->bkhw", circulant, a)
    g_norm = ground.flatten(1).norm(dim=1).clamp_min(eps).view(b, 1, 1, 1)
    a_norm = aerial.norm(dim=1, keepdim=True).clamp_min(eps)  # a roll keeps the norm
    return dots / (g_norm * a_norm)


def bin_headings(bins: int, device: torch.device | None = None) -> Tensor:
    """(bins,) float headings in degrees of the rotation bins: ``k * 360 / bins``."""
    return torch.arange(bins, device=device, dtype=torch.float32) * (360.0 / bins)


def heading_prior_mask(prior_deg: Tensor, range_deg: float, bins: int) -> Tensor:
    """Bins allowed by a heading prior: within ``range_deg`` of the prior (at least the nearest bin).

    Args:
        prior_deg: (B,) prior headings in degrees (clockwise from north).
        range_deg: half-width of the prior in degrees; 0 = orientation known (CCVPE's
            ``ori_noise``); 180 or more allows every bin (orientation unknown).
        bins: number of rotation bins.

    Returns:
        (B, bins) bool; every row has at least one ``True`` (the bin nearest the prior).
    """
    if prior_deg.ndim != 1:
        raise ValueError(f"prior_deg must be (B,), got {tuple(prior_deg.shape)}")
    if not range_deg >= 0:
        raise ValueError(f"range_deg must be >= 0 degrees, got {range_deg}")
    centres = bin_headings(bins, prior_deg.device)
    diff = (centres.view(1, -1) - prior_deg.float().view(-1, 1)).remainder(360.0)
    dist = torch.minimum(diff, 360.0 - diff)
    return dist <= max(float(range_deg), 180.0 / bins)
