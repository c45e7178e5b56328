"""Make the R50+ViT-B/16 initialisation parity fixtures with L2LTR's own ``load_from`` (ViT-pytorch's,
plus the key-stream norm), run OUTSIDE the repository's envs.

This is our script; it contains no upstream code. It imports L2LTR's ``models.model_crossattn`` from
``--upstream DIR`` and, in a scratch venv with torch, numpy, scipy and ml_collections:

1. writes a Flax-layout ``.npz`` in the layout of the ViT authors' ``R50+ViT-B_16.npz`` (key names as
   ``load_from`` reads them) at a reduced size (:func:`npz_spec`: hidden 64, 4 heads, 3 blocks, MLP
   128, ResNet units (1, 1, 2), the 14x14 + 1 position grid of a 224 model) with values from
   :func:`npz_values` (deterministic from each key's name; the tests write the same file);
2. ``VisionTransformer(config, img_size=(32, 128)).load_from(np.load(npz))`` (the position grid zoomed
   14x14 -> 2x8 by ``scipy.ndimage.zoom(order=1)``) with the L2LTR fixture's reduced config;
3. its eval-mode descriptors of two seeded inputs -> ``parity.npz`` (and the zoomed position embedding).

Usage::

    python make_fixtures.py --upstream /tmp/l2ltr_parity/upstream --out DIR
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np

D, HEADS, DEPTH, MLP, UNITS = 64, 4, 3, 128, (1, 1, 2)
SIZE = (32, 128)


def npz_spec() -> dict[str, tuple[int, ...]]:
    """Flax key -> shape of the reduced R50+ViT-B/16 file (plus the 10-class ``head`` to be dropped)."""
    spec: dict[str, tuple[int, ...]] = {
        "conv_root/kernel": (7, 7, 3, 64),
        "gn_root/scale": (64,),
        "gn_root/bias": (64,),
    }
    cin = 64
    for b, (n, cmid) in enumerate(zip(UNITS, (64, 128, 256)), start=1):
        cout = 4 * cmid
        for u in range(1, n + 1):
            c_in = cin if u == 1 else cout
            p = f"block{b}/unit{u}/"
            spec.update(
                {
                    p + "conv1/kernel": (1, 1, c_in, cmid),
                    p + "conv2/kernel": (3, 3, cmid, cmid),
                    p + "conv3/kernel": (1, 1, cmid, cout),
                }
            )
            for g, c in (("gn1", cmid), ("gn2", cmid), ("gn3", cout)):
                spec.update({p + f"{g}/scale": (c,), p + f"{g}/bias": (c,)})
            if u == 1:
                spec.update(
                    {
                        p + "conv_proj/kernel": (1, 1, c_in, cout),
                        p + "gn_proj/scale": (cout,),
                        p + "gn_proj/bias": (cout,),
                    }
                )
        cin = cout
    spec.update(
        {
            "embedding/kernel": (1, 1, 1024, D),
            "embedding/bias": (D,),
            "cls": (1, 1, D),
            "Transformer/posembed_input/pos_embedding": (1, 197, D),
            "Transformer/encoder_norm/scale": (D,),
            "Transformer/encoder_norm/bias": (D,),
            "head/kernel": (D, 10),
            "head/bias": (10,),
        }
    )
    for i in range(DEPTH):
        p = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            spec.update({p + f"{ln}/scale": (D,), p + f"{ln}/bias": (D,)})
        for a in ("query", "key", "value"):
            spec.update(
                {
                    p + f"MultiHeadDotProductAttention_1/{a}/kernel": (D, HEADS, D // HEADS),
                    p + f"MultiHeadDotProductAttention_1/{a}/bias": (HEADS, D // HEADS),
                }
            )
        spec.update(
            {
                p + "MultiHeadDotProductAttention_1/out/kernel": (HEADS, D // HEADS, D),
                p + "MultiHeadDotProductAttention_1/out/bias": (D,),
                p + "MlpBlock_3/Dense_0/kernel": (D, MLP),
                p + "MlpBlock_3/Dense_0/bias": (MLP,),
                p + "MlpBlock_3/Dense_1/kernel": (MLP, D),
                p + "MlpBlock_3/Dense_1/bias": (D,),
            }
        )
    return spec


def npz_values() -> dict[str, np.ndarray]:
    """Deterministic float32 values for :func:`npz_spec`: kernels N(0, 1 / fan_in), scales 1 + 0.1 N,
    biases 0.1 N, ``cls`` and the position embedding 0.5 N."""
    out = {}
    for key, shape in sorted(npz_spec().items()):
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        leaf = key.rpartition("/")[2]
        if key in ("cls", "Transformer/posembed_input/pos_embedding"):
            out[key] = 0.5 * rng.standard_normal(shape)
        elif leaf == "kernel":
            out[key] = rng.standard_normal(shape) / np.sqrt(np.prod(shape) / shape[-1])
        elif leaf == "scale":
            out[key] = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            out[key] = 0.1 * rng.standard_normal(shape)
        out[key] = out[key].astype(np.float32)
    return out


def fixture_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.standard_normal((2, 3, *SIZE)).astype(np.float32), rng.standard_normal((2, 3, *SIZE)).astype(
        np.float32
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--upstream", type=Path, required=True, help="a cross_view_localization_L2LTR checkout"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(args.upstream.resolve()))
    import torch
    from models.configs import get_r50_b16_config
    from models.model_crossattn import VisionTransformer

    config = get_r50_b16_config()
    config.hidden_size = D
    config.transformer.mlp_dim = MLP
    config.transformer.num_heads = HEADS
    config.transformer.num_layers = DEPTH
    config.resnet.num_layers = UNITS
    npz = args.out / "weights.npz"
    np.savez(npz, **npz_values())
    model = VisionTransformer(config, img_size=SIZE)
    model.load_from(np.load(npz))
    model.eval()
    g, a = (torch.from_numpy(x) for x in fixture_inputs())
    with torch.no_grad():
        dg, da = model(g), model(a)
    np.savez(
        args.out / "parity.npz",
        ground=dg.numpy(),
        aerial=da.numpy(),
        pos_embed=model.transformer.embeddings.position_embeddings.detach().numpy(),
    )
    npz.unlink()


if __name__ == "__main__":
    main()
