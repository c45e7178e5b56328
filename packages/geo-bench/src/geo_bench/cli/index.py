"""Build a tile index of georeferenced maps for `geo-bench locate`.

Each --map (GeoTIFF or any raster GDAL reads: RGB, with a CRS) is cut into square tiles of --tile-m
metres on a metric grid of step --stride-m (north up; maps in a geographic CRS are tiled in their UTM
zone; maps in different CRSs are refused: reproject them first). Tiles are read one window at a time
(never the whole mosaic), resampled to the pixel size the model was trained on, preprocessed as in
`geo-bench evaluate` and embedded in batches. INDEX holds float32 descriptors, tile centres in the
map CRS and in lat/lon, a faiss index (flat up to --flat-max tiles, IVF-PQ beyond) and
manifest.json (model, maps with sha256, tiling).

Resumable: descriptors are written in chunks, each atomically; rerunning the same command after an
interruption continues. A rerun with another checkpoint, a changed map or another tiling is refused.

  geo-bench index --checkpoint runs/safa-small-s0 --map ortho.tif --out idx/
  geo-bench index --checkpoint runs/dsm --map a.tif --map b.tif --tile-m 64 --stride-m 16 --out idx/
  geo-bench index --checkpoint runs/safa-small-s0 --tiles tiles/centres.csv --tile-m 64 --out idx/

Needs rasterio and pyproj: pip install 'geo-bench[map]'.
"""

from __future__ import annotations

import argparse

from ..localize.index import TileIndex, build_index, load_checkpoint
from ._common import add_runtime_arguments, apply_runtime, check_device, guarded, progress_enabled

HELP = "cut georeferenced maps into tiles and embed them into a localisation index"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``geo-bench index`` to ``parser``."""
    parser.add_argument(
        "--checkpoint", required=True, help="run folder, best/ or last/ folder, or weights file"
    )
    parser.add_argument("--recipe", help="recipe name (default: from the checkpoint)")
    parser.add_argument(
        "--variant", choices=["small", "full"], help="recipe variant (default: from the checkpoint)"
    )
    parser.add_argument(
        "--map",
        action="append",
        metavar="RASTER",
        help="georeferenced RGB raster (repeat for several maps of one CRS)",
    )
    parser.add_argument(
        "--tiles",
        metavar="CSV",
        help="instead of --map: pre-cut square north-up tiles listed in a CSV with columns file "
        "(relative to the CSV), lat, lon (tile centre, WGS84), each --tile-m wide",
    )
    parser.add_argument(
        "--out", required=True, metavar="INDEX", help="index folder (created; resumed if partial)"
    )
    parser.add_argument(
        "--tile-m", type=float, default=64.0, help="tile width in metres (default 64, the world's tiles)"
    )
    parser.add_argument("--stride-m", type=float, help="grid step in metres (default: half the tile width)")
    parser.add_argument(
        "--px",
        type=int,
        help="tile side in pixels (default: the training world's aerial size from run.json, else "
        "the recipe's)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="tiles embedded at once (default 64)")
    parser.add_argument("--chunk", type=int, default=1024, help="tiles per resumable chunk (default 1024)")
    parser.add_argument(
        "--flat-max",
        type=int,
        default=200_000,
        help="faiss flat index up to this many tiles, IVF-PQ beyond (default 200000)",
    )
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query (default 16)")
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``geo-bench index`` on the parsed ``args``; returns the exit status (2 for a fault the user can fix, 130 after Ctrl-C)."""
    return guarded(
        lambda: _run(args),
        interrupted=("finished chunks are kept; run the same command again to continue the index"),
    )


def _run(args: argparse.Namespace) -> int:
    apply_runtime(args)
    for name in ("batch_size", "chunk", "flat_max", "nprobe"):
        if getattr(args, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}"
            )
    if bool(args.map) == bool(args.tiles):
        raise ValueError("give --map RASTER (one or more) or --tiles CSV")
    loaded = load_checkpoint(
        args.checkpoint, recipe=args.recipe, variant=args.variant, device=check_device(args.device)
    )
    out = build_index(
        loaded,
        args.map or [],
        args.out,
        tile_m=args.tile_m,
        stride_m=args.stride_m,
        px=args.px,
        batch_size=args.batch_size,
        chunk_tiles=args.chunk,
        flat_max=args.flat_max,
        ivf_nprobe=args.nprobe,
        progress=progress_enabled(args),
        tiles_csv=args.tiles,
    )
    idx = TileIndex.load(out)
    faiss = idx.manifest.get("faiss") or {"kind": "none"}
    print(
        f"index {out}: {len(idx)} tiles of {idx.tile_m:g} m ({idx.manifest['tiling']['px']} px) in "
        f"{idx.crs}, faiss {faiss['kind']}"
    )
    return 0
