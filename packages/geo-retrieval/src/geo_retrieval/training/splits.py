"""Held-out validation slices of a *training* split, fixed by a seeded id list.

Convention:
    CVUSA and CVACT have no validation split, so model selection uses a seeded slice of train
    (``docs/protocols.md#model-selection``): ``holdout_ids`` sorts the ids, permutes them with numpy PCG64
    seeded by ``seed``, and keeps the first ``round(fraction * N)`` (at least 1), returned sorted.
    The list can be committed (``save_id_list``) and reloaded, so the slice never drifts. The
    resulting subsets carry ``split`` names (``"train-holdout"`` by default) that the trainer
    records as ``selection_split``; a split named ``"test"`` is refused by the trainer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = ["IdSubset", "dataset_ids", "holdout_ids", "load_id_list", "save_id_list", "split_holdout"]


class IdSubset(Subset):
    """A :class:`~torch.utils.data.Subset` that knows its sample ids and its split name."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], ids: Sequence[str], split: str) -> None:
        super().__init__(dataset, list(indices))
        self.ids = [str(i) for i in ids]
        self.split = split
        # forward per-sample coordinate tables, so GPS sampling need not read every sample
        for key in ("utm", "latlon"):
            table = getattr(dataset, key, None)
            if table is not None:
                setattr(self, key, torch.as_tensor(table)[torch.as_tensor(self.indices, dtype=torch.long)])


def dataset_ids(dataset: Dataset) -> list[str]:
    """The sample ids of ``dataset`` in order: its ``ids`` attribute, else read from every sample."""
    ids = getattr(dataset, "ids", None)
    if ids is not None:
        return [str(i) for i in ids]
    return [str(dataset[i]["id"]) for i in range(len(dataset))]  # type: ignore[arg-type]


def holdout_ids(ids: Iterable[str], fraction: float = 0.1, seed: int = 0) -> list[str]:
    """A fixed, seeded selection of ``fraction`` of ``ids`` (sorted; depends only on the id set).

    Example:
        >>> holdout_ids([str(i) for i in range(20)], 0.1, seed=0) == holdout_ids([str(i) for i in range(19, -1, -1)], 0.1, seed=0)
        True
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    unique = sorted({str(i) for i in ids})
    if len(unique) < 2:
        raise ValueError(f"need at least 2 distinct ids to hold some out, got {len(unique)}")
    n_val = min(max(1, round(fraction * len(unique))), len(unique) - 1)
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(len(unique))
    return sorted(unique[i] for i in perm[:n_val])


def split_holdout(
    dataset: Dataset,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    val_ids: Sequence[str] | None = None,
    name: str = "train-holdout",
) -> tuple[IdSubset, IdSubset]:
    """Split a training dataset into (train, held-out val) by a seeded or given id list.

    Args:
        dataset: a *training* split; its ``split`` attribute, if any, must not be ``"test"``.
        fraction: share held out when ``val_ids`` is not given.
        seed: seed of :func:`holdout_ids`.
        val_ids: explicit id list (e.g. loaded with :func:`load_id_list`); every id must exist.
        name: the split name of the held-out part, recorded as ``selection_split``.

    Returns:
        ``(train, val)`` :class:`IdSubset` objects; all samples sharing a held-out id go to val.
    """
    if str(getattr(dataset, "split", "")).lower() == "test":
        raise ValueError("refusing to carve a validation slice out of a 'test' split; use the train split")
    ids = dataset_ids(dataset)
    chosen = set(holdout_ids(ids, fraction, seed) if val_ids is None else (str(i) for i in val_ids))
    unknown = chosen - set(ids)
    if unknown:
        raise ValueError(f"{len(unknown)} val ids are not in the dataset, e.g. {sorted(unknown)[:3]}")
    train_idx = [i for i, s in enumerate(ids) if s not in chosen]
    val_idx = [i for i, s in enumerate(ids) if s in chosen]
    train = IdSubset(dataset, train_idx, [ids[i] for i in train_idx], split="train")
    val = IdSubset(dataset, val_idx, [ids[i] for i in val_idx], split=name)
    return train, val


def save_id_list(path: str | os.PathLike[str], ids: Sequence[str], *, seed: int | None = None) -> None:
    """Write an id list as JSON (``{"ids": [...], "seed": ...}``) for committing next to a recipe."""
    Path(path).write_text(json.dumps({"ids": [str(i) for i in ids], "seed": seed}, indent=1) + "\n")


def load_id_list(path: str | os.PathLike[str]) -> list[str]:
    """Read an id list written by :func:`save_id_list`."""
    return [str(i) for i in json.loads(Path(path).read_text())["ids"]]
