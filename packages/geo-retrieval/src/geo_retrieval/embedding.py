"""Descriptor extraction: the one batched embedding loop.

Every descriptor in the project is computed here: the trainer's validation
(:meth:`geo_retrieval.training.Trainer.embed` through :func:`embed_dataset`), search
(:func:`geo_retrieval.search.extract_descriptors`) and the leaderboard / ``geo-bench evaluate``.

Convention:
    - Input: a map-style ``Dataset`` of sample dicts (batched by a ``DataLoader`` in dataset order,
      ``shuffle=False``, a private ``torch.Generator`` so the global RNG is untouched), an iterable of
      batches (e.g. a ``DataLoader``; dicts, tuples or tensors) or an (N, ...) tensor (split into
      ``batch_size`` chunks).
    - Per batch: the tensors are moved to ``device`` (every tensor of a dict when ``prepare`` is given,
      since ``prepare`` sees the whole batch; else only the entries encoded), ``prepare(batch)`` runs
      outside autocast (deterministic eval preprocessing: resize, polar transform, normalisation),
      then every encoder runs under ``torch.no_grad`` (and ``torch.autocast`` with ``autocast_dtype``
      when given) on its entry, in the order of ``encoders``; outputs are cast to float32 and moved
      to ``out_device`` (default: stay on ``device``). Peak memory is one batch plus the outputs.
    - Modules that own an encoder (the encoder itself, or the ``nn.Module`` of a bound method such as
      ``model.encode_ground``) are switched to ``eval()`` for the pass and restored afterwards.
    - Outputs keep the input order; sample ids (``batch["id"]``) are collected as strings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .distributed import is_main_process, unwrap_model

if TYPE_CHECKING:
    from .protocols import CrossViewEncoder

__all__ = ["embed", "embed_dataset"]

#: Batch entry an encoder reads: a dict key (``"ground"``), a tuple position, or None (the batch itself).
EntryKey = str | int | None


def _owners(encoders: Iterable[Callable[[Tensor], Tensor]]) -> list[nn.Module]:
    """The distinct modules behind the encoders (a module, or the ``__self__`` of a bound method)."""
    out: list[nn.Module] = []
    for fn in encoders:
        owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, nn.Module) and all(owner is not o for o in out):
            out.append(owner)
    return out


def _default_device(owners: list[nn.Module]) -> torch.device:
    for owner in owners:
        param = next(owner.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")


def _batches(
    data: Dataset | Iterable[Any] | Tensor, batch_size: int, num_workers: int
) -> tuple[Iterable[Any], int | None]:
    """The batches of ``data`` and their number when known."""
    if isinstance(data, Tensor):
        n = data.shape[0]
        return (data[i : i + batch_size] for i in range(0, n, batch_size)), -(-n // batch_size)
    if isinstance(data, Dataset):
        # a private generator keeps the global RNG untouched (exact resume of training runs)
        data = DataLoader(
            data, batch_size=batch_size, shuffle=False, num_workers=num_workers, generator=torch.Generator()
        )
    try:
        total = len(data)  # type: ignore[arg-type]
    except TypeError:
        total = None
    return data, total


def _select(batch: Any, key: EntryKey) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        if key is None:
            raise ValueError(f"batches are dicts (keys {sorted(batch)}); pass key='ground' or key='aerial'")
        return batch[key]
    if isinstance(batch, (list, tuple)):
        return batch[0 if key is None else key]  # type: ignore[index]
    raise TypeError(f"cannot take images from a batch of type {type(batch).__name__}")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for v in batch)
    return batch


@torch.no_grad()
def embed(
    encoders: Mapping[EntryKey, Callable[[Tensor], Tensor]],
    data: Dataset | Iterable[Any] | Tensor,
    *,
    batch_size: int = 64,
    prepare: Callable[[Any], Any] | None = None,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    out_device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> tuple[dict[EntryKey, Tensor], list[str]]:
    """Encode every batch of ``data`` with each encoder, in input order (see the module convention).

    Args:
        encoders: ``{entry: encode_fn}``, e.g. ``{"ground": model.encode_ground, "aerial":
            model.encode_aerial}``; ``encode_fn`` maps (B, ...) images to (B, ...) descriptors. The entry
            is a dict key, a tuple position, or None for tensor batches (tuples: position 0).
        data: a ``Dataset`` of sample dicts, an iterable of batches, or an (N, ...) tensor.
        batch_size: samples per forward pass (ignored for an iterable of batches: its own size applies).
        prepare: batch transform applied on ``device`` before encoding (no random augmentation).
        device: where to encode (default: the device of the encoders' module parameters, else CPU).
        num_workers: ``DataLoader`` workers for a ``Dataset``.
        autocast_dtype: run the encoders under ``torch.autocast`` with this dtype (None: full precision).
        out_device: where the descriptors are collected (default: ``device``; CPU keeps large galleries
            off the GPU).
        progress: a tqdm bar (main process only).
        desc: the bar's label.

    Returns:
        ``(descriptors, ids)``: ``{entry: (N, ...) float32 tensor}`` in input order, and the N sample ids
        as strings (empty when the batches carry no ``"id"``).

    Raises:
        ValueError: no encoder, ``batch_size < 1``, or no batches to encode.

    Example:
        >>> net = torch.nn.Linear(4, 2)
        >>> out, ids = embed({None: net}, torch.rand(5, 4), batch_size=2)
        >>> out[None].shape, ids
        (torch.Size([5, 2]), [])
    """
    if not encoders:
        raise ValueError("encoders must name at least one encode function")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    owners = _owners(encoders.values())
    device = torch.device(device) if device is not None else _default_device(owners)
    out_device = torch.device(out_device) if out_device is not None else None
    was_training = [o.training for o in owners]
    batches, total = _batches(data, batch_size, num_workers)
    outs: dict[EntryKey, list[Tensor]] = {key: [] for key in encoders}
    ids: list[str] = []
    for owner in owners:
        owner.eval()
    try:
        bar = tqdm(batches, total=total, desc=desc, disable=not (progress and is_main_process()), leave=False)
        for batch in bar:
            if prepare is not None:
                batch = prepare(_to_device(batch, device))
                inputs = {key: _select(batch, key) for key in encoders}
            else:
                inputs = {key: _select(batch, key).to(device, non_blocking=True) for key in encoders}
            autocast: contextlib.AbstractContextManager[Any] = (
                torch.autocast(device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                for key, fn in encoders.items():
                    d = fn(inputs[key]).float()
                    outs[key].append(d if out_device is None else d.to(out_device))
            if isinstance(batch, Mapping) and "id" in batch:
                ids.extend(str(i) for i in batch["id"])
    finally:
        for owner, mode in zip(owners, was_training):
            owner.train(mode)
    if not next(iter(outs.values())):
        raise ValueError("no batches to encode (empty input)")
    return {key: torch.cat(chunks, dim=0) for key, chunks in outs.items()}, ids


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
    """Ground and aerial descriptors of every sample of ``dataset``, in dataset order (:func:`embed`
    with ``{"ground": model.encode_ground, "aerial": model.encode_aerial}``).

    Args:
        model: a cross-view model with ``encode_ground`` / ``encode_aerial`` (DDP-wrapped or compiled
            is fine: :func:`geo_retrieval.distributed.unwrap_model`).
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

    Example:
        >>> from geo_retrieval.testing import SyntheticPairs, TinyCrossView
        >>> ds = SyntheticPairs(3, aerial_size=16, ground_size=(8, 32))
        >>> g, a, ids = embed_dataset(TinyCrossView(), ds)
        >>> g.shape, a.shape, len(ids)
        (torch.Size([3, 16]), torch.Size([3, 16]), 3)
    """
    net = cast("CrossViewEncoder", unwrap_model(model))
    out, ids = embed(
        {"ground": net.encode_ground, "aerial": net.encode_aerial},
        dataset,
        batch_size=batch_size,
        prepare=prepare,
        device=device,
        num_workers=num_workers,
        autocast_dtype=autocast_dtype,
        progress=progress,
    )
    return out["ground"], out["aerial"], ids
