"""Synthetic test patterns: a north-up aerial image and the panorama seen from its centre.

Convention: images are (3, H, W) float32 in [0, 1]. The aerial (:func:`demo_aerial`) is north up
with coloured quadrants and the compass letters at its edges, so every mapping's orientation can
be read off at a glance; the panorama (:func:`demo_panorama`) is a full-sphere equirectangular
render of that aerial's flat ground, north at the centre column (the
:mod:`~geo_transforms.perspective` convention). Used by :mod:`geo_transforms.preview` and its
command line (:mod:`geo_transforms.cli`); no Pillow needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._sampling import normalise_pixel_grid, sample_grid

__all__ = ["demo_aerial", "demo_panorama"]


def _segment_mask(
    xx: Tensor, yy: Tensor, p: tuple[float, float], q: tuple[float, float], width: float
) -> Tensor:
    """Pixels within ``width/2`` of the segment p-q (coordinates in pixels, (x, y))."""
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    t = (((xx - px) * dx + (yy - py) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0)
    return (xx - px - t * dx) ** 2 + (yy - py - t * dy) ** 2 <= (width / 2.0) ** 2


_LETTERS: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {
    # strokes in a unit box, x right, y down
    "N": [((0, 1), (0, 0)), ((0, 0), (1, 1)), ((1, 1), (1, 0))],
    "E": [((1, 0), (0, 0)), ((0, 0), (0, 1)), ((0, 1), (1, 1)), ((0, 0.5), (0.75, 0.5))],
    "S": [((1, 0), (0, 0)), ((0, 0), (0, 0.5)), ((0, 0.5), (1, 0.5)), ((1, 0.5), (1, 1)), ((1, 1), (0, 1))],
    "W": [((0, 0), (0.25, 1)), ((0.25, 1), (0.5, 0.4)), ((0.5, 0.4), (0.75, 1)), ((0.75, 1), (1, 0))],
}


def _draw_letter(
    image: Tensor,
    xx: Tensor,
    yy: Tensor,
    letter: str,
    box: tuple[float, float, float],
    color: Sequence[float],
) -> None:
    x0, y0, size = box
    stroke = max(1.5, size / 6.0)
    mask = torch.zeros_like(xx, dtype=torch.bool)
    for (ax, ay), (bx, by) in _LETTERS[letter]:
        p = (x0 + ax * size * 0.7, y0 + ay * size)
        q = (x0 + bx * size * 0.7, y0 + by * size)
        mask |= _segment_mask(xx, yy, p, q, stroke)
    image[:, mask] = torch.tensor(color, dtype=image.dtype)[:, None]


def demo_aerial(size: int = 256) -> Tensor:
    """A synthetic north-up aerial test pattern (3, S, S) in [0, 1].

    Coloured quadrants (NE red, NW green, SW blue, SE yellow), a grey crossroads through the
    centre with dashed white centre lines, a few dark "houses" and the compass letters N, E, S, W
    at the edges, so every mapping's orientation can be read off at a glance.
    """
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    s = float(size)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    c = (s - 1) / 2.0
    image = torch.empty(3, size, size)
    quadrants = {
        (True, True): (0.75, 0.35, 0.30),  # north-east: red
        (True, False): (0.35, 0.65, 0.35),  # north-west: green
        (False, False): (0.30, 0.40, 0.75),  # south-west: blue
        (False, True): (0.80, 0.75, 0.30),  # south-east: yellow
    }
    for (north, east), color in quadrants.items():
        mask = ((yy < c) == north) & ((xx > c) == east)
        image[:, mask] = torch.tensor(color)[:, None]
    # houses: dark squares on a ring, so perspective views show objects beside the roads
    for k in range(8):
        angle = 2 * math.pi * (k + 0.5) / 8
        hx, hy = c + 0.3 * s * math.sin(angle), c - 0.3 * s * math.cos(angle)
        half = 0.04 * s
        mask = ((xx - hx).abs() <= half) & ((yy - hy).abs() <= half)
        image[:, mask] = 0.15
    road = 0.06 * s
    roads = ((xx - c).abs() <= road / 2) | ((yy - c).abs() <= road / 2)
    image[:, roads] = 0.5
    dash = (torch.remainder(yy, 0.08 * s) < 0.04 * s) & ((xx - c).abs() <= max(0.5, 0.004 * s))
    dash |= (torch.remainder(xx, 0.08 * s) < 0.04 * s) & ((yy - c).abs() <= max(0.5, 0.004 * s))
    image[:, dash & ((xx - c).abs() + (yy - c).abs() > road)] = 1.0
    # zebra crossings on every arm close to the centre: they show the near-field foreshortening
    along = torch.maximum((xx - c).abs(), (yy - c).abs())
    across = torch.minimum((xx - c).abs(), (yy - c).abs())
    stripes = torch.where((xx - c).abs() > (yy - c).abs(), yy, xx)
    zebra = (along >= 0.06 * s) & (along <= 0.11 * s) & (across <= road / 2 - 1)
    zebra &= torch.remainder(stripes - c + 0.5, max(2.0, 0.016 * s)) < max(1.0, 0.008 * s)
    image[:, zebra] = 0.95
    # faint distance rings every 0.05 S: they show each mapping's radius profile
    dist = torch.sqrt((xx - c) ** 2 + (yy - c) ** 2)
    rings = torch.remainder(dist, 0.05 * s) < max(1.0, 0.003 * s)
    image[:, rings] *= 0.6
    letter = 0.09 * s
    margin = 0.03 * s
    white = (1.0, 1.0, 1.0)
    _draw_letter(image, xx, yy, "N", (c + road, margin, letter), white)
    _draw_letter(image, xx, yy, "S", (c + road, s - margin - letter, letter), white)
    _draw_letter(image, xx, yy, "E", (s - margin - 0.7 * letter, c + road, letter), white)
    _draw_letter(image, xx, yy, "W", (margin, c + road, letter), white)
    return image


def demo_panorama(
    aerial: Tensor,
    out_size: tuple[int, int] = (128, 512),
    *,
    camera_height: float = 2.5,
    meters_per_pixel: float = 0.1,
) -> Tensor:
    """A full-sphere equirectangular panorama (3, H, W) rendered from ``aerial`` (3, S, S).

    The flat ground of the aerial image seen from ``camera_height`` at its centre (S/2), north at
    the centre column (the :mod:`~geo_transforms.perspective` convention), a blue sky gradient
    above the horizon and black where the ground lies beyond the tile.
    """
    height, width = out_size
    size = aerial.shape[-1]
    rows = torch.arange(height, dtype=torch.float64)
    cols = torch.arange(width, dtype=torch.float64)
    elevation = torch.deg2rad(90.0 - (rows + 0.5) * 180.0 / height)[:, None]
    bearing = torch.deg2rad(360.0 * cols / width - 180.0)[None, :]
    below = elevation < 0
    distance = camera_height / torch.tan(torch.where(below, -elevation, torch.ones_like(elevation)))
    radius = distance / meters_per_pixel
    col = size / 2.0 + radius * torch.sin(bearing)
    row = size / 2.0 - radius * torch.cos(bearing)
    col = torch.where(below, col, torch.full_like(col, -2.0)).clamp(-2.0, size + 1.0)
    row = torch.where(below, row, torch.full_like(row, -2.0)).clamp(-2.0, size + 1.0)
    grid = normalise_pixel_grid(col, row, size, size)[None].float()
    ground = sample_grid(aerial[None].float(), grid)[0]
    sky_t = (1.0 - (rows + 0.5) / (height / 2.0)).clamp(0.0, 1.0).float()[:, None]
    sky = torch.stack((0.55 - 0.3 * sky_t, 0.75 - 0.25 * sky_t, 0.95 - 0.05 * sky_t)).expand(3, height, width)
    return torch.where(below.float()[None].expand(3, height, width) > 0, ground, sky)
