"""Re-derive the small variants' settings on the synthetic world's VAL region (never on test).

Each ablation trains a recipe's small variant with one setting changed, on the leaderboard's world
(train region), selects its checkpoint on the val region exactly as the leaderboard does, and prints
the best val R@1 beside the registered setting's. Nothing here loads the test or the cross-area split:
the world's ``test.npz`` / ``cross.npz`` are never rendered or read by this script.

Ablations (name: what changes against the registered small recipe):

- ``l2ltr-pos-normal``: L2LTR's position embedding initialised truncated-normal (ViT's) instead of the
  2-D sin-cos one the registered small head uses;
- ``smdt-g2-seg``: SMDT's second generator sees the segmentation only (``g2_input="seg"``, the paper's
  figure) instead of the segmentation and the mapped aerial;
- ``safa-8-epochs``: SAFA small trained for 8 epochs instead of 16;
- ``dsm-8-epochs``: DSM small trained for 8 epochs instead of 10;
- ``l2ltr-24-epochs``: L2LTR small trained for 24 epochs (cosine over 24) instead of 32;
- ``toker21-8-epochs``: toker21 small for 8 epochs with a cosine lr from 4e-4 and mining from epoch 5,
  instead of 15 epochs at a constant 2e-4 with mining from epoch 10;
- ``toker21-synthesise-all`` / ``toker21-synthesise-4`` / ``toker21-synthesise-1``: toker21 small
  synthesising every sample of a batch (the paper's step), the first 4 or the first 1 of 16, instead
  of the first 2 (``synthesis_samples=2``);
- ``sample4geo-layer-scale-1e-6``: Sample4Geo small with timm's ConvNeXt layer-scale init 1e-6 and
  40 epochs (the setting registered before issue 15) instead of layer scale 1.0 and 32 epochs;
- ``sample4geo-40-epochs`` / ``sample4geo-24-epochs``: Sample4Geo small (layer scale 1.0) trained for 40
  or 24 epochs instead of 32;
- ``smdt-gan-all-epochs``: SMDT small with its GANs trained in all 20 epochs (``gan_epochs=None``, the
  setting registered before issue 15) instead of frozen after epoch 10 (the retrieval goes on
  training on the frozen GANs' images);
- ``float32:<recipe>``: the registered small recipe trained without bf16 autocast (``amp=False``);
- ``registered:<recipe>``: the registered small recipe itself (its val R@1 is also in the default
  leaderboard run's ``leaderboard_selection.md``).

Figures for world seed 0 (best val R@1 of 250 val-region queries; binomial s.e. about 3 points) are
in each recipe's ``note``.

Usage::

    python packages/geo-bench/tuning/tune_on_val.py --out tune_run l2ltr-pos-normal registered:l2ltr
    python packages/geo-bench/tuning/tune_on_val.py --out tune_run --world-seed 1 smdt-g2-seg

Writes ``<out>/tuning.jsonl`` (one JSON object per ablation: recipe, change, world seed, seed, val R@1
per epoch, selected epoch, best val R@1, train seconds); runs resume from ``<out>/runs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geo_bench.leaderboard.config import RunConfig, config_hash
from geo_bench.leaderboard.data import WorldConfig, load_world_split
from geo_bench.leaderboard.training import train_recipe
from geo_retrieval.recipes import Recipe, get_recipe


def _l2ltr_pos_normal() -> Recipe:
    recipe = get_recipe("l2ltr", "small")
    return recipe.replace(head_kwargs={**dict(recipe.head_kwargs), "pos_init": "normal"})


def _smdt_g2_seg() -> Recipe:
    recipe: Any = get_recipe("smdt", "small")
    smdt = recipe.smdt
    return recipe.replace(
        smdt=dataclasses.replace(smdt, cascade=dataclasses.replace(smdt.cascade, g2_input="seg"))
    )


def _safa_8_epochs() -> Recipe:
    return get_recipe("safa", "small").replace(epochs=8)


def _dsm_8_epochs() -> Recipe:
    return get_recipe("dsm", "small").replace(epochs=8)


def _l2ltr_24_epochs() -> Recipe:
    return get_recipe("l2ltr", "small").replace(epochs=24)


def _toker21_synthesise(samples: int | None) -> Callable[[], Recipe]:
    def make() -> Recipe:
        recipe: Any = get_recipe("toker21", "small")
        return recipe.replace(toker=dataclasses.replace(recipe.toker, synthesis_samples=samples))

    return make


def _toker21_8_epochs() -> Recipe:
    recipe = get_recipe("toker21", "small")
    return recipe.replace(
        epochs=8,
        optimizer=dataclasses.replace(recipe.optimizer, lr=4e-4),
        schedule=dataclasses.replace(recipe.schedule, kind="cosine"),
        loss_kwargs={**dict(recipe.loss_kwargs), "schedule": [(0, None), (5, 0.5)]},
    )


def _sample4geo_layer_scale_1e6() -> Recipe:
    recipe = get_recipe("sample4geo", "small")
    return recipe.replace(epochs=40, backbone_kwargs={**dict(recipe.backbone_kwargs), "ls_init_value": 1e-6})


def _sample4geo_epochs(epochs: int) -> Callable[[], Recipe]:
    return lambda: get_recipe("sample4geo", "small").replace(epochs=epochs)


def _smdt_gan_all_epochs() -> Recipe:
    recipe: Any = get_recipe("smdt", "small")
    return recipe.replace(smdt=dataclasses.replace(recipe.smdt, gan_epochs=None))


ABLATIONS: dict[str, tuple[str, Callable[[], Recipe]]] = {
    "l2ltr-pos-normal": ("head pos_init normal (registered: sincos)", _l2ltr_pos_normal),
    "smdt-g2-seg": ("g2_input seg (registered: seg+aerial)", _smdt_g2_seg),
    "safa-8-epochs": ("8 epochs (registered: 16)", _safa_8_epochs),
    "dsm-8-epochs": ("8 epochs (registered: 10)", _dsm_8_epochs),
    "l2ltr-24-epochs": ("24 epochs (registered: 32)", _l2ltr_24_epochs),
    "toker21-8-epochs": ("8 epochs, cosine lr 4e-4 (registered: 15, constant 2e-4)", _toker21_8_epochs),
    "toker21-synthesise-all": ("synthesis on all 16 samples (registered: 2)", _toker21_synthesise(None)),
    "toker21-synthesise-4": ("synthesis on 4 of 16 samples (registered: 2)", _toker21_synthesise(4)),
    "toker21-synthesise-1": ("synthesis on 1 of 16 samples (registered: 2)", _toker21_synthesise(1)),
    "sample4geo-layer-scale-1e-6": (
        "ConvNeXt layer scale 1e-6, 40 epochs (registered: 1.0, 32)",
        _sample4geo_layer_scale_1e6,
    ),
    "sample4geo-40-epochs": ("40 epochs (registered: 32)", _sample4geo_epochs(40)),
    "sample4geo-24-epochs": ("24 epochs (registered: 32)", _sample4geo_epochs(24)),
    "smdt-gan-all-epochs": ("GANs trained all 20 epochs (registered: frozen after 10)", _smdt_gan_all_epochs),
}


def _resolve(name: str) -> tuple[str, Recipe]:
    if name.startswith("registered:"):
        recipe_name = name.split(":", 1)[1]
        return "registered", get_recipe(recipe_name, "small")
    if name.startswith("float32:"):
        recipe_name = name.split(":", 1)[1]
        return "float32 (registered: bf16 amp)", get_recipe(recipe_name, "small").replace(amp=False)
    if name not in ABLATIONS:
        raise SystemExit(
            f"unknown ablation {name!r}; available: {', '.join(ABLATIONS)}, registered:<recipe>, float32:<recipe>"
        )
    change, make = ABLATIONS[name]
    return change, make()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ablations", nargs="+", help="ablation names (see above)")
    parser.add_argument("--out", default="tune_run", help="output folder (default tune_run)")
    parser.add_argument("--world-seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cfg = RunConfig(seed=args.seed, world=WorldConfig(seed=args.world_seed))
    chosen = [(name, *_resolve(name)) for name in args.ablations]  # a wrong name fails before any rendering
    cache = out / "cache"
    train = load_world_split(cfg.world, "train", cache)
    val = load_world_split(cfg.world, "val", cache)
    for name, change, recipe in chosen:
        config = config_hash(recipe.to_dict(), cfg)
        run_dir = out / "runs" / f"{recipe.name}-{config}-w{args.world_seed}-s{args.seed}"
        run = train_recipe(recipe, train, cfg, run_dir, val=val)
        history = json.loads((run_dir / "history.json").read_text())
        curve = [float(e["val/R@1"]) for e in history if "val/R@1" in e]
        best = max(range(len(curve)), key=lambda i: (curve[i], -i))
        row = {
            "ablation": name,
            "recipe": recipe.name,
            "change": change,
            "world_seed": args.world_seed,
            "seed": args.seed,
            "config": config,
            "val_curve": curve,
            "selected_epoch": best + 1,
            "best_val_R@1": curve[best],
            "train_seconds": round(run.train_seconds, 1),
        }
        with (out / "tuning.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        print(
            f"{name:24s} {recipe.name:10s} {change:45s} best val R@1 {curve[best]:5.1f} "
            f"(epoch {best + 1}/{len(curve)}), {run.train_seconds:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
