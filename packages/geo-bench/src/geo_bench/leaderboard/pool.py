"""Train recipes in worker processes (``run_leaderboard(jobs=N)``, N > 1).

Convention:
    - **Workers.** Each recipe runs in its own spawned process (:func:`_worker`, with the parent's
      torch thread count): it opens the data, trains (resuming from ``last/``), evaluates, appends
      its records to the shared results store and writes its retrieval examples. The most expensive
      recipes start first (:func:`_cost`).
    - **Early start.** A :class:`WorkerPool` spawns its processes when it is created, so their
      start-up (a fresh interpreter importing torch, timm and the packages: about 11 s of one core
      each on the 2-core machine) runs while the parent renders the synthetic world on one core,
      instead of after it; :meth:`WorkerPool.render_ahead` has an idle worker render the world's
      cross-area city meanwhile (its districts are its own, so nothing is rendered twice).
    - **Progress.** Workers put progress events (:mod:`.progress`) on a queue of the spawn context,
      handed over by the pool initializer (:func:`_init_worker`); the parent waits in short slices
      and folds them into its :class:`~.progress.ProgressView` (:func:`_drain`).
    - **Stopping.** Ctrl-C or SIGTERM in the parent terminates the workers (:func:`_terminate_workers`);
      a worker whose parent is gone (even killed with SIGKILL) exits (:func:`_exit_with_parent`).
      Training resumes from ``last/`` on the next run, so nothing is lost.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from geo_retrieval import recipes as registry
from geo_retrieval.recipes import Recipe

from ..records import ResultRecord
from ..store import ResultStore
from .config import RunConfig, open_datasets
from .data import WorldConfig, load_world_split
from .examples import _write_examples
from .progress import ProgressView
from .recording import _done_message, evaluate_trained
from .training import train_recipe

__all__ = ["WorkerPool"]


def _cost(recipe: Recipe, n_train: int) -> float:
    """Rough relative training cost, to start the longest runs first: optimiser steps, times 3 for
    models with their own multi-network update (GANs)."""
    steps = recipe.epochs * max(1, n_train // max(1, recipe.batch_size))
    custom = registry.has_custom_builder(recipe.name)
    return steps * (3.0 if custom else 1.0)


def _exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """In a worker: a daemon thread that ends this process once ``parent_pid`` is gone (the parent
    was killed, even with SIGKILL, and can no longer collect the result). Training resumes from
    ``last/`` on the next run, so nothing is lost."""

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _terminate_workers(pool: Any, grace_s: float = 10.0) -> None:
    """Stop a process pool's workers now (``shutdown`` alone waits for running tasks): SIGTERM,
    ``grace_s`` seconds to exit, then SIGKILL; the pool is shut down without waiting on its
    internal threads (a worker killed while it was starting or writing a result must not leave
    the parent waiting for it)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=1.0)
    pool.shutdown(wait=False, cancel_futures=True)


#: In a worker process: the queue progress events go to (set by :func:`_init_worker`).
_EVENTS: Any = None


#: glibc ``mallopt`` parameters (``malloc.h``): M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel every step.

    A training step allocates and frees the same activation buffers each time; with glibc's
    defaults the larger ones are ``mmap``-ed and unmapped (or the heap trimmed) on every step, so
    each step faults its pages in again. Setting the mmap threshold to 32 MiB and the trim
    threshold to 1 GiB (``mallopt``) removes that: toker21 / l2ltr small steps ran 3-4 % faster
    and the process spent 0.9 instead of 2.4 s in the kernel over 24 steps (one thread, the
    2-core machine). The process keeps its peak heap instead of shrinking after each step.

    Returns:
        True when the settings were applied (glibc), False elsewhere (no-op).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    return all(mallopt(option, value) == 1 for option, value in settings)


def _init_worker(events: Any) -> None:
    """Pool initializer: keep the progress queue (never block the worker's exit on unsent events)
    and keep freed memory for the next step (:func:`keep_freed_memory`)."""
    global _EVENTS
    _EVENTS = events
    keep_freed_memory()
    if events is not None:
        events.cancel_join_thread()


def _send(event: dict[str, Any]) -> None:
    """Put a progress event on the worker's queue (best effort: progress never fails a run)."""
    if _EVENTS is None:
        return
    try:
        _EVENTS.put_nowait(event)
    except Exception:  # a full or closed queue: drop the event
        pass


