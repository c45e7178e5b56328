"""The ``geodtr`` source: GeoDTR (Zhang et al., AAAI'23, ``zxh009123/GeoDTR``) checkpoints.

What upstream writes (``train.py``, ``utils.py``: ``save_model``): ``SAVE/epoch_N/epoch_N.pth`` (and
``epoch_last``) = ``{"epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict"}``, the
state dict of the ``nn.DataParallel``-wrapped ``GeoDTR.GeoDTR`` (``module.`` prefix), and
``SAVE/<timestamp>_parameter.json`` = ``vars(opt)`` of the training run. ``test.py`` rebuilds the model
from that file: ``GeoDTR(n_des, TR_heads, TR_layers, dropout, TR_dim, is_polar=pt)``. Each view is a
torchvision ResNet-34 without the stem max-pool cut after layer4 (``backbone_grd`` / ``backbone_sat``:
``layers.0`` conv1, ``.1`` bn1, ``.3``-``.6`` layer1-4) and a geometric layout extractor (``ge_grd`` /
``ge_sat``: ``w1 b1 w2 b2``, ``tr_module.pos_encoder.{linear, embedding_parameter}``,
``tr_module.transformer_encoder.*``). The descriptor is the L2-normalised ``512 * n_des`` vector.

Mapping: onto our ``geodtr`` recipe, variant ``full`` (``resnet34_nomaxpool`` backbones, timm's
ResNet-34 whose keys equal torchvision's, and the ``geodtr`` head): ``backbone_grd.layers.{0,1,3..6}`` ->
``ground_backbone.model.{conv1, bn1, layer1..4}``, ``ge_grd.<k>`` -> ``ground_head.<k>`` with
``tr_module.pos_encoder.linear`` -> ``pos_linear``, ``.embedding_parameter`` -> ``pos_embedding`` and
``tr_module.transformer_encoder.`` -> ``encoder.``; the same for the aerial branch. The head options
and the aerial size (polar 122x671 with ``pt``, else 256x256) come from ``parameter.json``
(``--parameters``; by default the ``*parameter.json`` beside the checkpoint or one folder up, where
upstream writes it) and are recorded as recipe overrides.

Upstream preprocessing (``datasets/cvusa.py``, ``datasets/cvact.py``, evaluation mode):
``PIL.Image.open`` (no conversion; the datasets' JPEGs / PNGs are RGB), torchvision ``Resize((H, W))``
of the PIL image (Pillow ``BILINEAR``) to ground 122x671 and aerial 122x671 (polar) or 256x256,
``ToTensor``, ``Normalize(0.5, 0.5)``. With ``pt`` the aerial is read from polar PNGs made beforehand by
GeoDTR's own ``data_preparation.py`` (SAFA's sampler at 122x671 in float64 on the ``imageio.imread``
(Pillow) aerial, ``astype(np.uint8)``, ``imageio.imwrite``; the ``Resize`` leaves them unchanged):
recorded as the polar preset ``geodtr@1`` with ``decode: "pil"``, which ``geo-bench evaluate`` renders
and reads as upstream does, bit for bit (``geo-bench/tests/data/upstream/polar``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from ..checkpoint import _safe_torch_load, strip_prefixes
from ..heads import GeoDTRHead
from ..model import CrossViewModel
from ..recipes import build, get_recipe
from .manifest import UpstreamPreprocessing, write_converted
from .mapping import map_state_dict
from .sources import register_source

__all__ = [
    "GROUND_SIZE",
    "UPSTREAM",
    "convert_geodtr",
    "find_parameters",
    "geodtr_preprocessing",
    "head_options",
]

UPSTREAM = "zxh009123/GeoDTR"
GROUND_SIZE = (122, 671)
POLAR_SIZE = (122, 671)
AERIAL_SIZE = (256, 256)
#: ``parameter.json`` keys the architecture is rebuilt from
REQUIRED = ("n_des", "TR_heads", "TR_layers", "TR_dim", "dropout", "pt")
_RESNET_LAYERS = {"0": "conv1", "1": "bn1", "3": "layer1", "4": "layer2", "5": "layer3", "6": "layer4"}
_HEAD_RENAMES = (
    ("tr_module.pos_encoder.linear", "pos_linear"),
    ("tr_module.pos_encoder.embedding_parameter", "pos_embedding"),
    ("tr_module.transformer_encoder.", "encoder."),
)
_CODE = (
    f"{UPSTREAM}: datasets/cvusa.py, datasets/cvact.py (PIL Image.open, torchvision Resize / ToTensor / "
    "Normalize(0.5, 0.5)), data_preparation.py (polar 122x671 PNGs), test.py (the model rebuilt from "
    "parameter.json)"
)


def _rename(key: str) -> str | None:
    for theirs, ours in (
        ("backbone_grd.", "ground_backbone.model."),
        ("backbone_sat.", "aerial_backbone.model."),
    ):
        if key.startswith(theirs):
            m = re.match(r"layers\.(\d+)\.(.+)$", key[len(theirs) :])
            if m is None or m.group(1) not in _RESNET_LAYERS:
                return None
            return f"{ours}{_RESNET_LAYERS[m.group(1)]}.{m.group(2)}"
    for theirs, ours in (("ge_grd.", "ground_head."), ("ge_sat.", "aerial_head.")):
        if key.startswith(theirs):
            rest = key[len(theirs) :]
            for old, new in _HEAD_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            return ours + rest
    return None


def find_parameters(src: Path) -> Path:
    """The ``*parameter.json`` upstream wrote for the checkpoint ``src``: beside it or one folder up
    (``SAVE/<ts>_parameter.json`` for ``SAVE/epoch_N/epoch_N.pth``).

    Raises:
        FileNotFoundError: none, naming the folders searched; ValueError: more than one in a folder.
    """
    for folder in (src.parent, src.parent.parent):
        found = sorted(folder.glob("*parameter.json"))
        if len(found) > 1:
            raise ValueError(
                f"{len(found)} parameter.json files in {os.fspath(folder)!r} ({', '.join(p.name for p in found)}); "
                "pass --parameters FILE"
            )
        if found:
            return found[0]
    raise FileNotFoundError(
        f"no *parameter.json beside {os.fspath(src)!r} or in {os.fspath(src.parent.parent)!r}: GeoDTR's "
        "architecture is rebuilt from the parameter.json its train.py wrote; pass --parameters FILE"
    )


def head_options(parameters: dict[str, Any], path: Path) -> dict[str, Any]:
    """``head_kwargs`` of the ``geodtr`` head and ``polar`` from upstream's ``parameter.json`` values."""
    missing = [k for k in REQUIRED if k not in parameters]
    if missing:
        raise ValueError(f"{os.fspath(path)}: no {', '.join(missing)}: not a {UPSTREAM} parameter.json")
    try:
        kwargs = {
            "num_descriptors": int(parameters["n_des"]),
            "tr_heads": int(parameters["TR_heads"]),
            "tr_layers": int(parameters["TR_layers"]),
            "d_hid": int(parameters["TR_dim"]),
            "dropout": float(parameters["dropout"]),
        }
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None
    return {"head_kwargs": kwargs, "polar": bool(parameters["pt"])}


