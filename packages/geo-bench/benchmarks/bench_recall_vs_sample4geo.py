#!/usr/bin/env python3
"""Recall evaluation: ``geo_bench.metrics.retrieval_recall`` against Sample4Geo's own ``calculate_scores``.

Both sides get the same seeded, L2-normalised float32 descriptors (N queries x N references x D,
query i matching reference i) and compute R@1, R@5, R@10 and R@1%. Each measurement runs in a fresh
subprocess with one torch thread, so peak memory is that call's alone: wall seconds, CPU seconds
(user + sys of the call; less sensitive than wall time to other load on a shared machine) and the
peak resident memory growth during the call (``VmHWM`` minus the resident size before it). The
table gives the medians over ``--repeats`` alternating runs, the ratio theirs / ours (above 1: ours
is faster) and whether the recalls agree.

Sample4Geo's code is not part of this project: ``--upstream DIR`` is a checkout of
https://github.com/Skyy93/Sample4Geo (its ``sample4geo/evaluate/cvusa_and_cvact.py`` is imported
from there, as is; it needs tqdm). Without it the script says what is missing and exits with 2.

Usage::

    python packages/geo-bench/benchmarks/bench_recall_vs_sample4geo.py --upstream ~/src/Sample4Geo
    python packages/geo-bench/benchmarks/bench_recall_vs_sample4geo.py --upstream DIR --sizes 8884,30000 --repeats 3

This is a script, not a test; it prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geo_bench.metrics import retrieval_recall

UPSTREAM_MODULE = Path("sample4geo") / "evaluate" / "cvusa_and_cvact.py"


def _rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _data(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(n, d, generator=g)
    qry = ref + 5.0 * torch.randn(n, d, generator=g)  # noisy enough that recalls are not all 100
    return F.normalize(qry, dim=1), F.normalize(ref, dim=1)


def _worker(side: str, n: int, d: int, upstream: str | None) -> dict[str, object]:
    torch.set_num_threads(1)
    qry, ref = _data(n, d)
    if side == "ours":

        def call() -> list[float]:
            res = retrieval_recall(qry, ref, ks=(1, 5, 10)).as_dict()
            return [float(res["R@1"]), float(res["R@5"]), float(res["R@10"]), float(res["R@1%"])]
    else:
        assert upstream is not None
        sys.path.insert(0, str(Path(upstream).resolve()))
        from sample4geo.evaluate.cvusa_and_cvact import calculate_scores

        labels = torch.arange(n)

        def call() -> list[float]:
            # calculate_scores prints its recalls and returns R@1 only; read them back from its line
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
                calculate_scores(qry, ref, labels, labels, step_size=1000, ranks=[1, 5, 10])
            parts = [p.split(":")[1] for p in buf.getvalue().strip().splitlines()[-1].split(" - ")]
            return [float(p) for p in parts]

    before = _rss_kib("VmRSS")
    exact_peak = _reset_peak()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    recalls = call()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = _rss_kib("VmHWM")
    return {
        "side": side,
        "n": n,
        "wall_s": wall,
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "peak_mib": max(0, peak - before) / 1024 if exact_peak else float("nan"),
        "recalls": recalls,
    }


def _run(side: str, n: int, d: int, upstream: str) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", side, "--n", str(n), "--dim", str(d), "--upstream", upstream]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{side} at N={n} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", help="checkout of https://github.com/Skyy93/Sample4Geo")
    parser.add_argument("--sizes", default="8884,30000", help="comma-separated N (default 8884,30000)")
    parser.add_argument("--dim", type=int, default=1024, help="descriptor dimension (default 1024)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per side at each N (default 3)"
    )
    parser.add_argument("--worker", choices=["ours", "sample4geo"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.n, args.dim, args.upstream)))
        return 0
    if not args.upstream or not (Path(args.upstream) / UPSTREAM_MODULE).is_file():
        where = args.upstream or "(not given)"
        print(
            f"error: --upstream must be a checkout of https://github.com/Skyy93/Sample4Geo holding "
            f"{UPSTREAM_MODULE}; got {where}",
            file=sys.stderr,
        )
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"torch {torch.__version__}, one thread per side, D = {args.dim}, {args.repeats} runs each")
    header = (
        f"{'N':>7} | {'ours wall s':>11} {'cpu s':>7} {'peak MiB':>8} | {'S4G wall s':>10} {'cpu s':>7} "
        f"{'peak MiB':>8} | {'speed ratio (wall, cpu)':>23} | recalls"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        runs: dict[str, list[dict[str, object]]] = {"ours": [], "sample4geo": []}
        for _ in range(args.repeats):
            for side in ("ours", "sample4geo"):
                runs[side].append(_run(side, n, args.dim, args.upstream))

        agree = np.allclose(runs["ours"][0]["recalls"], runs["sample4geo"][0]["recalls"], atol=1e-3)  # type: ignore[arg-type]
        print(
            f"{n:>7} | {_median(runs['ours'], 'wall_s'):>11.2f} {_median(runs['ours'], 'cpu_s'):>7.2f} {_median(runs['ours'], 'peak_mib'):>8.0f} | "
            f"{_median(runs['sample4geo'], 'wall_s'):>10.2f} {_median(runs['sample4geo'], 'cpu_s'):>7.2f} "
            f"{_median(runs['sample4geo'], 'peak_mib'):>8.0f} | "
            f"{_median(runs['sample4geo'], 'wall_s') / _median(runs['ours'], 'wall_s'):>10.2f}x "
            f"{_median(runs['sample4geo'], 'cpu_s') / _median(runs['ours'], 'cpu_s'):>10.2f}x | "
            f"{'equal' if agree else 'DIFFER'} {runs['ours'][0]['recalls']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
