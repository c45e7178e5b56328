"""Decode, crop, resize (and polar-transform) a dataset once into a memory-mappable uint8 cache.

For every requested split this writes CACHE/<dataset>-<split>-<config hash>/ with ground.npy and
aerial.npy ((count, 3, H, W) uint8, opened with np.load(mmap_mode="r")) and a manifest.json
(dataset, split, sizes, polar preset, count, ids, per-chunk sha256, package versions). The work is
written and checksummed in chunks, so an interrupted run continues where it stopped when the same
command is run again. Load it with the same options plus cache=CACHE, e.g.

  geo-bench prepare cvusa --root data/CVUSA --out cache/ --split val --polar safa
  then, in Python: CVUSA("data/CVUSA", "val", polar="safa", cache="cache/")

Sizes default to the dataset class's defaults (CVUSA/CVACT ground 112x616, aerial 256x256;
VIGOR 320x640 / 320x320). Resampling: Pillow antialiased bilinear, rounded to uint8.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..datasets import DATASETS, prepare_cache
from ._common import guarded

HELP = "decode and resize a dataset once into a memory-mappable, resumable uint8 cache"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench prepare`` to ``parser``."""
    parser.add_argument("dataset", choices=["cvusa", "cvact", "vigor"], help="which dataset")
    parser.add_argument("--root", required=True, help="dataset root (the official layout)")
    parser.add_argument(
        "--out", required=True, help="cache root; entries go to OUT/<dataset>-<split>-<hash>/"
    )
    parser.add_argument(
        "--split",
        nargs="+",
        default=None,
        help="splits to prepare (default: cvusa train val; cvact train val test; vigor train test)",
    )
    parser.add_argument("--ground-size", nargs=2, type=int, metavar=("H", "W"), help="panorama output size")
    parser.add_argument("--aerial-size", nargs=2, type=int, metavar=("H", "W"), help="raw aerial output size")
    parser.add_argument(
        "--polar", metavar="PRESET|HxW", help="store polar aerials: safa (112x616), dsm (128x512) or HxW"
    )
    parser.add_argument(
        "--polar-center", choices=["safa", "pixel"], default="safa", help="polar centre (default safa = S/2)"
    )
    parser.add_argument(
        "--on-missing", choices=["raise", "skip"], default="raise", help="samples with missing files"
    )
    parser.add_argument("--chunk-size", type=int, default=256, help="images per written, checksummed chunk")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g = parser.add_argument_group("CVUSA")
    g.add_argument("--split-file", help="CSV replacing the official split (e.g. GeoDTR's cleaned one)")
    g.add_argument(
        "--cvusa-split", choices=["orig", "geodtr_clean", "custom"], help="name recorded for --split-file"
    )
    g = parser.add_argument_group("CVACT")
    g.add_argument("--crop", choices=["middle_half", "none"], default="middle_half", help="panorama row crop")
    g = parser.add_argument_group("VIGOR")
    g.add_argument("--area", choices=["same", "cross"], default="same", help="same- or cross-area protocol")
    g.add_argument("--labels", choices=["orig", "corrected"], default="orig", help="label version")
    g.add_argument("--labels-dir", help="directory of corrected split files (with --labels corrected)")


def dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor keyword arguments of the dataset from the parsed options."""
    kw: dict[str, Any] = {"polar_center": args.polar_center, "on_missing": args.on_missing}
    if args.ground_size:
        kw["ground_size"] = tuple(args.ground_size)
    if args.aerial_size:
        kw["aerial_size"] = tuple(args.aerial_size)
    if args.polar:
        kw["polar"] = args.polar
    if args.dataset == "cvusa":
        if args.split_file:
            kw["split_file"] = args.split_file
        if args.cvusa_split:
            kw["cvusa_split"] = args.cvusa_split
    elif args.dataset == "cvact":
        kw["crop"] = None if args.crop == "none" else args.crop
    else:
        kw.update(area=args.area, labels=args.labels)
        if args.labels_dir:
            kw["labels_dir"] = args.labels_dir
    return kw


_DEFAULT_SPLITS = {"cvusa": ("train", "val"), "cvact": ("train", "val", "test"), "vigor": ("train", "test")}


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench prepare`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(
        lambda: _run(args), interrupted="finished chunks are kept; run the same command again to resume"
    )


def _run(args: argparse.Namespace) -> int:
    cls = DATASETS[args.dataset]
    splits = args.split or _DEFAULT_SPLITS[args.dataset]
    kw = dataset_kwargs(args)
    for split in splits:
        ds = cls(args.root, split, **kw)
        entry = prepare_cache(ds, args.out, chunk_size=args.chunk_size, progress=args.progress)
        views = ds.view_ids()
        print(
            f"{ds.name} {split}: N={len(ds)} queries, {len(views['aerial'])} aerials"
            f"{f', {ds.missing} missing' if ds.missing else ''} -> {entry}"
        )
    return 0
