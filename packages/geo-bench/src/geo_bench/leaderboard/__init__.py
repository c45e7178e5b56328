"""The leaderboard: train and evaluate every registered recipe (and a no-learning baseline) on one
dataset, keep the results in the store, render tables and plots, and the published numbers.

Modules: :mod:`.data` (synthetic world / real datasets), :mod:`.evaluation` (test protocols),
:mod:`.runner` (training, records, resume), :mod:`.table` (terminal / Markdown / CSV / JSON),
:mod:`.plots` (PNG figures), :mod:`.reported` (the published numbers of ``results.md``).
"""

from __future__ import annotations

from .data import RolledGround, TensorPairs, WorldConfig, load_world
from .runner import TINY, CheckpointMismatchError, RunConfig, config_hash, run_leaderboard, train_recipe

__all__ = [
    "TINY",
    "CheckpointMismatchError",
    "RolledGround",
    "RunConfig",
    "TensorPairs",
    "WorldConfig",
    "config_hash",
    "load_world",
    "run_leaderboard",
    "train_recipe",
]
