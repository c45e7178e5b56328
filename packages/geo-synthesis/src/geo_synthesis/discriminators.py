"""Conditional patch discriminators: Toker et al.'s self-attention PatchGAN and a multi-scale stack.

Convention:
    ``forward(condition, image)`` with condition (B, Cc, H, W) and image (B, Ci, H, W) on the same
    grid; the discriminator sees ``cat([condition, image], dim=1)`` (condition first, as Toker's
    ``concat(aerial, street)``) and returns patch *logits* (no sigmoid; pair with
    :class:`~geo_synthesis.gan_losses.GANLoss`). A ``condition`` of ``None`` makes it
    unconditional (``in_channels`` then counts the image only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from .layers import SelfAttention, init_normal_, sn_conv2d
from .pooling import avg_pool2d

__all__ = ["MultiScaleDiscriminator", "PatchDiscriminator", "patch_output_size"]


def patch_output_size(size: tuple[int, int], n_layers: int = 3) -> tuple[int, int]:
    """(h, w) of :class:`PatchDiscriminator`'s logits for an (H, W) input.

    ``n_layers`` k4 s2 p1 convs (floor halving), then two k4 s1 p1 convs (each -1).
    E.g. (112, 616) -> (12, 75).
    """
    h, w = int(size[0]), int(size[1])
    for _ in range(n_layers):
        h, w = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    return h - 2, w - 2


def _concat(condition: Tensor | None, image: Tensor, in_channels: int) -> Tensor:
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    if condition is not None:
        if (
            condition.ndim != 4
            or condition.shape[0] != image.shape[0]
            or condition.shape[-2:] != image.shape[-2:]
        ):
            raise ValueError(
                f"condition must be (B, Cc, H, W) matching image {tuple(image.shape)}, got {tuple(condition.shape)}"
            )
        x = torch.cat([condition, image.to(condition.dtype)], dim=1)
    else:
        x = image
    if x.shape[1] != in_channels:
        raise ValueError(
            f"discriminator expects {in_channels} input channels (condition + image), got {x.shape[1]}"
        )
    return x


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN with self-attention (Toker et al., CVPR'21; pix2pix lineage).

    Convention (``n_layers=3``, ``base=64``, Toker's network): conv4 s2 (64) -> LReLU ->
    SN-conv4 s2 (128) -> LReLU -> self-attention (128) -> SN-conv4 s2 (256) -> LReLU ->
    SN-conv4 s1 (512) -> LReLU -> conv4 s1 (1); all padding 1, LeakyReLU slope 0.1, no
    normalisation, biases on. Widths are ``base * min(2^n, 8)``. Toker hard-codes the attention
    width to 128; here it follows ``base * 2`` (equal at the paper's ``base=64``). The Sequential
    indices match Toker's ``NLayerDiscriminator.model`` (converted weights load with
    ``spectral_norm=False``). Init N(0, 0.02), biases 0.

    Args:
        in_channels: condition + image channels (Toker: 3 + 3 = 6).
        base: width of the first conv.
        n_layers: stride-2 convs (>= 1).
        attention: insert self-attention after the second conv (requires ``n_layers >= 2``).
        spectral_norm: spectral norm on every conv but the first and the last.
        negative_slope: LeakyReLU slope.

    Shapes: (B, Cc, H, W), (B, Ci, H, W) -> (B, 1, h, w) with (h, w) = :func:`patch_output_size`.
    2.79 M parameters at the paper configuration.

    Example:
        >>> d = PatchDiscriminator(6, base=8)
        >>> d(torch.zeros(2, 3, 32, 64), torch.zeros(2, 3, 32, 64)).shape
        torch.Size([2, 1, 2, 6])
    """

    def __init__(
        self,
        in_channels: int = 6,
        base: int = 64,
        n_layers: int = 3,
        *,
        attention: bool = True,
        spectral_norm: bool = True,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if attention and n_layers < 2:
            raise ValueError("attention needs n_layers >= 2 (it follows the second conv)")
        self.in_channels = int(in_channels)
        self.n_layers = int(n_layers)

        def act() -> nn.Module:
            return nn.LeakyReLU(negative_slope, inplace=True)

        seq: list[nn.Module] = [nn.Conv2d(in_channels, base, 4, stride=2, padding=1), act()]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [sn_conv2d(base * prev, base * mult, 4, 2, 1, spectral_norm=spectral_norm), act()]
            if n == 1 and attention:
                seq.append(SelfAttention(base * mult, spectral_norm=spectral_norm))
        prev, mult = mult, min(2**n_layers, 8)
        seq += [sn_conv2d(base * prev, base * mult, 4, 1, 1, spectral_norm=spectral_norm), act()]
        seq.append(nn.Conv2d(base * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*seq)
        init_normal_(self)

    def min_size(self) -> int:
        """Smallest H (and W) giving at least a 1x1 logit map."""
        return 3 * 2**self.n_layers

    def forward(self, condition: Tensor | None, image: Tensor) -> Tensor:
        x = _concat(condition, image, self.in_channels)
        h, w = patch_output_size((x.shape[-2], x.shape[-1]), self.n_layers)
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(x.shape[-2:])} too small for {self.n_layers} stride-2 layers")
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """Several :class:`PatchDiscriminator` on an image pyramid (pix2pixHD-style; for SMDT's D1/D2).

    Convention: scale s sees the inputs average-pooled s times (3x3, stride 2, padding 1,
    ``count_include_pad=False``); each scale has its own weights. Returns a list of logit maps,
    finest first; :class:`~geo_synthesis.gan_losses.GANLoss` averages over the list.

    Args:
        in_channels: condition + image channels.
        num_scales: number of discriminators (>= 1).
        base, n_layers, attention, spectral_norm, negative_slope: per-scale
            :class:`PatchDiscriminator` options (attention off by default: it is quadratic in the
            number of positions).

    Shapes: (B, Cc, H, W), (B, Ci, H, W) -> list of ``num_scales`` (B, 1, h_s, w_s).

    Example:
        >>> d = MultiScaleDiscriminator(6, num_scales=2, base=8)
        >>> [tuple(o.shape) for o in d(torch.zeros(1, 3, 64, 128), torch.zeros(1, 3, 64, 128))]
        [(1, 1, 6, 14), (1, 1, 2, 6)]
    """

    def __init__(
        self,
        in_channels: int = 6,
        num_scales: int = 3,
        base: int = 64,
        n_layers: int = 3,
        *,
        attention: bool = False,
        spectral_norm: bool = True,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.in_channels = int(in_channels)
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(
                in_channels,
                base,
                n_layers,
                attention=attention,
                spectral_norm=spectral_norm,
                negative_slope=negative_slope,
            )
            for _ in range(num_scales)
        )

    @staticmethod
    def downsample(x: Tensor) -> Tensor:
        return avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)

    def forward(self, condition: Tensor | None, image: Tensor) -> list[Tensor]:
        x = _concat(condition, image, self.in_channels)
        outs: list[Tensor] = []
        for i, d in enumerate(self.discriminators):
            if i:
                x = self.downsample(x)
            outs.append(d(None, x))
        return outs

    def __len__(self) -> int:
        return len(self.discriminators)

    @property
    def scales(self) -> Sequence[PatchDiscriminator]:
        return cast("list[PatchDiscriminator]", list(self.discriminators))  # ModuleList iterates as Module
