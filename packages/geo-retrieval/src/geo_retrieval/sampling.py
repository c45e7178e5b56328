"""Batch samplers for contrastive cross-view training: unique-ID, GPS-neighbour and similarity batches.

Convention:
    every sampler here is a *batch* sampler (``Sampler[list[int]]``, pass it as ``batch_sampler=``)
    that yields **global** batches of dataset indices; under DDP each rank takes its contiguous
    slice with :func:`rank_slice`, so uniqueness holds across the whole global batch. A batch never
    holds two samples of the same group (by default the sample id; VIGOR-style data can group by
    aerial id). The order is a pure function of ``(seed, epoch)`` (numpy PCG64), so a resumed run
    replays it exactly; call :meth:`set_epoch` every epoch. The last partial batch is dropped.

    Hard-negative batches follow Sample4Geo: walk a shuffled anchor list; each anchor pulls its
    ``n_near`` nearest neighbours plus ``n_far`` drawn at random from neighbour ranks
    ``n_near .. neighbour_range``; every sample is used at most once per epoch. Neighbours come from
    geography (:func:`geo_neighbours`: haversine on latitude/longitude given in **degrees** and
    converted to radians, or euclidean on UTM metres) or from descriptor similarity after
    re-embedding the train set (:func:`similarity_neighbours`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from .geodesy import haversine_distance

__all__ = [
    "GPSNeighbourBatchSampler",
    "NeighbourBatchSampler",
    "SimilarityBatchSampler",
    "UniqueIdBatchSampler",
    "geo_neighbours",
    "rank_slice",
    "similarity_neighbours",
]


def _group_codes(groups: Sequence[Any] | Tensor | None, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n, dtype=np.int64)
    if len(groups) != n:
        raise ValueError(f"groups must have one entry per sample ({n}), got {len(groups)}")
    codes: dict[Any, int] = {}
    values = groups.tolist() if isinstance(groups, Tensor) else list(groups)
    return np.asarray([codes.setdefault(g, len(codes)) for g in values], dtype=np.int64)


def _blockwise_topk(
    score_rows: Callable[[slice], Tensor], n: int, k: int, groups: np.ndarray, *, largest: bool, block: int
) -> Tensor:
    """Top-k columns of an implicit (n, m) score matrix, rows in blocks, same-group columns excluded."""
    codes = torch.from_numpy(groups)
    out = []
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        scores = score_rows(rows).to(torch.float64)
        if scores.shape[1] != len(codes):
            raise ValueError(f"groups cover {len(codes)} columns, scores have {scores.shape[1]}")
        same = codes[rows, None] == codes[None, :]
        scores = scores.masked_fill(same, math.inf if not largest else -math.inf)
        kk = min(k, scores.shape[1])
        out.append(torch.topk(scores, kk, dim=1, largest=largest, sorted=True).indices)
    return torch.cat(out).to(torch.int64)


def geo_neighbours(
    coords: Tensor,
    k: int,
    *,
    metric: str = "haversine",
    groups: Sequence[Any] | Tensor | None = None,
    block: int = 512,
) -> Tensor:
    """Indices of each sample's ``k`` geographically nearest other samples, nearest first.

    Args:
        coords: (N, 2): (lat, lon) in **degrees** for ``metric="haversine"``, or (easting, northing)
            in metres for ``metric="euclidean"`` (UTM; keep float64).
        k: neighbours per sample (clipped to the number of other groups).
        metric: ``"haversine"`` or ``"euclidean"``.
        groups: optional group key per sample; same-group samples (and the sample itself) are never
            neighbours.
        block: rows per block (memory is O(block * N), never N x N).

    Returns:
        (N, k) int64 indices.
    """
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2), got {tuple(coords.shape)}")
    if metric not in ("haversine", "euclidean"):
        raise ValueError(f"metric must be 'haversine' or 'euclidean', got {metric!r}")
    n = coords.shape[0]
    codes = _group_codes(groups, n)
    c64 = coords.to(torch.float64)

    def rows(sl: slice) -> Tensor:
        if metric == "haversine":
            return haversine_distance(c64[sl], c64)
        return torch.cdist(c64[sl], c64)

    return _blockwise_topk(rows, n, k, codes, largest=False, block=block)


def similarity_neighbours(
    query: Tensor,
    reference: Tensor,
    k: int,
    *,
    similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
    groups: Sequence[Any] | Tensor | None = None,
    block: int = 512,
) -> Tensor:
    """For each query i, the ``k`` references most similar to it, excluding its own match.

    Sample i's ground descriptor ``query[i]`` and aerial descriptor ``reference[i]`` form the
    positive pair; the returned references are the hardest *wrong* ones (Sample4Geo's
    similarity sampling).

    Args:
        query: (N, ...) descriptors of the ground views.
        reference: (N, ...) descriptors of the aerial views, same order.
        k: neighbours per query.
        similarity: ``f(q_block, reference) -> (b, N)``; default dot product of flattened rows.
        groups: optional group key per sample (same-group references are excluded too).
        block: query rows per block.

    Returns:
        (N, k) int64 indices, most similar first.
    """
    if query.shape[0] != reference.shape[0]:
        raise ValueError(f"query and reference must pair up, got {query.shape[0]} and {reference.shape[0]}")
    n = query.shape[0]
    codes = _group_codes(groups, n)
    sim = similarity or (lambda q, r: q.flatten(1).float() @ r.flatten(1).float().T)
    with torch.no_grad():
        return _blockwise_topk(
            lambda sl: sim(query[sl], reference).cpu(), n, k, codes, largest=True, block=block
        )


def rank_slice(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous share of a global batch (the batch size must divide evenly)."""
    if len(batch) % world_size:
        raise ValueError(f"global batch of {len(batch)} does not split over {world_size} ranks")
    per = len(batch) // world_size
    return list(batch[rank * per : (rank + 1) * per])


