"""Helpers shared by this folder's benchmark scripts (run as scripts, so this folder is on
``sys.path``)."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the side-by-side drivers load this file without importing torch
    import torch

__all__ = ["StepTrainer", "peak_rss_mb", "side_by_side_harness"]


def side_by_side_harness() -> ModuleType:
    """geo-retrieval's ``benchmarks/_side_by_side.py`` (one home for the side-by-side harness)."""
    path = Path(__file__).resolve().parents[2] / "geo-retrieval" / "benchmarks" / "_side_by_side.py"
    spec = importlib.util.spec_from_file_location("_side_by_side", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_rss_mb() -> float:
    """This process's peak resident set size (``VmHWM``) in MiB; NaN where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class StepTrainer:
    """What a model's ``training_step`` needs from geo-retrieval's Trainer, and nothing more: its
    optimisers (stepped and zeroed by name), ``epoch`` / ``seed`` / ``global_step`` at 0, a no-op
    ``autocast`` and a plain ``backward`` (no AMP, no clipping, no schedule)."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.epoch, self.seed, self.global_step = 0, 0, 0

    def autocast(self) -> Any:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self, name: str) -> None:
        self.optimizers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)
