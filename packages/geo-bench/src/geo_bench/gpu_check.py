"""One-command GPU acceptance check of the toolkit, with a CPU dry run that CI exercises.

``python -m geo_bench.gpu_check --out DIR [--dry-run] [--budget-s 480]`` runs, in this order:

- ``environment``: torch, CUDA, the GPUs, faiss, kornia, the commit.
- ``mappings``: polar (750x750 -> 128x512, DSM), panorama to perspective (512x1024 -> 4 views of
  256x256) and SMDT's mixed mapping (256x256 -> 256x1024), batch 32, on the device against the
  CPU: median time of each, the speed-up, the peak device memory and the largest difference of the
  two outputs (a failure above ``MAPPING_TOLERANCE``).
- ``recall:torch`` / ``recall:faiss``: recall at CVACT_test scale (92,802 queries x 92,802
  references x 1,024, random descriptors with a known match) through the one ranking
  implementation on the device (two memory budgets), and through ``geo_retrieval.search.FaissIndex``
  on the GPU when faiss has GPU support (else the same on the CPU for a subset; else
  skipped): time, peak memory, and the R@K of the two paths, which must agree.
- ``ddp``: with two or more GPUs, ``torchrun`` trains the small ``safa`` recipe for a few steps on
  every GPU with nccl and checks that the ranks hold identical parameters; with one GPU it says so in
  one line (status ``skipped``).
- ``train:<recipe>``: each recipe's ``full`` variant at its real sizes and batch, on one fixed
  in-memory batch already on the device (data loading excluded), through the real
  :class:`~geo_retrieval.training.Trainer` step: fp32, bf16 autocast and fp16 autocast with
  GradScaler, each with channels_last off and on; pairs/s, ms/step and peak memory side by side.
- ``upstream:<method>``: with ``--upstream-root DIR`` (a folder of checkouts of the authors'
  repositories: ``comingdowntoearth``, ``Sample4Geo``, ``cross_view_localization_L2LTR``,
  ``PanoGAN``), the side-by-side training-step scripts of the packages' ``benchmarks/`` folders
  (:data:`UPSTREAM_BENCHMARKS`) on the device at the paper's batch, each side in its own
  interpreter (``--upstream-python`` for theirs): step seconds, peak device memory and the ratio.
  A script that finds its checkout missing or unusable exits with 2 and the check is ``skipped``
  with its message; without ``--upstream-root`` the group is one ``skipped`` line.
- ``tests:<package>``: every package's fast tests (``-m 'not slow'``, the packages' addopts) with
  ``--device cuda --dtype all``, the four packages in parallel subprocesses.

Convention:
    - Every check returns one :class:`CheckRecord` (name, status ``ok`` / ``failed`` / ``skipped``,
      figures, seconds, error, reason). A check that raises is recorded as ``failed`` with the
      error; the others still run.
      A training configuration that runs out of device memory is a row with status ``oom`` and a
      note in the figures (what fits at the recipe's batch is a finding, not a fault of the check).
    - A time budget (``--budget-s``, 480 s by default) bounds the run: a check that would not fit in
      what is left is ``skipped`` with a reason starting ``budget``; training stops at its own share
      (``train_budget_s``) and leaves ``tests_reserve_s`` for the test suites, whose subprocesses are
      killed at the budget's end (``failed``, "did not finish").
    - The report (``gpu_check.json`` and ``gpu_check.md`` in the output folder) is rewritten
      atomically after every check, so a run killed from outside leaves the checks done so far.
    - The exit status is 1 when any check failed, 0 otherwise (2 for a usage error).
    - ``--dry-run`` runs the same code on the CPU at tiny sizes: the ``small`` variant of each recipe
      at batch 4, one configuration per recipe (the six precision x channels_last configurations
      rotate over the six recipes, so each is exercised once, fp16 + GradScaler included; fp16,
      emulated on the CPU, goes to the cheapest recipes, fp32 to the GANs), one warm-up and one timed
      step, recall at N = 2,000, small mappings, and one test file of geo-transforms in a pytest
      subprocess (the other suites are ``skipped``: they are CI's job on the CPU). The DDP check is
      ``skipped`` there unless ``--ddp-gloo`` (two CPU gloo ranks). Memory figures are device
      memory and are ``None`` on the CPU.
    - Nothing here changes a library default: the trainer, ranking and mappings run as callers run
      them (``cudnn.benchmark`` and TF32 as torch leaves them; both are recorded).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from geo_bench.metrics.faiss_backend import MissingDependencyError, import_faiss
from geo_bench.metrics.recall import retrieval_recall
from geo_retrieval.checkpoint import atomic_write_bytes
from geo_retrieval.ranking import top1pct_k
from geo_retrieval.recipes import Recipe, build, get_recipe, list_recipes
from geo_retrieval.search import FaissIndex
from geo_retrieval.testing import SyntheticPairs
from geo_retrieval.training import Trainer
from geo_transforms import mixed_perspective_polar, panorama_to_perspective, polar_transform

__all__ = [
    "CHECK_GROUPS",
    "MAPPING_TOLERANCE",
    "PACKAGES",
    "PRECISIONS",
    "UPSTREAM_BENCHMARKS",
    "CheckRecord",
    "GpuCheckPlan",
    "compare_ddp_ranks",
    "ddp_worker",
    "main",
    "make_plan",
    "render_markdown",
    "run_gpu_check",
]

logger = logging.getLogger(__name__)

#: The check groups, in the order they run; ``--only`` / ``--skip`` take these names.
CHECK_GROUPS = ("environment", "mappings", "recall", "ddp", "train", "upstream", "tests")
#: The packages whose fast tests run, in this order.
PACKAGES = ("geo-transforms", "geo-retrieval", "geo-synthesis", "geo-bench")
#: The side-by-side scripts against the authors' code: method -> (script in the checkout, folder of
#: the authors' checkout under ``--upstream-root``).
UPSTREAM_BENCHMARKS: dict[str, tuple[str, str]] = {
    "toker21": ("packages/geo-synthesis/benchmarks/bench_toker21_vs_upstream.py", "comingdowntoearth"),
    "sample4geo": ("packages/geo-retrieval/benchmarks/bench_sample4geo_train_vs_upstream.py", "Sample4Geo"),
    "l2ltr": (
        "packages/geo-retrieval/benchmarks/bench_l2ltr_train_vs_upstream.py",
        "cross_view_localization_L2LTR",
    ),
    "smdt": ("packages/geo-synthesis/benchmarks/bench_smdt_vs_panogan.py", "PanoGAN"),
}
#: Training precisions: float32, bf16 autocast, fp16 autocast with GradScaler.
PRECISIONS = ("fp32", "bf16", "fp16")
#: Largest allowed |device - CPU| of a mapping's output (float32 images in [0, 1]).
MAPPING_TOLERANCE = 1e-3
#: Largest allowed difference in percentage points between the torch and faiss R@K.
RECALL_TOLERANCE = 0.05
REPORT_JSON = "gpu_check.json"
REPORT_MD = "gpu_check.md"
_SCHEMA = 1
_STATUSES = ("ok", "failed", "skipped")
_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class CheckRecord:
    """The outcome of one check.

    Attributes:
        name: ``group`` or ``group:item`` (``train:safa``, ``tests:geo-bench``).
        status: ``"ok"``, ``"failed"`` or ``"skipped"``.
        figures: measured values (JSON-serialisable); tables are lists of row dicts.
        seconds: wall time of the check.
        error: what failed (``failed`` only).
        reason: why it was skipped (``skipped``; starts with ``budget`` for the time budget).
    """

    name: str
    status: str
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {self.status!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON report."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GpuCheckPlan:
    """Everything a run measures and at which sizes (:func:`make_plan` fills it).

    Attributes:
        device: ``"cuda"`` (the check) or ``"cpu"`` (dry run).
        dry_run: tiny sizes on the CPU (module Convention).
        budget_s: the whole run's time budget in seconds.
        groups: the check groups to run (a subset of :data:`CHECK_GROUPS`, in that order).
        variant, recipes, batch_size, warmup_steps, steps: training (``recipes`` empty = all
            registered; ``batch_size`` None = the recipe's).
        rotate_configs: one precision x channels_last configuration per recipe, rotating (dry run).
        train_budget_s: the training checks' share of the budget.
        recall_n, recall_dim, faiss_cpu_n: recall sizes (faiss-cpu runs on the first
            ``faiss_cpu_n`` queries and references when faiss has no GPU support).
        recall_budgets: the ranking's ``memory_budget`` values (bytes) to time.
        mapping_batch, polar_size, polar_out, pano_size, view_size, n_views, mixed_size, mixed_out,
            mapping_repeats: mapping sizes ((H, W) pairs; sides are ints).
        test_packages: packages whose tests run; ``test_paths`` narrows a package to paths
            relative to its folder (dry run); ``test_args`` go to pytest.
        tests_timeout_s, tests_reserve_s, test_workers: the suites' wall-clock limit, the budget
            kept for them, and pytest-xdist workers per package (0 = none).
        ddp_gloo: run the DDP check with two CPU gloo ranks when there are fewer than two GPUs.
        repo: the checkout holding ``packages/`` (None = not found: tests are skipped).
        upstream_root, upstream_python: the folder of the authors' checkouts (None: the
            ``upstream`` group is skipped) and the interpreter of their side (None: this one).
        upstream_timeout_s: the limit of one side-by-side script.
    """

    device: str
    dry_run: bool
    budget_s: float
    groups: tuple[str, ...]
    variant: str
    recipes: tuple[str, ...]
    batch_size: int | None
    warmup_steps: int
    steps: int
    rotate_configs: bool
    train_budget_s: float
    recall_n: int
    recall_dim: int
    faiss_cpu_n: int
    recall_budgets: tuple[int, ...]
    mapping_batch: int
    polar_size: int
    polar_out: tuple[int, int]
    pano_size: tuple[int, int]
    view_size: tuple[int, int]
    n_views: int
    mixed_size: int
    mixed_out: tuple[int, int]
    mapping_repeats: int
    test_packages: tuple[str, ...]
    test_paths: dict[str, tuple[str, ...]]
    test_args: tuple[str, ...]
    tests_timeout_s: float
    tests_reserve_s: float
    test_workers: int
    ddp_gloo: bool
    repo: str | None
    upstream_root: str | None = None
    upstream_python: str | None = None
    upstream_timeout_s: float = 240.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the report."""
        return dataclasses.asdict(self)


