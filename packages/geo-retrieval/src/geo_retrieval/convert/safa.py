"""The ``safa`` source: SAFA, Shi et al., NeurIPS'19 (``shiyujiao/cross_view_localization_SAFA``), a
TensorFlow 1 checkpoint (``tf.train.Saver``: ``model.ckpt.index`` + ``model.ckpt.data-*``), onto the
``safa`` recipe's ``full`` variant.

The checkpoint is read by the pure-Python reader :mod:`.tf_checkpoint` (no TensorFlow needed); SRC is
the ``.index`` file. Upstream's graph (``script/spatial_net.py`` ``SAFA``, ``script/VGG.py``):

- ``VGG_grd`` / ``VGG_sat``: VGG-16 conv1_1 ... conv5_3 (``<scope>/conv<b>_<i>/weights`` HWIO,
  ``/biases``), 3x3 stride-1 convs with TF ``SAME`` padding (= symmetric padding 1, as ours) and
  2x2 / 2 max-pools with ``SAME`` padding (TF pads odd sizes at the end only, with values that never
  win the max: the recipe's ``ceil_mode=True`` pooling with no padding computes the same), then one more
  ``SAME`` max-pool: 112x616 -> 4x20, N = 80 positions. -> ``{ground,aerial}_backbone.model.features.<j>``
  (torchvision / timm VGG-16 indices 0, 2, 5, ... 28), kernels permuted HWIO -> OIHW; conv1_1's input
  channels reversed (upstream feeds BGR, our readers RGB).
- ``spatial_grd`` / ``spatial_sat``: ``weights1`` (N, N/2, K), ``biases1`` (1, N/2, K), ``weights2``
  (N/2, N, K), ``biases2`` (1, N, K) -> ``{ground,aerial}_head.w1`` (K, N, N/2), ``b1`` (K, N/2), ``w2``,
  ``b2`` (head index first). Positions are row-major over the NHWC map (n = i * w + j), as ours; the
  descriptor ``einsum('bic,bid->bdc')`` reshaped to K * C is head-major (k * C + c), the recipe's
  ``flatten="head_major"``.
- Channel pooling: upstream's code uses ``reduce_mean`` since commit dcb915e (2020-06-15; ``reduce_max``
  before). The checkpoint does not say which code trained it: ``channel_pool`` (default ``"mean"``,
  upstream's current code) is recorded as the recipe override ``head_kwargs.pool``.
- Adam slots (``<var>/Adam``, ``<var>/Adam_1``), ``beta1_power``, ``beta2_power`` and ``global_step``
  are optimiser state, dropped by name.

Upstream preprocessing (CVUSA, ``script/input_data_cvusa.py`` ``next_batch_scan``): the aerial is a
polar PNG made offline by ``script/data_preparation.py`` (``scipy.misc.imread``, i.e. Pillow; SAFA's
sampler at 112x616 in float64 from the 750x750 aerial; written with ``scipy.misc.imsave``, whose float
-> uint8 conversion stretches each image's min..max to 0..255, rounding half up), read with
``cv2.imread`` (BGR) and not resized; the panorama is read with ``cv2.imread`` and ``cv2.resize(img,
(616, 112), INTER_AREA)``; both become ``float32(BGR) - (103.939, 116.779, 123.6)`` (caffe means; note
123.6, not 123.68). The manifest records reader ``opencv_caffe`` with polar preset ``safa_imsave@1``
(render + the ``imsave`` stretch, on the aerial decoded with Pillow: ``decode: "pil"``), the means in
pixels in RGB order (``max_pixel_value`` 1, ``std`` 1), which ``geo-bench evaluate`` reproduces bit for
bit (``geo-bench/tests/data/upstream/polar``).

CLI: ``python -m geo_retrieval.convert safa model.ckpt.index OUT_DIR [--channel-pool mean|max]``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import file_sha256
from ..recipes import Recipe, build, get_recipe
from .manifest import UpstreamPreprocessing, write_converted
from .mapping import map_state_dict
from .sources import register_source
from .tf_checkpoint import read_tf_checkpoint, tf_checkpoint_entries, tf_checkpoint_prefix

__all__ = [
    "CAFFE_MEAN_BGR",
    "UPSTREAM",
    "VGG16_FEATURE_INDEX",
    "vgg_backbone_key",
    "build_meta",
    "caffe_preprocessing",
    "convert_safa",
    "data_sha256",
    "load_tf_state",
    "materialise",
    "safa_preprocessing",
    "tf_optimiser_keys",
]

UPSTREAM = "shiyujiao/cross_view_localization_SAFA"
#: upstream's mean subtraction, in its (BGR) channel order, in 0-255 pixels
CAFFE_MEAN_BGR = (103.939, 116.779, 123.6)
#: ``conv<b>_<i>`` -> index in torchvision / timm ``vgg16.features``
VGG16_FEATURE_INDEX = {
    "conv1_1": 0,
    "conv1_2": 2,
    "conv2_1": 5,
    "conv2_2": 7,
    "conv3_1": 10,
    "conv3_2": 12,
    "conv3_3": 14,
    "conv4_1": 17,
    "conv4_2": 19,
    "conv4_3": 21,
    "conv5_1": 24,
    "conv5_2": 26,
    "conv5_3": 28,
}
_BRANCH = {"grd": "ground", "sat": "aerial"}
_OPTIMISER = re.compile(r"(.+/(Adam|Adam_1|Momentum|RMSProp|RMSProp_1)|beta[12]_power|global_step)")
_CODE = (
    f"{UPSTREAM}: script/data_preparation.py (scipy.misc.imread, polar 112x616 from the 750x750 aerial, "
    "scipy.misc.imsave), script/input_data_cvusa.py next_batch_scan (cv2.imread BGR; panorama cv2.resize "
    "(616, 112) INTER_AREA; minus BGR means 103.939, 116.779, 123.6)"
)


def tf_optimiser_keys(keys: list[str]) -> dict[str, str]:
    """The optimiser-state variables among ``keys`` (Adam / momentum slots, beta powers, global step) ->
    the reason they are dropped."""
    return {k: "optimiser state (TF training variable)" for k in keys if _OPTIMISER.fullmatch(k)}


def load_tf_state(src: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read the TF checkpoint ``src`` (``X.index``): model tensors as torch (HWIO kernels -> OIHW, the
    first conv's input channels BGR -> RGB) and the optimiser keys to drop (not read into memory
    beyond the index).

    Returns:
        ``({name: tensor}, {dropped name: reason})``.
    """
    entries, _ = tf_checkpoint_entries(src)
    dropped = tf_optimiser_keys(list(entries))
    arrays = read_tf_checkpoint(src)
    state: dict[str, Tensor] = {}
    for name, arr in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if name.endswith("/weights") and t.ndim == 4:
            t = t.permute(3, 2, 0, 1)  # HWIO -> OIHW
            if name.endswith("/conv1_1/weights") and t.shape[1] == 3:
                t = t.flip(1)  # upstream feeds BGR
            t = t.contiguous()
        state[name] = t
    return state, dropped


