"""The ``geo-bench`` command line.

Each verb lives in its own module of this package, which defines

- ``HELP``: a one-line summary shown by ``geo-bench --help``;
- ``add_arguments(parser)``: adds the verb's options (the parser's description comes from the
  module docstring, so ``geo-bench VERB --help`` explains the verb);
- ``run(args) -> int``: does the work and returns the exit status.

Verbs are listed in ``VERBS``; a verb whose optional dependency is missing reports that clearly.

Verb modules import what they use at the top: ``import geo_bench`` already loads torch and
geo-retrieval, and the leaderboard / localize / world modules (with rich) add about 1 % to the
start-up of ``geo-bench --help``. Optional dependencies (faiss, rasterio, pyproj, geo-synthesis,
matplotlib) stay lazy inside the library functions that need them, so ``--help`` never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["VERBS", "build_parser", "main"]

# verb name -> module (relative to this package), in the order --help lists them
VERBS: dict[str, str] = {
    "prepare": ".prepare",
    "duplicates": ".duplicates",
    "synth": ".synth",
    "train": ".train",
    "evaluate": ".evaluate",
    "leaderboard": ".leaderboard",
    "reported": ".reported",
    "index": ".index",
    "locate": ".locate",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``geo-bench`` argument parser: one sub-command per entry of ``VERBS``."""
    parser = argparse.ArgumentParser(
        prog="geo-bench",
        description="Cross-view geo-localisation benchmark: datasets, evaluation and the leaderboard.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"geo-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, module_name in VERBS.items():
        module = importlib.import_module(module_name, __name__)
        verb = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(verb)
        verb.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``geo-bench`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
