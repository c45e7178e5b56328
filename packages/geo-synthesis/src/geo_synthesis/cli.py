"""``geo-synthesis`` command line: ``sample`` panoramas from a checkpoint, ``train`` on paired folders.

Convention:
    ``geo-synthesis sample --checkpoint RUN/last --aerial a.png b.png --out grid.png`` loads the
    weights (safetensors, strict) and the recipe named in their metadata (or ``--recipe`` /
    ``--variant``), applies the recipe's eval preprocessing (square aerials are polar-transformed;
    non-square ones are taken as already polar and resized), synthesises panoramas and writes a PNG
    grid: aerial (polar) | synthesised | real (when ``--ground`` images are given, in the same
    order). ``--aerial-dir`` takes every image of a folder.

    ``geo-synthesis train toker21 --variant small --data DIR --out RUN`` trains on a folder of
    pairs ``DIR/aerial/<id>.<ext>`` + ``DIR/ground/<id>.<ext>`` (matched by file stem), holding out
    ``--val-fraction`` of the ids for checkpoint selection; progress bars, atomic checkpoints,
    ``--resume``, grids every ``--grid-every`` steps come from geo-retrieval's Trainer. Real
    benchmark datasets (CVUSA, CVACT...) are trained through ``geo-bench train toker21``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geo_retrieval.checkpoint import load_weights, read_metadata
from geo_retrieval.recipes import Recipe, build, get_recipe
from geo_retrieval.run_folder import WEIGHTS_FILE, RunLayout
from geo_retrieval.training import BatchTransform, Trainer, split_holdout

from .callbacks import SynthesisGridCallback
from .datasets import IMAGE_EXTENSIONS, PairedImageFolder
from .grids import load_image, save_image_grid

__all__ = ["load_model", "main"]

logger = logging.getLogger(__name__)


def _weights_file(checkpoint: Path) -> Path:
    if checkpoint.is_dir():
        checkpoint = checkpoint / WEIGHTS_FILE
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"no weights at {checkpoint} (give a checkpoint directory or a .safetensors file)"
        )
    return checkpoint


def _like(template: Any, value: Any) -> Any:
    """``value`` (from JSON) converted to the type of ``template`` (dataclasses, tuples)."""
    if dataclasses.is_dataclass(template) and not isinstance(template, type) and isinstance(value, dict):
        kw = {
            f.name: _like(getattr(template, f.name), value[f.name])
            for f in dataclasses.fields(template)
            if f.name in value
        }
        return dataclasses.replace(template, **kw)
    if isinstance(template, tuple) and isinstance(value, list):
        return tuple(_like(template[0] if template else None, v) for v in value)
    if isinstance(template, dict) and isinstance(value, dict):
        return {
            k: (tuple(v) if isinstance(v, list) and k in ("channels", "layers") else v)
            for k, v in value.items()
        }
    return value


def _run_recipe(weights: Path, name: str, variant: str) -> Recipe:
    """The registered recipe, updated with the run's ``recipe.json`` (written by the Trainer next to
    ``last/``) when it exists and names the same recipe."""
    rec = get_recipe(name, variant)
    path = RunLayout(weights.parent.parent).recipe_json  # RUN/last/model.safetensors -> RUN/recipe.json
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("name") == name and data.get("variant") == variant:
            rec = _like(rec, {k: v for k, v in data.items() if k not in ("grad_clip",)})
    return rec


def load_model(checkpoint: str | Path, recipe: str | None = None, variant: str | None = None):
    """``(model, recipe)`` from a trainer checkpoint (``last/``, ``best/`` or the weights file).

    The recipe defaults to the one recorded in the weights' metadata, with the sizes and options of
    the run's ``recipe.json`` when present (runs with a modified recipe). Loading is strict.
    """
    path = _weights_file(Path(checkpoint))
    meta = read_metadata(path)
    name = recipe or meta.get("recipe")
    var = variant or meta.get("variant") or "full"
    if not name:
        raise ValueError(f"{path} records no recipe; pass --recipe")
    rec = _run_recipe(path, name, var)
    model = build(rec)
    model.load_state_dict(load_weights(path), strict=True)
    model.eval()
    return model, rec


def _images(paths: Sequence[str], folder: str | None) -> list[Path]:
    out = [Path(p) for p in paths]
    if folder:
        d = Path(folder)
        if not d.is_dir():
            raise FileNotFoundError(f"no folder {d}")
        out += [p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    for p in out:
        if not p.is_file():
            raise FileNotFoundError(f"no image {p}")
    return out


def _stack_resized(paths: Sequence[Path]) -> Tensor:
    """Load images and stack them; differing sizes are resized to the first one's."""
    imgs = [load_image(p) for p in paths]
    size = imgs[0].shape[-2:]
    imgs = [
        i
        if i.shape[-2:] == size
        else torch.nn.functional.interpolate(i[None], size=tuple(size), mode="bilinear")[0]
        for i in imgs
    ]
    return torch.stack(imgs)


