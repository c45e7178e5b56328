"""The ``toker`` source: Toker et al., CVPR'21 ("Coming Down to Earth", ``aysim/comingdowntoearth``): a ``torch.save``'d
dict with ``generator_model_dict``, ``discriminator_model_dict``, ``retriebal_model_dict`` (sic),
three optimiser dicts, ``last_epoch`` and ``best_acc``; model keys likely prefixed ``module.``;
spectral-normalised convs stored the old way (``weight_orig``, ``weight_u``, ``weight_v``).

The converter loads with ``weights_only=True`` (never anything else) and strips prefixes. Optimiser
state is not converted. It writes one folder ``OUT_DIR``:

- a converted-checkpoint folder (:mod:`.manifest`: ``model.safetensors``, ``recipe.json``,
  ``manifest.json``) of the ``toker21`` recipe (variant ``full``, geo-synthesis' ``Toker21Model``): all
  three components mapped strictly (:func:`~geo_retrieval.convert.mapping.map_state_dict`).
  ``generator.*`` and ``discriminator.*`` keep their names, the old spectral-norm triple
  ``<p>.weight_orig / weight_u / weight_v`` becomes torch's parametrisation
  ``<p>.parametrizations.weight.original / .0._u / .0._v`` (in eval mode both compute
  W = W_orig / (u . W_mat v) from the stored u, v, so the outputs are equal). The retrieval model
  ``SAFA`` (``networks/safa.py``): ``extract2.layers.{0,1,3,4,5}`` (torchvision ResNet-34 conv1, bn1,
  layer1-3; the max-pool, index 2 of ``children()``, is absent) -> ``street.model.{conv1,bn1,layer1-3}``;
  ``sa1`` (aerial, on G's ``resb6``) / ``sa2`` (street): upstream ``w1`` (N, N/2, K), ``b1`` (1, N/2, K),
  ``w2`` (N/2, N, K), ``b2`` (1, N, K) -> our ``SAFAHead`` ``w1`` (K, N, N/2), ``b1`` (K, N/2), ... (the
  head index moved first). Upstream's descriptor ``matmul(f (B, C, N), a (B, N, K)).view(B, -1)`` is
  channel-major (c * K + k), as the recipe's ``flatten="channel_major"``; channel pooling is max.
  The image size (H, W) follows from N = (H / 8)(W / 8): 1078 is upstream's 112x616; any other N needs
  ``image_size``. ``model.safetensors`` is the model ``geo-bench evaluate --checkpoint OUT_DIR`` runs
  (street: ``sa2(R_E(x))``, aerial: ``sa1(G.encode(x))``).
- the components as before (``{generator,discriminator,retrieval}.safetensors``, upstream key names,
  spectral norm baked: W = W_orig / sigma with sigma = u^T (W_mat v), W_mat = W_orig reshaped to
  (out, -1); the value torch's ``spectral_norm`` uses in eval mode), beside the recipe files.
  ``components_only=True`` (``--components-only``) writes only these, for a checkpoint that is not
  the released architecture.

Upstream preprocessing (CVUSA, ``data/convert_polar.py``, ``data/utils.py`` ``CVUSA``,
``data/custom_transforms.py`` ``ToTensor``): the polar maps are made offline, SAFA's sampler at 224x1232
from the 750x750 aerial, ``astype(np.uint8)``, PNG; the loader reads them with ``cv2.imread`` -> RGB ->
``cv2.resize(..., (616, 112), INTER_CUBIC)``; the panorama the same way from its 224x1232 JPEG; then
x / 255 and ``Normalize(0.5, 0.5)`` in float32. The polar chain is geo-transforms' preset
``toker_cvusa_legacy`` (the manifest's ``polar``); the reader is ``opencv_torchvision``
(``geo_bench.datasets.upstream_preprocess``).

Upstream preprocessing on CVACT (``--dataset cvact``; ``data/convert_polar.py``'s CVACT blocks,
``data/cvact_utils.py`` ``CVACT``, ``cvact_test.py``): the script reads the 1200x1200 aerial with
``imageio.imread`` (Pillow), samples the polar map at 112x616 (SAFA's sampler, S = 1200) in float64 and
writes it with ``imageio.imsave`` under the aerial's own ``.jpg`` name, i.e. ``image_as_uint``'s min-max
stretch and a Pillow JPEG at quality 75 (``polarmap/<panoId>_satView_polish.jpg``); it reads each panorama
with ``imageio.imread``, keeps rows 208-624 (``832 / 4`` onwards, hard-coded), ``cv2.resize``s them to
616x112 with ``INTER_AREA`` and writes a JPEG the same way (``streetview_polish/<panoId>_grdView.jpg``).
The loader reads both with ``cv2.imread`` -> RGB -> ``cv2.resize((616, 112), INTER_AREA)`` (the identity
at that size) -> x / 255 -> ``Normalize(0.5, 0.5)``. Recorded as the polar preset ``toker_cvact`` (render +
``uint8_imageio``; ``decode`` ``pil``, maps ``.jpg``) and ``prepared`` (both views written as JPEG quality
75 and read back; ``ground_rows`` 208-624), reader ``opencv_torchvision`` with ``cv2.INTER_AREA``.
``cvact_test.py`` evaluates CVACT_val (``valSet``); the same pipeline applies to CVACT_test's files.

CLI: ``python -m geo_retrieval.convert toker SRC OUT_DIR [--image-size H W] [--components-only]
[--dataset cvusa|cvact]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from ..checkpoint import _safe_torch_load, save_weights, strip_prefixes
from ..recipes import build, get_recipe
from .manifest import UpstreamPreprocessing, write_converted
from .mapping import map_state_dict
from .sources import register_source

__all__ = [
    "CVACT_GROUND_ROWS",
    "CVACT_JPEG_QUALITY",
    "DATASETS",
    "PAPER_SIZE",
    "POLAR_PRESET",
    "POLAR_PRESET_CVACT",
    "TOKER_COMPONENTS",
    "UPSTREAM",
    "bake_spectral_norm",
    "convert_toker",
    "toker_preprocessing",
]

UPSTREAM = "aysim/comingdowntoearth"
#: upstream's polar aerial = panorama size (H, W) (``define_R``: ``(112, 616)``)
PAPER_SIZE = (112, 616)
#: the geo-transforms preset that reproduces upstream's CVUSA polar maps as its loader reads them
POLAR_PRESET = "toker_cvusa_legacy@1"
#: the preset of upstream's CVACT polar maps (the levels its script writes as JPEG)
POLAR_PRESET_CVACT = "toker_cvact@1"
#: the JPEG quality of imageio 2.x's JPEG-PIL writer (``imageio.imsave`` without ``quality``)
CVACT_JPEG_QUALITY = 75
#: the panorama rows upstream's script keeps (``int(832 / 4)`` to ``int(832 / 4) + int(832 / 2)``)
CVACT_GROUND_ROWS = (208, 624)
DATASETS = ("cvusa", "cvact")
_CODE_CVACT = (
    f"{UPSTREAM}: data/convert_polar.py CVACT blocks (imageio.imread, SAFA sampler at 112x616 with S = 1200, "
    "imageio.imsave of the float map as <panoId>_satView_polish.jpg; panorama rows 208:624, cv2.resize "
    "(616, 112) INTER_AREA, imageio.imsave as <panoId>_grdView.jpg), data/cvact_utils.py CVACT (cv2.imread, "
    "COLOR_BGR2RGB, cv2.resize (616, 112) INTER_AREA), data/custom_transforms.py ToTensor (x / 255, "
    "Normalize 0.5 / 0.5), cvact_test.py"
)
_CODE = (
    f"{UPSTREAM}: data/convert_polar.py (SAFA sampler at 224x1232, astype(uint8), PNG), data/utils.py CVUSA "
    "(cv2.imread, COLOR_BGR2RGB, cv2.resize (616, 112) INTER_CUBIC), data/custom_transforms.py ToTensor "
    "(x / 255, Normalize 0.5 / 0.5)"
)
#: ``extract2.layers.<i>`` of upstream's ResNet34 (conv1, bn1, relu, layer1-3) -> our street backbone
_STREET = {"0": "conv1", "1": "bn1", "3": "layer1", "4": "layer2", "5": "layer3"}
_SN = {
    "weight_orig": "parametrizations.weight.original",
    "weight_u": "parametrizations.weight.0._u",
    "weight_v": "parametrizations.weight.0._v",
}

TOKER_COMPONENTS: dict[str, str] = {
    "generator_model_dict": "generator",
    "discriminator_model_dict": "discriminator",
    "retriebal_model_dict": "retrieval",
}


def bake_spectral_norm(state_dict: Mapping[str, Tensor], *, dim: int | None = None) -> dict[str, Tensor]:
    """Replace every ``<p>.weight_orig`` / ``<p>.weight_u`` / ``<p>.weight_v`` triple by ``<p>.weight``.

    ``weight = weight_orig / sigma`` with ``sigma = u . (W_mat @ v)``, ``W_mat`` the weight with
    the normalised dimension first, flattened to 2-D. The dimension is 0 (conv, linear) unless
    ``u`` only matches dim 1 (transposed convs) or ``dim`` says otherwise.

    Raises:
        ValueError: an incomplete triple or inconsistent shapes.
    """

    def join(prefix: str, leaf: str) -> str:
        return f"{prefix}.{leaf}" if prefix else leaf

    out: dict[str, Tensor] = {}
    prefixes = {k.rpartition(".")[0] for k in state_dict if k.rpartition(".")[2] == "weight_orig"}
    for key, value in state_dict.items():
        base, _, leaf = key.rpartition(".")
        if base in prefixes and leaf in ("weight_orig", "weight_u", "weight_v"):
            continue
        if leaf in ("weight_u", "weight_v"):
            raise ValueError(f"{key!r} has no matching {join(base, 'weight_orig')!r}")
        out[key] = value
    for prefix in sorted(prefixes):
        try:
            w = state_dict[join(prefix, "weight_orig")]
            u = state_dict[join(prefix, "weight_u")]
            v = state_dict[join(prefix, "weight_v")]
        except KeyError as err:
            raise ValueError(
                f"incomplete spectral-norm triple for {prefix!r}: missing {err.args[0]!r}"
            ) from None
        d = dim
        if d is None:
            d = 0 if u.numel() == w.shape[0] else 1 if w.ndim > 1 and u.numel() == w.shape[1] else -1
            if d < 0:
                raise ValueError(
                    f"{prefix}: weight_u of size {u.numel()} matches no dimension of {tuple(w.shape)}"
                )
        w64 = w.double()
        w_mat = w64.movedim(d, 0).reshape(w.shape[d], -1)
        if v.numel() != w_mat.shape[1]:
            raise ValueError(f"{prefix}: weight_v has {v.numel()} entries, expected {w_mat.shape[1]}")
        sigma = torch.dot(u.double().flatten(), w_mat @ v.double().flatten())
        if join(prefix, "weight") in out:
            raise ValueError(f"{join(prefix, 'weight')!r} exists beside its weight_orig")
        out[join(prefix, "weight")] = (w64 / sigma).to(w.dtype)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_components(
    ckpt: Mapping[str, Any], present: list[str], src: Path, digest: str, out_dir: Path
) -> dict[str, Path]:
    written: dict[str, Path] = {}
    for key in present:
        component = TOKER_COMPONENTS[key]
        state = ckpt[key]
        if not isinstance(state, Mapping):
            raise ValueError(f"{src}: {key} must be a state dict, got {type(state).__name__}")
        state = bake_spectral_norm(strip_prefixes(state))
        metadata = {
            "format": "geo-retrieval/toker21",
            "component": component,
            "source_file": src.name,
            "source_sha256": digest,
            "source_key": key,
            "last_epoch": str(ckpt.get("last_epoch", "")),
            "best_acc": str(ckpt.get("best_acc", "")),
            "converter": f"geo_retrieval.convert.convert_toker {__version__}",
            "spectral_norm": "baked (eval-mode sigma from stored u, v)",
            "input_normalisation": "x/255, mean=std=0.5 ([-1, 1]) for every branch",
        }
        written[component] = save_weights(state, out_dir / f"{component}.safetensors", metadata)
    return written


def _source_state(ckpt: Mapping[str, Any], src: Path) -> dict[str, Tensor]:
    """The three model dicts as one flat dict ``"<component key>.<upstream key>"``, prefixes stripped and
    SAFA's tensors moved into our layout (head index first); non-tensors raise ``TypeError``."""
    out: dict[str, Tensor] = {}
    for comp in TOKER_COMPONENTS:
        state = ckpt[comp]
        if not isinstance(state, Mapping):
            raise ValueError(f"{src}: {comp} must be a state dict, got {type(state).__name__}")
        for key, value in strip_prefixes(state).items():
            if not isinstance(value, Tensor):
                raise TypeError(f"{os.fspath(src)}: {comp}.{key} is a {type(value).__name__}, not a tensor")
            if comp == "retriebal_model_dict" and re.fullmatch(r"sa[12]\.[wb][12]", key) and value.ndim == 3:
                # w (din, dout, K) -> (K, din, dout); b (1, dout, K) -> (K, dout)
                value = value.permute(2, 0, 1) if key[-2] == "w" else value[0].T
                value = value.contiguous()
            out[f"{comp}.{key}"] = value
    return out


