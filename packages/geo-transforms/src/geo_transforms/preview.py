"""Render every mapping of one aerial image (and optionally a panorama) into a single grid image.

Layout (top to bottom; every strip has a label band above it; the grid is ``W`` wide, with
``(H, W)`` the polar size and ``V = W // 4`` the side of a perspective view):

1. the aerial image (north up) and the same image with the mixed mapping's near-field boundary
   circle and the four viewing bearings drawn on it (V x V each);
2. the polar transform (H x W);
3. the mixed perspective-polar mapping (H x W);
4. ground-plane perspective views at bearings 0, 90, 180, 270 (V x V each);
5. with a panorama: the panorama resized to width W, then pinhole views cut from it at the same
   four bearings.

The command line (``geo-transforms-preview``, ``python -m geo_transforms.preview``) lives in
:mod:`geo_transforms.cli`, the synthetic test patterns in :mod:`geo_transforms.patterns`.

Image IO needs Pillow: ``pip install "geo-transforms[preview]"``. Pillow is imported lazily (an
optional dependency), so the rest of the package never depends on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import MissingDependencyError
from .ground_plane import ground_plane_view
from .mixed import MixedParams, mixed_perspective_polar
from .patterns import _segment_mask
from .perspective import panorama_to_perspective
from .polar import Center, polar_transform

__all__ = ["BEARINGS", "LABEL_HEIGHT", "render_preview"]

LABEL_HEIGHT = 16
"""Height in pixels of the label band above each strip."""
BEARINGS = (0.0, 90.0, 180.0, 270.0)
"""Bearings (degrees, clockwise from north) of the perspective views."""


def _pil() -> Any:
    try:  # lazy: Pillow is optional here (the `preview` extra)
        from PIL import Image, ImageDraw
    except ImportError as err:  # pragma: no cover - exercised only without Pillow
        raise MissingDependencyError(
            "geo_transforms.preview needs Pillow for image IO: pip install 'geo-transforms[preview]'",
            extra="geo-transforms[preview]",
        ) from err
    return Image, ImageDraw


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
    center: Center = "safa",
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
    MixedParams(near_fraction, camera_height, meters_per_pixel, blend, center)  # validates

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
    )
    mixed = mixed_perspective_polar(
        batch,
        polar_size,
        near_fraction=near_fraction,
        camera_height=camera_height,
        meters_per_pixel=meters_per_pixel,
        blend=blend,
        center=center,
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
        center=center,
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


if (
    __name__ == "__main__"
):  # ``python -m geo_transforms.preview``, as documented; the CLI is geo_transforms.cli
    from .cli import main

    raise SystemExit(main())
