"""The harness the ``bench_*_vs_upstream.py`` training-step scripts share (the scripts of
geo-synthesis' ``benchmarks/`` load it from this folder by path).

A script defines two workers, ``ours`` and ``theirs``, each a function ``(args) -> callable`` that
builds its model, loss, optimiser and the seeded inputs and returns one training step. The harness
runs every side in a fresh interpreter (``python SCRIPT --worker SIDE ...``, the upstream side with
``--upstream-python`` when given), pins the thread count (``torch.set_num_threads`` and the
OMP / MKL / TF variables), runs ``--warmup`` untimed steps, then ``--steps`` timed steps, and reads
back one JSON line (with the step's ``info`` dict, where the worker sets one: parameters in
millions ``params_m`` and ``gflop_per_step`` are printed as a second table). Per side: wall
seconds per step (mean and min), CPU seconds per step (user + sys
of the whole process over the timed steps: less sensitive than wall time to other load on a shared
machine), pairs/s from the mean step. Peak memory is the process's peak resident set size (Linux ``VmHWM``, reset
with ``/proc/self/clear_refs`` before the timed steps), so it covers everything the process holds:
weights, optimiser state, activations and allocator caches, of torch and of TensorFlow alike.

``--device cuda`` runs both sides on the GPU (torch sides only): each step ends with
``torch.cuda.synchronize()``, the peak device memory (``torch.cuda.max_memory_allocated`` over the
timed steps) is reported besides the RSS, and ``--batch`` defaults to the paper's batch (the
script's ``gpu_batch``) instead of the small CPU batch. Both sides stay float32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "Loop",
    "add_arguments",
    "input_pair",
    "main",
    "missing_upstream",
    "resolve_batch",
    "timed_batches",
]

MACHINE_NOTE = "shared 2-core CPU (other jobs running): indicative figures"


class Loop:
    """A worker's answer when the upstream step cannot be called one at a time (its epoch function
    owns the loop): ``run(n)`` runs ``n`` steps and returns the seconds of each."""

    def __init__(self, run: Callable[[int], list[float]]) -> None:
        self.run = run


def timed_batches(batch: object, n: int, stamps: list[float]) -> Any:
    """An iterable of ``n`` copies of ``batch`` that appends ``perf_counter()`` each time the consumer
    asks for the next item (and once more when it asks past the end): consecutive differences are
    the consumer's per-step times."""
    for _ in range(n):
        stamps.append(time.perf_counter())
        yield batch
    stamps.append(time.perf_counter())


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def input_pair(
    batch: int, ground: tuple[int, int], aerial: tuple[int, int], seed: int = 0
) -> tuple[Any, Any]:
    """Seeded float32 images in [0, 1]: ground (B, 3, H, W) and aerial (B, 3, h, w), as numpy arrays
    (both sides convert them to their own layout and range)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    g = rng.random((batch, 3, *ground), dtype=np.float32)
    a = rng.random((batch, 3, *aerial), dtype=np.float32)
    return g, a


def trainer_step(recipe_name: str, args: argparse.Namespace, **changes: Any) -> Callable[[], object]:
    """Our side: ``Trainer.train_step`` of the ``full`` recipe ``recipe_name`` (batch ``args.batch``,
    ``changes`` applied to the recipe) on one seeded batch of the recipe's input shapes, float32, the
    ``unique`` sampler, ``args.channels_last`` as asked. A non-square aerial is taken as already
    polar, like the authors' inputs."""
    import torch  # our packages load only in our side's interpreter

    from geo_retrieval.recipes import build, get_recipe
    from geo_retrieval.testing import SyntheticPairs
    from geo_retrieval.training import Trainer

    device = torch.device(args.device)
    recipe = get_recipe(recipe_name, "full").replace(batch_size=args.batch, **changes)
    g, a = input_pair(args.batch, recipe.ground_size, recipe.aerial_size)
    batch = {  # on the CPU: train_step copies it to the device, as in training
        "ground": torch.from_numpy(g),
        "aerial": torch.from_numpy(a),
        "id": [f"loc{i:05d}" for i in range(args.batch)],
    }
    torch.manual_seed(0)
    model = build(recipe)
    data = SyntheticPairs(args.batch, aerial_size=32, ground_size=(16, 64))  # the trainer wants a dataset
    trainer = Trainer(
        model,
        recipe,
        data,
        out_dir=tempfile.mkdtemp(prefix=f"bench_{recipe_name}_"),
        device=device,
        amp=False,
        channels_last=args.channels_last,
        sampler="unique",
        progress=False,
    )
    return lambda: trainer.train_step(batch)


