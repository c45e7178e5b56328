"""Preview every mapping of one aerial image (and optionally a panorama) in a single PNG grid.

Usage::

    python -m geo_transforms.preview AERIAL.png -o grid.png [--pano PANO.jpg]
    python -m geo_transforms.preview --demo -o grid.png      # synthetic test pattern, no data needed
    geo-transforms-preview --help                             # same, as a console script

Layout (top to bottom; every strip has a label band above it; the grid is ``W`` wide, with
``(H, W)`` the polar size and ``V = W // 4`` the side of a perspective view):

1. the aerial image (north up) and the same image with the mixed mapping's near-field boundary
   circle and the four viewing bearings drawn on it (V x V each);
2. the polar transform (H x W);
3. the mixed perspective-polar mapping (H x W);
4. ground-plane perspective views at bearings 0, 90, 180, 270 (V x V each);
5. with a panorama (``--pano``, or ``--demo``'s synthetic one): the panorama resized to width W,
   then pinhole views cut from it at the same four bearings.

Image IO needs Pillow: ``pip install "geo-transforms[preview]"``. Pillow is imported lazily, so
the rest of the package never depends on it.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._sampling import normalise_pixel_grid, sample_grid
from .ground_plane import ground_plane_view
from .mixed import MixedParams, mixed_perspective_polar
from .perspective import panorama_to_perspective
from .polar import polar_transform

__all__ = [
    "LABEL_HEIGHT",
    "MissingOptionalDependencyError",
    "demo_aerial",
    "demo_panorama",
    "main",
    "render_preview",
]

logger = logging.getLogger(__name__)

LABEL_HEIGHT = 16
BEARINGS = (0.0, 90.0, 180.0, 270.0)


class MissingOptionalDependencyError(ImportError):
    """An optional dependency (here Pillow, from the ``preview`` extra) is not installed."""


def _pil() -> Any:
    try:
        from PIL import Image, ImageDraw
    except ImportError as err:  # pragma: no cover - exercised only without Pillow
        raise MissingOptionalDependencyError(
            "geo_transforms.preview needs Pillow for image IO: pip install 'geo-transforms[preview]'"
        ) from err
    return Image, ImageDraw


# --------------------------------------------------------------------------------------------
# synthetic inputs


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


# --------------------------------------------------------------------------------------------
# the grid


def _fit(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (3, h, w) to ``size`` (antialiased when shrinking)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = image.shape[-2] > size[0] or image.shape[-1] > size[1]
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out[0].clamp(0.0, 1.0)


def _overlay(aerial: Tensor, radius: float, center: float) -> Tensor:
    """Aerial (3, V, V) with the near-field boundary circle and the four bearing rays drawn in."""
    out = aerial.clone()
    side = out.shape[-1]
    yy, xx = torch.meshgrid(
        torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij"
    )
    dist = torch.sqrt((xx - center) ** 2 + (yy - center) ** 2)
    ring = (dist - radius).abs() <= 0.75
    out[:, ring] = torch.tensor([1.0, 0.0, 1.0])[:, None]
    for bearing in BEARINGS:
        b = math.radians(bearing)
        end = (center + side * math.sin(b), center - side * math.cos(b))
        ray = _segment_mask(xx, yy, (center, center), end, 1.0)
        out[:, ray] = torch.tensor([1.0, 1.0, 1.0])[:, None]
    return out


def _hstack(panels: Sequence[Tensor], width: int) -> Tensor:
    strip = torch.cat(list(panels), dim=-1)
    pad = width - strip.shape[-1]
    return F.pad(strip, (0, max(pad, 0)))[..., :width]


def render_preview(
    aerial: Tensor,
    pano: Tensor | None = None,
    *,
    polar_size: tuple[int, int] = (128, 512),
    fov: float = 90.0,
    pitch: float = -20.0,
    camera_height: float = 2.5,
    meters_per_pixel: float = 0.1,
    near_fraction: float = 0.4,
    blend: float = 0.25,
    center: str = "safa",
    elevation_range: tuple[float, float] = (90.0, -90.0),
) -> Any:
    """Compose the preview grid (see the module docstring) as a ``PIL.Image`` (RGB).

    Args:
        aerial: (3, S, S) image in [0, 1], north up.
        pano: optional (3, Hp, Wp) equirectangular panorama in [0, 1], north at the centre column.
        polar_size: ``(H, W)`` of the polar and mixed strips; W sets the grid width (W >= 8).
        fov, pitch: horizontal field of view and pitch (degrees) of the perspective views.
        camera_height, meters_per_pixel: ground-plane camera height (m) and aerial resolution
            (m/px), shared by the ground-plane views and the mixed mapping.
        near_fraction, blend, center: the mixed mapping's parameters (:class:`MixedParams`).
        elevation_range: the panorama's (top, bottom) elevations in degrees.

    Returns:
        RGB ``PIL.Image`` of width W and height
        ``LABEL_HEIGHT * n_strips + V + 2 H + V (+ Hp' + V)``, with ``V = W // 4``,
        ``Hp' = round(W * Hp / Wp)`` and 4 strips (6 with a panorama).
    """
    Image, ImageDraw = _pil()
    if aerial.ndim != 3 or aerial.shape[0] != 3 or aerial.shape[1] != aerial.shape[2]:
        raise ValueError(f"aerial must be (3, S, S), got {tuple(aerial.shape)}")
    height, width = polar_size
    if width < 8 or height < 2:
        raise ValueError(f"polar_size must be at least (2, 8), got {polar_size}")
    side = width // 4
    aerial = aerial.float().clamp(0.0, 1.0)
    batch = aerial[None]
    size = aerial.shape[-1]
    MixedParams(near_fraction, camera_height, meters_per_pixel, blend, center)  # type: ignore[arg-type]  # validates

    strips: list[tuple[str, Tensor]] = []
    small = _fit(aerial, (side, side))
    boundary_row = (height - 1) * (1.0 - near_fraction)
    boundary_radius = (size / 2.0) * (height - 1 - boundary_row) / height * side / size
    strips.append(
        (
            "aerial (north up) | near-field boundary (magenta), bearings 0/90/180/270",
            _hstack([small, _overlay(small, boundary_radius, side / 2.0)], width),
        )
    )
    strips.append(
        (
            f"polar {height}x{width} (col 0 south, W/2 north, clockwise)",
            polar_transform(batch, polar_size, center=center)[0],
        )
    )  # type: ignore[arg-type]
    mixed = mixed_perspective_polar(
        batch,
        polar_size,
        near_fraction=near_fraction,
        camera_height=camera_height,
        meters_per_pixel=meters_per_pixel,
        blend=blend,
        center=center,  # type: ignore[arg-type]
    )[0]
    strips.append(
        (
            f"mixed perspective-polar, near_fraction={near_fraction}, h={camera_height} m, {meters_per_pixel} m/px",
            mixed,
        )
    )
    views = ground_plane_view(
        batch,
        list(BEARINGS),
        fov,
        (side, side),
        camera_height=camera_height,
        meters_per_pixel=meters_per_pixel,
        pitch=pitch,
        center=center,  # type: ignore[arg-type]
    )[0]
    strips.append((f"ground plane, yaw 0/90/180/270, fov {fov}, pitch {pitch}", _hstack(list(views), width)))
    if pano is not None:
        if pano.ndim != 3 or pano.shape[0] != 3:
            raise ValueError(f"pano must be (3, H, W), got {tuple(pano.shape)}")
        pano = pano.float().clamp(0.0, 1.0)
        pano_height = max(1, round(width * pano.shape[1] / pano.shape[2]))
        strips.append(("panorama (north at the centre column)", _fit(pano, (pano_height, width))))
        cut = panorama_to_perspective(
            pano[None], list(BEARINGS), pitch, fov, (side, side), elevation_range=elevation_range
        )[0]
        strips.append(
            (
                f"panorama -> perspective, yaw 0/90/180/270, fov {fov}, pitch {pitch}",
                _hstack(list(cut), width),
            )
        )

    total = sum(LABEL_HEIGHT + strip.shape[-2] for _, strip in strips)
    canvas = Image.new("RGB", (width, total), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for label, strip in strips:
        draw.text((3, y + 2), label, fill=(230, 230, 230))
        y += LABEL_HEIGHT
        array = (strip.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        canvas.paste(Image.fromarray(array, mode="RGB"), (0, y))
        y += strip.shape[-2]
    return canvas


# --------------------------------------------------------------------------------------------
# command line


def _load_rgb(path: Path) -> Tensor:
    Image, _ = _pil()
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geo-transforms-preview",
        description="Write a PNG grid showing an aerial image under every geo-transforms mapping: polar, "
        "mixed perspective-polar, ground-plane perspective views at bearings 0/90/180/270 and, with a "
        "panorama, pinhole views cut from it. Needs Pillow (pip install 'geo-transforms[preview]').",
    )
    parser.add_argument(
        "aerial", nargs="?", type=Path, help="square, north-up aerial image (any Pillow format)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--pano", type=Path, help="equirectangular panorama, north at the centre column")
    parser.add_argument(
        "--demo", action="store_true", help="use a synthetic aerial test pattern (and panorama)"
    )
    parser.add_argument(
        "--demo-size", type=int, default=256, help="side of the synthetic aerial (default 256)"
    )
    parser.add_argument("--polar-size", type=int, nargs=2, default=(128, 512), metavar=("H", "W"))
    parser.add_argument("--fov", type=float, default=90.0, help="horizontal FoV of the views, degrees")
    parser.add_argument(
        "--pitch", type=float, default=-20.0, help="pitch of the views, degrees (default -20)"
    )
    parser.add_argument("--camera-height", type=float, default=2.5, help="metres (default 2.5)")
    parser.add_argument(
        "--meters-per-pixel", type=float, default=0.1, help="aerial ground resolution, m/px (default 0.1)"
    )
    parser.add_argument("--near-fraction", type=float, default=0.4, help="mixed mapping near-field rows")
    parser.add_argument("--blend", type=float, default=0.25, help="mixed mapping blend width (band fraction)")
    parser.add_argument(
        "--center", choices=("safa", "pixel"), default="safa", help="aerial centre convention"
    )
    parser.add_argument(
        "--elevation-range",
        type=float,
        nargs=2,
        default=(90.0, -90.0),
        metavar=("TOP", "BOTTOM"),
        help="elevations (degrees) of the panorama's top and bottom edges; default full sphere",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m geo_transforms.preview`` and ``geo-transforms-preview``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.aerial is None) == (not args.demo):
        parser.error("give an AERIAL image or --demo (not both)")
    try:
        _pil()
        if args.demo:
            aerial = demo_aerial(args.demo_size)
        else:
            aerial = _load_rgb(args.aerial)
            if aerial.shape[-1] != aerial.shape[-2]:
                parser.error(
                    f"the aerial image must be square, got {aerial.shape[-1]}x{aerial.shape[-2]} (WxH)"
                )
        if args.pano is not None:
            pano = _load_rgb(args.pano)
        elif args.demo:
            pano = demo_panorama(
                aerial,
                (args.polar_size[1] // 2, args.polar_size[1]),
                camera_height=args.camera_height,
                meters_per_pixel=args.meters_per_pixel,
            )
        else:
            pano = None
        canvas = render_preview(
            aerial,
            pano,
            polar_size=tuple(args.polar_size),
            fov=args.fov,
            pitch=args.pitch,
            camera_height=args.camera_height,
            meters_per_pixel=args.meters_per_pixel,
            near_fraction=args.near_fraction,
            blend=args.blend,
            center=args.center,
            elevation_range=tuple(args.elevation_range),
        )
    except (MissingOptionalDependencyError, FileNotFoundError, ValueError, TypeError) as err:
        parser.exit(2, f"geo-transforms-preview: error: {err}\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output, format="PNG")
    logger.info("wrote %s (%dx%d)", args.output, canvas.width, canvas.height)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
