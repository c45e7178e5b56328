"""Test doubles for code built on geo-retrieval (not part of the library's namespace).

Tiny stand-ins for tests of training code: a two-conv cross-view model, a loss with its own
learnable parameter, a CPU-sized recipe, and :class:`SyntheticPairs`, a learnable toy pair dataset
(:mod:`geo_retrieval.testing.synthetic`). Each trains for a few steps in well under a second on one
CPU thread; use them to test trainers, callbacks and checkpoints, not to measure recall.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Augmentation, GradClip, OptimizerConfig, ScheduleConfig
from ..recipes import Recipe
from ..training.splits import split_holdout
from .synthetic import SyntheticPairs

__all__ = ["ScaledInfoNCE", "SyntheticPairs", "TinyCrossView", "assert_same_run", "tiny_pairs", "tiny_recipe"]


class TinyCrossView(nn.Module):
    """Two separate [conv s2 -> ReLU -> dropout -> conv s2 -> global mean] encoders, cosine similarity.

    Args:
        dim: descriptor size.
        dropout: dropout after the first conv (> 0 makes the RNG state matter, as resume tests
            need; 0 for runs that must agree across DDP ranks).

    Shapes: encode_ground / encode_aerial (B, 3, H, W) -> (B, dim), L2-normalised;
    similarity (Bg, dim), (Ba, dim) -> (Bg, Ba).
    """

    def __init__(self, dim: int = 16, dropout: float = 0.1) -> None:
        super().__init__()

        def enc() -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Conv2d(8, dim, 3, stride=2, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )

        self.g, self.a = enc(), enc()

    def encode_ground(self, x: Tensor) -> Tensor:
        return F.normalize(self.g(x), dim=-1)

    def encode_aerial(self, x: Tensor) -> Tensor:
        return F.normalize(self.a(x), dim=-1)

    def forward(self, ground: Tensor, aerial: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_ground(ground), self.encode_aerial(aerial)

    def similarity(self, g: Tensor, a: Tensor) -> Tensor:
        return g @ a.T


class ScaledInfoNCE(nn.Module):
    """Symmetric InfoNCE with a learnable log logit scale (init 2.3), so the loss has state a
    checkpoint must carry. Shapes: (B, B) similarity -> scalar."""

    def __init__(self, init: float = 2.3) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, sim: Tensor) -> Tensor:
        logits = self.logit_scale.exp() * sim
        labels = torch.arange(sim.shape[0], device=sim.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def tiny_recipe(**changes: Any) -> Recipe:
    """A CPU-sized recipe for :class:`TinyCrossView` on 16x64 panoramas and 16x64 polar aerials
    (``polar_center="pixel"``): AdamW 3e-3, cosine with 2 warm-up steps, 2 epochs of batch 8,
    clip norm 1, flips / rot90 / colour jitter; ``changes`` are applied with :meth:`Recipe.replace`."""
    base = Recipe(
        name="tiny",
        variant="small",
        backbone="-",
        head="-",
        loss="infonce",
        ground_size=(16, 64),
        aerial_size=(16, 64),
        polar=True,
        polar_center="pixel",
        source="test",
        note="CPU-sized test recipe",
        optimizer=OptimizerConfig("adamw", lr=3e-3),
        schedule=ScheduleConfig("cosine", warmup_steps=2),
        epochs=2,
        batch_size=8,
        grad_clip=GradClip("norm", 1.0),
        augmentation=Augmentation(hflip_p=0.5, rot90_p=0.5, color_jitter=0.2, color_jitter_p=0.5),
    )
    return base.replace(**changes)


def tiny_pairs(n: int = 40, seed: int = 2) -> tuple[Any, Any]:
    """``(train, val)``: ``n`` synthetic pairs (aerial 32x32, ground 16x64) with a seeded 20 %
    held-out slice, the data of the resume and fault-injection tests."""
    return split_holdout(
        SyntheticPairs(n, aerial_size=32, ground_size=(16, 64), seed=seed), fraction=0.2, seed=0
    )


def assert_same_run(resumed: Any, result: Any, reference: tuple[Any, Any]) -> None:
    """Assert that a resumed run ended bit for bit where the uninterrupted ``reference`` =
    ``(trainer, TrainResult)`` did: every weight, the loss's own parameter, the history, the
    selection and the step count."""
    ref_trainer, ref_result = reference
    ref_state, state = ref_trainer.raw_model.state_dict(), resumed.raw_model.state_dict()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        assert torch.equal(ref_state[k], state[k]), k
    assert torch.equal(ref_trainer.loss_fn.logit_scale, resumed.loss_fn.logit_scale)
    assert result.history == ref_result.history
    assert (result.best_metric, result.best_epoch, result.global_step) == (
        ref_result.best_metric,
        ref_result.best_epoch,
        ref_result.global_step,
    )