class UniqueIdBatchSampler(Sampler[list[int]]):
    """Shuffled batches in which no group (sample id) appears twice; deterministic by seed + epoch.

    Args:
        num_samples: dataset length.
        batch_size: the *global* batch size.
        groups: optional group key per sample (default: every sample its own group).
        seed: base seed; the epoch's order uses ``(seed, epoch)``.

    Example:
        >>> s = UniqueIdBatchSampler(10, 4, seed=0)
        >>> [len(b) for b in s], len(s)
        ([4, 4], 2)
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        groups: Sequence[Any] | Tensor | None = None,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.groups = _group_codes(groups, self.num_samples)
        if len(np.unique(self.groups)) < self.batch_size:
            raise ValueError(
                f"batch_size {batch_size} exceeds the number of distinct groups ({len(np.unique(self.groups))})"
            )
        self.seed = int(seed)
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    # -- public API ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._cache = (epoch, self._build(rng))
        return [list(b) for b in self._cache[1]]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]))
        self._cache = None

    # -- internals ----------------------------------------------------------------------------------
    def _candidates(self, anchor: int, rng: np.random.Generator) -> Sequence[int]:
        return ()

    def _build(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(self.num_samples)
        used = np.zeros(self.num_samples, dtype=bool)
        pool = deque(int(i) for i in order)
        batches: list[list[int]] = []
        current: list[int] = []
        in_batch: set[int] = set()
        stall = 0
        while pool:
            idx = pool.popleft()
            if used[idx]:
                continue
            if int(self.groups[idx]) in in_batch:
                pool.append(idx)  # retry in a later batch
                stall += 1
                if stall > len(pool):
                    break  # nothing left fits: drop the partial batch
                continue
            stall = 0
            for j in (idx, *self._candidates(idx, rng)):
                if len(current) >= self.batch_size:
                    break
                j = int(j)
                if used[j] or int(self.groups[j]) in in_batch:
                    continue
                used[j] = True
                current.append(j)
                in_batch.add(int(self.groups[j]))
            if len(current) >= self.batch_size:
                batches.append(current)
                current, in_batch = [], set()
        return batches


class NeighbourBatchSampler(UniqueIdBatchSampler):
    """Unique-ID batches where each anchor pulls in its hard negatives from a neighbour table.

    The arguments not listed below are those of :class:`UniqueIdBatchSampler`.

    Args:
        neighbours: (N, R) int64 table, row i = sample i's neighbours, nearest / most similar
            first; ``None`` gives plain unique-ID batches until :meth:`set_neighbours` is called.
        n_near: how many of the first neighbours join the anchor's batch.
        n_far: how many more are drawn at random from ranks ``n_near .. neighbour_range``.
        neighbour_range: the rank window for the random draw.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        neighbours: Tensor | None = None,
        n_near: int = 32,
        n_far: int = 32,
        neighbour_range: int = 128,
        groups: Sequence[Any] | Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(num_samples, batch_size, groups=groups, seed=seed)
        if n_near < 0 or n_far < 0:
            raise ValueError(f"n_near and n_far must be >= 0, got {n_near}, {n_far}")
        self.n_near, self.n_far, self.neighbour_range = int(n_near), int(n_far), int(neighbour_range)
        self.neighbours: np.ndarray | None = None
        if neighbours is not None:
            self.set_neighbours(neighbours)

    def set_neighbours(self, neighbours: Tensor | None) -> None:
        """Replace the neighbour table (takes effect from the next :meth:`batches` call)."""
        if neighbours is None:
            self.neighbours = None
        else:
            if neighbours.ndim != 2 or neighbours.shape[0] != self.num_samples:
                raise ValueError(f"neighbours must be ({self.num_samples}, R), got {tuple(neighbours.shape)}")
            self.neighbours = neighbours.detach().cpu().to(torch.int64).numpy().copy()
        self._cache = None

    def _candidates(self, anchor: int, rng: np.random.Generator) -> Sequence[int]:
        if self.neighbours is None:
            return ()
        row = self.neighbours[anchor, : self.neighbour_range]
        near = row[: self.n_near]
        far = row[self.n_near :]
        if self.n_far and len(far):
            far = rng.choice(far, size=min(self.n_far, len(far)), replace=False)
        else:
            far = far[:0]
        return [*near.tolist(), *far.tolist()]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["neighbours"] = None if self.neighbours is None else torch.from_numpy(self.neighbours.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.set_neighbours(state.get("neighbours"))


class GPSNeighbourBatchSampler(NeighbourBatchSampler):
    """Sample4Geo's GPS batches: hard negatives are the anchor's geographic neighbours.

    Give exactly one of ``latlon`` ((N, 2) degrees, haversine) or ``utm`` ((N, 2) metres,
    euclidean). Defaults are Sample4Geo's: 32 nearest + 32 random from ranks 33-128.
    """

    def __init__(
        self,
        batch_size: int,
        *,
        latlon: Tensor | None = None,
        utm: Tensor | None = None,
        n_near: int = 32,
        n_far: int = 32,
        neighbour_range: int = 128,
        groups: Sequence[Any] | Tensor | None = None,
        seed: int = 0,
    ) -> None:
        if (latlon is None) == (utm is None):
            raise ValueError("give exactly one of latlon= (degrees) or utm= (metres)")
        coords = latlon if latlon is not None else utm
        assert coords is not None
        metric = "haversine" if latlon is not None else "euclidean"
        table = geo_neighbours(coords, neighbour_range, metric=metric, groups=groups)
        super().__init__(
            coords.shape[0],
            batch_size,
            neighbours=table,
            n_near=n_near,
            n_far=n_far,
            neighbour_range=neighbour_range,
            groups=groups,
            seed=seed,
        )


class SimilarityBatchSampler(NeighbourBatchSampler):
    """Sample4Geo's similarity batches: after re-embedding the train set, each query's most similar
    *wrong* references become its hard negatives (:meth:`update`). Until the first update it uses
    ``neighbours`` (e.g. a GPS table) or plain unique-ID batches. The table is part of
    :meth:`state_dict`, so a resumed run uses the same table.
    """

    def update(
        self,
        query: Tensor,
        reference: Tensor,
        *,
        similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        """Recompute the neighbour table from train-set descriptors (ground ``query``, aerial
        ``reference``, both (N, ...) in dataset order)."""
        table = similarity_neighbours(
            query, reference, self.neighbour_range, similarity=similarity, groups=self.groups.tolist()
        )
        self.set_neighbours(table)
