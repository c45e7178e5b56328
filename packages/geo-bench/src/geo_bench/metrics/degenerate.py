"""Collapsed descriptors: when R@K measures ties, not retrieval.

Convention:
    - Ties count in the query's favour (strict ``>`` ranks, the literature's rule), so a model whose
      descriptors are all identical, or all zero, ranks every true match first: R@1 = 100 % for a dead
      model. :func:`check_descriptors` refuses such descriptors with :class:`DegenerateDescriptorsError`.
    - A descriptor is *zero* when the L2 norm of all its elements (float64 accumulation) is below
      :data:`ZERO_NORM` (1e-12, the eps of the cosine normalisation). The descriptors are collapsed
      when at least :data:`DEGENERATE_ZERO_SHARE` (99 %) of the query (ground) or of the reference
      (aerial) descriptors are zero: every pair then scores 0.
    - They are also collapsed when the tie share (percent of queries whose true match scores exactly as
      high as another reference, :class:`~geo_bench.metrics.TieStats`) reaches
      :data:`DEGENERATE_TIE_SHARE` (50 %): from there R@K is decided by the tie rule for most queries.
      Real galleries hold a few exact duplicates (CVUSA has duplicate aerial images), which tie only
      their own few queries, far below half; a working model never ties half its queries.
    - Descriptors are (N, ...) tensors, one row per image; any trailing shape (e.g. DSM's feature maps).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geo_bench.metrics.recall import _duplicate_columns

__all__ = [
    "DEGENERATE_TIE_SHARE",
    "DEGENERATE_ZERO_SHARE",
    "ZERO_NORM",
    "DegenerateDescriptorsError",
    "check_descriptors",
    "zero_norm_share",
]

#: A descriptor whose L2 norm is below this is zero.
ZERO_NORM = 1e-12
#: Percent of zero descriptors (on either side) from which the descriptors count as collapsed.
DEGENERATE_ZERO_SHARE = 99.0
#: Tie share (percent of queries) from which R@K counts as meaningless.
DEGENERATE_TIE_SHARE = 50.0


class DegenerateDescriptorsError(ValueError):
    """The descriptors are collapsed (all zero or all tying): R@K would only measure the tie rule."""


def zero_norm_share(x: Tensor) -> float:
    """Percent of the rows of ``x`` (N, ...) whose L2 norm is below :data:`ZERO_NORM`.

    Example:
        >>> zero_norm_share(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        50.0
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"descriptors must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"descriptors must be non-empty (N, ...), got shape {tuple(x.shape)}")
    norms = torch.linalg.vector_norm(x.detach().reshape(x.shape[0], -1).double(), dim=1)
    return 100.0 * int((norms < ZERO_NORM).sum()) / x.shape[0]


def _pct(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _distinct(x: Tensor) -> int:
    if not x.is_floating_point():
        return int(torch.unique(x.reshape(x.shape[0], -1), dim=0).shape[0])
    members, _ = _duplicate_columns(x.detach().float())
    return x.shape[0] - (0 if members is None else int(members.numel()))


def check_descriptors(
    query: Tensor,
    reference: Tensor,
    *,
    tie_share: float | None = None,
    recall_at_1: float | None = None,
    name: str | None = None,
    query_name: str = "ground",
    reference_name: str = "aerial",
) -> None:
    """Raise :class:`DegenerateDescriptorsError` when the descriptors are collapsed (module Convention).

    Args:
        query: (N_q, ...) query descriptors (ground for g2a).
        reference: (N_ref, ...) gallery descriptors.
        tie_share: the tie share in percent (``TieStats.tie_share``), when known; without it only the
            zero-norm test runs.
        recall_at_1: the optimistic R@1 in percent, quoted in the message.
        name: what is evaluated (recipe, variant, checkpoint), quoted at the start of the message.
        query_name: the query side's name in the message.
        reference_name: the reference side's name in the message.

    Raises:
        DegenerateDescriptorsError: >= 99 % zero descriptors on a side, or a tie share >= 50 %.
    """
    prefix = f"{name}: " if name else ""

    def why(r1: str) -> str:
        return f"the weights look collapsed or untrained; {r1} only because ties count for the query"

    shares = [(side, zero_norm_share(x)) for side, x in ((query_name, query), (reference_name, reference))]
    zero = [(side, share) for side, share in shares if share >= DEGENERATE_ZERO_SHARE]
    if zero:
        what = " and ".join(side for side, _ in zero)
        every = all(share == 100.0 for _, share in zero)
        amount = "all" if every else " / ".join(f"{_pct(s)} %" for _, s in zero)
        raise DegenerateDescriptorsError(
            f"{prefix}the model's {what} descriptors are {amount} zero (norm < {ZERO_NORM:g}), so the pairs would "
            f"all score the same: {why('R@1 would be ' + ('' if every else 'about ') + '100 %')}"
        )
    if tie_share is None or tie_share < DEGENERATE_TIE_SHARE:
        return
    n_ref = int(reference.shape[0])
    distinct = _distinct(reference)
    if distinct == 1:
        what = f"the model's {reference_name} descriptors are all identical"
    elif distinct <= n_ref // 2:
        what = f"the model's {reference_name} descriptors take only {distinct} distinct values for {n_ref} images"
    else:
        what = f"the true match's score ties with another {reference_name} descriptor's for most queries"
    r1 = f"R@1 would be {_pct(recall_at_1)} %" if recall_at_1 is not None else "R@K would be high"
    raise DegenerateDescriptorsError(
        f"{prefix}{what} (tie share {_pct(tie_share)} % of the queries, refused from "
        f"{_pct(DEGENERATE_TIE_SHARE)} %): {why(r1)}"
    )