def find_repo(start: Path | None = None) -> Path | None:
    """The checkout holding ``packages/geo-bench/pyproject.toml``, searched upwards from ``start``
    (default: this file, then the working directory); None when there is none."""
    candidates = [start] if start is not None else [Path(__file__).resolve(), Path.cwd().resolve()]
    for origin in candidates:
        for folder in (origin, *origin.parents):
            if (folder / "packages" / "geo-bench" / "pyproject.toml").is_file():
                return folder
    return None


def make_plan(
    *,
    dry_run: bool = False,
    device: str | None = None,
    budget_s: float = 480.0,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    recipes: Sequence[str] = (),
    steps: int | None = None,
    warmup_steps: int | None = None,
    batch_size: int | None = None,
    recall_n: int | None = None,
    tests_timeout_s: float | None = None,
    test_workers: int = 0,
    ddp_gloo: bool = False,
    repo: str | os.PathLike[str] | None = None,
    upstream_root: str | os.PathLike[str] | None = None,
    upstream_python: str | None = None,
) -> GpuCheckPlan:
    """The plan of a run: the real sizes, or tiny CPU sizes with ``dry_run``; keyword overrides.

    Raises:
        ValueError: an unknown group in ``only`` / ``skip``, or a non-positive size or budget.

    Example:
        >>> plan = make_plan(dry_run=True, only=["recall"])
        >>> plan.device, plan.variant, plan.recall_n, plan.groups
        ('cpu', 'small', 2000, ('recall',))
        >>> make_plan().recall_n, make_plan().test_args
        (92802, ('--device', 'cuda', '--dtype', 'all'))
    """
    for name, groups in (("only", only), ("skip", skip)):
        unknown = sorted(set(groups) - set(CHECK_GROUPS))
        if unknown:
            raise ValueError(f"{name}: unknown check group(s) {unknown}; available: {list(CHECK_GROUPS)}")
    if budget_s <= 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    selected = tuple(g for g in CHECK_GROUPS if (not only or g in only) and g not in skip)
    repo_path = Path(repo).resolve() if repo is not None else find_repo()
    device = device or ("cpu" if dry_run else "cuda")
    if dry_run:
        sizes: dict[str, Any] = {
            "variant": "small",
            "batch_size": 4,
            "warmup_steps": 1,
            "steps": 1,
            "rotate_configs": True,
            "train_budget_s": budget_s,
            "recall_n": 2000,
            "recall_dim": 1024,
            "faiss_cpu_n": 2000,
            "recall_budgets": (256 * 2**20,),
            "mapping_batch": 2,
            "polar_size": 64,
            "polar_out": (16, 64),
            "pano_size": (32, 64),
            "view_size": (16, 16),
            "n_views": 4,
            "mixed_size": 32,
            "mixed_out": (16, 64),
            "mapping_repeats": 2,
            "test_paths": {"geo-transforms": ("tests/test_presets.py",)},
            "test_args": ("--device", device, "--dtype", "all"),
            "tests_timeout_s": 120.0,
            "tests_reserve_s": 0.0,
        }
    else:
        sizes = {
            "variant": "full",
            "batch_size": None,
            "warmup_steps": 2,
            "steps": 3,
            "rotate_configs": False,
            "train_budget_s": 180.0,
            "recall_n": 92_802,
            "recall_dim": 1024,
            "faiss_cpu_n": 20_000,
            "recall_budgets": (256 * 2**20, 4 * 2**30),
            "mapping_batch": 32,
            "polar_size": 750,
            "polar_out": (128, 512),
            "pano_size": (512, 1024),
            "view_size": (256, 256),
            "n_views": 4,
            "mixed_size": 256,
            "mixed_out": (256, 1024),
            "mapping_repeats": 10,
            "test_paths": {},
            "test_args": ("--device", device, "--dtype", "all"),
            "tests_timeout_s": 300.0,
            "tests_reserve_s": 150.0,
        }
    if steps is not None:
        sizes["steps"] = steps
    if warmup_steps is not None:
        sizes["warmup_steps"] = warmup_steps
    if batch_size is not None:
        sizes["batch_size"] = batch_size
    if recall_n is not None:
        sizes["recall_n"] = recall_n
        sizes["faiss_cpu_n"] = min(sizes["faiss_cpu_n"], recall_n)
    if tests_timeout_s is not None:
        sizes["tests_timeout_s"] = tests_timeout_s
    for name in ("steps", "recall_n", "tests_timeout_s"):
        if sizes[name] <= 0:
            raise ValueError(f"{name} must be positive, got {sizes[name]}")
    if sizes["batch_size"] is not None and sizes["batch_size"] < 2:
        raise ValueError(f"batch_size must be >= 2 (in-batch negatives), got {sizes['batch_size']}")
    if sizes["warmup_steps"] < 0 or test_workers < 0:
        raise ValueError("warmup_steps and test_workers must be >= 0")
    return GpuCheckPlan(
        device=device,
        dry_run=dry_run,
        budget_s=float(budget_s),
        groups=selected,
        recipes=tuple(recipes),
        test_packages=PACKAGES if not dry_run else ("geo-transforms",),
        test_workers=test_workers,
        ddp_gloo=ddp_gloo,
        repo=str(repo_path) if repo_path is not None else None,
        upstream_root=str(Path(upstream_root).resolve()) if upstream_root is not None else None,
        upstream_python=upstream_python,
        **sizes,
    )


