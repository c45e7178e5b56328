"""Strict mapping of a published state dict onto one of our models.

Convention: a source renames its keys with a function ``rename(source_key) -> our key | None`` and
names the keys it consumes without a counterpart (``dropped``: key -> reason, e.g. Sample4Geo's
``logit_scale``, which belongs to the loss). :func:`map_state_dict` then insists that

- every source key is either renamed onto a key of our model or listed in ``dropped``;
- every parameter and persistent buffer of our model is filled, by exactly one source key;
- the shapes agree, and every floating value is finite.

Anything else raises one :class:`StateDictMismatchError` that names the file and lists the first
few missing, unexpected and mismatched keys with their counts. There is no ``strict=False``. Floating
tensors are cast to the dtype of our model's tensor (a float16 checkpoint loads into a float32
model); the casts are reported in :attr:`MappedState.casts`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..checkpoint import CheckpointMismatchError

__all__ = ["MappedState", "StateDictMismatchError", "map_state_dict"]

#: how many keys of each kind an error message shows
SHOWN = 5


class StateDictMismatchError(CheckpointMismatchError):
    """A published state dict does not map onto our model (names the file and the keys).

    Attributes:
        path: the checkpoint file.
        missing: our model's keys that no source key fills.
        unexpected: source keys with no counterpart (``"key"`` or ``"key -> our key"``).
        mismatched: ``"key: checkpoint (shape) vs model (shape)"`` entries (and non-finite values).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        what: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[str],
    ) -> None:
        self.path = os.fspath(path)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched

        def few(label: str, items: list[str]) -> str:
            shown = ", ".join(items[:SHOWN])
            more = f", ... ({len(items)} in all)" if len(items) > SHOWN else ""
            return f"{len(items)} {label} ({shown}{more})"

        parts = [
            few(label, items)
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mismatched", mismatched),
            )
            if items
        ]
        super().__init__(f"{self.path}: {what}: {'; '.join(parts)}")


@dataclass(frozen=True)
class MappedState:
    """The result of :func:`map_state_dict`.

    Attributes:
        state: our model's state dict (our keys, our dtypes).
        dropped: source keys consumed without a counterpart, with the reason.
        casts: ``{"float16 -> float32": count}`` of the dtype casts made.
    """

    state: dict[str, Tensor]
    dropped: dict[str, str] = field(default_factory=dict)
    casts: dict[str, int] = field(default_factory=dict)


def map_state_dict(
    source: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    rename: Callable[[str], str | None],
    *,
    path: str | os.PathLike[str],
    what: str = "the checkpoint does not fit the model",
    dropped: Mapping[str, str] | None = None,
) -> MappedState:
    """Map ``source`` onto the keys, shapes and dtypes of ``target`` (see the module Convention).

    Args:
        source: the published state dict (prefixes such as ``module.`` already stripped).
        target: our model's ``state_dict()`` (only its keys, shapes and dtypes are read; meta
            tensors do; meta tensors in ``source`` skip the finite check, for key / shape checks of
            large architectures).
        rename: source key -> our key, or None for a key this source does not know.
        path: the checkpoint file, named in the error.
        what: the start of the error message after the file name.
        dropped: source keys consumed on purpose without a counterpart -> why.

    Returns:
        A :class:`MappedState`.

    Raises:
        StateDictMismatchError: missing, unexpected or mismatched keys, or non-finite values.
        TypeError: a value of ``source`` is not a tensor.

    Example:
        >>> src = {"model.w": torch.ones(2), "logit_scale": torch.tensor(2.6)}
        >>> out = map_state_dict(src, {"net.w": torch.zeros(2)}, lambda k: "net." + k[6:] if k.startswith("model.") else None,
        ...                      path="ckpt.pth", dropped={"logit_scale": "belongs to the loss"})
        >>> sorted(out.state), out.dropped
        (['net.w'], {'logit_scale': 'belongs to the loss'})
        >>> map_state_dict({"x": torch.ones(3)}, {"net.w": torch.zeros(2)}, lambda k: None, path="ckpt.pth")
        Traceback (most recent call last):
        ...
        geo_retrieval.convert.mapping.StateDictMismatchError: ckpt.pth: the checkpoint does not fit the model: 1 missing (net.w); 1 unexpected (x)
    """
    dropped = dict(dropped or {})
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    casts: dict[str, int] = {}
    used_drops: dict[str, str] = {}
    claimed: set[str] = set()  # our keys some source key maps onto (filled or mismatched)
    for key in sorted(source):
        value = source[key]
        if not isinstance(value, Tensor):
            raise TypeError(f"{os.fspath(path)}: {key!r} is a {type(value).__name__}, not a tensor")
        if key in dropped:
            used_drops[key] = dropped[key]
            continue
        ours = rename(key)
        if ours is None:
            unexpected.append(key)
            continue
        if ours not in target:
            unexpected.append(f"{key} -> {ours}")
            continue
        if ours in origin:
            mismatched.append(f"{key} and {origin[ours]} both map to {ours}")
            continue
        claimed.add(ours)
        want = target[ours]
        if tuple(value.shape) != tuple(want.shape):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}")
            continue
        if value.is_floating_point():
            if not value.is_meta and not bool(torch.isfinite(value).all()):
                mismatched.append(f"{key}: holds NaN or infinite values")
                continue
            if value.dtype != want.dtype:
                label = (
                    f"{str(value.dtype).removeprefix('torch.')} -> {str(want.dtype).removeprefix('torch.')}"
                )
                casts[label] = casts.get(label, 0) + 1
                value = value.to(want.dtype)
        elif value.dtype != want.dtype:
            mismatched.append(f"{key}: checkpoint {value.dtype} vs model {want.dtype}")
            continue
        state[ours] = value
        origin[ours] = key
    missing = sorted(k for k in target if k not in claimed)
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(path, what, missing, unexpected, mismatched)
    return MappedState(state, used_drops, casts)
