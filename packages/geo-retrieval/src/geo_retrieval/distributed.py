"""The one place the package touches ``torch.distributed``: rank helpers and a differentiable gather.

Convention: when no process group is initialised everything degrades to a single process
(rank 0, world size 1, gather = identity), so library code calls these unconditionally.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_with_grad", "barrier", "is_distributed", "is_main_process", "rank", "world_size"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed)."""
    return rank() == 0


def barrier() -> None:
    """``dist.barrier()`` when distributed, else nothing."""
    if is_distributed():
        dist.barrier()


def all_gather_with_grad(tensor: Tensor, group: object | None = None) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, keeping the autograd graph.

    Each rank receives (W * B, ...) in rank order and gradients flow back to every rank's slice,
    so a loss over global in-batch negatives is exact. Shapes must be equal on all ranks
    (use ``drop_last=True``). L2-normalise before gathering.

    Uses ``torch.distributed._functional_collectives.all_gather_single_autograd`` (traceable by
    ``torch.compile``); falls back to the deprecated ``torch.distributed.nn.functional.all_gather``.
    Returns ``tensor`` unchanged when not distributed or with one process.

    Args:
        tensor: (B, ...) local tensor.
        group: process group (default: the world).

    Returns:
        (W * B, ...) tensor.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor must be a Tensor, got {type(tensor).__name__}")
    if not is_distributed():
        return tensor
    pg = group if group is not None else dist.group.WORLD
    if dist.get_world_size(pg) == 1:
        return tensor
    tensor = tensor.contiguous()
    gather = _functional_gather()
    if gather is not None:
        out = gather(tensor, 0, pg)
        # functional collectives may return an async tensor; make it concrete before use
        wait = getattr(out, "wait", None)
        return wait() if callable(wait) else out
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(tensor, group=pg), dim=0)


def _functional_gather():
    try:
        from torch.distributed._functional_collectives import all_gather_single_autograd
    except (ImportError, AttributeError):
        return None
    return all_gather_single_autograd
