"""Train and evaluate recipes into the results store: the engine of ``geo-bench leaderboard``
(:func:`run_leaderboard`); ``train`` and ``evaluate`` use its parts.

Modules: :mod:`.config` (:class:`~.config.RunConfig`, the config hash, recipes, opening the data),
:mod:`.training` (:func:`~.training.train_recipe` and its callbacks), :mod:`.recording` (records,
what the store already holds), :mod:`.examples` (retrieval examples), :mod:`.pool` (recipes in
worker processes); checkpoint files: :mod:`.checkpoints`, :mod:`geo_retrieval.checkpoint`,
:mod:`geo_retrieval.run_folder`.

Convention:
    - **Data.** ``dataset="synthetic"`` renders the embedded world (:class:`~.data.WorldConfig`)
      once and caches it under ``<out>/cache``; CVUSA / CVACT / VIGOR are read from ``root``.
      On the world the trainer selects ``best/`` on its val region (``selection_split="val"``),
      on real data on a fixed, seeded held-out slice of train (``"train-holdout"``); the test split
      (CVACT: ``val`` = CVACT_val by default) and the world's cross-area city are only ever used for
      the final numbers, read once per run after training.
    - **Runs.** Each recipe trains in ``<out>/runs/<recipe>-<variant>-<config>-s<seed>/`` where
      ``config`` is :func:`~.config.config_hash` of the recipe, the data and the overrides. An
      existing ``last/`` there is resumed (bitwise, by the trainer). A recipe is skipped when the
      store holds a readable record of every protocol its evaluation produces
      (:func:`~.evaluation.expected_protocols`) for the same config, seed and git commit; a partial
      set (a record lost to a crash) is evaluated again.
    - **Records.** One :class:`~geo_bench.records.ResultRecord` per evaluation protocol
      (:mod:`.recording`); the baseline's carry ``backbone="none"`` and ``epochs=0``.
    - **Time budget.** ``RunConfig.time_budget_s`` trains every recipe for the same wall-clock
      budget (:class:`~.training.TimeBudget`). It enters the config hash and the protocol
      (``time_budget_s``).
    - **Progress.** Training and evaluation send small event dicts (:mod:`.progress`) to a
      :class:`~.progress.ProgressView`: in process for ``jobs == 1``, through a queue of the spawn
      context from the worker processes otherwise (:mod:`.pool`); the parent drains it while it waits.
    - **Retrieval examples.** After evaluation, the top references of the first test queries are
      written to ``<run folder>/examples.json`` (:func:`~.examples.retrieval_examples`);
      ``run_leaderboard(examples=...)`` collects them for :func:`~.plots.plot_retrieval_examples`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from geo_retrieval import recipes as registry
from geo_retrieval.recipes import Recipe, list_recipes

from ..baselines import BASELINE_NAME, ColourProfile
from ..records import ResultRecord, git_commit
from ..store import ResultStore
from .config import RunConfig, RunData, _hash, config_hash, get_recipe_or_raise, open_datasets
from .evaluation import area_splits, evaluate_baseline
from .examples import _read_examples, _write_examples
from .pool import WorkerPool, _run_parallel
from .progress import ProgressBoard, ProgressView
from .recording import _data_protocol, _done, _done_message, _records, evaluate_trained
from .training import train_recipe

__all__ = ["run_leaderboard"]

log = logging.getLogger(__name__)


def run_leaderboard(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    recipes: Sequence[str] | None = None,
    baseline: bool = True,
    store: ResultStore | None = None,
    progress: bool = False,
    on_event: Callable[[str], None] | None = None,
    failures: list[tuple[str, str]] | None = None,
    jobs: int = 1,
    live_console: Any = None,
    examples: dict[str, dict[str, Any]] | None = None,
) -> list[ResultRecord]:
    """Train and evaluate ``recipes`` (default: every registered recipe with ``cfg.variant``) and the
    no-learning baseline; append new records to ``store`` (default ``<out_dir>/results.jsonl``) and
    return this configuration's records (fresh or found in the store).

    Args:
        cfg: the run configuration.
        out_dir: folder for the world cache, the runs and (by default) the store.
        recipes: recipe names (validated; unknown names raise ``ValueError`` listing the known ones).
        baseline: include ``colour-profile (no learning)``.
        store: the results store.
        progress: progress bars.
        on_event: called with one-line status messages (the CLI prints them).
        failures: if given, a recipe that raises while training or evaluating is recorded here as
            ``(name, error)`` and the others still run; else the error propagates.
        jobs: recipes trained at once, each in its own process (spawned, with this process's torch
            thread count) that appends to the same store; the most expensive recipes start first.
        live_console: a ``rich`` console on a terminal: show the recipes' progress as a Live table
            there; None: one plain progress line per running recipe through ``on_event`` every
            :func:`~.progress.progress_interval` seconds (30; ``GEO_BENCH_PROGRESS_S``).
        examples: if given, filled with ``{recipe label: retrieval examples}`` (see
            :func:`~.examples.retrieval_examples`) of every trained recipe of this configuration whose run
            folder has them (skipped recipes included).
    """
    out_dir = Path(out_dir)
    store = store or ResultStore(out_dir / "results.jsonl")
    say = on_event or (lambda msg: log.info("%s", msg))
    names = list(recipes) if recipes is not None else list_recipes(cfg.variant)
    chosen = [
        get_recipe_or_raise(n, cfg.variant, epochs=cfg.epochs, batch_size=cfg.batch_size, task="retrieval")
        for n in names
    ]
    commit = git_commit()
    # what the store already holds needs no data: knowing the pending recipes first lets their
    # worker processes start (imports) while the world renders
    stored: list[ResultRecord] = []
    pending = []
    for recipe in chosen:
        config = config_hash(recipe.to_dict(), cfg)
        found, missing = _done(store, recipe.name, recipe.variant, cfg, config, commit)
        if not missing:
            say(
                f"{recipe.name} ({recipe.variant}): already in the store for this config/seed/commit; skipped"
            )
            stored += found
        else:
            if found:
                say(
                    f"{recipe.name} ({recipe.variant}): only {len(found)} of {len(found) + len(missing)} records in "
                    f"the store (missing {missing}); running again (training resumes from last/)"
                )
            pending.append(
                (recipe, out_dir / "runs" / f"{recipe.name}-{recipe.variant}-{config}-s{cfg.seed}")
            )
        if examples is not None:
            run_dir = out_dir / "runs" / f"{recipe.name}-{recipe.variant}-{config}-s{cfg.seed}"
            examples[f"{recipe.name} ({recipe.variant})"] = {"run_dir": str(run_dir)}
    parallel = jobs > 1 and len(pending) > 1
    workers = WorkerPool(min(jobs, len(pending))) if parallel else None
    try:
        records = _run(
            cfg,
            out_dir,
            store,
            commit,
            pending,
            workers,
            stored=stored,
            baseline=baseline,
            progress=progress,
            say=say,
            failures=failures,
            live_console=live_console,
        )
    except BaseException:
        if workers is not None:
            workers.terminate()
        raise
    if examples is not None:
        for label in list(examples):
            example = _read_examples(Path(examples[label]["run_dir"]))
            if example is None:
                del examples[label]
            else:
                examples[label] = example
    return records


def _run(
    cfg: RunConfig,
    out_dir: Path,
    store: ResultStore,
    commit: str,
    pending: list[tuple[Recipe, Path]],
    workers: WorkerPool | None,
    *,
    stored: list[ResultRecord],
    baseline: bool,
    progress: bool,
    say: Callable[[str], None],
    failures: list[tuple[str, str]] | None,
    live_console: Any,
) -> list[ResultRecord]:
    """The data, the baseline and the ``pending`` recipes (in ``workers`` when given, else here);
    returns the baseline's records, then ``stored`` (found in the store), then the new ones."""
    t0 = time.perf_counter()
    rendering = workers.render_ahead(cfg, out_dir / "cache") if workers is not None else None
    data = open_datasets(cfg, out_dir / "cache", progress=progress, rendering=rendering)
    train_full, test = data.train, data.test
    selection = (
        f"{len(data.val)} val-region" if data.val is not None else f"held-out {cfg.holdout:g} of train"
    )
    cross = f" / {len(data.cross)} cross-area" if data.cross is not None else ""
    say(
        f"data ready: {len(train_full)} train / {selection} / {len(test)} test{cross} pairs "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    records: list[ResultRecord] = []
    if baseline:
        bl = ColourProfile()
        config = _hash({"baseline": bl.config(), "data": cfg.data_dict()})
        found, missing = _done(store, BASELINE_NAME, "none", cfg, config, commit)
        if not missing:
            say(f"{BASELINE_NAME}: already in the store for this config/seed/commit; skipped")
            records += found
        else:
            if found:
                say(
                    f"{BASELINE_NAME}: only {len(found)} of {len(found) + len(missing)} records in the store "
                    f"(missing {missing}); evaluating again"
                )
            results = []
            for split_data, area in area_splits(cfg.dataset, test, data.cross):
                results += evaluate_baseline(
                    bl,
                    cfg.dataset,
                    split_data,
                    split=cfg.test_split,
                    progress=progress,
                    protocols=cfg.protocols,
                    queries_dir=out_dir / "queries",
                    area=area,
                )
            base = {
                "polar": {"preset": None, "center": "safa", "size": list(bl.polar_size)},
                "config": config,
                "backbone": "none",
                "synthesis": False,
                "orientation_aware": True,
                "train_fov": None,
                "epochs": 0,
                "selection_split": None,
                "baseline": bl.config(),
            } | _data_protocol(cfg)
            new = _records(
                results,
                recipe=BASELINE_NAME,
                variant="none",
                dataset=cfg.dataset,
                base=base,
                seed=cfg.seed,
                train_seconds=0.0,
                extra_metrics={},
                source="geo_bench.baselines.ColourProfile",
                commit=commit,
            )
            for r in new:
                store.append(r)
            records += new
            say(f"{BASELINE_NAME}: R@1 {new[0].metrics['R@1']:.1f}")
    records += stored
    board = ProgressBoard(jobs=workers.jobs if workers is not None else 1)
    n_fit = (
        len(train_full) if data.val is not None else len(train_full) - round(len(train_full) * cfg.holdout)
    )
    for recipe, _ in pending:
        board.update(_queued_event(recipe, cfg, n_fit))
    view = ProgressView(board, live=live_console is not None, emit=say, console=live_console)
    with view:
        if workers is not None:
            records += _run_parallel(
                pending,
                cfg,
                out_dir,
                store,
                commit,
                progress,
                say,
                failures,
                workers.jobs,
                n_train=len(train_full),
                view=view,
                workers=workers,
            )
        else:
            records += _run_serial(
                pending, data, cfg, out_dir, store, commit, progress and not view.live, say, failures, view
            )
    return records


def _queued_event(recipe: Recipe, cfg: RunConfig, n_fit: int) -> dict[str, Any]:
    """The ``queued`` event of a recipe: its planned steps and relative cost per step."""
    total = int(recipe.epochs) * max(1, n_fit // max(1, int(recipe.batch_size)))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    weight = 3.0 if registry.has_custom_builder(recipe.name) else 1.0
    return {
        "kind": "queued",
        "recipe": recipe.name,
        "variant": recipe.variant,
        "epochs": int(recipe.epochs),
        "total_steps": total,
        "weight": weight,
        "budget_s": cfg.time_budget_s,
    }


def _run_serial(
    pending: list[tuple[Any, Path]],
    data: RunData,
    cfg: RunConfig,
    out_dir: Path,
    store: ResultStore,
    commit: str,
    progress: bool,
    say: Callable[[str], None],
    failures: list[tuple[str, str]] | None,
    view: ProgressView,
) -> list[ResultRecord]:
    """The recipes one after the other in this process, progress events straight to ``view``."""
    records: list[ResultRecord] = []
    for recipe, run_dir in pending:
        say(f"{recipe.name} ({recipe.variant}): training in {run_dir}")
        view.update({"kind": "start", "recipe": recipe.name})
        try:
            run = train_recipe(
                recipe,
                data.train,
                cfg,
                run_dir,
                resume=True,
                progress=progress,
                events=view.update,
                val=data.val,
            )
            new = evaluate_trained(
                run,
                data.test,
                cfg,
                progress=progress,
                commit=commit,
                queries_dir=out_dir / "queries",
                events=view.update,
                cross=data.cross,
            )
        except Exception as exc:
            view.update({"kind": "failed", "recipe": recipe.name, "error": f"{type(exc).__name__}: {exc}"})
            if failures is None:
                raise
            log.exception("%s failed", recipe.name)
            failures.append((recipe.name, f"{type(exc).__name__}: {exc}"))
            say(f"{recipe.name} ({recipe.variant}): FAILED ({type(exc).__name__}: {exc}); continuing")
            continue
        for r in new:
            store.append(r)
        _write_examples(run, data.test, cfg)
        records += new
        view.update({"kind": "done", "recipe": recipe.name, "r1": new[0].metrics.get("R@1")})
        say(_done_message(recipe, run.train_seconds, new))
    return records
