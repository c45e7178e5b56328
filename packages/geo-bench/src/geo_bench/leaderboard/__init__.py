"""The leaderboard: train and evaluate every registered recipe (and a no-learning baseline) on one
dataset, keep the results in the store, render tables and plots, and the published numbers.

Modules: :mod:`.data` (synthetic world / real datasets), :mod:`.config` (the run configuration,
its hash, recipes, opening the data), :mod:`.training` (training one recipe, trainer callbacks),
:mod:`.evaluation` (test protocols), :mod:`.recording` (records, what the store holds),
:mod:`.examples` (retrieval examples), :mod:`.checkpoints` (what a ``--checkpoint`` path names),
:mod:`.pool` (recipes in worker processes), :mod:`.runner` (:func:`run_leaderboard`),
:mod:`.table` (terminal / Markdown / CSV / JSON), :mod:`.plots` (PNG figures), :mod:`.reported`
(the published numbers of ``results.md``).
"""

from __future__ import annotations

from geo_retrieval.checkpoint import CheckpointMismatchError

from .checkpoints import RunFolder, read_run_json, resolve_run
from .config import (
    EVAL_SPLITS,
    TINY,
    TINY_WORLD,
    RunConfig,
    config_hash,
    get_recipe_or_raise,
    open_datasets,
    tiny_config,
    uses_synthesis,
)
from .data import RolledGround, TensorPairs, WorldConfig, load_world
from .examples import EXAMPLE_K, EXAMPLE_QUERIES, EXAMPLES_FILE, retrieval_examples
from .recording import evaluate_trained
from .runner import run_leaderboard
from .training import EventSink, ProgressCallback, TimeBudget, TrainedRun, train_recipe

__all__ = [
    "EVAL_SPLITS",
    "EXAMPLES_FILE",
    "EXAMPLE_K",
    "EXAMPLE_QUERIES",
    "TINY",
    "TINY_WORLD",
    "CheckpointMismatchError",
    "EventSink",
    "ProgressCallback",
    "RolledGround",
    "RunConfig",
    "RunFolder",
    "TensorPairs",
    "TimeBudget",
    "TrainedRun",
    "WorldConfig",
    "config_hash",
    "evaluate_trained",
    "get_recipe_or_raise",
    "load_world",
    "open_datasets",
    "read_run_json",
    "resolve_run",
    "retrieval_examples",
    "run_leaderboard",
    "tiny_config",
    "train_recipe",
    "uses_synthesis",
]
