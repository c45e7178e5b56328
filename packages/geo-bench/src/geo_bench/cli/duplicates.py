"""List exact-duplicate images in a dataset split (identical decoded pixels, MD5 as in GeoDTR).

Only CVUSA is supported. Every aerial and panorama of the split is decoded with Pillow and the
pixel bytes hashed; images sharing a hash are printed as pairs (view, first id, duplicate id, md5).
GeoDTR's cleaned CVUSA split (34,769 train / 8,841 val pairs) removes such duplicates; record
cvusa_split=geodtr_clean when you use it.

  geo-bench duplicates cvusa --root data/CVUSA --split train --csv dups.csv
"""

from __future__ import annotations

import argparse
import csv

from ..datasets import find_exact_duplicates
from ._common import guarded

HELP = "list exact-duplicate image pairs of a CVUSA split (md5 of decoded pixels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench duplicates`` to ``parser``."""
    parser.add_argument("dataset", choices=["cvusa"], help="dataset (only cvusa)")
    parser.add_argument("--root", required=True, help="CVUSA root")
    parser.add_argument(
        "--split", default="train", choices=["train", "val", "test"], help="split (default train)"
    )
    parser.add_argument("--split-file", help="check this CSV instead of the official split")
    parser.add_argument("--views", nargs="+", choices=["aerial", "ground"], default=["aerial", "ground"])
    parser.add_argument("--csv", help="also write the pairs to this CSV file")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench duplicates`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(lambda: _run(args), interrupted="nothing was written; run the same command again")


def _run(args: argparse.Namespace) -> int:
    pairs = find_exact_duplicates(
        args.root, args.split, views=tuple(args.views), split_file=args.split_file, progress=args.progress
    )
    print("view\tid_a\tid_b\tmd5")
    for p in pairs:
        print(f"{p.view}\t{p.id_a}\t{p.id_b}\t{p.md5}")
    by_view = {v: sum(p.view == v for p in pairs) for v in args.views}
    print(
        f"{len(pairs)} duplicate pair(s) in CVUSA {args.split}: "
        + ", ".join(f"{v} {n}" for v, n in by_view.items())
    )
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["view", "id_a", "id_b", "md5", "path_a", "path_b"])
            for p in pairs:
                w.writerow([p.view, p.id_a, p.id_b, p.md5, p.path_a, p.path_b])
    return 0
