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

Converted checkpoints (python -m geo_retrieval.convert SOURCE SRC OUT_DIR; OUT_DIR holds
manifest.json): the recipe, variant and overrides come from the manifest, and by default the images
are preprocessed as the upstream code does (--preprocess upstream: its reader, resize method, sizes
and normalisation, e.g. Sample4Geo's cv2.INTER_LINEAR_EXACT resize of cv2.imread pixels); --preprocess
ours uses the recipe's evaluation preprocessing instead. The records' protocol says which ran
("preprocess", and "upstream_preprocessing" with its settings). Upstream preprocessing reads the
image files of CVUSA / CVACT / VIGOR (not a prepare cache) under the dataset's own protocols.

Polar manifests (SAFA, DSM, Toker, L2LTR, GeoDTR) render the upstream polar PNGs from the raw aerials
(their data_preparation.py, e.g. scipy.misc.imsave's min-max stretch, bit for bit with the same JPEG
decoder); --polar-maps DIR reads polar maps made beforehand instead (<aerial file stem>.png, e.g. the
authors' released polarmap/19), as the upstream loader reads them. --test-grd-noise DEG replays DSM's
test-time roll of the panoramas (np.random.seed(--test-grd-seed, 2019), then int(rand * W * DEG / 360)
columns per query; DSM's test_cvusa_fov.py uses 0 by default, 360 for unknown orientation); the records
then say orientation_known false and keep the roll ("upstream_test_roll"). TransGeo stage-2 folders
(convert transgeo --stage 2) need --attention-maps DIR, the stage-1 attention maps <index>.png of the
released archive (attention/val): each aerial is encoded on the 64 % of its patches they rank highest, as
upstream's forward_features_crop does. Every upstream record keeps the
image decoders that ran ("image_decoders": Pillow and its JPEG library, OpenCV).

--descriptors FILE.npz also writes the descriptors: "ground" (queries) and "aerial" (references)
float32, one row per item in dataset order (L2-normalised as the model outputs them), "ids" and
"ground_ids" (the query ids) and "aerial_ids" (the references': VIGOR's gallery tiles).

  geo-bench evaluate --checkpoint runs/safa-small-s0
  geo-bench evaluate --checkpoint runs/s4g/best --dataset cvusa --root data/CVUSA --device cuda
  geo-bench evaluate --checkpoint converted/s4g-cvusa --dataset cvusa --root data/CVUSA --descriptors s4g.npz
"""

from __future__ import annotations

import argparse
import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from torch import Tensor

from geo_retrieval.checkpoint import atomic_write_bytes, file_sha256, load_model_weights, load_trainer_state
from geo_retrieval.convert import WEIGHTS_FILE, Manifest, is_converted, read_manifest, recipe_from_manifest
from geo_retrieval.recipes import Recipe, build
from geo_retrieval.run_folder import RunLayout

from ..datasets.upstream_preprocess import (
    UpstreamViews,
    decoder_versions,
    upstream_protocol,
    upstream_roll_shifts,
)
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
    parser.add_argument(
        "--preprocess",
        choices=["upstream", "ours"],
        help="converted checkpoints: the upstream code's preprocessing from manifest.json (default) or "
        "the recipe's own (ours); other checkpoints: ours",
    )
    parser.add_argument(
        "--polar-maps",
        metavar="DIR",
        help="--preprocess upstream with a polar checkpoint: read polar maps made beforehand (DIR/<aerial stem>.png, "
        "e.g. the authors' released polarmap/19) instead of rendering them from the aerial images",
    )
    parser.add_argument(
        "--attention-maps",
        metavar="DIR",
        help="--preprocess upstream with a TransGeo stage-2 checkpoint: the stage-1 attention maps DIR/<index>.png "
        "(attention/val of the released model archive; index = the reference's position, as upstream's test "
        "list orders them); each aerial is encoded on the patches they keep (64 %%)",
    )
    parser.add_argument(
        "--test-grd-noise",
        type=float,
        metavar="DEG",
        help="--preprocess upstream: roll each query panorama right by DSM's seeded test-time shift "
        "int(rand * W * DEG / 360) (DSM: 0 by default, 360 = unknown orientation); recorded",
    )
    parser.add_argument(
        "--test-grd-seed",
        type=int,
        default=2019,
        help="seed of numpy's legacy RNG for --test-grd-noise (DSM's test scripts: 2019)",
    )
    parser.add_argument(
        "--descriptors",
        metavar="FILE.npz",
        help="also write the ground (query) and aerial (reference) descriptors, in dataset order, with ids",
    )
    add_protocol_arguments(parser)
    add_data_arguments(parser)
    add_runtime_arguments(parser)


def _identity(batch: dict) -> dict:
    return batch


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


def _converted(weights: Path, args: argparse.Namespace) -> tuple[Manifest, Recipe] | None:
    """The manifest and recipe of a converted checkpoint (None for other checkpoints); the weights
    must be the ones the manifest was written with."""
    if weights.name != WEIGHTS_FILE or not is_converted(weights):
        return None
    manifest = read_manifest(weights.parent)
    for option, value, own in (
        ("--recipe", args.recipe, manifest.recipe),
        ("--variant", args.variant, manifest.variant),
    ):
        if value is not None and value != own:
            raise ValueError(
                f"{option} {value}: {weights.parent} is a converted {own!r} checkpoint ({manifest.recipe}, {manifest.variant})"
            )
    if file_sha256(weights) != manifest.weights_sha256:
        raise ValueError(
            f"{weights} does not match {weights.parent / 'manifest.json'} (sha256 differs): the folder was "
            "changed after the conversion; convert the checkpoint again"
        )
    return manifest, recipe_from_manifest(manifest)


def _preprocess(args: argparse.Namespace, manifest: Manifest | None) -> str:
    """Which preprocessing runs (``"upstream"`` or ``"ours"``); a combination that cannot run is refused."""
    choice = args.preprocess or ("upstream" if manifest is not None else "ours")
    if choice == "ours":
        return choice
    if manifest is None:
        raise ValueError(
            "--preprocess upstream needs a converted checkpoint (a folder with manifest.json written by "
            "python -m geo_retrieval.convert); this one is evaluated with --preprocess ours"
        )
    if args.dataset == "synthetic":
        raise ValueError(
            "--preprocess upstream reads image files: pass --dataset cvusa|cvact|vigor --root DIR (e.g. a "
            "folder written by geo-bench synth --layout cvusa), or --preprocess ours for the synthetic world"
        )
    if args.protocols or args.cache:
        raise ValueError(
            "--preprocess upstream runs the dataset's own protocols on its image files: drop --protocols / "
            "--cache, or pass --preprocess ours"
        )
    recorded = manifest.source_options.get("dataset")
    if recorded in ("cvusa", "cvact", "vigor") and recorded != args.dataset:
        raise ValueError(
            f"{manifest.source_kind}: this folder records upstream's {recorded} preprocessing, not {args.dataset}'s: "
            f"convert the checkpoint again with --dataset {args.dataset}, or pass --preprocess ours"
        )
    return choice


def _upstream_options(args: argparse.Namespace, preprocess: str) -> None:
    """--polar-maps and --test-grd-noise belong to --preprocess upstream."""
    for option, value in (
        ("--polar-maps", args.polar_maps),
        ("--test-grd-noise", args.test_grd_noise),
        ("--attention-maps", getattr(args, "attention_maps", None)),
    ):
        if value is not None and preprocess != "upstream":
            raise ValueError(
                f"{option} replays an upstream evaluation: it needs a converted checkpoint under --preprocess "
                "upstream (for our own orientation protocols use --protocols fov)"
            )
    if args.test_grd_noise is not None and not 0 <= args.test_grd_noise <= 360:
        raise ValueError(f"--test-grd-noise must be in [0, 360] degrees, got {args.test_grd_noise}")


def _upstream_views(
    test: Any, args: argparse.Namespace, manifest: Manifest, extra: dict[str, Any]
) -> UpstreamViews:
    """``test`` read with the manifest's upstream pipeline (and the options), the records' fields in ``extra``."""
    pre = manifest.preprocessing
    shifts = None
    if args.test_grd_noise is not None:
        width = int(pre.ground_size[1])
        shifts = upstream_roll_shifts(len(test), args.test_grd_noise, seed=args.test_grd_seed, width=width)
        extra["upstream_test_roll"] = {
            "noise_deg": float(args.test_grd_noise),
            "seed": int(args.test_grd_seed),
            "width": width,
            "rule": "np.random.seed(seed); int(np.random.rand() * width * noise_deg / 360) per query, right roll",
        }
    views = UpstreamViews(
        test,
        pre,
        polar_maps=args.polar_maps,
        ground_shifts=shifts,
        attention_maps=getattr(args, "attention_maps", None),
    )
    extra["upstream_preprocessing"] = upstream_protocol(pre)
    extra["image_decoders"] = decoder_versions()
    if args.polar_maps is not None:
        extra["upstream_polar_maps"] = Path(args.polar_maps).name
    attention_maps = getattr(args, "attention_maps", None)
    if attention_maps is not None:
        extra["upstream_attention_maps"] = Path(attention_maps).name
    return views


class _Descriptors:
    """Keeps the clean descriptors of an evaluation and writes them as ``.npz`` (atomically)."""

    def __init__(self) -> None:
        self.ground: Tensor | None = None
        self.aerial: Tensor | None = None

    def __call__(self, ground: Tensor, aerial: Tensor) -> None:
        self.ground, self.aerial = ground.detach().float().cpu(), aerial.detach().float().cpu()

    def write(self, path: str | Path, test: Any) -> Path:
        if self.ground is None or self.aerial is None:
            raise RuntimeError("no descriptors were computed")
        ground_ids = np.array([str(i) for i in test.ids])
        gallery = getattr(test, "gallery", None)
        aerial_ids = np.array([str(i) for i in gallery.ids]) if gallery is not None else ground_ids
        buf = io.BytesIO()
        np.savez(
            buf,
            ground=self.ground.numpy().astype(np.float32),
            aerial=self.aerial.numpy().astype(np.float32),
            ids=ground_ids,
            ground_ids=ground_ids,
            aerial_ids=aerial_ids,
        )
        return atomic_write_bytes(path, buf.getvalue())


def _run(args: argparse.Namespace) -> int:
    apply_runtime(args)
    found = resolve_run(args.checkpoint, recipe=args.recipe, variant=args.variant)
    weights, run_dir, info = found.weights, found.run_dir, found.info
    converted = _converted(weights, args)
    manifest = converted[0] if converted is not None else None
    preprocess = _preprocess(args, manifest)
    _upstream_options(args, preprocess)
    if converted is not None:
        recipe = converted[1]
        variant = recipe.variant
    else:
        variant = found.variant
        recipe = get_recipe_or_raise(found.recipe, variant, task="retrieval")
    cfg = replace(
        RunConfig(
            dataset=args.dataset,
            root=args.root,
            variant=variant,
            seed=_seed(run_dir, args),
            eval_split=args.split,
            device=args.device,
            vigor_area=args.vigor_area,
            vigor_labels=args.vigor_labels,
            vigor_labels_dir=args.vigor_labels_dir,
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
    test: Any = data.test
    prepare = None
    extra: dict[str, Any] = {"preprocess": preprocess}
    if manifest is not None:
        extra["converted_from"] = {
            "kind": manifest.source_kind,
            "file": manifest.source_file,
            "sha256": manifest.source_sha256,
        }
    if preprocess == "upstream" and manifest is not None:
        test = _upstream_views(data.test, args, manifest, extra)
        prepare = _identity  # UpstreamViews' samples are the model inputs already
    descriptors = _Descriptors() if args.descriptors else None
    store = ResultStore(args.store)
    view = status_view(not progress_enabled(args))  # plain lines every 30 s when there are no bars
    view.update({"kind": "start", "recipe": recipe.name, "variant": variant})
    with view:
        records = evaluate_trained(
            run_,
            test,
            cfg,
            progress=progress_enabled(args),
            source=str(weights),
            queries_dir=store.path.parent / "queries",
            events=view.update,
            cross=data.cross,
            prepare=prepare,
            on_descriptors=descriptors,
            protocol_extra=extra,
        )
    if "upstream_test_roll" in extra and extra["upstream_test_roll"]["noise_deg"] > 0:
        # the queries were rolled by unknown (to the model) amounts: not the north-aligned protocol
        records = [replace(r, protocol={**r.protocol, "orientation_known": False}) for r in records]
    for r in records:
        store.append(r)
    if descriptors is not None:
        print(f"descriptors written to {descriptors.write(args.descriptors, test)}")
    base, _, _ = split_records(records)
    render_rich(base, console=None, title=f"{recipe.name} ({variant}) on {args.dataset} {cfg.test_split}")
    render_rich_tables(records, Console())
    print(f"{len(records)} record(s) appended to {store.path}")
    return 0
