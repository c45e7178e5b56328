"""Exact retrieval ranks, recall@K and the top-1% K, chunked over queries: the one implementation.

Every recall in the project comes from here: the trainer's validation
(:meth:`geo_retrieval.training.Trainer.evaluate`), the leaderboard and ``geo-bench evaluate`` (through
:mod:`geo_bench.metrics.recall`, which re-exports this module and adds the faiss backend and the
two-direction helper).

Convention:
    - Descriptors are compared by cosine similarity in float32: queries are L2-normalised by the
      function (``q / max(|q|, 1e-12)``); the reference is not copied when it is already float32:
      each block's columns are divided by the reference norms instead, ``s = (q_hat . r) / |r|``,
      which equals ``q_hat . r_hat`` up to float32 rounding. Bit-identical references are detected
      once (integer row hashes) and always get identical scores, so duplicates tie exactly whatever
      the BLAS kernel does. A model whose matching is not a cosine (DSM's aligned similarity) passes
      its own ``similarity`` (see :func:`model_similarity`).
    - ``rank_i = #{r : s(q_i, r) > s(q_i, gt_i)}``: the number of references *strictly* more similar
      than the true match (``ties="optimistic"``, what every public repository does). With
      ``ties="pessimistic"`` a reference scoring *equal* to the match also counts against it:
      ``rank_i = #{r != gt_i : s(q_i, r) >= s(q_i, gt_i)}`` (a diagnostic for duplicated references,
      and the trainer's selection rule: a collapsed model must not score 100 %).
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
      DSM ``cal_FOV_acc.py``); the two differ at every N (88 vs 89 at N = 8,884, 100 vs 101 at
      N = 10,000). These are the only rule names (:data:`TOP1PCT_RULES`). The K used is stored next
      to the value.
    - Query ``i`` matches reference ``i`` unless ``gt_index`` (N_q,) says otherwise.
    - Work is done one query block at a time on the inputs' device: a (b, N_ref) score block, never an
      N_q x N_ref matrix. The block size comes from ``chunk_size`` or from ``memory_budget`` bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "TIE_RULES",
    "TOP1PCT_RULES",
    "RecallResult",
    "Similarity",
    "TieStats",
    "chunk_size_for",
    "model_similarity",
    "ranks",
    "ranks_with_ties",
    "recall_curve",
    "recall_from_ranks",
    "retrieval_recall",
    "score_blocks",
    "tie_statistics",
    "top1pct_k",
]

#: Score callable for custom (e.g. DSM-aligned) matching: ``(q_block (b, ...), reference (M, ...)) -> (b, M)``.
Similarity = Callable[[Tensor, Tensor], Tensor]

#: Bytes allowed for one query block's working set (scores, a same-size temporary and a bool mask).
DEFAULT_MEMORY_BUDGET = 256 * 2**20

# Bytes of working memory per (query, reference) pair: float32 scores + one float32 temporary + bool.
_BYTES_PER_PAIR = 9
#: The tie rules of :func:`ranks`: strict ``>`` (``"optimistic"``) or ``>=`` (``"pessimistic"``).
TIE_RULES = ("optimistic", "pessimistic")
#: The top-1% K rules of :func:`top1pct_k`: ``floor(N/100)`` or ``int(0.01 N) + 1``.
TOP1PCT_RULES = ("floor", "int_plus_one")
_DIRECTIONS = ("g2a", "a2g")


@dataclass(frozen=True)
class TieStats:
    """How often the true match ties with another reference, for one retrieval direction.

    Attributes:
        tie_share: percent of queries whose true match scores exactly as high as at least one other
            reference (pessimistic rank > optimistic rank).
        r1_pessimistic: R@1 in percent with ties counted against the query (pessimistic rank == 0).
        n_tied: number of such queries.
        n_query: number of queries.
    """

    tie_share: float
    r1_pessimistic: float
    n_tied: int
    n_query: int

    def as_dict(self) -> dict[str, float]:
        """``{"tie_share": ..., "R@1_pessimistic": ...}`` in percent (the record's metric names)."""
        return {"tie_share": self.tie_share, "R@1_pessimistic": self.r1_pessimistic}


@dataclass(frozen=True)
class RecallResult:
    """Recall@K of one retrieval direction under one protocol.

    Attributes:
        recall_at: ``{K: R@K}`` in percent.
        top1pct: R@top-x% in percent (x = ``top_percent``, 1 by default).
        top1pct_k: the K used for ``top1pct``.
        top1pct_rule: ``"floor"`` or ``"int_plus_one"``.
        ties: ``"optimistic"`` (strict ``>``) or ``"pessimistic"`` (``>=``).
        n_query: number of queries.
        n_reference: gallery size.
        direction: ``"g2a"`` (ground query -> aerial gallery, the headline) or ``"a2g"``.
        protocol: ``"id"`` (explicit gt index), ``"id_1to1"``, ``"id_1to1_glob"`` or ``"utm_<r>m"``.
        radius_m: the radius of a ``utm_*`` protocol, else ``None``.
        top_percent: the x of R@x% (1.0 by default).
        backend: ``"torch"`` (exact ranks) or ``"faiss"`` (top-k neighbours).
        tie_stats: the :class:`TieStats` when asked for (``tie_stats=True``), else ``None``.
    """

    recall_at: dict[int, float]
    top1pct: float
    top1pct_k: int
    top1pct_rule: str
    ties: str
    n_query: int
    n_reference: int
    direction: str = "g2a"
    protocol: str = "id"
    radius_m: float | None = None
    top_percent: float = 1.0
    backend: str = "torch"
    tie_stats: TieStats | None = None

    @property
    def top_key(self) -> str:
        """The metric name of the top-x% recall, ``"R@1%"`` by default."""
        return f"R@{self.top_percent:g}%"

    def as_dict(self) -> dict[str, float | int]:
        """``{"R@1": ..., "R@5": ..., "R@10": ..., "R@1%": ..., "K_1pct": ...}`` (recalls in percent),
        plus ``"tie_share"`` and ``"R@1_pessimistic"`` when the tie statistics were computed."""
        out: dict[str, float | int] = {f"R@{k}": v for k, v in sorted(self.recall_at.items())}
        out[self.top_key] = self.top1pct
        out[f"K_{self.top_percent:g}pct"] = self.top1pct_k
        if self.tie_stats is not None:
            out.update(self.tie_stats.as_dict())
        return out

    def summary(self) -> dict[str, float | int | str]:
        """:meth:`as_dict` plus ``"top1pct_rule"``, ``"n_query"``, ``"n_reference"`` and ``"ties"``: one
        flat dict for logs (the trainer's validation history, ``val/R@1``, ``val/ties``, ...)."""
        return {
            **self.as_dict(),
            "top1pct_rule": self.top1pct_rule,
            "n_query": self.n_query,
            "n_reference": self.n_reference,
            "ties": self.ties,
        }

    def protocol_dict(self) -> dict[str, Any]:
        """The protocol flags this result depends on (the ``protocol`` of a geo-bench result record)."""
        out: dict[str, Any] = {
            "direction": self.direction,
            "top1pct_rule": self.top1pct_rule,
            "tie_rule": self.ties,
            "retrieval_protocol": self.protocol,
            "backend": self.backend,
        }
        if self.radius_m is not None:
            out["radius_m"] = self.radius_m
        return out


@dataclass(frozen=True)
class _Prepared:
    """Validated inputs: the reference as scored, its norms (clamped), and the similarity callable."""

    reference: Tensor
    ref_norm: Tensor | None
    similarity: Similarity | None = field(default=None)
    # columns that are bit-identical copies of an earlier reference, and that reference's column
    dup_members: Tensor | None = field(default=None)
    dup_sources: Tensor | None = field(default=None)


_INT_VIEW = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}
#: columns hashed first by :func:`_duplicate_columns` (only rows equal there are hashed in full)
_PREHASH_COLUMNS = 32


