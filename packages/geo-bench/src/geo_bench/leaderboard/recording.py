"""The records of a run: evaluate a trained run into result records
(:class:`~geo_bench.records.ResultRecord`) and tell what the results store already holds of a run.

Convention:
    - **Records.** One :class:`~geo_bench.records.ResultRecord` per evaluation protocol, with
      ``protocol`` = the metric flags plus ``config``, ``backbone``, ``synthesis``,
      ``orientation_aware``, ``selection_split``, ``epochs``, ``checkpoint`` (digest of the
      weights) and, on the synthetic world, ``world`` (its configuration); ``metrics`` also hold the
      recall curve and throughputs (pairs/s); provenance from
      :func:`~geo_bench.records.collect_provenance`. ``metrics`` also show the compute:
      ``train_steps`` (optimiser steps), ``pairs_seen`` (steps x batch size) and
      ``train_pairs_per_s``; ``provenance.train_seconds`` the training time.
    - **Done.** A run is done when the store holds a readable measured record of every protocol
      its evaluation produces (:func:`~.evaluation.expected_protocols`) for the same config, seed
      and git commit (:func:`_done`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from geo_retrieval.recipes import Recipe

from ..records import PROTOCOL_KEYS, ResultRecord, collect_provenance
from ..store import ResultStore
from .config import RunConfig, selection_split, uses_synthesis
from .evaluation import EvalResult, area_splits, evaluate_model, expected_protocols, matches_protocol
from .training import EventSink, TrainedRun

__all__ = ["evaluate_trained"]


def _protocol(res: EvalResult, base: dict[str, Any]) -> dict[str, Any]:
    proto: dict[str, Any] = {k: None for k in PROTOCOL_KEYS}
    proto.update(base)
    proto.update(res.protocol)
    proto.pop("backend", None)
    return proto


def _records(
    results: list[EvalResult],
    *,
    recipe: str,
    variant: str,
    dataset: str,
    base: dict[str, Any],
    seed: int,
    train_seconds: float | None,
    extra_metrics: dict[str, float],
    source: str | None,
    commit: str | None = None,
) -> list[ResultRecord]:
    out = []
    for res in results:
        metrics = dict(res.metrics)
        metrics.update(extra_metrics)
        if res.eval_seconds > 0:
            metrics["eval_pairs_per_s"] = (res.n_query + res.n_reference) / 2 / res.eval_seconds
        prov = collect_provenance(
            seed=seed, train_seconds=train_seconds, eval_seconds=res.eval_seconds, source=source
        )
        if commit is not None:  # the code a long run imported at its start, not the checkout at its end
            prov = replace(prov, commit=commit)
        out.append(
            ResultRecord(
                recipe=recipe,
                variant=variant,
                dataset=dataset,
                split=res.split,
                protocol=_protocol(res, base),
                n_query=res.n_query,
                n_reference=res.n_reference,
                metrics=metrics,
                provenance=prov,
            )
        )
    return out


def _recipe_protocol(recipe: Recipe, cfg: RunConfig, config: str) -> dict[str, Any]:
    polar: Any = False
    if recipe.polar:
        polar = {
            "preset": recipe.polar_preset,
            "center": recipe.polar_center,
            "size": list(recipe.aerial_size),
        }
    base = {
        "polar": polar,
        "config": config,
        "backbone": recipe.backbone
        if recipe.aerial_backbone is None
        else f"{recipe.backbone} / {recipe.aerial_backbone}",
        "synthesis": uses_synthesis(recipe),
        "orientation_aware": bool(recipe.orientation_aware),
        "train_fov": float(recipe.fov),
        "epochs": int(recipe.epochs),
        "selection_split": selection_split(cfg),
        "geo_mask_m": recipe.geo_mask_m,
    }
    if cfg.time_budget_s is not None:
        base["time_budget_s"] = cfg.time_budget_s
    if cfg.val_from:
        base["val_from"] = cfg.val_from
    base.update(_data_protocol(cfg))
    return base


def _data_protocol(cfg: RunConfig) -> dict[str, Any]:
    if cfg.dataset == "synthetic":
        return {"world": cfg.world.to_dict(), "world_seed": cfg.world.seed}
    return {k: v for k, v in cfg.data_dict().items() if k not in ("dataset", "root")}


def evaluate_trained(
    run: TrainedRun,
    test: Any,
    cfg: RunConfig,
    *,
    progress: bool = False,
    source: str | None = None,
    commit: str | None = None,
    queries_dir: str | Path | None = None,
    events: EventSink | None = None,
    cross: Any = None,
    prepare: Callable[[dict], dict] | None = None,
    on_descriptors: Callable[[Tensor, Tensor], None] | None = None,
    protocol_extra: dict[str, Any] | None = None,
) -> list[ResultRecord]:
    """Evaluate a trained run on the test split (the dataset's protocols and ``cfg.protocols``; FoV
    query files in ``queries_dir``, default ``<run folder>/queries``) and build its records;
    ``events`` receives an ``evaluating`` event naming the protocols. On the synthetic world ``cross``
    (the world's cross-area split) is evaluated too (protocol ``area="cross"``; the test split's
    records carry ``area="same"``). ``prepare`` and ``on_descriptors`` go to
    :func:`~.evaluation.evaluate_model`; ``protocol_extra`` is added to every record's protocol (e.g.
    which preprocessing ran)."""
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if events is not None:
        names = "orientation known/unknown" if cfg.dataset == "synthetic" else "the dataset's protocols"
        events(
            {
                "kind": "evaluating",
                "recipe": run.recipe.name,
                "detail": f"on {cfg.test_split} ({', '.join([names, *cfg.protocols])})",
            }
        )
    results: list[EvalResult] = []
    for split_data, area in area_splits(cfg.dataset, test, cross):
        results += evaluate_model(
            run.model,
            run.recipe,
            cfg.dataset,
            split_data,
            split=cfg.test_split,
            device=device,
            progress=progress,
            source=source or str(run.run_dir),
            protocols=cfg.protocols,
            queries_dir=queries_dir or Path(run.run_dir) / "queries",
            area=area,
            prepare=prepare,
            on_descriptors=on_descriptors,
        )
    base = _recipe_protocol(run.recipe, cfg, run.config) | {"checkpoint": run.checkpoint}
    base |= dict(protocol_extra or {})
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
    return _records(
        results,
        recipe=run.recipe.name,
        variant=run.recipe.variant,
        dataset=cfg.dataset,
        base=base,
        seed=cfg.seed,
        train_seconds=run.train_seconds,
        extra_metrics=extra,
        source=source or str(run.run_dir),
        commit=commit,
    )


def _done(
    store: ResultStore, recipe: str, variant: str, cfg: RunConfig, config: str, commit: str
) -> tuple[list[ResultRecord], list[dict[str, Any]]]:
    """What the store already holds of a run (recipe, variant, data, split, ``config``, seed, commit).

    Returns:
        ``(found, missing)``: the last readable measured record of every protocol of
        :func:`~.evaluation.expected_protocols` that has one (in that order), and the flags of the
        protocols that have none. The run is done only when ``missing`` is empty; a partial set is run
        again (training resumes from ``last/``) and its records appended.
    """
    mine = [
        r
        for r in store.records(recipe=recipe, variant=variant, dataset=cfg.dataset, split=cfg.test_split)
        if r.provenance.kind == "measured"
        and r.protocol.get("config") == config
        and r.provenance.seed == cfg.seed
        and r.provenance.commit == commit
    ]
    found: list[ResultRecord] = []
    missing: list[dict[str, Any]] = []
    for flags in expected_protocols(cfg.dataset, cfg.test_split, cfg.protocols):
        hits = [r for r in mine if matches_protocol(r.protocol, flags)]
        if hits:
            found.append(hits[-1])
        else:
            missing.append(flags)
    return found, missing


def _done_message(recipe: Recipe, train_seconds: float, new: list[ResultRecord]) -> str:
    return (
        f"{recipe.name} ({recipe.variant}): R@1 {new[0].metrics['R@1']:.1f} "
        f"(train {train_seconds:.0f} s, eval {new[0].provenance.eval_seconds:.1f} s)"
    )
