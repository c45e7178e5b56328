"""Make the TransGeo parity fixtures with TransGeo's own code (run OUTSIDE the repository's envs).

This is our script; it contains no upstream code. It imports Jeff-Zilence/TransGeo2022 from
``--upstream DIR`` (a checkout of that repository: ``model/TransGeo.py``, ``model/Deit.py``,
``dataset/CVUSA.py``) and runs, in a scratch virtual environment with torch, torchvision, timm 0.5.4,
matplotlib, scipy and Pillow installed:

1. ``model.TransGeo.TransGeo(args)`` with ``args.dataset="cvusa"``, ``args.dim=48``, ``sat_res=0``,
   ``fov=0``, ``crop=False`` (upstream's own size logic: ground 112x616, aerial 256x256). Its two branches
   are upstream's ``model.Deit.DistilledVisionTransformer`` built with the CVUSA sizes and DeiT-S's
   patch 16, mlp_ratio 4, qkv_bias, LayerNorm eps 1e-6, but 2 blocks of width 64 with 2 heads (the class
   takes depth / embed_dim / num_heads as constructor arguments; upstream's factory
   ``deit_small_distilled_patch16_224`` fixes them at 12 / 384 / 6 and downloads ImageNet weights, so
   it is replaced by a call of the class with the reduced arguments). Seeded random weights, rounded
   to float16, saved as upstream's ``save_checkpoint`` does (``{"epoch", "state_dict" (DataParallel
   keys ``module.query_net.*`` / ``module.reference_net.*``), "best_acc1" (a numpy float64, as
   upstream's ``validate`` returns), "optimizer"}``; the optimizer state is left out for size).
2. Upstream's descriptors (``query_net(ground)``, ``reference_net(aerial)``: the mean of the two
   token heads, as ``validate`` collects them, before the L2 normalisation of ``accuracy``) of two
   seeded inputs per view at the real sizes (blocky, 8x8-pixel constant cells, so the float16 inputs
   compress).
3. ``dataset.CVUSA.CVUSA(mode="test_reference" / "test_query")`` (PIL ``Image.open().convert("RGB")``,
   torchvision ``Resize`` / ``ToTensor`` / ``Normalize`` with ImageNet's mean / std) on the first pair
   of ``--cvusa`` (real-size 750x750 aerial, 224x1232 panorama), stored losslessly.
4. The whole upstream CVUSA evaluation pipeline (the dataset of 3, both branches of 1) on every pair of
   ``--cvusa``.

Usage (see README.md beside this file for the exact environment)::

    python make_fixtures.py --upstream /tmp/transgeo_parity/upstream --cvusa CVUSA_DIR \
        --out-retrieval packages/geo-retrieval/tests/data/upstream/transgeo \
        --out-bench packages/geo-bench/tests/data/upstream/transgeo
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

EMBED_DIM, DEPTH, NUM_HEADS, DIM = 64, 2, 2, 48


def _levels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) float32 -> (per-channel sorted distinct values (C, 256) padded, uint8 index (C, H, W))."""
    levels = np.zeros((x.shape[0], 256), np.float32)
    index = np.zeros(x.shape, np.uint8)
    for c in range(x.shape[0]):
        vals, inv = np.unique(x[c], return_inverse=True)
        if len(vals) > 256:
            raise SystemExit(f"channel {c} has {len(vals)} distinct values; not an 8-bit image")
        levels[c, : len(vals)] = vals
        index[c] = inv.reshape(x.shape[1:]).astype(np.uint8)
    assert np.array_equal(np.take_along_axis(levels, index.reshape(x.shape[0], -1), 1).reshape(x.shape), x)
    return levels, index


