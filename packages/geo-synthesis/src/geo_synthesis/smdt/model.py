"""SMDT end to end: GAN cascade + L2LTR-style transformer retrieval on the synthesised images.

Convention:
    - ``encode_ground(ground)``: (B, 3, H, W) panorama (the recipe's ``ground_size``, normalised
      to [-1, 1]) -> resized to ``retrieval_ground_size`` -> retrieval ground branch -> (B, D).
    - ``encode_aerial(aerial)``: (B, 3, S, S) north-up aerial in [-1, 1] -> mixed perspective-polar
      mapping -> G1 -> G2 -> I_g' (B, 3, H, W) -> resized to ``retrieval_aerial_size`` ->
      retrieval aerial branch -> (B, D). The synthesised image replaces L2LTR's polar aerial (how
      SMDT fed its transformer is *unverified*).
    - ``similarity(g, a)`` -> (Bg, Ba) cosine similarities; ``forward(ground, aerial) -> (g, a)``.
    - ``configure_optimizers(recipe)`` -> ``{"generators": Adam, "discriminators": Adam,
      "retrieval": the recipe's optimiser}``. GANs: Adam ``gan_lr`` (2e-4), betas (0.5, 0.999)
      (PanoGAN). The trainer applies the recipe's lr schedule and gradient clipping to all three.
    - ``training_step(batch, trainer)``, one call per batch:

      1. labels: ``batch["ground_seg"]`` grouped with ``grouping`` (nearest-resized to the GAN
         size); when the batch has none, the frozen segmentation network's predictions (it must
         have been loaded from ``segmenter_weights`` or :meth:`SMDTModel.load_segmenter`; else a
         ``RuntimeError``). Predicted labels are logged once (``logging``) as such.
      2. D step: D1 + D2 loss on **detached** fakes; step ``"discriminators"``.
      3. G + retrieval step, one backward with D1/D2 frozen: the G loss (adversarial + 100 L1 per
         branch) plus the retrieval loss (soft-margin triplet, alpha 10) of ``encode_ground(ground')``
         against the retrieval aerial branch on I_g'. By default I_g' is **detached** there: the
         retrieval loss trains only the transformer (a two-stage pipeline as in SMDT's figure; the
         paper does not say whether gradients flowed). ``retrieval_grad_to_gan=True`` lets them
         reach G2 (and G1) scaled by ``retrieval_grad_weight``. Steps ``"generators"`` and
         ``"retrieval"``. ``ground'`` is the panorama after the keep/remove semantic augmentation
         (``semantic_augment``, drawn from a generator seeded by ``(trainer.seed, global_step)``).

      ``gan_epochs`` (train the GAN only in epochs ``< gan_epochs``; None = always) and
      ``retrieval_start_epoch`` (train retrieval from that epoch) give a staged schedule. In the
      epochs after ``gan_epochs`` the generators are frozen, so each training sample's I_g' is
      synthesised once and then served from a :class:`~.synthesis_cache.SynthesisCache` (keyed by
      ``batch["id"]``, checked against the exact aerial input, bounded by ``synthesis_cache_mb``):
      the same images as running the frozen cascade again, without its forward pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geo_retrieval.checkpoint import load_weights
from geo_retrieval.config import OptimizerConfig
from geo_retrieval.model import CrossViewModel
from geo_retrieval.recipes import Recipe
from geo_retrieval.training import build_optimizer

from .augment import SemanticAugment, semantic_augment
from .cascade import CascadeConfig, SMDTCascade
from .segmentation import ClassGrouping, SegmentationUNet, prepare_labels, world_grouping
from .synthesis_cache import SynthesisCache

__all__ = ["SMDTConfig", "SMDTModel", "scale_gradient"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SMDTConfig:
    """SMDT's own options (the retrieval backbone / head / loss / optimiser live in the recipe).

    Attributes:
        cascade: the GAN cascade.
        retrieval_ground_size, retrieval_aerial_size: (H, W) inputs of the transformer branches.
        grouping: dataset classes -> SMDT groups (applied to ``batch["ground_seg"]``).
        gan_lr, gan_betas: Adam of the generators and of the discriminators.
        retrieval_grad_to_gan: let the retrieval loss reach the generators.
        retrieval_grad_weight: scale of that gradient.
        gan_epochs: train the GAN only in epochs ``< gan_epochs`` (None: every epoch).
        retrieval_start_epoch: first epoch that trains retrieval.
        semantic_aug: keep / remove augmentation of the retrieval ground panoramas.
        segmenter_width, segmenter_depth: the segmentation U-Net used when labels are missing.
        segmenter_weights: a ``.safetensors`` / ``.pt`` file of that network (strict load).
    """

    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    retrieval_ground_size: tuple[int, int] = (128, 512)
    retrieval_aerial_size: tuple[int, int] = (128, 512)
    grouping: ClassGrouping = field(default_factory=world_grouping)
    gan_lr: float = 2e-4
    gan_betas: tuple[float, float] = (0.5, 0.999)
    retrieval_grad_to_gan: bool = False
    retrieval_grad_weight: float = 1.0
    gan_epochs: int | None = None
    retrieval_start_epoch: int = 0
    semantic_aug: SemanticAugment = field(default_factory=SemanticAugment)
    segmenter_width: int = 32
    segmenter_depth: int = 3
    segmenter_weights: str | None = None

    def __post_init__(self) -> None:
        if self.grouping.num_groups != self.cascade.num_classes:
            raise ValueError(
                f"grouping has {self.grouping.num_groups} groups but cascade.num_classes = {self.cascade.num_classes}"
            )
        for name in ("retrieval_ground_size", "retrieval_aerial_size"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"{name} must be (H, W) of positive ints, got {size!r}")
        if self.retrieval_grad_weight < 0:
            raise ValueError(f"retrieval_grad_weight must be >= 0, got {self.retrieval_grad_weight}")


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.weight, None


def scale_gradient(x: Tensor, weight: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``weight`` in the backward pass."""
    return _ScaleGrad.apply(x, float(weight))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


