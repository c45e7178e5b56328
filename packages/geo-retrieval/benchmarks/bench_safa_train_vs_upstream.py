#!/usr/bin/env python3
r"""safa training step, ours against Shi et al.'s own TF1 code (``shiyujiao/cross_view_localization_SAFA``), on the CPU.

Both sides train the ``full`` CVUSA sizes (two VGG-16 trunks with dropout keep 0.8, randomly
initialised; SA heads K = 8 on the 4x20 map, 4096-d descriptors; polar aerial and panorama
112x616; weighted soft-margin triplet, alpha = 10; Adam lr 1e-5, betas (0.9, 0.999)) on the same
seeded batch:

- **ours**: ``build(get_recipe("safa", "full"))`` inside geo-retrieval's real ``Trainer``, timed
  through ``Trainer.train_step`` (batch transform: BGR caffe-mean normalisation; forward, loss,
  backward, Adam, schedule). AMP off.
- **theirs**: SAFA's graph as ``script/train_cvusa.py`` builds it: ``spatial_net.SAFA(sat_x, grd_x,
  keep_prob, 8, True)``, its ``compute_loss`` and ``tf.train.AdamOptimizer(lr, 0.9, 0.999).minimize``,
  one ``sess.run(train_step, feed_dict)`` per step with keep_prob 0.8, on NHWC inputs prepared once
  (their loader's mean subtraction is not timed). TensorFlow 2 runs it through ``tf.compat.v1``
  with v1 behaviour; the harness aliases ``tensorflow`` to ``tensorflow.compat.v1`` and supplies the
  removed ``tf.contrib.layers`` names it uses (the initialiser is never used here: global variables
  are initialised with their own initialisers; the regularisers are inert upstream). The session
  gets ``intra_op_parallelism_threads = --threads`` and ``inter_op_parallelism_threads = 1``
  (torch: ``set_num_threads(--threads)``, one inter-op thread).

Run the upstream side with a scratch interpreter that has ``tensorflow-cpu`` 2.x, numpy and
``opencv-python-headless`` (``train_cvusa.py`` imports its loader, which imports cv2)::

    uv venv --python 3.11 /tmp/tf311
    uv pip install --python /tmp/tf311/bin/python tensorflow-cpu numpy opencv-python-headless
    python packages/geo-retrieval/benchmarks/bench_safa_train_vs_upstream.py \
        --upstream ~/src/cross_view_localization_SAFA --upstream-python /tmp/tf311/bin/python

Without ``--upstream`` the script says what is missing and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Callable
from pathlib import Path

import _side_by_side as sbs

REPO = "https://github.com/shiyujiao/cross_view_localization_SAFA"
NEEDED = "script/train_cvusa.py"


def ours(args: argparse.Namespace) -> Callable[[], object]:
    return sbs.trainer_step("safa", args)


def theirs(args: argparse.Namespace) -> Callable[[], object]:
    import numpy as np
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
    sys.path.insert(0, str(Path(args.upstream) / "script"))
    argv, sys.argv = sys.argv, ["train_cvusa.py"]  # the module parses its arguments on import
    try:
        import train_cvusa
    finally:
        sys.argv = argv

    tf.set_random_seed(0)
    sat_x = tf.placeholder(tf.float32, [None, 112, 616, 3], name="sat_x")
    grd_x = tf.placeholder(tf.float32, [None, 112, 616, 3], name="grd_x")
    keep_prob = tf.placeholder(tf.float32)
    learning_rate = tf.placeholder(tf.float32)
    sat_global, grd_global = train_cvusa.SAFA(sat_x, grd_x, keep_prob, 8, True)
    loss = train_cvusa.compute_loss(sat_global, grd_global)
    global_step = tf.Variable(0, trainable=False)
    train_step = tf.train.AdamOptimizer(learning_rate, 0.9, 0.999).minimize(loss, global_step=global_step)
    config = tf.ConfigProto(
        intra_op_parallelism_threads=args.threads, inter_op_parallelism_threads=1, allow_soft_placement=True
    )
    sess = tf.Session(config=config)
    sess.run(tf.global_variables_initializer())
    g, a = sbs.input_pair(args.batch, (112, 616), (112, 616))
    means = np.array([103.939, 116.779, 123.6], np.float32)  # their loader: BGR pixels minus means

    def nhwc_bgr(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x * 255).transpose(0, 2, 3, 1)[..., ::-1] - means)

    feed = {sat_x: nhwc_bgr(a), grd_x: nhwc_bgr(g), learning_rate: 1e-5, keep_prob: 0.8}
    return lambda: sess.run(train_step, feed_dict=feed)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sbs.add_arguments(parser, batch=8, steps=5, warmup=2)
    args = parser.parse_args()
    if args.worker != "ours" and sbs.missing_upstream(
        args.upstream, NEEDED, REPO, extra=" and --upstream-python PYTHON (tensorflow-cpu 2.x, numpy, cv2)"
    ):
        return 2
    return sbs.main(
        __file__,
        args,
        {"ours": ours, "theirs": theirs},
        title="safa full (2x VGG-16 + SA heads K=8, polar aerial and panorama 112x616): one training step",
        labels={
            "ours": "Trainer.train_step: transform + forward + triplet + backward + Adam + schedule",
            "theirs": "TF1 graph via tf.compat.v1: sess.run(train_step) (SAFA + compute_loss + Adam)",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
