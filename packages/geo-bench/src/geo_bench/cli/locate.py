"""Localise street-level images against an index built by `geo-bench index`.

For each IMAGE: the --top-k best tiles with their centres in lat/lon and the map CRS, their scores,
a heading (degrees clockwise from north of the image's centre column: DSM's alignment, or with
--orientation unknown the best of --headings evenly spaced headings for other recipes), and a
refined position: the
score-weighted mean of the top-k tile centres within one tile width of the best (weights: score
minus the lowest top-k score). Images are 360-degree panoramas of the recipe's aspect ratio, column
W/2 looking north when --orientation known; --fov DEG takes a limited field of view (put into the
panorama frame, the rest filled with the normalisation mean, as the fov protocol does).

Writes OUT/locate.json, OUT/locate.geojson (FeatureCollection of points, [lon, lat] EPSG:4326) and
OUT/locate.csv; --html adds OUT/report.html (self-contained). --truth CSV (columns id and/or file,
lat, lon; optional heading) adds R@k<r m (r = 25, 50, 100), median / P90 error of the top-1 tile
and of the refined position (and the top-1 heading error when headings are estimated), in
locate.json and printed.

--refine POSE_RUN refines each query's top-1 tile with a fine-grained pose model (a run of a pose
recipe such as ccvpe, e.g. OUT/runs/ccvpe-small-*/ of `geo-bench leaderboard --recipes ccvpe`): it
reads the tile of --refine-tile-m metres (the width the model was trained on; default 64 m for runs
trained on the synthetic world) centred on the candidate and predicts the camera's position in it,
its heading and a confidence (with --orientation known, heading 0 is the model's prior). Outputs
gain the pose point (kind "pose" in the GeoJSON, pose_* columns in the CSV, a magenta diamond in
the report) and, with --truth, its median / P90 / mean error (pose_*) and heading error.

  geo-bench locate --index idx/ queries/*.jpg --truth truth.csv --out located/
  geo-bench locate --index idx/ photo.jpg --fov 90 --orientation unknown --top-k 5
  geo-bench locate --index idx/ pano.jpg --orientation unknown --headings 32
  geo-bench locate --index idx/ queries/*.jpg --refine out/runs/ccvpe-small-abc-s0 --refine-tile-m 64
"""

from __future__ import annotations

import argparse
import json

from ..localize.locate import DEFAULT_HEADINGS, Localizer
from ..localize.refine import PoseRefiner
from ._common import add_runtime_arguments, apply_runtime, check_device, guarded

HELP = "localise street-level images against a map index (JSON / GeoJSON / CSV / HTML, metrics with --truth)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench locate`` to ``parser``."""
    parser.add_argument("--index", required=True, help="index folder written by geo-bench index")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="query images")
    parser.add_argument(
        "--orientation",
        choices=["known", "unknown"],
        default="known",
        help="known: north-centred panoramas (default); unknown: any heading (orientation-aware "
        "recipes estimate it; others search --headings headings)",
    )
    parser.add_argument(
        "--headings",
        type=int,
        default=DEFAULT_HEADINGS,
        metavar="N",
        help=f"--orientation unknown with a recipe that is not orientation-aware: headings searched, "
        f"360/N degrees apart; each query is encoded N times (default {DEFAULT_HEADINGS})",
    )
    parser.add_argument(
        "--fov", type=float, metavar="DEG", help="limited horizontal field of view in degrees"
    )
    parser.add_argument("--top-k", type=int, default=10, help="candidates per query (default 10)")
    parser.add_argument("--truth", metavar="CSV", help="true positions: id and/or file, lat, lon")
    parser.add_argument("--out", default="located", help="output folder (default located/)")
    parser.add_argument(
        "--search",
        choices=["exact", "faiss"],
        default="exact",
        help="exact torch search (the reference, default) or the index's faiss index",
    )
    parser.add_argument("--html", action="store_true", help="also write a self-contained report.html")
    parser.add_argument("--checkpoint", help="weights to use (default: the checkpoint recorded in the index)")
    parser.add_argument(
        "--refine",
        metavar="POSE_RUN",
        help="refine each query's top-1 tile with a fine-grained pose model: a run folder (or best/, "
        "last/, weights file) of a pose recipe such as ccvpe",
    )
    parser.add_argument(
        "--refine-tile-m",
        type=float,
        metavar="M",
        help="--refine: the tile width in metres the pose model was trained on (default 64 for runs "
        "trained on the synthetic world; required otherwise)",
    )
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench locate`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(lambda: _run(args), interrupted="nothing was written; run the same command again")


def _run(args: argparse.Namespace) -> int:
    apply_runtime(args)
    if args.refine_tile_m is not None and args.refine is None:
        raise ValueError("--refine-tile-m applies to --refine POSE_RUN only")
    device = check_device(args.device)
    refiner = None
    if args.refine is not None:  # loaded first: a wrong pose run fails before any query is embedded
        refiner = PoseRefiner.load(args.refine, tile_m=args.refine_tile_m, device=device)
    loc = Localizer(args.index, checkpoint=args.checkpoint, device=device)
    res = loc.locate(
        args.images,
        top_k=args.top_k,
        orientation=args.orientation,
        fov=args.fov,
        truth=args.truth,
        backend=args.search,
        headings_n=args.headings,
        refine=refiner,
    )
    paths = res.save(args.out, html=args.html, index=loc.tiles)
    for q in res.queries:
        best = q.candidates[0]
        err = "" if q.error_m is None else f"  error {q.error_m:.1f} m (refined {q.refined_error_m:.1f} m)"
        head = "" if best.heading_deg is None else f"  heading {best.heading_deg:.1f} deg"
        pose = ""
        if q.pose_latlon is not None:
            pose = (
                f"  pose {q.pose_latlon[0]:.6f}, {q.pose_latlon[1]:.6f} heading {q.pose_heading:.1f} deg "
                f"(confidence {q.pose_confidence:.3f})"
                + ("" if q.pose_error_m is None else f" error {q.pose_error_m:.1f} m")
            )
        print(
            f"{q.id}: {q.refined_latlon[0]:.6f}, {q.refined_latlon[1]:.6f}  score {best.score:.3f}{head}{err}{pose}"
        )
    if res.metrics:
        print(json.dumps({k: round(v, 2) for k, v in res.metrics.items()}))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
