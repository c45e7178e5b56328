"""Distances and local projections on a spherical Earth: the one home of the Earth radius.

Convention:
    - Points are (latitude, longitude) in **degrees** in the last dimension; they are converted to
      radians here. Everything is computed in float64.
    - Two radii, each with one reason, and no other radius anywhere in the monorepo:

      * :data:`EARTH_RADIUS_M` = 6,371,008.8 m, the IUGG mean radius: the default of the library's
        own distances (:func:`haversine_distance`, used to mine GPS neighbours for training batches).
      * :data:`VIGOR_EARTH_RADIUS_M` = 6,371,004 m, the radius of VIGOR's ``gps2distance`` /
        ``evaluate_from_npy.py``: every metre-level *evaluation* (:func:`great_circle_distance`,
        geo-bench's VIGOR and localisation metrics) uses it so errors are comparable with published
        numbers, and the synthetic world projects its metres with it so its lat/lon agree with
        those metrics.

      The two differ by 0.75 ppm (4.8 m on 6,371 km); both are kept so every published and recorded
      number stays bit-identical.
    - Two great-circle formulas, kept on purpose: :func:`haversine_distance` (torch, all pairs,
      accurate down to coincident points) and :func:`great_circle_distance` (numpy, broadcast,
      spherical law of cosines as in VIGOR's evaluation; it has a floor of about 0.1 m for coincident
      points in float64, far below VIGOR's first threshold of 1.02 m).
    - :func:`equirectangular_to_latlon` / :func:`latlon_to_equirectangular`: local equirectangular
      projection of (easting, northing) metres around an origin, exact to < 1 cm over a few
      kilometres (the synthetic world's extent); not a UTM projection.

.. versionadded:: 0.1
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "EARTH_RADIUS_M",
    "VIGOR_EARTH_RADIUS_M",
    "equirectangular_to_latlon",
    "great_circle_distance",
    "haversine_distance",
    "latlon_to_equirectangular",
]

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), metres: the default of :func:`haversine_distance`."""

VIGOR_EARTH_RADIUS_M = 6_371_004.0
"""Earth radius of VIGOR's metre-level evaluation (``gps2distance``), metres: the default of
:func:`great_circle_distance` and of the equirectangular helpers."""


def haversine_distance(latlon_a: Tensor, latlon_b: Tensor, *, radius: float = EARTH_RADIUS_M) -> Tensor:
    """Great-circle distances between two sets of points given in **degrees** (haversine formula).

    Convention: ``(N, 2)`` rows are (latitude, longitude) in degrees; they are converted to radians
    here (Sample4Geo fed degrees to sklearn's radian haversine). Computed in float64.

    Args:
        latlon_a: (N, 2) degrees.
        latlon_b: (M, 2) degrees.
        radius: sphere radius in metres.

    Returns:
        (N, M) float64 distances in metres.

    Example:
        >>> d = haversine_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
        >>> round(float(d) / 1000, 1)
        111.2
    """
    for name, t in (("latlon_a", latlon_a), ("latlon_b", latlon_b)):
        if t.ndim != 2 or t.shape[-1] != 2:
            raise ValueError(f"{name} must be (N, 2) (lat, lon) in degrees, got {tuple(t.shape)}")
    a = torch.deg2rad(latlon_a.to(torch.float64))
    b = torch.deg2rad(latlon_b.to(torch.float64))
    dlat = b[None, :, 0] - a[:, None, 0]
    dlon = b[None, :, 1] - a[:, None, 1]
    h = (
        torch.sin(dlat / 2) ** 2
        + torch.cos(a[:, None, 0]) * torch.cos(b[None, :, 0]) * torch.sin(dlon / 2) ** 2
    )
    return 2.0 * radius * torch.asin(torch.sqrt(h.clamp(0.0, 1.0)))


