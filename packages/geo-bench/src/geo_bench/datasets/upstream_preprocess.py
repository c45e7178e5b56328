"""Upstream preprocessing: the pixels a published method's own code feeds its model.

A converted checkpoint (``python -m geo_retrieval.convert``) records how its upstream code reads and
preprocesses images (:class:`geo_retrieval.convert.UpstreamPreprocessing` in ``manifest.json``).
``geo-bench evaluate --checkpoint OUT_DIR`` reproduces those pixels by default, reading the dataset's
image files again through :class:`UpstreamViews` instead of the datasets' own Pillow pipeline.

Convention:
    - A *reader* (registry :data:`READERS`, one entry per upstream image pipeline, by the manifest's
      ``reader`` name) maps an image file and a view (``"ground"`` / ``"aerial"``) to the model input
      (3, H, W) float32, already normalised; the evaluation then applies nothing more.
    - ``"opencv"`` (Sample4Geo): ``cv2.imread`` (8-bit, BGR) -> ``cv2.cvtColor(COLOR_BGR2RGB)`` ->
      optional row crop ``[int(a*H), int(b*H))`` of the panorama -> ``cv2.resize`` to (H, W) with the
      manifest's interpolation (``cv2.INTER_LINEAR_EXACT``, as albumentations' ``Resize`` calls it) ->
      ``(x - mean*255) * (1 / (std*255))`` in float32, mean and std first cast to float32 (what
      albumentations' ``Normalize`` computes) -> (3, H, W). Tested against pixels made by Sample4Geo's
      own code (``tests/data/upstream/sample4geo``).
    - ``"opencv_torchvision"`` (Toker et al.): ``cv2.imread`` -> RGB -> the aerial through the manifest's
      polar preset (geo-transforms' ``apply_polar_preset`` on the 0-255 image, e.g.
      ``toker_cvusa_legacy``: render 224x1232, uint8 truncation, bicubic to 112x616, uint8), the
      panorama (and a non-polar aerial) row-cropped and ``cv2.resize``d as above -> float32 x / 255 ->
      ``(x - mean) / std`` (torchvision's ``Normalize`` order) -> (3, H, W). Tested against pixels made by
      Toker's own scripts (``tests/data/upstream/toker``).
    - A manifest with ``prepared`` (Toker et al.'s CVACT) replays the files upstream's preparation
      script writes and its loader reads back, for the views it names: the raw image decoded as
      ``prepared["decode"]`` says (``"pil"``: ``imageio.imread``); the panorama cropped to
      ``prepared["ground_rows"]`` (rows the script hard-codes; else ``ground_crop``) and ``cv2.resize``d
      with the manifest's interpolation; the aerial through the polar preset (ending in uint8, e.g.
      ``toker_cvact``: ``imageio.imsave``'s stretch of the float map); then saved as a JPEG by Pillow at
      ``prepared["quality"]`` (imageio 2.x's JPEG-PIL writer: quality 75, Pillow's default 4:2:0 chroma)
      and decoded again with ``cv2.imdecode`` -> RGB, in memory; then the loader's ``cv2.resize`` (the
      identity at the model's size) and the normalisation. JPEG encoding depends on the library too
      (IJG libjpeg 9 vs libjpeg-turbo, as for decoding); :func:`decoder_versions` names Pillow's.
      ``view="polar_map"`` reads a map made beforehand (``polar["map_suffix"]``, ``.jpg`` for
      Toker's CVACT ``polarmap/``) as the loader reads it.
    - ``"opencv_caffe"`` (SAFA, DSM; TF1): the same pipeline with the means in pixels
      (``max_pixel_value`` 1, ``std`` 1): ``float32(x) - float32(mean)``, upstream's in-place
      ``img[:, :, c] -= 103.939`` ..., bit for bit (upstream feeds BGR; the converters reverse the
      first convolution's input channels, so the reader returns RGB with the means in RGB order).
      Polar aerials come from the presets ``safa_imsave`` / ``dsm_imsave`` (``data_preparation.py``'s
      float render and ``scipy.misc.imsave``'s min-max stretch) on the aerial decoded with Pillow, what
      ``scipy.misc.imread`` used; the panorama ``cv2.resize``s with ``INTER_AREA``. Tested against pixels
      made by SAFA's and DSM's own scripts (``tests/data/upstream/polar``).
    - ``"pil"`` (TransGeo, L2LTR, GeoDTR): ``PIL.Image.open(path).convert("RGB")`` -> optional row crop
      as above -> ``Image.resize((W, H), resample)`` with the manifest's resampling
      (``PIL.Image.BILINEAR``, what torchvision's ``Resize`` calls on a PIL image; Pillow returns the
      image unchanged at its own size) -> uint8 -> float32 ``/ 255`` (``ToTensor``) -> ``(x - mean) /
      std`` with float32 mean and std (``Normalize``) -> (3, H, W). A polar aerial is first rendered as
      the PNG upstream read (the manifest's preset, which must end in a uint8 step: ``safa_imsave`` for
      L2LTR, ``geodtr`` for GeoDTR) and then goes through the same resize. Tested against pixels made by
      TransGeo's, L2LTR's and GeoDTR's own code (``tests/data/upstream/transgeo``, ``.../polar``).
    - Polar presets decode the raw aerial as the upstream polar script did: the manifest's
      ``polar["decode"]`` (``"pil"``: ``scipy.misc.imread`` / ``imageio.imread``, both Pillow;
      ``"opencv"``, the default: ``cv2.imread``). JPEG decoding depends on the library: Pillow wheels up
      to 8.4 bundle IJG libjpeg 9, later ones libjpeg-turbo, and the two differ on chroma-subsampled
      JPEGs (up to 17 levels in SAFA's polar maps of the test images); :func:`decoder_versions` names
      what ran and the records keep it. ``view="polar_map"`` instead reads a polar map made beforehand
      (e.g. the authors' released ``polarmap/`` PNGs) as the upstream loader reads it: no render.
    - A manifest with ``aerial_tokens`` (TransGeo stage 2) needs the stage-1 attention maps
      (``attention_maps``, ``<index>.png``): each aerial input gets a fourth channel, the keep-order
      channel of the patches upstream keeps (:func:`with_kept_tokens`,
      :mod:`geo_retrieval.token_crop`), which the converted model's aerial backbone reads.
    - Every other choice of the dataset loaders (their sizes, their panorama crop, a ``prepare`` cache)
      is bypassed; only the file paths, ids and labels of the dataset are used.
    - Not re-exported by :mod:`geo_bench.datasets` (it imports OpenCV and :mod:`geo_retrieval.convert`,
      which the datasets themselves never need); import it from here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL
import torch
from PIL import Image, UnidentifiedImageError, features
from torch import Tensor
from torch.utils.data import Dataset

from geo_retrieval.convert import UpstreamPreprocessing
from geo_retrieval.token_crop import attention_keep_order, keep_order_channel
from geo_transforms.presets import PolarPreset, apply_polar_preset, get_polar_preset
from geo_transforms.registry import Registry

from ..metrics import make_fov_queries
from .errors import ImageDecodeError

__all__ = [
    "INTERPOLATIONS",
    "PIL_RESAMPLING",
    "POLAR_DECODERS",
    "PREPARED_FORMATS",
    "READERS",
    "TOKEN_METHODS",
    "UpstreamViews",
    "decoder_versions",
    "read_upstream",
    "register_reader",
    "upstream_protocol",
    "upstream_roll_shifts",
    "read_attention_map",
    "with_kept_tokens",
]

#: ``reader(path, view, preprocessing) -> (3, H, W) float32``
Reader = Callable[[Path, str, UpstreamPreprocessing], Tensor]

READERS: Registry[Reader] = Registry("upstream image reader")

#: the OpenCV interpolations a manifest may name
INTERPOLATIONS: dict[str, int] = {
    "cv2.INTER_LINEAR_EXACT": cv2.INTER_LINEAR_EXACT,
    "cv2.INTER_LINEAR": cv2.INTER_LINEAR,
    "cv2.INTER_AREA": cv2.INTER_AREA,
    "cv2.INTER_CUBIC": cv2.INTER_CUBIC,
    "cv2.INTER_NEAREST": cv2.INTER_NEAREST,
}


#: the Pillow resampling filters a manifest may name (reader ``"pil"``)
PIL_RESAMPLING: dict[str, str] = {
    "PIL.Image.BILINEAR": "BILINEAR",
    "PIL.Image.BICUBIC": "BICUBIC",
    "PIL.Image.NEAREST": "NEAREST",
    "PIL.Image.LANCZOS": "LANCZOS",
}


def register_reader(name: str, *, overwrite: bool = False) -> Callable[[Reader], Reader]:
    """Decorator registering an upstream image reader under the manifest's ``reader`` name."""
    return READERS.register(name, overwrite=overwrite)


