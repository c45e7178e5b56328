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


def test_worker_pool_starts_at_once_and_renders_the_cross_area_city_ahead(tmp_path):
    """The processes start with the pool (their imports overlap the parent's world rendering), not
    at the first recipe; a worker renders the cross-area split into the cache meanwhile, the same
    arrays as the parent renders after train, val and test in one process."""
    from geo_bench.leaderboard.config import TINY_WORLD, RunConfig, open_datasets

    workers = pool.WorkerPool(2)
    try:
        assert len(workers.executor._processes) == 2
        cfg = RunConfig(world=TINY_WORLD)
        rendering = workers.render_ahead(cfg, tmp_path / "ahead")
        assert set(rendering) == {"cross"}
        ahead = open_datasets(cfg, tmp_path / "ahead", rendering=rendering)
        assert rendering["cross"].result() == "cross"
    finally:
        workers.close()
    here = open_datasets(cfg, tmp_path / "here")
    for name in ("train", "val", "test", "cross"):
        a, b = getattr(ahead, name), getattr(here, name)
        assert torch.equal(a.ground, b.ground) and torch.equal(a.aerial, b.aerial), name
        assert a.ids == b.ids and torch.equal(a.utm, b.utm), name
    assert (
        pool.WorkerPool.render_ahead(workers, RunConfig(dataset="cvusa", root=str(tmp_path)), tmp_path) == {}
    )
    with pytest.raises(ValueError, match="jobs"):
        pool.WorkerPool(0)


_ORDER: list[str] = []


class _FakePool:
    def __init__(self, jobs):
        self.jobs = jobs
        _ORDER.append(f"pool({jobs})")

    def render_ahead(self, cfg, cache_dir):
        _ORDER.append("render_ahead")
        return {}

    def terminate(self):
        _ORDER.append("terminated")


def test_leaderboard_starts_workers_before_rendering_and_stops_them_on_failure(monkeypatch, tmp_path):
    from geo_bench.leaderboard import runner
    from geo_bench.leaderboard.config import RunConfig

    order = _ORDER
    order.clear()

    def no_data(*args, **kwargs):
        order.append("data")
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(runner, "WorkerPool", _FakePool)
    monkeypatch.setattr(runner, "open_datasets", no_data)
    with pytest.raises(RuntimeError, match="rendering failed"):
        runner.run_leaderboard(RunConfig(), tmp_path, recipes=["safa", "dsm", "l2ltr"], jobs=2)
    assert order == ["pool(2)", "render_ahead", "data", "terminated"]
    order.clear()
    with pytest.raises(RuntimeError, match="rendering failed"):  # one recipe: trained in process, no pool
        runner.run_leaderboard(RunConfig(), tmp_path, recipes=["safa"], jobs=2)
    assert order == ["data"]
