"""Benchmark map localisation: index build rate, query latency and memory, faiss flat vs IVF-PQ.

    python packages/geo-bench/benchmarks/bench_locate.py [--km2 1 25] [--stride-m 16] [--gsd 0.25]
        [--checkpoint RUN] [--queries 100] [--threads 1]

A 1 km x 1 km orthophoto of a synthetic-world district is written with ``geo-bench synth --layout
map``'s writer (``--gsd`` m/px, default the world's 0.25). Larger areas (``--km2 25``) are mosaics of
copies of that GeoTIFF with shifted geotransforms (a 5 x 5 grid of 1 km maps: several files of one
CRS, as a real orthophoto delivery), so the district is generated once. The model is safa small,
untrained unless ``--checkpoint`` is given (timing does not depend on the weights). Printed per
area: tiles, build time and rate (windowed reads + preprocessing + embedding, tiles/s), the flat
descriptor and faiss file sizes, peak resident memory of the building process (a fresh child, beside one that only loads the model), and the
per-query latency of
the exact torch search, faiss flat and faiss IVF-PQ (query embedding excluded; best of 3), with
the recall of the exact top-10 (tie-aware: a returned tile counts when its exact score reaches the
exact 10th score; the 25 km2 mosaic repeats one district, so ids tie 25-fold). Queries are tile
descriptors plus Gaussian noise (``--noise``), renormalised.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geo_bench.localize.index import LoadedModel, TileIndex, build_index, load_checkpoint, search, write_faiss
from geo_bench.world import CityConfig, RenderConfig
from geo_bench.world.layouts import write_map
from geo_retrieval.checkpoint import weights_digest


def _model(checkpoint: str | None) -> LoadedModel:
    if checkpoint:
        return load_checkpoint(checkpoint)
    from geo_retrieval.recipes import build, get_recipe

    recipe = get_recipe("safa", "small")
    torch.manual_seed(0)
    model = build(recipe).eval()
    return LoadedModel(
        model,
        recipe,
        "small",
        weights_digest(model.state_dict()),
        Path("untrained-safa-small"),
        {"data": {"world": {"aerial_size": 128}}},
        "cpu",
    )


def _child(checkpoint: str | None, threads: int, job: tuple[list[str], str, float, int] | None) -> float:
    """Run in a fresh process: load the model and (with ``job``) build the index; returns build seconds."""
    torch.set_num_threads(threads)
    loaded = _model(checkpoint)
    if job is None:
        return 0.0
    maps, out, stride, batch = job
    t = time.perf_counter()
    build_index(loaded, maps, out, stride_m=stride, batch_size=batch)
    return time.perf_counter() - t


def _mosaic(base: Path, side: int, out: Path) -> list[Path]:
    """``side x side`` copies of ``base`` (1 km each) shifted east / south in the same CRS."""
    import rasterio
    from rasterio.transform import Affine

    if side == 1:
        return [base]
    with rasterio.open(base) as src:
        profile, data = src.profile, src.read()
        t = src.transform
    width_m = profile["width"] * t.a
    paths = []
    for i in range(side):
        for j in range(side):
            p = out / f"map_{i}_{j}.tif"
            prof = dict(profile)
            prof["transform"] = Affine(t.a, t.b, t.c + j * width_m, t.d, t.e, t.f - i * width_m)
            with rasterio.open(p, "w", **prof) as dst:
                dst.write(data)
            paths.append(p)
    return paths


def _best(idx: TileIndex, q: torch.Tensor, backend: str, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times of one top-10 search of all queries."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        search(idx, q, 10, backend=backend)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--km2", type=int, nargs="+", default=[1, 25], help="areas (square numbers of km2)")
    parser.add_argument("--stride-m", type=float, default=16.0)
    parser.add_argument("--gsd", type=float, default=0.25, help="orthophoto m/px")
    parser.add_argument("--checkpoint")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="IVF lists probed per query")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.05,
        help="queries: tile descriptors plus N(0, noise) per dimension, renormalised (0.05 at "
        "D = 256 gives cosine ~0.78 to their tile, like real matches)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_locate_"))
    try:
        t = time.perf_counter()
        size = round(64.0 / args.gsd)
        write_map(
            work / "base",
            4,
            0,
            render=RenderConfig(ground_size=(32, 128), aerial_size=size),
            city=CityConfig(size_m=1000),
            map_m=1000,
            progress=False,
        )
        print(
            f"1 km2 orthophoto at {args.gsd:g} m/px: {time.perf_counter() - t:.1f} s to render "
            f"({(work / 'base' / 'map.tif').stat().st_size / 2**20:.1f} MiB GeoTIFF)"
        )
        for km2 in args.km2:
            side = round(km2**0.5)
            if side * side != km2:
                raise SystemExit(f"--km2 takes square numbers, got {km2}")
            area = work / f"a{km2}"
            area.mkdir()
            maps = _mosaic(work / "base" / "map.tif", side, area)
            out = area / "index"
            # memory: peak RSS of a fresh child that only loads the model, then of one that builds
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(1) as pool:
                pool.apply(_child, (args.checkpoint, args.threads, None))
            base_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            with ctx.Pool(1) as pool:
                build_s = pool.apply(
                    _child,
                    (
                        args.checkpoint,
                        args.threads,
                        ([str(p) for p in maps], str(out), args.stride_m, args.batch_size),
                    ),
                )
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            idx = TileIndex.load(out)
            n = len(idx)
            print(
                f"\n{km2} km2 ({len(maps)} map file(s)), stride {args.stride_m:g} m: {n} tiles, build "
                f"{build_s:.1f} s = {n / build_s:.0f} tiles/s (incl. faiss {idx.manifest['faiss']['kind']}); "
                f"descriptors {(out / 'descriptors.npy').stat().st_size / 2**20:.1f} MiB; peak RSS of the "
                f"building process {rss / 1024:.0f} MiB (a process that only loads the model: "
                f"{base_rss / 1024:.0f} MiB)"
            )
            rng = np.random.default_rng(0)
            desc = np.asarray(idx.descriptors)
            pick = rng.choice(n, min(args.queries, n), replace=False)
            q = torch.from_numpy(
                desc[pick] + rng.normal(0, args.noise, (len(pick), desc.shape[1])).astype(np.float32)
            )
            q = torch.nn.functional.normalize(q, dim=1)
            exact_s, _ = search(idx, q, 10, backend="exact")
            kth = exact_s[:, -1].numpy()
            rows = [("exact torch", _best(idx, q, "exact"), 1.0, (out / "descriptors.npy").stat().st_size)]
            for kind, nprobe in [("flat", 0)] + [("ivfpq", p) for p in args.nprobe]:
                if kind == "ivfpq" and n < 39 * 4:
                    continue
                t = time.perf_counter()
                idx.manifest["search"]["ivf_nprobe"] = nprobe
                info = write_faiss(out, idx.manifest, kind=kind)
                fbuild = time.perf_counter() - t
                idx.manifest["faiss"] = info
                idx._faiss = None
                _, fi = search(idx, q, 10, backend="faiss")
                # tie-aware recall (the mosaic repeats one district): a returned tile counts when its
                # exact score reaches the exact 10th score
                got = np.einsum("qkd,qd->qk", desc[fi.numpy()], q.numpy())
                recall = float(np.mean(got >= kth[:, None] - 1e-5))
                lat = _best(idx, q, "faiss")
                rows.append(
                    (
                        f"faiss {kind} ({json.dumps(info)}; built in {fbuild:.1f} s)",
                        lat,
                        recall,
                        (out / "faiss.index").stat().st_size,
                    )
                )
            for name, secs, recall, nbytes in rows:
                print(
                    f"  {name}: {1000 * secs / len(q):.3f} ms/query ({len(q)} queries, top-10), "
                    f"recall@10 of exact {100 * recall:.0f} %, {nbytes / 2**20:.1f} MiB"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
