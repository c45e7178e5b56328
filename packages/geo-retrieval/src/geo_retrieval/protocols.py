"""The interfaces the trainer, the evaluation and the search call on models and datasets.

Convention:
    structural (``typing.Protocol``, ``runtime_checkable``): a class conforms by having the methods,
    no base class needed, so ``isinstance(obj, CrossViewEncoder)`` checks that the names exist (not
    their signatures or shapes; those are stated here and checked by each implementation).

    - :class:`CrossViewEncoder`: ``encode_ground`` (B, 3, H, W) -> (B, D), ``encode_aerial``
      (B, 3, h, w) -> (B, D) (descriptors L2-normalised, or the layout ``similarity`` expects, e.g.
      DSM's flattened feature maps), ``similarity`` (Bg, D), (Ba, D) -> (Bg, Ba), larger = more
      similar. :class:`~geo_retrieval.model.CrossViewModel`, the geo-synthesis models and
      geo-bench's no-learning baseline conform. The trainer's default step also calls
      ``model(ground, aerial) -> (g, a)``, which every ``nn.Module`` encoder defines as ``forward``.
    - :class:`CustomStepModel`: a model with its own ``training_step(batch, trainer) -> dict``
      (``"loss"``: a scalar tensor the trainer back-propagates, unless the model also
      :class:`ConfiguresOptimizers`, in which case the step does its own backward passes and calls
      ``trainer.optimizer_step(name)`` per optimiser; other entries are logged).
    - :class:`ConfiguresOptimizers`: ``configure_optimizers(recipe) -> {name: Optimizer}`` (GANs).
    - :class:`PairDataset`: ``len(ds)`` and ``ds[i] -> {"ground": (3, H, W), "aerial": (3, h, w),
      "id": str, ...}`` (optional ``"utm"`` (2,), ``"latlon"`` (2,), ...; see the design notes); a
      ``split`` attribute names the split when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .recipes import Recipe

__all__ = ["ConfiguresOptimizers", "CrossViewEncoder", "CustomStepModel", "EvaluatesItself", "PairDataset"]


@runtime_checkable
class CrossViewEncoder(Protocol):
    """Embeds ground and aerial views into one descriptor space and scores pairs (see module)."""

    def encode_ground(self, ground: Tensor) -> Tensor:
        """(B, 3, H, W) ground panoramas (or FoV crops) -> (B, D) descriptors."""
        ...

    def encode_aerial(self, aerial: Tensor) -> Tensor:
        """(B, 3, h, w) aerial images (polar or not, as the recipe says) -> (B, D) descriptors."""
        ...

    def similarity(self, ground_desc: Tensor, aerial_desc: Tensor) -> Tensor:
        """(Bg, D), (Ba, D) -> (Bg, Ba) similarity, larger = more similar."""
        ...


@runtime_checkable
class CustomStepModel(Protocol):
    """A model that defines its own training step (the trainer calls it instead of its default)."""

    def training_step(self, batch: Mapping[str, Any], trainer: Any) -> dict[str, Tensor]:
        """One step on a preprocessed, augmented batch on the device; returns ``{"loss": scalar, ...}``."""
        ...


@runtime_checkable
class ConfiguresOptimizers(Protocol):
    """A model that builds its own optimisers (one per sub-network; the trainer owns the schedulers)."""

    def configure_optimizers(self, recipe: Recipe) -> dict[str, torch.optim.Optimizer]:
        """``{name: optimiser}`` built from the recipe's optimiser settings."""
        ...


@runtime_checkable
class EvaluatesItself(Protocol):
    """A model whose held-out evaluation is not retrieval recall (a pose model): the trainer calls
    ``evaluate_dataset`` for validation and keeps the best ``selection_metric`` in the direction
    ``selection_mode`` (``"max"`` or ``"min"``)."""

    selection_metric: str
    selection_mode: str

    def evaluate_dataset(self, dataset: Any, trainer: Any) -> dict[str, Any]:
        """Metrics of ``dataset`` (a held-out split), including ``selection_metric``."""
        ...


@runtime_checkable
class PairDataset(Protocol):
    """A map-style dataset of paired samples (see module)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        """Sample ``index``: ``{"ground", "aerial", "id", ...}``."""
        ...
