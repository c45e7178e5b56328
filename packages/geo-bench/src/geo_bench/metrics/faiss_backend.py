"""Optional faiss fast path for recall@K (``retrieval_recall(..., backend="faiss")``).

Convention: faiss returns neighbours, not ranks. The descriptors are copied to float32 C-contiguous
numpy arrays, L2-normalised in place with ``faiss.normalize_L2`` and searched with
``faiss.knn(..., metric=faiss.METRIC_INNER_PRODUCT)`` (the same as an ``IndexFlatIP`` search), k = the
largest K needed. hit@K iff the match is among the first K neighbours. When several references tie
with the match, faiss orders them by its own rule, so a hit can differ from the strict-``>`` rank of
the exact torch path; the torch path is the reference. GPU tensors are copied to the host (faiss-cpu).
Install with ``pip install 'geo-bench[faiss]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from geo_transforms.errors import MissingDependencyError

__all__ = ["MissingDependencyError", "faiss_hits", "faiss_knn", "import_faiss"]


def import_faiss() -> ModuleType:
    """Import faiss lazily, with an install hint when it is missing."""
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - exercised by monkeypatching sys.modules
        raise MissingDependencyError(
            "backend='faiss' needs the faiss package: pip install 'geo-bench[faiss]' "
            "(faiss-cpu; or faiss-gpu-cu12, never both). backend='torch' needs nothing extra.",
            extra="geo-bench[faiss]",
        ) from err
    return faiss


def _normalised_copy(x: Tensor, faiss: ModuleType) -> np.ndarray:
    arr = np.array(x.detach().to("cpu", torch.float32).numpy(), dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(arr)
    return arr


def faiss_knn(query: Tensor, reference: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product neighbours of normalised copies of ``query`` in ``reference``.

    Args:
        query: (N_q, D) descriptors (any device, any floating dtype).
        reference: (N_ref, D) descriptors.
        k: neighbours per query, 1 <= k <= N_ref.

    Returns:
        ``(scores, indices)``, both (N_q, k) numpy arrays (float32, int64), best first.
    """
    faiss = import_faiss()
    n_ref = reference.shape[0]
    if not 1 <= k <= n_ref:
        raise ValueError(f"k must be in [1, N_ref={n_ref}], got {k}")
    xq, xb = _normalised_copy(query, faiss), _normalised_copy(reference, faiss)
    return faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)


def faiss_hits(
    query: Tensor,
    reference: Tensor,
    gt_index: Tensor,
    ks: Sequence[int],
    *,
    chunk_size: int | None = None,
    memory_budget: int = 256 * 2**20,
) -> list[int]:
    """Number of queries whose match is among their first K neighbours, for each K of ``ks``.

    The search runs in query blocks so the (block, max K) neighbour lists stay within ``memory_budget``
    (12 bytes per entry); faiss tiles the inner products itself.
    """
    faiss = import_faiss()
    kmax = max(ks)
    xb = _normalised_copy(reference, faiss)
    n_q = query.shape[0]
    if chunk_size is None:
        chunk_size = max(1, min(n_q, memory_budget // (12 * kmax), 16384))
    gt = gt_index.to("cpu").numpy()
    hits = np.zeros(len(ks), dtype=np.int64)
    for start in range(0, n_q, chunk_size):
        end = min(start + chunk_size, n_q)
        xq = _normalised_copy(query[start:end], faiss)
        _, idx = faiss.knn(xq, xb, kmax, metric=faiss.METRIC_INNER_PRODUCT)
        found = idx == gt[start:end, None]
        # position of the match among the neighbours, kmax when absent
        pos = np.where(found.any(1), found.argmax(1), kmax)
        for j, k in enumerate(ks):
            hits[j] += int((pos < k).sum())
    return [int(h) for h in hits]
