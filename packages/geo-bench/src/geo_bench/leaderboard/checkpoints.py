"""Which weights and which recipe a ``--checkpoint`` path names (``geo-bench evaluate``, ``index``).

Convention: a checkpoint path is a run folder written by ``geo-bench train`` (its ``best/`` weights,
else ``last/``; layout: :mod:`geo_retrieval.run_folder`), a ``best/`` or ``last/`` folder, or a
weights file. The recipe is the one given, else the run's ``recipe.json``, else the safetensors
metadata. Loading the weights into a model is :func:`geo_retrieval.checkpoint.load_model_weights`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geo_retrieval.checkpoint import atomic_write_bytes, read_metadata
from geo_retrieval.run_folder import RunLayout, locate_weights

__all__ = ["RunFolder", "read_run_json", "resolve_run", "write_run_json"]


@dataclass(frozen=True)
class RunFolder:
    """What a checkpoint path names: the weights file, its run folder, the recipe and the run's
    ``run.json`` (empty when absent). See :func:`resolve_run`."""

    weights: Path
    run_dir: Path
    recipe: str
    variant: str
    info: dict[str, Any]


def write_run_json(path: str | Path, info: dict[str, Any]) -> None:
    """Write a run folder's ``run.json`` (the run's summary: recipe, seed, data, steps, selection,
    checkpoint) atomically, as :func:`read_run_json` reads it."""
    atomic_write_bytes(path, (json.dumps(info, indent=1) + "\n").encode())


def read_run_json(path: str | Path) -> dict[str, Any]:
    """A JSON object file of a run folder (``run.json``, ``recipe.json``); a corrupt one is named
    with what was expected."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); it was written by `geo-bench train`: restore it, "
            "or pass --recipe NAME --variant small|full and --seed N instead"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def resolve_run(
    checkpoint: str | Path, *, recipe: str | None = None, variant: str | None = None
) -> RunFolder:
    """Find the weights of ``checkpoint`` (a run folder written by ``geo-bench train``, whose
    ``best/`` weights are used, else ``last/``; a ``best/`` or ``last/`` folder; or a weights file)
    and tell its recipe: ``recipe`` / ``variant`` when given, else the run's ``recipe.json``, else
    the safetensors metadata. Nothing is loaded into a model yet.

    Raises:
        FileNotFoundError: nothing there, or no weights in the folder.
        ValueError: the recipe cannot be told, or a corrupt ``recipe.json`` / ``run.json``.
    """
    weights, run_dir = locate_weights(checkpoint)
    layout = RunLayout(run_dir)
    if not (recipe and variant):
        meta: dict[str, Any] = {}
        if layout.recipe_json.is_file():
            d = read_run_json(layout.recipe_json)
            meta = {"recipe": d.get("name"), "variant": d.get("variant")}
        elif weights.suffix == ".safetensors":
            meta = dict(read_metadata(weights))
        recipe, variant = recipe or meta.get("recipe"), variant or meta.get("variant")
        if not recipe or not variant:
            raise ValueError(f"cannot tell the recipe of {weights}; pass --recipe NAME --variant small|full")
    info = read_run_json(layout.run_json) if layout.run_json.is_file() else {}
    return RunFolder(weights, run_dir, str(recipe), str(variant), info)