def _state_dict(obj: Any, src: Path) -> dict[str, Tensor]:
    inner = obj.get("model_state_dict") if isinstance(obj, dict) else None
    if not isinstance(inner, dict) or not inner:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{os.fspath(src)}: not a {UPSTREAM} checkpoint (no model_state_dict; top-level keys: {keys})"
        )
    try:
        return strip_prefixes(inner)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(src)}: {exc}") from None


def geodtr_preprocessing(polar: bool) -> UpstreamPreprocessing:
    """Upstream's CVUSA / CVACT evaluation preprocessing (module docstring): ``polar`` is ``pt``."""
    return UpstreamPreprocessing(
        reader="pil",
        resize="PIL.Image.BILINEAR",
        ground_size=GROUND_SIZE,
        aerial_size=POLAR_SIZE if polar else AERIAL_SIZE,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        polar={
            "preset": "geodtr@1",
            "size": list(POLAR_SIZE),
            "center": "safa",
            "input": "raw aerial image",
            "decode": "pil",
            "files": "polarmap/19/*.png (GeoDTR data_preparation.py)",
        }
        if polar
        else None,
        code=_CODE,
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parameters",
        default=None,
        help="upstream's <timestamp>_parameter.json of the run (default: the one beside SRC or one folder up)",
    )


