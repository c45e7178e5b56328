"""Train and evaluate recipes into the results store: the engine of ``geo-bench leaderboard``,
``train`` and ``evaluate``.

Convention:
    - **Data.** ``dataset="synthetic"`` renders the embedded world (:class:`~.data.WorldConfig`)
      once and caches it under ``<out>/cache``; CVUSA / CVACT / VIGOR are read from ``root``.
      Training uses the train split minus a fixed, seeded held-out slice
      (``geo_retrieval.training.split_holdout``, ``selection_split="train-holdout"``) on which the
      trainer selects ``best/``; the test split (CVACT: ``val`` = CVACT_val by default) is only
      ever used for the final numbers.
    - **Runs.** Each recipe trains in ``<out>/runs/<recipe>-<variant>-<config>-s<seed>/`` where
      ``config`` is :func:`config_hash` of the recipe, the data and the overrides. An existing
      ``last/`` there is resumed (bitwise, by the trainer). A recipe is skipped when the store holds
      a readable record of every protocol its evaluation produces
      (:func:`~.evaluation.expected_protocols`) for the same config, seed and git commit; a partial
      set (a record lost to a crash) is evaluated again.
    - **Records.** One :class:`~geo_bench.records.ResultRecord` per evaluation protocol, with
      ``protocol`` = the metric flags plus ``config``, ``backbone``, ``synthesis``,
      ``orientation_aware``, ``selection_split``, ``epochs``, ``checkpoint`` (sha256 prefix of the
      weights) and, on the synthetic world, ``world`` (its configuration); ``metrics`` also hold the
      recall curve and throughputs (pairs/s); provenance from
      :func:`~geo_bench.records.collect_provenance`. ``metrics`` also show the compute:
      ``train_steps`` (optimiser steps), ``pairs_seen`` (steps x batch size) and
      ``train_pairs_per_s``; ``provenance.train_seconds`` the training time.
    - **Time budget.** ``RunConfig.time_budget_s`` trains every recipe for the same wall-clock
      budget (:class:`TimeBudget`, a trainer callback raising ``StopTraining``; the trainer saves
      ``last/``, ``best/`` stays the best held-out epoch). It enters the config hash and the
      protocol (``time_budget_s``).
    - **Progress.** Training and evaluation send small event dicts (:mod:`.progress`) to a
      :class:`~.progress.ProgressView`: in process for ``jobs == 1``, through a queue of the spawn
      context from the worker processes otherwise; the parent drains it while it waits.
    - **Retrieval examples.** After evaluation, the top-:data:`EXAMPLE_K` references (indices and
      scores) of the first :data:`EXAMPLE_QUERIES` test queries (orientation known) are written to
      ``<run folder>/examples.json`` (:func:`retrieval_examples`); ``run_leaderboard(examples=...)``
      collects them for :func:`~.plots.plot_retrieval_examples`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..records import PROTOCOL_KEYS, ResultRecord, collect_provenance, git_commit
from ..store import ResultStore
from .data import DATASET_NAMES, WorldConfig, load_world, open_real_dataset
from .evaluation import (
    EvalResult,
    _embed,
    evaluate_baseline,
    evaluate_model,
    expected_protocols,
    matches_protocol,
    parse_protocols,
)
from .progress import ProgressBoard, ProgressView, progress_interval

__all__ = [
    "TINY",
    "EVAL_SPLITS",
    "EXAMPLE_K",
    "EXAMPLE_QUERIES",
    "CheckpointMismatchError",
    "ProgressCallback",
    "RunConfig",
    "TimeBudget",
    "config_hash",
    "get_recipe_or_raise",
    "load_model_weights",
    "open_datasets",
    "read_run_json",
    "resolve_run",
    "retrieval_examples",
    "run_leaderboard",
    "train_recipe",
    "uses_synthesis",
    "weights_digest",
]

log = logging.getLogger(__name__)

#: The CI smoke-test world: a tiny district, tiny images, one epoch of a few steps per recipe.
TINY_WORLD = WorldConfig(n_train=72, n_test=20, ground_size=(32, 128), aerial_size=64, district_m=500.0, holdout=0.12)


#: The splits a run may be evaluated on, per dataset (the first is the default). The synthetic
#: world renders one test region; CVUSA's test split is its val-19zl list ("val" is an alias);
#: CVACT_val (default) or CVACT_test; VIGOR's test split (same- or cross-area by ``vigor_area``).
EVAL_SPLITS: dict[str, tuple[str, ...]] = {
    "synthetic": ("test",),
    "cvusa": ("test", "val"),
    "cvact": ("val", "test"),
    "vigor": ("test",),
}


class CheckpointMismatchError(ValueError):
    """The weights of a checkpoint do not fit the recipe's model (names which keys / shapes)."""


