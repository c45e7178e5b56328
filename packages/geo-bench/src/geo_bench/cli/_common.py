"""Shared options and error handling of the training / evaluation verbs (``train``, ``evaluate``,
``leaderboard``): dataset selection, the synthetic world's size, threads, devices, and turning the
errors users can fix (unknown recipe, missing data, a checkpoint that does not fit, an unsafe pickle)
into one clear message and exit status 2."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("geo_bench.cli")


def add_data_arguments(parser: argparse.ArgumentParser, *, default_dataset: str = "synthetic") -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=["synthetic", "cvusa", "cvact", "vigor"], default=default_dataset,
                   help=f"dataset (default {default_dataset}: the embedded synthetic world, nothing to download)")
    g.add_argument("--root", help="dataset folder in its official layout (cvusa / cvact / vigor)")
    g.add_argument("--vigor-area", choices=["same", "cross"], default="same", help="VIGOR area split (default same)")
    g.add_argument("--n-train", type=int, help="synthetic world: training cameras (default 1200, 10 %% held out for selection)")
    g.add_argument("--n-test", type=int, help="synthetic world: test cameras (default 500)")
    g.add_argument("--world-seed", type=int, default=0, help="synthetic world: world seed (default 0)")
    g.add_argument("--tiny", action="store_true",
                   help="tiny synthetic world for smoke tests (72 train / 20 test cameras, 32x128 panoramas; "
                        "leaderboard: also 1 epoch, batch 16)")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("runtime")
    g.add_argument("--device", help="cpu, cuda, cuda:1... (default: CUDA when available)")
    g.add_argument("--threads", type=int,
                   help="torch intra-op threads (default on CPU: 1; the small models run 4-7x slower with 2 "
                        "threads on a shared 2-core machine; on CUDA: torch's choice)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def world_config(args: argparse.Namespace, base: Any = None) -> Any:
    from dataclasses import replace

    from ..leaderboard.data import WorldConfig
    from ..leaderboard.runner import TINY_WORLD

    world = base or (TINY_WORLD if getattr(args, "tiny", False) else WorldConfig())
    changes: dict[str, Any] = {"seed": args.world_seed}
    if getattr(args, "n_train", None):
        changes["n_train"] = args.n_train
    if getattr(args, "n_test", None):
        changes["n_test"] = args.n_test
    return replace(world, **changes)


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads N``, else one thread when the run is on the CPU (measured: 0.07 s per safa-small
    step with 1 thread vs 0.33 s with 2 on the shared 2-core box; toker21 0.45 vs 1.8 s)."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
        return
    device = getattr(args, "device", None)
    on_cpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")
    if on_cpu:
        torch.set_num_threads(1)


def progress_enabled(args: argparse.Namespace) -> bool:
    import sys

    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def guarded(fn: Callable[[], int]) -> int:
    """Run ``fn``; user-fixable errors become one message on stderr and exit status 2."""
    from geo_retrieval.checkpoint import UnsafeCheckpointError

    from ..datasets import DatasetNotFoundError
    from ..leaderboard.runner import CheckpointMismatchError

    try:
        return fn()
    except DatasetNotFoundError as exc:
        log.error("%s", exc)
    except UnsafeCheckpointError as exc:
        log.error("unsafe checkpoint refused (not unpickled): %s", exc)
    except CheckpointMismatchError as exc:
        log.error("%s", exc)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        log.error("%s", exc)
    return 2
