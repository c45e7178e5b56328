"""The leaderboard's worker-process settings (``geo_bench.leaderboard.pool``)."""

import argparse
import platform
import subprocess
import sys

import pytest
import torch

from geo_bench.cli import _common
from geo_bench.leaderboard import pool

# In a fresh interpreter (mallopt is process-wide): page faults of allocating, touching and freeing
# buffers of 1-24 MiB thirty times, after an untimed first round.
_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from geo_bench.leaderboard.pool import keep_freed_memory
    assert keep_freed_memory()
def cycle():
    bufs = [np.ones(n << 20, dtype=np.uint8) for n in (1, 3, 6, 12, 24)]
    del bufs
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_keep_freed_memory_stops_refaulting_freed_buffers():
    default, kept = _faults("default"), _faults("keep")
    assert default > 1000  # glibc hands the freed buffers back and faults them in again
    assert kept < default // 10


def test_workers_keep_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(pool, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(pool, "_EVENTS", None)
    pool._init_worker(None)
    assert calls == [1]


def test_cpu_commands_keep_freed_memory(monkeypatch):
    """``geo-bench train`` / ``evaluate`` / ``leaderboard`` on the CPU (``apply_runtime``) apply the
    same allocator setting in their own process."""
    calls = []
    monkeypatch.setattr(_common, "keep_freed_memory", lambda: calls.append(1) or True)
    threads = torch.get_num_threads()
    try:
        _common.apply_runtime(argparse.Namespace(device="cpu", threads=None))
    finally:
        torch.set_num_threads(threads)
    assert calls == [1]
