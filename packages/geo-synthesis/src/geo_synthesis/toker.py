"""Toker et al., CVPR'21, "Coming Down to Earth": satellite-to-street synthesis + retrieval, multitask.

Convention:
    all images are in [-1, 1] (x/255 with mean = std = 0.5, the recipe's
    ``Normalisation.minus_one_one()``), including the street branch's ResNet input. The aerial
    input is the *polar-transformed* aerial (panorama-shaped, north at column W/2), the same
    (H, W) as the street panorama; H and W must be divisible by 8 (paper: 112 x 616 from a
    750 px aerial). Descriptors are L2-normalised, (B, K*C) channel-major (c*K + k);
    ``similarity(g, a) = g @ a.T`` with rows = ground queries.

    - :class:`TokerGenerator` (``UnetGeneratorSkip``): residual U-Net, spectral norm on every conv
      but the last, affine instance norm, SAGAN self-attention in the decoder at H/4 x W/4; returns
      ``(fake panorama (tanh), resb6)``, ``resb6`` the (B, 8*base, H/8, W/8) bottleneck shared with
      retrieval. 9.51 M parameters at ``base=32`` (any input size).
    - :class:`TokerDiscriminator`: the conditional self-attention PatchGAN on
      ``concat(aerial, street)`` (2.79 M at ``base=64``).
    - :class:`Toker21Model`: G + D + retrieval R (street ResNet-34 cut after layer3 with the stem
      max-pool removed + SAFA ``sa2``; aerial descriptor ``sa1(resb6)``), with
      :meth:`~Toker21Model.configure_optimizers` (Adams ``"G"``, ``"D"``, ``"R"``) and
      :meth:`~Toker21Model.training_step` for :class:`geo_retrieval.training.Trainer`.

    One iteration (:meth:`Toker21Model.training_step`), docs/methods.md#toker21:

    1. ``fake, resb6 = G(aerial)`` once; ``street = R_E(ground)`` once (with grad).
    2. **D step**: ``L_D = 0.5 [GAN(D(a, ground), real) + GAN(D(a, fake.detach()), fake)]``
       (BCE with real label 0.9 by default; real and fake in one D forward).
    3. **R step**: ``L_R = triplet(sa2(street), sa1(resb6.detach()))`` updates R_E, sa1, sa2.
    4. **G step** with D and R frozen: ``L_G = w_gan GAN(D(a, fake), real) + w_l1 |fake - ground|_1
       + w_ret triplet(sa2(street.detach()), sa1(resb6))`` (1, 100, 1000); gradients reach G's
       encoder through ``resb6``. With ``geo_mask_m`` (the recipe's, 25 m as in Toker's CVACT
       training) both triplet terms leave out negatives closer than that to the anchor, from the
       batch's ``utm``.

    Deviations from the public code (defects fixed): the street ResNet runs once per iteration
    (Toker's runs it in the R step and again in the G step, updating BatchNorm statistics
    twice); the G step's street descriptor therefore uses the pre-R-step ResNet features (sa1 /
    sa2 are re-evaluated with their updated weights, as in the original). Toker's triplet
    already zeroes the diagonal (no log 2 terms; ours matches); its CVACT geo mask multiplied
    masked pairs by 0 (each still counted at log 2), ours leaves them out. Resume restores all three optimisers, the mining
    epoch and strict weights (the trainer's exact resume).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geo_retrieval.backbones import create_backbone
from geo_retrieval.heads import create_head
from geo_retrieval.losses import SoftMarginTripletLoss, create_loss
from geo_retrieval.recipes import Recipe
from geo_retrieval.training import build_optimizer

from .discriminators import PatchDiscriminator
from .gan_losses import GANLoss
from .layers import ResidualBlock, ResidualBlockDown, ResidualBlockUp, SelfAttention, init_normal_, sn_conv2d

__all__ = ["TOKER_SCHEDULE", "Toker21Model", "TokerDiscriminator", "TokerGenerator", "count_parameters"]

#: Toker's hard-negative mining ratio by 0-indexed epoch: all, then 0.1, 0.05, 0.01.
TOKER_SCHEDULE: tuple[tuple[int, float | None], ...] = ((0, None), (21, 0.1), (41, 0.05), (61, 0.01))


def _check_image(x: Tensor, name: str, channels: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must be (B, {channels}, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % 8 or w % 8 or h < 16 or w < 16:
        raise ValueError(f"{name} H and W must be divisible by 8 and >= 16, got {(h, w)}")


class TokerGenerator(nn.Module):
    """Toker et al.'s residual U-Net generator (``UnetGeneratorSkip``), any size divisible by 8.

    Convention (widths for ``base=32``): reflection pad 3 + SN-conv7 (32) + IN; 3 residual down
    blocks + IN (64 @ H/2, 128 @ H/4, 256 @ H/8); ``n_res`` residual blocks (256) -> ``resb6``;
    decoder: cat(resb6, enc3) -> residual up (128) + IN -> cat enc2 -> self-attention (256 @ H/4)
    -> residual up (64) + IN -> cat enc1 -> residual up (64) + IN -> conv3 (no SN) -> tanh.
    Attribute names follow Toker's code (``begin_conv``, ``conv1``, ``res1`` ... ``conv_end``), so
    converted weights (:func:`geo_retrieval.convert.convert_toker`, spectral norm baked) load
    strictly into ``TokerGenerator(spectral_norm=False)``. Init N(0, 0.02), biases 0.

    Args:
        in_channels: channels of the (polar) aerial input.
        out_channels: channels of the synthesised panorama.
        base: stem width (32 in the paper); the bottleneck has ``8 * base`` channels.
        n_res: bottleneck residual blocks (6).
        attention: decoder self-attention (on in the paper).
        spectral_norm: spectral norm on every conv but the last.

    Shapes: (B, in_channels, H, W) -> ((B, out_channels, H, W) in [-1, 1], (B, 8*base, H/8, W/8)).

    Example:
        >>> g = TokerGenerator(base=8)
        >>> fake, resb6 = g(torch.zeros(2, 3, 32, 64))
        >>> tuple(fake.shape), tuple(resb6.shape)
        ((2, 3, 32, 64), (2, 64, 4, 8))
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base: int = 32,
        n_res: int = 6,
        *,
        attention: bool = True,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        if base < 1:
            raise ValueError(f"base must be >= 1, got {base}")
        if n_res < 1:
            raise ValueError(f"n_res must be >= 1, got {n_res}")
        sn = {"spectral_norm": spectral_norm}
        b = int(base)
        self.in_channels, self.out_channels, self.base, self.n_res = (
            int(in_channels),
            int(out_channels),
            b,
            int(n_res),
        )
        self.bottleneck_channels = 8 * b
        self.begin_pad = nn.ReflectionPad2d(3)
        self.begin_conv = sn_conv2d(in_channels, b, 7, **sn)
        self.begini_e = nn.InstanceNorm2d(b, affine=True)
        self.conv1 = ResidualBlockDown(b, 2 * b, **sn)
        self.in1_e = nn.InstanceNorm2d(2 * b, affine=True)
        self.conv2 = ResidualBlockDown(2 * b, 4 * b, **sn)
        self.in2_e = nn.InstanceNorm2d(4 * b, affine=True)
        self.conv3 = ResidualBlockDown(4 * b, 8 * b, **sn)
        self.in3_e = nn.InstanceNorm2d(8 * b, affine=True)
        for i in range(n_res):
            self.add_module(f"res{i + 1}", ResidualBlock(8 * b, **sn))
        self.attention2: nn.Module = SelfAttention(8 * b, **sn) if attention else nn.Identity()
        self.deconv3 = ResidualBlockUp(16 * b, 4 * b, **sn)
        self.in3_d = nn.InstanceNorm2d(4 * b, affine=True)
        self.deconv2 = ResidualBlockUp(8 * b, 2 * b, **sn)
        self.in2_d = nn.InstanceNorm2d(2 * b, affine=True)
        self.deconv1 = ResidualBlockUp(4 * b, 2 * b, **sn)
        self.in1_d = nn.InstanceNorm2d(2 * b, affine=True)
        self.conv_end = nn.Sequential(nn.Conv2d(2 * b, out_channels, 3, padding=1), nn.Tanh())
        init_normal_(self, 0.02)

    def encode(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """Encoder + bottleneck only: ``(resb6, (enc1, enc2, enc3))`` (retrieval needs no decoder)."""
        _check_image(x, "aerial", self.in_channels)
        x = self.begini_e(self.begin_conv(self.begin_pad(x)))
        enc1 = self.in1_e(self.conv1(x))
        enc2 = self.in2_e(self.conv2(enc1))
        enc3 = self.in3_e(self.conv3(enc2))
        h = enc3
        for i in range(self.n_res):
            h = getattr(self, f"res{i + 1}")(h)
        return h, (enc1, enc2, enc3)

    def decode(self, resb6: Tensor, skips: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Decoder: bottleneck + U-Net skips -> (B, out_channels, H, W) in [-1, 1]."""
        enc1, enc2, enc3 = skips
        dec2 = torch.cat((self.in3_d(self.deconv3(torch.cat((resb6, enc3), 1))), enc2), 1)
        dec3 = torch.cat((self.in2_d(self.deconv2(self.attention2(dec2))), enc1), 1)
        return self.conv_end(self.in1_d(self.deconv1(dec3)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        resb6, skips = self.encode(x)
        return self.decode(resb6, skips), resb6


class TokerDiscriminator(PatchDiscriminator):
    """Toker et al.'s conditional PatchGAN on ``concat(aerial, street)`` (2.79 M at ``base=64``).

    See :class:`~geo_synthesis.discriminators.PatchDiscriminator`; ``forward(aerial, street)``.
    A 112 x 616 pair gives 1 x 12 x 75 logits.
    """

    def __init__(
        self,
        aerial_channels: int = 3,
        street_channels: int = 3,
        base: int = 64,
        *,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__(
            aerial_channels + street_channels,
            base,
            3,
            attention=True,
            spectral_norm=spectral_norm,
            negative_slope=0.1,
        )


@contextlib.contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """Temporarily ``requires_grad_(False)`` on the parameters of ``modules`` (restored after)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Toker21Model(nn.Module):
    """The multitask model of Toker et al. (see module docstring for the update order).

    Args:
        image_size: (H, W) of the polar aerial = the panorama (both divisible by 8).
        gen_base: generator stem width (32); the bottleneck and the street features have
            ``8 * gen_base`` channels.
        n_res: generator bottleneck blocks (6).
        disc_base: discriminator width (64).
        street_backbone: :func:`geo_retrieval.backbones.create_backbone` name (``resnet34_layer3``:
            stride 8, 256 channels); must give ``8 * gen_base`` channels at stride 8.
        backbone_kwargs: its options (``pretrained`` defaults to False; pass ``weights=`` offline).
        num_heads: SAFA heads K (8).
        safa_kwargs: extra :class:`~geo_retrieval.heads.safa.SAFAHead` options (default channel
            max pooling, channel-major flatten, init N(0, 0.005) truncated, biases 0.1).
        gan_kind, real_label, fake_label: :class:`~geo_synthesis.gan_losses.GANLoss` (``"bce"``,
            0.9, 0.0).
        gan_weight, l1_weight, triplet_weight: generator loss weights (1, 100, 1000).
        triplet_kwargs: :class:`~geo_retrieval.losses.SoftMarginTripletLoss` options (default
            alpha 10 and :data:`TOKER_SCHEDULE`).
        spectral_norm: spectral norm in G and D.
        synthesis_samples: synthesise (decoder, D step, the GAN and L1 terms) only the first
            ``n`` panoramas of each training batch; the retrieval terms and the encoder still see
            the whole batch. None (the paper): every sample. A CPU economy of the small variant:
            the decoder is about 60 % of the generator's forward + backward.

    Example:
        >>> m = Toker21Model(image_size=(32, 64), gen_base=8,
        ...                  backbone_kwargs={"channels": (16, 32, 64, 128), "layers": (1, 1, 1, 1)})
        >>> g, a = m(torch.zeros(2, 3, 32, 64), torch.zeros(2, 3, 32, 64))
        >>> tuple(g.shape), tuple(a.shape)
        ((2, 512), (2, 512))
    """

    def __init__(
        self,
        *,
        image_size: tuple[int, int] = (112, 616),
        gen_base: int = 32,
        n_res: int = 6,
        disc_base: int = 64,
        street_backbone: str = "resnet34_layer3",
        backbone_kwargs: Mapping[str, Any] | None = None,
        num_heads: int = 8,
        safa_kwargs: Mapping[str, Any] | None = None,
        gan_kind: str = "bce",
        real_label: float = 0.9,
        fake_label: float = 0.0,
        gan_weight: float = 1.0,
        l1_weight: float = 100.0,
        triplet_weight: float = 1000.0,
        triplet_kwargs: Mapping[str, Any] | None = None,
        geo_mask_m: float | None = None,
        spectral_norm: bool = True,
        synthesis_samples: int | None = None,
    ) -> None:
        super().__init__()
        h, w = int(image_size[0]), int(image_size[1])
        if synthesis_samples is not None and int(synthesis_samples) < 1:
            raise ValueError(f"synthesis_samples must be None or >= 1, got {synthesis_samples}")
        self.synthesis_samples = None if synthesis_samples is None else int(synthesis_samples)
        if h % 8 or w % 8 or h < 16 or w < 16:
            raise ValueError(f"image_size must be (H, W) divisible by 8 and >= 16, got {tuple(image_size)}")
        for name, value in (
            ("gan_weight", gan_weight),
            ("l1_weight", l1_weight),
            ("triplet_weight", triplet_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.image_size = (h, w)
        self.generator = TokerGenerator(3, 3, gen_base, n_res, spectral_norm=spectral_norm)
        self.discriminator = TokerDiscriminator(3, 3, disc_base, spectral_norm=spectral_norm)
        bb_kwargs = {"pretrained": False, **dict(backbone_kwargs or {})}
        self.street = create_backbone(street_backbone, **bb_kwargs)
        feat = (h // 8, w // 8)
        with torch.no_grad():
            was = self.street.training
            self.street.eval()
            probe = self.street(torch.zeros(1, 3, h, w))
            self.street.train(was)
        if tuple(probe.shape[1:]) != (self.generator.bottleneck_channels, *feat):
            raise ValueError(
                f"street backbone {street_backbone!r} gives {tuple(probe.shape[1:])} for a {(h, w)} panorama; "
                f"the aerial bottleneck is {(self.generator.bottleneck_channels, *feat)} (stride 8, 8*gen_base "
                "channels): both SAFA descriptors must have the same size"
            )
        head_kw = {
            "num_heads": num_heads,
            "pool": "max",
            "flatten": "channel_major",
            **dict(safa_kwargs or {}),
        }
        self.sa1 = create_head(
            "safa", in_channels=self.generator.bottleneck_channels, feature_size=feat, **head_kw
        )
        self.sa2 = create_head("safa", in_channels=int(probe.shape[1]), feature_size=feat, **head_kw)
        self.gan_loss = GANLoss(gan_kind, real_label=real_label, fake_label=fake_label)
        tk = {"alpha": 10.0, "schedule": TOKER_SCHEDULE, **dict(triplet_kwargs or {})}
        if geo_mask_m is not None:
            tk["min_distance_m"] = float(geo_mask_m)
        self.geo_mask_m = None if geo_mask_m is None else float(geo_mask_m)
        if tk.get("hard_negative_ratio") is not None:
            tk.pop("schedule", None)
        self.triplet = cast(SoftMarginTripletLoss, create_loss("soft_margin_triplet", **tk))
        self.gan_weight, self.l1_weight, self.triplet_weight = (
            float(gan_weight),
            float(l1_weight),
            float(triplet_weight),
        )

    # -- retrieval interface (evaluation) ------------------------------------------------------------
    @property
    def retrieval_modules(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """R = (street backbone, sa1, sa2)."""
        return (self.street, self.sa1, self.sa2)

    def encode_ground(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) panoramas in [-1, 1] -> (B, K*C) unit descriptors (``sa2(R_E(x))``)."""
        _check_image(x, "ground", 3)
        return self.sa2(self.street(x))

    def encode_aerial(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) polar aerials in [-1, 1] -> (B, K*C) unit descriptors (``sa1(resb6)``; no decoder)."""
        return self.sa1(self.generator.encode(x)[0])

    def similarity(self, ground_desc: Tensor, aerial_desc: Tensor) -> Tensor:
        """(Bg, D), (Ba, D) -> (Bg, Ba) cosine similarities in float32 (row = ground)."""
        return ground_desc.float() @ aerial_desc.float().T

    def forward(self, ground: Tensor, aerial: Tensor) -> tuple[Tensor, Tensor]:
        """Descriptors ``(g, a)`` of both views (evaluation)."""
        return self.encode_ground(ground), self.encode_aerial(aerial)

    @torch.no_grad()
    def synthesise(self, aerial: Tensor) -> Tensor:
        """Synthesised panoramas in [-1, 1] for polar aerials in [-1, 1] (eval mode is the caller's)."""
        return self.generator(aerial)[0]

    # -- training ------------------------------------------------------------------------------------
    def configure_optimizers(self, recipe: Recipe) -> dict[str, torch.optim.Optimizer]:
        """Three optimisers from ``recipe.optimizer`` (Toker: Adam, lr 1e-4, betas (0.5, 0.999)):
        ``"G"`` (generator), ``"D"`` (discriminator), ``"R"`` (street backbone + sa1 + sa2)."""
        cfg = recipe.optimizer
        r_params = [p for m in self.retrieval_modules for p in m.parameters() if p.requires_grad]
        return {
            "G": build_optimizer([p for p in self.generator.parameters() if p.requires_grad], cfg),
            "D": build_optimizer([p for p in self.discriminator.parameters() if p.requires_grad], cfg),
            "R": build_optimizer(r_params, cfg),
        }

    def losses(self, ground: Tensor, aerial: Tensor, utm: Tensor | None = None) -> dict[str, Tensor]:
        """All loss terms of one iteration *without* optimiser steps (analysis and tests).

        Returns ``{"D", "R", "G", "G_gan", "G_l1", "G_triplet"}`` built exactly as in
        :meth:`training_step` (graphs kept; nothing is frozen or stepped); ``utm`` (B, 2) metres as
        in :meth:`training_step`.
        """
        utm = self._mask_coords(utm)
        fake, resb6, n = self._synthesise(aerial)
        street = self.street(ground)
        d_real, d_fake = self._d_pair(aerial[:n], ground[:n], fake.detach())
        out = {"D": self.gan_loss.discriminator_loss(d_real, d_fake)}
        out["R"] = self.triplet(self.similarity(self.sa2(street), self.sa1(resb6.detach())), utm=utm)
        out.update(self._g_terms(aerial[:n], ground[:n], fake, resb6, street.detach(), utm))
        return out

    def _synthesise(self, aerial: Tensor) -> tuple[Tensor, Tensor, int]:
        """The generator's part of an iteration: ``(fake, resb6, n)``, the encoder on the whole batch
        (``resb6`` (B, 8*base, H/8, W/8)) and the decoder on its first ``n`` samples (``fake``
        (n, 3, H, W); ``n = min(synthesis_samples, B)``, B when None)."""
        b = aerial.shape[0]
        n = b if self.synthesis_samples is None else min(self.synthesis_samples, b)
        resb6, skips = self.generator.encode(aerial)
        fake = self.generator.decode(resb6[:n], (skips[0][:n], skips[1][:n], skips[2][:n]))
        return fake, resb6, n

    def _mask_coords(self, utm: Tensor | None) -> Tensor | None:
        """The coordinates the triplet's geo mask uses: ``utm`` when ``geo_mask_m`` is set, else None."""
        return utm if self.geo_mask_m is not None else None

    def _d_pair(self, aerial: Tensor, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Real and fake logits from one D forward (one spectral-norm power iteration)."""
        logits = self.discriminator(torch.cat([aerial, aerial]), torch.cat([real, fake.to(real.dtype)]))
        return logits.chunk(2)

    def _g_terms(
        self, aerial: Tensor, ground: Tensor, fake: Tensor, resb6: Tensor, street: Tensor, utm: Tensor | None
    ) -> dict[str, Tensor]:
        """G's loss; ``aerial``, ``ground`` and ``fake`` are the synthesised samples (the first n),
        ``resb6`` / ``street`` the whole batch."""
        gan = self.gan_loss.generator_loss(self.discriminator(aerial, fake))
        l1 = F.l1_loss(fake.float(), ground.float())
        trip = self.triplet(self.similarity(self.sa2(street), self.sa1(resb6)), utm=utm)
        total = self.gan_weight * gan + self.l1_weight * l1 + self.triplet_weight * trip
        return {"G": total, "G_gan": gan, "G_l1": l1, "G_triplet": trip}

    def training_step(self, batch: Mapping[str, Tensor], trainer: Any) -> dict[str, Tensor]:
        """One Toker iteration: D step, R step, G step (module docstring). Uses ``trainer.autocast()``,
        ``trainer.backward`` and ``trainer.optimizer_step(name)``; sets the triplet's mining epoch
        from ``trainer.epoch``."""
        ground, aerial = batch["ground"], batch["aerial"]
        _check_image(ground, "ground", 3)
        _check_image(aerial, "aerial", 3)
        if ground.shape != aerial.shape:
            raise ValueError(
                f"ground {tuple(ground.shape)} and polar aerial {tuple(aerial.shape)} must match"
            )
        self.triplet.set_epoch(int(getattr(trainer, "epoch", 0)))
        utm = self._mask_coords(batch.get("utm"))  # the geo mask of both triplet terms (R and G steps)
        with trainer.autocast():
            fake, resb6, n = self._synthesise(aerial)
            street = self.street(ground)  # the only street-branch forward of the iteration
        aerial_s, ground_s = aerial[:n], ground[:n]  # the synthesised samples (all unless synthesis_samples)

        # 1) D step on detached fakes
        with trainer.autocast():
            d_real, d_fake = self._d_pair(aerial_s, ground_s, fake.detach())
        loss_d = self.gan_loss.discriminator_loss(d_real, d_fake)
        trainer.backward(loss_d)
        trainer.optimizer_step("D")

        # 2) R step: street branch + both heads; the generator's features are detached
        with trainer.autocast():
            g_desc, a_desc = self.sa2(street), self.sa1(resb6.detach())
        loss_r = self.triplet(self.similarity(g_desc, a_desc), utm=utm)
        trainer.backward(loss_r)
        trainer.optimizer_step("R")

        # 3) G step with D and R frozen (they still pass gradients to the generator)
        with _frozen(self.discriminator, *self.retrieval_modules):
            with trainer.autocast():
                terms = self._g_terms(aerial_s, ground_s, fake, resb6, street.detach(), utm)
            trainer.backward(terms["G"])
        trainer.optimizer_step("G")
        return {
            "loss_D": loss_d.detach(),
            "loss_R": loss_r.detach(),
            "loss_G": terms["G"].detach(),
            "G_gan": terms["G_gan"].detach(),
            "G_l1": terms["G_l1"].detach(),
            "G_triplet": terms["G_triplet"].detach(),
        }


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (spectral norm counts the original weight once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
