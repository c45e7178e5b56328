"""Train one recipe and keep its checkpoints (selected on the world's val region, or on a held-out slice of
real data's train split; never on test).

RECIPE is a registered recipe name (safa, dsm, sample4geo, l2ltr; toker21 and smdt with
geo-synthesis installed). The small variant trains on the embedded synthetic world in minutes on
a CPU; the full variant is the paper's configuration for CVUSA / CVACT / VIGOR on a GPU.

  geo-bench train safa                                         # small variant, synthetic world
  geo-bench train dsm --epochs 4 --out runs/dsm-small --seed 1
  geo-bench train safa --out runs/dsm-small --resume           # continue an interrupted run
  geo-bench train sample4geo --variant full --dataset cvusa --root data/CVUSA --device cuda
  geo-bench train --list                                       # the registered recipes and variants
  geo-bench train l2ltr --variant full --dataset cvusa --root data/CVUSA --init converted/r50-vit-in21k
                                                               # start from ImageNet-21k R50+ViT-B/16 weights

OUT (default runs/RECIPE-VARIANT-sSEED) receives run_args.json (the arguments the run was started
with), last/ (weights + full trainer state, committed together every epoch), best/ (the weights
with the best val R@1), history.json and recipe.json. Resuming with --resume continues bit
for bit; it must repeat the run's arguments (recipe, variant, seed, epochs, batch size, dataset,
root, world, VIGOR area; --max-steps, --device and --threads may change) and refuses any
difference, listing them: a new configuration needs another --out. Without --resume an existing
last/ is refused so a run is never overwritten by accident. Evaluate with: geo-bench evaluate
--checkpoint OUT.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from geo_retrieval.checkpoint import atomic_write_bytes
from geo_retrieval.convert import read_manifest
from geo_retrieval.convert.vit_r50 import INIT_SOURCES, load_init
from geo_retrieval.recipes import Recipe, list_recipes
from geo_retrieval.run_folder import RUN_ARGS_FILE, RunLayout
from geo_retrieval.training.trainer import check_resume, recover_checkpoint

from ..leaderboard.checkpoints import write_run_json
from ..leaderboard.config import RunConfig, get_recipe_or_raise, open_datasets
from ..leaderboard.training import train_recipe
from ._common import (
    add_data_arguments,
    add_runtime_arguments,
    apply_runtime,
    guarded,
    progress_enabled,
    status_view,
    world_config,
)

HELP = "train one recipe (checkpoints in OUT/last and OUT/best; resumable)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench train`` to ``parser``."""
    parser.add_argument(
        "recipe", metavar="RECIPE", nargs="?", help="recipe name (geo-bench train --list shows them)"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the registered recipes and their variants, then exit"
    )
    parser.add_argument(
        "--variant",
        choices=["small", "full"],
        help="small (CPU-sized) or full (the paper's); default small on synthetic, full otherwise",
    )
    parser.add_argument("--out", help="run folder (default runs/RECIPE-VARIANT-sSEED)")
    parser.add_argument(
        "--init",
        metavar="DIR",
        help="initial weights: a converted initialisation folder (python -m geo_retrieval.convert "
        "vit-r50-in21k R50+ViT-B_16.npz DIR), loaded strictly into the encoder modules it names (l2ltr, smdt full)",
    )
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (saving last/)")
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="S",
        help="stop after S wall-clock seconds of training (saving last/; counts a resumed run's "
        "earlier seconds)",
    )
    add_data_arguments(parser)
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench train`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(
        lambda: _run(args),
        interrupted=(
            "the last completed checkpoint is kept in OUT/last; run the same command with --resume to continue"
        ),
    )


def _run(args: argparse.Namespace) -> int:
    if args.list:
        _print_recipes()
        return 0
    if not args.recipe:
        raise ValueError("RECIPE is missing: name the recipe to train (geo-bench train --list shows them)")
    _check_numbers(args)
    apply_runtime(args)
    variant = args.variant or ("small" if args.dataset == "synthetic" else "full")
    recipe = get_recipe_or_raise(
        args.recipe, variant, epochs=args.epochs, batch_size=args.batch_size, task="retrieval"
    )
    cfg = replace(
        RunConfig(
            dataset=args.dataset,
            root=args.root,
            variant=variant,
            seed=args.seed,
            max_steps=args.max_steps,
            device=args.device,
            vigor_area=args.vigor_area,
            vigor_labels=args.vigor_labels,
            vigor_labels_dir=args.vigor_labels_dir,
            cache=args.cache,
            time_budget_s=args.time_budget,
        ),
        world=world_config(args),
    )
    view = status_view(not progress_enabled(args))  # plain lines when there are no bars
    out = Path(args.out or f"runs/{recipe.name}-{variant}-s{args.seed}")
    layout = RunLayout(out)
    recover_checkpoint(layout.last)  # a crash while last/ was being replaced may have left none
    recover_checkpoint(layout.best)
    last = layout.state()
    if last.exists() and not args.resume:
        raise FileExistsError(
            f"{out} already holds a training run ({last}); pass --resume to continue it "
            "or choose another --out"
        )
    if args.resume and not last.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {layout.last}; start without --resume")
    init = _init_loader(args.init) if args.init else None  # refuse a wrong folder before any work
    run_args = _run_args(args, recipe, variant, cfg)
    recorded = args.resume and _check_run_args(out, run_args)  # before the data is read
    data = open_datasets(cfg, out / "cache", progress=progress_enabled(args))
    if not recorded:  # the start of the run (or the first resume of a run from before the record)
        _write_run_args(out, run_args, resume=args.resume)
    view.update(
        {
            "kind": "queued",
            "recipe": recipe.name,
            "variant": variant,
            "epochs": int(recipe.epochs),
            "budget_s": cfg.time_budget_s,
        }
    )
    view.update({"kind": "start", "recipe": recipe.name})
    with view:
        run_ = train_recipe(
            recipe,
            data.train,
            cfg,
            out,
            resume=args.resume,
            progress=progress_enabled(args),
            events=view.update,
            val=data.val,
            init=init,
        )
    info = {
        "recipe": recipe.name,
        "variant": variant,
        "seed": cfg.seed,
        "data": cfg.data_dict(),
        "config": run_.config,
        "global_step": run_.global_step,
        "train_seconds": round(run_.train_seconds, 2),
        "selection_split": run_.selection_split,
        "best_R@1": run_.best_metric,
        "checkpoint": run_.checkpoint,
    }
    if cfg.time_budget_s is not None:
        info.update({"time_budget_s": cfg.time_budget_s, "stopped_by_time_budget": run_.stopped_by_budget})
    write_run_json(layout.run_json, info)
    best = "none" if run_.best_metric is None else f"{run_.best_metric:.1f}"
    print(
        f"{recipe.name} ({variant}): {run_.global_step} steps in {run_.train_seconds:.0f} s; "
        f"selection ({run_.selection_split}) R@1 {best}; checkpoints in {out}"
    )
    print(
        f"evaluate: geo-bench evaluate --checkpoint {out} --dataset {args.dataset}"
        + (f" --root {args.root}" if args.root else "")
    )
    return 0


def _init_loader(folder: str) -> Any:
    """``init(model)`` for ``--init DIR``: checks that DIR is an initialisation folder now and loads it
    strictly (:func:`geo_retrieval.convert.vit_r50.load_init`) into the built model, logging what it fills."""
    manifest = read_manifest(folder)
    if manifest.source_kind not in INIT_SOURCES:
        raise ValueError(
            f"--init {folder}: a converted {manifest.source_kind!r} checkpoint, not an initialisation "
            f"({', '.join(INIT_SOURCES)})"
        )

    def init(model: Any) -> None:
        filled = load_init(model, folder)
        text = ", ".join(f"{name} ({n} tensors)" for name, n in sorted(filled.items()))
        log.info("--init %s filled %s", folder, text)
        print(f"--init {folder}: filled {text}")

    return init


def _print_recipes() -> None:
    """One line per registered recipe: its name and the variants ``--variant`` accepts."""
    by_variant = {variant: set(list_recipes(variant)) for variant in ("small", "full")}
    names = list_recipes()
    width = max((len(name) for name in names), default=0)
    for name in names:
        variants = [variant for variant, known in by_variant.items() if name in known]
        print(f"{name:<{width}}  variants: {', '.join(variants) if variants else 'none for geo-bench train'}")


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse impossible counts before any work (one line naming the option)."""
    for option, value in (("--epochs", args.epochs), ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value}")
    if args.batch_size is not None and args.batch_size < 2:
        raise ValueError(
            f"--batch-size must be at least 2 (the other pairs of a batch are its negatives), "
            f"got {args.batch_size}"
        )


def _run_args(args: argparse.Namespace, recipe: Recipe, variant: str, cfg: Any) -> dict[str, Any]:
    """What a run depends on besides the code: training arguments (effective values) and data
    arguments (only those the dataset uses; the root as an absolute path)."""
    record: dict[str, Any] = {
        "recipe": recipe.name,
        "variant": variant,
        "seed": args.seed,
        "epochs": int(recipe.epochs),
        "batch_size": int(recipe.batch_size),
        "dataset": args.dataset,
    }
    if getattr(args, "init", None):
        record["init"] = str(Path(args.init).resolve())
    if args.dataset == "synthetic":
        record["tiny"] = bool(args.tiny)
        record["world"] = cfg.world.to_dict()
    else:
        record["root"] = str(Path(args.root).resolve()) if args.root else None
        if args.dataset == "vigor":
            record["vigor_area"] = args.vigor_area
    return record


def _check_run_args(out: Path, record: dict[str, Any]) -> bool:
    """Compare a resume's arguments with ``OUT/run_args.json`` (the trainer's
    :func:`~geo_retrieval.training.trainer.check_resume`, every argument on either side compared).

    Returns:
        Whether the run has a record (False for a run from before it existed).

    Raises:
        ResumeMismatchError: any difference, all listed as "name: run has X, now Y".
    """
    path = RunLayout(out).run_args_json
    if not path.exists():
        return False
    check_resume(out, json.loads(path.read_text()), record, hint="choose another --out for a new run")
    return True


def _write_run_args(out: Path, record: dict[str, Any], *, resume: bool) -> None:
    """Write ``OUT/run_args.json`` atomically once the data is open, before training starts; a run
    from before the record gets it on its first resume, with a warning."""
    if resume:
        log.warning(
            "%s has no %s (started by an older geo-bench): its arguments cannot be checked; recording "
            "this resume's",
            out,
            RUN_ARGS_FILE,
        )
    atomic_write_bytes(RunLayout(out).run_args_json, (json.dumps(record, indent=1) + "\n").encode())