# ------------------------------------------------------------------------------------------------
# helpers


class _Budget:
    """Seconds left of the run's budget."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total_s - self.elapsed()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Yield a dict that holds, after the block, the peak device memory above the memory allocated
    at its start (``peak_MiB``) and the peak of all allocations (``peak_total_MiB``); None on the CPU."""
    out: dict[str, float | None] = {"peak_MiB": None, "peak_total_MiB": None}
    if device.type != "cuda":
        yield out
        return
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    yield out
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    out["peak_MiB"] = round((peak - base) / 2**20, 1)
    out["peak_total_MiB"] = round(peak / 2**20, 1)


def _median_seconds(fn: Callable[[Tensor], object], x: Tensor, repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn(x)`` over ``repeats`` calls, after one untimed call."""
    fn(x)
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn(x)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 2000 else text[:2000] + " ..."


def _faiss() -> tuple[ModuleType | None, str]:
    """The faiss module (or None) and a line saying which build it is."""
    try:
        faiss = import_faiss()
    except MissingDependencyError:
        return None, "not installed"
    gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    return faiss, f"{getattr(faiss, '__version__', '?')} ({gpus} GPU(s) visible to faiss)"


def _git_commit(repo: str | None) -> str | None:
    if repo is None:
        return None
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


# ------------------------------------------------------------------------------------------------
# checks


def check_environment(plan: GpuCheckPlan, device: torch.device) -> list[CheckRecord]:
    """Versions, the device, faiss; ``failed`` when the plan's device is CUDA and none is usable."""
    _, faiss_line = _faiss()
    kornia_spec = importlib.util.find_spec("kornia")
    figures: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss_line,
        "kornia": "installed" if kornia_spec is not None else "not installed",
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "commit": _git_commit(plan.repo),
        "repo": plan.repo,
    }
    if figures["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        figures["gpu"] = torch.cuda.get_device_name(0)
        figures["gpu_memory_GiB"] = round(props.total_memory / 2**30, 1)
        figures["capability"] = f"{props.major}.{props.minor}"
    if device.type == "cuda" and not torch.cuda.is_available():
        return [
            CheckRecord(
                "environment",
                "failed",
                figures,
                error="--device cuda, but torch.cuda.is_available() is False (no GPU or a CPU-only torch)",
            )
        ]
    return [CheckRecord("environment", "ok", figures)]


def _mapping_cases(plan: GpuCheckPlan) -> list[tuple[str, str, Callable[[Tensor], Tensor], Tensor]]:
    """(name, shapes, fn, CPU input) of the three mappings, inputs seeded."""
    gen = torch.Generator().manual_seed(0)
    b = plan.mapping_batch
    polar_in = torch.rand(b, 3, plan.polar_size, plan.polar_size, generator=gen)
    pano_in = torch.rand(b, 3, *plan.pano_size, generator=gen)
    mixed_in = torch.rand(b, 3, plan.mixed_size, plan.mixed_size, generator=gen)
    yaws = [360.0 * i / plan.n_views for i in range(plan.n_views)]
    return [
        (
            "polar",
            f"{b}x3x{plan.polar_size}x{plan.polar_size} -> {plan.polar_out[0]}x{plan.polar_out[1]}",
            lambda x: polar_transform(x, plan.polar_out),
            polar_in,
        ),
        (
            "panorama_to_perspective",
            f"{b}x3x{plan.pano_size[0]}x{plan.pano_size[1]} -> {plan.n_views} views "
            f"{plan.view_size[0]}x{plan.view_size[1]} (fov 90)",
            lambda x: panorama_to_perspective(x, yaws, 0.0, 90.0, plan.view_size),
            pano_in,
        ),
        (
            "mixed",
            f"{b}x3x{plan.mixed_size}x{plan.mixed_size} -> {plan.mixed_out[0]}x{plan.mixed_out[1]}",
            lambda x: mixed_perspective_polar(x, plan.mixed_out),
            mixed_in,
        ),
    ]


def check_mappings(plan: GpuCheckPlan, device: torch.device) -> list[CheckRecord]:
    """The three mappings on the device against the CPU: time, speed-up, memory, difference."""
    rows: list[dict[str, Any]] = []
    worst = 0.0
    cpu = torch.device("cpu")
    for name, shapes, fn, image in _mapping_cases(plan):
        with torch.no_grad():
            cpu_s = _median_seconds(fn, image, plan.mapping_repeats, cpu)
            expected = fn(image)
            moved = image.to(device)
            with _peak_memory(device) as mem:
                dev_s = _median_seconds(fn, moved, plan.mapping_repeats, device)
            actual = fn(moved).cpu()
        diff = float((actual - expected).abs().max()) if actual.numel() else 0.0
        worst = max(worst, diff)
        rows.append(
            {
                "mapping": name,
                "shapes": shapes,
                "cpu_ms": round(1000 * cpu_s, 3),
                "device_ms": round(1000 * dev_s, 3),
                "speedup": round(cpu_s / dev_s, 2) if dev_s > 0 else None,
                "peak_MiB": mem["peak_MiB"],
                "max_abs_diff": diff,
            }
        )
        del moved, actual, expected
        _free(device)
    figures = {"rows": rows, "tolerance": MAPPING_TOLERANCE, "cpu_threads": torch.get_num_threads()}
    if worst > MAPPING_TOLERANCE:
        bad = [r["mapping"] for r in rows if r["max_abs_diff"] > MAPPING_TOLERANCE]
        return [
            CheckRecord(
                "mappings",
                "failed",
                figures,
                error=f"{device.type} output differs from the CPU's by more than {MAPPING_TOLERANCE}: {bad}",
            )
        ]
    return [CheckRecord("mappings", "ok", figures)]


def _recall_problem(plan: GpuCheckPlan, device: torch.device) -> tuple[Tensor, Tensor]:
    """(queries, references) of shape (N, D) on ``device``: random references and noisy copies as
    queries (query i matches reference i; the noise leaves R@1 well below 100 %)."""
    gen = torch.Generator(device=device).manual_seed(0)
    n, d = plan.recall_n, plan.recall_dim
    reference = torch.randn(n, d, device=device, generator=gen)
    query = reference + 7.0 * torch.randn(n, d, device=device, generator=gen)
    return query, reference


def _faiss_recall(
    query: Tensor, reference: Tensor, ks: Sequence[int], k_top: int, use_gpu: bool
) -> tuple[dict[str, float], float]:
    """R@K (and R@1 % with K = ``k_top``) through :class:`~geo_retrieval.search.FaissIndex`, seconds."""
    start = time.perf_counter()
    index = FaissIndex(reference.shape[1], use_gpu=use_gpu, normalize=True)
    index.add(reference)
    kmax = max(*ks, k_top)
    hits = dict.fromkeys([*ks, k_top], 0)
    block = 16_384
    gt = torch.arange(query.shape[0])
    for s in range(0, query.shape[0], block):
        _, idx = index.search(query[s : s + block], kmax)
        found = idx == gt[s : s + block, None]
        pos = torch.where(found.any(1), found.float().argmax(1), torch.full_like(gt[s : s + block], kmax))
        for k in hits:
            hits[k] += int((pos < k).sum())
    seconds = time.perf_counter() - start
    n = query.shape[0]
    out = {f"R@{k}": 100.0 * hits[k] / n for k in ks}
    out["R@1%"] = 100.0 * hits[k_top] / n
    return out, seconds


def _recall_figures(result_dict: dict[str, float | int]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in result_dict.items() if k.startswith("R@")}


def _agree(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in a if k in b)


def check_recall(plan: GpuCheckPlan, device: torch.device) -> list[CheckRecord]:
    """Recall at CVACT_test scale: the torch ranking on the device, then faiss (GPU, else CPU subset)."""
    ks = (1, 5, 10)
    records: list[CheckRecord] = []
    start = time.perf_counter()
    query, reference = _recall_problem(plan, device)
    rows: list[dict[str, Any]] = []
    torch_result: dict[str, float] = {}
    for budget in plan.recall_budgets:
        with _peak_memory(device) as mem:
            t0 = time.perf_counter()
            result = retrieval_recall(query, reference, ks, memory_budget=budget, backend="torch")
            _sync(device)
            seconds = time.perf_counter() - t0
        torch_result = _recall_figures(result.as_dict())
        rows.append(
            {
                "memory_budget_MiB": budget // 2**20,
                "seconds": round(seconds, 3),
                "peak_MiB": mem["peak_MiB"],
                **torch_result,
                "K_1pct": result.top1pct_k,
            }
        )
    shape = {"n_query": plan.recall_n, "n_reference": plan.recall_n, "dim": plan.recall_dim}
    records.append(
        CheckRecord(
            "recall:torch",
            "ok",
            {**shape, "device": str(device), "rows": rows},
            seconds=time.perf_counter() - start,
        )
    )

    start = time.perf_counter()
    faiss, faiss_line = _faiss()
    if faiss is None:
        records.append(
            CheckRecord(
                "recall:faiss",
                "skipped",
                {"faiss": faiss_line},
                reason="faiss is not installed (carry faiss-cpu, or a faiss GPU build where one installs)",
            )
        )
        return records
    gpu = device.type == "cuda" and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    # without faiss GPU support: faiss-cpu on a subset, against the torch path on the same subset
    n = plan.recall_n if gpu else min(plan.faiss_cpu_n, plan.recall_n)
    q, r = query[:n], reference[:n]
    with _peak_memory(device) as mem:
        faiss_result, seconds = _faiss_recall(q, r, ks, top1pct_k(n), use_gpu=gpu)
    if n == plan.recall_n:
        reference_result = torch_result
    else:
        reference_result = _recall_figures(retrieval_recall(q, r, ks, backend="torch").as_dict())
    figures: dict[str, Any] = {
        "n_query": n,
        "n_reference": n,
        "dim": plan.recall_dim,
        "path": f"FaissIndex(use_gpu={gpu}), normalised, exact inner product",
        "faiss": faiss_line,
        "seconds": round(seconds, 3),
        "peak_MiB": mem["peak_MiB"],
        **faiss_result,
        "torch": reference_result,
    }
    if not gpu:
        figures["note"] = (
            f"faiss has no GPU support here: faiss-cpu on the first {n:,} queries and references, "
            "compared with the torch path on the same subset"
        )
    diff = _agree(faiss_result, reference_result)
    figures["max_diff_points"] = round(diff, 4)
    del query, reference
    _free(device)
    if diff > RECALL_TOLERANCE:
        records.append(
            CheckRecord(
                "recall:faiss",
                "failed",
                figures,
                seconds=time.perf_counter() - start,
                error=f"faiss and torch R@K differ by {diff:.3f} points (> {RECALL_TOLERANCE})",
            )
        )
    else:
        records.append(CheckRecord("recall:faiss", "ok", figures, seconds=time.perf_counter() - start))
    return records


# -- DDP -------------------------------------------------------------------------------------------

_DDP_RECIPE = ("safa", "small")
_DDP_STEPS = 5


def ddp_worker(out_dir: str | os.PathLike[str], device: str = "cuda") -> dict[str, Any]:
    """One rank of the DDP check (launched by ``torchrun``; also callable alone, as one rank).

    Trains the small ``safa`` recipe for a few steps on a fixed synthetic set (global batch 8 per
    rank) and writes ``rank<r>.json`` in ``out_dir``: rank, world size, backend, step, final loss
    and a SHA-256 of the parameters (not the buffers: BatchNorm statistics are per rank).

    Returns:
        The dict written.
    """
    recipe = get_recipe(*_DDP_RECIPE)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batch = 8 * world
    side = max(recipe.aerial_size) if recipe.polar else recipe.aerial_size[0]
    data = SyntheticPairs(batch * 2, aerial_size=side, ground_size=recipe.ground_size, seed=0)
    torch.manual_seed(0)
    model = build(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model,
            recipe.replace(batch_size=batch),
            data,
            out_dir=tmp,
            device=device,
            seed=1,
            sampler="unique",
            max_steps=_DDP_STEPS,
            progress=False,
        )
        losses: list[float] = []
        trainer.callbacks.append(lambda _t, logs: losses.append(float(logs.get("loss", math.nan))))
        trainer.fit()
        digest = hashlib.sha256()
        # parameters only: BatchNorm running statistics stay per rank (each rank's last forward
        # updates them from its own slice; DDP re-broadcasts rank 0's at the next forward)
        for name, tensor in sorted(trainer.raw_model.named_parameters()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        backend = dist.get_backend() if dist.is_initialized() else None
        result = {
            "rank": trainer.rank,
            "world_size": trainer.world_size,
            "backend": backend,
            "device": str(trainer.device),
            "step": trainer.global_step,
            "loss": losses[-1] if losses else None,
            "params_sha256": digest.hexdigest(),
        }
    Path(out_dir, f"rank{result['rank']}.json").write_text(json.dumps(result) + "\n")
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


def compare_ddp_ranks(results: Sequence[dict[str, Any]], world_size: int, backend: str | None) -> str | None:
    """What is wrong with the ranks' results (None when nothing): every rank present, the expected
    world size and backend, every step done, finite losses and identical parameters."""
    ranks = sorted(r["rank"] for r in results)
    if ranks != list(range(world_size)):
        return f"expected ranks 0..{world_size - 1}, got {ranks}"
    for r in results:
        if r["world_size"] != world_size:
            return f"rank {r['rank']} saw world size {r['world_size']}, expected {world_size}"
        if r["backend"] != backend:
            return f"rank {r['rank']} used backend {r['backend']!r}, expected {backend!r}"
        if r["step"] != _DDP_STEPS:
            return f"rank {r['rank']} stopped at step {r['step']}, expected {_DDP_STEPS}"
        if r["loss"] is None or not math.isfinite(r["loss"]):
            return f"rank {r['rank']} ended with loss {r['loss']}"
    digests = {r["params_sha256"] for r in results}
    if len(digests) != 1:
        return f"the ranks' parameters differ after {_DDP_STEPS} steps ({len(digests)} distinct digests)"
    return None


def _child_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _run_group(cmd: list[str], timeout: float, env: dict[str, str]) -> tuple[int, str, bool]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (torchrun's workers too).

    Returns:
        (return code, stdout and stderr together, whether it timed out).
    """
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        timed_out = False
        try:
            proc.wait(timeout=max(0.1, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        return proc.returncode, log.read(), timed_out


def check_ddp(plan: GpuCheckPlan, device: torch.device, budget: _Budget) -> list[CheckRecord]:
    """DDP through torchrun with nccl on every GPU (two or more), else one line saying why not."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= 2 and device.type == "cuda":
        nproc, worker_device, backend = gpus, "cuda", "nccl"
    elif plan.ddp_gloo:
        nproc, worker_device, backend = 2, "cpu", "gloo"
    else:
        where = (
            "the dry run uses no GPU" if plan.dry_run else f"this machine has {gpus} GPU{'s' * (gpus != 1)}"
        )
        return [
            CheckRecord(
                "ddp",
                "skipped",
                {"gpu_count": gpus},
                reason=f"{where}: DDP with nccl needs two or more (gloo DDP: --ddp-gloo)",
            )
        ]
    timeout = min(180.0, budget.left())
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "geo_bench.gpu_check",
            "--ddp-worker",
            tmp,
            "--device",
            worker_device,
        ]
        returncode, output, timed_out = _run_group(cmd, timeout, _child_env(1))
        results = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]
    figures = {"nproc": nproc, "backend": backend, "device": worker_device, "ranks": results}
    if timed_out or returncode != 0:
        what = f"did not finish within {timeout:.0f} s" if timed_out else f"exited {returncode}"
        return [CheckRecord("ddp", "failed", figures, error=f"torchrun {what}: {output[-3000:]}")]
    problem = compare_ddp_ranks(results, nproc, backend)
    if problem:
        return [CheckRecord("ddp", "failed", figures, error=problem)]
    return [CheckRecord("ddp", "ok", figures)]


# -- training ----------------------------------------------------------------------------------------


def _configs() -> list[tuple[str, bool]]:
    return [(p, cl) for p in PRECISIONS for cl in (False, True)]


def _train_batch(recipe: Recipe, batch_size: int, device: torch.device) -> tuple[SyntheticPairs, dict]:
    """A synthetic dataset of one batch and that batch on ``device`` (with a 2-class ``ground_seg``
    for models that take dense labels, SMDT; the others ignore it)."""
    side = max(recipe.aerial_size) if recipe.polar else recipe.aerial_size[0]
    data = SyntheticPairs(batch_size, aerial_size=side, ground_size=recipe.ground_size, seed=0)
    seg = torch.randint(0, 2, (batch_size, *recipe.ground_size), generator=torch.Generator().manual_seed(0))
    batch = {
        "ground": data.ground.to(device),
        "aerial": data.aerial.to(device),
        "id": data.ids,
        "utm": data.utm.to(device),
        "ground_seg": seg.to(device),
    }
    return data, batch


def _train_row(
    prototype: torch.nn.Module,
    recipe: Recipe,
    data: SyntheticPairs,
    batch: dict,
    precision: str,
    channels_last: bool,
    plan: GpuCheckPlan,
    device: torch.device,
) -> dict[str, Any]:
    model = copy.deepcopy(prototype)
    b = batch["ground"].shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model,
            recipe.replace(batch_size=b),
            data,
            out_dir=tmp,
            device=device,
            amp=precision != "fp32",
            amp_dtype=_AMP_DTYPES[precision],
            channels_last=channels_last,
            sampler="unique",
            progress=False,
        )
        with _peak_memory(device) as mem:
            for _ in range(plan.warmup_steps):
                trainer.train_step(batch)
            _sync(device)
            start = time.perf_counter()
            for _ in range(plan.steps):
                trainer.train_step(batch)
            _sync(device)
            seconds = time.perf_counter() - start
        scaler = trainer.scaler is not None
        del trainer, model
    return {
        "precision": precision,
        "channels_last": channels_last,
        "grad_scaler": scaler,
        "status": "ok",
        "pairs_per_s": round(b * plan.steps / seconds, 2),
        "step_ms": round(1000 * seconds / plan.steps, 2),
        "peak_MiB": mem["peak_MiB"],
        "peak_total_MiB": mem["peak_total_MiB"],
    }


