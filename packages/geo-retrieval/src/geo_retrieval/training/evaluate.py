"""Recall@K for in-training validation, computed blockwise (never an N x N matrix).

Convention:
    ground queries against an aerial gallery (g2s). ``rank_i = #{r : s(q_i, r) > s(q_i, gt_i)}``
    (strict ``>``: ties count in the query's favour; ``ties="pessimistic"`` uses ``>=`` minus the
    true match itself), ``hit@K <=> rank < K``, ``R@K = 100 * mean(hit@K)``. The top-1% K is
    ``floor(N/100)`` (Sample4Geo-compatible, at least 1) or ``ceil(N/100)``, stored beside the value.
    Similarities are computed in float32 on the descriptors' device. This is the trainer's light
    helper; geo-bench holds the full metrics package.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["RecallResult", "compute_ranks", "embed_dataset", "recall_at_k"]


@dataclass(frozen=True)
class RecallResult:
    """Recall values in percent keyed ``"R@1"``, ``"R@5"``, ..., ``"R@1%"``, with the protocol."""

    recall: dict[str, float] = field(default_factory=dict)
    top1pct_k: int = 1
    top1pct_rule: str = "floor"
    n_query: int = 0
    n_reference: int = 0
    ties: str = "optimistic"

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            **self.recall,
            "K_1pct": self.top1pct_k,
            "top1pct_rule": self.top1pct_rule,
            "n_query": self.n_query,
            "n_reference": self.n_reference,
            "ties": self.ties,
        }


def _dot(q: Tensor, r: Tensor) -> Tensor:
    return q.flatten(1).float() @ r.flatten(1).float().T


def compute_ranks(
    query: Tensor,
    reference: Tensor,
    gt_index: Tensor | None = None,
    *,
    similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
    block: int = 1024,
    ties: str = "optimistic",
) -> Tensor:
    """Rank of each query's true reference among all references.

    Args:
        query: (Nq, ...) query descriptors.
        reference: (Nr, ...) reference descriptors.
        gt_index: (Nq,) int64 index of each query's true reference (default ``arange(Nq)``).
        similarity: ``f(q_block, reference) -> (b, Nr)``; default dot product in float32 (use the
            model's ``similarity`` for orientation-aware models).
        block: queries per block.
        ties: ``"optimistic"`` (strict ``>``) or ``"pessimistic"`` (``>=``, the match excluded).

    Returns:
        (Nq,) int64 ranks (0 = retrieved first).
    """
    if ties not in ("optimistic", "pessimistic"):
        raise ValueError(f"ties must be 'optimistic' or 'pessimistic', got {ties!r}")
    n_query, n_ref = query.shape[0], reference.shape[0]
    if gt_index is None:
        if n_query != n_ref:
            raise ValueError(f"gt_index is required when Nq ({n_query}) != Nr ({n_ref})")
        gt_index = torch.arange(n_query)
    gt_index = gt_index.to(device=query.device, dtype=torch.int64)
    if gt_index.shape != (n_query,):
        raise ValueError(f"gt_index must be ({n_query},), got {tuple(gt_index.shape)}")
    sim_fn = similarity or _dot
    ranks = []
    for start in range(0, n_query, block):
        sim = sim_fn(query[start : start + block], reference).float()
        gt = gt_index[start : start + block, None].to(sim.device)
        pos = sim.gather(1, gt)
        if ties == "optimistic":
            ranks.append((sim > pos).sum(1))
        else:
            ranks.append((sim >= pos).sum(1) - 1)
    return torch.cat(ranks).cpu()


def recall_at_k(
    query: Tensor,
    reference: Tensor,
    gt_index: Tensor | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    top1pct_rule: str = "floor",
    similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
    block: int = 1024,
    ties: str = "optimistic",
) -> RecallResult:
    """R@K (percent) for ``ks`` and the top-1%, from blockwise ranks (see module convention).

    Example:
        >>> q = torch.eye(4)
        >>> recall_at_k(q, q).recall["R@1"]
        100.0
    """
    if top1pct_rule not in ("floor", "ceil"):
        raise ValueError(f"top1pct_rule must be 'floor' or 'ceil', got {top1pct_rule!r}")
    ranks = compute_ranks(query, reference, gt_index, similarity=similarity, block=block, ties=ties)
    n_ref = reference.shape[0]
    k1 = max(1, n_ref // 100 if top1pct_rule == "floor" else math.ceil(n_ref / 100))
    recall = {f"R@{k}": 100.0 * float((ranks < k).double().mean()) for k in ks}
    recall["R@1%"] = 100.0 * float((ranks < k1).double().mean())
    return RecallResult(
        recall=recall,
        top1pct_k=k1,
        top1pct_rule=top1pct_rule,
        n_query=int(query.shape[0]),
        n_reference=int(n_ref),
        ties=ties,
    )


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


@torch.no_grad()
def embed_dataset(
    model: nn.Module,
    dataset: Dataset,
    *,
    prepare: Callable[[dict], dict] | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, list[str]]:
    """Ground and aerial descriptors of every sample of ``dataset``, in dataset order.

    Args:
        model: a cross-view model with ``encode_ground`` / ``encode_aerial`` (DDP-wrapped is fine).
        dataset: yields sample dicts with ``"ground"``, ``"aerial"``, ``"id"``.
        prepare: batch transform applied on ``device`` before encoding (normalisation, resizing,
            polar transform; no random augmentation).
        batch_size: samples per forward pass.
        device: where the model runs.
        num_workers: DataLoader workers.
        autocast_dtype: run the encoders under autocast with this dtype (None: full precision).
        progress: show a tqdm bar.

    Returns:
        ``(ground, aerial, ids)``: two float32 tensors (N, ...) on ``device`` and the N ids.
    """
    from tqdm.auto import tqdm

    net = _unwrap(model)
    was_training = net.training
    net.eval()
    device = torch.device(device)
    # a private generator keeps the global RNG untouched (exact resume of training runs)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, generator=torch.Generator()
    )
    grounds, aerials, ids = [], [], []
    try:
        for batch in tqdm(loader, desc="embed", disable=not progress, leave=False):
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            if prepare is not None:
                batch = prepare(batch)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                g = net.encode_ground(batch["ground"])
                a = net.encode_aerial(batch["aerial"])
            grounds.append(g.float())
            aerials.append(a.float())
            ids.extend(str(i) for i in batch["id"])
    finally:
        net.train(was_training)
    return torch.cat(grounds), torch.cat(aerials), ids
