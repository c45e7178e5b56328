#!/usr/bin/env python3
r"""l2ltr training step, ours against Yang et al.'s own code (``yanghongji2007/cross_view_localization_L2LTR``), on the CPU.

Both sides train the ``full`` CVUSA sizes (two separate R50+ViT-B/16 hybrids with self-cross
attention, randomly initialised; polar aerial and panorama 128x512, 256 tokens + CLS, 768-d
descriptors; weighted soft-margin triplet, alpha = 10; AdamW lr 1e-4, weight decay 0.03, eps 1e-6;
gradient norm clipped at 1.0; warm-up + cosine schedule) on the same seeded batch, in float32:

- **ours**: ``build(get_recipe("l2ltr", "full"))`` inside geo-retrieval's real ``Trainer``, timed
  through ``Trainer.train_step`` (batch transform: ImageNet normalisation; forward, loss, backward,
  clipping, AdamW, schedule). AMP off.
- **theirs**: the body of ``train.py``'s training loop (``gradient_accumulation_steps`` 1, no
  ``--fp16``), calling their objects: ``models.model_crossattn.VisionTransformer(CONFIGS[
  "R50-ViT-B_16"], (128, 512))`` twice, ``train.triplet_loss``, ``torch.optim.AdamW`` over both
  models' parameters as ``train()`` builds it, ``utils.scheduler.WarmupCosineSchedule(500, 222000)``;
  per step: ``.to(device)``, both forwards, the loss, ``backward``, ``loss.item()``,
  ``clip_grad_norm_`` over both parameter lists, ``step``, scheduler step, ``zero_grad``. The
  TensorBoard writes and tqdm updates of the loop are left out. ``train.py`` imports apex (NVIDIA's
  AMP, used only with ``--fp16``) at the top; the harness supplies an empty ``apex`` module so the
  file imports without it. Inputs are normalised beforehand (their loader's ``Normalize``).

Their code needs torch, scipy, ``ml_collections``, tqdm and ``tensorboard`` (``train.py`` imports
``SummaryWriter``); a scratch interpreter that sees this project's torch::

    uv venv --python 3.11 /tmp/l2ltr311
    echo <repo>/.nox/tests-geo-bench/lib/python3.11/site-packages > /tmp/l2ltr311/lib/python3.11/site-packages/nox_torch.pth
    uv pip install --python /tmp/l2ltr311/bin/python ml_collections tensorboard
    python packages/geo-retrieval/benchmarks/bench_l2ltr_train_vs_upstream.py \
        --upstream ~/src/cross_view_localization_L2LTR --upstream-python /tmp/l2ltr311/bin/python

Without ``--upstream`` the script says what is missing and exits with 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from collections.abc import Callable

import _side_by_side as sbs

REPO = "https://github.com/yanghongji2007/cross_view_localization_L2LTR"
NEEDED = "models/model_crossattn.py"


def ours(args: argparse.Namespace) -> Callable[[], object]:
    return sbs.trainer_step("l2ltr", args)


def theirs(args: argparse.Namespace) -> Callable[[], object]:
    import torch

    sys.modules.setdefault("apex", types.ModuleType("apex")).amp = None  # type: ignore[attr-defined]
    sys.path.insert(0, args.upstream)
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    import train  # sets CUDA_VISIBLE_DEVICES = '3' on import; put it back
    from models.model_crossattn import CONFIGS, VisionTransformer
    from utils.scheduler import WarmupCosineSchedule

    if cuda is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = CONFIGS["R50-ViT-B_16"]
    model_grd = VisionTransformer(config, (128, 512)).to(device)
    model_sat = VisionTransformer(config, (128, 512)).to(device)
    opts = argparse.Namespace(train_batch_size=args.batch, loss_weight=10.0, max_grad_norm=1.0)
    optimizer = torch.optim.AdamW(
        [*model_grd.parameters(), *model_sat.parameters()], lr=1e-4, eps=1e-6, weight_decay=0.03
    )
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=500, t_total=222000)
    criterion = train.triplet_loss()
    model_grd.train()
    model_sat.train()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    g, a = sbs.input_pair(args.batch, (128, 512), (128, 512))
    x_grd_in, x_sat_in = (torch.from_numpy(g) - mean) / std, (torch.from_numpy(a) - mean) / std

    def step() -> None:
        x_grd, x_sat = x_grd_in.to(device), x_sat_in.to(device)
        grd_global = model_grd(x_grd)
        sat_global = model_sat(x_sat)
        loss = criterion(grd_global, sat_global, opts)
        loss.backward()
        loss.item()
        torch.nn.utils.clip_grad_norm_(
            list(model_grd.parameters()) + list(model_sat.parameters()), opts.max_grad_norm
        )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sbs.add_arguments(parser, batch=4, steps=3, warmup=1, gpu_batch=32)  # the recipe's (paper's) batch
    args = parser.parse_args()
    if args.worker != "ours" and sbs.missing_upstream(
        args.upstream,
        NEEDED,
        REPO,
        extra=" and --upstream-python PYTHON (torch, scipy, ml_collections, tensorboard)",
    ):
        return 2
    return sbs.main(
        __file__,
        args,
        {"ours": ours, "theirs": theirs},
        title="l2ltr full (2x R50+ViT-B/16 self-cross attention, polar aerial and panorama 128x512): one step",
        labels={
            "ours": "Trainer.train_step: transform + forward + triplet + backward + clip + AdamW + schedule",
            "theirs": "train.py's loop body: 2 VisionTransformer + triplet_loss + clip + AdamW + WarmupCosine",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
