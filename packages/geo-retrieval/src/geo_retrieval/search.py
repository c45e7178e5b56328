"""Descriptor extraction and nearest-neighbour search.

Convention: queries are ground descriptors (Nq, D), the gallery aerial descriptors (Nr, D);
scores are inner products of unit descriptors (cosine) unless a ``similarity`` callable is given
(e.g. DSM's aligned similarity on feature maps). Results are ``(scores (Nq, k), indices (Nq, k))``
sorted by decreasing score. The exact torch path (:func:`topk_search`) is the reference; faiss
(:class:`FaissIndex`) is the fast path for large galleries. Neither ever builds the Nq x Nr matrix
at once; ranks and recall for metrics are computed by :mod:`geo_retrieval.ranking`, descriptors by
:mod:`geo_retrieval.embedding` (:func:`extract_descriptors` is one view of its loop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geo_transforms.errors import MissingDependencyError

from .embedding import _default_device, _owners, embed
from .heads.dsm import _check_pair, dsm_shift_to_degrees

__all__ = [
    "FaissIndex",
    "MissingDependencyError",
    "dsm_orientations",
    "extract_descriptors",
    "topk_search",
]


# ----------------------------------------------------------------------------------------------
# extraction


def extract_descriptors(
    encode_fn: Callable[[Tensor], Tensor],
    loader_or_tensor: Tensor | Iterable[Any],
    batch_size: int = 64,
    device: torch.device | str | None = None,
    *,
    amp: bool = False,
    amp_dtype: torch.dtype | None = None,
    key: str | int | None = None,
    out_device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "descriptors",
) -> Tensor:
    """Encode a dataset in batches, without gradients, with a progress bar (one view of
    :func:`geo_retrieval.embedding.embed`, the project's one embedding loop).

    Args:
        encode_fn: e.g. ``model.encode_ground``; the module behind it (an ``nn.Module`` passed
            directly, or the owner of a bound method) is switched to eval and back.
        loader_or_tensor: an (N, 3, H, W) tensor (split into ``batch_size`` chunks), a ``Dataset``
            of sample dicts (batched in order), or an iterable of batches (tensors, dicts ->
            ``batch[key]``, tuples -> ``batch[key or 0]``), e.g. a ``DataLoader`` (its own batch
            size applies).
        batch_size: chunk size for a tensor or ``Dataset`` input.
        device: where to encode (default: the device of ``encode_fn``'s module parameters, else
            CPU).
        amp: autocast (float16 on CUDA, bfloat16 on CPU unless ``amp_dtype``).
        key: which entry of dict/tuple batches holds the images.
        out_device: where descriptors are collected (CPU keeps large galleries off the GPU).
        progress: tqdm bar (main process only).

    Returns:
        (N, ...) float32 descriptors (or DSM maps), in input order.
    """
    device = torch.device(device) if device is not None else _default_device(_owners([encode_fn]))
    autocast_dtype = (
        (amp_dtype or (torch.float16 if device.type == "cuda" else torch.bfloat16)) if amp else None
    )
    out, _ = embed(
        {key: encode_fn},
        loader_or_tensor,
        batch_size=batch_size,
        device=device,
        autocast_dtype=autocast_dtype,
        out_device=out_device,
        progress=progress,
        desc=desc,
    )
    return out[key]


# ----------------------------------------------------------------------------------------------
# exact search


def topk_search(
    query: Tensor,
    reference: Tensor,
    k: int,
    *,
    chunk_size: int = 1024,
    reference_chunk_size: int | None = None,
    similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-k by blocks: never more than ``chunk_size x reference_chunk_size`` scores at once.

    Args:
        query: (Nq, ...) query descriptors; its device is where scores are computed.
        reference: (Nr, ...) gallery descriptors (may live on the CPU; chunks are moved).
        k: neighbours per query, 1 <= k <= Nr.
        chunk_size: queries per block.
        reference_chunk_size: gallery items per block (default: ``chunk_size * 8``).
        similarity: ``fn(q_block, r_block) -> (nq, nr)`` scores; default inner product
            ``q @ r.T`` (cosine for unit descriptors). For DSM:
            ``lambda g, a: dsm_similarity(g, a).similarity``.

    Returns:
        (scores (Nq, k), indices (Nq, k) long), scores decreasing along dim 1.
    """
    if not isinstance(query, Tensor) or not isinstance(reference, Tensor):
        raise TypeError("query and reference must be Tensors")
    if similarity is None and (
        query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]
    ):
        raise ValueError(
            f"query and reference must be (Nq, D) and (Nr, D), got {tuple(query.shape)} and {tuple(reference.shape)}"
        )
    n_ref = reference.shape[0]
    if not 1 <= k <= n_ref:
        raise ValueError(f"k must be in [1, Nr = {n_ref}], got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ref_chunk = reference_chunk_size or chunk_size * 8
    sim = similarity or (lambda q, r: q @ r.T)
    device = query.device
    all_scores, all_idx = [], []
    for qs in range(0, query.shape[0], chunk_size):
        q = query[qs : qs + chunk_size]
        best_s: Tensor | None = None
        best_i: Tensor | None = None
        for rs in range(0, n_ref, ref_chunk):
            r = reference[rs : rs + ref_chunk].to(device, non_blocking=True)
            s = sim(q, r)
            if s.shape != (q.shape[0], r.shape[0]):
                raise ValueError(f"similarity returned {tuple(s.shape)}, expected {(q.shape[0], r.shape[0])}")
            kk = min(k, s.shape[1])
            top_s, top_i = s.topk(kk, dim=1)
            top_i = top_i + rs
            if best_s is None or best_i is None:  # the first reference chunk (both are set together)
                best_s, best_i = top_s, top_i
            else:
                cat_s = torch.cat([best_s, top_s], dim=1)
                cat_i = torch.cat([best_i, top_i], dim=1)
                best_s, pos = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
                best_i = cat_i.gather(1, pos)
        assert best_s is not None and best_i is not None  # n_ref >= k >= 1: every block saw references
        all_scores.append(best_s)
        all_idx.append(best_i)
    return torch.cat(all_scores), torch.cat(all_idx)


# ----------------------------------------------------------------------------------------------
# DSM orientation of retrieved pairs


def dsm_orientations(
    ground_maps: Tensor, aerial_maps: Tensor, indices: Tensor, *, chunk_size: int = 256, degrees: bool = False
) -> Tensor:
    """Orientation shift of each query against each of its retrieved aerial maps.

    Args:
        ground_maps: (Nq, C, h, wg).
        aerial_maps: (Nr, C, h, W), the gallery.
        indices: (Nq, k) gallery indices (e.g. from :func:`topk_search`).
        chunk_size: queries per block.
        degrees: return degrees in [0, 360) (float64) instead of column shifts (long).

    Returns:
        (Nq, k): shift s such that ground column v aligns with aerial column (s + v) mod W
        (see :mod:`geo_retrieval.heads.dsm`).
    """
    _check_pair(ground_maps, aerial_maps)
    if indices.ndim != 2 or indices.shape[0] != ground_maps.shape[0]:
        raise ValueError(
            f"indices must be (Nq, k) with Nq = {ground_maps.shape[0]}, got {tuple(indices.shape)}"
        )
    width, wg = aerial_maps.shape[-1], ground_maps.shape[-1]
    out = []
    for qs in range(0, ground_maps.shape[0], chunk_size):
        g = ground_maps[qs : qs + chunk_size]
        idx = indices[qs : qs + chunk_size].to(aerial_maps.device)
        a = aerial_maps[idx].to(g.device)  # (n, k, C, h, W)
        real = torch.promote_types(g.dtype, torch.float32)
        gf = torch.fft.rfft(torch.nn.functional.pad(g.to(real), (0, width - wg)), dim=-1)
        af = torch.fft.rfft(a.to(real), dim=-1)
        corr = torch.fft.irfft(torch.einsum("nchf,nkchf->nkf", gf.conj(), af), n=width, dim=-1)
        out.append(corr.argmax(dim=-1))
    shift = torch.cat(out)
    return dsm_shift_to_degrees(shift, width) if degrees else shift


# ----------------------------------------------------------------------------------------------
# faiss


def _import_faiss() -> Any:
    try:
        import faiss  # optional dependency (the `faiss` / `faiss-gpu` extras)
    except ImportError as err:
        raise MissingDependencyError(
            "faiss is not installed; install the extra: pip install 'geo-retrieval[faiss]' "
            "(or [faiss-gpu]; never both)"
        ) from err
    return faiss


class FaissIndex:
    """Exact inner-product index (faiss ``IndexFlatIP``) over unit descriptors.

    Args:
        dim: descriptor size D.
        use_gpu: move the index to the GPU(s) (needs a faiss GPU build).
        shard: with several GPUs, split the gallery across them (``index_cpu_to_all_gpus`` with the
            shard option) instead of replicating it; results are merged by faiss.
        normalize: L2-normalise added and query vectors (a copy; input tensors are untouched).

    faiss returns neighbours, not ranks; ties may be ordered differently from
    :func:`topk_search`, which stays the reference.

    Example:
        >>> index = FaissIndex(4)
        >>> index.add(torch.eye(4))
        >>> index.search(torch.eye(4)[:1], 2)[1][0, 0].item()
        0
    """

    def __init__(
        self, dim: int, *, use_gpu: bool = False, shard: bool = False, normalize: bool = False
    ) -> None:
        faiss = _import_faiss()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.normalize = normalize
        index = faiss.IndexFlatIP(self.dim)
        if use_gpu:
            if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() < 1:
                raise RuntimeError("use_gpu=True needs a faiss GPU build and a visible GPU")
            options = faiss.GpuMultipleClonerOptions()
            options.shard = bool(shard)
            index = faiss.index_cpu_to_all_gpus(index, co=options)
        self._faiss = faiss
        self.index = index

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return int(self.index.ntotal)

    def _prepare(self, x: Tensor | Any, name: str) -> Any:
        arr = x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"{name} must be (N, {self.dim}), got {tuple(arr.shape)}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if self.normalize:
            arr = arr.copy()
            self._faiss.normalize_L2(arr)
        return arr

    def add(self, reference: Tensor | Any) -> None:
        """Append (N, D) gallery vectors; their ids continue from :attr:`ntotal`."""
        self.index.add(self._prepare(reference, "reference"))

    def search(self, query: Tensor | Any, k: int) -> tuple[Tensor, Tensor]:
        """(Nq, D) -> (scores (Nq, k) float32, indices (Nq, k) long) as CPU tensors."""
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be in [1, ntotal = {self.ntotal}], got {k}")
        scores, idx = self.index.search(self._prepare(query, "query"), k)
        return torch.from_numpy(scores), torch.from_numpy(idx).long()
