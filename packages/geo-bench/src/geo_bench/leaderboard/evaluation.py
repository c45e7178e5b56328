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

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from geo_retrieval.checkpoint import atomic_write_bytes
from geo_retrieval.embedding import embed
from geo_retrieval.ranking import model_similarity
from geo_retrieval.recipes import Recipe
from geo_retrieval.training import BatchTransform

from ..metrics import (
    check_descriptors,
    cvact_test_recall,
    localisation_errors,
    localisation_metrics,
    make_fov_queries,
    meter_level_accuracy,
    orientation_accuracy,
    orientation_bins,
    ranks_with_ties,
    recall_curve,
    recall_from_ranks,
    tie_statistics,
    vigor_recall,
)
from ..protocols.corruptions import (
    CORRUPTION_SET_VERSION,
    CORRUPTIONS,
    CorruptedViews,
    corruption_set_hash,
    relative_corruption_error,
)
from ..protocols.fov import DEFAULT_FOVS, FOV_PROTOCOL_VERSION, LimitedFovGround, fov_query_file
from .data import DATASET_NAMES, RolledGround

__all__ = [
    "area_splits",
    "CURVE_KS",
    "ORIENTATION_SEED",
    "EvalResult",
    "evaluate_baseline",
    "evaluate_model",
    "CORRUPTION_SEED",
    "EXTRA_PROTOCOLS",
    "corrupted_queries",
    "expected_protocols",
    "matches_protocol",
    "parse_protocols",
]

CURVE_KS = (*range(1, 21), 25, 30, 40, 50, 75, 100)
ORIENTATION_SEED = 2019


#: Optional protocols (``--protocols``): limited FoV with unknown orientation from fixed query
#: files (:mod:`geo_bench.protocols.fov`), corruption robustness of the queries
#: (:mod:`geo_bench.protocols.corruptions`, CVUSA-C's setting), and ``"corruption+refs"``: the same
#: corruptions applied to the queries and to the references alike (both captures degraded).
EXTRA_PROTOCOLS = ("fov", "corruption", "corruption+refs")
#: Seed of the corrupted pixels (the same on every run and machine, see the corruptions module).
CORRUPTION_SEED = 2024


