"""Benchmark ``geo_bench.metrics.retrieval_recall`` against the bare chunked matrix products.

For each size N_q x N_ref x D it prints:
- the time of the bare chunked ``q_block @ reference.T`` (same block size, pre-normalised inputs, no
  ranking), the lower bound for any exact method;
- the time of ``retrieval_recall`` (normalisation, products, gather, strict-``>`` counts, recalls);
- the peak memory growth of ``retrieval_recall`` beyond the inputs, measured in a fresh subprocess:
  the peak RSS (``VmHWM``, falling back to ``ru_maxrss``) on CPU (tracemalloc does not see torch
  allocations), ``torch.cuda.max_memory_allocated`` on CUDA.

Usage::

    python packages/geo-bench/benchmarks/bench_recall.py
    python packages/geo-bench/benchmarks/bench_recall.py --sizes 1000:92802:4096 --device cuda

CVACT_test is 92,802 x 92,802 at D up to 4096. The block working set does not depend on N_q, so
``--sizes 1000:92802:4096`` shows its peak memory exactly and its time per 1,000 queries on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from geo_bench.metrics import chunk_size_for, retrieval_recall

DEFAULT_SIZES = "8884:8884:512,8884:8884:4096,20000:20000:1024"


def _data(n_q: int, n_ref: int, d: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(n_ref, d, generator=g)
    qry = ref[:n_q].clone() if n_q <= n_ref else torch.randn(n_q, d, generator=g)
    qry.add_(torch.randn(qry.shape, generator=g), alpha=0.7)
    return qry.to(device), ref.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _bare(qry: torch.Tensor, ref: torch.Tensor, chunk: int, device: str) -> float:
    qn, rn = F.normalize(qry, dim=1), F.normalize(ref, dim=1)
    _sync(device)
    t = time.perf_counter()
    for s in range(0, qn.shape[0], chunk):
        block = qn[s : s + chunk] @ rn.T
        del block
    _sync(device)
    return time.perf_counter() - t


def _timed_recall(qry: torch.Tensor, ref: torch.Tensor, budget: int, device: str) -> tuple[float, dict]:
    _sync(device)
    t = time.perf_counter()
    res = retrieval_recall(qry, ref, memory_budget=budget)
    _sync(device)
    return time.perf_counter() - t, res.as_dict()


def _peak_rss_mib() -> float:
    """This process's peak RSS. Linux: VmHWM of the current address space (ru_maxrss of a freshly
    exec'd child can start at its parent's peak, so it would hide growth below that)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def _child(n_q: int, n_ref: int, d: int, device: str, budget: int) -> None:
    qry, ref = _data(n_q, n_ref, d, device)
    retrieval_recall(qry[:4], ref[:64])  # warm-up: kernels, thread pool, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        retrieval_recall(qry, ref, memory_budget=budget)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        before = _peak_rss_mib()
        retrieval_recall(qry, ref, memory_budget=budget)
        peak = _peak_rss_mib() - before
    print(json.dumps({"peak_mib": peak}))


def _peak_in_subprocess(n_q: int, n_ref: int, d: int, device: str, budget: int) -> float:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            f"{n_q}:{n_ref}:{d}",
            "--device",
            device,
            "--budget-mib",
            str(budget / 2**20),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated N_q:N_ref:D triples")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--budget-mib", type=float, default=256.0, help="memory_budget of retrieval_recall")
    parser.add_argument("--repeat", type=int, default=1, help="timing repeats (the best is shown)")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess peak-memory runs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budget = int(args.budget_mib * 2**20)
    if args.child:
        n_q, n_ref, d = (int(v) for v in args.child.split(":"))
        _child(n_q, n_ref, d, args.device, budget)
        return
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"budget {args.budget_mib:g} MiB"
    )
    header = (
        f"{'N_q x N_ref x D':>24} {'chunk':>6} {'bare mm s':>10} {'recall s':>9} {'ratio':>6} {'peak MiB':>9}"
    )
    print(header)
    for size in args.sizes.split(","):
        n_q, n_ref, d = (int(v) for v in size.split(":"))
        qry, ref = _data(n_q, n_ref, d, args.device)
        chunk = min(n_q, chunk_size_for(n_ref, budget))
        retrieval_recall(qry[:4], ref[:64])  # warm-up
        bare = min(_bare(qry, ref, chunk, args.device) for _ in range(args.repeat))
        full = min(_timed_recall(qry, ref, budget, args.device)[0] for _ in range(args.repeat))
        del qry, ref
        peak = float("nan") if args.no_memory else _peak_in_subprocess(n_q, n_ref, d, args.device, budget)
        label = f"{n_q} x {n_ref} x {d}"
        print(
            f"{label:>24} {chunk:>6} {bare:>10.3f} {full:>9.3f} {full / bare:>6.2f} {peak:>9.0f}", flush=True
        )


if __name__ == "__main__":
    main()
