"""Train one recipe of a run: :func:`train_recipe` and its trainer callbacks.

Convention:
    - **Selection.** On the synthetic world training uses the whole train region and the trainer
      selects ``best/`` on the world's val region (``selection_split="val"``); on real data it
      uses the train split minus a fixed, seeded held-out slice
      (``geo_retrieval.training.split_holdout``, ``"train-holdout"``). The returned model holds the
      ``best/`` weights (``last/`` when nothing was selected); the test split is never seen here. Run folder layout: :class:`geo_retrieval.run_folder.RunLayout`.
    - **Resume.** An existing ``last/`` is resumed (bitwise, by the trainer); a folder that a crash
      left missing is recovered first.
    - **Time budget.** ``RunConfig.time_budget_s`` trains for that many wall-clock seconds
      (:class:`TimeBudget`, a trainer callback raising ``StopTraining``; the trainer saves
      ``last/``, ``best/`` stays the best held-out epoch), counting a resumed run's seconds.
    - **Validation from part-way.** ``RunConfig.val_from`` skips validating the first
      ``floor(val_from * epochs)`` epochs (the trainer's ``eval_start``); they cannot be selected.
    - **Progress.** :class:`ProgressCallback` sends ``step`` events (:mod:`.progress`) to a sink.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geo_retrieval.checkpoint import load_model_weights
from geo_retrieval.recipes import Recipe, build
from geo_retrieval.run_folder import BEST, LAST, RunLayout
from geo_retrieval.training import StopTraining, Trainer, recover_checkpoint, split_holdout

from .config import RunConfig, config_hash
from .progress import progress_interval

__all__ = [
    "EventSink",
    "ProgressCallback",
    "TimeBudget",
    "TrainedRun",
    "first_validated_epoch",
    "train_recipe",
]

log = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    """A trained (or resumed) recipe: the model with its selected weights loaded."""

    recipe: Recipe
    model: nn.Module
    run_dir: Path
    config: str
    train_seconds: float
    global_step: int
    checkpoint: str
    selection_split: str | None
    best_metric: float | None
    stopped_by_budget: bool = False


#: A progress event sink (see :mod:`.progress`).
EventSink = Callable[[dict[str, Any]], None]


def _last_val_r1(history: Sequence[dict[str, Any]]) -> float | None:
    for record in reversed(history):
        value = record.get("val/R@1")
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _loss(logs: dict[str, Any]) -> float | None:
    """The training loss of a step's logs: ``loss``, else the first ``*loss*`` entry, else None."""
    if isinstance(logs.get("loss"), (int, float)):
        return float(logs["loss"])
    for key, value in logs.items():
        if "loss" in key and isinstance(value, (int, float)):
            return float(value)
    return None