@dataclass(frozen=True)
class RunConfig:
    """What a leaderboard / train run depends on.

    Attributes:
        dataset: ``"synthetic"``, ``"cvusa"``, ``"cvact"`` or ``"vigor"``.
        root: dataset folder (real datasets).
        variant: recipe variant (``"small"`` on the synthetic world, ``"full"`` on real data).
        seed: training seed.
        epochs, batch_size, max_steps: overrides of the recipe's values (None: the recipe's).
        world: the synthetic world.
        holdout: held-out fraction of train for selection (real datasets; the world has its own).
        eval_split: the split evaluated (None: ``test``, CVACT ``val``).
        device: ``"cpu"``, ``"cuda"``... (None: CUDA when available).
        vigor_area: ``"same"`` or ``"cross"``.
        cache: real datasets: a ``geo-bench prepare`` cache root, read instead of the images
            (prepared with the loaders' default sizes); synthetic world: where the rendered world
            is cached (default: the caller's, e.g. ``<out>/cache``). Not part of
            :meth:`data_dict`: it changes where pixels come from, not what they are.
        protocols: optional evaluation protocols (``"fov"``, ``"corruption"``; see
            :data:`~.evaluation.EXTRA_PROTOCOLS`), evaluated besides the dataset's own. Not part of
            the config hash: they change what is measured, not what is trained.
        time_budget_s: train every recipe for at most this many wall-clock seconds (None: no
            budget); part of the config hash and of the records' protocol.
    """

    dataset: str = "synthetic"
    root: str | None = None
    variant: str = "small"
    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    world: WorldConfig = field(default_factory=WorldConfig)
    holdout: float = 0.02
    eval_split: str | None = None
    device: str | None = None
    vigor_area: str = "same"
    cache: str | None = None
    protocols: tuple[str, ...] = ()
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; available: {list(DATASET_NAMES)}")
        if self.dataset != "synthetic" and not self.root:
            raise ValueError(f"dataset {self.dataset!r} needs --root DIR (the folder of its official layout)")
        object.__setattr__(self, "protocols", parse_protocols(self.protocols))
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps must be a positive integer, got {self.max_steps}")
        if self.time_budget_s is not None:
            budget = float(self.time_budget_s)
            if not (budget > 0 and math.isfinite(budget)):
                raise ValueError(f"--time-budget must be a positive number of seconds, got {self.time_budget_s}")
            object.__setattr__(self, "time_budget_s", budget)
        splits = EVAL_SPLITS[self.dataset]
        if self.eval_split is not None and self.eval_split not in splits:
            raise ValueError(f"--split {self.eval_split!r}: {self.dataset} is evaluated on "
                             f"{' or '.join(map(repr, splits))}")

    @property
    def test_split(self) -> str:
        if self.eval_split:
            return self.eval_split
        return EVAL_SPLITS[self.dataset][0]

    def data_dict(self) -> dict[str, Any]:
        """The data part of the configuration (enters :func:`config_hash`)."""
        if self.dataset == "synthetic":
            return {"dataset": "synthetic", "world": self.world.to_dict()}
        d: dict[str, Any] = {"dataset": self.dataset, "root": str(self.root), "holdout": self.holdout,
                             "eval_split": self.test_split}
        if self.dataset == "vigor":
            d["area"] = self.vigor_area
        return d


#: the ``--tiny`` configuration (CI smoke test).
TINY = RunConfig(world=TINY_WORLD, epochs=1, batch_size=16)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_hash(recipe_dict: dict[str, Any], cfg: RunConfig) -> str:
    """Short hash of everything a result depends on besides seed and code: the recipe (after
    overrides), the data, the step limit and the time budget (only when set, so that runs without
    one keep their hash)."""
    parts: dict[str, Any] = {"recipe": recipe_dict, "data": cfg.data_dict(), "max_steps": cfg.max_steps}
    if cfg.time_budget_s is not None:
        parts["time_budget_s"] = cfg.time_budget_s
    return _hash(parts)


def get_recipe_or_raise(name: str, variant: str, *, epochs: int | None = None, batch_size: int | None = None) -> Any:
    """The registered recipe with overrides; unknown names raise ``ValueError`` listing the known ones."""
    from geo_retrieval.recipes import get_recipe, list_recipes

    known = list_recipes()
    if name not in known:
        hint = "" if any(n in ("toker21", "smdt") for n in known) else (
            " (toker21 and smdt come with geo-synthesis: pip install 'geo-bench[synthesis]')"
        )
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(known)}{hint}")
    for option, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value}")
    recipe = get_recipe(name, variant)
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if batch_size is not None:
        changes["batch_size"] = int(batch_size)
    return recipe.replace(**changes) if changes else recipe


def uses_synthesis(recipe: Any) -> bool:
    """Whether a recipe trains with cross-view synthesis (an explicit ``synthesis`` attribute, else a
    model builder that lives in geo-synthesis)."""
    flag = getattr(recipe, "synthesis", None)
    if flag is not None:
        return bool(flag)
    from geo_retrieval import recipes as registry

    builder = getattr(registry, "_BUILDERS", {}).get(recipe.name)
    return bool(builder is not None and getattr(builder, "__module__", "").startswith("geo_synthesis"))


# ------------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True)
class RunFolder:
    """What a checkpoint path names: the weights file, its run folder, the recipe and the run's
    ``run.json`` (empty when absent). See :func:`resolve_run`."""

    weights: Path
    run_dir: Path
    recipe: str
    variant: str
    info: dict[str, Any]