def _train_out_of_time(plan: GpuCheckPlan, budget: _Budget, stage_start: float) -> str | None:
    """Why training must stop now (the budget, the tests' reserve or the training share is spent), or None."""
    if budget.left() <= 0:
        return "budget: spent"
    if budget.left() < plan.tests_reserve_s and "tests" in plan.groups:
        return f"budget: {budget.left():.0f} s left, {plan.tests_reserve_s:.0f} s kept for the tests"
    if time.perf_counter() - stage_start > plan.train_budget_s:
        return f"budget: the training share ({plan.train_budget_s:.0f} s) is spent"
    return None


def check_train(plan: GpuCheckPlan, device: torch.device, budget: _Budget) -> list[CheckRecord]:
    """Each recipe's training step under every precision x channels_last configuration."""
    names = list(plan.recipes) or list_recipes(plan.variant)
    configs = _configs()
    stage_start = time.perf_counter()
    records = []
    for i, name in enumerate(names):
        start = time.perf_counter()
        # dry run: one configuration per recipe, the costly ones (fp16 is emulated on the CPU) on
        # the cheapest recipes (the GANs, last in name order, get fp32)
        mine = [configs[-1 - i % len(configs)]] if plan.rotate_configs else configs
        reason = _train_out_of_time(plan, budget, stage_start)
        if reason:
            records.append(CheckRecord(f"train:{name}", "skipped", {"variant": plan.variant}, reason=reason))
            continue
        try:
            recipe = get_recipe(name, plan.variant)
            b = plan.batch_size or recipe.batch_size
            torch.manual_seed(0)
            prototype = build(recipe)
            data, batch = _train_batch(recipe, b, device)
        except Exception as err:  # a recipe that cannot be built fails alone
            records.append(
                CheckRecord(f"train:{name}", "failed", {"variant": plan.variant}, error=_error_text(err))
            )
            continue
        figures: dict[str, Any] = {
            "variant": plan.variant,
            "batch": b,
            "ground": list(recipe.ground_size),
            "aerial": list(recipe.aerial_size),
            "polar": recipe.polar,
            "params_M": round(sum(p.numel() for p in prototype.parameters()) / 1e6, 2),
            "warmup_steps": plan.warmup_steps,
            "steps": plan.steps,
            "rows": [],
        }
        errors = []
        for precision, channels_last in mine:
            reason = _train_out_of_time(plan, budget, stage_start)
            if reason:
                row = {
                    "precision": precision,
                    "channels_last": channels_last,
                    "status": "skipped",
                    "reason": reason,
                }
            else:
                try:
                    row = _train_row(prototype, recipe, data, batch, precision, channels_last, plan, device)
                except torch.cuda.OutOfMemoryError as err:  # a finding about the recipe, not a fault
                    row = {
                        "precision": precision,
                        "channels_last": channels_last,
                        "status": "oom",
                        "error": _error_text(err)[:300],
                    }
                    figures.setdefault("note", "out of device memory at this batch:")
                    figures["note"] += f" {precision}/channels_last {'on' if channels_last else 'off'};"
                except Exception as err:  # one configuration fails alone (an unsupported op, a bug)
                    row = {
                        "precision": precision,
                        "channels_last": channels_last,
                        "status": "failed",
                        "error": _error_text(err),
                    }
                    errors.append(f"{precision}/channels_last={channels_last}: {row['error']}")
                _free(device)
            figures["rows"].append(row)
        del prototype, batch, data
        _free(device)
        seconds = time.perf_counter() - start
        statuses = {r["status"] for r in figures["rows"]}
        if errors:
            records.append(
                CheckRecord(f"train:{name}", "failed", figures, seconds=seconds, error="; ".join(errors))
            )
        elif statuses == {"skipped"}:
            records.append(
                CheckRecord(
                    f"train:{name}", "skipped", figures, seconds=seconds, reason=figures["rows"][0]["reason"]
                )
            )
        else:
            records.append(CheckRecord(f"train:{name}", "ok", figures, seconds=seconds))
    return records


