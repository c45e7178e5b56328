"""Benchmark the synthetic world: pairs/s at aerial 256x256 + panorama 128x512 on CPU.

    python packages/geo-bench/benchmarks/bench_synth.py [--batch 32] [--threads 1 2] [--district-m 1000]

Reports the one-off district generation time (city + two capture epochs) and the steady-state
rendering rate (aerial + panorama + labels + depth + photometric changes) per thread setting.
"""

from __future__ import annotations

import argparse
import time

import torch

from geo_bench.world import CityConfig, SyntheticWorld


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--district-m", type=float, default=1000.0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    ds = SyntheticWorld(
        "train",
        4 * args.batch,
        0,
        city=CityConfig(size_m=args.district_m),
        ground_size=(128, 512),
        aerial_size=256,
    )
    ds.render_batch([0])  # composes the capture epochs
    print(f"district {args.district_m:g} m: generation + epochs {time.perf_counter() - t0:.1f} s")
    for threads in args.threads:
        torch.set_num_threads(threads)
        rates = []
        for r in range(args.repeats):
            idx = list(range(r * args.batch % len(ds), r * args.batch % len(ds) + args.batch))
            t = time.perf_counter()
            ds.render_batch(idx)
            rates.append(args.batch / (time.perf_counter() - t))
        print(
            f"threads={threads} batch={args.batch}: {max(rates):.1f} pairs/s (best of {args.repeats}; "
            f"all {', '.join(f'{x:.1f}' for x in rates)})"
        )


if __name__ == "__main__":
    main()
