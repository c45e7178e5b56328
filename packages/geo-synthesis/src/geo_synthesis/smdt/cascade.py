"""SMDT's dual conditional GAN cascade (our design from Fig. 4 of Tian et al., ICME'22; never released).

Convention:
    aerial (B, 3, S, S), north up, normalised to [-1, 1] (mean = std = 0.5) ->
    ``I_a = mixed_perspective_polar(aerial, gan_size, **mixed)`` (B, 3, H, W) (geo-transforms; the
    parameters are recorded in :attr:`SMDTCascade.mixed_params`) ->

    - **G1**: I_a -> S_g' = K segmentation logits (B, K, H, W); ``softmax`` gives probabilities P';
    - **G2**: P' -> I_g' (B, 3, H, W), tanh, a ground-style image in [-1, 1]; with
      ``g2_input="seg+aerial"`` G2 sees ``concat(P', I_a)`` (B, K + 3, H, W), a two-stage
      semantic-guided design (SelectionGAN's second stage also sees the input image) that keeps the
      aerial's appearance, which the segmentation alone cannot carry;
    - **D1** judges ``(I_a, P')`` against ``(I_a, onehot(S_g))`` (``d1_fake_input="straight_through"``:
      the one-hot argmax of P' with P''s gradient, so D1 cannot win on sharpness alone);
    - **D2** judges ``(P', I_g')`` against ``(P', I_g)`` (the condition is G1's output, detached:
      D2 learns whether the image fits the segmentation, and G1 gets no gradient through D2's
      condition).

    ``architecture="single"`` is the PanoGAN-style variant: one U-Net (:class:`SMDTSingleGenerator`)
    gives I_g' and S_g' from I_a, and both discriminators are conditioned on I_a as in PanoGAN
    (D1 ``(I_a, P')``, D2 ``(I_a, I_g')``).

    Losses (parent code's defaults; SMDT's weights are *unverified*):

    - D: ``0.5 * [BCE(D(real), real_label) + BCE(D(fake.detach()), fake_label)]`` per
      discriminator, summed over D1 and D2; multi-scale outputs are averaged over scales
      (:class:`~geo_synthesis.gan_losses.GANLoss`, explicit float targets).
    - G: ``BCE(D1(I_a, P'), real) + BCE(D2(c, I_g'), real) + lambda_image * L1(I_g', I_g)
      + lambda_seg * L_seg``. ``seg_loss="l1"`` (default): L1 between P' and the one-hot labels,
      mirroring PanoGAN's L1 on its segmentation output with the same weight 100; ``"ce"``:
      cross-entropy of the logits (pixel-wise classification; use a smaller ``lambda_seg``).
      Pixels labelled ``IGNORE_INDEX`` are left out of both.
    - ``g2_grad_to_g1=True`` (default): the G2 losses back-propagate through P' into G1 (one
      cascade trained end to end); ``False`` feeds G2 a detached P' (two independent cGANs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geo_transforms import MixedParams, MixedPerspectivePolar

from ..discriminators import MultiScaleDiscriminator
from ..gan_losses import GANLoss
from .generators import SMDTSingleGenerator, UNetGenerator
from .segmentation import IGNORE_INDEX

__all__ = ["CascadeConfig", "SMDTCascade", "SynthesisOutput", "one_hot_labels"]

Architecture = Literal["cascade", "single"]


@dataclass(frozen=True)
class CascadeConfig:
    """Configuration of :class:`SMDTCascade` (defaults: PanoGAN's sizes, ``docs/methods.md#the-panogan-code-smdt-ships``).

    Attributes:
        num_classes: K segmentation groups.
        gan_size: (H, W) of the mapped aerial, the segmentation and the synthesised image.
        mixed: the mixed perspective-polar mapping's parameters.
        architecture: ``"cascade"`` (G1 -> G2) or ``"single"`` (PanoGAN-style, 3 + K outputs).
        ngf, num_downs, n_blocks, max_channels: :class:`UNetGenerator` sizes (each generator).
        ndf, d_layers, d_scales, d_spectral_norm: :class:`MultiScaleDiscriminator` sizes (each D).
        gan_loss: ``"bce"``, ``"lsgan"`` or ``"hinge"``; real_label, fake_label: explicit targets.
        lambda_image, lambda_seg: weights of the image L1 and of the segmentation loss.
        seg_loss: ``"l1"`` (probabilities vs one-hot) or ``"ce"`` (cross-entropy of logits).
        g2_grad_to_g1: let the G2 losses reach G1 through P' (cascade only).
        g2_input: what G2 sees: ``"seg"`` (P' only, the figure's reading) or ``"seg+aerial"``
            (P' and I_a concatenated; cascade only).
        d1_fake_input: what D1 sees of the fake segmentation: ``"prob"`` (P', default) or
            ``"straight_through"`` (the one-hot argmax of P' in the forward pass, P''s gradient in the
            backward pass), so D1 cannot tell real from fake by sharpness alone.
        padding_mode: generator conv padding.
    """

    num_classes: int = 6
    gan_size: tuple[int, int] = (256, 1024)
    mixed: MixedParams = field(default_factory=MixedParams)
    architecture: Architecture = "cascade"
    ngf: int = 64
    num_downs: int = 4
    n_blocks: int = 9
    max_channels: int = 512
    ndf: int = 64
    d_layers: int = 3
    d_scales: int = 3
    d_spectral_norm: bool = True
    gan_loss: str = "bce"
    real_label: float = 1.0
    fake_label: float = 0.0
    lambda_image: float = 100.0
    lambda_seg: float = 100.0
    seg_loss: Literal["l1", "ce"] = "l1"
    g2_grad_to_g1: bool = True
    g2_input: Literal["seg", "seg+aerial"] = "seg"
    d1_fake_input: Literal["prob", "straight_through"] = "prob"
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        if self.architecture not in ("cascade", "single"):
            raise ValueError(f"architecture must be 'cascade' or 'single', got {self.architecture!r}")
        if self.d1_fake_input not in ("prob", "straight_through"):
            raise ValueError(
                f"d1_fake_input must be 'prob' or 'straight_through', got {self.d1_fake_input!r}"
            )
        if self.g2_input not in ("seg", "seg+aerial"):
            raise ValueError(f"g2_input must be 'seg' or 'seg+aerial', got {self.g2_input!r}")
        if self.seg_loss not in ("l1", "ce"):
            raise ValueError(f"seg_loss must be 'l1' or 'ce', got {self.seg_loss!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.gan_size) != 2 or min(self.gan_size) < 1:
            raise ValueError(f"gan_size must be (H, W) of positive ints, got {self.gan_size!r}")
        factor = 2**self.num_downs
        if self.gan_size[0] % factor or self.gan_size[1] % factor:
            raise ValueError(f"gan_size {self.gan_size} must be divisible by 2**num_downs = {factor}")
        if not isinstance(self.mixed, MixedParams) or not self.mixed.is_static:
            raise TypeError("mixed must be a MixedParams of plain numbers")
        object.__setattr__(self, "gan_size", tuple(int(s) for s in self.gan_size))


@dataclass
class SynthesisOutput:
    """The cascade's outputs for a batch.

    Attributes:
        seg_logits: (B, K, H, W) G1 logits S_g'.
        seg_prob: (B, K, H, W) ``softmax(seg_logits)``, what D1 and G2 see.
        image: (B, 3, H, W) I_g' in [-1, 1].
    """

    seg_logits: Tensor
    seg_prob: Tensor
    image: Tensor

    def detach(self) -> SynthesisOutput:
        return SynthesisOutput(self.seg_logits.detach(), self.seg_prob.detach(), self.image.detach())


def one_hot_labels(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, H, W) int64 labels -> (B, K, H, W) one-hot; ``IGNORE_INDEX`` pixels are all zeros."""
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    valid = labels != IGNORE_INDEX
    out = F.one_hot(labels.clamp(min=0) * valid, num_classes).permute(0, 3, 1, 2).to(dtype)
    return out * valid[:, None].to(dtype)


class SMDTCascade(nn.Module):
    """Mixed mapping + G1/G2 (or the single generator) + D1/D2 and their losses (module docstring).

    Example:
        >>> cfg = CascadeConfig(num_classes=4, gan_size=(16, 64), ngf=8, num_downs=2, n_blocks=1, ndf=8,
        ...                     d_layers=2, d_scales=1)
        >>> out = SMDTCascade(cfg).synthesise(torch.rand(2, 3, 32, 32) * 2 - 1)
        >>> tuple(out.seg_prob.shape), tuple(out.image.shape)
        ((2, 4, 16, 64), (2, 3, 16, 64))
    """

    def __init__(self, config: CascadeConfig | None = None) -> None:
        super().__init__()
        cfg = config or CascadeConfig()
        self.config = cfg
        m = cfg.mixed
        self.mapping = MixedPerspectivePolar(
            cfg.gan_size,
            near_fraction=m.near_fraction,
            camera_height=m.camera_height,
            meters_per_pixel=m.meters_per_pixel,
            blend=m.blend,
            center=m.center,
        )
        k = cfg.num_classes
        unet: dict[str, Any] = {
            "ngf": cfg.ngf,
            "num_downs": cfg.num_downs,
            "n_blocks": cfg.n_blocks,
            "max_channels": cfg.max_channels,
            "padding_mode": cfg.padding_mode,
        }
        if cfg.architecture == "cascade":
            self.g1: nn.Module | None = UNetGenerator(3, k, out_activation="none", **unet)
            g2_in = k + 3 if cfg.g2_input == "seg+aerial" else k
            self.g2: nn.Module | None = UNetGenerator(g2_in, 3, out_activation="tanh", **unet)
            self.generator: nn.Module | None = None
            d2_channels = k + 3
        else:
            self.g1 = self.g2 = None
            self.generator = SMDTSingleGenerator(3, k, **unet)
            d2_channels = 3 + 3
        disc: dict[str, Any] = {
            "num_scales": cfg.d_scales,
            "base": cfg.ndf,
            "n_layers": cfg.d_layers,
            "spectral_norm": cfg.d_spectral_norm,
        }
        self.d1 = MultiScaleDiscriminator(3 + k, **disc)
        self.d2 = MultiScaleDiscriminator(d2_channels, **disc)
        self.gan_loss = GANLoss(cfg.gan_loss, real_label=cfg.real_label, fake_label=cfg.fake_label)

    # -- parameters ------------------------------------------------------------------------------
    @property
    def mixed_params(self) -> MixedParams:
        """The mixed perspective-polar mapping's parameters (record them with results)."""
        return self.mapping.params

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        gens = [self.generator] if self.generator is not None else [self.g1, self.g2]
        for g in gens:
            yield from g.parameters()  # type: ignore[union-attr]

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.d1.parameters()
        yield from self.d2.parameters()

    def set_discriminators_trainable(self, flag: bool) -> None:
        """``requires_grad`` of D1 and D2 (off during the generator step)."""
        for p in self.discriminator_parameters():
            p.requires_grad_(flag)

    # -- forward -------------------------------------------------------------------------------
    def map_aerial(self, aerial: Tensor) -> Tensor:
        """(B, 3, S, S) aerial -> I_a (B, 3, H, W) with the recorded mixed mapping."""
        return self.mapping(aerial)

    def generate(self, mapped: Tensor) -> SynthesisOutput:
        """I_a (B, 3, H, W) -> :class:`SynthesisOutput` (G1 -> softmax -> G2, or the single G)."""
        if tuple(mapped.shape[-2:]) != self.config.gan_size:
            raise ValueError(
                f"mapped aerial must be (B, 3, {self.config.gan_size}), got {tuple(mapped.shape)}"
            )
        if self.generator is not None:
            image, logits = self.generator(mapped)
            return SynthesisOutput(logits, logits.float().softmax(dim=1).to(logits.dtype), image)
        logits = self.g1(mapped)  # type: ignore[misc]
        prob = logits.float().softmax(dim=1).to(logits.dtype)
        g2_in = prob if self.config.g2_grad_to_g1 else prob.detach()
        if self.config.g2_input == "seg+aerial":
            g2_in = torch.cat([g2_in, mapped.to(g2_in.dtype)], dim=1)
        image = self.g2(g2_in)  # type: ignore[misc]
        return SynthesisOutput(logits, prob, image)

    def synthesise(self, aerial: Tensor) -> SynthesisOutput:
        """(B, 3, S, S) aerial -> :class:`SynthesisOutput` (mapping + generation)."""
        return self.generate(self.map_aerial(aerial))

    def forward(self, aerial: Tensor) -> Tensor:
        """(B, 3, S, S) aerial in [-1, 1] -> I_g' (B, 3, H, W) in [-1, 1]."""
        return self.synthesise(aerial).image

    # -- losses --------------------------------------------------------------------------------
    def _d1_fake(self, prob: Tensor) -> Tensor:
        if self.config.d1_fake_input == "prob":
            return prob
        hard = F.one_hot(prob.argmax(dim=1), prob.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
        if not prob.requires_grad:
            return hard
        return hard + prob - prob.detach()  # one-hot forward, the probabilities' gradient backward

    def _d2_condition(self, mapped: Tensor, out: SynthesisOutput) -> Tensor:
        return out.seg_prob.detach() if self.generator is None else mapped

    def discriminator_inputs(
        self, mapped: Tensor, out: SynthesisOutput, labels: Tensor, ground: Tensor
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """The (condition, image) pairs the discriminators judge, fakes detached:
        ``{"d1_real", "d1_fake", "d2_real", "d2_fake"}``."""
        fake = out.detach()
        real_seg = one_hot_labels(labels, self.config.num_classes, dtype=fake.seg_prob.dtype)
        cond2 = self._d2_condition(mapped, out)
        return {
            "d1_real": (mapped, real_seg),
            "d1_fake": (mapped, self._d1_fake(fake.seg_prob)),
            "d2_real": (cond2, ground.to(fake.image.dtype)),
            "d2_fake": (cond2, fake.image),
        }

    def discriminator_loss(
        self, mapped: Tensor, out: SynthesisOutput, labels: Tensor, ground: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """D1 + D2 loss on detached fakes (no gradient reaches the generators).

        Args:
            mapped: I_a (B, 3, H, W).
            out: the generators' outputs for ``mapped``.
            labels: (B, H, W) real ground segmentation (group indices) at (H, W).
            ground: (B, 3, H, W) real ground panorama in [-1, 1].
        """
        self._check_targets(labels, ground)
        pairs = self.discriminator_inputs(mapped, out, labels, ground)
        loss_d1 = self.gan_loss.discriminator_loss(self.d1(*pairs["d1_real"]), self.d1(*pairs["d1_fake"]))
        loss_d2 = self.gan_loss.discriminator_loss(self.d2(*pairs["d2_real"]), self.d2(*pairs["d2_fake"]))
        loss = loss_d1 + loss_d2
        return loss, {"loss_d": loss.detach(), "loss_d1": loss_d1.detach(), "loss_d2": loss_d2.detach()}

    def generator_loss(
        self, mapped: Tensor, out: SynthesisOutput, labels: Tensor, ground: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Adversarial (D1, D2) + ``lambda_image`` * L1 + ``lambda_seg`` * segmentation loss.

        Freeze the discriminators (:meth:`set_discriminators_trainable`) around the backward if
        their gradients must stay clean. Arguments as :meth:`discriminator_loss`.
        """
        cfg = self.config
        self._check_targets(labels, ground)
        adv1 = self.gan_loss.generator_loss(self.d1(mapped, self._d1_fake(out.seg_prob)))
        adv2 = self.gan_loss.generator_loss(self.d2(self._d2_condition(mapped, out), out.image))
        l1_image = (out.image.float() - ground.float()).abs().mean()
        valid = labels != IGNORE_INDEX
        if cfg.seg_loss == "ce":
            seg = F.cross_entropy(out.seg_logits.float(), labels, ignore_index=IGNORE_INDEX)
        else:
            target = one_hot_labels(labels, cfg.num_classes)
            per_pixel = (out.seg_prob.float() - target).abs().mean(dim=1)
            seg = per_pixel[valid].mean() if valid.any() else per_pixel.sum() * 0
        loss = adv1 + adv2 + cfg.lambda_image * l1_image + cfg.lambda_seg * seg
        logs = {
            "loss_g": loss.detach(),
            "loss_g_adv1": adv1.detach(),
            "loss_g_adv2": adv2.detach(),
            "l1_image": l1_image.detach(),
            f"{cfg.seg_loss}_seg": seg.detach(),
        }
        return loss, logs

    def _check_targets(self, labels: Tensor, ground: Tensor) -> None:
        size = self.config.gan_size
        if labels.ndim != 3 or tuple(labels.shape[-2:]) != size:
            raise ValueError(f"labels must be (B, {size[0]}, {size[1]}), got {tuple(labels.shape)}")
        if ground.ndim != 4 or ground.shape[1] != 3 or tuple(ground.shape[-2:]) != size:
            raise ValueError(f"ground must be (B, 3, {size[0]}, {size[1]}), got {tuple(ground.shape)}")
