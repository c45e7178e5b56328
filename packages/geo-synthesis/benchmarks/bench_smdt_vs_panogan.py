#!/usr/bin/env python3
"""SMDT's GAN step, ours against PanoGAN's own code (``sswuai/PanoGAN``, the code SMDT ships), on the CPU.

SMDT's GANs were never released; its ``Image_Alignment/`` folder is PanoGAN. Both sides train at
PanoGAN's size (256x1024, ngf 64, ndf 64) on seeded inputs, float32, Adam 2e-4 (0.5, 0.999):

- **ours**: the ``smdt`` full recipe's :class:`~geo_synthesis.smdt.cascade.SMDTCascade` as
  ``SMDTModel.training_step`` drives it before retrieval starts: mixed mapping of a 256x256 aerial,
  generation, D1 + D2 loss on the detached outputs, backward, D Adam; then D frozen, G loss
  (BCE + 100 L1 image + 100 L1 segmentation), backward, G Adam. ``--architecture single``
  (default) is the PanoGAN-style single U-Net with image + K segmentation outputs; ``cascade`` is
  the paper's G1 -> G2 (two U-Nets, twice the generator).
- **theirs**: ``panoganModel.optimize_parameters()`` with ``netG unet_afl_v5``, ``netD fpd``,
  instance norm, dropout on, ``loop_count 1`` (SMDT's setting: no feedback iteration), on A, B
  and D (aerial in PanoGAN's 256x1024 layout, street image, colour segmentation) in [-1, 1].

``--what g`` times the generator step alone: ours generation + G loss + backward + G Adam; theirs
``forward()`` (which also runs both Ds on the fakes for the feedback input) + ``backward_G()`` + G
Adam, Ds frozen. ``--what gan`` (default) the whole D + G step.

The two designs differ (our U-Net adds a full-resolution stem and a fifth skip level, PanoGAN has
feature-pyramid discriminators and feedback transfer blocks; parameters printed per side), so the
ratio compares what a user runs for SMDT's GAN, not one network in two implementations. Each side
also counts the floating-point operations of one step (``torch.utils.flop_counter``): GFLOP/s
compares the implementations per unit of arithmetic.

PanoGAN's ``models/networks.py`` at 27ab77b does not parse (``def __init__`` of
``FeaturePyramidDiscriminator`` at column 0, line 2454). The script says so and exits with 2; in
your own checkout indent that one line by four spaces (the only change) and rerun::

    git clone https://github.com/sswuai/PanoGAN panogan
    sed -i '2454s/^def __init__/    def __init__/' panogan/models/networks.py
    python packages/geo-synthesis/benchmarks/bench_smdt_vs_panogan.py --upstream panogan
    python .../bench_smdt_vs_panogan.py --upstream panogan --what g --architecture cascade --steps 2

Each side runs in its own interpreter with the same thread count (geo-retrieval's
``benchmarks/_side_by_side.py``). Without ``--upstream`` the script says what is missing and
exits with 2.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench_utils import side_by_side_harness

REPO = "https://github.com/sswuai/PanoGAN"
NEEDED = "models/panogan_model.py"
SIZE = (256, 1024)


sbs = side_by_side_harness()


def unparsable(upstream: str) -> str | None:
    """Why PanoGAN's ``models/networks.py`` in ``upstream`` cannot be imported (None when it parses)."""
    path = Path(upstream) / "models" / "networks.py"
    try:
        ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as err:
        return (
            f"error: {path} does not parse: {type(err).__name__} at line {err.lineno}: {err.msg}.\n"
            "  PanoGAN 27ab77b has `def __init__` of FeaturePyramidDiscriminator (the `fpd` discriminator "
            "PanoGAN trains with) at column 0, line 2454.\n"
            f"  Indent it by four spaces in your checkout, the only change: "
            f"sed -i '2454s/^def __init__/    def __init__/' {path}"
        )
    return None


