"""Metric-learning losses on a (B, B) similarity matrix.

Convention: ``similarity[i, j]`` compares ground (street) query i with aerial reference j; the
diagonal holds the positive pairs, every off-diagonal entry is an in-batch negative. Losses take
the similarity matrix, not descriptors, so cosine similarity (:func:`cosine_similarity_matrix`)
and DSM's aligned similarity share one loss. For unit descriptors the distance is
``d = 2 - 2 * s``.

Under DDP, gather the (L2-normalised) descriptors of all ranks with
:func:`geo_retrieval.distributed.all_gather_with_grad` first and pass the global (B*W, B*W)
matrix; no rescaling is needed when the model is wrapped in DDP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geo_transforms.registry import Registry

__all__ = [
    "InfoNCELoss",
    "SoftMarginTripletLoss",
    "cosine_similarity_matrix",
    "create_loss",
    "list_losses",
    "register_loss",
]

_log = logging.getLogger(__name__)


def cosine_similarity_matrix(query: Tensor, reference: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine similarities of every query with every reference: (Nq, D), (Nr, D) -> (Nq, Nr).

    Both inputs are L2-normalised here (a no-op for unit descriptors).
    """
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"query and reference must be (Nq, D) and (Nr, D), got {tuple(query.shape)} and {tuple(reference.shape)}"
        )
    return F.normalize(query, dim=1, eps=eps) @ F.normalize(reference, dim=1, eps=eps).T


def _check_square(similarity: Tensor) -> int:
    if not isinstance(similarity, Tensor):
        raise TypeError(f"similarity must be a Tensor, got {type(similarity).__name__}")
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(
            f"similarity must be (B, B) with positives on the diagonal, got {tuple(similarity.shape)}"
        )
    b = similarity.shape[0]
    if b < 2:
        raise ValueError(
            f"in-batch losses need a batch size B >= 2 (there are no negatives otherwise), got B = {b}"
        )
    return b


