"""Benchmark the corruption set (``geo_bench.protocols.corruptions``) on world-sized panoramas.

For every corruption and severity it prints the time per image of ``corrupt`` (per-image seeded
streams, float64 arithmetic and the 8-bit quantisation included) on one batch, beside two references
measured in the same run on the same batch:

- ``copy``: ``images.clone()``, the memory-bandwidth floor;
- ``kornia blur``: ``kornia.filters.gaussian_blur2d`` in float32 (sigma 2, 13 x 13), a plain library
  filter without reproducibility guarantees or quantisation; the last column is each corruption's
  mean time over the five severities divided by this one.

Usage::

    python packages/geo-bench/benchmarks/bench_corruptions.py
    python packages/geo-bench/benchmarks/bench_corruptions.py --batch 16 --size 224x1232 --only fog snow

The default batch is 64 panoramas of 3 x 128 x 512 (the synthetic world's size), a smooth random
scene (upsampled noise plus fine texture) so that blurs and JPEG see realistic content.
"""

from __future__ import annotations

import argparse
import time

import kornia
import torch
import torch.nn.functional as F

from geo_bench.protocols import CORRUPTIONS, corrupt, corruption_set_hash


def _images(batch: int, h: int, w: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, max(2, h // 16), max(2, w // 16), generator=g)
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    texture = 0.08 * (torch.rand(batch, 3, h, w, generator=g) - 0.5)
    return (smooth + texture).clamp(0, 1).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_ms_per_image(fn, n_images: int, repeat: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 1000.0 * best / n_images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64, help="images per call")
    parser.add_argument("--size", default="128x512", help="panorama HxW")
    parser.add_argument("--repeat", type=int, default=1, help="timing repeats (the best is shown)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="corruptions to time")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    names = args.only or list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        parser.error(f"unknown corruption(s) {unknown}; available: {list(CORRUPTIONS)}")
    x = _images(args.batch, h, w, args.device)
    ids = [f"bench{i:04d}" for i in range(args.batch)]

    corrupt(x[:2], "gaussian_noise", 1, seed=0, sample_ids=ids[:2])  # warm-up (allocator, thread pool)
    kornia.filters.gaussian_blur2d(x[:2], (13, 13), (2.0, 2.0))
    copy_ms = _best_ms_per_image(lambda: x.clone(), args.batch, max(3, args.repeat), args.device)
    blur_ms = _best_ms_per_image(
        lambda: kornia.filters.gaussian_blur2d(x, (13, 13), (2.0, 2.0)),
        args.batch,
        max(3, args.repeat),
        args.device,
    )
    print(
        f"torch {torch.__version__}, kornia {kornia.__version__}, device {args.device}, "
        f"threads {torch.get_num_threads()}, batch {args.batch} x 3 x {h} x {w}"
    )
    print(f"corruption set {corruption_set_hash()[:16]}")
    print(
        f"reference copy {copy_ms:.3f} ms/image, kornia gaussian_blur2d (float32, 13x13) {blur_ms:.3f} ms/image"
    )
    sev_cols = "".join(f"{'sev ' + str(s):>9}" for s in range(1, 6))
    print(f"{'corruption':<18}{'group':<9}{sev_cols}{'mean':>9}{'x blur':>8}   (ms/image)")
    total = 0.0
    for name in names:
        times = []
        for severity in range(1, 6):
            ms = _best_ms_per_image(
                lambda n=name, s=severity: corrupt(x, n, s, seed=0, sample_ids=ids),
                args.batch,
                args.repeat,
                args.device,
            )
            times.append(ms)
        mean = sum(times) / len(times)
        total += sum(times)
        cells = "".join(f"{t:>9.2f}" for t in times)
        print(f"{name:<18}{CORRUPTIONS[name].group:<9}{cells}{mean:>9.2f}{mean / blur_ms:>8.1f}", flush=True)
    print(
        f"all {len(names)} x 5 conditions: {total:.1f} ms/image "
        f"({total * args.batch / 1000:.1f} s for this batch)"
    )


if __name__ == "__main__":
    main()
