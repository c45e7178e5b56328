"""Peak memory of the chunked rank code stays bounded (peak-RSS growth, in a subprocess or in-process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from geo_bench.metrics import retrieval_recall

    def peak_mib():
        # VmHWM of this address space; ru_maxrss of an exec'd child can start at the parent's peak
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    n, d, budget = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(n, d, generator=g)
    qry = torch.randn(n, d, generator=g).mul_(0.5).add_(ref)
    retrieval_recall(qry[:8], ref[:64])  # warm up kernels and the allocator
    before = peak_mib()
    res = retrieval_recall(qry, ref, memory_budget=budget)
    after = peak_mib()
    print(json.dumps({"delta_mib": after - before, "r1": res.recall_at[1], "k": res.top1pct_k}))
    """
)


def _peak_growth_mib(n: int, d: int, budget: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(n), str(d), str(budget)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) through /proc/self/clear_refs (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def test_memory_bounded_medium_gallery_in_process():
    """Fast check in this process: a dense 12k x 12k float32 score matrix alone would be 550 MiB.

    Freed allocator memory can be reused here, so this can only under-report; the subprocess test
    below (``-m slow``) is the rigorous one.
    """
    import torch

    from geo_bench.metrics import retrieval_recall

    if not _reset_peak_rss():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(12_000, 32, generator=g)
    qry = torch.randn(12_000, 32, generator=g).mul_(0.5).add_(ref)
    retrieval_recall(qry[:8], ref[:64])
    _reset_peak_rss()
    base = _peak_rss_mib()
    res = retrieval_recall(qry, ref, memory_budget=16 * 2**20)
    growth = _peak_rss_mib() - base
    assert growth < 120, growth
    assert res.top1pct_k == 120 and 0 < res.recall_at[1] <= 100


@pytest.mark.slow
def test_memory_bounded_medium_gallery_subprocess():
    stats = _peak_growth_mib(12_000, 32, 16 * 2**20)
    assert stats["delta_mib"] < 60, stats


@pytest.mark.slow
def test_memory_bounded_large_gallery():
    # 50k x 50k: a dense float32 score matrix would be 9.3 GiB; the default budget is 256 MiB
    stats = _peak_growth_mib(50_000, 64, 256 * 2**20)
    assert stats["delta_mib"] < 400, stats
    assert stats["k"] == 500