def great_circle_distance(
    latlon_a: object, latlon_b: object, radius_m: float = VIGOR_EARTH_RADIUS_M
) -> np.ndarray:
    """Great-circle distance in metres between (lat, lon) points given in degrees (VIGOR's formula).

    Convention: spherical law of cosines, ``R * arccos(clip(sin a sin b + cos a cos b cos(dlon), -1, 1))``
    in float64, R = :data:`VIGOR_EARTH_RADIUS_M` (6,371,004 m) as in VIGOR's ``evaluate_from_npy.py``.

    Args:
        latlon_a: (..., 2) (lat, lon) degrees (array or tensor).
        latlon_b: (..., 2), broadcastable with ``latlon_a``.
        radius_m: sphere radius.

    Returns:
        (...) float64 numpy array of distances in metres.

    Example:
        >>> round(float(great_circle_distance([0.0, 0.0], [0.0, 1.0])), 1)
        111195.0
    """
    a = np.asarray(latlon_a.detach().cpu() if isinstance(latlon_a, Tensor) else latlon_a, dtype=np.float64)
    b = np.asarray(latlon_b.detach().cpu() if isinstance(latlon_b, Tensor) else latlon_b, dtype=np.float64)
    if a.shape[-1:] != (2,) or b.shape[-1:] != (2,):
        raise ValueError(f"latlon must be (..., 2) (lat, lon) degrees, got {a.shape} and {b.shape}")
    lat_a, lon_a = np.deg2rad(a[..., 0]), np.deg2rad(a[..., 1])
    lat_b, lon_b = np.deg2rad(b[..., 0]), np.deg2rad(b[..., 1])
    c = np.sin(lat_a) * np.sin(lat_b) + np.cos(lat_a) * np.cos(lat_b) * np.cos(lon_a - lon_b)
    return radius_m * np.arccos(np.clip(c, -1.0, 1.0))


def equirectangular_to_latlon(
    xy: Tensor,
    origin_xy: tuple[float, float],
    origin_latlon: tuple[float, float],
    radius_m: float = VIGOR_EARTH_RADIUS_M,
) -> Tensor:
    """Local (easting, northing) metres -> (lat, lon) degrees, local equirectangular projection.

    Convention: ``lat = lat0 + deg((n - n0) / R)``, ``lon = lon0 + deg((e - e0) / (R cos lat0))``;
    exact enough (< 1 cm) over a few kilometres. Computed in float64.

    Args:
        xy: (..., 2) easting, northing in metres.
        origin_xy: (e0, n0), the metres of ``origin_latlon``.
        origin_latlon: (lat0, lon0) in degrees.
        radius_m: sphere radius.

    Returns:
        (..., 2) float64 latitude, longitude in degrees.

    Example:
        >>> equirectangular_to_latlon(torch.tensor([[500000.0, 4400000.0]]), (500000.0, 4400000.0), (40.0, -105.0))
        tensor([[  40., -105.]], dtype=torch.float64)
    """
    xy = xy.to(torch.float64)
    lat0, lon0 = origin_latlon
    lat = lat0 + torch.rad2deg((xy[..., 1] - origin_xy[1]) / radius_m)
    lon = lon0 + torch.rad2deg((xy[..., 0] - origin_xy[0]) / (radius_m * math.cos(math.radians(lat0))))
    return torch.stack([lat, lon], dim=-1)


def latlon_to_equirectangular(
    latlon: Tensor,
    origin_xy: tuple[float, float],
    origin_latlon: tuple[float, float],
    radius_m: float = VIGOR_EARTH_RADIUS_M,
) -> Tensor:
    """Inverse of :func:`equirectangular_to_latlon`: (..., 2) lat, lon degrees -> (..., 2) float64
    easting, northing in metres."""
    latlon = latlon.to(torch.float64)
    lat0, lon0 = origin_latlon
    n = origin_xy[1] + torch.deg2rad(latlon[..., 0] - lat0) * radius_m
    e = origin_xy[0] + torch.deg2rad(latlon[..., 1] - lon0) * radius_m * math.cos(math.radians(lat0))
    return torch.stack([e, n], dim=-1)