def _blocky(gen: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """(n, 3, h, w) float16-representable values, constant on 8x8 cells."""
    small = torch.randn(n, 3, h // 8, w // 8, generator=gen).half().float()
    return small.repeat_interleave(8, -2).repeat_interleave(8, -1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="checkout of github.com/Jeff-Zilence/TransGeo2022")
    p.add_argument("--cvusa", required=True, help="a CVUSA-layout folder (splits/val-19zl.csv pairs)")
    p.add_argument("--out-retrieval", required=True)
    p.add_argument("--out-bench", required=True)
    args = p.parse_args()
    sys.path.insert(0, args.upstream)
    import model.TransGeo as transgeo_module
    from dataset.CVUSA import CVUSA
    from model.Deit import DistilledVisionTransformer

    torch.set_num_threads(1)
    out_r, out_b = Path(args.out_retrieval), Path(args.out_bench)
    out_r.mkdir(parents=True, exist_ok=True)
    out_b.mkdir(parents=True, exist_ok=True)

    def reduced_deit(pretrained: bool = True, img_size=(224, 224), num_classes: int = 1000, **kwargs):
        # upstream's DistilledVisionTransformer with reduced depth / width; no download
        return DistilledVisionTransformer(
            img_size=img_size,
            patch_size=16,
            embed_dim=EMBED_DIM,
            num_classes=num_classes,
            depth=DEPTH,
            num_heads=NUM_HEADS,
            mlp_ratio=4,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            **kwargs,
        )

    transgeo_module.deit_small_distilled_patch16_224 = reduced_deit
    opts = types.SimpleNamespace(dim=DIM, dataset="cvusa", sat_res=0, fov=0, crop=False)

    # 1. the model, seeded; weights rounded to float16 (the committed file is float16)
    torch.manual_seed(0)
    model = transgeo_module.TransGeo(opts)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    model.eval()
    state = {f"module.{k}": (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(
        {"epoch": 100, "state_dict": state, "best_acc1": np.float64(12.5)}, out_r / "checkpoint.pth.tar"
    )
    print("sizes: ground", model.size_grd, "aerial", model.size_sat, "keys", len(state))

    # 2. descriptors of seeded inputs at the real sizes
    gen = torch.Generator().manual_seed(1)
    ground = _blocky(gen, 2, *model.size_grd)
    aerial = _blocky(gen, 2, *model.size_sat)
    with torch.no_grad():
        g_desc = model.query_net(ground)
        a_desc = model.reference_net(x=aerial, indexes=None)
    np.savez_compressed(
        out_r / "descriptors.npz",
        ground_input=ground.half().numpy(),
        aerial_input=aerial.half().numpy(),
        ground=g_desc.numpy(),
        aerial=a_desc.numpy(),
    )

    # 3. + 4. upstream's CVUSA test datasets (its root is string-concatenated and it reads the train
    # split too: a scratch copy with the val split as the train list)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cvusa"
        shutil.copytree(args.cvusa, root)
        shutil.copy(root / "splits" / "val-19zl.csv", root / "splits" / "train-19zl.csv")
        ds_args = types.SimpleNamespace(sat_res=0, fov=0, crop=False)
        ref = CVUSA(mode="test_reference", root=str(root) + "/", args=ds_args)
        qry = CVUSA(mode="test_query", root=str(root) + "/", args=ds_args)
        a_img, _, _ = ref[0]
        g_img, _, _ = qry[0]
        a_levels, a_index = _levels(a_img.numpy())
        g_levels, g_index = _levels(g_img.numpy())
        np.savez_compressed(
            out_b / "pixels.npz",
            aerial_levels=a_levels,
            aerial_index=a_index,
            ground_levels=g_levels,
            ground_index=g_index,
            aerial_file=np.array(ref.id_test_list[0][0]),
            ground_file=np.array(qry.id_test_list[0][1]),
        )
        ids, g_all, a_all = [], [], []
        with torch.no_grad():
            for i in range(len(qry)):
                g_all.append(model.query_net(qry[i][0][None]))
                a_all.append(model.reference_net(x=ref[i][0][None], indexes=None))
                ids.append(qry.id_test_list[i][2])
    g_all, a_all = torch.cat(g_all), torch.cat(a_all)
    np.savez(
        out_b / "e2e_descriptors.npz",
        ground=g_all.numpy(),
        aerial=a_all.numpy(),
        ids=np.array(ids),
    )
    print("pairs:", ids, "descriptor dim:", g_all.shape[1], "pixels:", tuple(g_img.shape), tuple(a_img.shape))


if __name__ == "__main__":
    main()