class ProgressCallback:
    """Trainer callback (``f(trainer, logs)`` after every step) that sends ``step`` events (see
    :mod:`.progress`): epoch, epochs, step, total steps, the step's loss and the last held-out R@1.

    Args:
        recipe: the recipe name in the events.
        sink: where events go (a queue's ``put``, a view's ``update``).
        min_interval_s: at most one event per this many seconds, besides the first step of every
            epoch and the last step.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        recipe: str,
        sink: EventSink,
        *,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recipe = recipe
        self.sink = sink
        self.min_interval_s = float(min_interval_s)
        self.clock = clock
        self._last: float | None = None
        self._epoch: int | None = None

    def __call__(self, trainer: Any, logs: dict[str, Any]) -> None:
        now = self.clock()
        total = int(trainer.epochs) * int(trainer.steps_per_epoch)
        if getattr(trainer, "max_steps", None):
            total = min(total, int(trainer.max_steps))
        step = int(trainer.global_step)
        due = (
            self._last is None
            or now - self._last >= self.min_interval_s
            or trainer.epoch != self._epoch
            or step >= total
        )
        if not due:
            return
        self._last, self._epoch = now, trainer.epoch
        self.sink(
            {
                "kind": "step",
                "recipe": self.recipe,
                "epoch": int(trainer.epoch),
                "epochs": int(trainer.epochs),
                "step": step,
                "total_steps": total,
                "loss": _loss(logs),
                "val_r1": _last_val_r1(trainer.history),
            }
        )


class TimeBudget:
    """Trainer callback that stops training (``geo_retrieval.training.StopTraining``; the trainer
    saves ``last/``) once ``budget_s`` wall-clock seconds of training are spent, counting the
    seconds of a resumed run (:meth:`begin`).

    Args:
        budget_s: seconds (> 0).
        clock: monotonic seconds.
    """

    def __init__(self, budget_s: float, *, clock: Callable[[], float] = time.perf_counter) -> None:
        if not budget_s > 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        self.budget_s = float(budget_s)
        self.clock = clock
        self.start: float | None = None
        self.stopped = False

    def begin(self, already_s: float = 0.0) -> None:
        """Start the clock, ``already_s`` seconds of (resumed) training spent."""
        self.start = self.clock() - float(already_s)

    def __call__(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.start is None:
            self.begin(float(getattr(trainer, "train_seconds", 0.0)))
        if self.clock() - self.start >= self.budget_s:  # type: ignore[operator]
            self.stopped = True
            raise StopTraining(f"time budget of {self.budget_s:g} s spent")


def first_validated_epoch(cfg: RunConfig, epochs: int) -> int:
    """The first epoch (0-based) of an ``epochs``-long schedule that ``cfg`` validates:
    ``floor(cfg.val_from * epochs)``, at most the last epoch."""
    return min(max(0, int(epochs) - 1), math.floor(cfg.val_from * int(epochs)))


def train_recipe(
    recipe: Recipe,
    train_full: Any,
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = False,
    events: EventSink | None = None,
    val: Any = None,
    init: Callable[[Any], None] | None = None,
) -> TrainedRun:
    """Train ``recipe`` and return the model with its ``best/`` weights (``last/`` if nothing was
    selected). On the synthetic world it trains on all of ``train_full`` and selects on ``val`` (the
    world's val region, required); on real data on ``train_full`` minus a held-out slice
    (``cfg.holdout``), selecting on that slice.

    ``events`` receives progress events (:class:`ProgressCallback`); ``cfg.time_budget_s`` stops
    training when spent (:class:`TimeBudget`). ``init(model)`` runs on the freshly built model (initial
    weights, ``geo-bench train --init``)."""
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    recover_checkpoint(layout.last)  # a crash while last/ was being replaced leaves it aside
    with torch.random.fork_rng(
        devices=[]
    ):  # the initial weights depend on the seed only, not on what ran before
        torch.manual_seed(cfg.seed)
        model = build(recipe)
    if init is not None:  # e.g. ImageNet-21k weights (geo-bench train --init); a resume overwrites them
        init(model)
    if cfg.dataset == "synthetic":
        if val is None:
            raise ValueError(
                "the synthetic world selects on its val region: pass val= (open_datasets(...).val)"
            )
        train = train_full
    else:
        if val is not None:
            raise ValueError(f"{cfg.dataset} selects on a held-out slice of train (--holdout), not on val=")
        train, val = split_holdout(train_full, fraction=cfg.holdout, seed=cfg.seed)
    has_last = layout.state(LAST).exists()
    callbacks: list[Callable[[Any, dict], None]] = []
    if events is not None:
        callbacks.append(
            ProgressCallback(recipe.name, events, min_interval_s=min(1.0, progress_interval() / 4))
        )
    budget = TimeBudget(cfg.time_budget_s) if cfg.time_budget_s is not None else None
    if budget is not None:
        callbacks.append(budget)
    trainer = Trainer(
        model,
        recipe,
        train,
        val,
        out_dir=run_dir,
        seed=cfg.seed,
        device=cfg.device,
        max_steps=cfg.max_steps,
        eval_start=first_validated_epoch(cfg, recipe.epochs),
        progress=progress,
        resume=bool(resume and has_last),
        callbacks=callbacks,
    )
    if has_last and resume:
        log.info("%s: resuming from %s (epoch %d)", recipe.name, layout.last, trainer.epoch)
    if budget is not None:
        budget.begin(trainer.train_seconds)
    result = trainer.fit()
    weights = layout.weights(BEST)
    if not weights.exists():
        weights = layout.weights(LAST)
    checkpoint = load_model_weights(trainer.raw_model, weights)
    return TrainedRun(
        recipe,
        trainer.raw_model,
        run_dir,
        config_hash(recipe.to_dict(), cfg),
        result.train_seconds,
        result.global_step,
        checkpoint,
        result.selection_split,
        result.best_metric,
        stopped_by_budget=bool(budget is not None and budget.stopped),
    )