_VIEWS = ("ground", "aerial", "polar_map")


def _size(preprocessing: UpstreamPreprocessing, view: str) -> tuple[int, int]:
    if view == "ground":
        return preprocessing.ground_size
    if view in ("aerial", "polar_map"):
        if view == "polar_map" and preprocessing.polar is None:
            raise ValueError(
                "view 'polar_map' needs a manifest with a polar aerial (this one takes raw aerials)"
            )
        return preprocessing.aerial_size
    raise ValueError(f"view must be one of {_VIEWS}, got {view!r}")


def _cv2_interpolation(preprocessing: UpstreamPreprocessing) -> int:
    """The OpenCV interpolation flag of ``preprocessing.resize``."""
    interpolation = INTERPOLATIONS.get(preprocessing.resize)
    if interpolation is None:
        raise ValueError(f"unknown resize {preprocessing.resize!r}; known: {sorted(INTERPOLATIONS)}")
    return int(interpolation)


def _cv2_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB as ``cv2.imread`` + ``COLOR_BGR2RGB`` decode it (both OpenCV readers)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file not found: {os.fspath(path)!r}")
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(f"cannot decode image {path} with OpenCV; re-download or remove it", path=path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _pil_rgb(path: Path) -> Image.Image:
    """The image as ``PIL.Image.open(path).convert("RGB")`` gives it (missing / undecodable files named)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file not found: {os.fspath(path)!r}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageDecodeError(
            f"cannot decode image {path} with Pillow ({exc}); re-download or remove it", path=path
        ) from None


#: how a polar preset's input, the raw aerial, is decoded: (H, W, 3) uint8 RGB, by the manifest's
#: ``polar["decode"]`` (``scipy.misc.imread`` and ``imageio.imread`` decode with Pillow)
POLAR_DECODERS: dict[str, Callable[[Path], np.ndarray]] = {
    "opencv": _cv2_rgb,
    "pil": lambda path: np.asarray(_pil_rgb(path), dtype=np.uint8),
}


def _polar_preset(preprocessing: UpstreamPreprocessing) -> PolarPreset:
    assert preprocessing.polar is not None
    return get_polar_preset(str(preprocessing.polar["preset"]))


def _render_polar(path: Path, preprocessing: UpstreamPreprocessing) -> np.ndarray:
    """The polar aerial (3, H, W) float64 on 0-255 that the manifest's preset makes of the raw aerial
    ``path`` decoded as ``polar["decode"]`` says."""
    assert preprocessing.polar is not None
    preset = _polar_preset(preprocessing)
    decode = str(preprocessing.polar.get("decode", "opencv"))
    if decode not in POLAR_DECODERS:
        raise ValueError(f"unknown polar decode {decode!r}; known: {sorted(POLAR_DECODERS)}")
    img = POLAR_DECODERS[decode](path)
    if img.shape[0] != img.shape[1]:
        raise ValueError(f"{path}: the polar preset needs a square aerial image, got {img.shape[:2]}")
    raw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(torch.float64)
    return apply_polar_preset(raw, preset)[0].numpy()


def _check_polar_map(path: Path, shape: Sequence[int], allowed: Sequence[Sequence[int]]) -> None:
    if tuple(shape[:2]) not in [tuple(a) for a in allowed]:
        sizes = " or ".join(dict.fromkeys(f"{a[0]}x{a[1]}" for a in allowed))
        raise ValueError(
            f"{path}: a {shape[0]}x{shape[1]} polar map, but this checkpoint's upstream code reads {sizes} maps"
        )


@register_reader("opencv")
def _read_opencv(path: Path, view: str, preprocessing: UpstreamPreprocessing) -> Tensor:
    """Sample4Geo's pipeline (see the module Convention)."""
    if preprocessing.polar is not None or view == "polar_map":
        raise ValueError("the opencv reader has no polar transform; this manifest needs another reader")
    h, w = _size(preprocessing, view)
    interpolation = _cv2_interpolation(preprocessing)
    img = _cv2_rgb(path)
    if view == "ground" and preprocessing.ground_crop is not None:
        a, b = preprocessing.ground_crop
        img = img[int(a * img.shape[0]) : int(b * img.shape[0])]
    img = cv2.resize(img, (int(w), int(h)), interpolation=interpolation)
    scale = np.float32(preprocessing.max_pixel_value)
    mean = np.asarray(preprocessing.mean, dtype=np.float32) * scale
    inv_std = np.reciprocal(np.asarray(preprocessing.std, dtype=np.float32) * scale)
    x = (img.astype(np.float32) - mean) * inv_std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


@register_reader("pil")
def _read_pil(path: Path, view: str, preprocessing: UpstreamPreprocessing) -> Tensor:
    """TransGeo's, L2LTR's and GeoDTR's pipeline: Pillow and torchvision's ``Resize`` / ``ToTensor`` /
    ``Normalize``; a polar aerial rendered first as the PNG upstream read (see the module Convention)."""
    h, w = _size(preprocessing, view)
    resample = PIL_RESAMPLING.get(preprocessing.resize)
    if resample is None:
        raise ValueError(f"unknown resize {preprocessing.resize!r}; known: {sorted(PIL_RESAMPLING)}")
    if view == "aerial" and preprocessing.polar is not None:
        preset = _polar_preset(preprocessing)
        if not preset.steps[-1].startswith("uint8"):
            raise ValueError(
                f"the pil reader resizes the polar PNG upstream read: polar preset {preset.identifier} must end in "
                "a uint8 step (e.g. safa_imsave, geodtr); this converted folder can only run with --preprocess ours"
            )
        polar = _render_polar(path, preprocessing)
        img = Image.fromarray(np.ascontiguousarray(polar.transpose(1, 2, 0)).astype(np.uint8), "RGB")
    else:
        img = _pil_rgb(path)
        if view == "polar_map":
            _check_polar_map(path, (img.height, img.width), (tuple(_polar_preset(preprocessing).out_size),))
    if view == "ground" and preprocessing.ground_crop is not None:
        a, b = preprocessing.ground_crop
        img = img.crop((0, int(a * img.height), img.width, int(b * img.height)))
    img = img.resize((int(w), int(h)), getattr(Image.Resampling, resample))
    x = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(preprocessing.max_pixel_value)
    mean = torch.as_tensor(preprocessing.mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(preprocessing.std, dtype=torch.float32)[:, None, None]
    return x.sub_(mean).div_(std)


#: what a ``prepared`` manifest's files are written as (``prepared["format"]``)
PREPARED_FORMATS = ("jpeg",)


def _prepared(preprocessing: UpstreamPreprocessing, view: str) -> dict[str, Any] | None:
    """The manifest's ``prepared`` settings when they cover ``view`` (checked), else None."""
    prep = preprocessing.prepared
    if prep is None or view not in prep.get("views", ()):
        return None
    if prep.get("format") not in PREPARED_FORMATS:
        raise ValueError(f"unknown prepared format {prep.get('format')!r}; known: {list(PREPARED_FORMATS)}")
    decode = str(prep.get("decode", "opencv"))
    if decode not in POLAR_DECODERS:
        raise ValueError(f"unknown prepared decode {decode!r}; known: {sorted(POLAR_DECODERS)}")
    quality = int(prep.get("quality", 75))
    if not 1 <= quality <= 95:
        raise ValueError(f"prepared JPEG quality must be in 1..95 (Pillow's range), got {quality}")
    return prep


def _jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB saved as a JPEG by Pillow (``Image.save(fp, "JPEG", quality=q, progressive=False,
    optimize=False)``, imageio 2.x's JPEG-PIL writer) and read back with ``cv2.imread`` -> RGB."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(
        buf, format="JPEG", quality=quality, progressive=False, optimize=False
    )
    bgr = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:  # pragma: no cover - Pillow's own JPEG
        raise ImageDecodeError("OpenCV cannot decode the JPEG Pillow wrote", path=Path("<memory>"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _prepare_file(
    path: Path, view: str, preprocessing: UpstreamPreprocessing, prep: dict[str, Any]
) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image upstream's preparation script writes for ``view`` (before the JPEG):
    the panorama decoded, row-cropped and ``cv2.resize``d; the aerial through the polar preset."""
    h, w = _size(preprocessing, view)
    if view == "aerial":
        if preprocessing.polar is None:
            raise ValueError("a prepared aerial needs a polar manifest (the script writes polar maps)")
        preset = _polar_preset(preprocessing)
        if not preset.steps[-1].startswith("uint8") or tuple(preset.out_size) != (h, w):
            raise ValueError(
                f"polar preset {preset.identifier} must end in a uint8 step at the model's {h}x{w} to be written "
                "as the prepared file: this converted folder can only run with --preprocess ours"
            )
        return np.ascontiguousarray(_render_polar(path, preprocessing).transpose(1, 2, 0)).astype(np.uint8)
    img = POLAR_DECODERS[str(prep.get("decode", "opencv"))](path)
    rows = prep.get("ground_rows")
    if rows is not None:  # rows as the script hard-codes them (Toker's CVACT: 832 / 4 .. 3 * 832 / 4)
        img = img[int(rows[0]) : int(rows[1])]
    elif preprocessing.ground_crop is not None:
        a, b = preprocessing.ground_crop
        img = img[int(a * img.shape[0]) : int(b * img.shape[0])]
    return cv2.resize(img, (int(w), int(h)), interpolation=_cv2_interpolation(preprocessing))


@register_reader("opencv_caffe")
@register_reader("opencv_torchvision")
def _read_opencv_float(path: Path, view: str, preprocessing: UpstreamPreprocessing) -> Tensor:
    """Toker et al.'s pipeline (``opencv_torchvision``) and SAFA's / DSM's (``opencv_caffe``, the same
    steps with the means in pixels; see the module Convention)."""
    h, w = _size(preprocessing, view)
    interpolation = _cv2_interpolation(preprocessing)
    prep = _prepared(preprocessing, view)
    if prep is not None:
        # the script's file (written as a JPEG, read back with cv2.imread), then the loader's resize
        img = _jpeg_roundtrip(_prepare_file(path, view, preprocessing, prep), int(prep.get("quality", 75)))
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (int(w), int(h)), interpolation=interpolation)
        x = img.astype(np.float32).transpose(2, 0, 1)
    elif view == "aerial" and preprocessing.polar is not None:
        preset = _polar_preset(preprocessing)
        if tuple(preset.out_size) != (h, w):
            raise ValueError(
                f"polar preset {preset.identifier} renders {preset.out_size[0]}x{preset.out_size[1]}, but the model "
                f"takes {h}x{w} aerials: this converted folder can only run with --preprocess ours"
            )
        x = _render_polar(path, preprocessing).astype(np.float32)  # 0-255 scale, (3, H, W)
    elif view == "polar_map":
        img = _cv2_rgb(path)
        # a map at the render size is resized as upstream's loader does (Toker: 224x1232, cubic)
        _check_polar_map(path, img.shape, ((h, w), tuple(_polar_preset(preprocessing).render_size)))
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (int(w), int(h)), interpolation=interpolation)
        x = img.astype(np.float32).transpose(2, 0, 1)
    else:
        img = _cv2_rgb(path)
        if view == "ground" and preprocessing.ground_crop is not None:
            a, b = preprocessing.ground_crop
            img = img[int(a * img.shape[0]) : int(b * img.shape[0])]
        img = cv2.resize(img, (int(w), int(h)), interpolation=interpolation)
        x = img.astype(np.float32).transpose(2, 0, 1)
    x = x / np.float32(preprocessing.max_pixel_value)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocessing.std, dtype=np.float32)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray((x - mean) / std))


def read_upstream(path: str | os.PathLike[str], view: str, preprocessing: UpstreamPreprocessing) -> Tensor:
    """The model input (3, H, W) float32 that the upstream code makes of the image file ``path``.

    Args:
        path: the image file.
        view: ``"ground"``, ``"aerial"`` (the raw aerial; a polar manifest renders its preset from it)
            or ``"polar_map"`` (a polar map made beforehand, e.g. upstream's ``polarmap/*.png``, read as
            upstream's loader reads it).
        preprocessing: the manifest's upstream preprocessing.

    Raises:
        ValueError: an unknown reader, resize method or polar decoder; a polar map of another size.
        FileNotFoundError, ImageDecodeError: a missing or undecodable file (named).
    """
    if view not in _VIEWS:
        raise ValueError(f"view must be one of {_VIEWS}, got {view!r}")
    return READERS.get(preprocessing.reader)(Path(path), view, preprocessing)


def upstream_protocol(preprocessing: UpstreamPreprocessing) -> dict[str, Any]:
    """What a result record says about the preprocessing that ran (no provenance text)."""
    d = preprocessing.to_dict()
    d.pop("code", None)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def decoder_versions() -> dict[str, str]:
    """The image decoders the readers use here: Pillow and its JPEG library, OpenCV.

    JPEG pixels depend on the library (IJG libjpeg 9, bundled with Pillow wheels up to 8.4, and
    libjpeg-turbo, bundled since 9.0, decode chroma-subsampled JPEGs differently), so the records keep it.
    """
    turbo = features.check_feature("libjpeg_turbo")
    jpeg = (
        f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
        if turbo
        else f"libjpeg {features.version_codec('jpg')}"
    )
    return {"pillow": str(PIL.__version__), "pillow_jpeg": jpeg, "opencv": str(cv2.__version__)}


def upstream_roll_shifts(n: int, noise_deg: float, *, seed: int = 2019, width: int = 512) -> tuple[int, ...]:
    """DSM's test-time roll of the query panoramas: ``np.random.seed(seed)`` right before the test scan,
    then per query, in order, ``int(np.random.rand() * width * noise_deg / 360)`` columns to the right
    (``polar_input_data_orien_FOV_3.py`` ``next_batch_scan``; ``test_cvusa_fov.py --test_grd_noise``,
    0 by default, i.e. no roll). The draws are :func:`geo_bench.metrics.make_fov_queries`'."""
    return make_fov_queries(n, 360.0, noise_deg=noise_deg, seed=seed, width=width).shifts


#: the aerial token selections a manifest's ``aerial_tokens["method"]`` may name
TOKEN_METHODS = ("transgeo_attention",)


def read_attention_map(path: str | os.PathLike[str]) -> Tensor:
    """A stage-1 attention map PNG as TransGeo's loader reads it: ``Image.open().convert("RGB")`` then
    ``ToTensor`` -> (3, h, w) float32 in [0, 1]."""
    img = np.array(_pil_rgb(Path(path)), np.uint8, copy=True)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def with_kept_tokens(aerial: Tensor, attention_map: Tensor, tokens: dict[str, Any]) -> Tensor:
    """The (3, H, W) model input and its attention map (C, h, w) -> (4, H, W): the image plus the
    keep-order channel of the patches upstream keeps (:mod:`geo_retrieval.token_crop`; selected on the
    CPU as upstream's loader leaves the map there)."""
    method = tokens.get("method")
    if method not in TOKEN_METHODS:
        raise ValueError(f"unknown aerial_tokens method {method!r}; known: {list(TOKEN_METHODS)}")
    patch = int(tokens.get("patch", 16))
    h, w = int(aerial.shape[-2]), int(aerial.shape[-1])
    if h % patch or w % patch:
        raise ValueError(f"the aerial input {h}x{w} is not a whole number of {patch}-pixel patches")
    grid = (h // patch, w // patch)
    order = attention_keep_order(attention_map[None].float().cpu(), grid, float(tokens["keep_rate"]))
    channel = keep_order_channel(order, grid, patch)[0]
    return torch.cat([aerial, channel.to(aerial.dtype)], dim=0)


class _UpstreamGallery(Dataset):
    """A VIGOR gallery read with the upstream pipeline (``{"aerial", "id", "latlon", "city"}``)."""

    def __init__(
        self, parent: Any, preprocessing: UpstreamPreprocessing, attention_maps: Path | None = None
    ) -> None:
        self.parent, self.preprocessing = parent, preprocessing
        self.attention_maps = attention_maps
        self.ids = list(parent.gallery_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, j: int) -> dict[str, Any]:
        p = self.parent
        aerial = read_upstream(p._aerial_path(j), "aerial", self.preprocessing)
        if self.attention_maps is not None and self.preprocessing.aerial_tokens is not None:
            att = read_attention_map(self.attention_maps / f"{j}.png")
            aerial = with_kept_tokens(aerial, att, self.preprocessing.aerial_tokens)
        return {
            "aerial": aerial,
            "id": p.gallery_ids[j],
            "latlon": torch.from_numpy(p.gallery_latlon[j].copy()),
            "city": p.gallery_city[j],
        }


class UpstreamViews(Dataset):
    """A CVUSA / CVACT / VIGOR dataset whose images are read with the upstream pipeline.

    Samples are the wrapped dataset's (``id`` and the extras: ``latlon``, ``utm``, VIGOR's positives...)
    with ``ground`` and ``aerial`` from :func:`read_upstream` (normalised model inputs). Every other
    attribute (``ids``, ``utm``, ``positives``, ...) is the wrapped dataset's; a VIGOR ``gallery`` is
    wrapped too.

    Args:
        dataset: a :class:`~geo_bench.datasets.base.CrossViewDataset` read from its image files (not
            from a ``prepare`` cache).
        preprocessing: the manifest's upstream preprocessing.
        polar_maps: a folder of polar maps made beforehand (``<aerial file stem>.png``, e.g. the authors'
            released ``polarmap/19``), read as upstream's loader reads them instead of rendering the
            manifest's preset (polar manifests only).
        ground_shifts: one right roll (columns) per query panorama, in dataset order, applied to the
            model input (DSM's test-time roll, :func:`upstream_roll_shifts`); None: no roll.
        attention_maps: a manifest with ``aerial_tokens`` (TransGeo stage 2): the folder of stage-1
            attention maps ``<index>.png``, index = the reference's position (CVUSA / CVACT: the pair's
            index in dataset order; VIGOR: the gallery tile's), e.g. ``attention/val`` of the released
            model archive; each aerial input then gets the keep-order channel (:func:`with_kept_tokens`).
    """

    def __init__(
        self,
        dataset: Any,
        preprocessing: UpstreamPreprocessing,
        *,
        polar_maps: str | os.PathLike[str] | None = None,
        ground_shifts: Sequence[int] | None = None,
        attention_maps: str | os.PathLike[str] | None = None,
    ) -> None:
        for attr in ("_ground_path", "_aerial_path", "ids"):
            if not hasattr(dataset, attr):
                raise TypeError(
                    f"upstream preprocessing reads image files: {type(dataset).__name__} has no {attr}"
                )
        if getattr(dataset, "_cache", None) is not None:
            raise ValueError(
                "upstream preprocessing reads the image files, not a prepare cache: drop --cache, "
                "or pass --preprocess ours"
            )
        if polar_maps is not None:
            if preprocessing.polar is None:
                raise ValueError(
                    "polar maps were given, but this checkpoint's upstream code reads raw aerials"
                )
            if not Path(polar_maps).is_dir():
                raise FileNotFoundError(f"polar map folder not found: {os.fspath(polar_maps)!r}")
            if hasattr(dataset, "gallery_ids"):
                raise ValueError("polar maps are read for CVUSA / CVACT, not for a VIGOR gallery")
        if preprocessing.aerial_tokens is not None and attention_maps is None:
            raise ValueError(
                "this checkpoint's upstream evaluation keeps the aerial patches that stage-1 attention maps rank "
                "highest (TransGeo stage 2): pass --attention-maps DIR (attention/val/<index>.png of the released "
                "model archive, written by the stage-1 scan), or --preprocess ours to encode every patch"
            )
        if attention_maps is not None:
            if preprocessing.aerial_tokens is None:
                raise ValueError(
                    "attention maps were given, but this checkpoint's upstream code encodes every patch"
                )
            if not Path(attention_maps).is_dir():
                raise FileNotFoundError(f"attention map folder not found: {os.fspath(attention_maps)!r}")
        if ground_shifts is not None and len(ground_shifts) != len(dataset):
            raise ValueError(f"ground_shifts has {len(ground_shifts)} entries for {len(dataset)} queries")
        self.dataset = dataset
        self.preprocessing = preprocessing
        self.polar_maps = Path(polar_maps) if polar_maps is not None else None
        self.ground_shifts = tuple(int(v) for v in ground_shifts) if ground_shifts is not None else None
        self.attention_maps = Path(attention_maps) if attention_maps is not None else None
        self.gallery = (
            _UpstreamGallery(dataset, preprocessing, self.attention_maps)
            if hasattr(dataset, "gallery_ids")
            else None
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "preprocessing", "gallery", "polar_maps", "ground_shifts", "attention_maps"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _aerial_index(self, i: int) -> int:
        tiles = getattr(self.dataset, "_tiles", None)
        return int(tiles[i, 0]) if tiles is not None else i  # VIGOR: the query's positive tile

    def _aerial_file(self, i: int) -> Path:
        return Path(self.dataset._aerial_path(self._aerial_index(i)))

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range ({n} samples)")
        i = i % n
        ground = read_upstream(self.dataset._ground_path(i), "ground", self.preprocessing)
        if self.ground_shifts is not None:
            ground = torch.roll(ground, self.ground_shifts[i], dims=-1)  # column j <- (j - shift) mod W
        if self.polar_maps is not None:
            suffix = str((self.preprocessing.polar or {}).get("map_suffix", ".png"))
            polar_map = self.polar_maps / (self._aerial_file(i).stem + suffix)
            aerial = read_upstream(polar_map, "polar_map", self.preprocessing)
        else:
            aerial = read_upstream(self._aerial_file(i), "aerial", self.preprocessing)
        if self.attention_maps is not None and self.preprocessing.aerial_tokens is not None:
            att = read_attention_map(self.attention_maps / f"{self._aerial_index(i)}.png")
            aerial = with_kept_tokens(aerial, att, self.preprocessing.aerial_tokens)
        sample: dict[str, Any] = {"ground": ground, "aerial": aerial, "id": self.dataset.ids[i]}
        sample.update(self.dataset._extra(i))
        return sample

    @property
    def protocol(self) -> dict[str, Any]:
        """The wrapped dataset's protocol with the sizes, crop and interpolation that ran."""
        info = dict(self.dataset.protocol)
        pre = self.preprocessing
        info.update(
            {
                "ground_size": list(pre.ground_size),
                "aerial_size": list(pre.aerial_size),
                "polar": pre.polar or False,
                "ground_crop": list(pre.ground_crop) if pre.ground_crop else None,
                "interpolation": f"{pre.reader}:{pre.resize}",
            }
        )
        if self.polar_maps is not None:
            info["polar_maps"] = self.polar_maps.name
        if self.attention_maps is not None:
            info["attention_maps"] = self.attention_maps.name
        if self.ground_shifts is not None:
            info["ground_shifts_sha256"] = hashlib.sha256(
                json.dumps(self.ground_shifts).encode()
            ).hexdigest()[:16]
        return info