def _head_tensor(name: str, t: Tensor) -> Tensor:
    """SAFA's (din, dout, K) weights / (1, dout, K) biases -> ours (K, din, dout) / (K, dout)."""
    if t.ndim != 3:
        return t
    return (t.permute(2, 0, 1) if name.rpartition("/")[2].startswith("weights") else t[0].T).contiguous()


def vgg_backbone_key(key: str, last: str = "conv5_3") -> str | None:
    """``VGG_grd|sat/conv<b>_<i>/weights|biases`` up to ``last`` -> our
    ``<ground|aerial>_backbone.model.features.<index>.<weight|bias>``; None for any other key (SAFA's
    and DSM's VGG-16 trunks, which DSM cuts after ``conv4_3``)."""
    m = re.fullmatch(r"VGG_(grd|sat)/(conv\d_\d)/(weights|biases)", key)
    if m is None or m.group(2) not in VGG16_FEATURE_INDEX:
        return None
    index = VGG16_FEATURE_INDEX[m.group(2)]
    if index > VGG16_FEATURE_INDEX[last]:
        return None
    leaf = "weight" if m.group(3) == "weights" else "bias"
    return f"{_BRANCH[m.group(1)]}_backbone.model.features.{index}.{leaf}"


def _rename(key: str) -> str | None:
    name = vgg_backbone_key(key)
    if name is not None:
        return name
    m = re.fullmatch(r"spatial_(grd|sat)/(weights|biases)([12])", key)
    if m:
        return f"{_BRANCH[m.group(1)]}_head.{'w' if m.group(2) == 'weights' else 'b'}{m.group(3)}"
    return None


def caffe_preprocessing(size: tuple[int, int], preset: str, code: str) -> UpstreamPreprocessing:
    """SAFA's / DSM's CVUSA evaluation preprocessing at ``size`` (H, W) with the polar ``preset``: reader
    ``opencv_caffe``, panorama ``INTER_AREA``, ``float32`` pixels minus the caffe means (RGB order, in
    pixels: ``max_pixel_value`` 1, ``std`` 1), the polar aerial rendered from the Pillow-decoded aerial."""
    return UpstreamPreprocessing(
        reader="opencv_caffe",
        resize="cv2.INTER_AREA",
        ground_size=size,
        aerial_size=size,
        mean=(CAFFE_MEAN_BGR[2], CAFFE_MEAN_BGR[1], CAFFE_MEAN_BGR[0]),
        std=(1.0, 1.0, 1.0),
        max_pixel_value=1.0,
        polar={
            "preset": preset,
            "size": list(size),
            "center": "safa",
            "input": "raw aerial image",
            "decode": "pil",
        },
        code=code,
    )


def safa_preprocessing() -> UpstreamPreprocessing:
    """SAFA's CVUSA evaluation preprocessing (see the module docstring)."""
    return caffe_preprocessing((112, 616), "safa_imsave@1", _CODE)


