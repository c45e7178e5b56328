"""Shared options and error handling of the training / evaluation verbs (``train``, ``evaluate``,
``leaderboard``): dataset selection, the synthetic world's size, threads, devices, and turning the
errors users can fix (unknown recipe, missing data, a checkpoint that does not fit, an unsafe pickle)
into one clear message and exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from geo_retrieval import cli_errors
from geo_retrieval.cli_errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, USER_ERRORS

from ..leaderboard.config import TINY_WORLD
from ..leaderboard.data import WorldConfig
from ..leaderboard.pool import keep_freed_memory
from ..leaderboard.progress import ProgressBoard, ProgressView, progress_interval

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "USER_ERRORS",
    "add_data_arguments",
    "add_protocol_arguments",
    "add_runtime_arguments",
    "apply_runtime",
    "check_device",
    "guarded",
    "progress_enabled",
    "status_view",
    "world_config",
]

log = logging.getLogger("geo_bench.cli")


def add_data_arguments(parser: argparse.ArgumentParser, *, default_dataset: str = "synthetic") -> None:
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=["synthetic", "cvusa", "cvact", "vigor"],
        default=default_dataset,
        help=f"dataset (default {default_dataset}: the embedded synthetic world, nothing to download)",
    )
    g.add_argument("--root", help="dataset folder in its official layout (cvusa / cvact / vigor)")
    g.add_argument(
        "--vigor-area", choices=["same", "cross"], default="same", help="VIGOR area split (default same)"
    )
    g.add_argument(
        "--vigor-labels",
        choices=["orig", "corrected"],
        default="orig",
        help="VIGOR label version (default orig; corrected = SliceMatch's, needs --vigor-labels-dir; "
        "recorded in every result's protocol)",
    )
    g.add_argument(
        "--vigor-labels-dir", metavar="DIR", help="VIGOR: the corrected split files, mirroring splits/"
    )
    g.add_argument("--n-train", type=int, help="synthetic world: training cameras (default 1200)")
    g.add_argument(
        "--n-val",
        type=int,
        help="synthetic world: cameras of the val region that selects the checkpoint (default 250)",
    )
    g.add_argument(
        "--n-test", type=int, help="synthetic world: test cameras, same-area and cross-area (default 500)"
    )
    g.add_argument("--world-seed", type=int, default=0, help="synthetic world: world seed (default 0)")
    g.add_argument(
        "--cache",
        metavar="DIR",
        help="CVUSA / CVACT / VIGOR: a `geo-bench prepare` cache root (prepared with the default "
        "sizes, no --polar) read instead of decoding the images; synthetic world: where the "
        "rendered world is cached (default OUT/cache for train and leaderboard, none for evaluate)",
    )
    g.add_argument(
        "--tiny",
        action="store_true",
        help="tiny synthetic world for smoke tests (72 train / 20 test cameras, 32x128 panoramas; "
        "leaderboard: also 1 epoch, batch 16)",
    )


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """``--protocols fov,corruption``: the optional evaluation protocols (no retraining)."""
    parser.add_argument(
        "--protocols",
        metavar="NAMES",
        help="also evaluate these protocols, comma-separated: fov (FoV 360/180/90/70 with orientation unknown, "
        "from fixed query files kept in queries/ next to the results), corruption (16 corruptions x 5 "
        "severities of the queries, relative corruption error) and corruption+refs (the references "
        "corrupted too); e.g. --protocols fov,corruption",
    )


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("runtime")
    g.add_argument("--device", help="cpu, cuda, cuda:1... (default: CUDA when available)")
    g.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default on CPU: 1; the small models run 4-7x slower with 2 "
        "threads on a shared 2-core machine; on CUDA: torch's choice)",
    )
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def world_config(args: argparse.Namespace, base: Any = None) -> Any:
    world = base or (TINY_WORLD if getattr(args, "tiny", False) else WorldConfig())
    changes: dict[str, Any] = {"seed": args.world_seed}
    if getattr(args, "n_train", None):
        changes["n_train"] = args.n_train
    if getattr(args, "n_test", None):
        changes["n_test"] = args.n_test
    if getattr(args, "n_val", None):
        changes["n_val"] = args.n_val
    return replace(world, **changes)


def check_device(device: str | None) -> str:
    """Validate ``--device`` before any work and return the device the run will use.

    Accepted: ``cpu``, ``cuda``, ``cuda:N`` (N below the number of visible GPUs) and ``mps``; None
    means CUDA when available, else the CPU.

    Raises:
        ValueError: not a torch device name, or a device this machine does not have (one line
            naming ``--device``, what was given and what is available).
    """
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    expected = "expected cpu, cuda, cuda:N or mps"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device name; {expected}") from None
    if parsed.type == "cpu":
        return str(parsed)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            built = (
                f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"
                if torch.version.cuda
                else (f"torch {torch.__version__}, a CPU-only build")
            )
            raise ValueError(
                f"--device {device!r}: CUDA is not available on this machine ({built}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"--device {device!r}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
            )
        return str(parsed)
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device!r}: MPS is not available on this machine; use --device cpu")
        return str(parsed)
    raise ValueError(f"--device {device!r}: device type {parsed.type!r} is not supported; {expected}")


def apply_runtime(args: argparse.Namespace) -> None:
    """Validate ``--device`` (:func:`check_device`) and set the torch thread count: ``--threads N``,
    else one thread when the run is on the CPU (measured: 0.07 s per safa-small step with 1 thread
    vs 0.33 s with 2 on the shared 2-core box; toker21 0.45 vs 1.8 s); on the CPU, freed memory is
    kept for the next step (:func:`~geo_bench.leaderboard.pool.keep_freed_memory`). Call it first, before any
    work, so a bad device fails in a second rather than after the data is loaded."""
    device = check_device(getattr(args, "device", None))
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {threads}")
    if device.startswith("cpu"):
        keep_freed_memory()  # no page refaults per training step (the leaderboard's workers do the same)
    if threads:
        torch.set_num_threads(int(threads))
        return
    if device.startswith("cpu"):
        torch.set_num_threads(1)


def status_view(active: bool) -> Any:
    """A :class:`~geo_bench.leaderboard.progress.ProgressView` over a fresh board: when ``active``
    (no progress bars: output is a log, not a terminal) it prints one timestamped line per running
    recipe every ``GEO_BENCH_PROGRESS_S`` (default 30) seconds to stdout; otherwise it only
    collects events.

    Raises:
        ValueError: ``GEO_BENCH_PROGRESS_S`` is not a positive number.
    """
    interval = progress_interval()
    t0 = time.perf_counter()

    def emit(line: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {line}", flush=True)

    return ProgressView(ProgressBoard(), emit=emit if active else None, interval_s=interval)


def progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def guarded(
    fn: Callable[[], int], *, interrupted: str = "nothing was written; run the same command again"
) -> int:
    """Run a verb's work; faults a user can fix become one logged message and exit status 2
    (:func:`geo_retrieval.cli_errors.guarded`, logged on ``geo_bench.cli``; ``-v`` adds the
    traceback).

    Args:
        fn: the verb's work, returning its exit status.
        interrupted: what a rerun will do, logged after Ctrl-C (exit status 130).

    Returns:
        ``fn()``'s status, :data:`EXIT_USER_ERROR` for a user-fixable fault (:data:`USER_ERRORS`),
        or :data:`EXIT_INTERRUPTED` after Ctrl-C. Other exceptions (bugs) propagate with their
        traceback.
    """
    return cli_errors.guarded(fn, interrupted=interrupted, logger=log)
