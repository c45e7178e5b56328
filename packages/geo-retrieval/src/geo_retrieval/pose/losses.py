"""CCVPE's training targets and loss (Xia et al., TPAMI 2023; tudelft-iv/CCVPE ``losses.py``).

Convention:
    - Camera positions are ``(row, col)`` continuous pixel coordinates in the aerial image as the
      model sees it: pixel centres at integers, row down (south), col right (east); the tile centre
      is ``((S - 1) / 2, (S - 1) / 2)``.
    - Headings are degrees clockwise from north of the panorama's centre column; rotation bin ``k``
      is ``k * 360 / R`` (:mod:`geo_retrieval.pose.matching`).
    - The position target is an unnormalised Gaussian of the pixel distance to the camera
      (``exp(-d^2 / (2 sigma^2))``, peak 1), CCVPE's "Gaussian GT"; the orientation-bin target splits
      it linearly between the two bins around the true heading, and each matching level sees it
      max-pooled to its resolution.
    - Loss = cross-entropy of the softmax over the heatmap against the normalised position target
      + ``weight_infonce`` * mean over levels of the weighted InfoNCE of the rotation scores
      (temperature 0.1; cells with a target above 1e-2 are positives, weighted by it)
      + ``weight_orientation`` * the Gaussian-weighted squared error of the (cos, sin) field;
      CCVPE's weights are 1e4 and 1e1. Every term is a batch mean as upstream computes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ccvpe_loss",
    "gaussian_position_target",
    "orientation_bin_weights",
    "orientation_field_loss",
    "position_cross_entropy",
    "weighted_infonce",
]


def gaussian_position_target(camera_px: Tensor, size: tuple[int, int], sigma_px: float) -> Tensor:
    """(B, 1, H, W) Gaussian of the distance of every pixel to the camera, peak 1 at the camera.

    Args:
        camera_px: (B, 2) camera (row, col) in pixels of an (H, W) image.
        size: (H, W).
        sigma_px: standard deviation in pixels (CCVPE: 4 at 512 px).
    """
    if camera_px.ndim != 2 or camera_px.shape[1] != 2:
        raise ValueError(f"camera_px must be (B, 2) (row, col), got {tuple(camera_px.shape)}")
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    h, w = size
    rows = torch.arange(h, device=camera_px.device, dtype=torch.float32)
    cols = torch.arange(w, device=camera_px.device, dtype=torch.float32)
    cam = camera_px.float()
    dr = (rows.view(1, h, 1) - cam[:, 0].view(-1, 1, 1)) ** 2
    dc = (cols.view(1, 1, w) - cam[:, 1].view(-1, 1, 1)) ** 2
    return torch.exp(-(dr + dc) / (2 * sigma_px**2)).unsqueeze(1)


def orientation_bin_weights(heading_deg: Tensor, bins: int) -> Tensor:
    """(B, bins) linear split of each heading between its two neighbouring bins (rows sum to 1)."""
    if heading_deg.ndim != 1:
        raise ValueError(f"heading_deg must be (B,), got {tuple(heading_deg.shape)}")
    pos = heading_deg.double().remainder(360.0) / (360.0 / bins)
    lo = pos.floor()
    frac = (pos - lo).float()
    lo_i = lo.long() % bins
    out = torch.zeros(heading_deg.shape[0], bins, device=heading_deg.device)
    out.scatter_add_(1, lo_i.view(-1, 1), (1 - frac).view(-1, 1))
    out.scatter_add_(1, ((lo_i + 1) % bins).view(-1, 1), frac.view(-1, 1))
    return out


def position_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of the softmax over all pixels against the normalised target (batch mean).

    Args:
        logits: (B, H * W) or (B, 1, H, W).
        target: same number of elements per sample, non-negative (normalised here).
    """
    lg = logits.flatten(1).float()
    t = target.flatten(1).float()
    t = t / t.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return -(t * F.log_softmax(lg, dim=1)).sum() / lg.shape[0]


def weighted_infonce(
    scores: Tensor, labels: Tensor, temperature: float = 0.1, threshold: float = 1e-2
) -> Tensor:
    """CCVPE's InfoNCE over one level's rotation scores, positives weighted by their target.

    ``-sum_pos w * log softmax(scores / T)_pos / sum_pos w`` over the whole batch, where the softmax
    runs over every (bin, cell) of a sample and the positives are the entries with ``labels >
    threshold``.

    Args:
        scores: (B, R, h, w) cosine scores.
        labels: (B, R, h, w) targets in [0, 1].
    """
    s = scores.flatten(1).float() / temperature
    lab = labels.flatten(1).float()
    logp = F.log_softmax(s, dim=1)
    pos = lab > threshold
    w = torch.where(pos, lab, torch.zeros_like(lab))
    return -(logp * w).sum() / w.sum().clamp_min(1e-12)


def orientation_field_loss(field: Tensor, heading_deg: Tensor, weight: Tensor) -> Tensor:
    """Squared error of the predicted (cos, sin) field, weighted by the position target (batch mean).

    Args:
        field: (B, 2, H, W) predicted unit vectors (cos h, sin h).
        heading_deg: (B,) true headings.
        weight: (B, 1, H, W) position target.
    """
    rad = heading_deg.float() * (math.pi / 180.0)
    truth = torch.stack([rad.cos(), rad.sin()], dim=1).view(-1, 2, 1, 1)
    return (((truth - field.float()) ** 2).sum(dim=1, keepdim=True) * weight).sum() / field.shape[0]


def ccvpe_loss(
    logits: Tensor,
    scores: Sequence[Tensor],
    field: Tensor,
    camera_px: Tensor,
    heading_deg: Tensor,
    *,
    sigma_px: float,
    weight_infonce: float = 1e4,
    weight_orientation: float = 1e1,
    temperature: float = 0.1,
) -> dict[str, Tensor]:
    """CCVPE's total loss and its parts.

    Args:
        logits: (B, 1, S, S) heatmap logits at the aerial input resolution.
        scores: per matching level, (B, R, h_l, w_l) rotation scores (coarse to fine); each ``S / h_l``
            must be an integer (the target is max-pooled by it).
        field: (B, 2, S, S) orientation field.
        camera_px: (B, 2) true camera (row, col) in the S x S image.
        heading_deg: (B,) true headings.
        sigma_px: the Gaussian target's sigma in pixels.

    Returns:
        ``{"loss", "ce", "infonce", "orientation"}`` (scalars; ``loss`` is the weighted sum).
    """
    size = (logits.shape[-2], logits.shape[-1])
    gauss = gaussian_position_target(camera_px, size, sigma_px)
    ce = position_cross_entropy(logits, gauss)
    bins = scores[0].shape[1]
    with_ori = gauss * orientation_bin_weights(heading_deg, bins).view(-1, bins, 1, 1)
    nce = []
    for s in scores:
        k = size[0] // s.shape[-2]
        if k * s.shape[-2] != size[0] or size[1] // s.shape[-1] != k:
            raise ValueError(f"a matching level of {tuple(s.shape[-2:])} does not divide the {size} heatmap")
        nce.append(weighted_infonce(s, F.max_pool2d(with_ori, k, k), temperature))
    infonce = torch.stack(nce).mean()
    ori = orientation_field_loss(field, heading_deg, gauss)
    loss = ce + weight_infonce * infonce + weight_orientation * ori
    return {"loss": loss, "ce": ce.detach(), "infonce": infonce.detach(), "orientation": ori.detach()}
