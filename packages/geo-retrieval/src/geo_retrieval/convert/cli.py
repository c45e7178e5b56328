"""``python -m geo_retrieval.convert SOURCE SRC OUT_DIR [options]``: one sub-command per registered source.

Convention: each source (:func:`~geo_retrieval.convert.sources.list_sources`) is a sub-command with
the positional ``src`` and ``out_dir`` and its own options; the written files are printed one per line
(``name: path``). A fault the user can fix (a missing, unsafe, truncated or foreign file, a
checkpoint whose keys do not fit, an unwritable OUT_DIR) prints one ``error:`` line naming the file
and exits with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..cli_errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, USER_ERRORS, guarded
from .sources import convert, get_source, list_sources

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per registered source."""
    parser = argparse.ArgumentParser(
        prog="python -m geo_retrieval.convert",
        description="Convert published cross-view checkpoints to safetensors (safe loading only, strict mapping).",
    )
    sub = parser.add_subparsers(dest="format", required=True, metavar="SOURCE")
    for name in list_sources():
        source = get_source(name)
        p = sub.add_parser(name, help=source.summary, description=source.summary)
        p.add_argument("src", help="the published checkpoint file")
        p.add_argument("out_dir", help="output folder")
        if source.add_arguments is not None:
            source.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("format", "src", "out_dir")}

    def work() -> int:
        for name, path in convert(args.format, args.src, args.out_dir, **options).items():
            print(f"{name}: {path}")
        return 0

    # a file the user gave is missing, unsafe, damaged or of another kind (TypeError: not a state
    # dict of tensors): one ``error:`` line on stderr, exit status 2
    return guarded(
        work,
        interrupted="OUT_DIR is replaced only when a conversion completes; run the same command again",
        errors=(*USER_ERRORS, TypeError),
        report=lambda line: print(line, file=sys.stderr),
    )
