"""Worker for test_distributed.py, launched with ``torchrun --standalone --nproc_per_node=2``.

Each rank encodes its half of a fixed global batch with a DDP-wrapped two-branch model, gathers the
descriptors with ``all_gather_with_grad``, computes the loss on the global similarity matrix and
backpropagates. Rank r saves the loss and gradients to ``OUT/rank{r}_{path}.pt``; the test compares
them with a single-process full-batch computation. Both gather paths run: the functional
collective and the legacy fallback (``path`` = functional | legacy).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from geo_retrieval import distributed as gd
from geo_retrieval.losses import InfoNCELoss, SoftMarginTripletLoss


class TwoBranch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g = torch.nn.Linear(6, 4)
        self.a = torch.nn.Linear(5, 4)

    def forward(self, ground, aerial):
        return F.normalize(self.g(ground), dim=1), F.normalize(self.a(aerial), dim=1)


def make_problem(seed: int = 0):
    torch.manual_seed(seed)
    model = TwoBranch().double()
    ground = torch.randn(8, 6, dtype=torch.float64)
    aerial = torch.randn(8, 5, dtype=torch.float64)
    utm = torch.randn(8, 2, dtype=torch.float64) * 40
    return model, ground, aerial, utm


def losses():
    return {
        "triplet": SoftMarginTripletLoss(hard_negative_ratio=0.5),
        "infonce": InfoNCELoss().double(),
    }


def main() -> None:
    out_dir = sys.argv[1]
    dist.init_process_group("gloo")
    functional = gd._functional_gather
    for path in ("functional", "legacy"):
        # "legacy" forces the torch.distributed.nn.functional.all_gather fallback
        gd._functional_gather = functional if path == "functional" else (lambda: None)
        run(out_dir, path)
    dist.barrier()
    dist.destroy_process_group()


def run(out_dir: str, path: str) -> None:
    rank, world = gd.rank(), gd.world_size()
    results = {}
    for name, loss_fn in losses().items():
        model, ground, aerial, utm = make_problem()
        ddp = DDP(model)
        per = ground.shape[0] // world
        sl = slice(rank * per, (rank + 1) * per)
        g, a = ddp(ground[sl], aerial[sl])
        g_all, a_all = gd.all_gather_with_grad(g), gd.all_gather_with_grad(a)
        sim = g_all @ a_all.T
        loss = loss_fn(sim, utm=utm) if name == "triplet" else loss_fn(sim)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        for k, p in loss_fn.named_parameters():
            grads[f"loss.{k}"] = p.grad.clone()
        results[name] = {"loss": loss.detach(), "grads": grads, "gathered": g_all.detach()}
    torch.save(results, f"{out_dir}/rank{rank}_{path}.pt")


if __name__ == "__main__":
    main()
