"""Make the Toker et al. (comingdowntoearth) parity fixtures with the upstream code itself.

This is our script; it contains no upstream code. It imports aysim/comingdowntoearth from
``--upstream DIR`` (a checkout) and runs, in a scratch virtual environment outside the repository
(torch, torchvision, numpy, opencv-python-headless, imageio, matplotlib, Pillow):

1. the three upstream models at full width (their constructors take no width arguments):
   ``networks.c_gan.UnetGeneratorSkip()``, ``define_D``'s ``NLayerDiscriminator(3, 3, 64, 3)`` and
   ``networks.safa.SAFA(sa_num=8, H1=32, W1=128, H2=32, W2=128)`` (the image size is SAFA's argument;
   torchvision's ``resnet34`` is called with ``pretrained=True`` upstream, which would download: the
   harness replaces it by ``resnet34(weights=None)``, the weights are set below anyway);
2. their weights from :func:`fixture_state` (deterministic, from each key's name; importable without
   upstream, so the tests rebuild the same checkpoint instead of committing 80 MB), loaded strictly;
3. in eval mode, on seeded 32x128 inputs in [-1, 1] (:func:`fixture_inputs`): ``fake, resb6 = G(aerial)``,
   ``D(cat(aerial, street))`` and ``D(cat(aerial, fake))``, ``f_aerial, f_street = R(street, resb6)``
   (``rgan_wrapper.eval_model``'s calls) -> ``parity.npz``; the keys and shapes of the three state
   dicts -> ``state_spec.json``;
4. upstream's CVUSA pixels: ``data/convert_polar.py`` run as a script (it works on ``./placeholder_*``
   folders of its working directory) on the 750x750 aerial JPEGs of ``--cvusa`` (the polar PNGs at
   224x1232, ``astype(np.uint8)``), then ``data.utils.CVUSA(use_polar=True)`` + ``ToTensor`` (cv2.imread,
   RGB, ``cv2.resize(..., (616, 112), INTER_CUBIC)``, x/255, mean = std = 0.5) on those folders ->
   ``pixels.npz`` (the uint8 images before ``ToTensor``: ``(x + 1) / 2 * 255``, exact).

Usage (README.md beside this file has the environment)::

    python make_fixtures.py --upstream /tmp/toker_parity/upstream --cvusa CVUSA_DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

#: fixture image size (H, W) of the parity models (SAFA's H1, W1, H2, W2)
SIZE = (32, 128)
COMPONENTS = ("generator_model_dict", "discriminator_model_dict", "retriebal_model_dict")


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def fixture_state(spec: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for the upstream keys ``spec`` (key -> shape), from each key's name.

    Multi-dimensional weights N(0, 1 / fan_in) (SAFA's ``w1`` / ``w2`` (din, dout, K): fan_in din), 1-D
    norm weights 1 + 0.1 N, biases and running means 0.1 N, running variances U(0.5, 1.5), ``gamma``
    0.5 (so the self-attention contributes), ``num_batches_tracked`` 0; spectral norm ``weight_v`` a
    unit N(0, 1) vector and ``weight_u`` = normalise(W_mat v) (so sigma = |W_mat v| > 0), in float64.
    """
    out: dict[str, np.ndarray] = {}
    for key in sorted(spec):
        shape = tuple(spec[key])
        leaf = key.rpartition(".")[2]
        rng = _rng(key)
        if leaf in ("weight_u", "weight_v"):
            continue
        if leaf == "num_batches_tracked":
            out[key] = np.zeros(shape, np.int64)
        elif leaf == "running_var":
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif leaf == "gamma":
            out[key] = np.full(shape, 0.5, np.float32)
        elif len(shape) >= 2:
            fan_in = shape[0] if leaf in ("w1", "w2") else int(np.prod(shape[1:]))
            out[key] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        elif leaf == "weight":
            out[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:  # bias, b1, b2, running_mean
            out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    for key in sorted(spec):
        base, _, leaf = key.rpartition(".")
        if leaf != "weight_v":
            continue
        w = (
            out[f"{base}.weight_orig"]
            .astype(np.float64)
            .reshape(spec[key.replace("weight_v", "weight_orig")][0], -1)
        )
        v = _rng(key).standard_normal(w.shape[1])
        v /= np.linalg.norm(v)
        u = w @ v
        u /= np.linalg.norm(u)
        out[key] = v.astype(np.float32)
        out[f"{base}.weight_u"] = u.astype(np.float32)
    return out


def fixture_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Seeded (2, 3, 32, 128) float32 polar aerial and panorama in [-1, 1]."""
    rng = np.random.default_rng(7)
    aerial = rng.uniform(-1, 1, (2, 3, *SIZE)).astype(np.float32)
    street = rng.uniform(-1, 1, (2, 3, *SIZE)).astype(np.float32)
    return aerial, street


def _models(upstream: Path):  # type: ignore[no-untyped-def]
    import torchvision.models

    original = torchvision.models.resnet34
    torchvision.models.resnet34 = lambda pretrained=False, **kw: original(weights=None)  # no download
    sys.path.insert(0, str(upstream))
    from networks.c_gan import NLayerDiscriminator, UnetGeneratorSkip
    from networks.safa import SAFA

    return (
        UnetGeneratorSkip(),
        NLayerDiscriminator(3, 3, 64, 3),  # define_D(3, 3, 64, "basic", condition=1)
        SAFA(sa_num=8, H1=SIZE[0], W1=SIZE[1], H2=SIZE[0], W2=SIZE[1]),
    )


def make_parity(upstream: Path, out: Path) -> None:
    import torch

    models = _models(upstream)
    spec = {
        name: {k: list(v.shape) for k, v in m.state_dict().items()} for name, m in zip(COMPONENTS, models)
    }
    for name, m in zip(COMPONENTS, models):
        state = {k: torch.from_numpy(v) for k, v in fixture_state(spec[name]).items()}
        m.load_state_dict(state, strict=True)
        m.eval()
    g, d, r = models
    aerial, street = (torch.from_numpy(x) for x in fixture_inputs())
    with torch.no_grad():
        fake, resb6 = g(aerial)
        d_real = d(torch.cat((aerial, street), 1))
        d_fake = d(torch.cat((aerial, fake), 1))
        f_aerial, f_street = r(street, resb6)
    np.savez(
        out / "parity.npz",
        fake=fake.numpy(),
        d_real=d_real.numpy(),
        d_fake=d_fake.numpy(),
        aerial=f_aerial.numpy(),
        ground=f_street.numpy(),
    )
    (out / "state_spec.json").write_text(json.dumps(spec, indent=0) + "\n")


def make_pixels(upstream: Path, cvusa: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bing = work / "placeholder_bingmap"
        bing.mkdir()
        for f in sorted((cvusa / "bingmap" / "19").glob("*.jpg")):
            shutil.copy(f, bing / f.name)
        for name in ("placeholder_satview_polish", "placeholder_streetview"):
            (work / name).mkdir()  # the script's CVACT parts list these folders
        subprocess.run([sys.executable, str(upstream / "data" / "convert_polar.py")], cwd=work, check=True)
        root = work / "cvusa"
        shutil.copytree(cvusa, root)
        (root / "polarmap" / "19").mkdir(parents=True)
        for f in (work / "placeholder_polarmap").glob("*.png"):
            shutil.copy(f, root / "polarmap" / "19" / f.name)
        sys.path.insert(0, str(upstream))
        from data.custom_transforms import ToTensor
        from data.utils import CVUSA

        ds = CVUSA(root=str(root), csv_file="val-19zl.csv", use_polar=True, transform_op=ToTensor())
        arrays: dict[str, np.ndarray] = {}
        for i in range(len(ds)):
            s = ds[i]
            for view, key in (("aerial", "satellite"), ("ground", "street")):
                x = (s[key].numpy().astype(np.float64) + 1.0) / 2.0 * 255.0
                u8 = np.round(x)
                assert np.abs(x - u8).max() < 1e-3, "upstream pixels are not uint8 levels"
                arrays[f"{view}_{i}"] = u8.astype(np.uint8)
            arrays[f"id_{i}"] = np.asarray(s["item_id"])
        np.savez_compressed(out / "pixels.npz", **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="a comingdowntoearth checkout")
    parser.add_argument(
        "--cvusa", type=Path, required=True, help="the CVUSA-layout folder (real-size images)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    make_parity(args.upstream.resolve(), args.out)
    make_pixels(args.upstream.resolve(), args.cvusa.resolve(), args.out)


if __name__ == "__main__":
    main()
