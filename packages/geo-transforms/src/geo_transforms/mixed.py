"""Mixed perspective-polar mapping of aerial images (our design of SMDT's "front view").

SMDT (Tian et al., ICME'22) converts aerial images to a panorama-shaped "front view" by mixing
polar and perspective mapping; the maths was never released. This module is our own,
documented design: SAFA's polar geometry for the far field (upper rows) blending into a
ground-plane (perspective) near field in the bottom band, continuous at the band boundary.

Convention:
    input (B, C, S, S), north up -> output (B, C, H, W). Columns are exactly the polar
    transform's: column j looks at bearing theta_j = 2*pi*j/W from south, clockwise (col 0
    south, W/4 west, W/2 north, 3W/4 east), so every output column samples one ray from the
    camera at the aerial centre c (``"safa"``: S/2, ``"pixel"``: (S-1)/2). Only the **radius**
    sampled by each row changes. Row i samples aerial pixel

        row = c + r(i) * cos(theta_j),    col = c - r(i) * sin(theta_j)

    with the radius profile (all radii in aerial pixels, ``h = camera_height / meters_per_pixel``):

        r_polar(i) = (S/2) (H-1-i) / H                         SAFA's polar radius
        i_b = (H-1) (1 - near_fraction)                        first row of the near-field band
        t(i) = clamp((i - i_b) / ((H-1) near_fraction), 0, 1)  0 at the boundary, 1 at row H-1
        alpha(t) = alpha_b + (pi/2 - alpha_b) t,  alpha_b = atan(h / r_polar(i_b))
        r_persp(i) = h / tan(alpha(t))                         ground-plane ray of depression alpha
        w(t) = smoothstep(t / blend)  (a step at t = 0 when blend = 0)
        r(i) = r_polar(i) + w(t) (r_persp(i) - r_polar(i))

    So the near-field rows are what an equirectangular panorama camera at height h sees of the
    ground within the band radius: rows are linear in depression angle, from alpha_b at the
    boundary (where the ground ray lands exactly on the polar radius) down to the nadir at the
    bottom row. r_persp <= r_polar in the band (cot is convex), hence every near-field row is a
    **horizontal stretch** of the polar row by ``r_polar(i) / r(i) >= 1`` (see
    :func:`mixed_radius_profile`); roads therefore widen towards the bottom edge like
    perspective foreshortening (straight, trapezoid edges near the boundary), instead of the
    polar map's hyperbolic widening. r(i) is monotone, equals r_polar above the band, and is
    continuous at the boundary; with ``blend > 0`` its slope is continuous too (no seam, no
    crease). ``near_fraction = 0`` is exactly :func:`~geo_transforms.polar.polar_transform`.
    Because the geometry is per column in bearing, ``center="pixel"`` keeps the polar
    transform's exact identity ``mixed(rot90(A, k)) == roll(mixed(A), -k*W/4)``.
    Bilinear, align_corners=True, zeros outside the image.

Parameters are numbers (the grid is cached per size/device/dtype/parameters) or tensors of
shape () or (B,) (differentiable, e.g. to learn the camera height). fp16 / bf16 images are
sampled at float32 coordinates (the result is cast back).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._checks import check_image, check_size
from ._sampling import normalise_pixel_grid
from .perspective import _grid_dtype, _sample_precise
from .polar import polar_pixel_map, polar_transform

__all__ = [
    "MixedParams",
    "MixedPerspectivePolar",
    "mixed_perspective_polar",
    "mixed_pixel_map",
    "mixed_radius_profile",
]

Center = Literal["safa", "pixel"]
_NAMES = ("near_fraction", "camera_height", "meters_per_pixel", "blend")


@dataclass(frozen=True)
class MixedParams:
    """Parameters of the mixed perspective-polar mapping (record them with every result).

    Attributes:
        near_fraction: fraction of the rows, in [0, 1], in the near-field band at the bottom.
            0 gives the plain polar transform. Default 0.4: SMDT's figure keeps the upper ~60% polar.
        camera_height: height of the virtual ground camera above the ground, metres (> 0).
        meters_per_pixel: ground resolution of the aerial image, metres per pixel (> 0). Only
            ``camera_height / meters_per_pixel`` (the height in aerial pixels) matters; the
            defaults (2.5 m at 0.1 m/px, about a zoom-20 tile such as VIGOR's 0.114 m/px: 25 px) are
            illustrative, not calibrated to a dataset.
        blend: fraction of the band, in [0, 1], over which polar blends smoothly into the
            ground-plane profile; 0 switches at the boundary (continuous, but with a kink).
        center: ``"safa"`` (S/2, like :func:`~geo_transforms.polar.polar_transform`'s default)
            or ``"pixel"`` ((S-1)/2, exact rot90 equivariance).
    """

    near_fraction: float | Tensor = 0.4
    camera_height: float | Tensor = 2.5
    meters_per_pixel: float | Tensor = 0.1
    blend: float | Tensor = 0.25
    center: Center = "safa"

    def __post_init__(self) -> None:
        _number_or_tensor(self.near_fraction, "near_fraction", 0.0, 1.0)
        _number_or_tensor(self.camera_height, "camera_height", 0.0, math.inf, open_low=True)
        _number_or_tensor(self.meters_per_pixel, "meters_per_pixel", 0.0, math.inf, open_low=True)
        _number_or_tensor(self.blend, "blend", 0.0, 1.0)
        if self.center not in ("safa", "pixel"):
            raise ValueError(f"center must be 'safa' (S/2) or 'pixel' ((S-1)/2), got {self.center!r}")

    @property
    def is_static(self) -> bool:
        """True when every parameter is a Python number (the grid can be cached)."""
        return not any(
            isinstance(v, Tensor)
            for v in (self.near_fraction, self.camera_height, self.meters_per_pixel, self.blend)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python record (tensors become floats or lists) for a results file."""
        out = asdict(self)
        return {k: (v.detach().cpu().tolist() if isinstance(v, Tensor) else v) for k, v in out.items()}


def _number_or_tensor(value: object, name: str, low: float, high: float, *, open_low: bool = False) -> None:
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
        if value.ndim > 1:
            raise ValueError(f"{name} must have shape () or (B,), got {tuple(value.shape)}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number or a tensor of shape () or (B,), got {type(value).__name__}"
        )
    ok = (low < value if open_low else low <= value) and value <= high
    if not ok or not -math.inf < value < math.inf:  # (not math.isfinite: torch.compile)
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")


def _column(value: float | Tensor, device: torch.device | None) -> Tensor:
    t = value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)
    return t.to(device=device, dtype=torch.float64).reshape(-1, 1)


def mixed_radius_profile(
    size: int, height: int, params: MixedParams | None = None, *, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Sampled radius per output row, and SAFA's polar radius for comparison.

    Args:
        size: aerial side S.
        height: output rows H.
        params: the mapping's parameters (defaults: ``MixedParams()``).
        device: where to build the profile.

    Returns:
        ``(radius, polar_radius)``: float64 tensors (B', H) and (1, H) in aerial pixels, B' = 1
        for number parameters. ``polar_radius / radius`` is the horizontal stretch of each row
        relative to the polar transform (1 above the band).
    """
    params = params or MixedParams()
    if not isinstance(size, int) or isinstance(size, bool) or size < 2:
        raise ValueError(f"size must be an int >= 2 (the aerial side S), got {size!r}")
    if not isinstance(height, int) or isinstance(height, bool) or height < 1:
        raise ValueError(f"height must be a positive int (output rows H), got {height!r}")
    device = torch.device(device) if device is not None else None
    i = torch.arange(height, device=device, dtype=torch.float64)[None, :]  # (1, H)
    r_polar = (size / 2.0) * (height - 1 - i) / height
    near = _column(params.near_fraction, device)
    h_px = _column(params.camera_height, device) / _column(params.meters_per_pixel, device)
    blend = _column(params.blend, device)

    n_band = (height - 1) * near  # band length in rows, (B', 1)
    has_band = n_band > 0
    n_safe = torch.where(has_band, n_band, torch.ones_like(n_band))
    i_b = (height - 1) - n_band
    t = ((i - i_b) / n_safe).clamp(0.0, 1.0)
    in_band = has_band & (i > i_b)

    r_b = (size / 2.0) * n_band / height  # polar radius at the boundary
    alpha_b = torch.atan2(h_px, r_b)
    alpha = alpha_b + (math.pi / 2 - alpha_b) * t
    r_persp = h_px * torch.cos(alpha) / torch.sin(alpha)

    has_blend = blend > 0
    x = (t / torch.where(has_blend, blend, torch.ones_like(blend))).clamp(0.0, 1.0)
    smooth = x * x * (3.0 - 2.0 * x)
    weight = torch.where(has_blend, smooth, torch.ones_like(smooth))
    radius = torch.where(in_band, r_polar + weight * (r_persp - r_polar), r_polar)
    return radius, r_polar


def mixed_pixel_map(
    size: int,
    out_size: tuple[int, int],
    params: MixedParams | None = None,
    *,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Source pixel coordinates of every output pixel of the mixed mapping, float64.

    Built on :func:`~geo_transforms.polar.polar_pixel_map` (same bearings, same centre); rows
    above the band are the polar map bit for bit.

    Returns:
        ``(row, col)``: two float64 tensors (B', H, W), B' = 1 for number parameters.
    """
    params = params or MixedParams()
    height, width = check_size(out_size, "out_size")
    row_p, col_p = polar_pixel_map(size, (height, width), center=params.center, device=device)
    radius, r_polar = mixed_radius_profile(size, height, params, device=row_p.device)
    c_row, c_col = row_p[-1, 0], col_p[-1, 0]  # the last polar row has radius 0: the centre
    scale = radius / torch.where(r_polar > 0, r_polar, torch.ones_like(r_polar))  # (B', H)
    stretched = scale[..., None] != 1.0
    row = torch.where(stretched, c_row + scale[..., None] * (row_p - c_row), row_p)
    col = torch.where(stretched, c_col + scale[..., None] * (col_p - c_col), col_p)
    return row, col


@lru_cache(maxsize=32)
def _cached_mixed_grid(
    size: int, out_size: tuple[int, int], params: MixedParams, device: torch.device, dtype: torch.dtype
) -> Tensor:
    row, col = mixed_pixel_map(size, out_size, params, device=device)
    return normalise_pixel_grid(col, row, size, size).to(dtype)


def mixed_perspective_polar(
    aerial: Tensor,
    out_size: tuple[int, int],
    *,
    near_fraction: float | Tensor = 0.4,
    camera_height: float | Tensor = 2.5,
    meters_per_pixel: float | Tensor = 0.1,
    blend: float | Tensor = 0.25,
    center: Center = "safa",
) -> Tensor:
    """Warp aerial images to the mixed perspective-polar "front view" (see the module docstring).

    Args:
        aerial: (B, C, S, S) floating tensor, north up.
        out_size: ``(H, W)``, e.g. (256, 1024) as in SMDT's figure or (112, 616).
        near_fraction, camera_height, meters_per_pixel, blend, center: see :class:`MixedParams`;
            numbers or tensors of shape () / (B,).

    Returns:
        (B, C, H, W) of the input's dtype and device; differentiable w.r.t. ``aerial`` and the
        tensor parameters.

    Example:
        >>> aerial = torch.rand(2, 3, 128, 128)
        >>> mixed_perspective_polar(aerial, (64, 256), near_fraction=0.4).shape
        torch.Size([2, 3, 64, 256])
    """
    check_image(aerial, "aerial", square=True)
    out_size = check_size(out_size, "out_size")
    params = MixedParams(near_fraction, camera_height, meters_per_pixel, blend, center)
    return _apply(aerial, out_size, params)


def _apply(aerial: Tensor, out_size: tuple[int, int], params: MixedParams) -> Tensor:
    if isinstance(params.near_fraction, (int, float)) and params.near_fraction == 0:
        return polar_transform(aerial, out_size, center=params.center)
    size = aerial.shape[-1]
    if params.is_static:
        near, height, mpp, blend = (float(v) for v in _values(params))
        params = MixedParams(near, height, mpp, blend, center=params.center)
        grid = _cached_mixed_grid(size, out_size, params, aerial.device, _grid_dtype(aerial.dtype))
    else:
        row, col = mixed_pixel_map(size, out_size, params, device=aerial.device)
        if row.shape[0] not in (1, aerial.shape[0]):
            raise ValueError(
                f"parameters of shape (B,) need B = {aerial.shape[0]} (the aerial batch), got {row.shape[0]}"
            )
        grid = normalise_pixel_grid(col, row, size, size)
    return _sample_precise(aerial, grid)


def _values(params: MixedParams) -> tuple[float | Tensor, float | Tensor, float | Tensor, float | Tensor]:
    return (params.near_fraction, params.camera_height, params.meters_per_pixel, params.blend)


class MixedPerspectivePolar(nn.Module):
    """Module form of :func:`mixed_perspective_polar`; ``self.params`` records the geometry.

    Example:
        >>> m = MixedPerspectivePolar((64, 256), near_fraction=0.4)
        >>> m.params.to_dict()["near_fraction"]
        0.4
    """

    # set in __init__ as parameters, buffers (tensors) or plain attributes (numbers)
    near_fraction: float | Tensor
    camera_height: float | Tensor
    meters_per_pixel: float | Tensor
    blend: float | Tensor

    def __init__(
        self,
        out_size: tuple[int, int],
        *,
        near_fraction: float | Tensor = 0.4,
        camera_height: float | Tensor = 2.5,
        meters_per_pixel: float | Tensor = 0.1,
        blend: float | Tensor = 0.25,
        center: Center = "safa",
    ) -> None:
        super().__init__()
        self.out_size = check_size(out_size, "out_size")
        params = MixedParams(near_fraction, camera_height, meters_per_pixel, blend, center)  # validates
        self.center = center
        for name, value in zip(_NAMES, _values(params)):
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
            elif isinstance(value, Tensor):
                self.register_buffer(name, value)
            else:
                setattr(self, name, value)

    @property
    def params(self) -> MixedParams:
        """The mapping's parameters as a frozen record."""
        return MixedParams(
            self.near_fraction, self.camera_height, self.meters_per_pixel, self.blend, center=self.center
        )

    def forward(self, aerial: Tensor) -> Tensor:
        check_image(aerial, "aerial", square=True)
        return _apply(aerial, self.out_size, self.params)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, params={self.params.to_dict()}"
