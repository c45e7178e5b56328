"""Make the ``dsm`` parity fixtures by running DSM's own TF1 model code (see README.md).

Run in a scratch environment outside the repository that has ``tensorflow-cpu`` (TF2, used through
``tf.compat.v1`` with v1 behaviour) and numpy::

    python make_fixtures.py --upstream /path/to/cross_view_localization_DSM/script --out .

Only the harness is patched: ``tensorflow`` is aliased to ``tensorflow.compat.v1`` before upstream's
modules are imported, and the removed ``tf.contrib.layers`` initialiser / regularisers it names are
supplied (``xavier_initializer`` -> glorot uniform; the regularisers -> none: every weight is
overwritten below and no loss is built). Upstream's ``cir_net_FOV.VGG_13_conv_v2_cir`` (with its
``VGG.VGG16`` and ``VGG_cir.VGG16_cir``) runs unchanged.

Writes ``upstream.index`` (the full checkpoint's index: upstream's variable names, dtypes, shapes),
and ``parity.npz`` (upstream's outputs on :func:`fixture_inputs` under :func:`fixture_weights`:
``sat_vgg`` (B, 4, 64, 16) NHWC aerial maps (not normalised, as upstream returns them), ``grd_vgg``
(B, 4, 64, 16) unit ground maps, ``distance`` (B_grd, B_sat) and ``orien`` (B_sat, B_grd)).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import types
import zlib
from pathlib import Path

import numpy as np

#: DSM's polar aerial = panorama size at a 360-degree field of view
SIZE = (128, 512)
BATCH = 2


def fixture_weights(spec: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Deterministic float32 weights from the variable names: N(0, 1) seeded by CRC32 of the name,
    scaled by sqrt(2 / fan_in) (conv kernels, HWIO), 0.1 (biases)."""
    out = {}
    for name, shape in sorted(spec.items()):
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        x = rng.standard_normal(shape)
        leaf = name.rpartition("/")[2]
        if leaf == "weights":
            x *= np.sqrt(2.0 / np.prod(shape[:-1]))
        else:
            x *= 0.1
        out[name] = x.astype(np.float32)
    return out


def fixture_inputs(batch: int = BATCH, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(aerial, ground) NHWC float32 in upstream's input space (BGR, caffe-mean-subtracted pixels)."""
    b, h, w, c = np.meshgrid(
        np.arange(batch), np.arange(size[0]), np.arange(size[1]), np.arange(3), indexing="ij"
    )
    sat = 60.0 * np.sin(0.37 * h + 0.11 * w * (c + 1) + 1.3 * b + 0.5 * c) + 20.0 * np.cos(0.013 * h * w)
    grd = 70.0 * np.cos(0.21 * h - 0.07 * w * (c + 2) + 0.9 * b) + 15.0 * np.sin(0.031 * (h + 2 * w) + c)
    return sat.astype(np.float32), grd.astype(np.float32)


def _tf_v1() -> types.ModuleType:
    import tensorflow.compat.v1 as tf

    tf.disable_v2_behavior()
    tf.contrib = types.SimpleNamespace(
        layers=types.SimpleNamespace(
            xavier_initializer=tf.glorot_uniform_initializer,
            l2_regularizer=lambda scale: None,
            l1_regularizer=lambda scale: None,
        )
    )
    sys.modules["tensorflow"] = tf
    return tf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="DSM checkout's script/ folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/safa_parity/dsm_ckpt"))
    args = parser.parse_args()
    tf = _tf_v1()
    sys.path.insert(0, str(args.upstream))
    from cir_net_FOV import VGG_13_conv_v2_cir  # upstream, unchanged

    sat_x = tf.placeholder(tf.float32, [None, *SIZE, 3], name="sat_x")
    grd_x = tf.placeholder(tf.float32, [None, *SIZE, 3], name="grd_x")
    keep_prob = tf.placeholder(tf.float32)
    outputs = VGG_13_conv_v2_cir(sat_x, grd_x, keep_prob, False)  # sat_vgg, grd_vgg, distance, orien
    variables = tf.global_variables()
    spec = {v.op.name: tuple(v.shape.as_list()) for v in variables}
    weights = fixture_weights(spec)
    sat, grd = fixture_inputs()
    args.scratch.mkdir(parents=True, exist_ok=True)
    with tf.Session() as sess:
        for v in variables:
            v.load(weights[v.op.name], sess)
        sat_vgg, grd_vgg, distance, orien = sess.run(outputs, {sat_x: sat, grd_x: grd, keep_prob: 1.0})
        full = tf.train.Saver(variables).save(sess, str(args.scratch / "model.ckpt"), write_meta_graph=False)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(full + ".index", args.out / "upstream.index")
    np.savez_compressed(
        args.out / "parity.npz", sat_vgg=sat_vgg, grd_vgg=grd_vgg, distance=distance, orien=orien
    )
    print("variables:", len(spec), sat_vgg.shape, grd_vgg.shape, "distance:", distance, "orien:", orien)


if __name__ == "__main__":
    main()