# -- test suites ------------------------------------------------------------------------------------


def _upstream_one(plan: GpuCheckPlan, name: str, script: Path, checkout: Path, timeout: float) -> CheckRecord:
    """One side-by-side script on the plan's device (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), "--upstream", str(checkout), "--device", plan.device]
        cmd += ["--upstream-python", plan.upstream_python or sys.executable, "--json", str(result)]
        cmd += ["--warmup", str(max(1, plan.warmup_steps)), "--steps", str(plan.steps)]
        figures: dict[str, Any] = {"command": " ".join(cmd[1:]).replace(str(result), "RESULT.json")}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=_child_env(2), check=False
            )
        except subprocess.TimeoutExpired:
            return CheckRecord(
                f"upstream:{name}", "failed", figures, error=f"did not finish within {timeout:.0f} s"
            )
        if (
            proc.returncode == 2
        ):  # the script's own answer: checkout missing or unusable, or device unsupported
            why = " ".join(line.strip() for line in proc.stderr.strip().splitlines()[:2])
            return CheckRecord(f"upstream:{name}", "skipped", figures, reason=why or "exit status 2")
        if proc.returncode != 0 or not result.is_file():
            figures["tail"] = (proc.stdout + proc.stderr).splitlines()[-25:]
            return CheckRecord(
                f"upstream:{name}", "failed", figures, error=f"{script.name} exited {proc.returncode}"
            )
        data = json.loads(result.read_text())
    figures.update(
        {
            "batch": data["batch"],
            "ratio_mean_step": data["ratio_mean_step"],
            "ratio_cpu_s": data["ratio_cpu_s"],
            "rows": {
                side: {
                    k: row.get(k)
                    for k in ("what", "step_mean_s", "pairs_per_s", "peak_device_mib", "peak_rss_mib")
                }
                for side, row in data["rows"].items()
            },
        }
    )
    return CheckRecord(f"upstream:{name}", "ok", figures)


def check_upstream(plan: GpuCheckPlan, budget: _Budget) -> list[CheckRecord]:
    """:data:`UPSTREAM_BENCHMARKS` against the checkouts in ``plan.upstream_root``, in order, each
    within ``plan.upstream_timeout_s`` and what the budget leaves after the tests' reserve."""
    if plan.upstream_root is None:
        return [
            CheckRecord(
                "upstream",
                "skipped",
                reason="no --upstream-root (a folder of the authors' checkouts: "
                + ", ".join(folder for _, folder in UPSTREAM_BENCHMARKS.values())
                + ")",
            )
        ]
    if plan.repo is None:
        return [CheckRecord("upstream", "skipped", reason="no checkout with packages/ found (pass --repo)")]
    records = []
    for name, (script, folder) in UPSTREAM_BENCHMARKS.items():
        left = budget.left() - plan.tests_reserve_s
        if not plan.dry_run and left < 30.0:
            records.append(CheckRecord(f"upstream:{name}", "skipped", reason=f"budget: {left:.0f} s left"))
            continue
        start = time.perf_counter()
        timeout = min(plan.upstream_timeout_s, left) if not plan.dry_run else plan.upstream_timeout_s
        record = _upstream_one(
            plan, name, Path(plan.repo) / script, Path(plan.upstream_root) / folder, timeout
        )
        record.seconds = time.perf_counter() - start
        records.append(record)
    return records


