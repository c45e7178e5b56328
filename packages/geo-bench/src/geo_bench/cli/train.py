"""Train one recipe and keep its checkpoints (selection on a held-out slice of train, never test).

RECIPE is a registered recipe name (safa, dsm, sample4geo, l2ltr; toker21 and smdt with
geo-synthesis installed). The small variant trains on the embedded synthetic world in minutes on
a CPU; the full variant is the paper's configuration for CVUSA / CVACT / VIGOR on a GPU.

  geo-bench train safa                                         # small variant, synthetic world
  geo-bench train dsm --epochs 4 --out runs/dsm-small --seed 1
  geo-bench train safa --out runs/dsm-small --resume           # continue an interrupted run
  geo-bench train sample4geo --variant full --dataset cvusa --root data/CVUSA --device cuda

OUT (default runs/RECIPE-VARIANT-sSEED) receives last/ (weights + full trainer state, rewritten
atomically every epoch), best/ (the weights with the best held-out R@1), history.json and
recipe.json. Resuming with --resume continues bit for bit; without it an existing last/ is refused
so a run is never overwritten by accident. Evaluate with: geo-bench evaluate --checkpoint OUT.
"""

from __future__ import annotations

import argparse
import json
import logging

from ._common import (
    add_data_arguments,
    add_runtime_arguments,
    apply_runtime,
    guarded,
    progress_enabled,
    world_config,
)

HELP = "train one recipe (checkpoints in OUT/last and OUT/best; resumable)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE", help="recipe name (geo-bench train --list shows them)")
    parser.add_argument("--variant", choices=["small", "full"],
                        help="small (CPU-sized) or full (the paper's); default small on synthetic, full otherwise")
    parser.add_argument("--out", help="run folder (default runs/RECIPE-VARIANT-sSEED)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (saving last/)")
    add_data_arguments(parser)
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from ..leaderboard.runner import RunConfig, get_recipe_or_raise, open_datasets, train_recipe

    apply_runtime(args)
    variant = args.variant or ("small" if args.dataset == "synthetic" else "full")
    recipe = get_recipe_or_raise(args.recipe, variant, epochs=args.epochs, batch_size=args.batch_size)
    cfg = replace(RunConfig(dataset=args.dataset, root=args.root, variant=variant, seed=args.seed,
                            max_steps=args.max_steps, device=args.device, vigor_area=args.vigor_area,
                            cache=args.cache),
                  world=world_config(args))
    out = Path(args.out or f"runs/{recipe.name}-{variant}-s{args.seed}")
    last = out / "last" / "trainer_state.pt"
    if last.exists() and not args.resume:
        raise FileExistsError(f"{out} already holds a training run ({last}); pass --resume to continue it "
                              "or choose another --out")
    if args.resume and not last.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {out / 'last'}; start without --resume")
    train_full, _ = open_datasets(cfg, out / "cache", progress=progress_enabled(args))
    run_ = train_recipe(recipe, train_full, cfg, out, resume=args.resume, progress=progress_enabled(args))
    info = {"recipe": recipe.name, "variant": variant, "seed": cfg.seed, "data": cfg.data_dict(),
            "config": run_.config, "global_step": run_.global_step, "train_seconds": round(run_.train_seconds, 2),
            "selection_split": run_.selection_split, "best_R@1": run_.best_metric, "checkpoint": run_.checkpoint}
    (out / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    best = "none" if run_.best_metric is None else f"{run_.best_metric:.1f}"
    print(f"{recipe.name} ({variant}): {run_.global_step} steps in {run_.train_seconds:.0f} s; "
          f"held-out ({run_.selection_split}) R@1 {best}; checkpoints in {out}")
    print(f"evaluate: geo-bench evaluate --checkpoint {out} --dataset {args.dataset}"
          + (f" --root {args.root}" if args.root else ""))
    return 0