@register_source(
    "geodtr",
    summary="GeoDTR (AAAI'23) epoch_N.pth + parameter.json -> geodtr recipe (full) folder",
    add_arguments=_add_arguments,
)
def convert_geodtr(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    parameters: str | os.PathLike[str] | None = None,
    **unused: Any,
) -> dict[str, Path]:
    """Convert a GeoDTR ``epoch_N.pth`` (with its ``parameter.json``) into a converted-checkpoint folder.

    Args:
        src: the checkpoint (read with ``weights_only=True`` only).
        out_dir: the folder written (``model.safetensors``, ``recipe.json``, ``manifest.json``).
        parameters: upstream's ``parameter.json`` (default: :func:`find_parameters`).

    Returns:
        ``{"model", "recipe", "manifest"}`` paths.

    Raises:
        StateDictMismatchError: keys or shapes that do not fit (names the file and the keys).
        CorruptCheckpointError, UnsafeCheckpointError: a damaged or unsafe file.
        FileNotFoundError: no checkpoint, or no parameter.json.
        ValueError: a file that is no GeoDTR checkpoint or parameter.json (names it).
    """
    if unused:
        raise TypeError(f"geodtr takes the option parameters=, not {sorted(unused)}")
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(src)!r}")
    params_path = Path(parameters) if parameters is not None else find_parameters(src)
    try:
        params = json.loads(params_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no parameter.json at {os.fspath(params_path)!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{os.fspath(params_path)} is not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise ValueError(f"{os.fspath(params_path)} must hold a JSON object")
    opts = head_options(params, params_path)
    raw = _safe_torch_load(src)
    state = _state_dict(raw, src)
    polar = opts["polar"]
    aerial_size = POLAR_SIZE if polar else AERIAL_SIZE
    recipe = get_recipe("geodtr", "full").replace(
        head_kwargs=opts["head_kwargs"],
        ground_size=GROUND_SIZE,
        aerial_size=aerial_size,
        polar=polar,
        polar_preset="safa" if polar else None,
    )
    net = build(recipe)
    if not isinstance(net, CrossViewModel) or net.shared_backbone:
        raise ValueError("the geodtr recipe must build two separate backbones")
    if not isinstance(net.ground_head, GeoDTRHead):
        raise TypeError(f"the geodtr recipe's head is a {type(net.ground_head).__name__}, not a GeoDTRHead")
    mapped = map_state_dict(
        state,
        net.state_dict(),
        _rename,
        path=src,
        what=f"not a {UPSTREAM} checkpoint of {params_path.name}'s architecture (recipe geodtr, full; "
        f"n_des {opts['head_kwargs']['num_descriptors']}, TR_layers {opts['head_kwargs']['tr_layers']}, "
        f"pt {polar})",
    )
    notes = [
        "Upstream's test.py evaluates the highest-numbered epoch_N folder (GetBestModel), which its train.py "
        "selects on the evaluation split.",
    ]
    if polar:
        notes.append(
            "pt=True: upstream reads the polar PNGs of its data_preparation.py (SAFA's sampler at 122x671, "
            "astype(np.uint8), imageio) through the same Resize; preset geodtr@1 renders them from the aerial "
            "decoded with Pillow (the JPEG library matters: IJG libjpeg 9 in Pillow wheels up to 8.4, "
            "libjpeg-turbo since)."
        )
    preprocessing = geodtr_preprocessing(polar)
    extra: dict[str, Any] = {
        "parameters_file": params_path.name,
        "dataset": params.get("dataset"),
        "cf": params.get("cf"),
    }
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    if isinstance(epoch, int):
        extra["epoch"] = epoch
    return write_converted(
        out_dir,
        model=net,
        recipe=recipe,
        mapped=mapped,
        src=src,
        source_kind="geodtr",
        preprocessing=preprocessing,
        descriptor_dim=net.ground_head.out_dim,
        source_options={"parameters": params_path.name},
        source_extra=extra,
        notes=tuple(notes),
    )
