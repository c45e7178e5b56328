"""Command line of the preview grid: write a PNG showing an aerial image under every mapping.

Usage::

    geo-transforms-preview AERIAL.png -o grid.png [--pano PANO.jpg]
    geo-transforms-preview --demo -o grid.png               # synthetic test pattern, no data needed
    python -m geo_transforms.preview --help                 # the same, as a module

The grid's layout is documented in :mod:`geo_transforms.preview`, the ``--demo`` inputs in
:mod:`geo_transforms.patterns`. Needs Pillow: ``pip install "geo-transforms[preview]"``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import MissingDependencyError
from .patterns import demo_aerial, demo_panorama
from .preview import _pil, render_preview

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _load_rgb(path: Path) -> Tensor:
    Image, _ = _pil()
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
    """Entry point of ``geo-transforms-preview``, ``python -m geo_transforms.preview`` and
    ``python -m geo_transforms.cli``; returns the exit status (errors exit with status 2)."""
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
    except (MissingDependencyError, FileNotFoundError, ValueError, TypeError) as err:
        parser.exit(2, f"geo-transforms-preview: error: {err}\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output, format="PNG")
    logger.info("wrote %s (%dx%d)", args.output, canvas.width, canvas.height)
    return 0


if __name__ == "__main__":  # python -m geo_transforms.cli
    raise SystemExit(main())
