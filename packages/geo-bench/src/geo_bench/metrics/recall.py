"""Exact retrieval ranks and recall@K, chunked over queries (the benchmark's public names).

The implementation lives in :mod:`geo_retrieval.ranking` (one implementation for the trainer's
validation, the leaderboard and ``geo-bench evaluate``); this module re-exports it unchanged and adds
the optional faiss fast path (``retrieval_recall(..., backend="faiss")``) and
:func:`bidirectional_recall`.

Convention (of :mod:`geo_retrieval.ranking`):
    - Descriptors are compared by cosine similarity in float32: queries are L2-normalised by the
      function (``q / max(|q|, 1e-12)``); the reference is not copied when it is already float32:
      each block's columns are divided by the reference norms instead, ``s = (q_hat . r) / |r|``,
      which equals ``q_hat . r_hat`` up to float32 rounding. Bit-identical references are detected
      once (integer row hashes) and always get identical scores, so duplicates tie exactly whatever
      the BLAS kernel does.
    - ``rank_i = #{r : s(q_i, r) > s(q_i, gt_i)}``: the number of references *strictly* more similar
      than the true match (``ties="optimistic"``, what every public repository does). With
      ``ties="pessimistic"`` a reference scoring *equal* to the match also counts against it:
      ``rank_i = #{r != gt_i : s(q_i, r) >= s(q_i, gt_i)}`` (a diagnostic for duplicated references).
    - **Tie statistics** (``tie_stats=True``, :class:`TieStats`): both ranks come from the same score
      block (one pass, two comparisons). A query's true match is *tied* when its pessimistic rank
      exceeds its optimistic one (another reference scores exactly as high as the match);
      ``tie_share = 100 * mean(tied)`` and ``R@1_pessimistic = 100 * mean(pessimistic rank == 0)``.
      A few exact duplicates in the gallery give a small tie share; collapsed descriptors (all
      identical or zero) tie every query, and the optimistic R@K is then 100 % for a dead model.
    - ``hit@K  <=>  rank < K``; ``R@K = 100 * mean(hit@K)`` in percent. A K larger than the gallery is
      clipped to the gallery size.
    - Top-1%: ``K = floor(N_ref / 100)`` (``top1pct_rule="floor"``, Sample4Geo/TransGeo/SAFA's printed
      value; at least 1) or ``K = int(0.01 * N_ref) + 1`` (``"int_plus_one"``, OriCNN, official VIGOR,
      DSM ``cal_FOV_acc.py``). The K used is stored next to the value.
    - Query ``i`` matches reference ``i`` unless ``gt_index`` (N_q,) says otherwise.
    - Work is done one query block at a time on the inputs' device: a (b, N_ref) score block, never an
      N_q x N_ref matrix. The block size comes from ``chunk_size`` or from ``memory_budget`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from geo_bench.metrics.faiss_backend import faiss_hits
from geo_retrieval import ranking as _core

# The shared building blocks, re-exported for the other metric modules (cvact, vigor, geo,
# localisation, degenerate) and the public API below.
from geo_retrieval.ranking import (  # noqa: F401  (private helpers re-exported for geo_bench.metrics.*)
    DEFAULT_MEMORY_BUDGET,
    RecallResult,
    Similarity,
    TieStats,
    _blocks,
    _check_gt,
    _check_ks,
    _check_tensor,
    _check_ties,
    _Counter,
    _duplicate_columns,
    _prepare,
    chunk_size_for,
    ranks,
    ranks_with_ties,
    recall_curve,
    recall_from_ranks,
    score_blocks,
    tie_statistics,
    top1pct_k,
)

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "RecallResult",
    "Similarity",
    "TieStats",
    "bidirectional_recall",
    "chunk_size_for",
    "ranks",
    "ranks_with_ties",
    "recall_curve",
    "recall_from_ranks",
    "retrieval_recall",
    "score_blocks",
    "tie_statistics",
    "top1pct_k",
]

_BACKENDS = ("torch", "faiss")


def retrieval_recall(
    query: Tensor,
    reference: Tensor,
    ks: Iterable[int] = (1, 5, 10),
    top_percent: float = 1.0,
    *,
    gt_index: Tensor | None = None,
    top1pct_rule: str = "floor",
    ties: str = "optimistic",
    chunk_size: int | None = None,
    similarity: Similarity | None = None,
    backend: str = "torch",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    direction: str = "g2a",
    protocol: str = "id",
    tie_stats: bool = False,
) -> RecallResult:
    """R@K and R@1% of ``query`` against ``reference``.

    Convention: see the module docstring: cosine on L2-normalised float32 descriptors, strict ``>``
    ranks (``ties="optimistic"``), hit@K iff rank < K, top-1% K from ``top1pct_rule`` and reported.
    ``backend="torch"`` is :func:`geo_retrieval.ranking.retrieval_recall` (the reference).
    ``backend="faiss"`` searches the top max(K) neighbours with ``faiss.knn`` (inner product on
    normalised float32 copies) instead of counting ranks: exact ties may resolve differently there, so
    it only supports ``ties="optimistic"`` and no custom ``similarity``.

    Args:
        query: (N_q, D) query descriptors (ground for the headline g2a direction).
        reference: (N_ref, D) gallery descriptors.
        ks: the Ks of R@K.
        top_percent: x of R@x%; 1.0 gives R@1%.
        gt_index: (N_q,) index of each query's match in ``reference``; default ``arange(N_q)``.
        top1pct_rule: ``"floor"`` (default, floor(N/100)) or ``"int_plus_one"`` (int(0.01 N) + 1).
        ties: ``"optimistic"`` (strict ``>``) or ``"pessimistic"`` (``>=``).
        chunk_size: query rows per block; default from ``memory_budget``.
        similarity: optional ``(q_block (b, ...), reference (N_ref, ...)) -> (b, N_ref)`` scores.
        backend: ``"torch"`` (exact, the reference) or ``"faiss"``.
        memory_budget: bytes for one block's working set when ``chunk_size`` is None.
        direction: label stored in the result, ``"g2a"`` or ``"a2g"``.
        protocol: label stored in the result (``"id"``, ``"id_1to1"``, ``"id_1to1_glob"``).
        tie_stats: also compute the :class:`TieStats` in the same pass (``backend="torch"`` only);
            ``.as_dict()`` then adds ``"tie_share"`` and ``"R@1_pessimistic"``.

    Returns:
        A :class:`RecallResult`; ``.as_dict()`` gives ``{"R@1", "R@5", "R@10", "R@1%", "K_1pct"}``.

    Example:
        >>> g = torch.eye(200)
        >>> res = retrieval_recall(g, g)
        >>> res.as_dict()
        {'R@1': 100.0, 'R@5': 100.0, 'R@10': 100.0, 'R@1%': 100.0, 'K_1pct': 2}
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return _core.retrieval_recall(
            query,
            reference,
            ks,
            top_percent,
            gt_index=gt_index,
            top1pct_rule=top1pct_rule,
            ties=ties,
            chunk_size=chunk_size,
            similarity=similarity,
            memory_budget=memory_budget,
            direction=direction,
            protocol=protocol,
            tie_stats=tie_stats,
        )
    ks = _check_ks(ks)
    _check_ties(ties)
    if tie_stats:
        raise ValueError("backend='faiss' cannot see exact ties; use backend='torch' for tie_stats=True")
    if similarity is not None:
        raise ValueError(
            "backend='faiss' searches plain inner products; a custom similarity needs backend='torch'"
        )
    if ties != "optimistic":
        raise ValueError(
            "backend='faiss' resolves ties by its own order; use backend='torch' for ties='pessimistic'"
        )
    _prepare(query, reference, None)
    n_q, n_ref = query.shape[0], reference.shape[0]
    gt = _check_gt(gt_index, n_q, n_ref, torch.device("cpu"))
    k_top = top1pct_k(n_ref, top1pct_rule, top_percent)
    all_ks = [min(k, n_ref) for k in (*ks, k_top)]
    hits = faiss_hits(query, reference, gt, all_ks, chunk_size=chunk_size, memory_budget=memory_budget)
    values = [100.0 * float(h) / n_q for h in hits]
    return RecallResult(
        recall_at=dict(zip(ks, values[:-1])),
        top1pct=values[-1],
        top1pct_k=k_top,
        top1pct_rule=top1pct_rule,
        ties=ties,
        n_query=n_q,
        n_reference=n_ref,
        direction=direction,
        protocol=protocol,
        top_percent=float(top_percent),
        backend="faiss",
    )