def _junit_summary(path: Path) -> dict[str, Any]:
    """Counts and failing test ids from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    failing: list[str] = []
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failing.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "passed": passed, "failing": failing[:30]}


def check_tests(plan: GpuCheckPlan, device: torch.device, budget: _Budget) -> list[CheckRecord]:
    """Every package's fast tests with ``plan.test_args``, the packages in parallel subprocesses."""
    records: dict[str, CheckRecord] = {}
    if plan.repo is None:
        return [
            CheckRecord(f"tests:{p}", "skipped", reason="no checkout with packages/ found (pass --repo)")
            for p in PACKAGES
        ]
    repo = Path(plan.repo)
    for p in PACKAGES:
        if p not in plan.test_packages:
            records[p] = CheckRecord(
                f"tests:{p}",
                "skipped",
                reason="dry run: one geo-transforms test file stands in for the suites (CI runs them on "
                "the CPU)",
            )
    running = [p for p in PACKAGES if p in plan.test_packages]
    timeout = min(plan.tests_timeout_s, max(10.0, budget.left() - 5.0))
    threads = max(1, (os.cpu_count() or 2) // max(1, len(running)))
    xdist = plan.test_workers > 0 and importlib.util.find_spec("xdist") is not None
    with tempfile.TemporaryDirectory() as tmp:
        procs: dict[str, tuple[subprocess.Popen[str], Path, Path, list[str], float]] = {}
        for p in running:
            junit = Path(tmp) / f"{p}.xml"
            log = Path(tmp) / f"{p}.log"
            paths = [str(Path("packages") / p / sub) for sub in plan.test_paths.get(p, ("tests",))]
            cmd = [sys.executable, "-m", "pytest", *paths, *plan.test_args, "-q", "-p", "no:cacheprovider"]
            cmd += [f"--junitxml={junit}"]
            if xdist:
                cmd += ["-n", str(plan.test_workers)]
            with open(log, "w") as fh:
                proc = subprocess.Popen(
                    cmd,
                    cwd=repo,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=_child_env(max(1, threads // max(1, plan.test_workers))),
                    start_new_session=True,
                )
            procs[p] = (proc, junit, log, cmd, time.perf_counter())
        deadline = time.perf_counter() + timeout
        for p, (proc, junit, log, cmd, started) in procs.items():
            timed_out = False
            try:
                proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            seconds = time.perf_counter() - started
            tail = log.read_text(errors="replace").splitlines()[-25:]
            figures: dict[str, Any] = {
                "command": " ".join(cmd[1:]).replace(str(junit), "JUNIT.xml"),
                "returncode": proc.returncode,
                "xdist_workers": plan.test_workers if xdist else 0,
            }
            if junit.is_file():
                figures.update(_junit_summary(junit))
            if timed_out:
                records[p] = CheckRecord(
                    f"tests:{p}",
                    "failed",
                    {**figures, "tail": tail},
                    seconds=seconds,
                    error=f"did not finish within {timeout:.0f} s (budget)",
                )
            elif proc.returncode != 0:
                failing = figures.get("failing") or []
                records[p] = CheckRecord(
                    f"tests:{p}",
                    "failed",
                    {**figures, "tail": tail},
                    seconds=seconds,
                    error=f"pytest exited {proc.returncode}; failing: {failing[:10]}",
                )
            else:
                records[p] = CheckRecord(f"tests:{p}", "ok", figures, seconds=seconds)
    return [records[p] for p in PACKAGES]


# ------------------------------------------------------------------------------------------------
# report


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _status_text(record: CheckRecord) -> str:
    if record.status == "skipped" and (record.reason or "").startswith("budget"):
        return "skipped (budget)"
    return record.status


def _upstream_markdown(records: list[CheckRecord]) -> list[str]:
    """The section of the ``upstream:`` checks that ran (none: no lines)."""
    lines: list[str] = []
    upstream = [r for r in records if r.name.startswith("upstream:") and r.status == "ok"]
    if upstream:
        lines += [
            "",
            "## Against the authors' code (one training step, float32, each side in its own process)",
            "",
            "| method | batch | ours s/step | theirs s/step | ours / theirs | ours peak device MiB "
            "| theirs peak device MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in upstream:
            f = r.figures
            ours, theirs = f["rows"]["ours"], f["rows"]["theirs"]
            lines.append(
                f"| {r.name.split(':', 1)[1]} | {f['batch']} | {_fmt(ours['step_mean_s'])} "
                f"| {_fmt(theirs['step_mean_s'])} | {_fmt(f['ratio_mean_step'])}x "
                f"| {_fmt(ours['peak_device_mib'])} | {_fmt(theirs['peak_device_mib'])} |"
            )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown report: a summary table, then one section per kind of check."""
    records = [CheckRecord(**r) for r in report["checks"]]
    env = next((r.figures for r in records if r.name == "environment"), {})
    lines = [
        f"# GPU check{' (dry run)' if report['dry_run'] else ''}",
        "",
        f"{report['created']}; device {report['device']}"
        + (f" ({env.get('gpu')}, {env.get('gpu_memory_GiB')} GiB)" if env.get("gpu") else "")
        + f"; torch {env.get('torch', '?')}; commit {env.get('commit') or '?'}; "
        f"{report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget. "
        f"**{'all checks passed' if report['ok'] else 'some checks FAILED'}**"
        + (
            " (run interrupted: checks still to come are missing)" if not report.get("complete", True) else ""
        ),
        "",
        "| check | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for r in records:
        note = r.error or r.reason or r.figures.get("note") or ""
        note = note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.name} | {_status_text(r)} | {r.seconds:.1f} | {note[:200]} |")
    mappings = [r for r in records if r.name == "mappings" and r.figures.get("rows")]
    for r in mappings:
        lines += [
            "",
            "## Mappings: device vs CPU",
            "",
            f"CPU threads {r.figures['cpu_threads']}; tolerance {r.figures['tolerance']} (float32 in [0, 1]).",
            "",
            "| mapping | shapes | CPU ms | device ms | speed-up | peak MiB | max abs diff |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r.figures["rows"]:
            lines.append(
                f"| {row['mapping']} | {row['shapes']} | {_fmt(row['cpu_ms'])} | {_fmt(row['device_ms'])} "
                f"| {_fmt(row['speedup'])} | {_fmt(row['peak_MiB'])} | {row['max_abs_diff']:.2e} |"
            )
    recall = [r for r in records if r.name.startswith("recall:") and r.figures.get("n_query")]
    if recall:
        lines += ["", "## Recall", ""]
        for r in recall:
            f = r.figures
            lines.append(f"**{r.name}** ({f['n_query']:,} x {f['n_reference']:,} x {f['dim']:,})")
            lines.append("")
            if "rows" in f:
                lines += [
                    "| memory budget MiB | seconds | peak MiB | R@1 | R@5 | R@10 | R@1% |",
                    "|---|---|---|---|---|---|---|",
                ]
                for row in f["rows"]:
                    lines.append(
                        f"| {row['memory_budget_MiB']} | {_fmt(row['seconds'])} | {_fmt(row['peak_MiB'])} "
                        f"| {_fmt(row['R@1'])} | {_fmt(row['R@5'])} | {_fmt(row['R@10'])} | {_fmt(row['R@1%'])} |"
                    )
            else:
                lines.append(
                    f"{f['path']}, faiss {f['faiss']}: {_fmt(f['seconds'])} s, peak "
                    f"{_fmt(f.get('peak_MiB'))} MiB; R@1 {_fmt(f['R@1'])}, R@5 {_fmt(f['R@5'])}, R@10 "
                    f"{_fmt(f['R@10'])}, R@1% {_fmt(f['R@1%'])}; largest difference to the torch path "
                    f"{_fmt(f['max_diff_points'])} points." + (f" {f['note']}." if f.get("note") else "")
                )
            lines.append("")
    train = [r for r in records if r.name.startswith("train:") and r.figures.get("rows")]
    if train:
        lines += [
            "",
            "## Training step (one fixed batch on the device, data loading excluded)",
            "",
            "| recipe | batch | ground | aerial | params M | precision | channels_last | pairs/s | ms/step "
            "| peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in train:
            f = r.figures
            for row in f["rows"]:
                prec = row["precision"] + (" + GradScaler" if row.get("grad_scaler") else "")
                if row["status"] == "ok":
                    figs = f"{_fmt(row['pairs_per_s'])} | {_fmt(row['step_ms'])} | {_fmt(row['peak_MiB'])}"
                else:
                    figs = f"{row['status']} | | "
                lines.append(
                    f"| {r.name.split(':', 1)[1]} ({f['variant']}) | {f['batch']} | {f['ground'][0]}x{f['ground'][1]} "
                    f"| {f['aerial'][0]}x{f['aerial'][1]} | {_fmt(f['params_M'])} | {prec} "
                    f"| {_fmt(row['channels_last'])} | {figs} |"
                )
    lines += _upstream_markdown(records)
    tests = [r for r in records if r.name.startswith("tests:") and "returncode" in r.figures]
    if tests:
        lines += [
            "",
            "## Test suites",
            "",
            "| package | passed | failed | errors | skipped | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for r in tests:
            f = r.figures
            lines.append(
                f"| {r.name.split(':', 1)[1]} | {_fmt(f.get('passed'))} | {_fmt(f.get('failures'))} "
                f"| {_fmt(f.get('errors'))} | {_fmt(f.get('skipped'))} | {r.seconds:.0f} |"
            )
        lines += ["", f"Command (from the checkout): `{tests[0].figures['command']}`."]
    failed = [r for r in records if r.status == "failed"]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [f"### {r.name}", "", "```", (r.error or "")[:3000], "```"]
            if r.figures.get("tail"):
                lines += ["", "```", *r.figures["tail"], "```"]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / REPORT_JSON, (json.dumps(report, indent=1, default=str) + "\n").encode())
    atomic_write_bytes(out / REPORT_MD, render_markdown(report).encode())


def _report(
    plan: GpuCheckPlan, records: list[CheckRecord], budget: _Budget, created: str, *, complete: bool
) -> dict[str, Any]:
    report = {
        "schema": _SCHEMA,
        "created": created,
        "dry_run": plan.dry_run,
        "device": plan.device,
        "budget_s": plan.budget_s,
        "elapsed_s": round(budget.elapsed(), 2),
        "complete": complete,
        "ok": not any(r.status == "failed" for r in records),
        "counts": {s: sum(r.status == s for r in records) for s in _STATUSES},
        "plan": plan.to_dict(),
        "checks": [r.as_dict() for r in records],
    }
    return json.loads(json.dumps(report, default=str))  # plain JSON types: what the file holds


#: A group's rough minimum cost in seconds on the device (a group is skipped when less is left).
_MIN_SECONDS = {
    "environment": 0.0,
    "mappings": 10.0,
    "recall": 15.0,
    "ddp": 30.0,
    "train": 20.0,
    "upstream": 0.0,
    "tests": 20.0,
}


def run_gpu_check(plan: GpuCheckPlan, out: str | os.PathLike[str]) -> dict[str, Any]:
    """Run the plan's checks and write the JSON and Markdown reports in ``out`` (after every check).

    Returns:
        The report (``report["ok"]`` is False when a check failed).
    """
    out = Path(out)
    budget = _Budget(plan.budget_s)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device = torch.device(plan.device)
    records: list[CheckRecord] = []
    runners: dict[str, Callable[[], list[CheckRecord]]] = {
        "environment": lambda: check_environment(plan, device),
        "mappings": lambda: check_mappings(plan, device),
        "recall": lambda: check_recall(plan, device),
        "ddp": lambda: check_ddp(plan, device, budget),
        "train": lambda: check_train(plan, device, budget),
        "upstream": lambda: check_upstream(plan, budget),
        "tests": lambda: check_tests(plan, device, budget),
    }
    usable = True
    for group in plan.groups:
        start = time.perf_counter()
        if not usable and group != "tests":
            new = [CheckRecord(group, "skipped", reason=f"no usable {plan.device} device (see environment)")]
        elif not plan.dry_run and budget.left() < _MIN_SECONDS[group]:
            new = [CheckRecord(group, "skipped", reason=f"budget: {budget.left():.0f} s left")]
        else:
            try:
                new = runners[group]()
            except Exception as err:  # the check failed; the others still run
                logger.exception("check %s failed", group)
                new = [CheckRecord(group, "failed", error=_error_text(err))]
        seconds = time.perf_counter() - start
        if len(new) == 1 and not new[0].seconds:
            new[0].seconds = seconds
        if group == "environment" and new[0].status == "failed":
            usable = False
        for r in new:
            logger.info(
                "[%6.1f s] %-24s %s %s", budget.elapsed(), r.name, _status_text(r), r.error or r.reason or ""
            )
        records += new
        _write_report(out, _report(plan, records, budget, created, complete=False))
    report = _report(plan, records, budget, created, complete=True)
    _write_report(out, report)
    return report


# ------------------------------------------------------------------------------------------------
# command line


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m geo_bench.gpu_check",
        description="GPU acceptance check: fast tests on the GPU, training throughput (fp32 / bf16 / fp16, "
        "channels_last), mappings vs CPU, recall at CVACT_test scale, DDP; JSON + Markdown report.",
    )
    parser.add_argument("--out", type=Path, help="report folder (gpu_check.json, gpu_check.md)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (what CI runs)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="time budget of the whole run (s)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--only", default="", help=f"comma-separated groups of {','.join(CHECK_GROUPS)}")
    parser.add_argument("--skip", default="", help="comma-separated groups to leave out")
    parser.add_argument("--recipes", default="", help="comma-separated recipe names (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per configuration")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, default=None, help="default: each recipe's")
    parser.add_argument("--recall-n", type=int, default=None, help="queries = references (default 92,802)")
    parser.add_argument("--tests-timeout-s", type=float, default=None, help="limit of the test suites (s)")
    parser.add_argument("--test-workers", type=int, default=0, help="pytest-xdist workers per package")
    parser.add_argument(
        "--ddp-gloo", action="store_true", help="with < 2 GPUs, check DDP on 2 CPU gloo ranks"
    )
    parser.add_argument("--repo", type=Path, default=None, help="the checkout (default: found upwards)")
    parser.add_argument(
        "--upstream-root",
        type=Path,
        default=None,
        help="folder of the authors' checkouts for the side-by-side steps (default: that group is skipped)",
    )
    parser.add_argument(
        "--upstream-python", default=None, help="interpreter of the authors' side (default: this one)"
    )
    parser.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)  # internal: torchrun rank
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 all ok, 1 a check failed, 2 usage)."""
    args = _parser().parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, device=args.device or "cuda")
        return 0
    if args.out is None:
        print("gpu_check: --out DIR is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        plan = make_plan(
            dry_run=args.dry_run,
            device=args.device,
            budget_s=args.budget_s,
            only=_names(args.only),
            skip=_names(args.skip),
            recipes=_names(args.recipes),
            steps=args.steps,
            warmup_steps=args.warmup_steps,
            batch_size=args.batch_size,
            recall_n=args.recall_n,
            tests_timeout_s=args.tests_timeout_s,
            test_workers=args.test_workers,
            ddp_gloo=args.ddp_gloo,
            repo=args.repo,
            upstream_root=args.upstream_root,
            upstream_python=args.upstream_python,
        )
    except ValueError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    report = run_gpu_check(plan, args.out)
    counts = report["counts"]
    print(
        f"gpu_check: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in "
        f"{report['elapsed_s']:.0f} s; report: {args.out / REPORT_MD}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