def _worker(
    recipe: Recipe,
    cfg: RunConfig,
    out_dir: str,
    run_dir: str,
    store_path: str,
    commit: str,
    threads: int,
    parent_pid: int | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """One recipe in a spawned process: train (resuming), evaluate, append to the store, write its
    retrieval examples; progress events go to the pool's queue (:func:`_init_worker`)."""
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    torch.set_num_threads(threads)
    _send({"kind": "start", "recipe": recipe.name})
    data = open_datasets(cfg, Path(out_dir) / "cache")
    run = train_recipe(recipe, data.train, cfg, run_dir, resume=True, events=_send, val=data.val)
    new = evaluate_trained(
        run,
        data.test,
        cfg,
        commit=commit,
        queries_dir=Path(out_dir) / "queries",
        events=_send,
        cross=data.cross,
    )
    store = ResultStore(store_path)
    for r in new:
        store.append(r)
    _write_examples(run, data.test, cfg)
    return [r.to_dict() for r in new], run.train_seconds


def _drain(events: Any, view: ProgressView) -> None:
    """Fold every queued progress event into ``view`` without blocking."""
    while True:
        try:
            event = events.get_nowait()
        except (queue_module.Empty, OSError, EOFError, ValueError):
            return
        if isinstance(event, dict):
            view.update(event)


def _render_split(world: WorldConfig, split: str, cache_dir: str, threads: int) -> str:
    """In a worker: render one world split into the cache (the parent reads it from there), with
    the parent's torch thread count (two threads beside the parent's rendering oversubscribe)."""
    torch.set_num_threads(threads)
    load_world_split(world, split, cache_dir)
    return split


def _started() -> int:
    """A worker's first task: nothing but proof that the process is up (its imports are done)."""
    return os.getpid()


class WorkerPool:
    """``jobs`` spawned worker processes with a progress queue, started at once (see the module
    docstring, "Early start"); :func:`_run_parallel` runs the recipes in them.

    Use as a context manager, or call :meth:`close` (idle workers exit; a pool that never ran a
    recipe costs only the workers' start-up).
    """

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        ctx = mp.get_context("spawn")
        self.events: Any = ctx.Queue()
        self.executor = ProcessPoolExecutor(
            max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(self.events,)
        )
        # one task per worker: the executor spawns a process per submitted task while none is idle
        self._started = [self.executor.submit(_started) for _ in range(jobs)]

    def render_ahead(self, cfg: RunConfig, cache_dir: str | Path) -> dict[str, Future[str]]:
        """Have a worker render the synthetic world's cross-area split into ``cache_dir`` while the
        parent renders train, val and test (which share districts, so they stay in one process);
        ``{split: future}`` for :func:`~.config.open_datasets`' ``rendering``. Empty for real data."""
        if cfg.dataset != "synthetic":
            return {}
        cache = str(cfg.cache or cache_dir)
        threads = torch.get_num_threads()
        return {"cross": self.executor.submit(_render_split, cfg.world, "cross", cache, threads)}

    def terminate(self) -> None:
        """Stop the workers now (running recipes too; see :func:`_terminate_workers`)."""
        _terminate_workers(self.executor)
        self.events.close()

    def close(self) -> None:
        """Wait for running tasks, let the workers exit and close the queue."""
        self.executor.shutdown(wait=True)
        self.events.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.terminate()


def _run_parallel(
    pending: list[tuple[Any, Path]],
    cfg: RunConfig,
    out_dir: Path,
    store: ResultStore,
    commit: str,
    progress: bool,
    say: Callable[[str], None],
    failures: list[tuple[str, str]] | None,
    jobs: int,
    *,
    n_train: int,
    view: ProgressView,
    workers: WorkerPool | None = None,
) -> list[ResultRecord]:
    """The recipes in ``jobs`` spawned processes (``workers``, started early by the caller, or a
    new :class:`WorkerPool`); the parent waits in short slices, folding the workers' progress
    events (a queue of the spawn context, handed over by the pool initializer) into ``view``.
    The pool is closed on return, and its workers terminated on an error or an interrupt."""
    pending = sorted(pending, key=lambda p: -_cost(p[0], n_train))
    records: list[ResultRecord] = []
    threads = torch.get_num_threads()
    workers = workers or WorkerPool(jobs)
    jobs = workers.jobs
    pool, events = workers.executor, workers.events
    poll_s = min(0.5, view.interval_s / 4)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM (a scheduler or `kill`) must stop the workers too, like Ctrl-C; only the main thread
    # may install handlers.
    previous = (
        signal.signal(signal.SIGTERM, on_sigterm)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        futures = {}
        for recipe, run_dir in pending:
            futures[
                pool.submit(
                    _worker,
                    recipe,
                    cfg,
                    str(out_dir),
                    str(run_dir),
                    str(store.path),
                    commit,
                    threads,
                    os.getpid(),
                )
            ] = recipe
        say(
            f"training {', '.join(r.name for r, _ in pending)} in {jobs} processes ({threads} torch thread(s) each)"
        )
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, timeout=poll_s, return_when=FIRST_COMPLETED)
            _drain(events, view)
            for fut in done:
                recipe = futures[fut]
                try:
                    dicts, train_seconds = fut.result()
                except Exception as exc:
                    view.update(
                        {"kind": "failed", "recipe": recipe.name, "error": f"{type(exc).__name__}: {exc}"}
                    )
                    if failures is None:
                        raise
                    failures.append((recipe.name, f"{type(exc).__name__}: {exc}"))
                    say(f"{recipe.name} ({recipe.variant}): FAILED ({type(exc).__name__}: {exc}); continuing")
                    continue
                new = [ResultRecord.from_dict(d) for d in dicts]
                records += new
                view.update({"kind": "done", "recipe": recipe.name, "r1": new[0].metrics.get("R@1")})
                say(_done_message(recipe, train_seconds, new))
    except BaseException:
        say("stopping the training processes (a rerun resumes them from their last checkpoints)")
        workers.terminate()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    pool.shutdown(wait=True)
    _drain(events, view)
    workers.close()
    return records
