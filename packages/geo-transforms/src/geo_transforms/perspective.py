"""Pinhole (perspective) views cut out of equirectangular panoramas.

Convention:
    Panorama (B, C, H, W), equirectangular. **Columns** follow the polar transform: the continuous
    column coordinate ``u`` (pixel index, ``u = j`` at the centre of column ``j``) looks at the
    bearing ``phi = 360 * u / W - 180`` degrees, clockwise from north: column 0 south, W/4 west,
    **W/2 north**, 3W/4 east. The panorama wraps around: between column W-1 and column 0 the
    sampler interpolates across the seam (one column is padded circularly), so no black line
    appears at the panorama edge. **Rows** span ``elevation_range = (top, bottom)`` degrees,
    edge to edge: row ``i`` is centred on elevation ``top - (i + 0.5) * (top - bottom) / H``.
    The default ``(90, -90)`` is a full sphere; cropped panoramas (CVUSA's 224x1232 covers only
    224 * 360 / 1232 = 65.5 degrees vertically with square pixels) need their own range, e.g.
    ``(32.7, -32.7)`` if the horizon is the middle row. Rays outside the range sample zeros.

    Camera: output (h, w), square pixels, principal point at the pixel centre ((w-1)/2, (h-1)/2),
    ``fov`` the **horizontal** field of view in degrees, edge to edge, so the focal length is
    ``f = w / (2 tan(fov/2))``. Camera frame as in kornia/OpenCV (x right, y down, z forward).
    ``yaw`` is the bearing of the optical axis, degrees clockwise from north; ``pitch`` tilts the
    axis up (positive) or down; ``roll`` turns the camera clockwise about its axis (the content of
    the view turns counter-clockwise). World frame: x east, y north, z up. Bilinear sampling,
    align_corners=True.

    Views: yaw / pitch / fov / roll are Python numbers or 0-d tensors (one view, output
    (B, C, h, w)), or sequences / tensors of shape (V,) or (B, V) (V views per panorama, output
    (B, V, C, h, w)); they broadcast against each other.

Grids built from Python numbers are cached per (size, out_size, parameters, device, dtype);
tensor parameters are differentiated through (float64 geometry, cast once to the image dtype;
fp16 / bf16 images are sampled at float32 coordinates, since half-precision grids misplace
samples by up to a pixel, and the result is cast back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from kornia.geometry import create_meshgrid
from kornia.geometry.camera import unproject_points
from torch import Tensor, nn

from ._checks import check_image, check_size
from ._sampling import normalise_pixel_grid, sample_grid

__all__ = ["PanoramaToPerspective", "camera_rays", "panorama_to_perspective"]

Param = float | Sequence[float] | Tensor


# --------------------------------------------------------------------------------------------
# shared camera model (also used by ground_plane.py)


def _as_param(value: object, name: str) -> float | tuple[float, ...] | Tensor:
    """Validate one view parameter: a real number, a sequence of numbers or a floating tensor."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got bool")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return float(value)
    if isinstance(value, Tensor):
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        if value.ndim > 2:
            raise ValueError(f"{name} must have shape (), (V,) or (B, V), got {tuple(value.shape)}")
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must be a non-empty sequence of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(value).__name__}")


def _is_static(*values: object) -> bool:
    return not any(isinstance(v, Tensor) for v in values)


def _is_multi_view(*values: object) -> bool:
    return any(isinstance(v, tuple) or (isinstance(v, Tensor) and v.ndim > 0) for v in values)


def _view_tensor(value: float | tuple[float, ...] | Tensor, name: str, device: torch.device) -> Tensor:
    """A parameter as a float64 (B' or 1, V or 1) tensor on ``device`` (differentiable)."""
    t = value if isinstance(value, Tensor) else torch.tensor(value, dtype=torch.float64)
    t = t.to(device=device, dtype=torch.float64)
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t[None, :]
    return t


