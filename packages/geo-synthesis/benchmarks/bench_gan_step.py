"""Toker21 step timings: generator / discriminator forward+backward and the full D/R/G training step.

Usage: ``python packages/geo-synthesis/benchmarks/bench_gan_step.py [--device cpu|cuda] [--batch N]
[--sizes paper,small] [--repeats 3]``. Reports median seconds per call and peak memory (CUDA:
``torch.cuda.max_memory_allocated``; CPU: growth of the process's peak RSS, VmHWM, during the
measurement). Paper size: 112x616, G base 32, D base 64, ResNet-34 street branch; small: the
``toker21`` small recipe (32x128, G base 16).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _bench_utils import StepTrainer, peak_rss_mb


def _time(fn, device, repeats):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = peak_rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb() - base_rss
    return statistics.median(times), mem


def bench(size_name: str, device: torch.device, batch: int, repeats: int) -> list[str]:
    from geo_retrieval.recipes import build, get_recipe

    recipe = get_recipe("toker21", "full" if size_name == "paper" else "small")
    torch.manual_seed(0)
    model = build(recipe).to(device)
    h, w = recipe.ground_size
    x = torch.rand(batch, 3, h, w, device=device) * 2 - 1
    y = torch.rand(batch, 3, h, w, device=device) * 2 - 1
    g, d = model.generator, model.discriminator
    trainer = StepTrainer(model.configure_optimizers(recipe))
    rows = []
    for name, fn in (
        ("G fwd+bwd", lambda: g(x)[0].mean().backward()),
        ("D fwd+bwd (real+fake)", lambda: d(torch.cat([x, x]), torch.cat([y, y])).mean().backward()),
        ("toker21 training step (D, R, G)", lambda: model.training_step({"ground": y, "aerial": x}, trainer)),
    ):
        sec, mem = _time(fn, device, repeats)
        model.zero_grad(set_to_none=True)
        unit = "peak alloc" if device.type == "cuda" else "peak RSS growth"
        rows.append(f"| {size_name} {h}x{w} | {batch} | {name} | {sec:.3f} s | {mem:.0f} MiB ({unit}) |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="default: 2 on CPU (paper), 32 on CUDA")
    ap.add_argument("--sizes", default="paper,small")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print("| size | batch | what | median time | memory |\n|---|---|---|---|---|")
    for size in args.sizes.split(","):
        batch = args.batch or (32 if device.type == "cuda" else (2 if size == "paper" else 16))
        for row in bench(size, device, batch, args.repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
