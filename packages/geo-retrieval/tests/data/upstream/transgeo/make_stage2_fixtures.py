"""Make the TransGeo stage-2 (attention-guided crop) parity fixtures with TransGeo's own code.

This is our script; it contains no upstream code. It imports Jeff-Zilence/TransGeo2022 from ``--upstream``
(``model/TransGeo.py``, ``model/Deit.py``, ``dataset/CVUSA.py``) and runs, in the scratch environment of
``make_fixtures.py`` (torch, torchvision, timm 0.5.4, matplotlib, Pillow; README.md beside this file):

1. A stage-1 model, ``TransGeo(args)`` with ``dataset="cvusa"``, ``sat_res=0``, ``crop=False`` (aerial 256:
   a 16x16 patch grid), reduced as in ``make_fixtures.py`` (2 blocks, width 64, 2 heads, ``dim`` 48) with
   :func:`fixture_state` weights; its ``scan`` over the val pairs of ``--cvusa``: ``CVUSA(mode="scan_val")``
   and ``model(im_q, im_k, delta, indexes=indexes)`` with ``reference_net.save`` set, i.e.
   ``forward_features_save``, which writes ``attention/val/<index>.png`` with ``plt.imsave`` (the last
   block's cls + dist attention over the patches, divided by its maximum).
2. A stage-2 model, ``TransGeo(args)`` with ``sat_res=320``, ``crop=True`` (aerial 320: 20x20 patches,
   ``crop_rate`` 0.64: 256 kept), :func:`fixture_state` weights for its own keys (rounded to float16; the
   tests rebuild the same checkpoint from ``stage2_spec.json``, as upstream's ``save_checkpoint`` writes
   it); in eval mode:
   - on two seeded blocky 320x320 aerials with the maps of step 1 (``reference_net(x=..., atten=...)``):
     ``stage2_descriptors.npz``;
   - upstream's CVUSA evaluation: ``CVUSA(mode="test_reference")`` with ``args.crop`` (image, index and
     ``ToTensor`` of ``attention/val/<index>.png`` beside ``args.resume``) and ``reference_net(x=images,
     atten=atten)``; ``CVUSA(mode="test_query")`` and ``query_net``: ``e2e_descriptors.npz``.
   ``torch.argsort`` is wrapped while upstream runs to record the order it computes (``kept`` = its last
   ``int(0.64 * 400)`` entries per image).

Usage::

    python make_stage2_fixtures.py --upstream /tmp/transgeo_parity/upstream --cvusa CVUSA_DIR
        --out-retrieval packages/geo-retrieval/tests/data/upstream/transgeo
        --out-bench packages/geo-bench/tests/data/upstream/transgeo_stage2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import types
import zlib
from functools import partial
from pathlib import Path

import numpy as np

EMBED_DIM, DEPTH, NUM_HEADS, DIM = 64, 2, 2, 48
SAT_RES = 320


def fixture_state(spec: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for upstream keys ``spec`` (key -> shape), each from its name.

    LayerNorm weights 1 + 0.1 N; other 1-D tensors (biases) 0.1 N; ``pos_embed`` / ``cls_token`` /
    ``dist_token`` 0.5 N (so the kept positions matter); matrices and conv kernels N(0, 1 / fan_in).
    Rounded to float16 values.
    """
    out: dict[str, np.ndarray] = {}
    for key in sorted(spec):
        shape = tuple(spec[key])
        leaf = key.rpartition(".")[2]
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        if leaf in ("pos_embed", "cls_token", "dist_token"):
            v = 0.5 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            v = rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
        elif leaf == "weight":
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            v = 0.1 * rng.standard_normal(shape)
        out[key] = v.astype(np.float16).astype(np.float32)
    return out