def _broadcast_views(values: dict[str, Tensor], batch: int | None) -> list[Tensor]:
    try:
        out = torch.broadcast_tensors(*values.values())
    except RuntimeError:
        shapes = {k: tuple(v.shape) for k, v in values.items()}
        raise ValueError(f"view parameters must broadcast to (B, V); got (as 2-D) {shapes}") from None
    if batch is not None and out[0].shape[0] not in (1, batch):
        raise ValueError(
            f"view parameters of shape (B, V) need B = 1 or the image batch {batch}, got {out[0].shape[0]}"
        )
    return list(out)


def _check_fov(fov: float | tuple[float, ...] | Tensor) -> None:
    values = fov if isinstance(fov, tuple) else (fov,) if isinstance(fov, float) else ()
    if any(not 0.0 < v < 180.0 for v in values):
        raise ValueError(f"fov must be in (0, 180) degrees (horizontal field of view), got {fov!r}")


def camera_rays(
    yaw: Tensor,
    pitch: Tensor,
    fov: Tensor,
    roll: Tensor,
    out_size: tuple[int, int],
) -> Tensor:
    """World-frame ray directions of every pixel of pinhole views (float64, differentiable).

    The pixel grid comes from :func:`kornia.utils.create_meshgrid` and is unprojected with
    :func:`kornia.geometry.camera.unproject_points` (intrinsics ``f = w / (2 tan(fov/2))``,
    principal point ((w-1)/2, (h-1)/2)); the camera-frame rays (x right, y down, z forward,
    unit depth) are then turned by roll, pitch and yaw into the world frame (x east, y north,
    z up).

    Args:
        yaw, pitch, fov, roll: float64 tensors in degrees, all of one shape (B', V).
        out_size: ``(h, w)`` of the view.

    Returns:
        (B', V, h, w, 3) float64 rays (east, north, up), not normalised.
    """
    height, width = check_size(out_size, "out_size")
    device = yaw.device
    half = torch.deg2rad(fov) / 2.0
    focal = (width / 2.0) / torch.tan(half)  # (B', V)
    zeros, ones = torch.zeros_like(focal), torch.ones_like(focal)
    cx = torch.full_like(focal, (width - 1) / 2.0)
    cy = torch.full_like(focal, (height - 1) / 2.0)
    intrinsics = torch.stack(
        (
            torch.stack((focal, zeros, cx), -1),
            torch.stack((zeros, focal, cy), -1),
            torch.stack((zeros, zeros, ones), -1),
        ),
        -2,
    )  # (B', V, 3, 3)
    pixels = create_meshgrid(height, width, normalized_coordinates=False, device=device, dtype=torch.float64)
    pixels = pixels[:, None]  # (1, 1, h, w, 2), (x, y) order
    depth = torch.ones_like(pixels[..., :1])
    rays_cam = unproject_points(pixels, depth, intrinsics[:, :, None, None])  # (B', V, h, w, 3)

    # camera (x right, y down, z forward) -> world (east, north, up) for yaw = pitch = roll = 0
    base = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64, device=device
    )
    y, p, r = torch.deg2rad(yaw), torch.deg2rad(pitch), torch.deg2rad(roll)
    cy_, sy = torch.cos(y), torch.sin(y)
    cp, sp = torch.cos(p), torch.sin(p)
    cr, sr = torch.cos(r), torch.sin(r)

    def mat(rows: list[list[Tensor]]) -> Tensor:
        return torch.stack([torch.stack(row, -1) for row in rows], -2)

    # roll about the camera z axis (clockwise in the image for positive roll)
    r_roll = mat([[cr, -sr, zeros], [sr, cr, zeros], [zeros, zeros, ones]])
    # pitch about the east axis: north tilts towards up
    r_pitch = mat([[ones, zeros, zeros], [zeros, cp, -sp], [zeros, sp, cp]])
    # yaw clockwise seen from above: north turns towards east
    r_yaw = mat([[cy_, sy, zeros], [-sy, cy_, zeros], [zeros, zeros, ones]])
    rotation = r_yaw @ r_pitch @ base @ r_roll  # (B', V, 3, 3)
    return torch.einsum("bvij,bvhwj->bvhwi", rotation, rays_cam)


