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

__all__ = ["CURVE_KS", "ORIENTATION_SEED", "EvalResult", "evaluate_baseline", "evaluate_model"]

CURVE_KS = (*range(1, 21), 25, 30, 40, 50, 75, 100)
ORIENTATION_SEED = 2019


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


def _recall(g: Tensor, a: Tensor, similarity: Callable | None, **kw: Any) -> tuple[dict[str, float], dict[str, Any], Tensor]:
    from ..metrics import ranks as compute_ranks
    from ..metrics import retrieval_recall

    res = retrieval_recall(g, a, similarity=similarity, **kw)
    metrics = {k: (int(v) if k.startswith("K_") else float(v)) for k, v in res.as_dict().items()}
    r = compute_ranks(g, a, similarity=similarity, gt_index=kw.get("gt_index"))
    return metrics, res.protocol_dict(), r


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

    Returns:
        One :class:`EvalResult` per protocol.
    """
    from geo_retrieval.training import BatchTransform

    device = torch.device(device)
    model = model.to(device).eval()
    transform = BatchTransform.from_recipe(recipe)
    prepare = lambda b: transform(b, None, train=False)  # noqa: E731
    similarity = model.similarity if getattr(model, "similarity_kind", "cosine") != "cosine" else None
    return _evaluate(model.encode_ground, model.encode_aerial, similarity, model, dataset, test, split, prepare,
                     device, batch_size, progress, orientation_aware=bool(getattr(recipe, "orientation_aware", False)))


def evaluate_baseline(baseline: Any, dataset: str, test: Dataset, *, split: str = "test", batch_size: int = 64,
                      progress: bool = False) -> list[EvalResult]:
    """Evaluate a no-learning matcher (:class:`~geo_bench.baselines.ColourProfile`) like a model; with
    unknown orientation it uses its orientation-aware ``aligned_similarity``."""
    return _evaluate(baseline.encode_ground, baseline.encode_aerial, baseline.similarity, baseline, dataset, test,
                     split, None, torch.device("cpu"), batch_size, progress, orientation_aware=True,
                     unknown_similarity=baseline.aligned_similarity)


def _evaluate(encode_g: Callable, encode_a: Callable, similarity: Callable | None, model: Any, dataset: str,
              test: Dataset, split: str, prepare: Callable | None, device: torch.device, batch_size: int,
              progress: bool, *, orientation_aware: bool, unknown_similarity: Callable | None = None) -> list[EvalResult]:
    from ..metrics import make_fov_queries
    from .data import RolledGround

    results: list[EvalResult] = []

    def emb(ds: Dataset, key: str, desc: str) -> Tensor:
        return _embed(encode_g if key == "ground" else encode_a, ds, key, prepare, batch_size, device, progress, desc)

    if dataset == "vigor":
        from ..metrics import localisation_errors, meter_level_accuracy, vigor_recall

        t0 = time.perf_counter()
        g = emb(_QueriesOnly(test), "ground", "embed queries")
        gallery = test.gallery  # type: ignore[attr-defined]
        a = emb(_GalleryAsPairs(gallery), "aerial", "embed gallery")
        positives = test.positives  # type: ignore[attr-defined]
        semi = torch.as_tensor(test._tiles[:, 1:])  # type: ignore[attr-defined]
        res = vigor_recall(g, a, positives, semi, similarity=similarity)
        metrics = {k: (int(v) if k.startswith("K_") else float(v)) for k, v in res.as_dict().items()}
        tile_ll = torch.stack([torch.as_tensor(gallery[j]["latlon"]) for j in range(len(gallery))])
        errors = localisation_errors(res.top1_index, tile_ll, torch.as_tensor(test.latlon))  # type: ignore[attr-defined]
        curve = meter_level_accuracy(errors)
        metrics.update({"median_error_m": float(np.median(errors)), "acc@10m": curve.at(10.0),
                        "acc@40m": curve.at(40.0)})
        proto = {"orientation_known": True, "fov": 360.0, "labels": getattr(test, "labels", "orig"),
                 "area": getattr(test, "area", None)}
        results.append(EvalResult(split, proto, g.shape[0], a.shape[0], metrics, time.perf_counter() - t0))
        return results

    t0 = time.perf_counter()
    g = emb(test, "ground", "embed ground")
    a = emb(test, "aerial", "embed aerial")
    n = g.shape[0]
    if dataset == "cvact" and split == "test":
        from ..metrics import cvact_test_recall

        utm = torch.stack([torch.as_tensor(test[i]["utm"]) for i in range(n)]) if not hasattr(test, "utm") else test.utm  # type: ignore[attr-defined]
        res = cvact_test_recall(g, a, "utm_5m", query_utm=utm, reference_utm=utm, radius_m=5.0, similarity=similarity)
        metrics = {k: (int(v) if k.startswith("K_") else float(v)) for k, v in res.as_dict().items()}
        proto = {"orientation_known": True, "fov": 360.0, "cvact_test": "utm_5m", "radius_m": 5.0}
        results.append(EvalResult(split, proto, n, a.shape[0], metrics, time.perf_counter() - t0))
        return results
    metrics, rproto, r = _recall(g, a, similarity)
    _curve(metrics, r, a.shape[0])
    results.append(EvalResult(split, {"orientation_known": True, "fov": 360.0, **rproto}, n, a.shape[0], metrics,
                              time.perf_counter() - t0))
    if dataset != "synthetic":
        return results
    # unknown orientation: the same test panoramas rolled by fixed, recorded shifts
    t0 = time.perf_counter()
    width = int(test[0]["ground"].shape[-1])
    qs = make_fov_queries(n, 360.0, noise_deg=360.0, seed=ORIENTATION_SEED, width=width)
    gu = emb(RolledGround(test, qs.shifts), "ground", "embed rolled ground")
    sim_u = unknown_similarity or similarity
    metrics, rproto, r = _recall(gu, a, sim_u)
    _curve(metrics, r, a.shape[0])
    if orientation_aware and unknown_similarity is None:
        metrics.update(_orientation(model, gu, a, list(qs.shifts), width))
    proto = {"orientation_known": False, "fov": 360.0, "query_seed": ORIENTATION_SEED, "noise_deg": 360.0, **rproto}
    results.append(EvalResult(split, proto, n, a.shape[0], metrics, time.perf_counter() - t0))
    return results