def _duplicate_columns(reference: Tensor) -> tuple[Tensor, Tensor] | tuple[None, None]:
    """Find references that are bit-identical to an earlier one.

    BLAS kernels may accumulate identical rows in different orders (gemv tails, alignment peeling),
    so exact duplicates could score 1 ulp apart; copying the first copy's score onto the others makes
    ties exact whatever the kernel. Rows are hashed with exact integer arithmetic on their bit
    patterns, first over at most ``_PREHASH_COLUMNS`` evenly spaced columns (rows that differ there
    cannot be copies: for real descriptors this clears almost every row at a fraction of the cost),
    then the rows that share that hash over all columns (chunked); equal hashes are confirmed with
    ``torch.equal``. The result is the same as hashing every row in full.
    """
    flat = reference.detach().reshape(reference.shape[0], -1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    n, d = flat.shape
    if n < 2 or d == 0:
        return None, None
    bits = flat.view(_INT_VIEW[flat.element_size()])
    g = torch.Generator().manual_seed(0x9E3779B9)
    weights = (torch.randint(1, 2**62, (d,), generator=g, dtype=torch.int64) | 1).to(flat.device)
    columns = torch.linspace(0, d - 1, min(d, _PREHASH_COLUMNS)).round().long().unique().to(flat.device)
    pre = (bits[:, columns].to(torch.int64) * weights[columns]).sum(1)
    _, inverse, counts = torch.unique(pre, return_inverse=True, return_counts=True)
    if int(counts.max()) == 1:
        return None, None
    rows_left = torch.nonzero(counts[inverse] > 1).flatten()
    h = torch.empty(len(rows_left), dtype=torch.int64, device=flat.device)
    step = max(1, (64 * 2**20) // (8 * d))
    for s in range(0, len(rows_left), step):
        h[s : s + step] = (bits[rows_left[s : s + step]].to(torch.int64) * weights).sum(1)
    _, inverse, counts = torch.unique(h, return_inverse=True, return_counts=True)
    if int(counts.max()) == 1:
        return None, None
    cand = torch.nonzero(counts[inverse] > 1).flatten().tolist()
    groups: dict[int, list[int]] = {}
    for i in cand:
        groups.setdefault(int(inverse[i]), []).append(int(rows_left[i]))
    members: list[int] = []
    sources: list[int] = []
    for idx in groups.values():
        firsts: list[int] = []
        for i in sorted(idx):
            src = next((f for f in firsts if torch.equal(bits[i], bits[f])), None)
            if src is None:
                firsts.append(i)
            else:
                members.append(i)
                sources.append(src)
    if not members:
        return None, None
    dev = flat.device
    return torch.tensor(members, device=dev), torch.tensor(sources, device=dev)


def top1pct_k(n_reference: int, rule: str = "floor", top_percent: float = 1.0) -> int:
    """The K of R@x% for a gallery of ``n_reference`` items.

    Convention: ``"floor"`` gives ``floor(N * x / 100)`` (at least 1); ``"int_plus_one"`` gives
    ``int(N * 0.01 * x) + 1`` exactly as the legacy code computes it in floating point.

    Args:
        n_reference: gallery size N.
        rule: ``"floor"`` (default) or ``"int_plus_one"``.
        top_percent: x, 1.0 for R@1%.

    Returns:
        The K used for R@x%.

    Example:
        >>> top1pct_k(8884), top1pct_k(8884, "int_plus_one")
        (88, 89)
        >>> top1pct_k(10_000), top1pct_k(10_000, "int_plus_one")
        (100, 101)
    """
    if isinstance(n_reference, bool) or not isinstance(n_reference, int):
        raise TypeError(f"n_reference must be an int, got {type(n_reference).__name__}")
    if n_reference <= 0:
        raise ValueError(f"n_reference must be positive, got {n_reference}")
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}")
    if rule == "floor":
        return max(1, math.floor(Fraction(n_reference) * Fraction(str(top_percent)) / 100))
    if rule == "int_plus_one":
        return int(n_reference * 0.01 * top_percent) + 1
    raise ValueError(f"top1pct_rule must be one of {TOP1PCT_RULES}, got {rule!r}")


def chunk_size_for(n_reference: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Query rows per block so that a block's working set (about 9 bytes per pair) fits the budget."""
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be positive bytes, got {memory_budget}")
    return max(1, int(memory_budget // (_BYTES_PER_PAIR * max(1, n_reference))))


def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _prepare(query: Tensor, reference: Tensor, similarity: Similarity | None) -> _Prepared:
    _check_tensor(query, "query")
    _check_tensor(reference, "reference")
    if query.device != reference.device:
        raise ValueError(
            f"query and reference must be on one device, got {query.device} and {reference.device}"
        )
    if query.shape[0] == 0 or reference.shape[0] == 0:
        raise ValueError(
            f"query and reference must be non-empty, got {tuple(query.shape)} and {tuple(reference.shape)}"
        )
    if similarity is not None:
        if not callable(similarity):
            raise TypeError(f"similarity must be callable, got {type(similarity).__name__}")
        members, sources = _duplicate_columns(reference) if reference.is_floating_point() else (None, None)
        return _Prepared(reference, None, similarity, members, sources)
    for name, x in (("query", query), ("reference", reference)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be (N, D) descriptors, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"query (N_q, D) and reference (N_ref, D) must share D, got {tuple(query.shape)} and "
            f"{tuple(reference.shape)}"
        )
    # float32 and contiguous: no copy when the caller's reference already is.
    ref = reference.detach().to(torch.float32).contiguous()
    norms = torch.linalg.vector_norm(ref, dim=1)
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("reference contains NaN or infinite values")
    members, sources = _duplicate_columns(ref)
    return _Prepared(ref, norms.clamp_min(1e-12), None, members, sources)


def _blocks(
    query: Tensor, prep: _Prepared, chunk_size: int | None, memory_budget: int
) -> Iterator[tuple[int, int, Tensor]]:
    n_q, n_ref = query.shape[0], prep.reference.shape[0]
    if chunk_size is None:
        chunk_size = chunk_size_for(n_ref, memory_budget)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    chunk_size = min(chunk_size, n_q)
    for start in range(0, n_q, chunk_size):
        end = min(start + chunk_size, n_q)
        q = query[start:end].detach()
        if prep.similarity is not None:
            with torch.no_grad():
                block = prep.similarity(q, prep.reference)
            if not isinstance(block, Tensor) or tuple(block.shape) != (end - start, n_ref):
                got = tuple(block.shape) if isinstance(block, Tensor) else type(block).__name__
                raise ValueError(f"similarity must return a ({end - start}, {n_ref}) tensor, got {got}")
            block = block.to(torch.float32)
            if not bool(torch.isfinite(block).all()):
                raise ValueError(f"similarity returned NaN or infinite scores for queries [{start}, {end})")
        else:
            q = q.to(torch.float32)
            if not bool(torch.isfinite(q).all()):
                raise ValueError(f"query contains NaN or infinite values in rows [{start}, {end})")
            q = F.normalize(q, dim=1, eps=1e-12)
            assert prep.ref_norm is not None
            with torch.no_grad():
                block = q @ prep.reference.T
                block.div_(prep.ref_norm)
        if prep.dup_members is not None:
            assert prep.dup_sources is not None  # set together with dup_members
            dup_scores = block.index_select(1, prep.dup_sources)
            if prep.similarity is None:
                block.index_copy_(1, prep.dup_members, dup_scores)
            else:  # out of place: a custom similarity may have returned a tensor it still uses
                block = block.index_copy(1, prep.dup_members, dup_scores)
        yield start, end, block
        del block, q  # drop this block before the next one is computed (consumers del theirs too)


def score_blocks(
    query: Tensor,
    reference: Tensor,
    *,
    chunk_size: int | None = None,
    similarity: Similarity | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, end, scores)`` with the (end - start, N_ref) float32 cosine scores of a query block.

    The building block of every metric here; use it for your own per-block statistics.

    Args:
        query: (N_q, D) descriptors, or anything ``similarity`` accepts.
        reference: (N_ref, D) descriptors, or anything ``similarity`` accepts.
        chunk_size: query rows per block; by default from ``memory_budget``.
        similarity: optional ``(q_block, reference) -> (b, N_ref)`` score callable; the descriptors are
            then passed through unnormalised.
        memory_budget: bytes for one block's working set when ``chunk_size`` is None.

    Returns:
        An iterator of ``(start, end, scores)``; scores live on the inputs' device.
    """
    prep = _prepare(query, reference, similarity)
    return _blocks(query, prep, chunk_size, memory_budget)


def _check_gt(gt_index: Tensor | None, n_q: int, n_ref: int, device: torch.device) -> Tensor:
    if gt_index is None:
        if n_q > n_ref:
            raise ValueError(
                f"without gt_index query i matches reference i, so N_q ({n_q}) must be <= N_ref ({n_ref})"
            )
        return torch.arange(n_q, device=device)
    gt = torch.as_tensor(gt_index)
    if gt.dtype.is_floating_point or gt.dtype == torch.bool or gt.is_complex():
        raise TypeError(f"gt_index must be an integer tensor, got {gt.dtype}")
    if gt.shape != (n_q,):
        raise ValueError(f"gt_index must be (N_q,) = ({n_q},), got {tuple(gt.shape)}")
    gt = gt.to(device=device, dtype=torch.long)
    if n_q and (int(gt.min()) < 0 or int(gt.max()) >= n_ref):
        raise ValueError(f"gt_index must lie in [0, {n_ref}), got range [{int(gt.min())}, {int(gt.max())}]")
    return gt


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")


class _Counter:
    """Row-wise counts of ``block > t`` (or ``>=``) through a reused float32 buffer.

    Writing the comparison into a float32 buffer and summing it is several times faster on CPU than
    summing a bool tensor (which widens every element to int64), and exact while the count fits the
    float32 mantissa (galleries below 2**24; larger ones take the bool path).
    """

    def __init__(self, float_limit: int = 2**24) -> None:
        self._buf: Tensor | None = None
        self._float_limit = float_limit

    def __call__(self, block: Tensor, threshold: Tensor, strict: bool) -> Tensor:
        b, m = block.shape
        if m >= self._float_limit:
            return (block > threshold).sum(1) if strict else (block >= threshold).sum(1)
        if (
            self._buf is None
            or self._buf.shape[0] < b
            or self._buf.shape[1] != m
            or self._buf.device != block.device
        ):
            self._buf = torch.empty(b, m, dtype=torch.float32, device=block.device)
        out = self._buf[:b]
        (torch.gt if strict else torch.ge)(block, threshold, out=out)
        return out.sum(1).long()


def _block_ranks(block: Tensor, gt: Tensor, ties: str, count: _Counter) -> Tensor:
    pos = block.gather(1, gt[:, None])
    if ties == "optimistic":
        return count(block, pos, strict=True)
    return count(block, pos, strict=False) - 1


def _block_both_ranks(block: Tensor, gt: Tensor, count: _Counter) -> tuple[Tensor, Tensor]:
    """(b,) optimistic and (b,) pessimistic ranks of one (b, N_ref) score block."""
    pos = block.gather(1, gt[:, None])
    return count(block, pos, strict=True), count(block, pos, strict=False) - 1


def tie_statistics(optimistic: Tensor, pessimistic: Tensor) -> TieStats:
    """Tie share and R@1 with ties against the query from the two ranks of every query.

    Args:
        optimistic: (N,) integer ranks with strict ``>`` (``ties="optimistic"``).
        pessimistic: (N,) integer ranks with ``>=`` (``ties="pessimistic"``), of the same queries.

    Returns:
        A :class:`TieStats` (percentages of the N queries).

    Example:
        >>> tie_statistics(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 1, 3, 0])).as_dict()
        {'tie_share': 50.0, 'R@1_pessimistic': 50.0}
    """
    for name, r in (("optimistic", optimistic), ("pessimistic", pessimistic)):
        _check_tensor(r, name)
        if r.ndim != 1 or r.numel() == 0 or r.dtype.is_floating_point or r.dtype == torch.bool:
            raise ValueError(
                f"{name} ranks must be a non-empty (N,) integer tensor, got {tuple(r.shape)} {r.dtype}"
            )
    if optimistic.shape != pessimistic.shape:
        raise ValueError(
            f"optimistic {tuple(optimistic.shape)} and pessimistic {tuple(pessimistic.shape)} ranks differ in shape"
        )
    if bool((pessimistic < optimistic).any()):
        raise ValueError("pessimistic ranks can never be below the optimistic ranks of the same queries")
    n = optimistic.numel()
    n_tied = int((pessimistic > optimistic).sum())
    return TieStats(
        tie_share=100.0 * n_tied / n,
        r1_pessimistic=100.0 * int((pessimistic == 0).sum()) / n,
        n_tied=n_tied,
        n_query=n,
    )


def ranks(
    query: Tensor,
    reference: Tensor,
    *,
    gt_index: Tensor | None = None,
    ties: str = "optimistic",
    chunk_size: int | None = None,
    similarity: Similarity | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tensor:
    """Rank of the true match of every query: the number of references scoring above it.

    Convention: cosine on L2-normalised float32 descriptors (or ``similarity``'s scores);
    ``ties="optimistic"`` counts strictly greater scores, ``"pessimistic"`` counts ``>=`` (the match
    itself excluded). Blockwise over queries on the inputs' device; never an N_q x N_ref matrix.

    Args:
        query: (N_q, D) query descriptors (ground for g2a).
        reference: (N_ref, D) gallery descriptors.
        gt_index: (N_q,) index of each query's match in ``reference``; default ``arange(N_q)``.
        ties: ``"optimistic"`` or ``"pessimistic"``.
        chunk_size: query rows per block; default from ``memory_budget``.
        similarity: optional ``(q_block (b, ...), reference (N_ref, ...)) -> (b, N_ref)`` scores.
        memory_budget: bytes for one block's working set when ``chunk_size`` is None.

    Returns:
        (N_q,) int64 ranks on the inputs' device; 0 means retrieved first.

    Example:
        >>> g = torch.eye(4)
        >>> ranks(g, g).tolist()
        [0, 0, 0, 0]
        >>> ranks(g, g, gt_index=torch.tensor([1, 0, 3, 2])).tolist()
        [1, 1, 1, 1]
    """
    _check_ties(ties)
    prep = _prepare(query, reference, similarity)
    n_q, n_ref = query.shape[0], prep.reference.shape[0]
    gt = _check_gt(gt_index, n_q, n_ref, prep.reference.device)
    out = torch.empty(n_q, dtype=torch.long, device=prep.reference.device)
    count = _Counter()
    for start, end, block in _blocks(query, prep, chunk_size, memory_budget):
        out[start:end] = _block_ranks(block, gt[start:end], ties, count)
        del block
    return out


def ranks_with_ties(
    query: Tensor,
    reference: Tensor,
    *,
    gt_index: Tensor | None = None,
    chunk_size: int | None = None,
    similarity: Similarity | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[Tensor, Tensor]:
    """Optimistic and pessimistic ranks of every query's true match from one blockwise pass.

    Convention: as :func:`ranks`; each (b, N_ref) score block is compared twice (``>`` and ``>=``
    the match's score) instead of being recomputed. Never an N_q x N_ref matrix.

    Args:
        query: (N_q, D) query descriptors (ground for g2a).
        reference: (N_ref, D) gallery descriptors.
        gt_index: (N_q,) index of each query's match in ``reference``; default ``arange(N_q)``.
        chunk_size: query rows per block; default from ``memory_budget``.
        similarity: optional ``(q_block (b, ...), reference (N_ref, ...)) -> (b, N_ref)`` scores.
        memory_budget: bytes for one block's working set when ``chunk_size`` is None.

    Returns:
        ``(optimistic, pessimistic)``: two (N_q,) int64 tensors on the inputs' device, equal to
        ``ranks(..., ties="optimistic")`` and ``ranks(..., ties="pessimistic")``.

    Example:
        >>> ref = torch.eye(3)[[0, 1, 1]]  # reference 2 duplicates reference 1
        >>> [r.tolist() for r in ranks_with_ties(ref, ref)]
        [[0, 0, 0], [0, 1, 1]]
    """
    prep = _prepare(query, reference, similarity)
    n_q, n_ref = query.shape[0], prep.reference.shape[0]
    gt = _check_gt(gt_index, n_q, n_ref, prep.reference.device)
    opt = torch.empty(n_q, dtype=torch.long, device=prep.reference.device)
    pess = torch.empty_like(opt)
    count = _Counter()
    for start, end, block in _blocks(query, prep, chunk_size, memory_budget):
        opt[start:end], pess[start:end] = _block_both_ranks(block, gt[start:end], count)
        del block
    return opt, pess


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k <= 0 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    return tuple(sorted(set(ks)))


def recall_curve(ranks: Tensor, ks: Iterable[int]) -> Tensor:
    """R@K in percent for every K of ``ks`` from a rank tensor (hit@K iff rank < K).

    Args:
        ranks: (N,) integer ranks, as returned by :func:`ranks`.
        ks: positive Ks, in any order (e.g. ``range(1, 101)`` for a curve).

    Returns:
        (len(ks),) float64 tensor of recalls in percent, in the order of ``ks``, on ``ranks``' device.

    Example:
        >>> recall_curve(torch.tensor([0, 0, 3, 9]), [1, 4, 10]).tolist()
        [50.0, 75.0, 100.0]
    """
    r = _check_tensor(ranks, "ranks")
    if r.ndim != 1 or r.numel() == 0 or r.dtype.is_floating_point or r.dtype == torch.bool:
        raise ValueError(f"ranks must be a non-empty (N,) integer tensor, got {tuple(r.shape)} {r.dtype}")
    ks_list = list(ks)
    _check_ks(ks_list)
    kmax = max(ks_list)
    counts = torch.bincount(r.long().clamp(0, kmax), minlength=kmax + 1)
    cum = counts.cumsum(0).to(torch.float64)
    idx = torch.tensor([k - 1 for k in ks_list], device=r.device)
    return cum[idx] * (100.0 / r.numel())


def recall_from_ranks(
    ranks: Tensor,
    n_reference: int,
    ks: Iterable[int] = (1, 5, 10),
    top_percent: float = 1.0,
    *,
    top1pct_rule: str = "floor",
    ties: str = "optimistic",
    direction: str = "g2a",
    protocol: str = "id",
    radius_m: float | None = None,
    backend: str = "torch",
    tie_stats: TieStats | None = None,
) -> RecallResult:
    """Build a :class:`RecallResult` from per-query ranks (K larger than the gallery is clipped);
    ``tie_stats`` (from :func:`tie_statistics`) is stored as given."""
    ks = _check_ks(ks)
    _check_ties(ties)
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    k_top = top1pct_k(n_reference, top1pct_rule, top_percent)
    values = recall_curve(ranks, [min(k, n_reference) for k in (*ks, k_top)]).tolist()
    return RecallResult(
        recall_at=dict(zip(ks, values[:-1])),
        top1pct=values[-1],
        top1pct_k=k_top,
        top1pct_rule=top1pct_rule,
        ties=ties,
        n_query=int(ranks.numel()),
        n_reference=n_reference,
        direction=direction,
        protocol=protocol,
        radius_m=radius_m,
        top_percent=float(top_percent),
        backend=backend,
        tie_stats=tie_stats,
    )


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
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    direction: str = "g2a",
    protocol: str = "id",
    tie_stats: bool = False,
) -> RecallResult:
    """R@K and R@1% of ``query`` against ``reference`` from exact blockwise ranks.

    Convention: see the module docstring: cosine on L2-normalised float32 descriptors (or
    ``similarity``'s scores), strict ``>`` ranks (``ties="optimistic"``), hit@K iff rank < K, top-1% K
    from ``top1pct_rule`` and reported. :func:`geo_bench.metrics.retrieval_recall` is this function
    plus a ``backend="faiss"`` option.

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
        memory_budget: bytes for one block's working set when ``chunk_size`` is None.
        direction: label stored in the result, ``"g2a"`` or ``"a2g"``.
        protocol: label stored in the result (``"id"``, ``"id_1to1"``, ``"id_1to1_glob"``).
        tie_stats: also compute the :class:`TieStats` in the same pass; ``.as_dict()`` then adds
            ``"tie_share"`` and ``"R@1_pessimistic"``.

    Returns:
        A :class:`RecallResult`; ``.as_dict()`` gives ``{"R@1", "R@5", "R@10", "R@1%", "K_1pct"}``.

    Example:
        >>> g = torch.eye(200)
        >>> res = retrieval_recall(g, g)
        >>> res.as_dict()
        {'R@1': 100.0, 'R@5': 100.0, 'R@10': 100.0, 'R@1%': 100.0, 'K_1pct': 2}
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    stats = None
    if tie_stats:
        opt, pess = ranks_with_ties(
            query,
            reference,
            gt_index=gt_index,
            chunk_size=chunk_size,
            similarity=similarity,
            memory_budget=memory_budget,
        )
        r = opt if ties == "optimistic" else pess
        stats = tie_statistics(opt, pess)
    else:
        r = ranks(
            query,
            reference,
            gt_index=gt_index,
            ties=ties,
            chunk_size=chunk_size,
            similarity=similarity,
            memory_budget=memory_budget,
        )
    return recall_from_ranks(
        r,
        reference.shape[0],
        ks,
        top_percent,
        top1pct_rule=top1pct_rule,
        ties=ties,
        direction=direction,
        protocol=protocol,
        backend="torch",
        tie_stats=stats,
    )


def model_similarity(model: Any) -> Similarity | None:
    """The score callable the metrics use for ``model``: None (the built-in cosine of this module) unless
    the model declares a non-cosine ``similarity_kind`` (DSM's aligned matching), then its ``similarity``.

    One rule for the trainer's validation and the leaderboard, so both score the same descriptors
    the same way.

    Args:
        model: a cross-view model (``CrossViewModel`` or anything with ``similarity``).

    Returns:
        ``model.similarity`` or None.

    Example:
        >>> from geo_retrieval.testing import TinyCrossView
        >>> model_similarity(TinyCrossView()) is None
        True
    """
    similarity = getattr(model, "similarity", None)
    if getattr(model, "similarity_kind", "cosine") != "cosine" and similarity is not None:
        return similarity
    return None
