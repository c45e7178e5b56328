"""Generate the synthetic world: write it in a real dataset layout, or a preview figure.

The synthetic world is a procedural city (roads, buildings with heights and roof/facade colours,
trees, water, parked cars) rendered as north-up aerial tiles and north-centred street-level
panoramas with a domain gap between the two captures (sun and shadows, season, cars, colour
calibration, noise, JPEG). The same seed always gives the same files.

  geo-bench synth --layout cvusa --out data/synth-cvusa --num 2000 --seed 0
  geo-bench synth --layout cvact --out data/synth-cvact --num 2000
  geo-bench synth --layout vigor --out data/synth-vigor --num 300       # per city
  geo-bench synth --layout map --out data/synth-map --num 20 --map-m 500  # localisation
  geo-bench synth --layout map --out data/map-d0 --num 50 --aerial-size 128    # the leaderboard
      # world's district 0 (downtown, 0.5 m/px); its test stripe is what `geo-bench train` never sees
  geo-bench synth --preview world.png

The written folders load with geo_bench.datasets.CVUSA / CVACT / VIGOR unchanged. CVUSA: 80/20
train-19zl/val-19zl; CVACT: 60/15/25 train/val/test (full-sphere panoramas); VIGOR: --num
panoramas in each of the four cities, tiles on a half-tile grid. Rendering and writing go in
chunks of --chunk samples, so memory stays bounded for any --num.

map (for geo-bench index / locate; needs pip install 'geo-bench[map]'): map.tif, a north-up RGB
orthophoto GeoTIFF of a --map-m square of district 0 in the world's UTM zone (EPSG:326xx) at the
aerial ground sampling distance (--aerial-m / --aerial-size m/px), rendered block by block; --num
query panoramas of test cameras inside the map (queries/*.jpg) and truth.csv (id, file, lat, lon,
utm_e, utm_n, heading).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from ..leaderboard.data import WorldConfig
from ..world import CITY_STYLES, AppearanceConfig, CityConfig, RenderConfig, SyntheticWorld, city_style
from ..world.layouts import write_layout
from ..world.preview import write_preview
from ._common import guarded

HELP = "generate the synthetic world in the CVUSA / CVACT / VIGOR layout, or a preview figure"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench synth`` to ``parser``."""
    parser.add_argument(
        "--layout", choices=["cvusa", "cvact", "vigor", "map"], help="on-disk layout to write"
    )
    parser.add_argument("--out", help="output folder (created)")
    parser.add_argument("--num", type=int, default=100, help="number of pairs (VIGOR: panoramas per city)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument(
        "--ground-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="panorama size (default 128 512; CVACT/VIGOR 256 512, full sphere)",
    )
    parser.add_argument(
        "--aerial-size", type=int, default=256, help="aerial tile side in pixels (default 256)"
    )
    parser.add_argument(
        "--aerial-m", type=float, default=64.0, help="aerial tile width in metres (default 64)"
    )
    parser.add_argument(
        "--district-m", type=float, default=1000.0, help="side of one city district in metres"
    )
    parser.add_argument("--gap", type=float, default=1.0, help="domain-gap strength in [0, 1] (default 1)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of written images")
    parser.add_argument("--chunk", type=int, default=32, help="samples rendered per chunk (memory bound)")
    parser.add_argument(
        "--map-m",
        type=float,
        help="map layout: side of the square orthophoto in metres (default: the district, at most 1000)",
    )
    parser.add_argument(
        "--style",
        choices=sorted(CITY_STYLES),
        help="city style of the district (default: the world's default; map layout: the leaderboard "
        f"world's district 0, {WorldConfig().styles[0]!r})",
    )
    parser.add_argument(
        "--split",
        choices=["train", "val", "test"],
        default="test",
        help="map layout: the stripe of the district the query cameras come from (default test, which "
        "training never sees)",
    )
    parser.add_argument(
        "--split-fractions",
        nargs=3,
        type=float,
        metavar=("TRAIN", "VAL", "TEST"),
        help="map layout: easting proportions of the district's stripes (default the leaderboard "
        f"world's, {' '.join(f'{v:g}' for v in WorldConfig().split_fractions)})",
    )
    parser.add_argument(
        "--yaw",
        default="0",
        metavar="DEG|random",
        help="map layout: heading of the query panoramas' centre column, degrees clockwise from north, "
        "or random (default 0: north-centred; truth.csv's heading column records it)",
    )
    parser.add_argument("--preview", metavar="PNG", help="write a preview figure of a few samples to PNG")
    parser.add_argument("--preview-rows", type=int, default=3, help="samples in the preview (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench synth`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(
        lambda: _run(args),
        interrupted=(
            "finished chunks are kept; run the same command again (the same seed writes the same files)"
        ),
    )


def _run(args: argparse.Namespace) -> int:
    if args.layout is None and args.preview is None:
        raise ValueError("nothing to do: give --layout and --out, and/or --preview PNG")
    if args.layout is not None and not args.out:
        raise ValueError("--layout needs --out DIR")
    style = args.style or (WorldConfig().styles[0] if args.layout == "map" else None)
    city = CityConfig(size_m=args.district_m) if style is None else city_style(style, size_m=args.district_m)
    if args.layout != "map" and (args.split != "test" or args.split_fractions or args.yaw != "0"):
        raise ValueError("--split, --split-fractions and --yaw apply to --layout map only")
    appearance = AppearanceConfig(gap=args.gap, jpeg_quality=args.jpeg_quality)
    full_sphere = args.layout in ("cvact", "vigor")
    render = RenderConfig(aerial_size=args.aerial_size, aerial_m=args.aerial_m)
    if full_sphere:
        render = replace(render, ground_size=(256, 512), elevation=(-90.0, 90.0))
    if args.ground_size:
        render = replace(render, ground_size=tuple(args.ground_size))
    if args.preview:
        world = SyntheticWorld(
            "train",
            max(1, args.preview_rows),
            args.seed,
            city=city,
            appearance=appearance,
            render=replace(render, ground_size=(128, 512), elevation=(-45.0, 45.0)),
        )
        path = write_preview(args.preview, world, rows=args.preview_rows)
        print(f"preview written to {path}")
    if args.layout:
        extra: dict[str, object] = {}
        if args.layout == "map":
            fractions = tuple(args.split_fractions or WorldConfig().split_fractions)
            extra = {
                "map_m": args.map_m,
                "split": args.split,
                "split_fractions": fractions,
                "yaw": _parse_yaw(args.yaw),
            }
        counts = write_layout(
            args.layout,
            args.out,
            args.num,
            args.seed,
            render=render,
            city=city,
            appearance=appearance,
            chunk=args.chunk,
            progress=not args.no_progress,
            **extra,
        )
        print(f"{args.layout} layout written to {args.out}: {counts}")
    return 0


def _parse_yaw(text: str) -> float | str:
    """``--yaw``: degrees, or ``"random"``."""
    if text == "random":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--yaw must be degrees or 'random', got {text!r}") from None
