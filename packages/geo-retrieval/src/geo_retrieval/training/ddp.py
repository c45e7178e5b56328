"""Process-group plumbing for ``torchrun`` training (DDP), kept to what the trainer needs.

Convention:
    a run is distributed when the ``WORLD_SIZE`` environment variable (set by ``torchrun``) is > 1.
    The backend is ``nccl`` on CUDA and ``gloo`` otherwise; each rank uses ``cuda:LOCAL_RANK`` on
    CUDA. Rank 0 evaluates, writes files and logs; others wait at a barrier. Everything here is a
    no-op in a single process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "all_reduce_mean_",
    "barrier",
    "broadcast_object",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "unwrap_model",
]


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


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
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; small objects only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean_(tensors: list[Tensor]) -> None:
    """Average tensors (e.g. gradients) across ranks in place."""
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
