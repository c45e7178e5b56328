"""Make the Sample4Geo parity fixtures with Sample4Geo's own code (run OUTSIDE the repository's envs).

This is our script; it contains no upstream code. It imports Skyy93/Sample4Geo from ``--upstream DIR``
(a checkout of that repository) and runs, in a scratch virtual environment with torch, timm,
albumentations, opencv-python-headless, pandas and tqdm installed:

1. ``sample4geo.model.TimmModel("test_convnext", pretrained=False)`` with seeded random weights
   (timm's ``test_convnext``, a 0.2 M-parameter ConvNeXt; the model name is TimmModel's own argument),
   the weights rounded to float16 so the committed float16 file holds exactly the weights used;
2. its descriptors (``sample4geo.trainer.predict``: forward, ``F.normalize``) of two seeded inputs;
3. ``sample4geo.transforms.get_transforms_val`` at the CVUSA sizes (aerial 384x384, ground 140x768) with
   ``convnext_base.fb_in22k_ft_in1k_384``'s mean / std (``TimmModel.get_config()``), applied through
   ``sample4geo.dataset.cvusa.CVUSADatasetEval`` (cv2.imread, BGR -> RGB) to one real-size pair
   (750x750 aerial, 224x1232 panorama) of ``--cvusa``;
4. the whole upstream CVUSA evaluation pipeline (``eval_cvusa.py``'s sizes and transforms,
   ``CVUSADatasetEval``, ``predict``) with the model of 1 on every pair of ``--cvusa``.

Usage (see README.md beside this file for the exact environment)::

    python make_fixtures.py --upstream /tmp/s4g_parity/upstream --cvusa CVUSA_DIR \
        --out-retrieval packages/geo-retrieval/tests/data/upstream/sample4geo \
        --out-bench packages/geo-bench/tests/data/upstream/sample4geo
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def _levels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) float32 -> (per-channel sorted distinct values (C, 256) padded, uint8 index (C, H, W)),
    a lossless form of a tensor with at most 256 distinct values per channel."""
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="checkout of github.com/Skyy93/Sample4Geo")
    p.add_argument("--cvusa", required=True, help="a CVUSA-layout folder (val-19zl.csv pairs)")
    p.add_argument("--out-retrieval", required=True)
    p.add_argument("--out-bench", required=True)
    args = p.parse_args()
    sys.path.insert(0, args.upstream)
    from sample4geo.dataset.cvusa import CVUSADatasetEval
    from sample4geo.model import TimmModel
    from sample4geo.trainer import predict
    from sample4geo.transforms import get_transforms_val

    torch.set_num_threads(1)
    out_r, out_b = Path(args.out_retrieval), Path(args.out_bench)
    out_r.mkdir(parents=True, exist_ok=True)
    out_b.mkdir(parents=True, exist_ok=True)
    config = types.SimpleNamespace(verbose=False, device="cpu", normalize_features=True)

    # 1. the model, seeded; weights rounded to float16 (the committed file is float16)
    torch.manual_seed(0)
    model = TimmModel("test_convnext", pretrained=False, img_size=384)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    model.eval()
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, out_r / "timm_model_test_convnext.pth")

    # 2. descriptors of seeded inputs (float16-representable values, computed in float32)
    gen = torch.Generator().manual_seed(1)
    ground = torch.randn(2, 3, 32, 96, generator=gen).half().float()
    aerial = torch.randn(2, 3, 48, 48, generator=gen).half().float()
    labels = torch.arange(2)
    g_desc, _ = predict(config, model, DataLoader(TensorDataset(ground, labels), batch_size=2))
    a_desc, _ = predict(config, model, DataLoader(TensorDataset(aerial, labels), batch_size=2))
    np.savez(
        out_r / "descriptors.npz",
        ground_input=ground.half().numpy(),
        aerial_input=aerial.half().numpy(),
        ground=g_desc.numpy(),
        aerial=a_desc.numpy(),
    )

    # 3. preprocessed pixels of one real-size pair, with convnext_base's data config (as eval_cvusa.py)
    base_cfg = TimmModel("convnext_base.fb_in22k_ft_in1k_384", pretrained=False).get_config()
    sat_t, grd_t = get_transforms_val((384, 384), (140, 768), mean=base_cfg["mean"], std=base_cfg["std"])
    ref = CVUSADatasetEval(args.cvusa, "test", "reference", transforms=sat_t)
    qry = CVUSADatasetEval(args.cvusa, "test", "query", transforms=grd_t)
    a_img, _ = ref[0]
    g_img, _ = qry[0]
    a_levels, a_index = _levels(a_img.numpy())
    g_levels, g_index = _levels(g_img.numpy())
    np.savez_compressed(
        out_b / "pixels.npz",
        aerial_levels=a_levels,
        aerial_index=a_index,
        ground_levels=g_levels,
        ground_index=g_index,
        aerial_file=np.array(str(ref.images[0])),
        ground_file=np.array(str(qry.images[0])),
        mean=np.array(base_cfg["mean"], np.float64),
        std=np.array(base_cfg["std"], np.float64),
    )

    # 4. the upstream CVUSA evaluation pipeline with the model of 1 (eval_cvusa.py's sizes)
    cfg = model.get_config()
    img_size = 384
    new_width = img_size * 2
    ground_size = (round((224 / 1232) * new_width), new_width)
    sat_t, grd_t = get_transforms_val((img_size, img_size), ground_size, mean=cfg["mean"], std=cfg["std"])
    ref = CVUSADatasetEval(args.cvusa, "test", "reference", transforms=sat_t)
    qry = CVUSADatasetEval(args.cvusa, "test", "query", transforms=grd_t)
    r_feat, r_ids = predict(config, model, DataLoader(ref, batch_size=2, shuffle=False))
    q_feat, q_ids = predict(config, model, DataLoader(qry, batch_size=2, shuffle=False))
    assert torch.equal(r_ids, q_ids)
    np.savez(
        out_b / "e2e_descriptors.npz",
        ground=q_feat.numpy(),
        aerial=r_feat.numpy(),
        ids=np.array([f"{int(i):07d}" for i in q_ids]),
        mean=np.array(cfg["mean"], np.float64),
        std=np.array(cfg["std"], np.float64),
        ground_size=np.array(ground_size),
    )
    print("upstream test_convnext data config:", {k: cfg[k] for k in ("mean", "std")})
    print("descriptor dim:", q_feat.shape[1], "pairs:", len(q_ids))


if __name__ == "__main__":
    main()
