"""SMDT step timings: D step, G step and the full training step (D + G + retrieval) per size.

Usage: ``python packages/geo-synthesis/benchmarks/bench_smdt_step.py [--device cpu|cuda]
[--sizes full,small] [--what d,g,step] [--batch-full 1] [--batch-small 16] [--repeats 3]
[--threads N]``.

- ``full``: the ``smdt`` full recipe's cascade (GAN 256x1024 from a 256x256 aerial, two U-Nets
  ngf 64 / 4 levels / 9 residual blocks / 512 ch, two 3-scale patch Ds ndf 64) and, for ``step``,
  the l2ltr-full transformer retrieval at 128x512 (the triplet needs a batch >= 2).
- ``small``: the ``smdt`` small recipe (32x128, ngf 8) at its batch size.
- ``d``: discriminator loss (D1 + D2 on detached fakes, generated without gradient beforehand)
  forward + backward + Adam step; ``g``: generators forward, G loss with frozen Ds, backward,
  Adam step; ``step``: :meth:`SMDTModel.training_step` (D, then G + retrieval), optimisers included.

Each (size, what) runs in a fresh interpreter so the peak-memory figures are comparable: CUDA
``torch.cuda.max_memory_allocated``; CPU the growth of the process's peak RSS (VmHWM) over the
measurement (model and data are allocated first). Reports the median seconds per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from _bench_utils import StepTrainer, peak_rss_mb


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_one(size: str, what: str, device: torch.device, batch: int, repeats: int) -> dict:
    from geo_retrieval.recipes import build, get_recipe

    recipe = get_recipe("smdt", size)
    torch.manual_seed(0)
    model = build(recipe).to(device)
    model.train()
    cascade = model.cascade
    s = recipe.aerial_size[0]
    h, w = recipe.smdt.cascade.gan_size
    aerial = torch.rand(batch, 3, s, s, device=device) * 2 - 1
    ground = torch.rand(batch, 3, h, w, device=device) * 2 - 1
    labels = torch.randint(0, recipe.smdt.cascade.num_classes, (batch, h, w), device=device)
    opts = model.configure_optimizers(recipe)
    trainer = StepTrainer(opts)
    mapped = cascade.map_aerial(aerial)

    def d_step():
        with torch.no_grad():
            out = cascade.generate(mapped)
        loss, _ = cascade.discriminator_loss(mapped, out, labels, ground)
        loss.backward()
        trainer.optimizer_step("discriminators")

    def g_step():
        out = cascade.generate(mapped)
        cascade.set_discriminators_trainable(False)
        loss, _ = cascade.generator_loss(mapped, out, labels, ground)
        loss.backward()
        cascade.set_discriminators_trainable(True)
        trainer.optimizer_step("generators")

    def full_step():
        model.training_step({"ground": ground, "aerial": aerial, "ground_seg": labels}, trainer)

    fn = {"d": d_step, "g": g_step, "step": full_step}[what]
    fn()  # warm-up (allocates optimiser state)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = peak_rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        total = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak, total = peak_rss_mb() - base, peak_rss_mb()
    return {
        "size": size,
        "what": what,
        "batch": batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_growth_mb": round(peak, 1),
        "peak_total_mb": round(total, 1),
        "params_m": {
            "generators": sum(p.numel() for p in cascade.generator_parameters()) / 1e6,
            "discriminators": sum(p.numel() for p in cascade.discriminator_parameters()) / 1e6,
            "retrieval": sum(p.numel() for p in model.retrieval.parameters()) / 1e6,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="full,small")
    parser.add_argument("--what", default="d,g,step")
    parser.add_argument(
        "--batch-full", type=int, default=None, help="default: 1 on CPU (2 for 'step'), 4 on CUDA"
    )
    parser.add_argument("--batch-small", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # "size:what:batch" in a child
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        size, what, batch = args.one.split(":")
        print(json.dumps(run_one(size, what, device, int(batch), args.repeats)))
        return
    for size in args.sizes.split(","):
        for what in args.what.split(","):
            if size == "small":
                batch = args.batch_small
            elif args.batch_full is not None:
                batch = args.batch_full
            else:
                batch = 4 if device.type == "cuda" else (2 if what == "step" else 1)
            cmd = [
                sys.executable,
                __file__,
                "--device",
                args.device,
                "--repeats",
                str(args.repeats),
                "--one",
                f"{size}:{what}:{batch}",
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(f"{size}/{what}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"{r['size']:>5} {r['what']:>4}  batch {r['batch']:>2}  {r['device']} x{r['threads']}  "
                f"median {r['median_s']:.3f} s  (min {r['min_s']:.3f})  peak +{r['peak_growth_mb']:.0f} MB "
                f"(total {r['peak_total_mb']:.0f} MB)  params M {r['params_m']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
