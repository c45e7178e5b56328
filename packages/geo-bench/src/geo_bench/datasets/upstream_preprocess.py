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
    - ``"pil"`` (TransGeo): ``PIL.Image.open(path).convert("RGB")`` -> optional row crop as above ->
      ``Image.resize((W, H), resample)`` with the manifest's resampling (``PIL.Image.BILINEAR``, what
      torchvision's ``Resize`` calls on a PIL image) -> uint8 -> float32 ``/ 255`` (``ToTensor``) ->
      ``(x - mean) / std`` with float32 mean and std (``Normalize``) -> (3, H, W). Tested against
      pixels made by TransGeo's own code (``tests/data/upstream/transgeo``).
    - Every other choice of the dataset loaders (their sizes, their panorama crop, a ``prepare`` cache)
      is bypassed; only the file paths, ids and labels of the dataset are used.
    - Not re-exported by :mod:`geo_bench.datasets` (it imports OpenCV and :mod:`geo_retrieval.convert`,
      which the datasets themselves never need); import it from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from geo_retrieval.convert import UpstreamPreprocessing
from geo_transforms.presets import apply_polar_preset, get_polar_preset
from geo_transforms.registry import Registry

from .errors import ImageDecodeError

__all__ = [
    "INTERPOLATIONS",
    "PIL_RESAMPLING",
    "READERS",
    "UpstreamViews",
    "read_upstream",
    "register_reader",
    "upstream_protocol",
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


def _size(preprocessing: UpstreamPreprocessing, view: str) -> tuple[int, int]:
    if view == "ground":
        return preprocessing.ground_size
    if view == "aerial":
        return preprocessing.aerial_size
    raise ValueError(f"view must be 'ground' or 'aerial', got {view!r}")


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


@register_reader("opencv")
def _read_opencv(path: Path, view: str, preprocessing: UpstreamPreprocessing) -> Tensor:
    """Sample4Geo's pipeline (see the module Convention)."""
    if preprocessing.polar is not None:
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
    """TransGeo's pipeline: Pillow and torchvision's ``Resize`` / ``ToTensor`` / ``Normalize`` (see the
    module Convention)."""
    if preprocessing.polar is not None:
        raise ValueError("the pil reader has no polar transform; this manifest needs another reader")
    h, w = _size(preprocessing, view)
    resample = PIL_RESAMPLING.get(preprocessing.resize)
    if resample is None:
        raise ValueError(f"unknown resize {preprocessing.resize!r}; known: {sorted(PIL_RESAMPLING)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file not found: {os.fspath(path)!r}")
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageDecodeError(
            f"cannot decode image {path} with Pillow ({exc}); re-download or remove it", path=path
        ) from None
    if view == "ground" and preprocessing.ground_crop is not None:
        a, b = preprocessing.ground_crop
        img = img.crop((0, int(a * img.height), img.width, int(b * img.height)))
    img = img.resize((int(w), int(h)), getattr(Image.Resampling, resample))
    x = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(preprocessing.max_pixel_value)
    mean = torch.as_tensor(preprocessing.mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(preprocessing.std, dtype=torch.float32)[:, None, None]
    return x.sub_(mean).div_(std)


@register_reader("opencv_torchvision")
def _read_opencv_torchvision(path: Path, view: str, preprocessing: UpstreamPreprocessing) -> Tensor:
    """Toker et al.'s pipeline (see the module Convention)."""
    h, w = _size(preprocessing, view)
    interpolation = _cv2_interpolation(preprocessing)
    img = _cv2_rgb(path)
    if view == "aerial" and preprocessing.polar is not None:
        preset = get_polar_preset(str(preprocessing.polar["preset"]))
        if tuple(preset.out_size) != (h, w):
            raise ValueError(
                f"polar preset {preset.identifier} renders {preset.out_size[0]}x{preset.out_size[1]}, but the model "
                f"takes {h}x{w} aerials: this converted folder can only run with --preprocess ours"
            )
        if img.shape[0] != img.shape[1]:
            raise ValueError(f"{path}: the polar preset needs a square aerial image, got {img.shape[:2]}")
        raw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(torch.float64)
        polar = apply_polar_preset(raw, preset)[0].numpy()  # 0-255 scale, (3, H, W)
        x = polar.astype(np.float32)
    else:
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
        view: ``"ground"`` or ``"aerial"`` (chooses the size and the crop).
        preprocessing: the manifest's upstream preprocessing.

    Raises:
        ValueError: an unknown reader or resize method.
        FileNotFoundError, ImageDecodeError: a missing or undecodable file (named).
    """
    return READERS.get(preprocessing.reader)(Path(path), view, preprocessing)


def upstream_protocol(preprocessing: UpstreamPreprocessing) -> dict[str, Any]:
    """What a result record says about the preprocessing that ran (no provenance text)."""
    d = preprocessing.to_dict()
    d.pop("code", None)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


class _UpstreamGallery(Dataset):
    """A VIGOR gallery read with the upstream pipeline (``{"aerial", "id", "latlon", "city"}``)."""

    def __init__(self, parent: Any, preprocessing: UpstreamPreprocessing) -> None:
        self.parent, self.preprocessing = parent, preprocessing
        self.ids = list(parent.gallery_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, j: int) -> dict[str, Any]:
        p = self.parent
        return {
            "aerial": read_upstream(p._aerial_path(j), "aerial", self.preprocessing),
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
    """

    def __init__(self, dataset: Any, preprocessing: UpstreamPreprocessing) -> None:
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
        self.dataset = dataset
        self.preprocessing = preprocessing
        self.gallery = _UpstreamGallery(dataset, preprocessing) if hasattr(dataset, "gallery_ids") else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "preprocessing", "gallery"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _aerial_file(self, i: int) -> Path:
        tiles = getattr(self.dataset, "_tiles", None)
        j = int(tiles[i, 0]) if tiles is not None else i  # VIGOR: the query's positive tile
        return Path(self.dataset._aerial_path(j))

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range ({n} samples)")
        i = i % n
        sample: dict[str, Any] = {
            "ground": read_upstream(self.dataset._ground_path(i), "ground", self.preprocessing),
            "aerial": read_upstream(self._aerial_file(i), "aerial", self.preprocessing),
            "id": self.dataset.ids[i],
        }
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
        return info