class SMDTModel(nn.Module):
    """The SMDT model (see the module docstring for the conventions and the training step).

    Args:
        cascade: the GAN cascade (mapping, G1/G2, D1/D2).
        retrieval: a :class:`~geo_retrieval.model.CrossViewModel` (the ``l2ltr`` architecture)
            built for ``config.retrieval_*_size``.
        loss: retrieval loss on a (B, B) similarity (e.g. soft-margin triplet, alpha 10).
        config: :class:`SMDTConfig` (its ``cascade`` must be ``cascade.config``).
        segmenter: segmentation network for batches without ``ground_seg`` (frozen here);
            default a :class:`SegmentationUNet` of ``config.segmenter_width`` / ``_depth``.
        synthesis_cache_mb: memory bound of the frozen-GAN image cache (MiB; 0 disables it). The
            small recipe's 1,200 world samples take about 90 MiB (inputs and images).
    """

    def __init__(
        self,
        cascade: SMDTCascade,
        retrieval: CrossViewModel,
        loss: nn.Module,
        config: SMDTConfig | None = None,
        segmenter: SegmentationUNet | None = None,
        synthesis_cache_mb: float = 512.0,
    ) -> None:
        super().__init__()
        if synthesis_cache_mb < 0:
            raise ValueError(f"synthesis_cache_mb must be >= 0, got {synthesis_cache_mb}")
        config = config or SMDTConfig(cascade=cascade.config)
        if config.cascade != cascade.config:
            raise ValueError("config.cascade must equal the cascade's config")
        self.config = config
        self.cascade = cascade
        self.retrieval = retrieval
        self.loss = loss
        k = cascade.config.num_classes
        self.segmenter = segmenter or SegmentationUNet(
            k, width=config.segmenter_width, depth=config.segmenter_depth
        )
        if self.segmenter.num_classes != k:
            raise ValueError(f"segmenter predicts {self.segmenter.num_classes} classes, the cascade {k}")
        self.segmenter.requires_grad_(False)
        # persistent: a checkpoint remembers whether the segmenter holds trained weights
        self.segmenter_ready: Tensor
        self.register_buffer("segmenter_ready", torch.tensor(False))
        self._warned_predicted = False
        self.synthesis_cache = SynthesisCache(int(synthesis_cache_mb * 2**20))
        if config.segmenter_weights:
            self.load_segmenter(config.segmenter_weights)

    # -- segmentation ----------------------------------------------------------------------------
    def load_segmenter(self, weights: str | os.PathLike[str] | Mapping[str, Tensor]) -> None:
        """Load the segmentation network's weights (a file or a state dict; strict)."""
        if not isinstance(weights, Mapping):
            weights = load_weights(weights)
        self.segmenter.load_state_dict(weights, strict=True)
        self.segmenter_ready.fill_(True)

    def ground_labels(self, batch: Mapping[str, Any]) -> Tensor:
        """(B, H, W) group labels at the GAN size: the batch's ``ground_seg`` (grouped) or, when
        absent, the frozen segmenter's predictions on ``batch["ground"]``."""
        size = self.cascade.config.gan_size
        seg = batch.get("ground_seg")
        if seg is not None:
            return prepare_labels(seg.to(batch["ground"].device), size, self.config.grouping)
        if not bool(self.segmenter_ready):
            raise RuntimeError(
                "the batch has no 'ground_seg' and the segmentation network has no trained weights: "
                "set SMDTConfig.segmenter_weights or call SMDTModel.load_segmenter(...)"
            )
        if not self._warned_predicted:
            logger.warning(
                "SMDT: batch has no 'ground_seg'; using the segmentation network's predictions as labels"
            )
            self._warned_predicted = True
        return prepare_labels(self.segmenter.predict(batch["ground"]), size)

    # -- retrieval interface ---------------------------------------------------------------------
    def synthesise(self, aerial: Tensor) -> Tensor:
        """(B, 3, S, S) aerial in [-1, 1] -> I_g' (B, 3, H, W) in [-1, 1] (what
        :class:`~geo_synthesis.callbacks.SynthesisGridCallback` draws); ``self.cascade.synthesise``
        returns all outputs (:class:`~geo_synthesis.smdt.cascade.SynthesisOutput`)."""
        return self.cascade(aerial)

    def encode_ground(self, ground: Tensor) -> Tensor:
        """(B, 3, H, W) ground panoramas -> (B, D) unit descriptors."""
        return self.retrieval.encode_ground(_resize(ground, self.config.retrieval_ground_size))

    def encode_synthesised(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) synthesised ground-style images -> (B, D) unit descriptors."""
        return self.retrieval.encode_aerial(_resize(image, self.config.retrieval_aerial_size))

    def encode_aerial(self, aerial: Tensor) -> Tensor:
        """(B, 3, S, S) aerial images -> mapping -> G1 -> G2 -> (B, D) unit descriptors."""
        return self.encode_synthesised(self.cascade(aerial))

    def similarity(self, ground_desc: Tensor, aerial_desc: Tensor) -> Tensor:
        """(Bg, D), (Ba, D) -> (Bg, Ba)."""
        return self.retrieval.similarity(ground_desc, aerial_desc)

    def forward(self, ground: Tensor, aerial: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_ground(ground), self.encode_aerial(aerial)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict``; new weights invalidate the frozen-GAN image cache."""
        self.synthesis_cache.clear()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- training --------------------------------------------------------------------------------
    def configure_optimizers(self, recipe: Recipe) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        adam = OptimizerConfig("adam", lr=cfg.gan_lr, betas=cfg.gan_betas, weight_decay=0.0, eps=1e-8)
        return {
            "generators": build_optimizer(self.cascade.generator_parameters(), adam),
            "discriminators": build_optimizer(self.cascade.discriminator_parameters(), adam),
            "retrieval": build_optimizer(
                [p for p in self.retrieval.parameters() if p.requires_grad], recipe.optimizer
            ),
        }

    def training_step(self, batch: Mapping[str, Any], trainer: Any) -> dict[str, Tensor]:
        cfg = self.config
        ground, aerial = batch["ground"], batch["aerial"]
        epoch = int(trainer.epoch)
        train_gan = cfg.gan_epochs is None or epoch < cfg.gan_epochs
        train_retrieval = epoch >= cfg.retrieval_start_epoch
        flow = cfg.retrieval_grad_to_gan and train_gan  # gradients into G only while G is stepped
        cascade = self.cascade
        labels = self.ground_labels(batch)
        logs: dict[str, Tensor] = {}

        ids = _sample_ids(batch)
        if train_gan:
            self.synthesis_cache.clear()  # the generators change with this step
            cached = None
        else:
            cached = self.synthesis_cache.lookup(ids, aerial)
        if cached is None:
            with trainer.autocast():
                mapped = cascade.map_aerial(aerial)
                with torch.set_grad_enabled(train_gan):
                    out = cascade.generate(mapped)
            fake = out.image
            if not train_gan:
                self.synthesis_cache.store(ids, aerial, fake)
        else:
            fake = cached
        if train_gan:
            gan_ground = _resize(ground, cascade.config.gan_size)
            with trainer.autocast():
                loss_d, d_logs = cascade.discriminator_loss(mapped, out, labels, gan_ground)
            trainer.backward(loss_d)
            trainer.optimizer_step("discriminators")
            logs.update(d_logs)

        total: Tensor | None = None
        cascade.set_discriminators_trainable(False)
        try:
            if train_gan:
                with trainer.autocast():
                    loss_g, g_logs = cascade.generator_loss(mapped, out, labels, gan_ground)
                total = loss_g
                logs.update(g_logs)
            if train_retrieval:
                set_epoch = getattr(self.loss, "set_epoch", None)
                if set_epoch is not None:
                    set_epoch(epoch)
                if flow:
                    fake = scale_gradient(fake, cfg.retrieval_grad_weight)
                else:
                    fake = fake.detach()
                ground_r = ground
                if cfg.semantic_aug.enabled:
                    gen = torch.Generator().manual_seed(
                        int(trainer.seed) * 1_000_033 + int(trainer.global_step)
                    )
                    ground_r, _ = semantic_augment(
                        ground, prepare_labels(labels, ground.shape[-2:]), cfg.semantic_aug, generator=gen
                    )
                with trainer.autocast():
                    g = self.encode_ground(ground_r)
                    a = self.encode_synthesised(fake)
                loss_r = self.loss(self.similarity(g.float(), a.float()))
                total = loss_r if total is None else total + loss_r
                logs["loss_retrieval"] = loss_r.detach()
            if total is not None:
                trainer.backward(total)
        finally:
            cascade.set_discriminators_trainable(True)
        if train_gan:
            trainer.optimizer_step("generators")
        if train_retrieval:
            trainer.optimizer_step("retrieval")
        if total is not None:
            logs["loss"] = total.detach()
        return logs


def _sample_ids(batch: Mapping[str, Any]) -> list[Any] | None:
    """The batch's per-sample ids as a list of hashable values (None when the batch has none)."""
    ids = batch.get("id")
    if ids is None:
        return None
    if isinstance(ids, Tensor):
        return [int(i) for i in ids.flatten().tolist()] if ids.ndim == 1 else None
    if isinstance(ids, (list, tuple)) and all(isinstance(i, (str, int)) for i in ids):
        return list(ids)
    return None