def _check_src(src: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    src, out_dir = Path(src), Path(out_dir)
    index = tf_checkpoint_prefix(src)
    index = index.with_name(index.name + ".index")
    if not index.is_file():
        raise FileNotFoundError(f"no TF checkpoint index at {os.fspath(index)!r} (pass the .index file)")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"OUT_DIR {os.fspath(out_dir)!r} exists and is not a folder")
    return index, out_dir


def build_meta(recipe: Recipe) -> nn.Module:
    """``recipe``'s model on the meta device (keys, shapes and dtypes for the strict mapping, without
    the cost of a random initialisation: a wrong checkpoint fails fast)."""
    with torch.device("meta"):
        return build(recipe)


def materialise(net: nn.Module, state: Mapping[str, Tensor], recipe: Recipe) -> nn.Module:
    """``net`` (from :func:`build_meta`) with CPU storage, to be filled from ``state`` by
    ``write_converted``'s strict load; a model with buffers outside ``state`` (non-persistent) is
    built normally instead."""
    if all(name in state for name, _ in net.named_buffers()):
        return net.to_empty(device="cpu")
    return build(recipe)


def data_sha256(index: Path) -> dict[str, str]:
    """sha256 of every data shard beside ``index`` (``X.data-*``), by file name."""
    prefix = tf_checkpoint_prefix(index)
    return {p.name: file_sha256(p) for p in sorted(prefix.parent.glob(prefix.name + ".data-*"))}


def convert_safa(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    channel_pool: str = "mean",
    dataset: str = "cvusa",
) -> dict[str, Path]:
    """Convert a SAFA TF checkpoint (see the module docstring).

    Args:
        src: the checkpoint's ``.index`` file (its ``.data-*`` shards beside it).
        out_dir: the converted-checkpoint folder (replaced as a whole).
        channel_pool: ``"mean"`` (upstream's code since 2020-06) or ``"max"`` (its first release).
        dataset: ``"cvusa"`` (the upstream preprocessing recorded).

    Returns:
        ``{"model", "recipe", "manifest"}`` paths.

    Raises:
        FileNotFoundError: no ``.index`` or a missing data shard.
        TFCheckpointError: a damaged or truncated file (names the file).
        StateDictMismatchError: not SAFA's released architecture (names the file and the keys).
    """
    if channel_pool not in ("mean", "max"):
        raise ValueError(f"channel_pool must be 'mean' or 'max', got {channel_pool!r}")
    if dataset != "cvusa":
        raise ValueError(f"dataset must be 'cvusa', got {dataset!r}")
    index, out_dir = _check_src(src, out_dir)
    state, dropped = load_tf_state(index)
    state = {k: _head_tensor(k, v) if k.startswith("spatial_") else v for k, v in state.items()}
    base = get_recipe("safa", "full")
    recipe: Recipe = base.replace(head_kwargs={**base.head_kwargs, "pool": channel_pool})
    net = build_meta(recipe)
    mapped = map_state_dict(
        state,
        net.state_dict(),
        _rename,
        path=index,
        what=f"not a {UPSTREAM} checkpoint of the released architecture (recipe safa, full, 112x616, K=8)",
        dropped=dropped,
    )
    return write_converted(
        out_dir,
        model=materialise(net, mapped.state, recipe),
        recipe=recipe,
        mapped=mapped,
        src=index,
        source_kind="safa",
        preprocessing=safa_preprocessing(),
        descriptor_dim=int(mapped.state["ground_head.w1"].shape[0]) * 512,  # K heads x VGG conv5 channels
        source_options={"channel_pool": channel_pool, "dataset": dataset},
        source_extra={"data_sha256": data_sha256(index)},
        notes=[
            f"Channel pooling {channel_pool!r} (recipe override head_kwargs.pool): upstream's code uses "
            "reduce_mean since dcb915e (2020-06-15), reduce_max before; the checkpoint does not record it.",
            "TF SAME max-pooling equals the recipe's ceil_mode=True pooling; 3x3 stride-1 SAME convs equal "
            "padding 1: no other override.",
            "conv1_1 input channels reversed (upstream reads BGR): feed RGB with the recorded mean / std.",
            "Polar aerials: preset safa_imsave@1 renders upstream's PNGs (scipy.misc.imsave's per-image "
            "min-max stretch included) from the aerial decoded with Pillow; the JPEG library matters "
            "(IJG libjpeg 9 in Pillow wheels up to 8.4, libjpeg-turbo since): the authors' released polar maps "
            "can be read instead (geo-bench evaluate --polar-maps).",
        ],
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel-pool",
        default="mean",
        choices=["mean", "max"],
        help="SA heads' channel pooling: mean (upstream code since 2020-06, default) or max (first release)",
    )
    parser.add_argument("--dataset", default="cvusa", choices=["cvusa"], help="the preprocessing recorded")


@register_source(
    "safa",
    summary="SAFA NeurIPS'19 TF checkpoint (model.ckpt.index) -> safa recipe (full) folder",
    add_arguments=_add_arguments,
)
def _convert(src: Path, out_dir: Path, **options: Any) -> dict[str, Path]:
    return convert_safa(src, out_dir, **options)
