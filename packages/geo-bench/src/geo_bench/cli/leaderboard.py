"""Train and evaluate every registered recipe (and a no-learning baseline) and print the leaderboard.

With no arguments: each installed recipe (safa, dsm, sample4geo, l2ltr, and toker21 / smdt when
geo-synthesis is installed) in its SMALL variant is trained on the embedded synthetic world (rendered
once, cached in OUT/cache), its checkpoint is selected on the world's VAL region (a stripe of the
training cities that shares no camera and no aerial pixel with train or test), and it is evaluated
once, after training, on the world's TEST region (same-area: another stripe of the training
cities, a dense downtown grid and a suburban sprawl) and on a CROSS-AREA city of another style (an
organic small town never trained or selected on), with the orientation known and unknown
(panoramas rolled by fixed, seeded shifts). 13-14 minutes measured on an idle
2-core CPU (two recipes train at once, one process and one torch thread each; --jobs 1 runs them in
turn; toker21 and smdt train for about 6-8 minutes each). Validation covers the last half of each
schedule (--val-from 0.5).

  geo-bench leaderboard                                   # synthetic world, small variants
  geo-bench leaderboard --recipes safa,dsm --epochs 4     # a subset, shorter
  geo-bench leaderboard --tiny                            # smoke test (~1 min): tiny world, 1 epoch
  geo-bench leaderboard --seeds 0,1,2                     # three seeds + mean ± std per method
  geo-bench leaderboard --world-seeds 0,1,2               # three synthetic worlds + mean ± std
  geo-bench leaderboard --protocols fov,corruption        # + limited FoV and corruption robustness
  geo-bench leaderboard --time-budget 60                  # every recipe trains for the same 60 s
  geo-bench leaderboard --val-from 0                      # validate every epoch (whole val curves)
  geo-bench leaderboard --dataset cvusa --root data/CVUSA --device cuda   # full variants, real data
  geo-bench leaderboard --pose                            # + the fine-grained pose table (ccvpe)
  geo-bench leaderboard --recipes ccvpe                   # the pose table only
  geo-bench leaderboard --recipes ccvpe --dataset vigor --root data/VIGOR \
      --vigor-labels corrected --vigor-labels-dir data/VIGOR_corrected_labels --device cuda

Fine-grained pose (--pose, or pose recipes named in --recipes): where inside the aerial tile the
camera stood and which way it faced. Each pose recipe trains on tiles that hold the camera off
their centre (the world's cameras, up to a quarter tile off; VIGOR's positives), is selected on the
median metre error of the val region (orientation unknown), and is scored on test with the
orientation known and unknown against the tile centre (what retrieval alone gives); the table,
leaderboard_pose.{md,json}, also lists the published VIGOR numbers of CCVPE, HC-Net and FG2 as
reported rows, and leaderboard_pose.png shows the probability maps of the first test queries.

Outputs in --out (default leaderboard_run): results.jsonl (the results store: one record per
evaluation, appended atomically), leaderboard.{md,csv,json}, leaderboard_recall.png (R@K curves),
leaderboard_bar.png, leaderboard_examples.png (top-5 retrievals of the first 4 test queries per
recipe, the true tile framed green), leaderboard_selection.{md,json} (each run's val R@1 per epoch and
the epoch selected: the evidence the small variants' settings are judged on). Measured rows carry data, seed, git commit and hardware, and
the compute behind them (training seconds, optimiser steps, pairs seen); on CVUSA / CVACT / VIGOR
the published numbers (geo-bench reported) are shown in a separate section, never mixed.

Progress: on a terminal a live table (per recipe: state, epoch, step, loss, val R@1, elapsed,
ETA; overall ETA below); otherwise (logs, CI) one line per running recipe every 30 s
(GEO_BENCH_PROGRESS_S=SECONDS changes the interval).

A recipe that fails is reported (exit status 1) and the others still run.
Resumable: a recipe whose results for the same configuration, seed and commit are already in the
store is skipped, and an interrupted training continues from OUT/runs/<run>/last.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from geo_retrieval.recipes import list_recipes

from ..leaderboard.config import TINY, RunConfig, open_datasets
from ..leaderboard.evaluation import parse_protocols
from ..leaderboard.plots import plot_corruption_heatmap, plot_retrieval_examples, write_plots
from ..leaderboard.pose import pose_records_table, run_pose_leaderboard, write_pose_outputs
from ..leaderboard.progress import progress_interval
from ..leaderboard.protocol_tables import (
    corruption_rows,
    render_rich_tables,
    split_records,
    write_protocol_tables,
)
from ..leaderboard.reported import reported_pose_records, reported_records
from ..leaderboard.runner import run_leaderboard
from ..leaderboard.seeds import SEED_METRICS, mean_std_text, seed_summary, write_seed_summary
from ..leaderboard.selection import write_selection
from ..leaderboard.table import render_rich, write_outputs
from ..store import ResultStore
from ._common import (
    add_data_arguments,
    add_protocol_arguments,
    add_runtime_arguments,
    apply_runtime,
    guarded,
    progress_enabled,
    world_config,
)

#: ``--val-from`` by default: validate the last half of each schedule.
DEFAULT_VAL_FROM = 0.5

HELP = "train + evaluate every recipe (synthetic world by default) and print the leaderboard"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench leaderboard`` to ``parser``."""
    parser.add_argument("--out", default="leaderboard_run", help="output folder (default leaderboard_run)")
    parser.add_argument("--recipes", help="comma-separated recipe names (default: every registered recipe)")
    parser.add_argument(
        "--variant",
        choices=["small", "full"],
        help="recipe variant (default small on the synthetic world, full on real data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds, e.g. 0,1,2: run the leaderboard once per seed "
        "and also write OUT/leaderboard_seeds.{md,json} (mean ± std over seeds per method)",
    )
    parser.add_argument(
        "--world-seeds",
        help="comma-separated synthetic-world seeds, e.g. 0,1,2: run the leaderboard "
        "once per world (cities, cameras, appearance) and also write OUT/leaderboard_worlds.{md,json} "
        "(mean ± std over worlds per method); combines with --seeds",
    )
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs")
    parser.add_argument("--batch-size", type=int, help="override every recipe's batch size")
    parser.add_argument("--split", help="evaluation split (default test; CVACT: val = CVACT_val)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the colour-profile baseline")
    parser.add_argument(
        "--pose-n-train",
        type=int,
        metavar="N",
        help="training cameras of the pose world (default 2000, or --n-train when given)",
    )
    parser.add_argument(
        "--pose",
        action="store_true",
        help="also train and evaluate the fine-grained pose recipes (ccvpe) and write the pose table "
        "(leaderboard_pose.{md,json}, leaderboard_pose.png)",
    )
    parser.add_argument("--store", help="results store (default OUT/results.jsonl)")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG figures")
    parser.add_argument(
        "--jobs",
        type=int,
        help="recipes trained at once, one process each (default: 2 on a CPU with >= 2 cores, "
        "else 1); results go to the same store",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="S",
        help="train every recipe for at most S wall-clock seconds (the same budget for all; "
        "recorded in the protocol and the config hash; best/ is still selected on the "
        "world's val region, or the held-out slice of real data)",
    )
    parser.add_argument(
        "--val-from",
        type=float,
        metavar="F",
        help="validate each recipe from this fraction of its schedule on (default 0.5: the last half of "
        "the epochs, half the validation work; 0 with --time-budget, which may stop earlier); 0 "
        "validates every epoch. Recorded in the protocol and the config hash",
    )
    add_protocol_arguments(parser)
    add_data_arguments(parser)
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench leaderboard`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(
        lambda: _run(args),
        interrupted=(
            "finished recipes are in the store; run the same command again to resume (finished recipes are "
            "skipped, interrupted trainings continue from their last checkpoint)"
        ),
    )


def _run(args: argparse.Namespace) -> int:
    apply_runtime(args)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    synthetic = args.dataset == "synthetic"
    variant = args.variant or ("small" if synthetic else "full")
    defaults = TINY if args.tiny else RunConfig()
    cfg = replace(
        defaults,
        dataset=args.dataset,
        root=args.root,
        variant=variant,
        seed=args.seed,
        epochs=args.epochs if args.epochs is not None else defaults.epochs,
        batch_size=args.batch_size if args.batch_size is not None else defaults.batch_size,
        world=world_config(args, defaults.world),
        eval_split=args.split,
        device=args.device,
        vigor_area=args.vigor_area,
        vigor_labels=args.vigor_labels,
        vigor_labels_dir=args.vigor_labels_dir,
        cache=args.cache,
        protocols=parse_protocols(args.protocols),
        time_budget_s=args.time_budget,
        val_from=args.val_from
        if args.val_from is not None
        else (0.0 if args.time_budget else DEFAULT_VAL_FROM),
    )
    progress_interval()  # a bad GEO_BENCH_PROGRESS_S fails before any work
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()] if args.recipes else None
    pose_known = list_recipes(task="pose")
    pose_names = [r for r in recipes or [] if r in pose_known]
    if args.pose and not pose_names:
        pose_names = list_recipes(variant, task="pose")
    if recipes is not None:
        recipes = [r for r in recipes if r not in pose_known]
    retrieval = recipes is None or bool(recipes)  # only pose recipes named: no retrieval table
    out = Path(args.out)
    store = ResultStore(args.store) if args.store else ResultStore(out / "results.jsonl")
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        console.print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", markup=False, highlight=False)

    failures: list[tuple[str, str]] = []
    jobs = args.jobs
    if jobs is None:
        on_cpu = not (args.device or "").startswith("cuda") and not (
            args.device is None and torch.cuda.is_available()
        )
        jobs = 2 if on_cpu and (os.cpu_count() or 1) >= 2 else 1
    seeds = _parse_seeds(args.seeds) if args.seeds else [cfg.seed]
    world_seeds = _parse_seeds(args.world_seeds, "--world-seeds") if args.world_seeds else [cfg.world.seed]
    if len(world_seeds) > 1 and not synthetic:
        raise ValueError("--world-seeds applies to the synthetic world only")
    records = []
    examples: dict = {}
    live = console if sys.stdout.isatty() and not args.no_progress else None
    for world_seed in world_seeds if retrieval else ():
        for seed in seeds:
            if len(seeds) > 1 or len(world_seeds) > 1:
                say(f"world seed {world_seed}, seed {seed}" if synthetic else f"seed {seed}")
            found: dict = {}
            run_cfg = replace(cfg, seed=seed, world=replace(cfg.world, seed=world_seed))
            records += run_leaderboard(
                run_cfg,
                out,
                recipes=recipes,
                baseline=not args.no_baseline,
                store=store,
                progress=progress_enabled(args),
                on_event=say,
                failures=failures,
                jobs=max(1, jobs),
                live_console=live,
                examples=found,
            )
            if not examples:  # the figure shows the first run's models
                examples = found
    if pose_names:
        _pose(args, cfg, pose_names, out, store, say, console)
    if not retrieval:
        say(f"store {store.path}")
        return 0
    reported = []
    if not synthetic:
        split = cfg.test_split if args.dataset != "vigor" else f"{cfg.vigor_area}_area"
        reported = [r for r in reported_records(args.dataset) if r.split == split]
    seed_text = f"seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    if synthetic:
        seed_text += (
            f", world seeds {', '.join(map(str, world_seeds))}"
            if len(world_seeds) > 1
            else f", world seed {world_seeds[0]}"
        )
    title = f"Leaderboard: {args.dataset} {cfg.test_split}, {variant} variants, {seed_text}"
    base, _, corrupted = split_records(records)
    render_rich(base, reported, console=console, title=title)
    render_rich_tables(records, console)
    paths = write_outputs(base, reported, out)
    paths.update(write_protocol_tables(records, out))
    paths.update(write_selection(base, out))
    if len(seeds) > 1:
        for world_seed in world_seeds:
            mine = [r for r in base if (r.protocol.get("world") or {}).get("seed", world_seed) == world_seed]
            stem = "leaderboard_seeds" if len(world_seeds) == 1 else f"leaderboard_seeds_world{world_seed}"
            paths.update(write_seed_summary(mine, out, stem=stem))
            _print_seed_summary(seed_summary(mine), console)
    if len(world_seeds) > 1:
        for seed in seeds:
            mine = [r for r in base if r.provenance.seed == seed]
            stem = "leaderboard_worlds" if len(seeds) == 1 else f"leaderboard_worlds_seed{seed}"
            paths.update(write_seed_summary(mine, out, stem=stem, over="world_seed"))
            _print_seed_summary(seed_summary(mine, over="world_seed"), console, over="world_seed")
    if not args.no_plots:
        paths.update(write_plots(base, out))
        if examples:
            first = replace(cfg, seed=seeds[0], world=replace(cfg.world, seed=world_seeds[0]))
            test = open_datasets(first, out / "cache", need_train=False).test
            paths["examples"] = plot_retrieval_examples(
                examples,
                test,
                out / "leaderboard_examples.png",
                title=f"Top-5 retrievals of the first test queries, orientation known, seed {seeds[0]} "
                "(green: the true tile)",
            )
        if corrupted:
            rows, names = corruption_rows(corrupted)
            cells = {
                f"{r['method']} ({r['variant']}, seed {r['seed']})": {n: r[n] for n in names if n in r}
                for r in rows
            }
            paths["corruption_heatmap"] = plot_corruption_heatmap(
                cells,
                out / "leaderboard_corruption.png",
                title="Corruption robustness: R@1 % (mean over 5 severities), orientation known",
            )
    say("written: " + ", ".join(str(p) for p in paths.values()) + f"; store {store.path}")
    if synthetic:
        console.print("Published numbers on CVUSA / CVACT / VIGOR: geo-bench reported", markup=False)
    for name, error in failures:
        log.error("recipe %s failed and is missing from the table: %s", name, error)
    return 1 if failures else 0


def _pose(
    args: argparse.Namespace,
    cfg: RunConfig,
    names: list[str],
    out: Path,
    store: ResultStore,
    say: Callable[[str], None],
    console: Console,
) -> None:
    """The fine-grained pose table (``--pose``; :mod:`geo_bench.leaderboard.pose`)."""
    records = run_pose_leaderboard(
        cfg,
        out,
        recipes=names,
        store=store,
        progress=progress_enabled(args),
        on_event=say,
        figure=None if args.no_plots else out / "leaderboard_pose.png",
        n_train=args.pose_n_train or (cfg.world.n_train if args.n_train is not None or args.tiny else None),
        live_console=console if sys.stdout.isatty() and not args.no_progress else None,
    )
    split = None if cfg.dataset == "synthetic" else f"{cfg.vigor_area}_area"
    reported = reported_pose_records("vigor", split)
    paths = write_pose_outputs(records, reported, out)
    console.print(
        f"Fine-grained pose on {cfg.dataset} {cfg.test_split} (measured here), then the published VIGOR numbers "
        "(reported; not comparable with the synthetic world)",
        markup=False,
    )
    console.print(pose_records_table(records, reported), markup=False, highlight=False)
    if not args.no_plots and (out / "leaderboard_pose.png").exists():
        paths["pose_figure"] = out / "leaderboard_pose.png"
    say("written: " + ", ".join(str(p) for p in paths.values()))


def _parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{option} needs distinct integers such as 0,1,2, got {text!r}")
    return seeds


def _print_seed_summary(summary: list[dict], console: object, over: str = "seed") -> None:
    what = "world seeds" if over == "world_seed" else "seeds"
    table = Table(title=f"Across {what}: mean ± sample std")
    for head in ("method", "variant", "protocol", what, *SEED_METRICS, f"R@1 per {what[:-1]}"):
        table.add_column(head, justify="right" if head.startswith("R@") else "left", overflow="fold")
    for e in summary:
        cells = [mean_std_text(e, m) for m in SEED_METRICS]
        table.add_row(
            e["method"],
            e["variant"],
            e["protocol"],
            ", ".join(map(str, e["seeds"])),
            *cells,
            ", ".join(f"{v:.1f}" for v in e["R@1_values"]),
        )
    console.print(table)  # type: ignore[attr-defined]
