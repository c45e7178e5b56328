#!/usr/bin/env python3
"""sample4geo training step, ours against Deuser et al.'s own code (``Skyy93/Sample4Geo``), on the CPU.

Both sides train the ``full`` CVUSA sizes (one weight-shared timm ``convnext_base`` with
``num_classes=0``, randomly initialised; aerial 3x384x384, panorama 3x140x768; symmetric InfoNCE
with label smoothing 0.1 and a learnable logit scale; AdamW lr 1e-3, weight decay 0.01; gradient
clipping by value at 100) on the same seeded batch, in float32 (their CVUSA config runs
``torch.cuda.amp`` autocast, which does nothing on a CPU; ours runs with ``amp=False``):

- **ours**: ``build(get_recipe("sample4geo", "full"))`` inside geo-retrieval's real ``Trainer``,
  timed through ``Trainer.train_step`` (batch transform: ImageNet normalisation, resize that is a
  no-op at these sizes; forward, loss, backward, clipping, AdamW, the cosine schedule). The recipe's
  augmentation is switched off for the timing, because upstream runs it (albumentations) in its
  data-loader workers, outside the step.
- **theirs**: ``sample4geo.trainer.train`` (their epoch loop, ``scaler=None`` as on a machine
  without AMP) over an iterable that yields the batch ``--steps`` times and stamps the time at each
  request, so each step is timed from one batch request to the next (``.to(device)``, forward,
  ``InfoNCE``, ``loss.item()``, backward, ``clip_grad_value_``, ``AdamW.step``, ``zero_grad``,
  scheduler step). Their ``TimmModel(pretrained=False)``, ``InfoNCE(CrossEntropyLoss(label_smoothing=
  0.1))`` and ``AdamW(model.parameters(), lr=1e-3)`` as ``train_cvusa.py`` builds them; the
  scheduler is a constant ``LambdaLR`` instead of ``transformers``' cosine one (same per-step cost,
  one less dependency). Their epoch function sleeps 0.1 s before its loop; that is outside the
  timed steps.

Each side runs in its own interpreter with the same thread count (``_side_by_side.py``). Their
code needs torch, timm and tqdm (this project's environment has them). Without ``--upstream`` the
script says what is missing and exits with 2.

Usage::

    python packages/geo-retrieval/benchmarks/bench_sample4geo_train_vs_upstream.py --upstream ~/src/Sample4Geo
    python .../bench_sample4geo_train_vs_upstream.py --upstream DIR --batch 4 --threads 2 --warmup 1 --steps 3
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from types import SimpleNamespace

import _side_by_side as sbs

REPO = "https://github.com/Skyy93/Sample4Geo"
NEEDED = "sample4geo/trainer.py"


def ours(args: argparse.Namespace) -> Callable[[], object]:
    from geo_retrieval.config import Augmentation  # our augmentation off: theirs runs in the data loader

    return sbs.trainer_step("sample4geo", args, augmentation=Augmentation())


def theirs(args: argparse.Namespace) -> sbs.Loop:
    import torch

    sys.path.insert(0, args.upstream)
    from sample4geo.loss import InfoNCE
    from sample4geo.model import TimmModel
    from sample4geo.trainer import train

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = TimmModel("convnext_base.fb_in22k_ft_in1k_384", pretrained=False, img_size=384).to(device)
    loss_function = InfoNCE(loss_function=torch.nn.CrossEntropyLoss(label_smoothing=0.1), device=args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    config = SimpleNamespace(
        verbose=False, device=args.device, gpu_ids=(0,), clip_grad=100.0, scheduler="cosine"
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    g, a = sbs.input_pair(args.batch, (140, 768), (384, 384))
    # their loader's Normalize, done once; their loop copies the batch to the device in the step
    query = (torch.from_numpy(g) - mean) / std
    reference = (torch.from_numpy(a) - mean) / std
    batch = (query, reference, torch.arange(args.batch))

    def run(n: int) -> list[float]:
        stamps: list[float] = []
        train(config, model, sbs.timed_batches(batch, n, stamps), loss_function, optimizer, scheduler, None)
        return [b - a for a, b in itertools.pairwise(stamps)]

    return sbs.Loop(run)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sbs.add_arguments(parser, batch=4, steps=3, warmup=1, gpu_batch=128)  # the recipe's (paper's) batch
    args = parser.parse_args()
    if args.worker != "ours" and sbs.missing_upstream(args.upstream, NEEDED, REPO):
        return 2
    return sbs.main(
        __file__,
        args,
        {"ours": ours, "theirs": theirs},
        title="sample4geo full (ConvNeXt-B shared, aerial 384x384, panorama 140x768, fp32): one training step",
        labels={
            "ours": "Trainer.train_step: transform (no augmentation) + forward + InfoNCE + clip + AdamW + schedule",
            "theirs": "sample4geo.trainer.train, one loop iteration (scaler=None), inputs normalised beforehand",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