def _view_params(
    yaw: object, pitch: object, fov: object, roll: object
) -> tuple[float | tuple[float, ...] | Tensor, ...]:
    values = (
        _as_param(yaw, "yaw"),
        _as_param(pitch, "pitch"),
        _as_param(fov, "fov"),
        _as_param(roll, "roll"),
    )
    _check_fov(values[2])
    return values


# --------------------------------------------------------------------------------------------
# panorama -> perspective


def _check_elevation_range(elevation_range: object) -> tuple[float, float]:
    if (
        not isinstance(elevation_range, Sequence)
        or len(elevation_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in elevation_range)
    ):
        raise TypeError(f"elevation_range must be a pair (top, bottom) in degrees, got {elevation_range!r}")
    top, bottom = float(elevation_range[0]), float(elevation_range[1])
    if not (90.0 >= top > bottom >= -90.0):
        raise ValueError(
            f"elevation_range must satisfy 90 >= top > bottom >= -90 degrees, got {(top, bottom)}"
        )
    return top, bottom


def _perspective_pixel_map(
    size: tuple[int, int],
    views: list[Tensor],
    out_size: tuple[int, int],
    elevation_range: tuple[float, float],
) -> Tensor:
    """Normalised (B', h, V*w, 2) grid into the circularly padded (H, W+1) panorama."""
    height, width = size
    yaw, pitch, fov, roll = views
    rays = camera_rays(yaw, pitch, fov, roll, out_size)
    east, north, up = rays.unbind(-1)
    bearing = torch.rad2deg(torch.atan2(east, north))  # clockwise from north, (-180, 180]
    elevation = torch.rad2deg(torch.atan2(up, torch.sqrt(east * east + north * north)))
    u = torch.remainder(width * (bearing + 180.0) / 360.0, float(width))  # in [0, W]: W is the padded column
    top, bottom = elevation_range
    v = (top - elevation) / (top - bottom) * height - 0.5
    inside = (v >= -0.5) & (v <= height - 0.5)
    v = torch.where(inside, v.clamp(0.0, height - 1.0), torch.full_like(v, -2.0))  # -2: zeros
    grid = normalise_pixel_grid(u, v, height, width + 1)  # (B', V, h, w, 2)
    b, n_views, h, w, _ = grid.shape
    return grid.permute(0, 2, 1, 3, 4).reshape(b, h, n_views * w, 2)