def _inverse_permutation(gt: Tensor, n_ref: int) -> Tensor:
    if gt.numel() != n_ref or torch.unique(gt).numel() != n_ref:
        raise ValueError(
            "the a2g direction needs a one-to-one pairing: gt_index must be a permutation of "
            f"range(N_aerial) with N_ground == N_aerial, got {gt.numel()} ground and {n_ref} aerial"
        )
    inv = torch.empty_like(gt)
    inv[gt] = torch.arange(gt.numel(), device=gt.device)
    return inv


def bidirectional_recall(
    ground: Tensor,
    aerial: Tensor,
    ks: Iterable[int] = (1, 5, 10),
    top_percent: float = 1.0,
    *,
    gt_index: Tensor | None = None,
    **kwargs: Any,
) -> dict[str, RecallResult]:
    """Recall in both directions: ``{"g2a": ground -> aerial (the headline), "a2g": aerial -> ground}``.

    Args:
        ground: (N_g, D) ground descriptors.
        aerial: (N_a, D) aerial descriptors.
        ks: the Ks of R@K.
        top_percent: x of R@x%.
        gt_index: (N_g,) aerial index of each ground query; for a2g it must be a permutation.
        **kwargs: forwarded to :func:`retrieval_recall` (``ties``, ``top1pct_rule``, ``chunk_size``...).

    Returns:
        ``{"g2a": RecallResult, "a2g": RecallResult}``; each result's ``n_reference`` is its own gallery.

    Example:
        >>> g = torch.eye(3)
        >>> {d: r.recall_at[1] for d, r in bidirectional_recall(g, g, ks=(1,)).items()}
        {'g2a': 100.0, 'a2g': 100.0}
    """
    for key in ("direction", "similarity"):
        if key in kwargs:
            raise ValueError(f"bidirectional_recall sets {key!r} itself")
    n_g, n_a = _check_tensor(ground, "ground").shape[0], _check_tensor(aerial, "aerial").shape[0]
    gt = _check_gt(gt_index, n_g, n_a, ground.device)
    inv = _inverse_permutation(gt, n_a)
    return {
        "g2a": retrieval_recall(ground, aerial, ks, top_percent, gt_index=gt, direction="g2a", **kwargs),
        "a2g": retrieval_recall(aerial, ground, ks, top_percent, gt_index=inv, direction="a2g", **kwargs),
    }