def add_arguments(
    parser: argparse.ArgumentParser, *, batch: int, steps: int, warmup: int, gpu_batch: int | None = None
) -> None:
    """The options every side-by-side script takes. ``batch`` is the CPU default, ``gpu_batch`` the
    default with ``--device cuda`` (the paper's batch; None: the script runs on the CPU only)."""
    parser.add_argument("--upstream", help="checkout of the authors' repository")
    parser.add_argument(
        "--upstream-python",
        default=sys.executable,
        help="interpreter for the upstream side (default: this one)",
    )
    gpu_help = f", {gpu_batch} on a GPU" if gpu_batch else ""
    parser.add_argument(
        "--batch", type=int, default=None, help=f"pairs per step, both sides (default {batch}{gpu_help})"
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"] if gpu_batch else ["cpu"],
        default="cpu",
        help="where both sides run (default cpu)" + ("" if gpu_batch else "; this script is CPU-only"),
    )
    parser.set_defaults(cpu_batch=batch, gpu_batch=gpu_batch)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per side (default 2)")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps first (default {warmup})")
    parser.add_argument("--steps", type=int, default=steps, help=f"timed steps (default {steps})")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="our side with the Trainer's channels_last=True (not the default; changes rounding)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write both rows as JSON")
    parser.add_argument("--worker", choices=["ours", "theirs"], help=argparse.SUPPRESS)


def missing_upstream(upstream: str | None, needed: str, repo_url: str, extra: str = "") -> bool:
    """Print what is missing and how to get it; True when ``upstream`` lacks ``needed``."""
    if upstream and (Path(upstream) / needed).exists():
        return False
    print(
        f"error: --upstream must be a checkout of {repo_url} holding {needed}; got {upstream or '(not given)'}\n"
        f"  get it with: git clone {repo_url} DIR, then pass --upstream DIR{extra}",
        file=sys.stderr,
    )
    return True


def _set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        import torch

        torch.set_num_threads(n)
        torch.set_num_interop_threads(1)
    except (ImportError, RuntimeError):
        pass


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def resolve_batch(args: argparse.Namespace) -> int:
    """``args.batch``, set to the device's default (``add_arguments``) when not given."""
    if args.batch is None:
        args.batch = args.gpu_batch if args.device == "cuda" else args.cpu_batch
    return int(args.batch)


def _cuda_sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _cuda_reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak_mib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def _measure(
    step: Callable[[], object] | Loop, warmup: int, steps: int, batch: int, device: str = "cpu"
) -> dict[str, Any]:
    cpu0 = 0.0
    if isinstance(step, Loop):  # on a GPU its per-step stamps end with the next request, unsynchronised
        if warmup:
            step.run(warmup)
        exact = _reset_peak()
        _cuda_reset_peak(device)
        cpu0 = _cpu_s()
        times = step.run(steps)
        _cuda_sync(device)
    else:
        for _ in range(warmup):
            step()
        exact = _reset_peak()
        _cuda_reset_peak(device)
        cpu0 = _cpu_s()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            _cuda_sync(device)
            times.append(time.perf_counter() - t0)
    cpu = (_cpu_s() - cpu0) / steps
    peak = status_kib("VmHWM")
    mean = sum(times) / len(times)
    return {
        "step_mean_s": mean,
        "step_min_s": min(times),
        "steps_s": times,
        "cpu_s_per_step": cpu,
        "pairs_per_s": batch / mean,
        "peak_rss_mib": peak / 1024 if peak and exact else float("nan"),
        "peak_device_mib": _cuda_peak_mib(device),
    }


