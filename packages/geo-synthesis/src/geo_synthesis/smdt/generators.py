"""U-Net generators of SMDT's dual conditional GAN cascade (our design; SMDT's GANs were never released).

Convention:
    All generators map (B, C_in, H, W) -> (B, C_out, H, W) at the input's size; H and W must be
    divisible by ``2**num_downs``. The building blocks are PanoGAN's ``UnetAFL_v5`` (SMDT's parent
    code, ``docs/methods.md#the-panogan-code-smdt-ships``) without its adversarial-feedback loops
    (SMDT runs ``loop_count 1``), the layout is ours:

    - stem: conv3 s1, C_in -> ngf, IN, ReLU;
    - encoder level i (``num_downs`` of them): conv3 s1 -> avgpool3 s2 -> IN -> ReLU, channels
      ``min(ngf * 2**(i+1), max_channels)``;
    - bottleneck: ``n_blocks`` residual blocks (:class:`~geo_synthesis.layers.ResidualBlock`
      without spectral norm: conv3-IN-ReLU-conv3-IN + x, reflection padding; PanoGAN's dropout
      0.5 in these blocks is left out);
    - decoder level: nearest x2 -> concat the encoder feature of that size (U-Net skip) -> conv3 ->
      IN -> ReLU;
    - head: conv3 to C_out (``out_activation`` ``"tanh"`` for images in [-1, 1], ``"none"`` for
      segmentation logits).

    InstanceNorm is affine (weight 1, bias 0); conv weights are initialised N(0, 0.02), biases 0
    (:func:`~geo_synthesis.layers.init_normal_`, PanoGAN's init).

    Where the layout differs from ``UnetAFL_v5``: PanoGAN has no full-resolution stem (its first
    level is conv3 -> avgpool on the input), so at every resolution our encoder has twice its
    channels, and its decoder concatenates the skip before upsampling, ours after. At PanoGAN's
    size (256x1024, ngf 64, 4 levels, 9 blocks) our U-Net costs 438 GFLOP forward and 1,315
    forward + backward against ``UnetAFL_v5``'s 178 and 535, with 53.5 M parameters against its
    47.1 M without the feedback blocks (``torch.utils.flop_counter``, 2026-12-03; the timing is
    ``benchmarks/bench_smdt_vs_panogan.py``).
    ``padding_mode="circular"`` wraps both axes (use it only for inputs that wrap); the default
    zero padding matches the parent code.

G1 (aerial front view -> K segmentation logits) and G2 (K class probabilities -> ground-style
image) are two :class:`UNetGenerator`; :class:`SMDTSingleGenerator` is the PanoGAN-style variant,
one U-Net with a 3 + K channel output (image, segmentation logits).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ResidualBlock, init_normal_
from ..pooling import AvgPool2d

__all__ = ["SMDTSingleGenerator", "UNetGenerator"]

OutActivation = Literal["tanh", "none"]
#: ``nn.Conv2d`` padding modes.
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


def _conv_in_relu(cin: int, cout: int, padding_mode: PaddingMode) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding_mode),
        nn.InstanceNorm2d(cout, affine=True),
        nn.ReLU(inplace=True),
    ]


class UNetGenerator(nn.Module):
    """Encoder-decoder with U-Net skips, InstanceNorm and ReLU (see the module docstring).

    Args:
        in_channels: input channels (3 for an image, K for class probabilities).
        out_channels: output channels (K logits for G1, 3 for G2).
        ngf: channels of the stem (PanoGAN: 64).
        num_downs: encoder levels (PanoGAN: 4, a 256x1024 input reaches 16x64).
        n_blocks: residual blocks at the bottleneck (PanoGAN: 4 + 5 = 9).
        max_channels: cap on the channel count (PanoGAN: 512).
        out_activation: ``"tanh"`` (image in [-1, 1]) or ``"none"`` (logits).
        padding_mode: ``nn.Conv2d`` padding mode for every 3x3 conv.

    Example:
        >>> g = UNetGenerator(3, 5, ngf=8, num_downs=2, n_blocks=1, out_activation="none")
        >>> g(torch.rand(2, 3, 16, 64)).shape
        torch.Size([2, 5, 16, 64])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        ngf: int = 64,
        num_downs: int = 4,
        n_blocks: int = 9,
        max_channels: int = 512,
        out_activation: OutActivation = "tanh",
        padding_mode: PaddingMode = "zeros",
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("ngf", ngf, 1),
            ("num_downs", num_downs, 0),
            ("n_blocks", n_blocks, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if out_activation not in ("tanh", "none"):
            raise ValueError(f"out_activation must be 'tanh' or 'none', got {out_activation!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_downs = num_downs
        self.out_activation = out_activation
        chans = [min(ngf * 2**i, max_channels) for i in range(num_downs + 1)]
        self.stem = nn.Sequential(*_conv_in_relu(in_channels, chans[0], padding_mode))
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, padding_mode=padding_mode),
                AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                nn.InstanceNorm2d(chans[i + 1], affine=True),
                nn.ReLU(inplace=True),
            )
            for i in range(num_downs)
        )
        self.blocks = nn.Sequential(*(ResidualBlock(chans[-1], spectral_norm=False) for _ in range(n_blocks)))
        # decoder level i goes from chans[i+1] (after upsampling, concatenated with the skip chans[i])
        self.up = nn.ModuleList(
            nn.Sequential(*_conv_in_relu(chans[i + 1] + chans[i], chans[i], padding_mode))
            for i in reversed(range(num_downs))
        )
        self.head = nn.Conv2d(chans[0], out_channels, 3, padding=1, padding_mode=padding_mode)
        init_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2**self.num_downs
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"input H and W must be divisible by 2**num_downs = {factor}, got {tuple(x.shape[-2:])}"
            )
        h = self.stem(x)
        skips = [h]
        for level in self.down:
            h = level(h)
            skips.append(h)
        h = self.blocks(skips.pop())
        for level in self.up:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = level(torch.cat([h, skips.pop()], dim=1))
        out = self.head(h)
        return torch.tanh(out) if self.out_activation == "tanh" else out


class SMDTSingleGenerator(nn.Module):
    """PanoGAN-style single generator: one U-Net, aerial front view -> (image, segmentation logits).

    PanoGAN's generator emits 6 tanh channels (image and an RGB colour segmentation); ours emits
    3 + K channels: ``tanh`` of channels 0:3 is the image in [-1, 1], channels 3: are K class
    logits (classes instead of colours, so the segmentation loss and the K-channel discriminator
    input are the cascade's).

    Args:
        in_channels: channels of the mapped aerial (3).
        num_classes: K.
        **unet_kwargs: :class:`UNetGenerator` options (``ngf``, ``num_downs``, ``n_blocks``...).

    Example:
        >>> g = SMDTSingleGenerator(3, 4, ngf=8, num_downs=2, n_blocks=1)
        >>> image, logits = g(torch.rand(1, 3, 16, 64))
        >>> image.shape, logits.shape
        (torch.Size([1, 3, 16, 64]), torch.Size([1, 4, 16, 64]))
    """

    def __init__(self, in_channels: int, num_classes: int, **unet_kwargs: object) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.unet = UNetGenerator(in_channels, 3 + num_classes, out_activation="none", **unet_kwargs)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, in_channels, H, W) -> (image (B, 3, H, W) in [-1, 1], logits (B, K, H, W))."""
        out = self.unet(x)
        return torch.tanh(out[:, :3]), out[:, 3:]
