#!/usr/bin/env python3
"""toker21 training step, ours against Toker et al.'s own code (``aysim/comingdowntoearth``), on the CPU.

Both sides train the ``full`` sizes (polar aerial and panorama 3x112x616; generator base 32,
PatchGAN D base 64, ResNet-34 street branch, two SAFA heads K = 8) on the same seeded batch:

- **ours**: ``build(get_recipe("toker21", "full"))`` inside geo-retrieval's real ``Trainer``, timed
  through ``Trainer.train_step``: batch transform (joint flip, [-1, 1] normalisation), then
  ``Toker21Model.training_step`` (generator and street branch once, D step, R step, G step; three
  Adams) and the lr schedules. AMP off.
- **theirs**: their ``define_G`` / ``define_D`` / ``define_R`` and ``RGANWrapper.optimize_parameters``
  as ``train_synthesis_cvusa.py`` calls it (epoch 0: all triplets), on the batch already in [-1, 1]
  (their loader's flip and normalisation are not timed). ``torchvision.models.resnet34`` is called
  without ImageNet weights (no download; the weights do not change the step's cost).

Each side runs in its own interpreter with the same thread count (see ``_side_by_side.py`` in
geo-retrieval's ``benchmarks/``). Without ``--upstream`` the script says what is missing and
exits with 2.

Usage::

    python packages/geo-synthesis/benchmarks/bench_toker21_vs_upstream.py --upstream ~/src/comingdowntoearth
    python .../bench_toker21_vs_upstream.py --upstream DIR --batch 4 --threads 2 --warmup 1 --steps 3
    python .../bench_toker21_vs_upstream.py --profile 25 --steps 1   # torch.profiler's top ops of our step

Their code imports torch, torchvision and scipy (``utils/base_wrapper.py``); give an interpreter
that has them with ``--upstream-python`` (here: the ``tests-geo-bench`` nox environment, same torch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _bench_utils import side_by_side_harness

REPO = "https://github.com/aysim/comingdowntoearth"
NEEDED = "utils/rgan_wrapper.py"


sbs = side_by_side_harness()


def ours(args: argparse.Namespace) -> Callable[[], object]:
    return sbs.trainer_step("toker21", args)


def theirs(args: argparse.Namespace) -> Callable[[], object]:
    import torch
    import torchvision

    sys.path.insert(0, args.upstream)
    resnet34 = torchvision.models.resnet34
    torchvision.models.resnet34 = lambda pretrained=False, **kw: resnet34(weights=None)  # no download
    from networks.c_gan import define_D, define_G, define_R
    from utils.rgan_wrapper import RGANWrapper

    opt = argparse.Namespace(
        gpu_ids=[], gan_loss="vanilla", lr_g=1e-4, lr_d=1e-4, lr_r=1e-4, b1=0.5, b2=0.999,
        lambda_sm=10, lambda_l1=100, lambda_ret1=1000, hard_topk_ratio=1.0, hard_decay1_topk_ratio=0.1,
        hard_decay2_topk_ratio=0.05, hard_decay3_topk_ratio=0.01, rgan_checkpoint=None,
    )  # fmt: skip
    gpu_ids = [0] if args.device == "cuda" else []  # their networks and wrapper go to cuda:0
    opt.gpu_ids = gpu_ids
    torch.manual_seed(10)
    generator = define_G(netG="unet-skip", gpu_ids=gpu_ids)
    discriminator = define_D(
        input_c=3, output_c=3, ndf=64, netD="basic", condition=1, n_layers_D=3, gpu_ids=gpu_ids
    )
    retrieval = define_R(ret_method="SAFA", polar=True, gpu_ids=gpu_ids)
    wrapper = RGANWrapper(opt, str(Path(tempfile.mkdtemp(prefix="bench_toker21_up_")) / "log.txt"), generator,
                          discriminator, retrieval)  # fmt: skip
    for net in (generator, discriminator, retrieval):
        net.train()
    g, a = sbs.input_pair(args.batch, (112, 616), (112, 616))
    # on the CPU: set_input copies it to their device in the step, as our train_step does
    data = {"street": torch.from_numpy(g) * 2 - 1, "satellite": torch.from_numpy(a) * 2 - 1}

    def step() -> None:
        wrapper.set_input(data)
        wrapper.optimize_parameters(0)

    return step


def profile(args: argparse.Namespace) -> int:
    """torch.profiler over ``--steps`` of one side's step (after ``--warmup``): the top ops by self CPU
    time (``--profile-side``, default ours)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(args.threads)
    sbs.resolve_batch(args)
    step = {"ours": ours, "theirs": theirs}[args.profile_side](args)
    for _ in range(args.warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(args.steps):
            step()
    print(
        f"{args.profile_side}, toker21 full, batch {args.batch}, {args.threads} threads, {args.steps} profiled steps"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sbs.add_arguments(parser, batch=4, steps=3, warmup=1, gpu_batch=32)  # the recipe's (paper's) batch
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile one side's step in this process; print the top N ops",
    )
    parser.add_argument("--profile-side", choices=["ours", "theirs"], default="ours")
    args = parser.parse_args()
    if args.profile:
        return profile(args)
    if (args.worker != "ours") and sbs.missing_upstream(args.upstream, NEEDED, REPO):
        return 2
    return sbs.main(
        __file__,
        args,
        {"ours": ours, "theirs": theirs},
        title="toker21 full (3x112x616 polar aerial and panorama): one D/R/G training step",
        labels={
            "ours": "Trainer.train_step: transform + Toker21Model.training_step (D, R, G) + schedules",
            "theirs": "RGANWrapper.optimize_parameters(epoch 0) (D, R, G), inputs already in [-1, 1]",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
