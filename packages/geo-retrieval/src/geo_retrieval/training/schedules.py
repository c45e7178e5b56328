"""Learning-rate and hard-negative schedules.

Convention:
    learning-rate schedules are *per optimiser step*: factor(step) multiplies the base lr, with a
    linear warm-up from ``1/(warmup_steps+1)`` to 1 over ``warmup_steps`` steps, then a half-cosine
    from 1 down to ``min_factor`` at ``total_steps`` (held there afterwards). Epoch schedules (the
    hard-negative ratio) are piecewise constant over 0-indexed epochs, given as
    ``((start_epoch, value), ...)`` sorted by start epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosine", "build_lr_scheduler", "piecewise_value"]


class WarmupCosine:
    """Per-step lr factor: linear warm-up, then cosine (or constant) decay.

    A plain callable object (not a closure) so that :class:`~torch.optim.lr_scheduler.LambdaLR`
    stores its fields in ``state_dict()`` and a resumed run restores them exactly.

    Args:
        warmup_steps: number of warm-up steps (0 for none).
        total_steps: step at which the cosine reaches ``min_factor``.
        kind: ``"cosine"`` or ``"constant"`` (1 after the warm-up).
        min_factor: the final factor of the cosine.

    Example:
        >>> f = WarmupCosine(warmup_steps=2, total_steps=10)
        >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10, 20)]
        [0.333, 0.667, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(
        self, *, warmup_steps: int, total_steps: int, kind: str = "cosine", min_factor: float = 0.0
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if kind not in ("cosine", "constant"):
            raise ValueError(f"kind must be 'cosine' or 'constant', got {kind!r}")
        if not 0.0 <= min_factor <= 1.0:
            raise ValueError(f"min_factor must lie in [0, 1], got {min_factor}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.kind = kind
        self.min_factor = float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __repr__(self) -> str:
        return (
            f"WarmupCosine(warmup_steps={self.warmup_steps}, total_steps={self.total_steps}, "
            f"kind={self.kind!r}, min_factor={self.min_factor})"
        )


def build_lr_scheduler(
    optimizer: Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    kind: str = "cosine",
    min_factor: float = 0.0,
) -> LambdaLR:
    """A :class:`LambdaLR` stepping :class:`WarmupCosine` once per optimiser step."""
    return LambdaLR(
        optimizer,
        WarmupCosine(warmup_steps=warmup_steps, total_steps=total_steps, kind=kind, min_factor=min_factor),
    )


def piecewise_value(schedule: Sequence[tuple[int, float]], epoch: int) -> float:
    """Value of a piecewise-constant epoch schedule ``((start_epoch, value), ...)`` at ``epoch``.

    Example:
        >>> toker = ((0, 1.0), (21, 0.1), (41, 0.05), (61, 0.01))
        >>> [piecewise_value(toker, e) for e in (0, 20, 21, 60, 61, 199)]
        [1.0, 1.0, 0.1, 0.05, 0.01, 0.01]
    """
    if not schedule:
        raise ValueError("schedule must hold at least one (start_epoch, value) pair")
    starts = [int(s) for s, _ in schedule]
    if starts != sorted(starts) or starts[0] != 0:
        raise ValueError(f"schedule start epochs must be sorted and begin at 0, got {starts}")
    value = float(schedule[0][1])
    for start, v in schedule:
        if epoch >= start:
            value = float(v)
    return value
