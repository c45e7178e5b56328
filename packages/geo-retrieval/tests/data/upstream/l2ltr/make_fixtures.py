"""Make the L2LTR parity fixtures with L2LTR's own model code (run OUTSIDE the repository's envs).

This is our script; it contains no upstream code. It imports yanghongji2007/cross_view_localization_L2LTR
from ``--upstream DIR`` (``models.model_crossattn.VisionTransformer``, whose ViT code derives from
jeonsworld/ViT-pytorch) and runs, in a scratch venv with torch, numpy, scipy and ml_collections:

1. two ``VisionTransformer(config, img_size=(32, 128))`` (``model_grd``, ``model_sat``, as
   ``train.py`` builds them) with :func:`fixture_config`: upstream's ``get_r50_b16_config()`` with the
   config values reduced (hidden 64, MLP 128, 4 heads, 3 layers, ResNet units (1, 1, 2) (width factor
   1: the config types it int); all are config entries, nothing else changes);
2. their weights from :func:`fixture_state` (deterministic, from each key's name; importable without
   upstream so the tests rebuild the same checkpoint), loaded with ``strict=True``;
3. in eval mode, their descriptors (forward: CLS of the final LayerNorm, L2-normalised) of seeded
   (2, 3, 32, 128) inputs (:func:`fixture_inputs`) -> ``parity.npz``; keys and shapes -> ``state_spec.json``.

Usage::

    python make_fixtures.py --upstream /tmp/l2ltr_parity/upstream --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np

SIZE = (32, 128)
VIEWS = ("model_grd", "model_sat")
NUM_HEADS = 4


def fixture_config():  # type: ignore[no-untyped-def]
    from models.configs import get_r50_b16_config

    config = get_r50_b16_config()
    config.hidden_size = 64
    config.transformer.mlp_dim = 128
    config.transformer.num_heads = NUM_HEADS
    config.transformer.num_layers = 3
    config.resnet.num_layers = (1, 1, 2)
    return config


def fixture_state(spec: dict[str, list[int]], salt: str = "") -> dict[str, np.ndarray]:
    """Deterministic float32 weights for ``spec`` (key -> shape): conv / linear weights N(0, 1 / fan_in),
    1-D ``weight`` (norm scales) 1 + 0.1 N, biases 0.1 N, position embeddings and CLS 0.5 N."""
    out: dict[str, np.ndarray] = {}
    for key in sorted(spec):
        shape = tuple(spec[key])
        leaf = key.rpartition(".")[2]
        rng = np.random.default_rng(zlib.crc32((salt + key).encode()))
        if leaf in ("position_embeddings", "cls_token"):
            out[key] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
        elif len(shape) >= 2:
            out[key] = (rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))).astype(np.float32)
        elif leaf == "weight":
            out[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


def fixture_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Seeded (2, 3, 32, 128) float32 ground and polar aerial inputs (normalised scale)."""
    rng = np.random.default_rng(11)
    return (
        rng.standard_normal((2, 3, *SIZE)).astype(np.float32),
        rng.standard_normal((2, 3, *SIZE)).astype(np.float32),
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
    from models.model_crossattn import VisionTransformer

    config = fixture_config()
    models = {view: VisionTransformer(config, img_size=SIZE) for view in VIEWS}
    spec = {view: {k: list(v.shape) for k, v in m.state_dict().items()} for view, m in models.items()}
    for view, m in models.items():
        m.load_state_dict(
            {k: torch.from_numpy(v) for k, v in fixture_state(spec[view], view).items()}, strict=True
        )
        m.eval()
    ground, aerial = (torch.from_numpy(x) for x in fixture_inputs())
    with torch.no_grad():
        g = models["model_grd"](ground)
        a = models["model_sat"](aerial)
    np.savez(args.out / "parity.npz", ground=g.numpy(), aerial=a.numpy())
    (args.out / "state_spec.json").write_text(json.dumps(spec, indent=0) + "\n")


if __name__ == "__main__":
    main()
