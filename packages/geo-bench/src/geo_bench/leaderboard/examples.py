"""Retrieval examples of a trained run: the top-:data:`EXAMPLE_K` references of the first
:data:`EXAMPLE_QUERIES` test queries, kept in ``<run folder>/examples.json`` for
:func:`~.plots.plot_retrieval_examples`.

Convention: query ``i`` is ``test[i]``, its true reference is ``test[i]["aerial"]`` (index ``i``
among the references, as in the evaluation), orientation known; scores are the model's similarity.
VIGOR runs write none (its references are a gallery of their own). Writing never fails a run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import Subset

from geo_retrieval.checkpoint import atomic_write_bytes
from geo_retrieval.embedding import embed
from geo_retrieval.protocols import CrossViewEncoder
from geo_retrieval.ranking import model_similarity
from geo_retrieval.recipes import Recipe
from geo_retrieval.training import BatchTransform

from .config import RunConfig
from .training import TrainedRun

__all__ = ["EXAMPLES_FILE", "EXAMPLE_K", "EXAMPLE_QUERIES", "retrieval_examples"]

log = logging.getLogger(__name__)

#: Test queries shown per recipe in the examples figure: the first ones of the test split.
EXAMPLE_QUERIES = 4
#: References retrieved per example query.
EXAMPLE_K = 5
#: The examples file of a run folder.
EXAMPLES_FILE = "examples.json"


@torch.no_grad()
def retrieval_examples(
    model: nn.Module,
    recipe: Recipe,
    test: Any,
    *,
    n_queries: int = EXAMPLE_QUERIES,
    k: int = EXAMPLE_K,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> dict[str, Any]:
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
    device = torch.device(device)
    model = model.to(device).eval()
    encoder = cast(CrossViewEncoder, model)
    transform = BatchTransform.from_recipe(recipe)
    prepare = lambda b: transform(b, None, train=False)  # noqa: E731
    a = embed(
        {"aerial": encoder.encode_aerial},
        test,
        batch_size=batch_size,
        prepare=prepare,
        device=device,
        desc="embed aerial",
    )[0]["aerial"]
    idx = list(range(min(int(n_queries), len(test))))
    g = embed(
        {"ground": encoder.encode_ground},
        Subset(test, idx),
        batch_size=batch_size,
        prepare=prepare,
        device=device,
        desc="embed ground",
    )[0]["ground"]
    similarity = model_similarity(model)
    sim = similarity(g, a).float() if similarity is not None else g @ a.T
    scores, top = sim.topk(min(int(k), a.shape[0]), dim=1)
    ids = getattr(test, "ids", None)
    query_ids = [str(ids[i]) for i in idx] if ids is not None else [str(test[i]["id"]) for i in idx]
    return {
        "query_index": idx,
        "query_id": query_ids,
        "true_index": list(idx),
        "top_index": top.cpu().tolist(),
        "top_score": [[round(float(v), 4) for v in row] for row in scores.cpu().tolist()],
        "k": int(k),
        "n_reference": int(a.shape[0]),
        "rule": f"the first {len(idx)} test queries, orientation known",
    }


def _write_examples(run: TrainedRun, test: Any, cfg: RunConfig) -> None:
    """``<run folder>/examples.json`` (:func:`retrieval_examples` plus the checkpoint); never fails
    the run (a failure is logged)."""
    if cfg.dataset == "vigor":  # VIGOR's references are a gallery of their own, not test[i]["aerial"]
        return
    try:
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        ex = retrieval_examples(run.model, run.recipe, test, device=device)
        ex.update(
            {
                "recipe": run.recipe.name,
                "variant": run.recipe.variant,
                "checkpoint": run.checkpoint,
                "split": cfg.test_split,
            }
        )
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
