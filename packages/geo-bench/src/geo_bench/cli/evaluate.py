"""Evaluate a trained checkpoint on a test split under every protocol the dataset supports and
append the results to the results store.

--checkpoint is a run folder written by `geo-bench train` (its best/ weights are used, else last/),
a best/ or last/ folder, or a .safetensors file. The recipe is read from the run (recipe.json or
the weights' metadata) unless --recipe / --variant are given. Weights are loaded strictly: a
checkpoint of another recipe or variant is refused with the keys / shapes that differ; pickle
files (.pt, .pth) are only read with torch's weights_only loader, and one that needs other globals
is refused, never unpickled.

Protocols: synthetic world: orientation known and unknown (seeded rolls; orientation accuracy for
orientation-aware recipes); CVUSA, CVACT_val: R@1/5/10/1%; CVACT_test (--split test): utm_5m;
VIGOR: R@K, hit rate and localisation error of the retrieved tile. Where positions exist, also
R@k<r m and the top-1 metre errors. --protocols fov,corruption adds limited FoV (query files kept in
queries/ beside the store, reused by every model) and corruption robustness.

  geo-bench evaluate --checkpoint runs/safa-small-s0
  geo-bench evaluate --checkpoint runs/s4g/best --dataset cvusa --root data/CVUSA --device cuda
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from geo_retrieval.checkpoint import load_model_weights, load_trainer_state
from geo_retrieval.recipes import build
from geo_retrieval.run_folder import RunLayout

from ..leaderboard.checkpoints import resolve_run
from ..leaderboard.config import RunConfig, config_hash, get_recipe_or_raise, open_datasets
from ..leaderboard.evaluation import parse_protocols
from ..leaderboard.protocol_tables import render_rich_tables, split_records
from ..leaderboard.recording import evaluate_trained
from ..leaderboard.table import render_rich
from ..leaderboard.training import TrainedRun
from ..store import ResultStore
from ._common import (
    add_data_arguments,
    add_protocol_arguments,
    add_runtime_arguments,
    apply_runtime,
    guarded,
    progress_enabled,
    status_view,
    world_config,
)

HELP = "evaluate a checkpoint on a test split (all protocols) into the results store"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench evaluate`` to ``parser``."""
    parser.add_argument(
        "--checkpoint", required=True, help="run folder, best/ or last/ folder, or weights file"
    )
    parser.add_argument("--recipe", help="recipe name (default: from the checkpoint)")
    parser.add_argument(
        "--variant", choices=["small", "full"], help="recipe variant (default: from the checkpoint)"
    )
    parser.add_argument("--split", help="split to evaluate (default test; CVACT: val = CVACT_val)")
    parser.add_argument(
        "--seed", type=int, help="training seed to record (default: from the trainer state, else 0)"
    )
    parser.add_argument(
        "--store", default="results.jsonl", help="results store to append to (default results.jsonl)"
    )
    add_protocol_arguments(parser)
    add_data_arguments(parser)
    add_runtime_arguments(parser)


def _seed(run_dir: Path, args: argparse.Namespace) -> int:
    if args.seed is not None:
        return int(args.seed)
    state = RunLayout(run_dir).state()
    if state.is_file():
        return int(load_trainer_state(state).get("seed", 0))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench evaluate`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(
        lambda: _run(args), interrupted="nothing was added to the store; run the same command again"
    )


def _run(args: argparse.Namespace) -> int:
    apply_runtime(args)
    found = resolve_run(args.checkpoint, recipe=args.recipe, variant=args.variant)
    weights, run_dir, variant, info = found.weights, found.run_dir, found.variant, found.info
    recipe = get_recipe_or_raise(found.recipe, variant)
    cfg = replace(
        RunConfig(
            dataset=args.dataset,
            root=args.root,
            variant=variant,
            seed=_seed(run_dir, args),
            eval_split=args.split,
            device=args.device,
            vigor_area=args.vigor_area,
            cache=args.cache,
            protocols=parse_protocols(args.protocols),
        ),
        world=world_config(args),
    )
    model = build(recipe)
    digest = load_model_weights(model, weights)
    data = open_datasets(cfg, None, progress=progress_enabled(args), need_train=False)
    train_seconds = float(info.get("train_seconds", 0.0)) or 0.0
    run_ = TrainedRun(
        recipe,
        model,
        run_dir,
        info.get("config") or config_hash(recipe.to_dict(), cfg),
        train_seconds,
        int(info.get("global_step", 0)),
        digest,
        info.get("selection_split"),
        info.get("best_R@1"),
    )
    store = ResultStore(args.store)
    view = status_view(not progress_enabled(args))  # plain lines every 30 s when there are no bars
    view.update({"kind": "start", "recipe": recipe.name, "variant": variant})
    with view:
        records = evaluate_trained(
            run_,
            data.test,
            cfg,
            progress=progress_enabled(args),
            source=str(weights),
            queries_dir=store.path.parent / "queries",
            events=view.update,
            cross=data.cross,
        )
    for r in records:
        store.append(r)
    base, _, _ = split_records(records)
    render_rich(base, console=None, title=f"{recipe.name} ({variant}) on {args.dataset} {cfg.test_split}")
    render_rich_tables(records, Console())
    print(f"{len(records)} record(s) appended to {store.path}")
    return 0
