"""Orthographic top-down aerial tiles rendered from an :class:`~geo_bench.world.appearance.Epoch`.

Convention:
    Tiles are north up: row 0 is the northern edge, column 0 the western edge. Pixel ``(i, j)``
    of an ``S x S`` tile at ground sampling distance ``gsd`` (m/px) centred on district metres
    ``(cx, cy)`` looks at ``x = cx + (j - (S - 1) / 2) * gsd``, ``y = cy - (i - (S - 1) / 2) * gsd``:
    the centre is the true pixel centre (S-1)/2. Colours are bilinear in the epoch's ``top``
    raster, labels nearest. A true orthophoto: no building lean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .appearance import Epoch

__all__ = ["bilinear_lookup", "render_aerial"]


def bilinear_lookup(raster: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Bilinear lookup of a (C, n, n) raster (any dtype) at continuous pixel coordinates.

    Args:
        raster: (C, n, n); read as float32.
        rows, cols: (...) continuous row / column coordinates (pixel centres at integers);
            clamped to the raster.

    Returns:
        (C, ...) float32.
    """
    c, n = raster.shape[0], raster.shape[-1]
    flat = raster.reshape(c, -1)
    rows = rows.clamp(0, n - 1)
    cols = cols.clamp(0, n - 1)
    r0, c0 = rows.floor().long().clamp(max=n - 2), cols.floor().long().clamp(max=n - 2)
    fr, fc = (rows - r0).clamp(0, 1), (cols - c0).clamp(0, 1)
    idx = r0 * n + c0
    out = flat[:, idx].float() * ((1 - fr) * (1 - fc))
    out += flat[:, idx + 1].float() * ((1 - fr) * fc)
    out += flat[:, idx + n].float() * (fr * (1 - fc))
    out += flat[:, idx + n + 1].float() * (fr * fc)
    return out


def render_aerial(epoch: Epoch, centres: Tensor, size: int, gsd: float) -> tuple[Tensor, Tensor]:
    """Render B north-up aerial tiles.

    Args:
        epoch: the aerial capture of a district.
        centres: (B, 2) tile centres in district metres (east, north).
        size: tile side S in pixels.
        gsd: ground sampling distance, m/px.

    Returns:
        ``(rgb, seg)``: (B, 3, S, S) float32 in [0, 1] and (B, S, S) int64 class labels.

    Example:
        >>> from geo_bench.world.city import City, CityConfig
        >>> from geo_bench.world.appearance import Epoch, Capture
        >>> ep = Epoch(City(CityConfig(size_m=200, diagonals=0), seed=1), Capture())
        >>> rgb, seg = render_aerial(ep, torch.tensor([[100.0, 100.0]]), 64, 0.5)
        >>> rgb.shape, seg.shape
        (torch.Size([1, 3, 64, 64]), torch.Size([1, 64, 64]))
    """
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"centres must be (B, 2), got {tuple(centres.shape)}")
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    n, res = epoch.n, epoch.res
    # crop a window around each tile from the raster, then resample it with grid_sample
    half_px = (size - 1) / 2 * gsd / res + 2
    win = 2 * math.ceil(half_px) + 2
    centre_rc = torch.stack(
        [(epoch.size - centres[:, 1].double()) / res - 0.5, centres[:, 0].double() / res - 0.5], dim=1
    )
    origin = centre_rc.floor().long() - win // 2  # (B, 2) top-left of each window
    ar = torch.arange(win)
    rr = (origin[:, 0, None] + ar).clamp(0, n - 1)  # (B, win)
    cc = (origin[:, 1, None] + ar).clamp(0, n - 1)
    flat = rr[:, :, None] * n + cc[:, None, :]  # (B, win, win)
    top = epoch.top.reshape(3, -1)[:, flat].permute(1, 0, 2, 3).float()  # (B, 3, win, win)
    cls = epoch.cls.reshape(-1)[flat][:, None].float()
    offs = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * (gsd / res)
    local = centre_rc - origin.double()  # tile centre inside the window, pixels (row, col)
    rows = local[:, 0, None, None] + offs[None, :, None]  # (B, S, 1)
    cols = local[:, 1, None, None] + offs[None, None, :]  # (B, 1, S)
    rows, cols = torch.broadcast_tensors(rows, cols)
    grid = torch.stack([2 * cols / (win - 1) - 1, 2 * rows / (win - 1) - 1], dim=-1).float()
    rgb = F.grid_sample(top, grid, mode="bilinear", padding_mode="border", align_corners=True) / 255.0
    seg = F.grid_sample(cls, grid, mode="nearest", padding_mode="border", align_corners=True)[:, 0].long()
    return rgb.contiguous(), seg