def cmd_sample(args: argparse.Namespace) -> int:
    aerial_paths = _images(args.aerial, args.aerial_dir)
    if not aerial_paths:
        raise SystemExit("no aerial images: give --aerial IMG... or --aerial-dir DIR")
    ground_paths = _images(args.ground, None)
    if ground_paths and len(ground_paths) != len(aerial_paths):
        raise SystemExit(f"{len(ground_paths)} --ground images for {len(aerial_paths)} aerial images")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, recipe = load_model(args.checkpoint, args.recipe, args.variant)
    model.to(device)
    transform = BatchTransform.from_recipe(recipe)
    cols: list[list[Tensor]] = [[], [], []]
    for start in tqdm(range(0, len(aerial_paths), args.batch_size), desc="synthesise", disable=args.quiet):
        chunk = aerial_paths[start : start + args.batch_size]
        aerial = _stack_resized(chunk)
        if ground_paths:
            ground = _stack_resized(ground_paths[start : start + args.batch_size])
        else:  # placeholder, only to run the shared preprocessing; not drawn
            ground = torch.zeros(aerial.shape[0], 3, *recipe.ground_size)
        batch = transform({"ground": ground.to(device), "aerial": aerial.to(device)}, None, train=False)
        with torch.no_grad():
            fake = model.synthesise(batch["aerial"])
        cols[0].append(batch["aerial"].cpu())
        cols[1].append(fake.float().cpu())
        cols[2].append(batch["ground"].cpu())
    columns = [torch.cat(c) for c in cols]
    labels = ["aerial (polar)", "synthesised", "real"]
    if not ground_paths:
        columns, labels = columns[:2], labels[:2]
    out = save_image_grid(columns, args.out, labels=labels)
    print(f"wrote {out} ({len(aerial_paths)} rows)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.recipe, args.variant)
    data = PairedImageFolder(args.data)
    train, val = split_holdout(data, fraction=args.val_fraction, seed=args.seed)
    model = build(recipe)
    out = Path(args.out)
    callbacks = []
    if args.grid_every:
        callbacks.append(SynthesisGridCallback(args.grid_every, out / "grids", val, num_samples=4))
    trainer = Trainer(
        model,
        recipe,
        train,
        val,
        out_dir=out,
        seed=args.seed,
        device=args.device,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        callbacks=callbacks,
        progress=not args.quiet,
        num_workers=args.num_workers,
        resume=args.resume,
    )
    result = trainer.fit()
    print(
        f"{result.recipe} ({result.variant}): {result.epochs_completed} epochs, step {result.global_step}, "
        f"best {result.selection_metric} {result.best_metric} on {result.selection_split}; checkpoints in {out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geo-synthesis",
        description="Satellite-to-street synthesis (toker21, smdt): synthesise panoramas from a checkpoint, "
        "or train on a folder of aerial/ground pairs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="synthesise panoramas for aerial images and write a PNG grid")
    s.add_argument(
        "--checkpoint", required=True, help="trainer checkpoint dir (last/, best/) or model.safetensors"
    )
    s.add_argument(
        "--aerial", nargs="*", default=[], help="aerial images (square: polar-transformed on the fly)"
    )
    s.add_argument("--aerial-dir", default=None, help="folder of aerial images (all of them, sorted)")
    s.add_argument(
        "--ground", nargs="*", default=[], help="real panoramas, same order as the aerials (optional)"
    )
    s.add_argument("--out", required=True, help="output .png grid")
    s.add_argument("--recipe", default=None, help="recipe name (default: from the checkpoint metadata)")
    s.add_argument(
        "--variant", default=None, choices=("full", "small"), help="recipe variant (default: metadata)"
    )
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)

    t = sub.add_parser("train", help="train a synthesis recipe on DIR/aerial + DIR/ground pairs")
    t.add_argument("recipe", help="recipe name, e.g. toker21")
    t.add_argument("--variant", default="small", choices=("full", "small"))
    t.add_argument(
        "--data", required=True, help="folder with aerial/ and ground/ subfolders (same file stems)"
    )
    t.add_argument("--out", required=True, help="run directory (checkpoints last/, best/, grids/)")
    t.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    t.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    t.add_argument("--max-steps", type=int, default=None, help="stop (and checkpoint) after this global step")
    t.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of ids for selection")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None)
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--grid-every", type=int, default=0, help="write a PNG grid every N steps (0: never)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/last")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``geo-synthesis`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status (2 on a user error)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError) as err:
        print(f"geo-synthesis {args.command}: error: {err}", file=sys.stderr)
        return 2