def read_run_json(path: str | Path) -> dict[str, Any]:
    """A JSON object file of a run folder (``run.json``, ``recipe.json``); a corrupt one is named
    with what was expected."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it was written by `geo-bench train`: restore it, "
                         "or pass --recipe NAME --variant small|full and --seed N instead") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _locate_weights(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_file():
        return p, p.parent
    if not p.exists():
        raise FileNotFoundError(f"--checkpoint {p} does not exist")
    for sub in ("best", "last", "."):
        for name in ("model.safetensors", "model.pt", "model.pth"):
            f = p / sub / name
            if f.is_file():
                run_dir = p if sub != "." else (p.parent if p.name in ("best", "last") else p)
                return f, run_dir
    raise FileNotFoundError(f"no weights in {p} (looked for best/, last/ or model.safetensors)")


def resolve_run(checkpoint: str | Path, *, recipe: str | None = None, variant: str | None = None) -> RunFolder:
    """Find the weights of ``checkpoint`` (a run folder written by ``geo-bench train``, whose
    ``best/`` weights are used, else ``last/``; a ``best/`` or ``last/`` folder; or a weights file)
    and tell its recipe: ``recipe`` / ``variant`` when given, else the run's ``recipe.json``, else
    the safetensors metadata. Nothing is loaded into a model yet.

    Raises:
        FileNotFoundError: nothing there, or no weights in the folder.
        ValueError: the recipe cannot be told, or a corrupt ``recipe.json`` / ``run.json``.
    """
    from geo_retrieval.checkpoint import read_metadata

    weights, run_dir = _locate_weights(checkpoint)
    if not (recipe and variant):
        meta: dict[str, Any] = {}
        if (run_dir / "recipe.json").is_file():
            d = read_run_json(run_dir / "recipe.json")
            meta = {"recipe": d.get("name"), "variant": d.get("variant")}
        elif weights.suffix == ".safetensors":
            meta = dict(read_metadata(weights))
        recipe, variant = recipe or meta.get("recipe"), variant or meta.get("variant")
        if not recipe or not variant:
            raise ValueError(f"cannot tell the recipe of {weights}; pass --recipe NAME --variant small|full")
    info = read_run_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    return RunFolder(weights, run_dir, str(recipe), str(variant), info)


def load_model_weights(model: nn.Module, path: str | Path) -> str:
    """Load weights into ``model`` strictly; returns the file's sha256 prefix.

    Raises:
        CheckpointMismatchError: the keys or shapes differ (lists which).
        geo_retrieval.checkpoint.UnsafeCheckpointError: a pickle needing unsafe globals (never unpickled).
        FileNotFoundError: no such file.
    """
    from geo_retrieval.checkpoint import load_weights, strip_prefixes

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    state = strip_prefixes(load_weights(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:

        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit the recipe's model ({'; '.join(parts)}). "
            "Was it trained with another recipe or variant? Pass the matching --recipe / --variant."
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointMismatchError(
            f"checkpoint {path} holds NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}): the "
            "training diverged or the file is damaged; evaluate an earlier checkpoint (best/ or last/)"
        )
    model.load_state_dict(state, strict=True)
    return weights_digest(state)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A 16-hex-digit sha256 of a state dict's contents: names, dtypes, shapes and values in key
    order. Unlike a hash of the file, it does not depend on metadata (step, time, key order in the
    header), so identical weights always give the same ``protocol.checkpoint``."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# data


def open_datasets(cfg: RunConfig, cache_dir: str | Path | None, *, progress: bool = False,
                  need_train: bool = True) -> tuple[Any, Any]:
    """(train, test) datasets of a run; train is None when ``need_train`` is False (real data).
    ``cache_dir`` is the synthetic world's cache when ``cfg.cache`` does not name one."""
    if cfg.dataset == "synthetic":
        return load_world(cfg.world, cfg.cache or cache_dir, progress=progress, train=need_train)
    kwargs: dict[str, Any] = {"area": cfg.vigor_area} if cfg.dataset == "vigor" else {}
    if cfg.cache is not None:
        kwargs["cache"] = cfg.cache
    train = open_real_dataset(cfg.dataset, cfg.root, "train", **kwargs) if need_train else None  # type: ignore[arg-type]
    test = open_real_dataset(cfg.dataset, cfg.root, cfg.test_split, **kwargs)  # type: ignore[arg-type]
    return train, test


def _holdout(cfg: RunConfig) -> float:
    return cfg.world.holdout if cfg.dataset == "synthetic" else cfg.holdout


# ------------------------------------------------------------------------------------------------
# training


@dataclass
class TrainedRun:
    """A trained (or resumed) recipe: the model with its selected weights loaded."""

    recipe: Any
    model: nn.Module
    run_dir: Path
    config: str
    train_seconds: float
    global_step: int
    checkpoint: str
    selection_split: str | None
    best_metric: float | None
    stopped_by_budget: bool = False


#: A progress event sink (see :mod:`.progress`).
EventSink = Callable[[dict[str, Any]], None]


def _last_val_r1(history: Sequence[dict[str, Any]]) -> float | None:
    for record in reversed(history):
        value = record.get("val/R@1")
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _loss(logs: dict[str, Any]) -> float | None:
    """The training loss of a step's logs: ``loss``, else the first ``*loss*`` entry, else None."""
    if isinstance(logs.get("loss"), (int, float)):
        return float(logs["loss"])
    for key, value in logs.items():
        if "loss" in key and isinstance(value, (int, float)):
            return float(value)
    return None


