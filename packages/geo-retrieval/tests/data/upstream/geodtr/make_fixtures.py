"""Make the GeoDTR parity fixtures with GeoDTR's own code (run OUTSIDE the repository's envs).

This is our script; it contains no upstream code. It imports zxh009123/GeoDTR (``GeoDTR.py``) from
``--upstream DIR`` and runs, in a scratch virtual environment with torch and torchvision:

1. ``GeoDTR.GeoDTR(n_des=2, tr_heads=4, tr_layers=2, dropout=0.3, d_hid=64, is_polar=True)`` wrapped in
   ``nn.DataParallel`` as upstream's ``train.py`` does (its ResNet-34s are torchvision's, built without
   the ImageNet download). Two ResNet-34s do not fit a small fixture, so the weights are not stored:
   every tensor is set to :func:`pattern_state` (a deterministic sine pattern per key, rounded to
   float16; the test rebuilds the same file), and the fixture keeps upstream's keys, shapes and dtypes
   (``keys.json``) and a ``parameter.json`` as upstream's ``train.py`` writes it (``vars(opt)``).
2. Upstream's descriptors (``model(sat, grd, is_cf=False)`` in eval mode: L2-normalised) of one seeded
   polar aerial and one panorama at the real size 122x671 (blocky 8x8-pixel cells, float16 values).

Usage (see README.md beside this file for the exact environment)::

    python make_fixtures.py --upstream /tmp/geodtr_parity/upstream --out packages/geo-retrieval/tests/data/upstream/geodtr
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: the constructor arguments (``parameter.json``: n_des, TR_heads, TR_layers, dropout, TR_dim, pt)
OPTIONS = {"n_des": 2, "TR_heads": 4, "TR_layers": 2, "dropout": 0.3, "TR_dim": 64, "pt": True}


def pattern_tensor(key: str, index: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A deterministic value for the tensor ``key`` (the ``index``-th key in sorted order): a sine pattern
    scaled as a trained network's (fan-in for weights, near 1 for norm scales and variances), rounded to
    float16. Integer tensors (``num_batches_tracked``) are 0."""
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    n = math.prod(shape)
    s = torch.sin(torch.arange(n, dtype=torch.float64) * (0.7 + 0.013 * index) + index).reshape(shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 1.0 + 0.5 * s.abs()
    elif leaf == "running_mean" or leaf.startswith("b") or leaf.endswith("bias"):
        v = 0.1 * s
    elif len(shape) == 1 or (leaf == "weight" and ("bn" in key or "norm" in key or "downsample.1" in key)):
        v = 1.0 + 0.1 * s  # BatchNorm / LayerNorm scales
    elif leaf in ("w1", "w2", "linear") or leaf.startswith("embedding"):
        v = 0.005 * 1.41 * s  # upstream's N(0, 0.005) initialisation
    else:
        fan_in = n // shape[0]
        v = s * (2.0 / math.sqrt(fan_in))  # sine variance 1/2: He-like scale
    return v.to(dtype).half().to(dtype)


def pattern_state(keys: list[dict]) -> dict[str, torch.Tensor]:
    """``{key: pattern_tensor}`` for upstream's ``[{"key", "shape", "dtype"}]`` (sorted by key)."""
    out = {}
    for i, row in enumerate(sorted(keys, key=lambda r: r["key"])):
        out[row["key"]] = pattern_tensor(row["key"], i, tuple(row["shape"]), getattr(torch, row["dtype"]))
    return out


def _blocky(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    small = torch.randn(1, 3, math.ceil(h / 8), math.ceil(w / 8), generator=gen).half().float()
    return small.repeat_interleave(8, -2).repeat_interleave(8, -1)[..., :h, :w].contiguous()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="checkout of github.com/zxh009123/GeoDTR")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    sys.path.insert(0, args.upstream)
    import GeoDTR as geodtr_module
    import torchvision

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # upstream calls models.resnet34(pretrained=True): the same network, without the download
    geodtr_module.models = types.SimpleNamespace(
        resnet34=lambda pretrained=True: torchvision.models.resnet34()
    )
    o = OPTIONS
    model = nn.DataParallel(
        geodtr_module.GeoDTR(
            n_des=o["n_des"],
            tr_heads=o["TR_heads"],
            tr_layers=o["TR_layers"],
            dropout=o["dropout"],
            d_hid=o["TR_dim"],
            is_polar=o["pt"],
        )
    )
    keys = [
        {"key": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in model.state_dict().items()
    ]
    model.load_state_dict(pattern_state(keys), strict=True)
    model.eval()
    parameters = {
        "epochs": 200, "batch_size": 32, "lr": 1e-4, "save_suffix": "test", "data_dir": "../scratch",
        "dataset": "CVUSA", "n_des": o["n_des"], "TR_heads": o["TR_heads"], "TR_layers": o["TR_layers"],
        "TR_dim": o["TR_dim"], "dropout": o["dropout"], "gamma": 10.0, "weight_decay": 0.03, "pt": o["pt"],
        "cf": True, "verbose": True, "layout_sim": "strong", "sem_aug": "strong", "model": "GeoDTR",
    }  # fmt: skip
    (out / "1700000000_parameter.json").write_text(json.dumps(parameters, indent=4))
    (out / "keys.json").write_text(json.dumps(keys, indent=0) + "\n")
    gen = torch.Generator().manual_seed(1)
    grd = _blocky(gen, 122, 671)
    sat = _blocky(gen, 122, 671)
    with torch.no_grad():
        sat_global, grd_global = model(sat, grd, is_cf=False)
    np.savez_compressed(
        out / "descriptors.npz",
        ground_input=grd.half().numpy(),
        aerial_input=sat.half().numpy(),
        ground=grd_global.numpy(),
        aerial=sat_global.numpy(),
    )
    print("keys", len(keys), "descriptor", tuple(grd_global.shape), "norms", grd_global.norm(dim=1))


if __name__ == "__main__":
    main()
