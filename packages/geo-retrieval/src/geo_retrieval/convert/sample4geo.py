"""The ``sample4geo`` source: Sample4Geo (Deuser et al., ICCV'23, ``Skyy93/Sample4Geo``) checkpoints.

What upstream writes: ``torch.save(model.state_dict())`` of its ``TimmModel``, i.e. ``model.`` + the
keys of ``timm.create_model(NAME, num_classes=0)`` plus the loss's ``logit_scale`` (a ``module.``
prefix where it was saved from ``DataParallel``). One weight-shared model encodes both views; its
pooled, layer-normed ``num_classes=0`` output is the descriptor, L2-normalised at evaluation
(``sample4geo/trainer.py``: ``predict``).

Mapping: onto our ``sample4geo`` recipe, variant ``full`` (one shared backbone: ``shared=True``, the
ConvNeXt with ``pool=True`` and the ``avg`` head, which only L2-normalises a (B, C, 1, 1) map):
``model.<k>`` -> ``ground_backbone.model.<k>``; ``logit_scale`` is dropped (it belongs to the
InfoNCE loss; its value is kept in the manifest). The timm model name is ``--model``
(default ``convnext_base.fb_in22k_ft_in1k_384``, the released checkpoints' backbone).

Upstream preprocessing (``eval_cvusa.py``, ``eval_cvact.py``, ``eval_vigor_*.py``,
``sample4geo/transforms.py`` ``get_transforms_val``, ``sample4geo/dataset/*.py``): ``cv2.imread`` then
``COLOR_BGR2RGB``; albumentations ``Resize`` with ``cv2.INTER_LINEAR_EXACT`` to the aerial 384x384 and
the ground 140x768 (CVUSA, CVACT: ``round(224 / 1232 * 768)``; CVACT panoramas not cropped) or
384x768 (VIGOR: ``int(1024 / 2048 * 768)``); ``Normalize`` with the timm data config's mean / std of
the model (ImageNet's for ConvNeXt-B) on x / 255; no polar transform. ``--dataset`` picks the sizes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import timm.data
from torch import Tensor

from ..backbones import Backbone
from ..checkpoint import _safe_torch_load, strip_prefixes, unwrap_state_dict
from ..model import CrossViewModel
from ..recipes import build, get_recipe
from .manifest import UpstreamPreprocessing, write_converted
from .mapping import map_state_dict
from .sources import register_source

__all__ = ["AERIAL_SIZE", "DEFAULT_MODEL", "GROUND_SIZES", "UPSTREAM", "convert_sample4geo"]

UPSTREAM = "Skyy93/Sample4Geo"
DEFAULT_MODEL = "convnext_base.fb_in22k_ft_in1k_384"
#: upstream's evaluation input sizes (H, W) at its ``img_size`` 384
AERIAL_SIZE = (384, 384)
GROUND_SIZES: dict[str, tuple[int, int]] = {
    "cvusa": (round(224 / 1232 * 768), 768),  # 140 x 768
    "cvact": (round(224 / 1232 * 768), 768),
    "vigor": (int(1024 / 2048 * 768), 768),  # 384 x 768
}
_CODE = (
    f"{UPSTREAM}: sample4geo/dataset/*.py (cv2.imread, COLOR_BGR2RGB), sample4geo/transforms.py "
    "get_transforms_val (albumentations Resize INTER_LINEAR_EXACT, Normalize), eval_*.py (sizes, mean/std "
    "from timm's data config)"
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        choices=sorted(GROUND_SIZES),
        help="the dataset the checkpoint was trained for: sets upstream's evaluation sizes "
        "(ground 140x768 on CVUSA / CVACT, 384x768 on VIGOR; aerial 384x384)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"the timm model name upstream trained (default {DEFAULT_MODEL})",
    )


def _rename(key: str) -> str | None:
    return "ground_backbone.model." + key[len("model.") :] if key.startswith("model.") else None


def _state_dict(obj: Any, src: Path) -> dict[str, Tensor]:
    try:
        return strip_prefixes(unwrap_state_dict(obj))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{os.fspath(src)}: not a Sample4Geo TimmModel state dict ({exc}); is this a {UPSTREAM} checkpoint?"
        ) from None


@register_source(
    "sample4geo",
    summary="Sample4Geo (ICCV'23) TimmModel state dict -> sample4geo recipe (full) folder",
    add_arguments=_add_arguments,
)
def convert_sample4geo(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dataset: str,
    model: str = DEFAULT_MODEL,
    **unused: Any,
) -> dict[str, Path]:
    """Convert a Sample4Geo ``TimmModel.state_dict()`` file into a converted-checkpoint folder.

    Args:
        src: the ``.pth`` file (read with ``weights_only=True`` only).
        out_dir: the folder written (``model.safetensors``, ``recipe.json``, ``manifest.json``).
        dataset: ``"cvusa"``, ``"cvact"`` or ``"vigor"``: upstream's evaluation sizes.
        model: the timm model name of the checkpoint.

    Returns:
        ``{"model", "recipe", "manifest"}`` paths.

    Raises:
        StateDictMismatchError: the keys or shapes do not fit (another method's checkpoint, another
            ``--model``): names the file and the first missing / unexpected / mismatched keys.
        CorruptCheckpointError, UnsafeCheckpointError: a damaged or unsafe file.
        ValueError: an unknown dataset, or a file that holds no state dict.
    """
    if unused:
        raise TypeError(f"sample4geo takes the options dataset= and model=, not {sorted(unused)}")
    if dataset not in GROUND_SIZES:
        raise ValueError(f"--dataset must be one of {sorted(GROUND_SIZES)}, got {dataset!r}")
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(src)!r}")
    raw = _safe_torch_load(src)
    state = _state_dict(raw, src)
    recipe = get_recipe("sample4geo", "full").replace(
        backbone=model, ground_size=GROUND_SIZES[dataset], aerial_size=AERIAL_SIZE
    )
    net = build(recipe)
    if not isinstance(net, CrossViewModel) or not net.shared_backbone:
        raise ValueError("the sample4geo recipe must build one shared backbone (the checkpoint is one model)")
    logit_scale = state.get("logit_scale")
    mapped = map_state_dict(
        state,
        net.state_dict(),
        _rename,
        path=src,
        what=f"not a {UPSTREAM} TimmModel state dict of {model!r} (recipe sample4geo, full)",
        dropped={"logit_scale": "the InfoNCE loss's learnable log-temperature, not part of the encoder"},
    )
    backbone = net.ground_backbone
    if not isinstance(backbone, Backbone):
        raise TypeError(f"the sample4geo recipe's backbone is a {type(backbone).__name__}, not a Backbone")
    data_cfg = timm.data.resolve_model_data_config(backbone.model)
    preprocessing = UpstreamPreprocessing(
        reader="opencv",
        resize="cv2.INTER_LINEAR_EXACT",
        ground_size=GROUND_SIZES[dataset],
        aerial_size=AERIAL_SIZE,
        mean=tuple(float(m) for m in data_cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(s) for s in data_cfg["std"]),  # type: ignore[arg-type]
        code=_CODE,
    )
    extra = (
        {"logit_scale": float(logit_scale)}
        if isinstance(logit_scale, Tensor) and logit_scale.numel() == 1
        else {}
    )
    return write_converted(
        out_dir,
        model=net,
        recipe=recipe,
        mapped=mapped,
        src=src,
        source_kind="sample4geo",
        preprocessing=preprocessing,
        descriptor_dim=int(backbone.out_channels),
        source_options={"dataset": dataset, "model": model},
        source_extra=extra,
        notes=(
            f"{UPSTREAM} evaluates with torch.cuda.amp autocast on a GPU (float16 features); the descriptors "
            "here are float32.",
        ),
    )