def _rename(key: str) -> str | None:
    comp, _, rest = key.partition(".")
    base, _, leaf = rest.rpartition(".")
    if comp in ("generator_model_dict", "discriminator_model_dict"):
        ours = "generator" if comp.startswith("generator") else "discriminator"
        if leaf in _SN:
            return f"{ours}.{base}.{_SN[leaf]}" if base else None
        return f"{ours}.{rest}"
    if comp == "retriebal_model_dict":
        m = re.fullmatch(r"extract2\.layers\.(\d+)\.(.+)", rest)
        if m:
            layer = _STREET.get(m.group(1))
            return f"street.model.{layer}.{m.group(2)}" if layer else None
        if re.fullmatch(r"sa[12]\.[wb][12]", rest):
            return rest
    return None


def toker_preprocessing(
    image_size: tuple[int, int] = PAPER_SIZE, dataset: str = "cvusa"
) -> UpstreamPreprocessing:
    """Upstream's CVUSA or CVACT evaluation preprocessing (see the module docstring) for models of
    ``image_size``.

    The polar presets render 112x616; a folder of another size records them too (the reader then refuses
    to run it: such folders are for parity checks with ``--preprocess ours``).

    Raises:
        ValueError: an unknown dataset.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    size = (int(image_size[0]), int(image_size[1]))
    if dataset == "cvact":
        return UpstreamPreprocessing(
            reader="opencv_torchvision",
            resize="cv2.INTER_AREA",
            ground_size=size,
            aerial_size=size,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            ground_crop=(0.25, 0.75),
            polar={
                "preset": POLAR_PRESET_CVACT,
                "size": list(PAPER_SIZE),
                "center": "safa",
                "input": "raw aerial image",
                "decode": "pil",
                "map_suffix": ".jpg",
            },
            prepared={
                "views": ["ground", "aerial"],
                "decode": "pil",
                "format": "jpeg",
                "quality": CVACT_JPEG_QUALITY,
                "ground_rows": list(CVACT_GROUND_ROWS),
                "writer": "imageio 2.x imsave, JPEG-PIL (Pillow, quality 75, progressive and optimize off)",
                "files": ["polarmap/<panoId>_satView_polish.jpg", "streetview_polish/<panoId>_grdView.jpg"],
            },
            code=_CODE_CVACT,
        )
    return UpstreamPreprocessing(
        reader="opencv_torchvision",
        resize="cv2.INTER_CUBIC",
        ground_size=size,
        aerial_size=size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        polar={
            "preset": POLAR_PRESET,
            "size": list(PAPER_SIZE),
            "center": "safa",
            "input": "raw aerial image",
        },
        code=_CODE,
    )


def _image_size(
    state: Mapping[str, Tensor], image_size: tuple[int, int] | None, src: Path
) -> tuple[int, int]:
    w1 = state.get("retriebal_model_dict.sa1.w1")
    n = int(w1.shape[1]) if isinstance(w1, Tensor) and w1.ndim == 3 else None
    if image_size is not None:
        h, w = (int(v) for v in image_size)
        if h % 8 or w % 8 or h < 16 or w < 16:
            raise ValueError(f"image_size must be (H, W) divisible by 8 and >= 16, got {tuple(image_size)}")
        return (h, w)
    if n == (PAPER_SIZE[0] // 8) * (PAPER_SIZE[1] // 8):
        return PAPER_SIZE
    raise ValueError(
        f"{os.fspath(src)}: retriebal_model_dict.sa1.w1 has N = {n} positions, not upstream's 1078 (112x616): "
        "pass --image-size H W with (H / 8) * (W / 8) = N"
    )


def _check_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"OUT_DIR {os.fspath(out_dir)!r} exists and is not a folder")


def convert_toker(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] | None = None,
    components_only: bool = False,
    dataset: str = "cvusa",
) -> dict[str, Path]:
    """Convert a Toker et al. checkpoint (see the module docstring).

    Args:
        src: the ``.pth`` file (loaded with ``weights_only=True``).
        out_dir: output folder: the ``toker21`` converted-checkpoint folder (replaced as a whole) plus
            ``{generator,discriminator,retrieval}.safetensors``.
        image_size: (H, W) of the polar aerial = panorama; default from the SAFA heads (112x616).
        components_only: write only the component files (upstream key names, spectral norm baked).
        dataset: ``"cvusa"`` or ``"cvact"``: the upstream preprocessing recorded (the weights are the same
            architecture either way).

    Returns:
        ``{"model", "recipe", "manifest", "generator", "discriminator", "retrieval"}`` paths (only the
        components present with ``components_only``).

    Raises:
        UnsafeCheckpointError, CorruptCheckpointError: an unsafe or damaged file.
        ValueError: a model dict is missing (all three are needed unless ``components_only``).
        StateDictMismatchError: the weights do not fit ``toker21`` (names the file and the keys).
    """
    if dataset not in DATASETS:
        raise ValueError(
            f"dataset must be one of {DATASETS} (the upstream preprocessing recorded), got {dataset!r}"
        )
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(src)!r}")
    _check_out(out_dir)
    ckpt = _safe_torch_load(src)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{src}: expected a dict checkpoint, got {type(ckpt).__name__}")
    present = [k for k in TOKER_COMPONENTS if k in ckpt]
    keys = sorted(map(str, ckpt))
    if not present:
        raise ValueError(
            f"{src}: none of {sorted(TOKER_COMPONENTS)} found (keys: {keys[:20]}); is this a Toker et al. "
            f"({UPSTREAM}) checkpoint?"
        )
    digest = _sha256(src)
    if components_only:
        out_dir.mkdir(parents=True, exist_ok=True)
        return _write_components(ckpt, present, src, digest, out_dir)
    missing = [k for k in TOKER_COMPONENTS if k not in ckpt]
    if missing:
        raise ValueError(
            f"{src}: {missing} missing (keys: {keys[:20]}): the toker21 folder needs all of "
            f"{list(TOKER_COMPONENTS)}; pass --components-only to write the components present"
        )
    state = _source_state(ckpt, src)
    size = _image_size(state, image_size, src)
    try:
        recipe = get_recipe("toker21", "full").replace(ground_size=size, aerial_size=size)
    except ValueError:
        raise ValueError(
            "the toker21 recipe comes from geo-synthesis, which is not installed: install it, or pass "
            "--components-only"
        ) from None
    net = build(recipe)
    mapped = map_state_dict(
        state,
        net.state_dict(),
        _rename,
        path=src,
        what=f"not a {UPSTREAM} checkpoint of the released architecture (recipe toker21, full, {size[0]}x{size[1]})",
    )
    extra = {k: ckpt[k] for k in ("last_epoch", "best_acc") if isinstance(ckpt.get(k), (int, float))}
    notes = [
        "All three components are in model.safetensors (Toker21Model: generator, discriminator, street "
        "backbone, sa1, sa2; spectral norm kept as torch parametrisations with upstream's u, v).",
        f"{UPSTREAM} selected this checkpoint on the test split (best p2s R@1 per epoch).",
    ]
    if dataset == "cvact":
        notes.append(
            "CVACT: upstream's loader reads polarmap/*.jpg and streetview_polish/*.jpg that its convert_polar.py "
            "wrote with imageio 2.x (float maps min-max stretched, JPEG quality 75); evaluate replays that in "
            "memory from the raw files. JPEG encoding and decoding depend on the library (IJG libjpeg 9 in "
            "Pillow wheels up to 8.4, libjpeg-turbo later): with another library the pixels differ slightly."
        )
    if size != PAPER_SIZE:
        notes.append(
            f"image size {size[0]}x{size[1]} is not upstream's 112x616: the recorded polar preset renders "
            "112x616, so only --preprocess ours can evaluate this folder"
        )
    written = write_converted(
        out_dir,
        model=net,
        recipe=recipe,
        mapped=mapped,
        src=src,
        source_kind="toker",
        preprocessing=toker_preprocessing(size, dataset),
        # K heads x C bottleneck channels
        descriptor_dim=int(mapped.state["sa1.w1"].shape[0])
        * int(mapped.state["generator.in3_e.weight"].numel()),
        source_options={"dataset": dataset, "image_size": list(size)},
        source_extra=extra,
        notes=notes,
    )
    written.update(_write_components(ckpt, present, src, digest, out_dir))
    return written


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="polar aerial = panorama size (default from the SAFA heads: upstream's 112 616)",
    )
    parser.add_argument(
        "--components-only",
        action="store_true",
        help="write only {generator,discriminator,retrieval}.safetensors (upstream names, spectral norm baked)",
    )
    parser.add_argument(
        "--dataset",
        default="cvusa",
        choices=list(DATASETS),
        help="the upstream preprocessing recorded: cvusa (polar PNGs at 224x1232, INTER_CUBIC) or cvact "
        "(polarmap/ and streetview_polish/ JPEGs written by imageio, INTER_AREA); default cvusa",
    )


@register_source(
    "toker",
    summary="Toker et al. CVPR'21 .pth -> toker21 recipe (full) folder + generator/discriminator/retrieval.safetensors",
    add_arguments=_add_arguments,
)
def _convert(src: Path, out_dir: Path, **options: Any) -> dict[str, Path]:
    size = options.pop("image_size", None)
    return convert_toker(src, out_dir, image_size=tuple(size) if size is not None else None, **options)