def _run_side(
    script: str, side: str, args: argparse.Namespace, python: str, extra: list[str]
) -> dict[str, Any]:
    env = {**os.environ, **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    env["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
    env["TF_NUM_INTEROP_THREADS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    cmd = [python, script, "--worker", side, "--batch", str(args.batch), "--threads", str(args.threads)]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--device", args.device, *extra]
    if args.channels_last and side == "ours":
        cmd.append("--channels-last")
    if args.upstream:
        cmd += ["--upstream", str(Path(args.upstream).resolve())]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{side} side failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine_note(device: str) -> str:
    if device != "cuda":
        return MACHINE_NOTE
    import torch

    return f"GPU {torch.cuda.get_device_name()} (torch {torch.__version__})"


def _commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../../"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def main(
    script: str,
    args: argparse.Namespace,
    workers: dict[str, Callable[[argparse.Namespace], Callable[[], object] | Loop]],
    *,
    title: str,
    labels: dict[str, str],
    extra_args: list[str] | None = None,
) -> int:
    """Run as the worker of one side (``--worker``) or as the driver of both; returns the exit code."""
    resolve_batch(args)
    if args.worker:
        _set_threads(args.threads)
        step = workers[args.worker](args)
        row = _measure(step, args.warmup, args.steps, args.batch, args.device)
        # e.g. parameters and GFLOP per step, where a worker counts them
        row.update(getattr(step, "info", {}))
        row.update(side=args.worker, what=labels[args.worker], python=platform.python_version())
        print(json.dumps(row))
        return 0
    extra = extra_args or []
    rows = {
        "ours": _run_side(script, "ours", args, sys.executable, extra),
        "theirs": _run_side(script, "theirs", args, args.upstream_python, extra),
    }
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{title}")
    print(
        f"device {args.device}, batch {args.batch}, {args.threads} threads per side, {args.warmup} warm-up + {args.steps} timed "
        f"steps, one process per side{'; ours channels-last' if args.channels_last else ''}; {when}, commit {_commit()}; {platform.processor() or platform.machine()}, "
        f"{_machine_note(args.device)}"
    )
    print(
        "peak RSS = the side's whole process (VmHWM over the timed steps: weights, optimiser state, activations)"
    )
    print()
    gpu = args.device == "cuda"
    print(
        "| side | what runs | step mean s | step min s | CPU s/step | pairs/s | peak RSS MiB |"
        + (" peak device MiB |" if gpu else "")
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for side in ("ours", "theirs"):
        r = rows[side]
        print(
            f"| {side} | {r['what']} | {r['step_mean_s']:.2f} | {r['step_min_s']:.2f} | {r['cpu_s_per_step']:.2f} | "
            f"{r['pairs_per_s']:.2f} | {r['peak_rss_mib']:.0f} |"
            + (f" {r['peak_device_mib']:.0f} |" if gpu else "")
        )
    if all("gflop_per_step" in rows[side] for side in rows):
        print()
        print("| side | parameters (M) | GFLOP per step | GFLOP/s (mean step) |")
        print("|---|---|---|---|")
        for side in ("ours", "theirs"):
            r = rows[side]
            print(
                f"| {side} | {r['params_m']:.1f} | {r['gflop_per_step']:.0f} | "
                f"{r['gflop_per_step'] / r['step_mean_s']:.1f} |"
            )
    mean_ratio = rows["theirs"]["step_mean_s"] / rows["ours"]["step_mean_s"]
    min_ratio = rows["theirs"]["step_min_s"] / rows["ours"]["step_min_s"]
    cpu_ratio = rows["theirs"]["cpu_s_per_step"] / rows["ours"]["cpu_s_per_step"]
    print()
    print(
        f"speed ours / theirs: {mean_ratio:.2f}x (mean step), {min_ratio:.2f}x (min step), {cpu_ratio:.2f}x "
        "(CPU seconds per step, less sensitive to other load); above 1: ours is faster"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "title": title,
                    "time": when,
                    "commit": _commit(),
                    "device": args.device,
                    "batch": args.batch,
                    "ratio_mean_step": mean_ratio,
                    "ratio_cpu_s": cpu_ratio,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0
