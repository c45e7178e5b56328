"""Training throughput (pairs/s) and peak memory per recipe, AMP and channels-last on/off side by side.

Each configuration builds the recipe's model (``pretrained=False``), wraps it in the real
:class:`~geo_retrieval.training.Trainer` and times :meth:`Trainer.train_step` (preprocessing incl.
polar transform + augmentation, forward, loss, backward, clipping, optimiser, lr schedule) on one
fixed in-memory batch: ``--warmup`` steps first, then ``--steps`` timed steps. Data loading is
excluded. AMP is bf16 autocast on CPU and fp16 + GradScaler on CUDA.

Each configuration runs in a fresh interpreter (``--no-isolate`` runs them in this one), so memory
figures do not inherit earlier allocations. Peak memory: CUDA ``max_memory_allocated`` during the
timed steps; on CPU the process's peak resident set size (Linux ``VmHWM``) and its growth over the
resident set just before the model is built (the training footprint: model, optimiser state,
activations, allocator caches).

Usage::

    python packages/geo-retrieval/benchmarks/bench_train_throughput.py               # small, CPU
    python packages/geo-retrieval/benchmarks/bench_train_throughput.py --device cuda --variant full
    python .../bench_train_throughput.py --recipes safa,dsm --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _side_by_side import status_kib  # the benchmarks' one /proc reader

from geo_retrieval.recipes import build, get_recipe, list_recipes
from geo_retrieval.testing import SyntheticPairs
from geo_retrieval.training import Trainer


def bench_one(
    name: str,
    variant: str,
    *,
    amp: bool,
    channels_last: bool,
    device: torch.device,
    batch_size: int | None,
    steps: int,
    warmup: int,
) -> dict:
    recipe = get_recipe(name, variant)
    b = batch_size or recipe.batch_size
    aerial_side = max(recipe.aerial_size) if recipe.polar else recipe.aerial_size[0]
    data = SyntheticPairs(b, aerial_size=aerial_side, ground_size=recipe.ground_size, seed=0)
    batch = {"ground": data.ground, "aerial": data.aerial, "id": data.ids, "utm": data.utm}
    rss_base = status_kib("VmRSS")
    torch.manual_seed(0)
    model = build(recipe)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model,
            recipe.replace(batch_size=b),
            data,
            out_dir=out,
            device=device,
            amp=amp,
            channels_last=channels_last,
            sampler="unique",
            progress=False,
        )
        for _ in range(warmup):
            trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    row = {
        "recipe": name,
        "variant": variant,
        "amp": amp,
        "channels_last": channels_last,
        "batch": b,
        "ground": [trainer.transform.ground_size[0], trainer.transform.ground_width],
        "aerial": list(recipe.aerial_size),
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "pairs_per_s": b * steps / seconds,
        "step_ms": 1000 * seconds / steps,
    }
    if device.type == "cuda":
        row["peak_mem_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = status_kib("VmHWM")
        row["peak_rss_MiB"] = peak / 1024 if peak else float("nan")
        row["rss_growth_MiB"] = (peak - rss_base) / 1024 if peak and rss_base else float("nan")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipes", default=None, help="comma-separated recipe names (default: every recipe with --variant)"
    )
    parser.add_argument("--variant", default="small", choices=("small", "full"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's batch size")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="run every configuration in this process (memory figures then accumulate)",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: NAME,AMP,CL -> JSON row
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kwargs = {"device": device, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup}
    if args.one:
        name, amp, cl = args.one.split(",")
        print(json.dumps(bench_one(name, args.variant, amp=amp == "1", channels_last=cl == "1", **kwargs)))
        return
    rows = []
    for name in args.recipes.split(",") if args.recipes else list_recipes(args.variant):
        for amp in (False, True):
            for channels_last in (False, True):
                if not args.isolate:
                    rows.append(bench_one(name, args.variant, amp=amp, channels_last=channels_last, **kwargs))
                    continue
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{name},{int(amp)},{int(channels_last)}",
                    "--variant",
                    args.variant,
                    "--device",
                    args.device,
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                ]
                cmd += ["--threads", str(args.threads)] if args.threads else []
                cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
    mem_key = "peak_mem_MiB" if device.type == "cuda" else "peak_rss_MiB"
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(
        f"# train throughput: {args.variant} recipes on {device.type} ({hw}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}, {args.steps} timed steps "
        f"after {args.warmup} warm-up"
    )
    print()
    print(
        f"| recipe | batch | ground | aerial | params (M) | AMP | channels_last | pairs/s | ms/step | {mem_key} |"
        + (" RSS growth (MiB) |" if device.type != "cuda" else "")
    )
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|" if device.type != "cuda" else ""))
    for r in rows:
        amp_name = ("bf16" if device.type != "cuda" else "fp16") if r["amp"] else "off"
        line = (
            f"| {r['recipe']} | {r['batch']} | {r['ground'][0]}x{r['ground'][1]} | {r['aerial'][0]}x{r['aerial'][1]} "
            f"| {r['params_M']:.2f} | {amp_name} | {'on' if r['channels_last'] else 'off'} "
            f"| {r['pairs_per_s']:.1f} | {r['step_ms']:.0f} | {r[mem_key]:.0f} |"
        )
        if device.type != "cuda":
            line += f" {r['rss_growth_MiB']:.0f} |"
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps({"device": str(device), "hardware": hw, "rows": rows}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
