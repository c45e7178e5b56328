#!/usr/bin/env python3
"""Samples/s of CVUSA loading from raw JPEGs vs from the ``prepare`` cache, in the same run.

Generates a fake CVUSA of ``--n`` pairs at the real sizes (aerial 750x750 JPEG, panorama 224x1232
JPEG, smooth random content so the files are realistically sized), then times

1. direct loading (Pillow decode + antialiased resize [+ polar]) over every sample,
2. ``prepare_cache`` (the one-off cost),
3. loading the same samples from the memory-mapped cache (``cache_verify="lazy"``, which hashes each
   chunk on first touch, and ``"meta"``, no hashing),

in one process, single-threaded (``torch.set_num_threads(1)``), and prints them side by side with
the ratio. Each timed pass runs after one warm-up pass over the first few samples; the page cache
is warm for both paths (the JPEGs were just written), which favours the raw path.

    python packages/geo-bench/benchmarks/bench_prepare_cache.py --n 200 [--polar safa]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geo_bench.datasets import CVUSA, prepare_cache


def make_fake_cvusa(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "bingmap/19").mkdir(parents=True)
    (root / "streetview/panos").mkdir(parents=True)
    (root / "splits").mkdir()
    rows = []
    for k in range(1, n + 1):
        sid = f"{k:07d}"
        # smooth random content: upsampled noise plus a little fine noise, JPEG q=90
        aer = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).resize(
            (750, 750), Image.BICUBIC
        )
        aer = np.asarray(aer, dtype=np.int16) + rng.integers(-12, 13, (750, 750, 3), dtype=np.int16)
        Image.fromarray(aer.clip(0, 255).astype(np.uint8)).save(root / f"bingmap/19/{sid}.jpg", quality=90)
        pan = Image.fromarray(rng.integers(0, 256, (8, 40, 3), dtype=np.uint8)).resize(
            (1232, 224), Image.BICUBIC
        )
        pan = np.asarray(pan, dtype=np.int16) + rng.integers(-12, 13, (224, 1232, 3), dtype=np.int16)
        Image.fromarray(pan.clip(0, 255).astype(np.uint8)).save(
            root / f"streetview/panos/{sid}.jpg", quality=90
        )
        rows.append(f"bingmap/19/{sid}.jpg,streetview/panos/{sid}.jpg,streetview/annotations/{sid}.png")
    (root / "splits/train-19zl.csv").write_text("\n".join(rows) + "\n")


def rate(ds: CVUSA, warmup: int = 5) -> float:
    for i in range(min(warmup, len(ds))):
        ds[i]
    t = time.perf_counter()
    for i in range(len(ds)):
        s = ds[i]
        assert s["ground"].dtype == torch.float32
    return len(ds) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="pairs in the fake dataset")
    ap.add_argument("--polar", default=None, help="polar preset/size for the aerial (default: raw 256x256)")
    ap.add_argument("--workdir", default=None, help="where to write (default: a temporary folder, removed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        root, cache = work / "CVUSA", work / "cache"
        t = time.perf_counter()
        if not (root / "splits/train-19zl.csv").is_file():
            make_fake_cvusa(root, args.n)
        gen_s = time.perf_counter() - t
        kw = {"ground_size": (112, 616), "aerial_size": (256, 256), "polar": args.polar or False}
        raw = CVUSA(root, "train", **kw)
        raw_rate = rate(raw)
        t = time.perf_counter()
        entry = prepare_cache(raw, cache, progress=False)
        prep_s = time.perf_counter() - t
        lazy_rate = rate(CVUSA(root, "train", cache=cache, **kw))
        meta_rate = rate(CVUSA(root, "train", cache=cache, cache_verify="meta", **kw))
        size_mb = sum(f.stat().st_size for f in entry.glob("*.npy")) / 2**20
        jpeg_mb = sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20
        print(
            f"fake CVUSA: {len(raw)} pairs, aerial 750x750 + panorama 224x1232 JPEG ({jpeg_mb:.1f} MiB), "
            f"generated in {gen_s:.1f} s"
        )
        print(
            f"output: ground {raw.ground_size}, aerial {raw.aerial_size}"
            f"{' polar ' + raw.polar.name if raw.polar else ' raw'}; 1 torch thread; "
            f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
        )
        print(f"prepare_cache: {prep_s:.2f} s ({len(raw) / prep_s:.1f} samples/s), cache {size_mb:.1f} MiB")
        print()
        print(f"{'path':<34}{'samples/s':>12}{'vs raw':>10}")
        print(f"{'raw JPEG (decode+resize)':<34}{raw_rate:>12.1f}{1.0:>9.1f}x")
        print(f"{'cache, verify=lazy (1st pass)':<34}{lazy_rate:>12.1f}{lazy_rate / raw_rate:>9.1f}x")
        print(f"{'cache, verify=meta':<34}{meta_rate:>12.1f}{meta_rate / raw_rate:>9.1f}x")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
