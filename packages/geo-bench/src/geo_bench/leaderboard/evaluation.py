"""Test-split evaluation of a trained model (or the no-learning baseline) under every protocol the
dataset supports.

Convention:
    - Descriptors come from the model's ``encode_ground`` / ``encode_aerial`` after the recipe's
      evaluation preprocessing (``BatchTransform(train=False)``: resize, polar transform of square
      aerials for polar recipes, normalisation; no augmentation, no random roll), in float32.
    - Ranks and recalls come from :mod:`geo_bench.metrics` (strict ``>`` ranks, floor top-1% K),
      with the model's own ``similarity`` (DSM's aligned matching) where it has one.
    - **synthetic**: two protocols per model: ``orientation_known=True`` (north-centred panoramas)
      and ``orientation_known=False`` (each panorama rolled right by DSM's fixed shifts,
      ``make_fov_queries(N, 360, noise 360, seed=2019, width=W)``, the same for every model). For
      orientation-aware models the second also gives the orientation accuracy of the true pair
      (64 bins, circular, +-2 bins) and the median error. Recall curves at :data:`CURVE_KS` are stored
      as extra ``R@K`` metrics for the plots.
    - **cvusa** / **cvact** ``val``: ``retrieval_recall``; **cvact** ``test``: ``cvact_test_recall``
      with ``utm_5m`` (radius 5 m); **vigor**: positive-only R@K, hit rate and the localisation error
      of the retrieved tile centre (median, accuracy within 10 m and 40 m).
    - Which protocols (records) an evaluation produces is decided in one place,
      :func:`expected_protocols` (their identifying flags, e.g. ``{"orientation_known": False}``):
      :func:`_evaluate` runs exactly those, and the leaderboard counts a recipe as done only when the
      store holds a readable record for every one of them (``runner._done``; a partial set is re-run,
      the training resuming from its ``last/`` checkpoint, and the records appended).
    - **Ties.** Every protocol also stores the tie statistics of the true match, computed from the
      same score blocks as the ranks: ``tie_share`` (percent of queries whose match ties with another
      reference) and ``R@1_pessimistic`` (R@1 with ties counted against the query); the headline R@K
      keep the literature's rule (ties for the query).
    - **Collapsed descriptors are refused**: :class:`~geo_bench.metrics.DegenerateDescriptorsError`
      (a ``ValueError``) when >= 99 % of the ground or aerial descriptors have zero norm (checked right
      after embedding) or when the tie share of a protocol reaches 50 %
      (:func:`~geo_bench.metrics.check_descriptors`); the message names the recipe / checkpoint. A
      model with all-zero weights would otherwise score R@1 = 100 % because every pair ties.
    - **Radius recall.** Where positions exist (the world and CVACT: each pair's UTM, the tile
      standing for the position of its pair, as CVACT's GPS tags do; VIGOR: the tile centres'
      lat/lon), every protocol also stores ``R@k<r m`` for k in 1/5/10 and r in 25/50/100 m and
      the median / 90th-percentile / mean metre error of the top-1 tile
      (:func:`~geo_bench.metrics.localisation_metrics`, one extra scoring pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..metrics import (
    check_descriptors,
    cvact_test_recall,
    localisation_errors,
    localisation_metrics,
    make_fov_queries,
    meter_level_accuracy,
    ranks_with_ties,
    recall_from_ranks,
    tie_statistics,
    vigor_recall,
)
from .data import DATASET_NAMES, RolledGround

__all__ = [
    "CURVE_KS",
    "ORIENTATION_SEED",
    "EvalResult",
    "evaluate_baseline",
    "evaluate_model",
    "expected_protocols",
    "matches_protocol",
]

CURVE_KS = (*range(1, 21), 25, 30, 40, 50, 75, 100)
ORIENTATION_SEED = 2019


def expected_protocols(dataset: str, split: str) -> list[dict[str, Any]]:
    """The identifying flags of the protocols (records) an evaluation of ``dataset`` / ``split``
    produces, in the order :func:`evaluate_model` returns them.

    The one place this is decided: :func:`_evaluate` runs one protocol per entry (its record's
    ``protocol`` contains the entry's flags) and the leaderboard's "already in the store?" check wants a
    readable record for every entry.

    Args:
        dataset: ``"synthetic"``, ``"cvusa"``, ``"cvact"`` or ``"vigor"``.
        split: the evaluated split (``"test"``; CVACT ``"val"`` or ``"test"``).

    Returns:
        A list of flag dicts, e.g. ``[{"orientation_known": True}, {"orientation_known": False}]``.

    Example:
        >>> expected_protocols("cvact", "test")
        [{'orientation_known': True, 'cvact_test': 'utm_5m'}]
    """
    if dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; available: {list(DATASET_NAMES)}")
    if dataset == "synthetic":
        return [{"orientation_known": True}, {"orientation_known": False}]
    if dataset == "cvact" and split == "test":
        return [{"orientation_known": True, "cvact_test": "utm_5m"}]
    return [{"orientation_known": True}]


def matches_protocol(protocol: dict[str, Any], flags: dict[str, Any]) -> bool:
    """Whether a record's ``protocol`` carries every flag of ``flags`` (one :func:`expected_protocols` entry)."""
    return all(protocol.get(k) == v for k, v in flags.items())


@dataclass
class EvalResult:
    """One protocol's numbers (the record is built from it by the runner)."""

    split: str
    protocol: dict[str, Any]
    n_query: int
    n_reference: int
    metrics: dict[str, float]
    eval_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def _embed(encode: Callable[[Tensor], Tensor], dataset: Dataset, key: str, prepare: Callable[[dict], dict] | None,
           batch_size: int, device: torch.device, progress: bool, desc: str) -> Tensor:
    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    out = []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        if prepare is not None:
            batch = prepare(batch)
        out.append(encode(batch[key]).float())
    return torch.cat(out)


class _GalleryAsPairs(Dataset):
    """A VIGOR gallery served with a 1x1 dummy panorama, so the pairwise batch transform applies."""

    def __init__(self, gallery: Dataset) -> None:
        self.gallery = gallery

    def __len__(self) -> int:
        return len(self.gallery)  # type: ignore[arg-type]

    def __getitem__(self, j: int) -> dict[str, Any]:
        s = self.gallery[j]
        return {"aerial": s["aerial"], "ground": torch.zeros(3, 4, 8), "id": s["id"]}


class _QueriesOnly(Dataset):
    """VIGOR queries without their aerial tile (1x1 dummy), so the aerial is not decoded twice."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.dataset[i]
        return {"ground": s["ground"], "aerial": torch.zeros(3, 8, 8), "id": s["id"]}


def _curve(metrics: dict[str, float], ranks: Tensor, n_ref: int) -> None:
    for k in CURVE_KS:
        if k <= n_ref and f"R@{k}" not in metrics:
            metrics[f"R@{k}"] = 100.0 * float((ranks < k).double().mean())


def _metrics(d: dict[str, float | int]) -> dict[str, float]:
    return {k: (int(v) if k.startswith("K_") else float(v)) for k, v in d.items()}


def _recall(g: Tensor, a: Tensor, similarity: Callable | None) -> tuple[dict[str, float], dict[str, Any], Tensor]:
    """Metrics (R@K, R@1%, tie statistics), protocol flags and the (N_q,) optimistic ranks of ground
    ``g`` against aerial ``a`` (match i <-> i), from one blockwise pass."""
    opt, pess = ranks_with_ties(g, a, similarity=similarity)
    res = recall_from_ranks(opt, a.shape[0], tie_stats=tie_statistics(opt, pess))
    return _metrics(res.as_dict()), res.protocol_dict(), opt


def _check(g: Tensor, a: Tensor, metrics: dict[str, float] | None, name: str | None) -> None:
    """Refuse collapsed descriptors: zero norms (before scoring, ``metrics`` None) or a high tie share."""
    if metrics is None:
        check_descriptors(g, a, name=name)
    else:
        check_descriptors(g, a, tie_share=metrics["tie_share"], recall_at_1=metrics.get("R@1"), name=name)


def _positions(test: Dataset) -> tuple[Any, str] | None:
    """The pairs' positions for the radius metrics: ``(utm, "utm")`` or ``(latlon, "latlon")`` from the
    dataset's attributes (never by decoding the samples), or None when the dataset has none."""
    for attr in ("utm", "latlon"):
        value = getattr(test, attr, None)
        if value is not None and len(value) == len(test):  # type: ignore[arg-type]
            return value, attr
    return None


def _radius(g: Tensor, a: Tensor, positions: tuple[Any, str] | None, similarity: Callable | None) -> dict[str, float]:
    if positions is None:
        return {}
    pos, coordinates = positions
    return localisation_metrics(g, a, pos, pos, coordinates=coordinates, similarity=similarity).as_dict()


def _orientation(model: Any, g: Tensor, a: Tensor, shifts: list[int], width: int) -> dict[str, float]:
    from ..metrics import orientation_accuracy, orientation_bins

    match = getattr(model, "match", None)
    if match is None:
        return {}
    preds = []
    for i in range(0, g.shape[0], 256):
        sl = slice(i, i + 256)
        # the true pair only: diagonal of each block
        out = [match(g[j : j + 1], a[j : j + 1]) for j in range(sl.start, min(sl.stop, g.shape[0]))]
        if out[0][1] is None:
            return {}
        preds.extend(int(s[1][0, 0]) for s in out)
    feature_w = int(a.shape[-1])
    pred_bins = [round(p * 64 / feature_w) % 64 for p in preds]
    res = orientation_accuracy(pred_bins, orientation_bins(shifts, width=width, n_bins=64), n_bins=64, tolerance=2)
    return res.as_dict()


def evaluate_model(
    model: Any,
    recipe: Any,
    dataset: str,
    test: Dataset,
    *,
    split: str = "test",
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    progress: bool = False,
    source: str | None = None,
) -> list[EvalResult]:
    """Evaluate a trained cross-view model on the test split (see the module Convention).

    Args:
        model: module with ``encode_ground`` / ``encode_aerial`` (and ``similarity`` / ``match``).
        recipe: its :class:`~geo_retrieval.recipes.Recipe` (evaluation preprocessing).
        dataset: ``"synthetic"``, ``"cvusa"``, ``"cvact"`` or ``"vigor"``.
        test: the test dataset (VIGOR: queries with ``.gallery``).
        split: the split name recorded.
        device: where the model runs.
        batch_size: images per forward pass.
        progress: tqdm bars.
        source: the checkpoint (path or hash), named in a :class:`~geo_bench.metrics.DegenerateDescriptorsError`.

    Returns:
        One :class:`EvalResult` per protocol of :func:`expected_protocols`.

    Raises:
        geo_bench.metrics.DegenerateDescriptorsError: the descriptors are collapsed (zero or tying).
    """
    from geo_retrieval.training import BatchTransform

    device = torch.device(device)
    model = model.to(device).eval()
    transform = BatchTransform.from_recipe(recipe)
    prepare = lambda b: transform(b, None, train=False)  # noqa: E731
    similarity = model.similarity if getattr(model, "similarity_kind", "cosine") != "cosine" else None
    name = f"{getattr(recipe, 'name', type(model).__name__)} ({getattr(recipe, 'variant', '?')})"
    if source:
        name += f", checkpoint {source}"
    return _evaluate(model.encode_ground, model.encode_aerial, similarity, model, dataset, test, split, prepare,
                     device, batch_size, progress, orientation_aware=bool(getattr(recipe, "orientation_aware", False)),
                     name=name)


def evaluate_baseline(baseline: Any, dataset: str, test: Dataset, *, split: str = "test", batch_size: int = 64,
                      progress: bool = False) -> list[EvalResult]:
    """Evaluate a no-learning matcher (:class:`~geo_bench.baselines.ColourProfile`) like a model (the same
    protocols, tie statistics and collapse check); with unknown orientation it uses its orientation-aware
    ``aligned_similarity``."""
    return _evaluate(baseline.encode_ground, baseline.encode_aerial, baseline.similarity, baseline, dataset, test,
                     split, None, torch.device("cpu"), batch_size, progress, orientation_aware=True,
                     unknown_similarity=baseline.aligned_similarity, name=type(baseline).__name__)


def _evaluate(encode_g: Callable, encode_a: Callable, similarity: Callable | None, model: Any, dataset: str,
              test: Dataset, split: str, prepare: Callable | None, device: torch.device, batch_size: int,
              progress: bool, *, orientation_aware: bool, unknown_similarity: Callable | None = None,
              name: str | None = None) -> list[EvalResult]:
    """One :class:`EvalResult` per entry of :func:`expected_protocols` (in its order); each result's
    protocol starts with the entry's flags. Raises ``DegenerateDescriptorsError`` for collapsed descriptors."""
    protocols = expected_protocols(dataset, split)
    results: list[EvalResult] = []

    def emb(ds: Dataset, key: str, desc: str) -> Tensor:
        return _embed(encode_g if key == "ground" else encode_a, ds, key, prepare, batch_size, device, progress, desc)

    if dataset == "vigor":
        (flags,) = protocols
        t0 = time.perf_counter()
        g = emb(_QueriesOnly(test), "ground", "embed queries")
        gallery = test.gallery  # type: ignore[attr-defined]
        a = emb(_GalleryAsPairs(gallery), "aerial", "embed gallery")
        _check(g, a, None, name)
        positives = test.positives  # type: ignore[attr-defined]
        semi = torch.as_tensor(test._tiles[:, 1:])  # type: ignore[attr-defined]
        res = vigor_recall(g, a, positives, semi, similarity=similarity, tie_stats=True)
        metrics = _metrics(res.as_dict())
        _check(g, a, metrics, name)
        tile_ll = torch.stack([torch.as_tensor(gallery[j]["latlon"]) for j in range(len(gallery))])
        errors = localisation_errors(res.top1_index, tile_ll, torch.as_tensor(test.latlon))  # type: ignore[attr-defined]
        curve = meter_level_accuracy(errors)
        query_ll = torch.as_tensor(test.latlon)  # type: ignore[attr-defined]
        metrics.update(localisation_metrics(g, a, query_ll, tile_ll, coordinates="latlon", similarity=similarity)
                       .as_dict())
        metrics.update({"median_error_m": float(np.median(errors)), "acc@10m": curve.at(10.0),
                        "acc@40m": curve.at(40.0)})
        proto = {**flags, "fov": 360.0, "labels": getattr(test, "labels", "orig"), "area": getattr(test, "area", None)}
        results.append(EvalResult(split, proto, g.shape[0], a.shape[0], metrics, time.perf_counter() - t0))
        return results

    t0 = time.perf_counter()
    g = emb(test, "ground", "embed ground")
    a = emb(test, "aerial", "embed aerial")
    _check(g, a, None, name)
    n = g.shape[0]
    positions = _positions(test)
    embed_seconds = time.perf_counter() - t0
    for flags in protocols:
        t0 = time.perf_counter()
        if flags.get("cvact_test"):
            utm = torch.stack([torch.as_tensor(test[i]["utm"]) for i in range(n)]) if not hasattr(test, "utm") else test.utm  # type: ignore[attr-defined]
            res = cvact_test_recall(g, a, flags["cvact_test"], query_utm=utm, reference_utm=utm, radius_m=5.0,
                                    similarity=similarity, tie_stats=True)
            metrics = _metrics(res.as_dict())
            _check(g, a, metrics, name)
            metrics.update(_radius(g, a, positions, similarity))
            proto = {**flags, "fov": 360.0, "radius_m": 5.0}
        elif flags["orientation_known"]:
            metrics, rproto, r = _recall(g, a, similarity)
            _check(g, a, metrics, name)
            _curve(metrics, r, a.shape[0])
            metrics.update(_radius(g, a, positions, similarity))
            proto = {**flags, "fov": 360.0, **rproto}
        else:
            # unknown orientation: the same test panoramas rolled by fixed, recorded shifts
            width = int(test[0]["ground"].shape[-1])
            qs = make_fov_queries(n, 360.0, noise_deg=360.0, seed=ORIENTATION_SEED, width=width)
            gu = emb(RolledGround(test, qs.shifts), "ground", "embed rolled ground")
            _check(gu, a, None, name)
            sim_u = unknown_similarity or similarity
            metrics, rproto, r = _recall(gu, a, sim_u)
            _check(gu, a, metrics, name)
            _curve(metrics, r, a.shape[0])
            if orientation_aware and unknown_similarity is None:
                metrics.update(_orientation(model, gu, a, list(qs.shifts), width))
            metrics.update(_radius(gu, a, positions, sim_u))
            proto = {**flags, "fov": 360.0, "query_seed": ORIENTATION_SEED, "noise_deg": 360.0, **rproto}
        # the first protocol's time includes embedding ground and aerial (as before)
        seconds = time.perf_counter() - t0 + (embed_seconds if not results else 0.0)
        results.append(EvalResult(split, proto, n, a.shape[0], metrics, seconds))
    return results
