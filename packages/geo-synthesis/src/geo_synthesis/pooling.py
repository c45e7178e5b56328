"""Average pooling with a fast CPU path: the GANs' down-sampling (U-Net encoders, multi-scale Ds).

Convention:
    :func:`avg_pool2d` is ``F.avg_pool2d`` for square kernels (``kernel_size``, ``stride``,
    ``padding``, ``count_include_pad``; no ``ceil_mode``, no ``divisor_override``). On the CPU, for
    maps of at most :data:`SMALL_MAP_PIXELS` pixels (H x W), it sums each window with a depthwise
    convolution of ones and multiplies by the reciprocal of the window's count (the number of
    non-padding pixels with ``count_include_pad=False``), in float32 (float64 for float64 inputs)
    with autocast off, and returns the input's dtype. Larger maps and every other device call
    ``F.avg_pool2d``.

    Why: PyTorch's CPU ``avg_pool2d`` kernels for NCHW inputs are slow on narrow feature maps
    (no vectorisation over channels), and slower still in bf16 under autocast. On the 2-core
    AVX-512 machine, one thread, a (16, 16, 32, 128) map: ``F.avg_pool2d(x, 3, 2, 1,
    count_include_pad=False)`` forward + backward 8.5 ms in float32 and 17-21 ms in bf16, the
    depthwise form 2.9-3.5 ms; pooling was 12 % of the ``toker21`` and ``smdt`` small training
    steps (``torch.profiler``, issue 15). On large maps PyTorch's kernel is the faster one: the
    toker21 ``full`` shapes (batch 4, 2 threads, float32, 2x2 windows) took 91 / 35 / 17 ms forward +
    backward at 112x616 / 56x308 / 28x154 with ``F.avg_pool2d`` and 104 / 56 / 19 ms depthwise, hence
    the size limit (32x128, the small recipes' largest map, is the largest measured faster).
    Values agree with ``F.avg_pool2d`` to float32 rounding
    (the sum runs in another order and the mean is a product with the reciprocal; exactly equal
    for 2x2 windows).

Shapes: (B, C, H, W) -> (B, C, H_out, W_out), ``H_out = (H + 2 * padding - kernel_size) // stride + 1``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SMALL_MAP_PIXELS", "AvgPool2d", "avg_pool2d"]

SMALL_MAP_PIXELS = 4096
"""Largest H x W that takes the depthwise CPU path (32 x 128; see the module docstring)."""


@functools.lru_cache(maxsize=64)
def _inverse_counts(
    height: int,
    width: int,
    kernel_size: int,
    stride: int,
    padding: int,
    include_pad: bool,
    dtype: torch.dtype,
) -> Tensor:
    """(1, 1, H_out, W_out) reciprocal window sizes (CPU), shared between calls (never written to)."""
    if include_pad or padding == 0:
        out_h = (height + 2 * padding - kernel_size) // stride + 1
        out_w = (width + 2 * padding - kernel_size) // stride + 1
        return torch.full((1, 1, out_h, out_w), 1.0 / kernel_size**2, dtype=dtype)
    ones = torch.ones(1, 1, height, width, dtype=torch.float64)
    counts = F.conv2d(
        ones, torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64), stride=stride, padding=padding
    )
    return (1.0 / counts).to(dtype)


def avg_pool2d(
    x: Tensor, kernel_size: int, stride: int | None = None, padding: int = 0, count_include_pad: bool = True
) -> Tensor:
    """Average pooling over square windows, ``F.avg_pool2d``'s result with a fast CPU path (see the
    module docstring).

    Args:
        x: (B, C, H, W) feature map.
        kernel_size: window side.
        stride: window step (default ``kernel_size``).
        padding: zero padding on each side (at most ``kernel_size // 2``, as ``F.avg_pool2d``).
        count_include_pad: divide by the whole window (True) or by its non-padding pixels (False).

    Returns:
        (B, C, H_out, W_out) in ``x``'s dtype.
    """
    stride = kernel_size if stride is None else stride
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if kernel_size < 1 or stride < 1 or not 0 <= padding <= kernel_size // 2:
        raise ValueError(
            f"need kernel_size >= 1, stride >= 1 and 0 <= padding <= kernel_size // 2, got "
            f"kernel_size={kernel_size}, stride={stride}, padding={padding}"
        )
    if x.device.type != "cpu" or x.shape[-2] * x.shape[-1] > SMALL_MAP_PIXELS:
        return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=count_include_pad)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    channels, height, width = x.shape[1:]
    weight = torch.ones(channels, 1, kernel_size, kernel_size, dtype=dtype)
    inverse = _inverse_counts(height, width, kernel_size, stride, padding, count_include_pad, dtype)
    with torch.autocast("cpu", enabled=False):
        sums = F.conv2d(x.to(dtype), weight, stride=stride, padding=padding, groups=channels)
        return (sums * inverse).to(x.dtype)


class AvgPool2d(nn.Module):
    """:func:`avg_pool2d` as a module (``nn.AvgPool2d``'s arguments for square windows; no parameters)."""

    def __init__(
        self, kernel_size: int, stride: int | None = None, padding: int = 0, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"count_include_pad={self.count_include_pad}"
        )
