"""The ``dsm`` source: DSM, Shi et al., CVPR'20 (``shiyujiao/cross_view_localization_DSM``), a
TensorFlow 1 checkpoint (``model.ckpt.index`` + ``model.ckpt.data-*``), onto the ``dsm`` recipe's
``full`` variant.

Read by the pure-Python reader :mod:`.tf_checkpoint` as the ``safa`` source does (SRC is the ``.index``
file; HWIO -> OIHW, conv1_1's input channels BGR -> RGB, optimiser state dropped by name). Upstream's
graph (``script/cir_net_FOV.py`` ``VGG_13_conv_v2_cir``):

- ground: ``VGG_grd/conv1_1 ... conv4_3`` (``script/VGG.py``: 3x3 stride-1 ``SAME`` convs, 2x2 / 2
  ``SAME`` max-pools) -> ``ground_backbone.model.features.<j>`` (indices 0 ... 21, conv4_3 at stride
  8: 128x512 -> 16x64); then ``grd/conv_dim_reduct_1`` (512 -> 256, stride (2, 1)),
  ``grd/conv5_dim_reduct_2`` (256 -> 64, stride (2, 1)), ``grd/conv5_dim_reduct_3`` (64 -> 16, no
  ReLU) -> ``ground_head.convs.{0,2,4}``, all TF ``SAME``: the stride-2 convs pad 0 rows above and 1
  below, not 1 and 1, so the converted recipe sets ``head_kwargs.padding = "tf_same"``
  (:class:`~geo_retrieval.heads.DSMHead`). The ground map (B, 16, 4, 64) is L2-normalised as a whole.
- aerial: ``VGG_sat/...`` (``script/VGG_cir.py``: every conv pads 1 column circularly and 1 row with
  zeros each side, then ``VALID``) and ``sat/conv_dim_reduct_1``, ``sat/conv5_dim_reduct_2``,
  ``sat/conv5_dim_reduct_3`` -> ``aerial_backbone`` / ``aerial_head.convs.{0,2,4}``: the recipe's
  circular W padding computes the same. Upstream returns the aerial map unnormalised and normalises the
  crop at the matched shift; ours is normalised as a whole, which leaves DSM's crop-normalised
  similarity (:func:`~geo_retrieval.heads.dsm_similarity`) unchanged.
- max-pools: TF ``SAME`` = ``ceil_mode=True`` (recorded as ``backbone_kwargs.ceil_mode``; equal to the
  default at 128x512, where every size is even, and faithful at any other size).

Matching: upstream's ``corr`` slides the ground map over the column-wrapped aerial map, takes the
arg-max shift s (ground column v against aerial column (s + v) mod W, our convention), crops, and
returns ``distance = 2 - 2 * <crop / |crop|, ground>`` (B_grd, B_sat): ours is ``2 - 2 *
dsm_similarity(...).similarity`` with ``shift`` its ``orien`` transposed.

Upstream preprocessing (CVUSA, ``script/polar_input_data_orien_FOV_3.py`` ``next_batch_scan``): the
aerial is a 128x512 polar PNG made offline (``script/data_preparation.py``: ``scipy.misc.imread``,
SAFA's sampler, ``scipy.misc.imsave`` and its per-image min-max stretch), read with ``cv2.imread`` (BGR),
not resized; the panorama ``cv2.imread`` -> ``cv2.resize(img, (512, 128), INTER_AREA)``, rolled right by
``int(np.random.rand() * 512 * grd_noise / 360)`` columns after ``np.random.seed(2019)``
(``test_cvusa_fov.py``; ``--test_grd_noise`` is 0 by default, i.e. no roll) and cropped to
``FOV / 360 * 512`` columns; both minus the BGR caffe means (103.939, 116.779, 123.6). Recorded: reader
``opencv_caffe``, polar preset ``dsm_imsave@1`` (``decode: "pil"``), the means in pixels (RGB order);
``geo-bench evaluate`` reproduces these pixels bit for bit, and replays the seeded roll with
``--test-grd-noise 360`` (an evaluation-protocol choice, recorded). Only the 360-degree field of view is
converted.

CLI: ``python -m geo_retrieval.convert dsm model.ckpt.index OUT_DIR``.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from ..recipes import Recipe, get_recipe
from .manifest import UpstreamPreprocessing, write_converted
from .mapping import map_state_dict
from .safa import (
    _check_src,
    build_meta,
    caffe_preprocessing,
    data_sha256,
    load_tf_state,
    materialise,
    vgg_backbone_key,
)
from .sources import register_source

__all__ = ["UPSTREAM", "convert_dsm", "dsm_preprocessing"]

UPSTREAM = "shiyujiao/cross_view_localization_DSM"
_BRANCH = {"grd": "ground", "sat": "aerial"}
#: upstream's projection convs -> index in ``DSMHead.convs`` (ReLUs between them)
_HEAD = {"conv_dim_reduct_1": 0, "conv5_dim_reduct_2": 2, "conv5_dim_reduct_3": 4}
_CODE = (
    f"{UPSTREAM}: script/data_preparation.py (scipy.misc.imread, polar 128x512, scipy.misc.imsave), "
    "script/polar_input_data_orien_FOV_3.py next_batch_scan (cv2.imread BGR; panorama cv2.resize (512, 128) "
    "INTER_AREA, random roll grd_noise, FOV crop; minus BGR means 103.939, 116.779, 123.6)"
)


def _rename(key: str) -> str | None:
    leaf_of = {"weights": "weight", "biases": "bias"}
    name = vgg_backbone_key(key, last="conv4_3")
    if name is not None:
        return name
    m = re.fullmatch(r"(grd|sat)/(conv_dim_reduct_1|conv5_dim_reduct_[23])/(weights|biases)", key)
    if m:
        return f"{_BRANCH[m.group(1)]}_head.convs.{_HEAD[m.group(2)]}.{leaf_of[m.group(3)]}"
    return None


def dsm_preprocessing() -> UpstreamPreprocessing:
    """DSM's CVUSA evaluation preprocessing at a 360-degree field of view (see the module docstring)."""
    return caffe_preprocessing((128, 512), "dsm_imsave@1", _CODE)


