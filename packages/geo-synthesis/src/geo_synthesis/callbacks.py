"""Trainer callbacks for synthesis models.

Convention:
    a callback is ``f(trainer, logs)``, called by :class:`geo_retrieval.training.Trainer` after
    every step (``logs["step"]`` is the global step just completed). Callbacks here run the model
    in eval mode without gradients and draw nothing from the global RNG, so they do not change
    the training run (exact resume still holds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .grids import save_image_grid

__all__ = ["SynthesisGridCallback"]


class SynthesisGridCallback:
    """Write a PNG grid (aerial | synthesised | real) of a fixed batch every ``every_n_steps`` steps.

    Args:
        every_n_steps: period in global steps (>= 1).
        out_dir: directory of ``step_0000100.png`` ... (created).
        fixed_batch: raw samples as the dataset yields them: a dict with ``"ground"`` (B, 3, H, W)
            and ``"aerial"`` (B, 3, h, w) in [0, 1], or a dataset (its first ``num_samples``
            items are stacked once).
        num_samples: rows taken from a dataset.

    The trainer's eval preprocessing (polar transform, resize, [-1, 1] normalisation) is applied;
    the model must provide ``synthesise(aerial) -> (B, 3, H, W)`` in [-1, 1]
    (:class:`~geo_synthesis.toker.Toker21Model`) or a ``generator`` returning ``(image, ...)``.
    """

    def __init__(
        self,
        every_n_steps: int,
        out_dir: str | os.PathLike[str],
        fixed_batch: Mapping[str, Tensor] | Dataset,
        *,
        num_samples: int = 4,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.out_dir = Path(out_dir)
        if isinstance(fixed_batch, Mapping):
            batch = {k: fixed_batch[k] for k in ("ground", "aerial")}
        else:
            n = min(int(num_samples), len(fixed_batch))  # type: ignore[arg-type]
            items = [fixed_batch[i] for i in range(n)]
            batch = {k: torch.stack([it[k] for it in items]) for k in ("ground", "aerial")}
        for k, v in batch.items():
            if not isinstance(v, Tensor) or v.ndim != 4:
                raise ValueError(f"fixed_batch[{k!r}] must be a (B, 3, H, W) tensor")
        self.batch = batch
        self.written: list[Path] = []

    @staticmethod
    def _synthesise(model: Any, aerial: Tensor) -> Tensor:
        if callable(getattr(model, "synthesise", None)):
            return model.synthesise(aerial)
        out = model.generator(aerial)
        return out[0] if isinstance(out, (tuple, list)) else out

    @torch.no_grad()
    def write(self, trainer: Any, step: int) -> Path:
        """Render the grid for ``step`` now; returns the file."""
        model = trainer.raw_model
        batch = {k: v.to(trainer.device) for k, v in self.batch.items()}
        batch = trainer.transform(batch, None, train=False)
        was_training = model.training
        model.eval()
        try:
            with trainer.autocast():
                fake = self._synthesise(model, batch["aerial"]).float()
        finally:
            model.train(was_training)
        columns: Sequence[Tensor] = [batch["aerial"], fake, batch["ground"]]
        path = save_image_grid(
            columns, self.out_dir / f"step_{step:07d}.png", labels=("aerial (polar)", "synthesised", "real")
        )
        self.written.append(path)
        return path

    def __call__(self, trainer: Any, logs: Mapping[str, Any]) -> None:
        step = int(logs.get("step", getattr(trainer, "global_step", 0)))
        if step % self.every_n_steps == 0 and getattr(trainer, "is_main", True):
            self.write(trainer, step)
