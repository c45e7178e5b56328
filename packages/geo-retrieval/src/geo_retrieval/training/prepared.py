"""A dataset whose samples went through the batch transform's deterministic steps once.

Convention:
    :class:`PreparedPairs` wraps a pair dataset and a :class:`~.augment.BatchTransform`. The first
    time sample ``i`` is read, its panorama and aerial go through :meth:`BatchTransform.prepare`
    (conversion to [0, 1], resize, polar transform: a batch of one, the same arithmetic as in a
    batch); the result is kept in memory and every later read returns it (a shallow copy of the
    sample dict with ``PREPARED`` set). The transform then starts from the random steps, so a
    training run reads the same values as one that prepares every batch again (a test trains both
    and compares the weights).

    Only for transforms with :attr:`~.augment.BatchTransform.prepares_once` and datasets small
    enough to keep: :func:`prepared_size` is the memory it will hold, and the trainer uses it only
    on the CPU, when that stays under its ``prepare_inputs_mb`` and the loader runs in this process
    (``num_workers=0``: a worker's memory would be lost each epoch).

Shapes: ``"ground"`` (3, H, W) at the transform's ``ground_size``, ``"aerial"`` (3, h, w) at its
``aerial_size``, float32 in [0, 1]; the other keys of a sample are passed through.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from .augment import PREPARED, BatchTransform

__all__ = ["PreparedPairs", "prepared_size"]


def prepared_size(transform: BatchTransform, n: int) -> int:
    """Bytes that ``n`` prepared samples of ``transform`` hold (float32 panorama and aerial)."""
    (gh, gw), (ah, aw) = transform.ground_size, transform.aerial_size
    return int(n) * 3 * (gh * gw + ah * aw) * 4


class PreparedPairs(Dataset):
    """``dataset`` with each sample prepared once by ``transform`` and kept (see the module docstring).

    Args:
        dataset: a map-style pair dataset of sample dicts with ``"ground"`` (3, H, W) and
            ``"aerial"`` (3, S, S) or a polar aerial, uint8 or float in [0, 1].
        transform: its :class:`BatchTransform`.
        training: the samples feed training batches (``transform.prepares_once`` must hold);
            False for evaluation, which never flips or turns.

    Raises:
        ValueError: for training, the transform flips or turns pairs before those steps.
    """

    def __init__(self, dataset: Any, transform: BatchTransform, *, training: bool = True) -> None:
        if training and not transform.prepares_once:
            raise ValueError(
                "the transform flips / turns pairs before resizing them (augmentation.hflip_p or rot90_p "
                "> 0): its inputs cannot be prepared once"
            )
        self.dataset = dataset
        self.transform = transform
        self._prepared: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        # split, ids, utm...: the wrapped dataset's attributes
        if name in ("dataset", "transform", "_prepared"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        key = int(index)
        if key not in self._prepared:
            batch = {"ground": sample["ground"][None], "aerial": sample["aerial"][None]}
            done = self.transform.prepare(batch)
            self._prepared[key] = (done["ground"][0], done["aerial"][0])
        sample["ground"], sample["aerial"] = self._prepared[key]
        sample[PREPARED] = True
        return sample
