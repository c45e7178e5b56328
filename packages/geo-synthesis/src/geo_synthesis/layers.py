"""Shared GAN building blocks: spectral-norm convolutions, SAGAN self-attention, residual blocks.

Convention:
    feature maps are (B, C, H, W). Spectral norm is torch's parametrisation
    (:func:`torch.nn.utils.parametrizations.spectral_norm`, one power iteration per training forward,
    dim 0): a normalised conv stores ``parametrizations.weight.original`` and the ``_u`` / ``_v``
    vectors; :func:`remove_spectral_norm_` bakes W = W_orig / sigma into a plain ``weight``.
    Module attribute names follow Toker et al.'s ``networks/c_gan.py`` (``reflection_pad``,
    ``conv2d``, ``conv_r1``, ``theta`` ...), so weights converted with
    :func:`geo_retrieval.convert.convert_toker` (spectral norm baked) load strictly into the
    ``spectral_norm=False`` form of the same network. Initialisation (:func:`init_normal_`) is
    N(0, 0.02) for conv / linear weights (the *original* weight under spectral norm), biases 0;
    normalisation layers keep weight 1, bias 0; self-attention's gamma starts at 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .pooling import avg_pool2d

__all__ = [
    "ConvLayer",
    "ResidualBlock",
    "ResidualBlockDown",
    "ResidualBlockUp",
    "SelfAttention",
    "init_normal_",
    "remove_spectral_norm_",
    "sn_conv2d",
]


def sn_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    *,
    bias: bool = True,
    spectral_norm: bool = True,
) -> nn.Conv2d:
    """A ``nn.Conv2d``, spectrally normalised unless ``spectral_norm=False``.

    Example:
        >>> conv = sn_conv2d(3, 8, 3, padding=1)
        >>> conv(torch.zeros(1, 3, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
    if spectral_norm:
        _spectral_norm(conv)  # registers the parametrisation on conv in place (and returns conv)
    return conv


@torch.no_grad()
def init_normal_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise every conv / linear weight N(0, ``std``) and its bias 0, in place.

    Under spectral norm the *original* weight is initialised (as Toker's code effectively does) and
    the power-iteration vectors are left as drawn. Normalisation layers and parameters of other
    modules (self-attention's gamma) are untouched. Returns ``module``.
    """
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        if parametrize.is_parametrized(m, "weight"):
            m.get_parameter("parametrizations.weight.original").normal_(0.0, std)
        else:
            m.weight.normal_(0.0, std)
        if m.bias is not None:
            m.bias.zero_()
    return module


def remove_spectral_norm_(module: nn.Module) -> nn.Module:
    """Bake spectral norm into plain weights (W = W_orig / sigma with the current u, v), in place.

    The module then has the key layout of the ``spectral_norm=False`` network. Returns ``module``.
    """
    for m in list(module.modules()):
        if parametrize.is_parametrized(m, "weight"):
            was_training = m.training
            m.eval()  # eval: sigma from the stored u, v without another power iteration
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            m.train(was_training)
    return module


class ConvLayer(nn.Module):
    """Reflection padding + (spectral-norm) conv, Toker's ``ConvLayer``: size-preserving at stride 1.

    Args:
        in_channels, out_channels, kernel_size, stride: the conv.
        padding: reflection padding (default ``kernel_size // 2``).
        spectral_norm: spectrally normalise the conv.

    Shapes: (B, Cin, H, W) -> (B, Cout, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        *,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.reflection_pad = nn.ReflectionPad2d(padding)
        self.conv2d = sn_conv2d(in_channels, out_channels, kernel_size, stride, spectral_norm=spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(self.reflection_pad(x))


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al., ICML'19) as in BigGAN / Toker et al.

    Convention: theta, phi: 1x1 convs C -> C/8; g: C -> C/2; phi and g are max-pooled 2x2 (floor
    for odd sizes); beta = softmax_over_keys(theta^T phi) (HW x HW/4); o = 1x1 conv C/2 -> C of
    g beta^T; output ``gamma * o + x`` with gamma a learnable scalar initialised to 0 (the block
    starts as the identity). All four convs are bias-free and spectrally normalised by default.

    Args:
        channels: C (divisible by 8).
        spectral_norm: spectrally normalise the four convs.

    Shapes: (B, C, H, W) -> (B, C, H, W), H, W >= 2.

    Example:
        >>> att = SelfAttention(16)
        >>> x = torch.randn(2, 16, 6, 10)
        >>> torch.equal(att(x), x)  # gamma0 = 0
        True
    """

    def __init__(self, channels: int, *, spectral_norm: bool = True) -> None:
        super().__init__()
        if channels % 8 or channels < 8:
            raise ValueError(f"channels must be a positive multiple of 8, got {channels}")
        self.ch = int(channels)
        kw = {"bias": False, "spectral_norm": spectral_norm}
        self.theta = sn_conv2d(channels, channels // 8, 1, **kw)
        self.phi = sn_conv2d(channels, channels // 8, 1, **kw)
        self.g = sn_conv2d(channels, channels // 2, 1, **kw)
        self.o = sn_conv2d(channels // 2, channels, 1, **kw)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.ch:
            raise ValueError(f"x must be (B, {self.ch}, H, W), got {tuple(x.shape)}")
        b, c, h, w = x.shape
        if h < 2 or w < 2:
            raise ValueError(f"self-attention needs H, W >= 2 for the 2x2 pooling, got {(h, w)}")
        theta = self.theta(x).flatten(2)  # (B, C/8, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # (B, C/8, HW/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # (B, C/2, HW/4)
        beta = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # (B, HW, HW/4)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(b, c // 2, h, w))
        return self.gamma * o + x


class ResidualBlockDown(nn.Module):
    """Pre-activation residual down block (Toker's ``ResidualBlockDown``).

    Convention: main path ReLU -> conv3 -> ReLU -> conv3 -> avgpool 2; shortcut conv1x1 -> avgpool 2;
    sum. Convs use reflection padding and spectral norm.

    Shapes: (B, Cin, H, W) -> (B, Cout, H//2, W//2).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, spectral_norm: bool = True
    ) -> None:
        super().__init__()
        self.conv_r1 = ConvLayer(in_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
        self.conv_r2 = ConvLayer(out_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
        self.conv_l = ConvLayer(in_channels, out_channels, 1, spectral_norm=spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_r2(F.relu(self.conv_r1(F.relu(x))))
        return avg_pool2d(out, 2) + avg_pool2d(self.conv_l(x), 2)


class ResidualBlockUp(nn.Module):
    """Pre-activation residual up block (Toker's ``ResidualBlockUp``).

    Convention: main path IN -> ReLU -> nearest x``scale`` -> conv3 -> IN -> ReLU -> conv3; shortcut
    nearest x``scale`` -> conv1x1; sum. Affine instance norms; spectral-norm convs.

    Shapes: (B, Cin, H, W) -> (B, Cout, scale*H, scale*W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        scale: int = 2,
        *,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        self.norm_r1 = nn.InstanceNorm2d(in_channels, affine=True)
        self.conv_r1 = ConvLayer(in_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
        self.norm_r2 = nn.InstanceNorm2d(out_channels, affine=True)
        self.conv_r2 = ConvLayer(out_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
        self.conv_l = ConvLayer(in_channels, out_channels, 1, spectral_norm=spectral_norm)

    def _up(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_r1(self._up(F.relu(self.norm_r1(x))))
        out = self.conv_r2(F.relu(self.norm_r2(out)))
        return out + self.conv_l(self._up(x))


class ResidualBlock(nn.Module):
    """Residual block at constant width (Toker's bottleneck ``ResidualBlock``).

    Convention: conv3 -> IN -> ReLU -> conv3 -> IN, plus the identity. Affine instance norms;
    spectral-norm convs with reflection padding.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, *, spectral_norm: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, spectral_norm=spectral_norm)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3, spectral_norm=spectral_norm)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.in2(self.conv2(F.relu(self.in1(self.conv1(x))))) + x
