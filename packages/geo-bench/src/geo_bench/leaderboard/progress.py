"""Live progress of training / evaluation runs: a pure state model and its renderers.

Convention:
    - **Events** are small dicts ``{"kind", "recipe", ...}`` sent by the code doing the work (a
      trainer callback, the evaluation path; from a worker process through a queue):

      ========== ==================================================================================
      kind       fields (all optional but ``kind`` and ``recipe``)
      ========== ==================================================================================
      queued     ``variant``, ``epochs``, ``total_steps``, ``weight`` (relative cost per step),
                 ``budget_s`` (a wall-clock training budget)
      start      the process picked the recipe up (loading data, building the model)
      step       ``epoch`` (0-based), ``epochs``, ``step`` (optimiser steps so far), ``total_steps``,
                 ``loss``, ``val_r1`` (the last held-out R@1 of the selection split)
      evaluating ``detail`` (what is being evaluated)
      done       ``r1`` (test R@1), ``train_seconds``
      failed     ``error``
      ========== ==================================================================================

    - :class:`ProgressBoard` folds events into one :class:`RecipeProgress` per recipe, stamping
      them with its ``clock`` (``time.monotonic`` by default; tests pass a fake clock). It is
      pure: no threads, no printing.
    - **ETA.** A training recipe's ETA is its remaining steps at its observed step rate (steps
      since its first ``step`` event / seconds since then), capped by what is left of its
      ``budget_s``; evaluating or starting recipes have none. The overall ETA places the queued
      recipes on ``jobs`` slots after the running ones (greedy, in queue order), each queued recipe
      costing ``total_steps * weight * s`` where ``s`` is the mean seconds per step per unit weight
      observed so far (None until a recipe has a rate).
    - **Renderers.** :meth:`ProgressBoard.plain_lines` returns one line per running recipe whose
      last line is at least ``every_s`` old, plus an overall line (for logs / CI, where nothing
      redraws); :meth:`ProgressBoard.rich_table` a ``rich`` table for a ``Live`` display.
      :class:`ProgressView` is the thin shell that shows a board: a ``rich.live.Live`` on a
      terminal, else plain lines from a ticker thread, so a run never goes silent for longer than
      ``interval_s`` (default 30 s; the environment variable ``GEO_BENCH_PROGRESS_S`` overrides it).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.live import Live
from rich.table import Table

__all__ = [
    "PROGRESS_ENV",
    "ProgressBoard",
    "ProgressView",
    "RecipeProgress",
    "format_duration",
    "progress_interval",
]

#: Environment variable: seconds between plain progress lines (default 30).
PROGRESS_ENV = "GEO_BENCH_PROGRESS_S"
_DEFAULT_INTERVAL_S = 30.0
_RUNNING = ("starting", "training", "evaluating")


def progress_interval(default: float = _DEFAULT_INTERVAL_S) -> float:
    """Seconds between plain progress lines: ``$GEO_BENCH_PROGRESS_S`` if set to a positive number,
    else ``default``.

    Raises:
        ValueError: the variable is set but not a positive number.
    """
    text = os.environ.get(PROGRESS_ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{PROGRESS_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{PROGRESS_ENV} must be a positive number of seconds, got {text!r}")
    return value


def format_duration(seconds: float | None) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``; ``"?"`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


@dataclass
class RecipeProgress:
    """The folded state of one recipe (see the module Convention).

    Attributes:
        name: recipe name; ``variant`` its variant.
        state: ``queued``, ``starting``, ``training``, ``evaluating``, ``done`` or ``failed``.
        epoch: the current epoch, 0-based; ``epochs`` the total.
        step / total_steps: optimiser steps so far / planned.
        loss: the last training loss; ``val_r1`` the last held-out (selection) R@1.
        weight: relative cost of one step (to estimate queued recipes).
        budget_s: wall-clock training budget (None: none).
        started / ended: clock times of ``start`` and of ``done`` / ``failed``.
        rate_t0 / rate_step0: clock time and step of the first ``step`` event (the step rate origin).
        last_line: clock time of the last plain line about this recipe.
        detail, error, r1: what is evaluated; the failure; the final test R@1.
    """

    name: str
    variant: str = ""
    state: str = "queued"
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    val_r1: float | None = None
    weight: float = 1.0
    budget_s: float | None = None
    started: float | None = None
    ended: float | None = None
    rate_t0: float | None = None
    rate_step0: int | None = None
    rate_t: float | None = None
    last_line: float | None = None
    detail: str | None = None
    error: str | None = None
    r1: float | None = None

    @property
    def running(self) -> bool:
        return self.state in _RUNNING

    def elapsed(self, now: float) -> float | None:
        """Seconds since ``start`` (to ``ended`` once finished)."""
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started

    def seconds_per_step(self) -> float | None:
        """Observed seconds per step (None before two step events at different steps)."""
        if self.rate_t0 is None or self.rate_t is None or self.step is None or self.rate_step0 is None:
            return None
        steps = self.step - self.rate_step0
        return (self.rate_t - self.rate_t0) / steps if steps > 0 and self.rate_t > self.rate_t0 else None

    def eta(self, now: float) -> float | None:
        """Seconds of training left (see the module Convention); 0 when done, None when unknown."""
        if self.state in ("done", "failed"):
            return 0.0
        if self.state != "training":
            return None
        eta = None
        per_step = self.seconds_per_step()
        if per_step is not None and self.total_steps is not None and self.step is not None:
            eta = max(0.0, (self.total_steps - self.step) * per_step - (now - (self.rate_t or now)))
        if self.budget_s is not None and self.started is not None:
            left = max(
                0.0, self.budget_s - (now - (self.rate_t0 if self.rate_t0 is not None else self.started))
            )
            eta = left if eta is None else min(eta, left)
        return eta


class ProgressBoard:
    """Per-recipe progress folded from events, with plain-line and rich renderers (see the module
    Convention).

    Args:
        jobs: recipes running at once (for the overall ETA).
        clock: monotonic seconds (a fake clock in tests).

    Example:
        >>> t = [0.0]
        >>> board = ProgressBoard(clock=lambda: t[0])
        >>> board.update({"kind": "queued", "recipe": "safa", "total_steps": 10, "epochs": 2})
        >>> board.update({"kind": "start", "recipe": "safa"})
        >>> board.update({"kind": "step", "recipe": "safa", "step": 1, "epoch": 0, "loss": 0.5})
        >>> t[0] = 4.0
        >>> board.update({"kind": "step", "recipe": "safa", "step": 5, "epoch": 0, "loss": 0.25})
        >>> board.recipes["safa"].eta(t[0])
        5.0
    """

    def __init__(self, *, jobs: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.jobs = max(1, int(jobs))
        self.clock = clock
        self.t0 = clock()
        self._last_overall = self.t0
        self.recipes: dict[str, RecipeProgress] = {}

    def _get(self, name: str) -> RecipeProgress:
        if name not in self.recipes:
            self.recipes[name] = RecipeProgress(name)
        return self.recipes[name]

    def update(self, event: dict[str, Any]) -> None:
        """Fold one event (unknown kinds and events without a recipe are ignored)."""
        name = event.get("recipe")
        kind = event.get("kind")
        if not name or not kind:
            return
        now = self.clock()
        r = self._get(str(name))
        if r.state in ("done", "failed") and kind in ("step", "evaluating"):
            return  # a late event from a worker's queue, after its result arrived
        for key in ("variant", "epochs", "total_steps", "weight", "budget_s"):
            if event.get(key) is not None:
                setattr(r, key, event[key])
        if kind == "queued":
            r.state = "queued"
        elif kind == "start":
            r.state, r.started, r.ended = "starting", now, None
        elif kind == "step":
            if r.started is None:
                r.started = now
            r.state = "training"
            if event.get("epoch") is not None:
                r.epoch = int(event["epoch"])
            if event.get("loss") is not None:
                r.loss = float(event["loss"])
            if event.get("val_r1") is not None:
                r.val_r1 = float(event["val_r1"])
            if event.get("step") is not None:
                r.step = int(event["step"])
                if r.rate_t0 is None:
                    r.rate_t0, r.rate_step0 = now, r.step
                r.rate_t = now
        elif kind == "evaluating":
            if r.started is None:
                r.started = now
            r.state, r.detail = "evaluating", event.get("detail")
        elif kind == "done":
            r.state, r.ended = "done", now
            if event.get("r1") is not None:
                r.r1 = float(event["r1"])
        elif kind == "failed":
            r.state, r.ended, r.error = "failed", now, str(event.get("error") or "failed")

    def update_all(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.update(event)

    # -- estimates ---------------------------------------------------------------------------------
    def _seconds_per_weighted_step(self) -> float | None:
        rates = [
            p / r.weight
            for r in self.recipes.values()
            if (p := r.seconds_per_step()) is not None and r.weight > 0
        ]
        return sum(rates) / len(rates) if rates else None

    def overall_eta(self, now: float | None = None) -> float | None:
        """Seconds until every recipe is done (see the module Convention); None when unknown."""
        now = self.clock() if now is None else now
        slots: list[float] = []
        queued = [r for r in self.recipes.values() if r.state == "queued"]
        for r in self.recipes.values():
            if r.state == "evaluating":
                slots.append(0.0)
            elif r.state == "starting" or (r.state == "training" and r.eta(now) is None):
                queued.insert(0, r)  # no rate of its own yet: estimated like a queued recipe
            elif r.state == "training":
                slots.append(r.eta(now))  # type: ignore[arg-type]
        if queued:
            per = self._seconds_per_weighted_step()
            if per is None or any(r.total_steps is None for r in queued):
                return None
            slots += [0.0] * max(0, self.jobs - len(slots))
            for r in queued:
                cost = float(r.total_steps) * r.weight * per  # type: ignore[arg-type]
                if r.budget_s is not None:
                    cost = min(cost, float(r.budget_s))
                i = min(range(len(slots)), key=slots.__getitem__)
                slots[i] += cost
        return max(slots, default=0.0)

    # -- renderers ---------------------------------------------------------------------------------
    def line(self, name: str, now: float | None = None) -> str:
        """One line about a recipe: state, epoch, step, loss, selection (val) R@1, elapsed and ETA."""
        now = self.clock() if now is None else now
        r = self.recipes[name]
        label = f"{r.name} ({r.variant})" if r.variant else r.name
        parts = [self._state_text(r)]
        if r.state in ("training", "evaluating", "done") and r.step is not None:
            parts.append(f"step {r.step}" + (f"/{r.total_steps}" if r.total_steps else ""))
        if r.loss is not None:
            parts.append(f"loss {r.loss:.4f}")
        if r.val_r1 is not None:
            parts.append(f"val R@1 {r.val_r1:.1f}")
        if r.r1 is not None:
            parts.append(f"test R@1 {r.r1:.1f}")
        if r.elapsed(now) is not None:
            parts.append(f"{format_duration(r.elapsed(now))} elapsed")
        if r.state == "training":
            parts.append(f"ETA {format_duration(r.eta(now))}")
        if r.state == "failed":
            parts.append(str(r.error))
        return f"{label}: " + ", ".join(parts)

    @staticmethod
    def _state_text(r: RecipeProgress) -> str:
        if r.state == "training":
            if r.epoch is not None and r.epochs:
                return f"training epoch {min(r.epoch + 1, int(r.epochs))}/{r.epochs}"
            return "training"
        if r.state == "evaluating":
            return "evaluating" + (f" {r.detail}" if r.detail else "")
        if r.state == "starting":
            return "starting (data, model)"
        return r.state

    def overall_line(self, now: float | None = None) -> str:
        """``overall: D/N done, R running, Q queued[, F failed]; T elapsed, ETA E``."""
        now = self.clock() if now is None else now
        counts = {s: sum(r.state == s for r in self.recipes.values()) for s in ("done", "queued", "failed")}
        running = sum(r.running for r in self.recipes.values())
        text = f"overall: {counts['done']}/{len(self.recipes)} done, {running} running, {counts['queued']} queued"
        if counts["failed"]:
            text += f", {counts['failed']} failed"
        return (
            text + f"; {format_duration(now - self.t0)} elapsed, ETA {format_duration(self.overall_eta(now))}"
        )

    def plain_lines(self, every_s: float, now: float | None = None) -> list[str]:
        """Lines for a log: when a running recipe has not been reported for ``every_s`` seconds, one
        line per running recipe (all marked reported) plus the overall line when the board holds
        more than one recipe; while recipes wait and none runs (worker processes starting), the
        overall line every ``every_s`` seconds; else no line."""
        now = self.clock() if now is None else now
        running = [r for r in self.recipes.values() if r.running]
        if not running:
            waiting = any(r.state == "queued" for r in self.recipes.values())
            if waiting and now - self._last_overall >= every_s:
                self._last_overall = now
                return [self.overall_line(now)]
            return []
        if not any(r.last_line is None or now - r.last_line >= every_s for r in running):
            return []
        self._last_overall = now
        lines = []
        for r in running:
            r.last_line = now
            lines.append(self.line(r.name, now))
        if len(self.recipes) > 1:
            lines.append(self.overall_line(now))
        return lines

    def rich_table(self, now: float | None = None) -> Any:
        """A ``rich.table.Table``: one row per recipe, the overall line as its caption."""
        now = self.clock() if now is None else now
        table = Table(title="progress", caption=self.overall_line(now), expand=False)
        for head in ("recipe", "state", "step", "loss", "val R@1", "elapsed", "ETA"):
            table.add_column(head, justify="left" if head in ("recipe", "state") else "right")
        for r in self.recipes.values():
            step = "" if r.step is None else f"{r.step}" + (f"/{r.total_steps}" if r.total_steps else "")
            state = self._state_text(r) + (f" ({r.error})" if r.state == "failed" else "")
            eta = format_duration(r.eta(now)) if r.state == "training" else ""
            table.add_row(
                r.name,
                state,
                step,
                "" if r.loss is None else f"{r.loss:.4f}",
                "" if r.val_r1 is None else f"{r.val_r1:.1f}",
                format_duration(r.elapsed(now)) if r.started is not None else "",
                eta,
            )
        return table


class ProgressView:
    """Shows a :class:`ProgressBoard` while a ``with`` block runs: a ``rich`` Live table when
    ``live`` (a terminal), else plain lines through ``emit`` from a ticker thread every
    ``interval_s`` seconds. :meth:`update` is thread-safe.

    Args:
        board: the board shown.
        live: draw a Live table (needs ``console``, a terminal).
        emit: where plain lines go (the CLI prints them with a timestamp).
        interval_s: seconds between plain lines about a running recipe (default
            :func:`progress_interval`).
        console: the ``rich`` console of the Live display.
    """

    def __init__(
        self,
        board: ProgressBoard,
        *,
        live: bool = False,
        emit: Callable[[str], None] | None = None,
        interval_s: float | None = None,
        console: Any = None,
    ) -> None:
        self.board = board
        self.live = bool(live and console is not None)
        self.emit = emit
        self.interval_s = float(interval_s) if interval_s is not None else progress_interval()
        self.console = console
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None

    def update(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.board.update(event)

    def tick(self) -> None:
        """Emit the plain lines that are due (no-op for a Live display)."""
        if self.live or self.emit is None:
            return
        with self._lock:
            lines = self.board.plain_lines(self.interval_s)
        for line in lines:
            self.emit(line)

    def _table(self) -> Any:
        with self._lock:
            return self.board.rich_table()

    def _run(self) -> None:
        step = min(1.0, self.interval_s / 4)
        while not self._stop.wait(step):
            self.tick()

    def __enter__(self) -> ProgressView:
        if self.live:
            self._live = Live(
                get_renderable=self._table, console=self.console, refresh_per_second=2, transient=True
            )
            self._live.__enter__()
        else:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
