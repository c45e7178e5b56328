"""Print the published numbers (results.md) kept with geo-bench, with their source tags.

Each row is a kind="reported" results record: the method as printed in its paper or repository,
the dataset and split (cvusa test = val-19zl; cvact val = CVACT_val, test = CVACT_test with its
protocol where stated; vigor same_area / cross_area), polar / synthesis, the protocol (FoV,
orientation unknown, trained on another dataset), R@1 / R@5 / R@10 / R@1%, the source tag ([R] the
method's repository, [P] the paper table, [L] a community leaderboard, [C] the CLGT comparison
table, [I:x] an issue thread) and "unverified" where no primary source confirmed it. These numbers
were not measured here; compare them with measured rows only under the same protocol.

  geo-bench reported
  geo-bench reported --dataset cvact --split test
  geo-bench reported --dataset cvusa --format markdown
"""

from __future__ import annotations

import argparse
import sys

from ..leaderboard.reported import reported_records
from ..leaderboard.table import render_rich, to_csv, to_json, to_markdown
from ._common import guarded

HELP = "print the published results (with source tags) kept with geo-bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench reported`` to ``parser``."""
    parser.add_argument("--dataset", choices=["cvusa", "cvact", "vigor"], help="only this dataset")
    parser.add_argument(
        "--split", help="only this split (cvusa: test; cvact: val, test; vigor: same_area, cross_area)"
    )
    parser.add_argument("--verified-only", action="store_true", help="leave out rows marked unverified")
    parser.add_argument(
        "--format",
        choices=["rich", "markdown", "csv", "json"],
        default="rich",
        help="output format (default rich: a terminal table)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench reported`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    records = reported_records(args.dataset, args.split)
    if args.verified_only:
        records = [r for r in records if not r.protocol.get("unverified")]
    if not records:
        raise ValueError(f"no reported numbers for --dataset {args.dataset} --split {args.split}")
    if args.format == "markdown":
        sys.stdout.write(to_markdown((), records, title=None))
    elif args.format == "csv":
        sys.stdout.write(to_csv((), records))
    elif args.format == "json":
        sys.stdout.write(to_json((), records))
    else:
        render_rich((), records)
    return 0