def convert_dsm(
    src: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, dataset: str = "cvusa"
) -> dict[str, Path]:
    """Convert a DSM TF checkpoint (see the module docstring).

    Args:
        src: the checkpoint's ``.index`` file (its ``.data-*`` shards beside it).
        out_dir: the converted-checkpoint folder (replaced as a whole).
        dataset: ``"cvusa"`` (the upstream preprocessing recorded).

    Returns:
        ``{"model", "recipe", "manifest"}`` paths.

    Raises:
        FileNotFoundError: no ``.index`` or a missing data shard.
        TFCheckpointError: a damaged or truncated file (names the file).
        StateDictMismatchError: not DSM's released architecture (names the file and the keys).
    """
    if dataset != "cvusa":
        raise ValueError(f"dataset must be 'cvusa', got {dataset!r}")
    index, out_dir = _check_src(src, out_dir)
    state, dropped = load_tf_state(index)
    base = get_recipe("dsm", "full")
    recipe: Recipe = base.replace(
        backbone_kwargs={**base.backbone_kwargs, "ceil_mode": True},
        head_kwargs={**base.head_kwargs, "padding": "tf_same"},
    )
    net = build_meta(recipe)
    mapped = map_state_dict(
        state,
        net.state_dict(),
        _rename,
        path=index,
        what=f"not a {UPSTREAM} checkpoint of the released architecture (recipe dsm, full, 128x512)",
        dropped=dropped,
    )
    channels = int(mapped.state["ground_head.convs.4.bias"].numel())
    return write_converted(
        out_dir,
        model=materialise(net, mapped.state, recipe),
        recipe=recipe,
        mapped=mapped,
        src=index,
        source_kind="dsm",
        preprocessing=dsm_preprocessing(),
        descriptor_dim=channels * 4 * 64,  # the (16, 4, 64) unit map at 128x512
        source_options={"dataset": dataset},
        source_extra={"data_sha256": data_sha256(index)},
        notes=[
            "Recipe overrides: head_kwargs.padding='tf_same' (the ground head's stride-2 convs pad as TF SAME: "
            "0 rows above, 1 below) and backbone_kwargs.ceil_mode=True (TF SAME max-pools); the aerial "
            "branch's explicit wrap / zero padding is the recipe's circular padding.",
            "conv1_1 input channels reversed (upstream reads BGR): feed RGB with the recorded mean / std.",
            "The descriptor is a unit (16, 4, 64) feature map matched by dsm_similarity (DSM's distance is "
            "2 - 2 * similarity); upstream's aerial map is unnormalised, which the crop normalisation "
            "makes irrelevant.",
            "360-degree field of view only.",
            "Polar aerials: preset dsm_imsave@1 renders upstream's PNGs (scipy.misc.imsave's per-image "
            "min-max stretch included) from the aerial decoded with Pillow; the JPEG library matters (IJG "
            "libjpeg 9 in Pillow wheels up to 8.4, libjpeg-turbo since): the authors' polar maps can be read "
            "instead (geo-bench evaluate --polar-maps).",
            "Test-time roll: test_cvusa_fov.py seeds numpy with 2019 and rolls each panorama by "
            "int(rand * 512 * test_grd_noise / 360) columns (0 by default): geo-bench evaluate "
            "--test-grd-noise 360 replays it.",
        ],
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cvusa", choices=["cvusa"], help="the preprocessing recorded")


@register_source(
    "dsm",
    summary="DSM CVPR'20 TF checkpoint (model.ckpt.index) -> dsm recipe (full) folder",
    add_arguments=_add_arguments,
)
def _convert(src: Path, out_dir: Path, **options: Any) -> dict[str, Path]:
    return convert_dsm(src, out_dir, **options)