def _flops(step: Callable[[], object]) -> float:
    """GFLOP of one call of ``step`` (forward + backward convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 1e9


def _describe(step: Callable[[], object], params: int) -> Callable[[], object]:
    """``step`` with ``info`` (parameters, GFLOP per step) for the harness; runs ``step`` once."""

    def described() -> object:
        return step()

    described.info = {"params_m": params / 1e6, "gflop_per_step": _flops(step)}  # type: ignore[attr-defined]
    return described


def ours(args: argparse.Namespace) -> Callable[[], object]:
    import dataclasses

    import torch

    from geo_retrieval.config import OptimizerConfig
    from geo_retrieval.recipes import get_recipe
    from geo_retrieval.training import build_optimizer
    from geo_synthesis.smdt import SMDTCascade

    recipe = get_recipe("smdt", "full")
    smdt = recipe.smdt  # type: ignore[attr-defined]
    cfg = dataclasses.replace(smdt.cascade, architecture=args.architecture)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cascade = SMDTCascade(cfg).train().to(device)
    if args.channels_last:
        cascade = cascade.to(memory_format=torch.channels_last)
    adam = OptimizerConfig("adam", lr=smdt.gan_lr, betas=smdt.gan_betas, weight_decay=0.0, eps=1e-8)
    opt_g = build_optimizer(cascade.generator_parameters(), adam)
    opt_d = build_optimizer(cascade.discriminator_parameters(), adam)
    g, a = sbs.input_pair(args.batch, SIZE, (SIZE[0], SIZE[0]))
    ground, aerial = (torch.from_numpy(g) * 2 - 1).to(device), (torch.from_numpy(a) * 2 - 1).to(device)
    labels = torch.randint(
        0, cfg.num_classes, (args.batch, *SIZE), generator=torch.Generator().manual_seed(0)
    ).to(device)

    def g_step(mapped: torch.Tensor, out: Any) -> None:
        cascade.set_discriminators_trainable(False)
        try:
            loss_g, _ = cascade.generator_loss(mapped, out, labels, ground)
            loss_g.backward()
        finally:
            cascade.set_discriminators_trainable(True)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)

    def gan() -> None:
        mapped = cascade.map_aerial(aerial)
        out = cascade.generate(mapped)
        loss_d, _ = cascade.discriminator_loss(mapped, out, labels, ground)
        loss_d.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        g_step(mapped, out)

    def g_only() -> None:
        mapped = cascade.map_aerial(aerial)
        g_step(mapped, cascade.generate(mapped))

    step = gan if args.what == "gan" else g_only
    return _describe(step, sum(p.numel() for p in cascade.parameters()))


def theirs(args: argparse.Namespace) -> Callable[[], object]:
    import torch

    sys.path.insert(0, args.upstream)
    from models.panogan_model import panoganModel

    # the options of PanoGAN's scripts/train_panogan_cvusa.sh, with SMDT's loop_count 1
    opt = argparse.Namespace(
        gpu_ids=[0] if args.device == "cuda" else [],  # their networks go to cuda:0
        isTrain=True,
        checkpoints_dir=tempfile.mkdtemp(prefix="bench_panogan_"),
        name="bench",
        preprocess="none",
        loop_count=1,
        alpha=[0.5] * 5,
        input_nc=3,
        output_nc=3,
        ngf=64,
        ndf=64,
        netG="unet_afl_v5",
        netD="fpd",
        norm="instance",
        no_dropout=False,
        init_type="normal",
        init_gain=0.02,
        n_layers_D=3,
        gan_mode="vanilla",
        lr=2e-4,
        beta1=0.5,
        lambda_L1=100.0,
        lambda_L1_seg=100.0,
        direction="AtoB",
    )
    torch.manual_seed(0)
    model = panoganModel(opt)
    g, a = sbs.input_pair(args.batch, SIZE, SIZE)
    seg, _ = sbs.input_pair(args.batch, SIZE, SIZE, seed=1)
    device = torch.device(args.device)  # inputs on the device beforehand, as ours
    model.set_input(
        {
            "A": (torch.from_numpy(a) * 2 - 1).to(device),
            "B": (torch.from_numpy(g) * 2 - 1).to(device),
            "D": (torch.from_numpy(seg) * 2 - 1).to(device),
            "A_paths": ["bench"] * args.batch,
        }
    )

    def g_only() -> None:
        model.set_requires_grad(model.netD_img, False)
        model.set_requires_grad(model.netD_seg, False)
        model.optimizer_G.zero_grad()
        model.forward()
        model.backward_G()
        model.optimizer_G.step()

    step = model.optimize_parameters if args.what == "gan" else g_only
    nets = (model.netG, model.netD_img, model.netD_seg)
    return _describe(step, sum(p.numel() for n in nets for p in n.parameters()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # GPU batch 8: SMDT's recipe batch (32) is the retrieval's; PanoGAN's script takes it as an argument
    sbs.add_arguments(parser, batch=1, steps=3, warmup=1, gpu_batch=8)
    parser.add_argument(
        "--what",
        choices=["gan", "g"],
        default="gan",
        help="gan: D + G step (default); g: the generator step alone",
    )
    parser.add_argument(
        "--architecture",
        choices=["single", "cascade"],
        default="single",
        help="our generator: single U-Net as PanoGAN (default) or the paper's G1 -> G2 cascade",
    )
    args = parser.parse_args()
    if args.worker != "ours":
        if sbs.missing_upstream(args.upstream, NEEDED, REPO):
            return 2
        why = unparsable(args.upstream)
        if why:
            print(why, file=sys.stderr)
            return 2
    what = {"gan": "D + G step", "g": "generator step"}[args.what]
    ours_label = {
        "single": "SMDTCascade, single U-Net (image + 6 classes), 2 x 3-scale patch Ds",
        "cascade": "SMDTCascade, G1 -> G2 U-Nets, 2 x 3-scale patch Ds",
    }[args.architecture]
    return sbs.main(
        __file__,
        args,
        {"ours": ours, "theirs": theirs},
        title=f"SMDT GAN at 256x1024 (ngf 64, ndf 64): one {what}",
        labels={
            "ours": f"{ours_label}: {what} (mapping included)",
            "theirs": f"panoganModel unet_afl_v5 + 2 x fpd, loop_count 1: {what}",
        },
        extra_args=["--what", args.what, "--architecture", args.architecture],
    )


if __name__ == "__main__":
    sys.exit(main())
