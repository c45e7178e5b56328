"""Flat-ground projection of aerial images into the view of a ground-level pinhole camera.

Convention:
    Aerial (B, C, S, S), **north up** (row 0 is the northern edge, column S-1 the eastern edge),
    ground resolution ``meters_per_pixel``. The camera stands at the aerial centre ``c``
    (``center="safa"``: c = S/2, the polar transform's default; ``"pixel"``: c = (S-1)/2, the
    true pixel centre) at ``camera_height`` metres above a flat ground plane. A ground point
    ``(east, north)`` metres from the camera is aerial pixel ``col = c + east / m``,
    ``row = c - north / m`` (m = metres per pixel).

    The camera is the one of :func:`~geo_transforms.perspective.panorama_to_perspective`:
    output (h, w), square pixels, principal point at the pixel centre, horizontal ``fov`` in
    degrees, ``yaw`` = bearing of the optical axis clockwise from north, ``pitch`` positive up,
    ``roll`` positive clockwise; kornia/OpenCV camera frame (x right, y down, z forward).
    At yaw 0 the view looks north, so ground east of the camera appears right of the centre
    column, and at yaw 90 ground east of the camera is on the centre column.

    Each pixel below the horizon hits the ground plane; that map, view pixel -> aerial pixel,
    is the homography :func:`ground_plane_homography`. Pixels at or above the horizon, and rays
    that land outside the tile, give zeros (``return_mask=True`` also returns where the view is
    valid). Bilinear, align_corners=True.

Views broadcast like :func:`~geo_transforms.perspective.panorama_to_perspective`: scalar view
parameters give (B, C, h, w), (V,) or (B, V) ones give (B, V, C, h, w). ``camera_height`` and
``meters_per_pixel`` are numbers, 0-d tensors or (B,) tensors (one per aerial image). fp16 / bf16
images are sampled at float32 coordinates (the result is cast back).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_image, check_size
from ._sampling import normalise_pixel_grid
from .perspective import (
    Param,
    _as_param,
    _broadcast_views,
    _grid_dtype,
    _is_multi_view,
    _is_static,
    _sample_precise,
    _view_params,
    _view_tensor,
    camera_rays,
)

__all__ = ["GroundPlaneView", "ground_plane_homography", "ground_plane_view"]

Center = Literal["safa", "pixel"]


def _center(size: int, center: str) -> float:
    if center == "safa":
        return size / 2.0
    if center == "pixel":
        return (size - 1) / 2.0
    raise ValueError(f"center must be 'safa' (S/2) or 'pixel' ((S-1)/2), got {center!r}")


def _positive(value: object, name: str) -> float | Tensor:
    """A positive number, or a real tensor of shape () or (B,)."""
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
        if value.ndim > 1:
            raise ValueError(f"{name} must have shape () or (B,), got {tuple(value.shape)}")
        return value
    value = _as_param(value, name)
    if not isinstance(value, float):
        raise TypeError(f"{name} must be a number or a tensor of shape () or (B,), got {value!r}")
    if value <= 0.0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _per_image(value: float | Tensor, device: torch.device, batch: int | None) -> Tensor:
    """float64 (B' or 1, 1) tensor."""
    t = value if isinstance(value, Tensor) else torch.tensor(value, dtype=torch.float64)
    t = t.to(device=device, dtype=torch.float64).reshape(-1, 1)
    if batch is not None and t.shape[0] not in (1, batch):
        raise ValueError(
            f"per-image parameters must have shape () or (B,) with B = {batch}, got {t.shape[0]}"
        )
    return t


def _aerial_from_rays(
    rays: Tensor, height: Tensor, mpp: Tensor, size: int, c: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Ray-plane intersection: (B', V, h, w, 3) rays -> aerial (col, row) and below-horizon mask."""
    east, north, up = rays.unbind(-1)
    below = up < 0.0
    safe_up = torch.where(below, up, torch.full_like(up, -1.0))
    scale = (height / mpp)[..., None, None] / -safe_up  # aerial pixels per unit ray, (B', V, h, w)
    col = c + east * scale
    row = c - north * scale
    # Far-away or above-horizon rays: park them just outside the tile (zeros, finite in fp16).
    col = torch.where(below, col, torch.full_like(col, -2.0)).clamp(-2.0, size + 1.0)
    row = torch.where(below, row, torch.full_like(row, -2.0)).clamp(-2.0, size + 1.0)
    return col, row, below


def _ground_grid(
    size: int, views: list[Tensor], height: Tensor, mpp: Tensor, out_size: tuple[int, int], c: float
) -> tuple[Tensor, Tensor]:
    """Normalised (B', h, V*w, 2) grid and (B', h, V*w) validity mask."""
    yaw, pitch, fov, roll = views
    rays = camera_rays(yaw, pitch, fov, roll, out_size)
    col, row, below = _aerial_from_rays(rays, height, mpp, size, c)
    valid = below & (col >= 0.0) & (col <= size - 1.0) & (row >= 0.0) & (row <= size - 1.0)
    grid = normalise_pixel_grid(col, row, size, size)
    b, n_views, h, w, _ = grid.shape
    grid = grid.permute(0, 2, 1, 3, 4).reshape(b, h, n_views * w, 2)
    valid = valid.permute(0, 2, 1, 3).reshape(b, h, n_views * w)
    return grid, valid


@lru_cache(maxsize=64)
def _cached_ground_grid(
    size: int,
    params: tuple[float | tuple[float, ...], ...],
    height: float,
    mpp: float,
    out_size: tuple[int, int],
    c: float,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    names = ("yaw", "pitch", "fov", "roll")
    views = _broadcast_views({n: _view_tensor(p, n, device) for n, p in zip(names, params)}, None)
    h = torch.tensor([[height]], dtype=torch.float64, device=device)
    m = torch.tensor([[mpp]], dtype=torch.float64, device=device)
    grid, valid = _ground_grid(size, views, h, m, out_size, c)
    return grid.to(dtype), valid


def ground_plane_homography(
    size: int,
    yaw: Param,
    fov: Param,
    out_size: tuple[int, int],
    *,
    camera_height: float | Tensor,
    meters_per_pixel: float | Tensor,
    pitch: Param = 0.0,
    roll: Param = 0.0,
    center: Center = "safa",
) -> Tensor:
    """The homography from view pixels to aerial pixels for the ground plane (float64).

    ``H @ (x, y, 1)`` for a view pixel (x = column, y = row) is proportional to
    ``(col, row, 1)`` of the aerial pixel it sees, **with a positive last component exactly for
    pixels below the horizon**; pixels with a non-positive last component see the sky, which a
    plain homography warp (e.g. :func:`kornia.geometry.transform.warp_perspective` with
    ``inverse(H)``) would fill with a mirrored ground: use :func:`ground_plane_view` for images.

    ``H = A @ diag(1, 1, -1/h) @ R @ K^-1`` with K the intrinsics, R the camera-to-world
    rotation (east, north, up), h the camera height and ``A`` the metres -> aerial pixel map
    ``[[1/m, 0, c], [0, -1/m, c], [0, 0, 1]]``.

    Returns:
        (B', V, 3, 3) float64, with B' the batch of the parameters (1 for scalars).
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 2:
        raise ValueError(f"size must be an int >= 2 (the aerial side S), got {size!r}")
    out_size = check_size(out_size, "out_size")
    params = _view_params(yaw, pitch, fov, roll)
    height = _positive(camera_height, "camera_height")
    mpp = _positive(meters_per_pixel, "meters_per_pixel")
    c = _center(size, center)
    device = next((p.device for p in (*params, height, mpp) if isinstance(p, Tensor)), torch.device("cpu"))
    names = ("yaw", "pitch", "fov", "roll")
    views = _broadcast_views({n: _view_tensor(p, n, device) for n, p in zip(names, params)}, None)
    # R @ K^-1 from the rays of the principal point and of unit pixel steps (exact: rays are affine in x, y)
    h_out, w_out = out_size
    v_yaw, v_pitch, v_fov, v_roll = views
    rays = camera_rays(v_yaw, v_pitch, v_fov, v_roll, (h_out, w_out))  # (B', V, h, w, 3)
    origin = rays[:, :, 0, 0]
    dx = rays[:, :, 0, 1] - origin if w_out > 1 else None
    dy = rays[:, :, 1, 0] - origin if h_out > 1 else None
    if dx is None or dy is None:
        raise ValueError(f"out_size must be at least 2x2 to define a homography, got {out_size}")
    rk = torch.stack((dx, dy, origin), -1)  # columns: d/dx, d/dy, ray(0, 0) -> (B', V, 3, 3)
    hh = _per_image(height, device, None)[..., None, None]
    m = _per_image(mpp, device, None)[..., None, None]
    zeros, ones = torch.zeros_like(m), torch.ones_like(m)
    a = torch.cat(
        (
            torch.cat((1.0 / m, zeros, zeros + c), -1),
            torch.cat((zeros, -1.0 / m, zeros + c), -1),
            torch.cat((zeros, zeros, ones), -1),
        ),
        -2,
    )
    p = torch.cat(
        (
            torch.cat((ones, zeros, zeros), -1),
            torch.cat((zeros, ones, zeros), -1),
            torch.cat((zeros, zeros, -1.0 / hh), -1),
        ),
        -2,
    )
    return a @ p @ rk


def ground_plane_view(
    aerial: Tensor,
    yaw: Param,
    fov: Param,
    out_size: tuple[int, int],
    *,
    camera_height: float | Tensor,
    meters_per_pixel: float | Tensor,
    pitch: Param = 0.0,
    roll: Param = 0.0,
    center: Center = "safa",
    return_mask: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Project aerial images onto a flat ground plane seen by a pinhole camera at the centre.

    Args:
        aerial: (B, C, S, S) floating tensor, north up.
        yaw: bearing of the optical axis, degrees clockwise from north.
        fov: horizontal field of view, degrees in (0, 180).
        out_size: ``(h, w)`` of each view.
        camera_height: metres above the ground (> 0); number, or tensor () / (B,).
        meters_per_pixel: ground resolution of the aerial image (> 0); number or tensor () / (B,).
        pitch: degrees, positive up; use a negative pitch to see more ground.
        roll: degrees, positive clockwise.
        center: camera position ``"safa"`` (S/2) or ``"pixel"`` ((S-1)/2).
        return_mask: also return the boolean validity mask (below the horizon and inside the tile).

    Returns:
        views (B, C, h, w) or (B, V, C, h, w) (see the module Convention), and with
        ``return_mask`` the mask (B, 1, h, w) or (B, V, 1, h, w) of dtype bool.

    Example:
        >>> aerial = torch.rand(2, 3, 64, 64)
        >>> view = ground_plane_view(aerial, 90.0, 90.0, (32, 48), camera_height=2.0,
        ...                          meters_per_pixel=0.5, pitch=-30.0)
        >>> view.shape
        torch.Size([2, 3, 32, 48])
    """
    check_image(aerial, "aerial", square=True)
    out_size = check_size(out_size, "out_size")
    params = _view_params(yaw, pitch, fov, roll)
    height = _positive(camera_height, "camera_height")
    mpp = _positive(meters_per_pixel, "meters_per_pixel")
    size = aerial.shape[-1]
    c = _center(size, center)
    if not isinstance(return_mask, bool):
        raise TypeError(f"return_mask must be a bool, got {type(return_mask).__name__}")
    if _is_static(*params, height, mpp):
        grid, valid = _cached_ground_grid(
            size, params, height, mpp, out_size, c, aerial.device, _grid_dtype(aerial.dtype)
        )
    else:
        names = ("yaw", "pitch", "fov", "roll")
        batch = aerial.shape[0]
        views = _broadcast_views({n: _view_tensor(p, n, aerial.device) for n, p in zip(names, params)}, batch)
        h = _per_image(height, aerial.device, batch)
        m = _per_image(mpp, aerial.device, batch)
        grid, valid = _ground_grid(size, views, h, m, out_size, c)
    out = _sample_precise(aerial, grid)  # (B, C, h, V*w)
    out = out * valid[:, None].to(out.dtype)
    b, ch, h_out, vw = out.shape
    w_out = out_size[1]
    mask = valid[:, None].expand(b, 1, h_out, vw)
    if _is_multi_view(*params):
        out = out.reshape(b, ch, h_out, vw // w_out, w_out).permute(0, 3, 1, 2, 4).contiguous()
        mask = mask.reshape(b, 1, h_out, vw // w_out, w_out).permute(0, 3, 1, 2, 4).contiguous()
    return (out, mask) if return_mask else out


class GroundPlaneView(nn.Module):
    """Module form of :func:`ground_plane_view`; stores the views and options only."""

    # set in __init__ as buffers (tensors) or plain attributes (numbers)
    yaw: float | tuple[float, ...] | Tensor
    fov: float | tuple[float, ...] | Tensor
    pitch: float | tuple[float, ...] | Tensor
    roll: float | tuple[float, ...] | Tensor
    camera_height: float | Tensor
    meters_per_pixel: float | Tensor

    def __init__(
        self,
        yaw: Param,
        fov: Param,
        out_size: tuple[int, int],
        *,
        camera_height: float | Tensor,
        meters_per_pixel: float | Tensor,
        pitch: Param = 0.0,
        roll: Param = 0.0,
        center: Center = "safa",
        return_mask: bool = False,
    ) -> None:
        super().__init__()
        self.out_size = check_size(out_size, "out_size")
        _center(2, center)
        self.center = center
        self.return_mask = return_mask
        options = {
            "yaw": _as_param(yaw, "yaw"),
            "fov": _as_param(fov, "fov"),
            "pitch": _as_param(pitch, "pitch"),
            "roll": _as_param(roll, "roll"),
            "camera_height": _positive(camera_height, "camera_height"),
            "meters_per_pixel": _positive(meters_per_pixel, "meters_per_pixel"),
        }
        _view_params(options["yaw"], options["pitch"], options["fov"], options["roll"])
        for name, value in options.items():
            if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                self.register_buffer(name, value)
            else:
                setattr(self, name, value)

    def forward(self, aerial: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return ground_plane_view(
            aerial,
            self.yaw,
            self.fov,
            self.out_size,
            camera_height=self.camera_height,
            meters_per_pixel=self.meters_per_pixel,
            pitch=self.pitch,
            roll=self.roll,
            center=self.center,
            return_mask=self.return_mask,
        )

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, center={self.center!r}"
