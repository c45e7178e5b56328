"""Grid sampling shared by every mapping: one place for the align_corners convention.

All maps in this package are built in float64 pixel coordinates of the *source* image and stored
normalised with the corner-to-corner convention (``align_corners=True``): pixel x in [0, W-1] maps
to 2x/(W-1) - 1. Sampling goes through :func:`kornia.geometry.transform.remap` with
``align_corners=True`` (kornia normalises pixel maps with that convention whatever flag it gets,
so any other flag would shift the image; see the ecosystem notes).
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import remap
from torch import Tensor

__all__ = ["normalise_pixel_grid", "sample_grid"]


def normalise_pixel_grid(x: Tensor, y: Tensor, height: int, width: int) -> Tensor:
    """Stack pixel coordinates into a normalised ``(..., 2)`` grid in (x=column, y=row) order.

    Args:
        x: column coordinates in source pixels, any shape.
        y: row coordinates in source pixels, same shape as ``x``.
        height: source image height ``H_in`` (> 1).
        width: source image width ``W_in`` (> 1).

    Returns:
        ``(..., 2)`` tensor with ``2x/(W_in-1)-1`` and ``2y/(H_in-1)-1``.
    """
    return torch.stack((2.0 * x / (width - 1) - 1.0, 2.0 * y / (height - 1) - 1.0), dim=-1)


def sample_grid(
    image: Tensor, grid: Tensor, *, mode: str = "bilinear", padding_mode: str = "zeros"
) -> Tensor:
    """Sample ``image`` (B, C, H_in, W_in) at a normalised grid (1 or B, H, W, 2) -> (B, C, H, W).

    A grid with batch size 1 is expanded over the batch, so one cached buffer serves every image.
    The grid is cast to the image dtype; gradients flow to both the image and the grid.
    """
    grid = grid.to(dtype=image.dtype)
    if grid.shape[0] == 1 and image.shape[0] != 1:
        grid = grid.expand(image.shape[0], -1, -1, -1)
    return remap(
        image,
        grid[..., 0],
        grid[..., 1],
        mode=mode,
        padding_mode=padding_mode,
        align_corners=True,
        normalized_coordinates=True,
    )