class SoftMarginTripletLoss(nn.Module):
    """Weighted soft-margin triplet loss, exhaustive in-batch, both directions (CVM-Net lineage).

    With d = 2 - 2 s:
    - g2s (ground anchor i, aerial negative j != i): softplus(alpha * (d[i, i] - d[i, j]));
    - s2g (aerial anchor j, ground negative i != j): softplus(alpha * (d[j, j] - d[i, j]));
    - L = (mean of valid g2s terms + mean of valid s2g terms) / 2.

    The diagonal is excluded by a boolean mask and each mean divides by the number of valid terms
    (the public SAFA/DSM/Toker code adds B constant log 2 terms and divides by B(B-1)). With
    ``utm`` given, pairs closer than ``min_distance_m`` (CVACT: 25 m) are excluded too, instead of
    contributing log 2. With a hard-negative ratio r, each direction keeps only its
    ``k = ceil(r * count)`` largest valid terms (Toker's mining, on the flattened matrix).
    A direction left with no valid term contributes 0 (logged).

    Args:
        alpha: weight, 10 (equals the cosine form with 2 * alpha = 20).
        hard_negative_ratio: fixed ratio in (0, 1], or None for all terms.
        schedule: alternatively, ``[(start_epoch, ratio), ...]`` sorted by start epoch (ratio None
            = all terms); :meth:`set_epoch` picks the last entry with ``start_epoch <= epoch``.
            Toker: ``[(0, None), (21, 0.1), (41, 0.05), (61, 0.01)]`` (0-indexed epochs).
        min_distance_m: geo-mask radius for ``utm`` (metres, strict ``<`` excludes).

    Shapes: similarity (B, B), optional utm (B, 2) easting/northing in metres -> scalar.

    Example:
        >>> loss = SoftMarginTripletLoss()
        >>> s = torch.eye(4) * 0.9
        >>> float(loss(s)) < float(loss(torch.zeros(4, 4)))
        True
    """

    def __init__(
        self,
        alpha: float = 10.0,
        hard_negative_ratio: float | None = None,
        schedule: Sequence[tuple[int, float | None]] | None = None,
        min_distance_m: float = 25.0,
    ) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if hard_negative_ratio is not None and schedule is not None:
            raise ValueError("give either hard_negative_ratio or schedule, not both")
        _check_ratio(hard_negative_ratio)
        self.schedule: tuple[tuple[int, float | None], ...] = ()
        if schedule is not None:
            entries = tuple((int(e), r) for e, r in schedule)
            if not entries:
                raise ValueError("schedule must not be empty")
            starts = [e for e, _ in entries]
            if starts != sorted(starts) or len(set(starts)) != len(starts):
                raise ValueError(f"schedule start epochs must be strictly increasing, got {starts}")
            for _, r in entries:
                _check_ratio(r)
            self.schedule = entries
        if min_distance_m < 0:
            raise ValueError(f"min_distance_m must be >= 0, got {min_distance_m}")
        self.alpha = float(alpha)
        self.min_distance_m = float(min_distance_m)
        self.hard_negative_ratio = hard_negative_ratio
        self.epoch = 0
        if self.schedule:
            self.set_epoch(0)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, hard_negative_ratio={self.hard_negative_ratio}, schedule={list(self.schedule)}, "
            f"min_distance_m={self.min_distance_m}"
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the mining ratio for (0-indexed) ``epoch`` from the schedule (no-op without one)."""
        self.epoch = int(epoch)
        if not self.schedule:
            return
        ratio = None
        for start, r in self.schedule:
            if start <= self.epoch:
                ratio = r
        self.hard_negative_ratio = ratio

    def valid_mask(self, b: int, device: torch.device, utm: Tensor | None = None) -> Tensor:
        """(B, B) bool: off-diagonal pairs at least ``min_distance_m`` apart (if ``utm`` given)."""
        valid = ~torch.eye(b, dtype=torch.bool, device=device)
        if utm is not None:
            if not isinstance(utm, Tensor):
                raise TypeError(f"utm must be a Tensor, got {type(utm).__name__}")
            if utm.shape != (b, 2):
                raise ValueError(f"utm must be (B, 2) = ({b}, 2), got {tuple(utm.shape)}")
            coords = utm.to(device=device, dtype=torch.float64)
            dist = torch.cdist(coords, coords)
            valid &= dist >= self.min_distance_m
        return valid

    def forward(self, similarity: Tensor, utm: Tensor | None = None) -> Tensor:
        b = _check_square(similarity)
        valid = self.valid_mask(b, similarity.device, utm)
        pos = similarity.diagonal()
        # d_pos - d_neg = 2 (s_neg - s_pos)
        g2s = F.softplus(2.0 * self.alpha * (similarity - pos[:, None]))  # row i: ground anchor i
        s2g = F.softplus(2.0 * self.alpha * (similarity - pos[None, :]))  # column j: aerial anchor j
        return 0.5 * (self._reduce(g2s, valid, "g2s") + self._reduce(s2g, valid, "s2g"))

    def _reduce(self, terms: Tensor, valid: Tensor, direction: str) -> Tensor:
        values = terms[valid]
        count = values.numel()
        if count == 0:
            _log.warning(
                "soft-margin triplet: no valid %s pair in the batch (all masked); term is 0", direction
            )
            return terms.sum() * 0.0
        ratio = self.hard_negative_ratio
        if ratio is not None and ratio < 1.0:
            k = max(1, math.ceil(ratio * count))
            values = values.topk(k).values
        return values.mean()


def _check_ratio(ratio: float | None) -> None:
    if ratio is not None and not 0.0 < ratio <= 1.0:
        raise ValueError(f"hard-negative ratio must be in (0, 1] or None, got {ratio}")


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE (CLIP / Sample4Geo) with a learnable temperature.

    ``logits = exp(logit_scale) * similarity``; L = (CE(logits, arange B) + CE(logits^T, arange B)) / 2
    with label smoothing. ``similarity`` should be the cosine matrix of L2-normalised descriptors
    (:func:`cosine_similarity_matrix` normalises). ``logit_scale`` is a parameter of this module:
    give ``loss.parameters()`` to the optimiser.

    Args:
        logit_scale_init: initial log-temperature, ln(1 / 0.07).
        label_smoothing: 0.1 (Sample4Geo).
        learnable: make ``logit_scale`` a parameter (else a buffer).
        max_logit_scale: optional clamp of ``logit_scale`` in the forward (CLIP uses ln 100).

    Shapes: similarity (B, B) -> scalar.
    """

    def __init__(
        self,
        logit_scale_init: float = math.log(1 / 0.07),
        label_smoothing: float = 0.1,
        learnable: bool = True,
        max_logit_scale: float | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        init = torch.tensor(float(logit_scale_init))
        if learnable:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        self.label_smoothing = float(label_smoothing)
        self.max_logit_scale = max_logit_scale

    def forward(self, similarity: Tensor) -> Tensor:
        b = _check_square(similarity)
        scale: Tensor = self.logit_scale
        if self.max_logit_scale is not None:
            scale = scale.clamp(max=self.max_logit_scale)
        logits = scale.exp().to(similarity.dtype) * similarity
        labels = torch.arange(b, device=similarity.device)
        return 0.5 * (
            F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            + F.cross_entropy(logits.T, labels, label_smoothing=self.label_smoothing)
        )


_LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")
_LOSSES.register("soft_margin_triplet", SoftMarginTripletLoss)
_LOSSES.register("infonce", InfoNCELoss)


def register_loss(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a loss class or builder under ``name``; an existing name raises
    ``ValueError`` unless ``overwrite=True``."""
    return _LOSSES.register(name, overwrite=overwrite)


def list_losses(filter: str | None = None) -> list[str]:
    """Registered loss names, sorted (only those matching the fnmatch ``filter`` if given)."""
    return _LOSSES.names(filter)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered loss (``soft_margin_triplet``, ``infonce``); ``kwargs`` go to its constructor.

    Example:
        >>> loss = create_loss("soft_margin_triplet", schedule=[(0, None), (21, 0.1)])
        >>> loss.set_epoch(30); loss.hard_negative_ratio
        0.1
    """
    return _LOSSES.get(name)(**kwargs)
