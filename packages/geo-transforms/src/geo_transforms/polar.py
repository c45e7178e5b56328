"""Polar transform of square aerial images into panorama-shaped images (SAFA's geometry).

Convention:
    input (B, C, S, S) -> output (B, C, H, W). With A the aerial image, row i and column j of the
    output sample A at

        r_i = (S/2) * (H - 1 - i) / H,          theta_j = 2*pi*j / W
        row = c + r_i * cos(theta_j),           col = c - r_i * sin(theta_j)

    where c = S/2 (``center="safa"``, SAFA's ``data_preparation.py``) or (S-1)/2
    (``center="pixel"``, the true pixel centre). Row 0 is the outer ring, row H-1 the camera;
    column 0 looks south (down the image), W/4 west, W/2 (the centre column) north, 3W/4 east: a
    clockwise sweep on the map, matching north-centred panoramas. Bilinear, align_corners=True,
    zeros outside the image.

With ``center="pixel"`` and W divisible by 4, ``polar(rot90(A, k)) == roll(polar(A), -k*W/4)``
exactly; with ``"safa"`` only up to a one-pixel misregistration.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_image, check_size
from ._sampling import normalise_pixel_grid, sample_grid

__all__ = ["PolarTransform", "polar_grid", "polar_pixel_map", "polar_transform"]

Center = Literal["safa", "pixel"]


def _center(size: int, center: str) -> float:
    if center == "safa":
        return size / 2.0
    if center == "pixel":
        return (size - 1) / 2.0
    raise ValueError(f"center must be 'safa' (S/2) or 'pixel' ((S-1)/2), got {center!r}")


def polar_pixel_map(
    size: int,
    out_size: tuple[int, int],
    *,
    center: Center = "safa",
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Source pixel coordinates of every polar output pixel, in float64.

    Args:
        size: aerial side S.
        out_size: polar ``(H, W)``.
        center: ``"safa"`` (S/2) or ``"pixel"`` ((S-1)/2).
        device: where to build the map.

    Returns:
        ``(row, col)``: two (H, W) float64 tensors of aerial row and column coordinates.
    """
    height, width = check_size(out_size, "out_size")
    c = _center(size, center)
    i = torch.arange(height, device=device, dtype=torch.float64)
    j = torch.arange(width, device=device, dtype=torch.float64)
    radius = (size / 2.0) * (height - 1 - i) / height
    theta = 2.0 * math.pi * j / width
    row = c + radius[:, None] * torch.cos(theta)[None, :]
    col = c - radius[:, None] * torch.sin(theta)[None, :]
    return row, col


@lru_cache(maxsize=64)
def _cached_polar_grid(
    size: int, out_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> Tensor:
    row, col = polar_pixel_map(size, out_size, center=center, device=device)  # type: ignore[arg-type]
    return normalise_pixel_grid(col, row, size, size)[None].to(dtype)


def polar_grid(
    size: int,
    out_size: tuple[int, int],
    *,
    center: Center = "safa",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The cached normalised sampling grid (1, H, W, 2) of :func:`polar_transform`.

    Built once in float64 per (S, H, W, center, device, dtype) and cast once to ``dtype``. The
    returned tensor is shared: do not modify it in place.
    """
    if not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2 (the aerial side S), got {size!r}")
    out_size = check_size(out_size, "out_size")
    _center(size, center)
    return _cached_polar_grid(size, out_size, center, torch.device(device or "cpu"), dtype)


def polar_transform(aerial: Tensor, out_size: tuple[int, int], *, center: Center = "safa") -> Tensor:
    """Warp square aerial images to polar, panorama-shaped images (SAFA's geometry).

    Args:
        aerial: (B, C, S, S) floating tensor, north up.
        out_size: polar ``(H, W)``, e.g. (112, 616) for SAFA or (128, 512) for DSM.
        center: ``"safa"`` (S/2, reproduces SAFA's maps) or ``"pixel"`` ((S-1)/2, exact
            rotation/flip equivariance).

    Returns:
        (B, C, H, W) tensor of the input's dtype and device; differentiable w.r.t. ``aerial``.

    Example:
        >>> aerial = torch.rand(2, 3, 750, 750)
        >>> polar_transform(aerial, (112, 616)).shape
        torch.Size([2, 3, 112, 616])
    """
    check_image(aerial, "aerial", square=True)
    grid = polar_grid(aerial.shape[-1], out_size, center=center, device=aerial.device, dtype=aerial.dtype)
    return sample_grid(aerial, grid)


class PolarTransform(nn.Module):
    """Module form of :func:`polar_transform`; stores ``out_size`` and ``center`` only."""

    def __init__(self, out_size: tuple[int, int], *, center: Center = "safa") -> None:
        super().__init__()
        self.out_size = check_size(out_size, "out_size")
        _center(2, center)
        self.center = center

    def forward(self, aerial: Tensor) -> Tensor:
        return polar_transform(aerial, self.out_size, center=self.center)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, center={self.center!r}"
