"""The one place the package touches ``torch.distributed``: ``torchrun`` process-group setup, rank
helpers, collectives and a differentiable gather.

Convention:
    a run is distributed when a process group is initialised with more than one rank (``torchrun``
    sets ``WORLD_SIZE`` > 1 and :func:`init_distributed` initialises the group). The backend is
    ``nccl`` on CUDA and ``gloo`` otherwise; each rank uses ``cuda:LOCAL_RANK`` on CUDA. Rank 0
    evaluates, writes files and logs; others wait at a barrier. Without a process group (or with
    one rank) everything degrades to a single process (rank 0, world size 1, gather = identity,
    barrier / reductions = no-ops), so library code calls these unconditionally.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "all_gather_with_grad",
    "all_reduce_mean_",
    "barrier",
    "broadcast_object",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "rank",
    "unwrap_model",
    "world_size",
]


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed)."""
    return rank() == 0


def init_distributed(device: torch.device | str | None = None, backend: str | None = None) -> torch.device:
    """Initialise the default process group from ``torchrun``'s environment when WORLD_SIZE > 1.

    Args:
        device: the requested device (``"cuda"`` picks ``cuda:LOCAL_RANK``); ``None`` picks CUDA when
            available.
        backend: override the backend (default ``nccl`` on CUDA, ``gloo`` otherwise).

    Returns:
        The device this rank should use.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return device


def barrier() -> None:
    """``dist.barrier()`` when distributed, else nothing."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; small objects only); ``obj`` itself when not
    distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean_(tensors: list[Tensor]) -> None:
    """Average tensors (e.g. gradients) across ranks in place; nothing when not distributed."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def all_gather_with_grad(tensor: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
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
    # lazy: torch.distributed.nn imports only on builds with distributed support (and pulls in rpc);
    # reached only inside an initialised process group
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(tensor, group=pg), dim=0)


def _functional_gather() -> Callable[..., Tensor] | None:
    try:  # lazy: a private torch module, present (with this name) only on some builds and versions
        from torch.distributed._functional_collectives import all_gather_single_autograd
    except (ImportError, AttributeError):
        return None
    return all_gather_single_autograd