@lru_cache(maxsize=64)
def _cached_perspective_grid(
    size: tuple[int, int],
    params: tuple[float | tuple[float, ...], ...],
    out_size: tuple[int, int],
    elevation_range: tuple[float, float],
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    views = _broadcast_views(
        {n: _view_tensor(p, n, device) for n, p in zip(("yaw", "pitch", "fov", "roll"), params)}, None
    )
    return _perspective_pixel_map(size, views, out_size, elevation_range).to(dtype)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _grid_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the cached sampling grid for images of ``dtype``: float32 for fp16 / bf16.

    Half-precision normalised coordinates are off by up to 2**-9 (bf16) of the image size, i.e.
    more than a pixel on a 750 px tile, so low-precision images are sampled in float32.
    """
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _sample_precise(image: Tensor, grid: Tensor) -> Tensor:
    """:func:`sample_grid`, in float32 for fp16 / bf16 images (result cast back to their dtype)."""
    if image.dtype in _LOW_PRECISION:
        return sample_grid(image.float(), grid.float()).to(image.dtype)
    return sample_grid(image, grid)


def _pad_circular(pano: Tensor) -> Tensor:
    return torch.cat((pano, pano[..., :1]), dim=-1)


def panorama_to_perspective(
    pano: Tensor,
    yaw: Param,
    pitch: Param,
    fov: Param,
    out_size: tuple[int, int],
    *,
    roll: Param = 0.0,
    elevation_range: tuple[float, float] = (90.0, -90.0),
) -> Tensor:
    """Render pinhole views of equirectangular panoramas (see the module Convention).

    Args:
        pano: (B, C, H, W) floating panorama, north at the centre column.
        yaw: bearing of the optical axis, degrees clockwise from north (0 north, 90 east).
        pitch: elevation of the optical axis, degrees (positive up).
        fov: horizontal field of view, degrees in (0, 180).
        out_size: ``(h, w)`` of each view.
        roll: rotation about the optical axis, degrees (positive: camera turns clockwise).
        elevation_range: ``(top, bottom)`` elevations in degrees of the top edge of row 0 and the
            bottom edge of row H-1; ``(90, -90)`` for a full-sphere panorama.

    Each of yaw / pitch / fov / roll is a number or 0-d tensor (one view), or a sequence or tensor
    of shape (V,) or (B, V) (several views); tensors are differentiated through.

    Returns:
        (B, C, h, w) for a single view, else (B, V, C, h, w); the panorama's dtype and device.

    Example:
        >>> pano = torch.rand(2, 3, 64, 128)
        >>> panorama_to_perspective(pano, 90.0, 0.0, 90.0, (32, 32)).shape
        torch.Size([2, 3, 32, 32])
        >>> panorama_to_perspective(pano, [0.0, 90.0, 180.0, 270.0], 0.0, 90.0, (32, 32)).shape
        torch.Size([2, 4, 3, 32, 32])
    """
    check_image(pano, "pano")
    out_size = check_size(out_size, "out_size")
    elevation_range = _check_elevation_range(elevation_range)
    params = _view_params(yaw, pitch, fov, roll)
    size = (pano.shape[-2], pano.shape[-1])
    if _is_static(*params):
        grid = _cached_perspective_grid(
            size, params, out_size, elevation_range, pano.device, _grid_dtype(pano.dtype)
        )
    else:
        names = ("yaw", "pitch", "fov", "roll")
        views = _broadcast_views(
            {n: _view_tensor(p, n, pano.device) for n, p in zip(names, params)}, pano.shape[0]
        )
        grid = _perspective_pixel_map(size, views, out_size, elevation_range)
    out = _sample_precise(_pad_circular(pano), grid)  # (B, C, h, V*w)
    if not _is_multi_view(*params):
        return out
    b, c, h, vw = out.shape
    w = out_size[1]
    return out.reshape(b, c, h, vw // w, w).permute(0, 3, 1, 2, 4).contiguous()


class PanoramaToPerspective(nn.Module):
    """Module form of :func:`panorama_to_perspective`; stores the views and options only.

    Tensor parameters are registered as buffers (so ``.to(device)`` moves them); wrap them in
    :class:`torch.nn.Parameter` yourself to learn them.
    """

    # set in __init__ as buffers (tensors) or plain attributes (numbers)
    yaw: float | tuple[float, ...] | Tensor
    pitch: float | tuple[float, ...] | Tensor
    fov: float | tuple[float, ...] | Tensor
    roll: float | tuple[float, ...] | Tensor

    def __init__(
        self,
        yaw: Param,
        pitch: Param,
        fov: Param,
        out_size: tuple[int, int],
        *,
        roll: Param = 0.0,
        elevation_range: tuple[float, float] = (90.0, -90.0),
    ) -> None:
        super().__init__()
        self.out_size = check_size(out_size, "out_size")
        self.elevation_range = _check_elevation_range(elevation_range)
        for name, value in zip(("yaw", "pitch", "fov", "roll"), _view_params(yaw, pitch, fov, roll)):
            if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                self.register_buffer(name, value)
            else:
                setattr(self, name, value)

    def forward(self, pano: Tensor) -> Tensor:
        return panorama_to_perspective(
            pano,
            self.yaw,
            self.pitch,
            self.fov,
            self.out_size,
            roll=self.roll,
            elevation_range=self.elevation_range,
        )

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, elevation_range={self.elevation_range}"