class ProgressCallback:
    """Trainer callback (``f(trainer, logs)`` after every step) that sends ``step`` events (see
    :mod:`.progress`): epoch, epochs, step, total steps, the step's loss and the last held-out R@1.

    Args:
        recipe: the recipe name in the events.
        sink: where events go (a queue's ``put``, a view's ``update``).
        min_interval_s: at most one event per this many seconds, besides the first step of every
            epoch and the last step.
        clock: monotonic seconds.
    """

    def __init__(self, recipe: str, sink: EventSink, *, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recipe = recipe
        self.sink = sink
        self.min_interval_s = float(min_interval_s)
        self.clock = clock
        self._last: float | None = None
        self._epoch: int | None = None

    def __call__(self, trainer: Any, logs: dict[str, Any]) -> None:
        now = self.clock()
        total = int(trainer.epochs) * int(trainer.steps_per_epoch)
        if getattr(trainer, "max_steps", None):
            total = min(total, int(trainer.max_steps))
        step = int(trainer.global_step)
        due = (self._last is None or now - self._last >= self.min_interval_s or trainer.epoch != self._epoch
               or step >= total)
        if not due:
            return
        self._last, self._epoch = now, trainer.epoch
        self.sink({"kind": "step", "recipe": self.recipe, "epoch": int(trainer.epoch), "epochs": int(trainer.epochs),
                   "step": step, "total_steps": total, "loss": _loss(logs),
                   "val_r1": _last_val_r1(trainer.history)})


class TimeBudget:
    """Trainer callback that stops training (``geo_retrieval.training.StopTraining``; the trainer
    saves ``last/``) once ``budget_s`` wall-clock seconds of training are spent, counting the
    seconds of a resumed run (:meth:`begin`).

    Args:
        budget_s: seconds (> 0).
        clock: monotonic seconds.
    """

    def __init__(self, budget_s: float, *, clock: Callable[[], float] = time.perf_counter) -> None:
        if not budget_s > 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        self.budget_s = float(budget_s)
        self.clock = clock
        self.start: float | None = None
        self.stopped = False

    def begin(self, already_s: float = 0.0) -> None:
        """Start the clock, ``already_s`` seconds of (resumed) training spent."""
        self.start = self.clock() - float(already_s)

    def __call__(self, trainer: Any, logs: dict[str, Any]) -> None:
        from geo_retrieval.training import StopTraining

        if self.start is None:
            self.begin(float(getattr(trainer, "train_seconds", 0.0)))
        if self.clock() - self.start >= self.budget_s:  # type: ignore[operator]
            self.stopped = True
            raise StopTraining(f"time budget of {self.budget_s:g} s spent")


def train_recipe(recipe: Any, train_full: Any, cfg: RunConfig, run_dir: str | Path, *, resume: bool = True,
                 progress: bool = False, events: EventSink | None = None) -> TrainedRun:
    """Train ``recipe`` on ``train_full`` minus the held-out slice, selecting on that slice, and
    return the model with its ``best/`` weights (``last/`` if nothing was selected).

    ``events`` receives progress events (:class:`ProgressCallback`); ``cfg.time_budget_s`` stops
    training when spent (:class:`TimeBudget`)."""
    from geo_retrieval.recipes import build
    from geo_retrieval.training import Trainer, recover_checkpoint, split_holdout

    run_dir = Path(run_dir)
    recover_checkpoint(run_dir / "last")  # a crash while last/ was being replaced leaves it aside
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only, not on what ran before
        torch.manual_seed(cfg.seed)
        model = build(recipe)
    train, val = split_holdout(train_full, fraction=_holdout(cfg), seed=cfg.seed)
    has_last = (run_dir / "last" / "trainer_state.pt").exists()
    callbacks: list[Callable[[Any, dict], None]] = []
    if events is not None:
        callbacks.append(ProgressCallback(recipe.name, events, min_interval_s=min(1.0, progress_interval() / 4)))
    budget = TimeBudget(cfg.time_budget_s) if cfg.time_budget_s is not None else None
    if budget is not None:
        callbacks.append(budget)
    trainer = Trainer(model, recipe, train, val, out_dir=run_dir, seed=cfg.seed, device=cfg.device,
                      max_steps=cfg.max_steps, progress=progress, resume=bool(resume and has_last),
                      callbacks=callbacks)
    if has_last and resume:
        log.info("%s: resuming from %s (epoch %d)", recipe.name, run_dir / "last", trainer.epoch)
    if budget is not None:
        budget.begin(trainer.train_seconds)
    result = trainer.fit()
    weights = run_dir / "best" / "model.safetensors"
    if not weights.exists():
        weights = run_dir / "last" / "model.safetensors"
    checkpoint = load_model_weights(trainer.raw_model, weights)
    return TrainedRun(recipe, trainer.raw_model, run_dir, config_hash(recipe.to_dict(), cfg), result.train_seconds,
                      result.global_step, checkpoint, result.selection_split, result.best_metric,
                      stopped_by_budget=bool(budget is not None and budget.stopped))


# ------------------------------------------------------------------------------------------------
# records


def _protocol(res: EvalResult, base: dict[str, Any]) -> dict[str, Any]:
    proto: dict[str, Any] = {k: None for k in PROTOCOL_KEYS}
    proto.update(base)
    proto.update(res.protocol)
    proto.pop("backend", None)
    return proto


def _records(results: list[EvalResult], *, recipe: str, variant: str, dataset: str, base: dict[str, Any],
             seed: int, train_seconds: float | None, extra_metrics: dict[str, float], source: str | None,
             commit: str | None = None) -> list[ResultRecord]:
    out = []
    for res in results:
        metrics = dict(res.metrics)
        metrics.update(extra_metrics)
        if res.eval_seconds > 0:
            metrics["eval_pairs_per_s"] = (res.n_query + res.n_reference) / 2 / res.eval_seconds
        prov = collect_provenance(seed=seed, train_seconds=train_seconds, eval_seconds=res.eval_seconds, source=source)
        if commit is not None:  # the code a long run imported at its start, not the checkout at its end
            prov = replace(prov, commit=commit)
        out.append(ResultRecord(recipe=recipe, variant=variant, dataset=dataset, split=res.split,
                                protocol=_protocol(res, base), n_query=res.n_query, n_reference=res.n_reference,
                                metrics=metrics, provenance=prov))
    return out


def _recipe_protocol(recipe: Any, cfg: RunConfig, config: str) -> dict[str, Any]:
    polar: Any = False
    if recipe.polar:
        polar = {"preset": recipe.polar_preset, "center": recipe.polar_center, "size": list(recipe.aerial_size)}
    base = {
        "polar": polar,
        "config": config,
        "backbone": recipe.backbone if recipe.aerial_backbone is None else f"{recipe.backbone} / {recipe.aerial_backbone}",
        "synthesis": uses_synthesis(recipe),
        "orientation_aware": bool(recipe.orientation_aware),
        "train_fov": float(recipe.fov),
        "epochs": int(recipe.epochs),
        "selection_split": "train-holdout",
    }
    if cfg.time_budget_s is not None:
        base["time_budget_s"] = cfg.time_budget_s
    base.update(_data_protocol(cfg))
    return base


def _data_protocol(cfg: RunConfig) -> dict[str, Any]:
    if cfg.dataset == "synthetic":
        return {"world": cfg.world.to_dict()}
    return {k: v for k, v in cfg.data_dict().items() if k not in ("dataset", "root")}


def evaluate_trained(run: TrainedRun, test: Any, cfg: RunConfig, *, progress: bool = False,
                     source: str | None = None, commit: str | None = None,
                     queries_dir: str | Path | None = None, events: EventSink | None = None) -> list[ResultRecord]:
    """Evaluate a trained run on the test split (the dataset's protocols and ``cfg.protocols``; FoV
    query files in ``queries_dir``, default ``<run folder>/queries``) and build its records;
    ``events`` receives an ``evaluating`` event naming the protocols."""
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if events is not None:
        names = "orientation known/unknown" if cfg.dataset == "synthetic" else "the dataset's protocols"
        events({"kind": "evaluating", "recipe": run.recipe.name,
                "detail": f"on {cfg.test_split} ({', '.join([names, *cfg.protocols])})"})
    results = evaluate_model(run.model, run.recipe, cfg.dataset, test, split=cfg.test_split, device=device,
                             progress=progress, source=source or str(run.run_dir), protocols=cfg.protocols,
                             queries_dir=queries_dir or Path(run.run_dir) / "queries")
    base = _recipe_protocol(run.recipe, cfg, run.config) | {"checkpoint": run.checkpoint}
    if cfg.time_budget_s is not None:
        base["stopped_by_time_budget"] = run.stopped_by_budget
    extra: dict[str, float] = {}
    if run.global_step > 0:
        extra["train_steps"] = float(run.global_step)
        extra["pairs_seen"] = float(run.global_step * run.recipe.batch_size)
    if run.train_seconds > 0 and run.global_step > 0:
        extra["train_pairs_per_s"] = run.global_step * run.recipe.batch_size / run.train_seconds
    if run.best_metric is not None:
        extra["selection_R@1"] = float(run.best_metric)
    return _records(results, recipe=run.recipe.name, variant=run.recipe.variant, dataset=cfg.dataset, base=base,
                    seed=cfg.seed, train_seconds=run.train_seconds, extra_metrics=extra,
                    source=source or str(run.run_dir), commit=commit)


# ------------------------------------------------------------------------------------------------
# retrieval examples

#: Test queries shown per recipe in the examples figure: the first ones of the test split.
EXAMPLE_QUERIES = 4
#: References retrieved per example query.
EXAMPLE_K = 5
EXAMPLES_FILE = "examples.json"


@torch.no_grad()
def retrieval_examples(model: nn.Module, recipe: Any, test: Any, *, n_queries: int = EXAMPLE_QUERIES,
                       k: int = EXAMPLE_K, device: torch.device | str = "cpu",
                       batch_size: int = 64) -> dict[str, Any]:
    """The top-``k`` references of the first ``n_queries`` test queries, orientation known.

    Convention: query ``i`` is ``test[i]``, its true reference is ``test[i]["aerial"]`` (index
    ``i`` among the references, as in the evaluation); every reference is embedded once with the
    recipe's evaluation preprocessing, the queries alone; scores are the model's similarity
    (cosine of L2-normalised descriptors unless the model defines its own).

    Returns:
        ``{"query_index": [i], "query_id": [id], "true_index": [i], "top_index": [[k indices]],
        "top_score": [[k scores]], "k", "n_reference", "rule"}`` (plain lists, JSON-ready); each top
        list best first.
    """
    from torch.utils.data import Subset

    from geo_retrieval.training import BatchTransform

    device = torch.device(device)
    model = model.to(device).eval()
    transform = BatchTransform.from_recipe(recipe)
    prepare = lambda b: transform(b, None, train=False)  # noqa: E731
    a = _embed(model.encode_aerial, test, "aerial", prepare, batch_size, device, False, "embed aerial")
    idx = list(range(min(int(n_queries), len(test))))
    g = _embed(model.encode_ground, Subset(test, idx), "ground", prepare, batch_size, device, False, "embed ground")
    similarity = getattr(model, "similarity", None)
    if getattr(model, "similarity_kind", "cosine") != "cosine" and similarity is not None:
        sim = similarity(g, a).float()
    else:
        sim = g @ a.T
    scores, top = sim.topk(min(int(k), a.shape[0]), dim=1)
    ids = getattr(test, "ids", None)
    query_ids = [str(ids[i]) for i in idx] if ids is not None else [str(test[i]["id"]) for i in idx]
    return {"query_index": idx, "query_id": query_ids, "true_index": list(idx), "top_index": top.cpu().tolist(),
            "top_score": [[round(float(v), 4) for v in row] for row in scores.cpu().tolist()], "k": int(k),
            "n_reference": int(a.shape[0]), "rule": f"the first {len(idx)} test queries, orientation known"}


def _write_examples(run: TrainedRun, test: Any, cfg: RunConfig) -> None:
    """``<run folder>/examples.json`` (:func:`retrieval_examples` plus the checkpoint); never fails
    the run (a failure is logged)."""
    if cfg.dataset == "vigor":  # VIGOR's references are a gallery of their own, not test[i]["aerial"]
        return
    try:
        from geo_retrieval.checkpoint import atomic_write_bytes

        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        ex = retrieval_examples(run.model, run.recipe, test, device=device)
        ex.update({"recipe": run.recipe.name, "variant": run.recipe.variant, "checkpoint": run.checkpoint,
                   "split": cfg.test_split})
        atomic_write_bytes(Path(run.run_dir) / EXAMPLES_FILE, (json.dumps(ex, indent=1) + "\n").encode())
    except Exception:  # a figure's input must not cost a finished run
        log.warning("%s: retrieval examples not written", run.recipe.name, exc_info=True)


def _read_examples(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / EXAMPLES_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "top_index" in data else None


# ------------------------------------------------------------------------------------------------
# the leaderboard


def _done(store: ResultStore, recipe: str, variant: str, cfg: RunConfig, config: str,
          commit: str) -> tuple[list[ResultRecord], list[dict[str, Any]]]:
    """What the store already holds of a run (recipe, variant, data, split, ``config``, seed, commit).

    Returns:
        ``(found, missing)``: the last readable measured record of every protocol of
        :func:`~.evaluation.expected_protocols` that has one (in that order), and the flags of the
        protocols that have none. The run is done only when ``missing`` is empty; a partial set is run
        again (training resumes from ``last/``) and its records appended.
    """
    mine = [r for r in store.records(recipe=recipe, variant=variant, dataset=cfg.dataset, split=cfg.test_split)
            if r.provenance.kind == "measured" and r.protocol.get("config") == config
            and r.provenance.seed == cfg.seed and r.provenance.commit == commit]
    found: list[ResultRecord] = []
    missing: list[dict[str, Any]] = []
    for flags in expected_protocols(cfg.dataset, cfg.test_split, cfg.protocols):
        hits = [r for r in mine if matches_protocol(r.protocol, flags)]
        if hits:
            found.append(hits[-1])
        else:
            missing.append(flags)
    return found, missing


def run_leaderboard(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    recipes: Sequence[str] | None = None,
    baseline: bool = True,
    store: ResultStore | None = None,
    progress: bool = False,
    on_event: Callable[[str], None] | None = None,
    failures: list[tuple[str, str]] | None = None,
    jobs: int = 1,
    live_console: Any = None,
    examples: dict[str, dict[str, Any]] | None = None,
) -> list[ResultRecord]:
    """Train and evaluate ``recipes`` (default: every registered recipe with ``cfg.variant``) and the
    no-learning baseline; append new records to ``store`` (default ``<out_dir>/results.jsonl``) and
    return this configuration's records (fresh or found in the store).

    Args:
        cfg: the run configuration.
        out_dir: folder for the world cache, the runs and (by default) the store.
        recipes: recipe names (validated; unknown names raise ``ValueError`` listing the known ones).
        baseline: include ``colour-profile (no learning)``.
        store: the results store.
        progress: progress bars.
        on_event: called with one-line status messages (the CLI prints them).
        failures: if given, a recipe that raises while training or evaluating is recorded here as
            ``(name, error)`` and the others still run; else the error propagates.
        jobs: recipes trained at once, each in its own process (spawned, with this process's torch
            thread count) that appends to the same store; the most expensive recipes start first.
        live_console: a ``rich`` console on a terminal: show the recipes' progress as a Live table
            there; None: one plain progress line per running recipe through ``on_event`` every
            :func:`~.progress.progress_interval` seconds (30; ``GEO_BENCH_PROGRESS_S``).
        examples: if given, filled with ``{recipe label: retrieval examples}`` (see
            :func:`retrieval_examples`) of every trained recipe of this configuration whose run
            folder has them (skipped recipes included).
    """
    from geo_retrieval.recipes import list_recipes

    from ..baselines import BASELINE_NAME, ColourProfile

    out_dir = Path(out_dir)
    store = store or ResultStore(out_dir / "results.jsonl")
    say = on_event or (lambda msg: log.info("%s", msg))
    names = list(recipes) if recipes is not None else list_recipes(cfg.variant)
    chosen = [get_recipe_or_raise(n, cfg.variant, epochs=cfg.epochs, batch_size=cfg.batch_size) for n in names]
    commit = git_commit()
    t0 = time.perf_counter()
    train_full, test = open_datasets(cfg, out_dir / "cache", progress=progress)
    say(f"data ready: {len(train_full)} train / {len(test)} test pairs ({time.perf_counter() - t0:.0f} s)")
    records: list[ResultRecord] = []
    if baseline:
        bl = ColourProfile()
        config = _hash({"baseline": bl.config(), "data": cfg.data_dict()})
        found, missing = _done(store, BASELINE_NAME, "none", cfg, config, commit)
        if not missing:
            say(f"{BASELINE_NAME}: already in the store for this config/seed/commit; skipped")
            records += found
        else:
            if found:
                say(f"{BASELINE_NAME}: only {len(found)} of {len(found) + len(missing)} records in the store "
                    f"(missing {missing}); evaluating again")
            results = evaluate_baseline(bl, cfg.dataset, test, split=cfg.test_split, progress=progress,
                                        protocols=cfg.protocols, queries_dir=out_dir / "queries")
            base = {"polar": {"preset": None, "center": "safa", "size": list(bl.polar_size)}, "config": config,
                    "backbone": "none", "synthesis": False, "orientation_aware": True, "train_fov": None,
                    "epochs": 0, "selection_split": None, "baseline": bl.config()} | _data_protocol(cfg)
            new = _records(results, recipe=BASELINE_NAME, variant="none", dataset=cfg.dataset, base=base,
                           seed=cfg.seed, train_seconds=0.0, extra_metrics={}, source="geo_bench.baselines.ColourProfile", commit=commit)
            for r in new:
                store.append(r)
            records += new
            say(f"{BASELINE_NAME}: R@1 {new[0].metrics['R@1']:.1f}")
    pending = []
    for recipe in chosen:
        config = config_hash(recipe.to_dict(), cfg)
        found, missing = _done(store, recipe.name, recipe.variant, cfg, config, commit)
        if not missing:
            say(f"{recipe.name} ({recipe.variant}): already in the store for this config/seed/commit; skipped")
            records += found
        else:
            if found:
                say(f"{recipe.name} ({recipe.variant}): only {len(found)} of {len(found) + len(missing)} records in "
                    f"the store (missing {missing}); running again (training resumes from last/)")
            pending.append((recipe, out_dir / "runs" / f"{recipe.name}-{recipe.variant}-{config}-s{cfg.seed}"))
        if examples is not None:
            run_dir = out_dir / "runs" / f"{recipe.name}-{recipe.variant}-{config}-s{cfg.seed}"
            examples[f"{recipe.name} ({recipe.variant})"] = {"run_dir": str(run_dir)}
    parallel = jobs > 1 and len(pending) > 1
    board = ProgressBoard(jobs=min(jobs, len(pending)) if parallel else 1)
    n_fit = len(train_full) - round(len(train_full) * _holdout(cfg))
    for recipe, _ in pending:
        board.update(_queued_event(recipe, cfg, n_fit))
    view = ProgressView(board, live=live_console is not None, emit=say, console=live_console)
    with view:
        if parallel:
            records += _run_parallel(pending, cfg, out_dir, store, commit, progress, say, failures, jobs,
                                     n_train=len(train_full), view=view)
        else:
            records += _run_serial(pending, train_full, test, cfg, out_dir, store, commit,
                                   progress and not view.live, say, failures, view)
    if examples is not None:
        for label in list(examples):
            found = _read_examples(Path(examples[label]["run_dir"]))
            if found is None:
                del examples[label]
            else:
                examples[label] = found
    return records


def _queued_event(recipe: Any, cfg: RunConfig, n_fit: int) -> dict[str, Any]:
    """The ``queued`` event of a recipe: its planned steps and relative cost per step."""
    from geo_retrieval import recipes as registry

    total = int(recipe.epochs) * max(1, n_fit // max(1, int(recipe.batch_size)))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    weight = 3.0 if recipe.name in getattr(registry, "_BUILDERS", {}) else 1.0
    return {"kind": "queued", "recipe": recipe.name, "variant": recipe.variant, "epochs": int(recipe.epochs),
            "total_steps": total, "weight": weight, "budget_s": cfg.time_budget_s}


def _run_serial(pending: list[tuple[Any, Path]], train_full: Any, test: Any, cfg: RunConfig, out_dir: Path,
                store: ResultStore, commit: str, progress: bool, say: Callable[[str], None],
                failures: list[tuple[str, str]] | None, view: ProgressView) -> list[ResultRecord]:
    """The recipes one after the other in this process, progress events straight to ``view``."""
    records: list[ResultRecord] = []
    for recipe, run_dir in pending:
        say(f"{recipe.name} ({recipe.variant}): training in {run_dir}")
        view.update({"kind": "start", "recipe": recipe.name})
        try:
            run = train_recipe(recipe, train_full, cfg, run_dir, resume=True, progress=progress, events=view.update)
            new = evaluate_trained(run, test, cfg, progress=progress, commit=commit, queries_dir=out_dir / "queries",
                                   events=view.update)
        except Exception as exc:
            view.update({"kind": "failed", "recipe": recipe.name, "error": f"{type(exc).__name__}: {exc}"})
            if failures is None:
                raise
            log.exception("%s failed", recipe.name)
            failures.append((recipe.name, f"{type(exc).__name__}: {exc}"))
            say(f"{recipe.name} ({recipe.variant}): FAILED ({type(exc).__name__}: {exc}); continuing")
            continue
        for r in new:
            store.append(r)
        _write_examples(run, test, cfg)
        records += new
        view.update({"kind": "done", "recipe": recipe.name, "r1": new[0].metrics.get("R@1")})
        say(_done_message(recipe, run.train_seconds, new))
    return records


def _done_message(recipe: Any, train_seconds: float, new: list[ResultRecord]) -> str:
    return (f"{recipe.name} ({recipe.variant}): R@1 {new[0].metrics['R@1']:.1f} "
            f"(train {train_seconds:.0f} s, eval {new[0].provenance.eval_seconds:.1f} s)")


def _cost(recipe: Any, n_train: int) -> float:
    """Rough relative training cost, to start the longest runs first: optimiser steps, times 3 for
    models with their own multi-network update (GANs)."""
    from geo_retrieval import recipes as registry

    steps = recipe.epochs * max(1, n_train // max(1, recipe.batch_size))
    custom = recipe.name in getattr(registry, "_BUILDERS", {})
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


def _terminate_workers(pool: Any) -> None:
    """Stop a process pool's workers now (``shutdown`` alone waits for running tasks)."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


#: In a worker process: the queue progress events go to (set by :func:`_init_worker`).
_EVENTS: Any = None


def _init_worker(events: Any) -> None:
    """Pool initializer: keep the progress queue; never block the worker's exit on unsent events."""
    global _EVENTS
    _EVENTS = events
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


def _worker(recipe: Any, cfg: RunConfig, out_dir: str, run_dir: str, store_path: str, commit: str,
            threads: int, parent_pid: int | None = None) -> tuple[list[dict[str, Any]], float]:
    """One recipe in a spawned process: train (resuming), evaluate, append to the store, write its
    retrieval examples; progress events go to the pool's queue (:func:`_init_worker`)."""
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    torch.set_num_threads(threads)
    _send({"kind": "start", "recipe": recipe.name})
    train_full, test = open_datasets(cfg, Path(out_dir) / "cache")
    run = train_recipe(recipe, train_full, cfg, run_dir, resume=True, events=_send)
    new = evaluate_trained(run, test, cfg, commit=commit, queries_dir=Path(out_dir) / "queries", events=_send)
    store = ResultStore(store_path)
    for r in new:
        store.append(r)
    _write_examples(run, test, cfg)
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


def _run_parallel(pending: list[tuple[Any, Path]], cfg: RunConfig, out_dir: Path, store: ResultStore, commit: str,
                  progress: bool, say: Callable[[str], None], failures: list[tuple[str, str]] | None, jobs: int,
                  *, n_train: int, view: ProgressView) -> list[ResultRecord]:
    """The recipes in ``jobs`` spawned processes; the parent waits in short slices, folding the
    workers' progress events (a queue of the spawn context, handed over by the pool initializer)
    into ``view``."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pending = sorted(pending, key=lambda p: -_cost(p[0], n_train))
    records: list[ResultRecord] = []
    threads = torch.get_num_threads()
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(events,))
    poll_s = min(0.5, view.interval_s / 4)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM (a scheduler or `kill`) must stop the workers too, like Ctrl-C; only the main thread
    # may install handlers.
    previous = signal.signal(signal.SIGTERM, on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        futures = {}
        for recipe, run_dir in pending:
            futures[pool.submit(_worker, recipe, cfg, str(out_dir), str(run_dir), str(store.path), commit,
                                threads, os.getpid())] = recipe
        say(f"training {', '.join(r.name for r, _ in pending)} in {jobs} processes ({threads} torch thread(s) each)")
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, timeout=poll_s, return_when=FIRST_COMPLETED)
            _drain(events, view)
            for fut in done:
                recipe = futures[fut]
                try:
                    dicts, train_seconds = fut.result()
                except Exception as exc:
                    view.update({"kind": "failed", "recipe": recipe.name, "error": f"{type(exc).__name__}: {exc}"})
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
        _terminate_workers(pool)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    pool.shutdown(wait=True)
    _drain(events, view)
    events.close()
    return records


def tiny_config(**changes: Any) -> RunConfig:
    """:data:`TINY` with changes (e.g. ``seed``)."""
    return replace(TINY, **changes)