def _blocky(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    small = rng.standard_normal((n, 3, size // 8, size // 8)).astype(np.float16).astype(np.float32)
    return small.repeat(8, axis=-2).repeat(8, axis=-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--cvusa", required=True, help="a CVUSA-layout folder (splits/val-19zl.csv pairs)")
    p.add_argument("--out-retrieval", required=True)
    p.add_argument("--out-bench", required=True)
    args = p.parse_args()
    sys.path.insert(0, args.upstream)
    import model.TransGeo as transgeo_module
    import torch
    from dataset.CVUSA import CVUSA
    from model.Deit import DistilledVisionTransformer
    from torch import nn

    torch.set_num_threads(1)
    out_r, out_b = Path(args.out_retrieval), Path(args.out_bench)
    out_r.mkdir(parents=True, exist_ok=True)
    out_b.mkdir(parents=True, exist_ok=True)

    def reduced_deit(pretrained: bool = True, img_size=(224, 224), num_classes: int = 1000, **kwargs):
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

    def build(sat_res: int, crop: bool):  # type: ignore[no-untyped-def]
        opts = types.SimpleNamespace(dim=DIM, dataset="cvusa", sat_res=sat_res, fov=0, crop=crop)
        m = transgeo_module.TransGeo(opts)
        spec = {k: list(v.shape) for k, v in m.state_dict().items()}
        m.load_state_dict({k: torch.from_numpy(v) for k, v in fixture_state(spec).items()}, strict=True)
        return m.eval(), spec

    recorded: list[torch.Tensor] = []
    original_argsort = torch.argsort

    def recording_argsort(*a, **kw):  # type: ignore[no-untyped-def]
        out = original_argsort(*a, **kw)
        recorded.append(out.clone())
        return out

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cvusa"
        shutil.copytree(args.cvusa, root)
        shutil.copy(root / "splits" / "val-19zl.csv", root / "splits" / "train-19zl.csv")
        run = Path(tmp) / "result"
        (run / "attention" / "val").mkdir(parents=True)

        # 1. stage 1 and its scan (attention maps)
        stage1, _ = build(0, False)
        stage1.reference_net.save = str(run / "attention" / "val")
        scan = CVUSA(
            mode="scan_val", root=str(root) + "/", args=types.SimpleNamespace(sat_res=0, fov=0, crop=False)
        )
        with torch.no_grad():
            for i in range(len(scan)):
                q, k, _, idx, delta, _ = scan[i]
                stage1(im_q=q[None], im_k=k[None], delta=delta, indexes=idx[None])
        maps = sorted((run / "attention" / "val").glob("*.png"), key=lambda f: int(f.stem))
        print("attention maps:", [f.name for f in maps])

        # 2. stage 2
        stage2, spec = build(SAT_RES, True)
        (out_r / "stage2_spec.json").write_text(json.dumps(spec, indent=0) + "\n")
        torch.save(
            {"epoch": 50, "state_dict": {}, "best_acc1": 0.0}, run / "checkpoint.pth.tar"
        )  # args.resume
        from PIL import Image

        def to_tensor(path: Path) -> torch.Tensor:
            img = np.array(Image.open(path).convert("RGB"), np.uint8)
            return torch.from_numpy(img).permute(2, 0, 1).float().div(255)

        atten = torch.stack([to_tensor(maps[0]), to_tensor(maps[1])])
        aerial = torch.from_numpy(_blocky(np.random.default_rng(5), 2, SAT_RES))
        torch.argsort = recording_argsort
        try:
            with torch.no_grad():
                desc = stage2.reference_net(x=aerial, atten=atten)
        finally:
            torch.argsort = original_argsort
        order = recorded.pop()
        kept = order[:, -int(0.64 * order.shape[1]) :]
        np.savez_compressed(
            out_r / "stage2_descriptors.npz",
            aerial_input=aerial.half().numpy(),
            attention=atten.numpy(),
            kept=kept.numpy().astype(np.int16),
            aerial=desc.numpy(),
        )

        ds_args = types.SimpleNamespace(
            sat_res=SAT_RES, fov=0, crop=True, resume=str(run / "checkpoint.pth.tar")
        )
        ref = CVUSA(mode="test_reference", root=str(root) + "/", args=ds_args)
        qry = CVUSA(mode="test_query", root=str(root) + "/", args=ds_args)
        g_all, a_all, kept_all, ids = [], [], [], []
        with torch.no_grad():
            for i in range(len(ref)):
                img, _, att = ref[i]
                torch.argsort = recording_argsort
                try:
                    a_all.append(stage2.reference_net(x=img[None], atten=att[None]))
                finally:
                    torch.argsort = original_argsort
                order = recorded.pop()
                kept_all.append(order[:, -int(0.64 * order.shape[1]) :])
                g_all.append(stage2.query_net(qry[i][0][None]))
                ids.append(qry.id_test_list[i][2])
        (out_b / "attention" / "val").mkdir(parents=True, exist_ok=True)
        for f in maps:
            shutil.copy(f, out_b / "attention" / "val" / f.name)
    np.savez(
        out_b / "e2e_descriptors.npz",
        ground=torch.cat(g_all).numpy(),
        aerial=torch.cat(a_all).numpy(),
        kept=torch.cat(kept_all).numpy().astype(np.int16),
        ids=np.array(ids),
    )
    print("pairs:", ids, "kept per aerial:", kept_all[0].shape[1])


if __name__ == "__main__":
    main()