def parse_protocols(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"fov,corruption"`` (or a sequence) -> the validated, de-duplicated names, in
    :data:`EXTRA_PROTOCOLS` order; ValueError naming ``--protocols`` for an unknown name."""
    if not text:
        return ()
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in EXTRA_PROTOCOLS]
    if unknown:
        raise ValueError(
            f"--protocols: unknown protocol(s) {unknown}; available: {', '.join(EXTRA_PROTOCOLS)}"
        )
    return tuple(n for n in EXTRA_PROTOCOLS if n in names)


def expected_protocols(dataset: str, split: str, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The identifying flags of the protocols (records) an evaluation of ``dataset`` / ``split``
    produces, in the order :func:`evaluate_model` returns them.

    The one place this is decided: :func:`_evaluate` runs one protocol per entry (its record's
    ``protocol`` contains the entry's flags) and the leaderboard's "already in the store?" check wants a
    readable record for every entry.

    Args:
        dataset: ``"synthetic"``, ``"cvusa"``, ``"cvact"`` or ``"vigor"``.
        split: the evaluated split (``"test"``; CVACT ``"val"`` or ``"test"``).
        extra: optional protocols of :data:`EXTRA_PROTOCOLS`: ``"fov"`` adds one entry per FoV of
            :data:`~geo_bench.protocols.fov.DEFAULT_FOVS` (orientation unknown), ``"corruption"`` one
            per corruption of the fixed set (orientation known; all severities in one record; the
            queries corrupted), ``"corruption+refs"`` the same with the references corrupted too.

    On the synthetic world every entry carries ``area``: ``"same"`` (the test region of the training
    cities) and, for orientation known and unknown, ``"cross"`` (the cross-area city of another style;
    evaluated on the world's ``cross`` split).

    Returns:
        A list of flag dicts, e.g. ``[{"orientation_known": True}, {"orientation_known": False}]``.

    Example:
        >>> expected_protocols("cvact", "test")
        [{'orientation_known': True, 'cvact_test': 'utm_5m'}]
        >>> [p["fov"] for p in expected_protocols("cvusa", "test", ["fov"])[1:]]
        [360.0, 180.0, 90.0, 70.0]
    """
    if dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; available: {list(DATASET_NAMES)}")
    if dataset == "synthetic":
        out: list[dict[str, Any]] = [{"orientation_known": True}, {"orientation_known": False}]
    elif dataset == "cvact" and split == "test":
        out = [{"orientation_known": True, "cvact_test": "utm_5m"}]
    else:
        out = [{"orientation_known": True}]
    extra = parse_protocols(extra)
    if "fov" in extra:
        out += [
            {"orientation_known": False, "fov": fov, "fov_protocol": FOV_PROTOCOL_VERSION}
            for fov in DEFAULT_FOVS
        ]
    for protocol, views in (("corruption", "ground"), ("corruption+refs", "ground+aerial")):
        if protocol in extra:
            out += [
                {
                    "orientation_known": True,
                    "corruption": name,
                    "corruption_set": CORRUPTION_SET_VERSION,
                    "corrupted_views": views,
                }
                for name in CORRUPTIONS
            ]
    if dataset == "synthetic":
        out = [{**flags, "area": "same"} for flags in out]
        out += [{"orientation_known": known, "area": "cross"} for known in (True, False)]
    return out


def area_splits(dataset: str, test: Dataset, cross: Dataset | None) -> list[tuple[Dataset, str | None]]:
    """The ``(split data, area)`` pairs an evaluation runs, in record order: on the synthetic world its
    test region (``"same"``) and its cross-area city (``"cross"``, required); elsewhere ``test`` alone
    (``None``: the dataset's own protocols). Each pair is one :func:`evaluate_model` call with ``area``.

    Example:
        >>> [area for _, area in area_splits("cvusa", [], None)]
        [None]
    """
    if dataset != "synthetic":
        return [(test, None)]
    if cross is None:
        raise ValueError("the synthetic world is evaluated on its test and its cross-area split: pass cross=")
    return [(test, "same"), (cross, "cross")]


#: Protocol keys that set a record apart from the base protocols: a record carrying one of them
#: answers only an :func:`expected_protocols` entry that names it.
_DISTINCT_KEYS = ("cvact_test", "fov_protocol", "corruption")


def matches_protocol(protocol: dict[str, Any], flags: dict[str, Any]) -> bool:
    """Whether a record's ``protocol`` is the one :func:`expected_protocols` entry ``flags`` names: it
    carries every flag, and no distinguishing key (an FoV query file, a corruption) the entry lacks.

    Example:
        >>> matches_protocol({"orientation_known": False, "fov": 90.0, "fov_protocol": "fov-1"},
        ...                  {"orientation_known": False})
        False
    """
    if any(protocol.get(k) is not None for k in _DISTINCT_KEYS if k not in flags):
        return False
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


def _embed(
    encode: Callable[[Tensor], Tensor],
    dataset: Dataset,
    key: str,
    prepare: Callable[[dict], dict] | None,
    batch_size: int,
    device: torch.device,
    progress: bool,
    desc: str,
) -> Tensor:
    """The (N, ...) float32 descriptors of view ``key`` of ``dataset`` on ``device``, in dataset order
    (the one embedding loop, :func:`geo_retrieval.embedding.embed`)."""
    out, _ = embed(
        {key: encode},
        dataset,
        batch_size=batch_size,
        prepare=prepare,
        device=device,
        progress=progress,
        desc=desc,
    )
    return out[key]


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
        self.ids = getattr(dataset, "ids", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.dataset[i]
        return {"ground": s["ground"], "aerial": torch.zeros(3, 8, 8), "id": s["id"]}


def _curve(metrics: dict[str, float], ranks: Tensor, n_ref: int) -> None:
    ks = [k for k in CURVE_KS if k <= n_ref and f"R@{k}" not in metrics]
    if ks:
        metrics.update({f"R@{k}": v for k, v in zip(ks, recall_curve(ranks, ks).tolist())})


def _metrics(d: dict[str, float | int]) -> dict[str, float]:
    return {k: (int(v) if k.startswith("K_") else float(v)) for k, v in d.items()}


def _recall(
    g: Tensor, a: Tensor, similarity: Callable | None
) -> tuple[dict[str, float], dict[str, Any], Tensor]:
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


def _radius(
    g: Tensor, a: Tensor, positions: tuple[Any, str] | None, similarity: Callable | None
) -> dict[str, float]:
    if positions is None:
        return {}
    pos, coordinates = positions
    return localisation_metrics(g, a, pos, pos, coordinates=coordinates, similarity=similarity).as_dict()


def _orientation(model: Any, g: Tensor, a: Tensor, shifts: list[int], width: int) -> dict[str, float]:
    match = getattr(model, "match", None)
    if match is None:
        return {}
    preds: list[int] = []
    for i in range(0, g.shape[0], 256):
        sl = slice(i, i + 256)
        # the true pair only: diagonal of each block
        out = [match(g[j : j + 1], a[j : j + 1]) for j in range(sl.start, min(sl.stop, g.shape[0]))]
        if out[0][1] is None:
            return {}
        preds.extend(int(s[1][0, 0]) for s in out)
    feature_w = int(a.shape[-1])
    pred_bins = [round(p * 64 / feature_w) % 64 for p in preds]
    res = orientation_accuracy(
        pred_bins, orientation_bins(shifts, width=width, n_bins=64), n_bins=64, tolerance=2
    )
    return res.as_dict()


def evaluate_model(
    model: Any,
    recipe: Recipe,
    dataset: str,
    test: Dataset,
    *,
    split: str = "test",
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    progress: bool = False,
    source: str | None = None,
    protocols: Sequence[str] = (),
    queries_dir: str | Path | None = None,
    area: str | None = None,
    prepare: Callable[[dict], dict] | None = None,
    on_descriptors: Callable[[Tensor, Tensor], None] | None = None,
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
        protocols: optional protocols of :data:`EXTRA_PROTOCOLS` (``"fov"``, ``"corruption"``).
        queries_dir: where the FoV query files are read or made (needed with ``"fov"``).
        area: on the synthetic world, which entries of :func:`expected_protocols` ``test`` answers:
            ``"same"`` (the test region; the default) or ``"cross"`` (the cross-area city).
        prepare: the batch transform applied before encoding instead of the recipe's evaluation
            preprocessing (``BatchTransform(train=False)``); e.g. the identity for samples that
            :class:`~geo_bench.datasets.upstream_preprocess.UpstreamViews` already preprocessed.
        on_descriptors: called once with the clean ground (query) and aerial (reference)
            descriptors, in dataset order, right after they are embedded.

    Returns:
        One :class:`EvalResult` per protocol of :func:`expected_protocols` (of ``area``).

    Raises:
        geo_bench.metrics.DegenerateDescriptorsError: the descriptors are collapsed (zero or tying).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    if prepare is None:
        transform = BatchTransform.from_recipe(recipe)
        prepare = lambda b: transform(b, None, train=False)  # noqa: E731
    similarity = model_similarity(model)
    name = f"{getattr(recipe, 'name', type(model).__name__)} ({getattr(recipe, 'variant', '?')})"
    if source:
        name += f", checkpoint {source}"
    norm = getattr(recipe, "normalisation", None)
    return _evaluate(
        model.encode_ground,
        model.encode_aerial,
        similarity,
        model,
        dataset,
        test,
        split,
        prepare,
        device,
        batch_size,
        progress,
        orientation_aware=bool(getattr(recipe, "orientation_aware", False)),
        name=name,
        protocols=protocols,
        queries_dir=queries_dir,
        fill=tuple(norm.mean) if norm is not None else None,
        area=area,
        on_descriptors=on_descriptors,
    )


def evaluate_baseline(
    baseline: Any,
    dataset: str,
    test: Dataset,
    *,
    split: str = "test",
    batch_size: int = 64,
    progress: bool = False,
    protocols: Sequence[str] = (),
    queries_dir: str | Path | None = None,
    area: str | None = None,
) -> list[EvalResult]:
    """Evaluate a no-learning matcher (:class:`~geo_bench.baselines.ColourProfile`) like a model (the same
    protocols, tie statistics and collapse check); with unknown orientation it uses its orientation-aware
    ``aligned_similarity``."""
    return _evaluate(
        baseline.encode_ground,
        baseline.encode_aerial,
        baseline.similarity,
        baseline,
        dataset,
        test,
        split,
        None,
        torch.device("cpu"),
        batch_size,
        progress,
        orientation_aware=True,
        unknown_similarity=baseline.aligned_similarity,
        name=type(baseline).__name__,
        protocols=protocols,
        queries_dir=queries_dir,
        area=area,
    )


def _evaluate(
    encode_g: Callable,
    encode_a: Callable,
    similarity: Callable | None,
    model: Any,
    dataset: str,
    test: Dataset,
    split: str,
    prepare: Callable | None,
    device: torch.device,
    batch_size: int,
    progress: bool,
    *,
    orientation_aware: bool,
    unknown_similarity: Callable | None = None,
    name: str | None = None,
    protocols: Sequence[str] = (),
    queries_dir: str | Path | None = None,
    fill: Sequence[float] | None = None,
    area: str | None = None,
    on_descriptors: Callable[[Tensor, Tensor], None] | None = None,
) -> list[EvalResult]:
    """One :class:`EvalResult` per entry of :func:`expected_protocols` (in its order); each result's
    protocol starts with the entry's flags. The references are embedded once; each query variant
    (rolled, limited-FoV, corrupted) costs one more embedding pass of the queries. Raises
    ``DegenerateDescriptorsError`` for collapsed descriptors."""
    entries = expected_protocols(dataset, split, protocols)
    if area is None and dataset == "synthetic":
        area = "same"  # a world split given alone is its same-area test region
    if area is not None:
        if area not in ("same", "cross"):
            raise ValueError(f"area must be 'same', 'cross' or None, got {area!r}")
        entries = [f for f in entries if f.get("area") == area]
        if not entries:
            raise ValueError(f"{dataset} has no {area}-area protocol")
    if any("fov_protocol" in f for f in entries) and queries_dir is None:
        raise ValueError("the fov protocol needs a folder for its query files (queries_dir)")
    results: list[EvalResult] = []

    def emb(ds: Dataset, key: str, desc: str) -> Tensor:
        return _embed(
            encode_g if key == "ground" else encode_a, ds, key, prepare, batch_size, device, progress, desc
        )

    t0 = time.perf_counter()
    if dataset == "vigor":
        queries: Dataset = _QueriesOnly(test)
        gallery = test.gallery  # type: ignore[attr-defined]
        a = a_clean = emb(_GalleryAsPairs(gallery), "aerial", "embed gallery")
        tile_ll = torch.stack([torch.as_tensor(gallery[j]["latlon"]) for j in range(len(gallery))])
    else:
        queries = test
        a = a_clean = emb(test, "aerial", "embed aerial")
    g = emb(queries, "ground", "embed ground")
    _check(g, a, None, name)
    if on_descriptors is not None:
        on_descriptors(g, a)
    n = g.shape[0]
    positions = _positions(test)
    embed_seconds = time.perf_counter() - t0

    references: Dataset = _GalleryAsPairs(test.gallery) if dataset == "vigor" else test  # type: ignore[attr-defined]

    def score(
        gq: Tensor, sim: Callable | None, flags: dict[str, Any], ref: Tensor | None = None
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """Metrics and protocol fields of queries ``gq`` against the references (``ref``, default the
        clean ones), under the dataset's protocol (VIGOR's positives, CVACT_test's utm_5m, else id
        matching)."""
        a = a_clean if ref is None else ref
        if dataset == "vigor":
            vigor: Any = test  # the VIGOR queries dataset: positives, _tiles, latlon
            res = vigor_recall(
                gq,
                a,
                vigor.positives,
                torch.as_tensor(vigor._tiles[:, 1:]),
                similarity=sim,
                tie_stats=True,
            )
            metrics = _metrics(res.as_dict())
            _check(gq, a, metrics, name)
            errors = localisation_errors(res.top1_index, tile_ll, torch.as_tensor(vigor.latlon))
            curve = meter_level_accuracy(errors)
            metrics.update(
                localisation_metrics(
                    gq,
                    a,
                    torch.as_tensor(vigor.latlon),
                    tile_ll,
                    coordinates="latlon",
                    similarity=sim,
                ).as_dict()
            )
            metrics.update(
                {
                    "median_error_m": float(np.median(errors)),
                    "acc@10m": curve.at(10.0),
                    "acc@40m": curve.at(40.0),
                }
            )
            return metrics, {"labels": getattr(test, "labels", "orig"), "area": getattr(test, "area", None)}
        if flags.get("cvact_test"):
            utm = (
                test.utm
                if hasattr(test, "utm")
                else torch.stack([torch.as_tensor(test[i]["utm"]) for i in range(n)])
            )
            cvact_res = cvact_test_recall(
                gq,
                a,
                flags["cvact_test"],
                query_utm=utm,
                reference_utm=utm,
                radius_m=5.0,
                similarity=sim,
                tie_stats=True,
            )
            metrics = _metrics(cvact_res.as_dict())
            _check(gq, a, metrics, name)
            metrics.update(_radius(gq, a, positions, sim))
            return metrics, {"radius_m": 5.0}
        metrics, rproto, r = _recall(gq, a, sim)
        _check(gq, a, metrics, name)
        _curve(metrics, r, a.shape[0])
        metrics.update(_radius(gq, a, positions, sim))
        return metrics, rproto

    width = int(queries[0]["ground"].shape[-1])
    ids = _query_ids(queries)
    sim_unknown = unknown_similarity or similarity
    clean_r1: float | None = None
    for flags in entries:
        t0 = time.perf_counter()
        if "corruption" in flags:
            cache = Path(queries_dir) / "corrupted" if queries_dir is not None else None
            refs = references if flags["corrupted_views"] == "ground+aerial" else None
            metrics, proto = _corruption(
                flags["corruption"],
                queries,
                emb,
                score,
                similarity,
                flags,
                clean_r1,
                cache,
                f"{dataset}-{split}",
                refs,
            )
            proto = {**flags, "fov": 360.0, **proto}
        elif "fov_protocol" in flags:
            qfile, path = fov_query_file(Path(queries_dir), dataset, split, ids, flags["fov"], width=width)  # type: ignore[arg-type]
            gq = emb(LimitedFovGround(queries, qfile, fill), "ground", f"embed FoV {flags['fov']:g}")
            _check(gq, a, None, name)
            metrics, rproto = score(gq, sim_unknown, flags)
            proto = {**flags, **qfile.protocol(path), **rproto}
        elif flags["orientation_known"]:
            metrics, rproto = score(g, similarity, flags)
            clean_r1 = metrics["R@1"]
            proto = {**flags, "fov": 360.0, **rproto}
        else:
            # unknown orientation: the same test panoramas rolled by fixed, recorded shifts
            qs = make_fov_queries(n, 360.0, noise_deg=360.0, seed=ORIENTATION_SEED, width=width)
            gu = emb(RolledGround(queries, qs.shifts), "ground", "embed rolled ground")
            _check(gu, a, None, name)
            metrics, rproto = score(gu, sim_unknown, flags)
            if orientation_aware and unknown_similarity is None:
                metrics.update(_orientation(model, gu, a, list(qs.shifts), width))
            proto = {**flags, "fov": 360.0, "query_seed": ORIENTATION_SEED, "noise_deg": 360.0, **rproto}
        # the first protocol's time includes embedding the queries and the references
        seconds = time.perf_counter() - t0 + (embed_seconds if not results else 0.0)
        results.append(EvalResult(split, proto, n, a.shape[0], metrics, seconds))
    return results


def _query_ids(queries: Dataset) -> list[str]:
    """The query ids in dataset order: the dataset's ``ids`` when it has them (never decoding), else
    read from the samples."""
    ids = getattr(queries, "ids", None)
    if ids is None:
        ids = [queries[k]["id"] for k in range(len(queries))]  # type: ignore[arg-type]
    return [str(i) for i in ids]


class _GroundArray(Dataset):
    """Query panoramas from a (N, 3, H, W) uint8 array (a corrupted-query cache) with their ids and a
    1x1-like dummy aerial (only the ground is embedded); float in [0, 1] when ``as_float``."""

    def __init__(self, ground: np.ndarray, ids: Sequence[str], as_float: bool) -> None:
        self.ground, self.ids, self.as_float = ground, list(ids), as_float

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.from_numpy(np.array(self.ground[i]))
        return {
            "ground": g.float() / 255.0 if self.as_float else g,
            "aerial": torch.zeros(3, 8, 8),
            "id": self.ids[i],
        }


def corrupted_queries(
    queries: Dataset,
    corruption: str,
    severity: int,
    cache_dir: str | Path | None,
    *,
    name: str = "queries",
    batch_size: int = 32,
) -> Dataset:
    """The queries with their ground view corrupted (seed :data:`CORRUPTION_SEED`), computed once and
    kept in ``cache_dir`` as a uint8 ``.npy`` (the corrupted pixels are 8-bit levels and the same for
    every model, so every later model reads them back; several processes may write the same file,
    each atomically, with identical bytes). Without ``cache_dir`` the views are corrupted on the fly.

    Args:
        queries: the query dataset (dict samples with ``"ground"`` (3, H, W) uint8 or float in [0, 1], ``"id"``).
        corruption, severity: one condition of the set.
        cache_dir: folder of the cache (the leaderboard's ``OUT/queries/corrupted``), or None.
        name: ``<dataset>-<split>``, part of the file name.
        batch_size: images corrupted per call.
    """
    views = CorruptedViews(queries, corruption, severity, seed=CORRUPTION_SEED)
    if cache_dir is None:
        return views
    first = queries[0]["ground"]
    as_float = bool(first.is_floating_point())
    ids = _query_ids(queries)
    key = hashlib.sha256(
        json.dumps([corruption_set_hash(), ids], separators=(",", ":")).encode()
    ).hexdigest()[:12]
    path = Path(cache_dir) / f"{name}-{corruption}-s{severity}-seed{CORRUPTION_SEED}-{key}.npy"
    shape = (len(ids), *first.shape)
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == shape and arr.dtype == np.uint8:
                return _GroundArray(arr, ids, as_float)
        except (OSError, ValueError):
            pass  # damaged: computed again below
    out = np.empty(shape, np.uint8)
    loader = DataLoader(queries, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    start = 0
    for batch in loader:
        g = views.apply({"ground": batch["ground"], "id": [str(i) for i in batch["id"]]})["ground"]
        g = (g * 255.0).round().clamp(0, 255).to(torch.uint8) if g.is_floating_point() else g
        out[start : start + g.shape[0]] = g.numpy()
        start += g.shape[0]
    buf = io.BytesIO()
    np.save(buf, out)
    atomic_write_bytes(path, buf.getvalue())
    return _GroundArray(out, ids, as_float)


def _corruption(
    corruption: str,
    queries: Dataset,
    emb: Callable,
    score: Callable,
    similarity: Callable | None,
    flags: dict[str, Any],
    clean_r1: float | None,
    cache_dir: Path | None,
    name: str,
    references: Dataset | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """One corruption at every severity: the queries corrupted (seeded, :data:`CORRUPTION_SEED`;
    :func:`corrupted_queries`) and embedded once per severity against the clean references. Metrics:
    ``R@1_s{k}`` / ``R@5_s{k}`` / ``R@10_s{k}`` per severity, ``R@1`` / ``R@5`` / ``R@10`` their means
    over the severities, ``R@1_clean`` and ``RCE`` (the relative corruption error of the mean, in
    percent). With ``references`` their aerial views are corrupted too (on the fly, the same
    condition, each view its own seeded stream) and embedded once per severity."""
    per: dict[int, dict[str, float]] = {}
    for severity in range(1, 6):
        ds = corrupted_queries(queries, corruption, severity, cache_dir, name=name)
        gq = emb(ds, "ground", f"embed {corruption} {severity}")
        ref = None
        if references is not None:
            refs = CorruptedViews(references, corruption, severity, seed=CORRUPTION_SEED, views=("aerial",))
            ref = emb(refs, "aerial", f"embed corrupted references {corruption} {severity}")
        per[severity], _ = score(gq, similarity, flags, ref)
    metrics: dict[str, float] = {}
    for k in ("R@1", "R@5", "R@10"):
        for severity, m in per.items():
            metrics[f"{k}_s{severity}"] = m[k]
        metrics[k] = float(np.mean([m[k] for m in per.values()]))
    for k in ("tie_share", "R@1_pessimistic"):
        metrics[k] = float(np.mean([m[k] for m in per.values()]))
    if clean_r1 is not None:
        metrics["R@1_clean"] = clean_r1
        if clean_r1 > 0:
            metrics["RCE"] = 100.0 * relative_corruption_error(clean_r1, metrics["R@1"])
    proto = {
        "corruption_set_sha256": corruption_set_hash()[:16],
        "corruption_seed": CORRUPTION_SEED,
        "severities": [1, 2, 3, 4, 5],
    }
    return metrics, proto
