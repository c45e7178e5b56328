"""CVACT (Liu & Li, CVPR'19): Canberra street panoramas paired with 1200x1200 aerials.

Convention:

- ``split="train"`` = ``trainSet.trainInd`` and ``"val"`` = ``valSet.valInd`` (CVACT_val), files under
  ``ANU_data_small/``; ``"test"`` = ``valSetAll.valInd`` (CVACT_test), files under ``ANU_data_test/``.
- ``ACT_data.mat`` is read with :func:`scipy.io.loadmat`; struct fields are read **by name**.
  ``panoIds[k]`` names the files ``streetview/<panoId>_grdView.jpg`` and
  ``satview_polish/<panoId>_satView_polish.jpg``.
- Index vectors: the official files hold 1-based MATLAB indices; re-saved copies are sometimes
  0-based. The base is decided once per file, from all its index vectors together (N =
  ``len(panoIds)``): an index N can only be 1-based, an index 0 only 0-based; both at once is
  refused. With neither (ambiguous), the official convention, 1-based, is assumed with a
  ``UserWarning``. Non-integer indices (fractions, NaN) and indices outside 0..N are refused
  (:class:`~geo_bench.datasets.errors.DatasetFormatError` naming the file, the vector and the
  value); they are never truncated.
- ``"utm"`` is float64 (easting, northing) in metres (float32 would round northings near 6.1e6 m
  to ~0.5 m).
- Panorama crop, ``crop="middle_half"`` (default): keep rows [floor(H/4), floor(3H/4)) = [208, 624)
  of 832 before resizing (SAFA/DSM data preparation, Toker, TransGeo); ``crop=None`` keeps the
  whole panorama (Sample4Geo).
- Some ids have no image files: ``on_missing="raise"`` (default) names them; ``"skip"`` drops them
  with a warning and counts them in ``.missing``. ``len(ds)`` (N) is always reported in
  ``protocol``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.io
import torch

from .base import CrossViewDataset
from .errors import DatasetFormatError

__all__ = ["CVACT", "read_act_data"]

_SPLIT_FIELDS: dict[str, tuple[str, str, str]] = {
    # split -> (struct, field, image folder)
    "train": ("trainSet", "trainInd", "ANU_data_small"),
    "val": ("valSet", "valInd", "ANU_data_small"),
    "test": ("valSetAll", "valInd", "ANU_data_test"),
}
_CROPS: dict[str, tuple[float, float] | None] = {"middle_half": (0.25, 0.75), "none": None}


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, ... for a damaged file
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the file system's error (missing file, permission), not the file's content
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatasetFormatError(
            f"cannot read {path} with scipy.io.loadmat: {reason}; expected a MATLAB .mat file "
            "(re-download it)",
            path=path,
        ) from None


def _strings(arr: np.ndarray) -> list[str]:
    """``panoIds`` as Python strings, whether stored as a char matrix or a cell array."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "U":
        return [str(s).rstrip() for s in arr.ravel()]
    out = []
    for item in arr.ravel():
        item = np.asarray(item)
        out.append(str(item.ravel()[0]).rstrip() if item.size else "")
    return out


def _index_vector(path: Path, name: str, raw: Any, n: int) -> np.ndarray:
    """The index vector ``name`` as int64, refusing non-integer values and values outside 0..n."""
    values = np.asarray(raw).ravel()
    if values.dtype.kind not in "iuf":
        raise DatasetFormatError(
            f"{path}: {name} must hold numeric row indices into panoIds, got dtype {values.dtype}", path=path
        )
    if values.dtype.kind == "f":
        bad = values[~np.isfinite(values) | (values != np.round(values))]
        if bad.size:
            raise DatasetFormatError(
                f"{path}: {name} holds {bad.size} value(s) that are not an integer index, first "
                f"{float(bad[0])!r}; expected whole-number row indices into panoIds",
                path=path,
            )
    ind = values.astype(np.int64)
    bad = ind[(ind < 0) | (ind > n)]
    if bad.size:
        raise DatasetFormatError(
            f"{path}: {name} holds {bad[:5].tolist()} outside 1..{n} (1-based) and 0..{n - 1} (0-based), "
            f"N = len(panoIds) = {n}",
            path=path,
        )
    return ind


def _index_base(path: Path, vectors: dict[str, np.ndarray], n: int) -> int:
    """0 or 1: the base of the file's index vectors (see the module docstring)."""
    zero = [name for name, v in vectors.items() if (v == 0).any()]
    top = [name for name, v in vectors.items() if (v == n).any()]
    if zero and top:
        raise DatasetFormatError(
            f"{path}: the index vectors hold both 0 and {n} = len(panoIds) ({zero[0]} holds 0, {top[0]} "
            f"holds {n}), so they are neither 0-based nor 1-based",
            path=path,
        )
    if zero:
        return 0
    if not top and vectors:
        warnings.warn(
            f"{path}: the index vectors ({', '.join(vectors)}) hold neither 0 nor {n} = len(panoIds), so "
            "they could be 0- or 1-based; assuming 1-based, the convention of the official MATLAB file",
            UserWarning,
            stacklevel=3,
        )
    return 1


def read_act_data(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``ACT_data.mat``: ``panoIds`` (list of str), ``utm`` (N, 2) float64, the 0-based
    index arrays ``train``, ``val``, ``test`` (from ``trainSet.trainInd``, ``valSet.valInd``,
    ``valSetAll.valInd``; None for an absent struct) and ``index_base``, the base (0 or 1) the file's
    vectors were found to use (see the module docstring: decided from all vectors together, 1-based
    with a warning when ambiguous).

    Raises:
        DatasetFormatError: the file cannot be read, a variable, struct or field is absent (lists
            those present), ``utm`` does not match ``panoIds``, an index is not an integer or out
            of range, or the vectors mix 0- and 1-based evidence.
    """
    path = Path(path)
    m = _loadmat(path)
    for key in ("panoIds", "utm"):
        if key not in m:
            raise DatasetFormatError(
                f"{path}: no variable {key!r}; variables: {sorted(k for k in m if not k.startswith('__'))}",
                path=path,
            )
    ids = _strings(m["panoIds"])
    utm = np.asarray(m["utm"], dtype=np.float64)
    if utm.ndim != 2 or utm.shape != (len(ids), 2):
        raise DatasetFormatError(
            f"{path}: utm must be ({len(ids)}, 2) to match panoIds, got {utm.shape}", path=path
        )
    vectors: dict[str, np.ndarray] = {}
    for struct, field, _ in _SPLIT_FIELDS.values():
        if struct not in m:
            continue
        s = m[struct]
        names = s.dtype.names or ()
        if field not in names:
            raise DatasetFormatError(
                f"{path}: struct {struct!r} has no field {field!r}; fields: {list(names)}", path=path
            )
        name = f"{struct}.{field}"
        vectors[name] = _index_vector(path, name, s[field].ravel()[0], len(ids))
    base = _index_base(path, vectors, len(ids))
    out: dict[str, Any] = {"panoIds": ids, "utm": utm, "index_base": base}
    for split, (struct, field, _) in _SPLIT_FIELDS.items():
        ind = vectors.get(f"{struct}.{field}")
        out[split] = None if ind is None else ind - base
    return out


class CVACT(CrossViewDataset):
    """CVACT ground-to-aerial pairs (CVACT_val and CVACT_test).

    Args:
        root: dataset root (holds ``ACT_data.mat``, ``ANU_data_small/``, ``ANU_data_test/``).
        split: ``"train"``, ``"val"`` (CVACT_val) or ``"test"`` (CVACT_test).
        transforms: callable on the whole sample dict.
        ground_size: panorama output (H, W) after the crop; default (112, 616); None = native.
        aerial_size: raw aerial output (h, w); default (256, 256); None keeps 1200x1200.
        polar: ``False``, ``True`` (at ``ground_size``), ``"safa"``/``"dsm"``, ``"HxW"`` or (H, W),
            computed from the 1200x1200 aerial with :func:`geo_transforms.polar_transform`.
        polar_center: ``"safa"`` or ``"pixel"``.
        crop: ``"middle_half"`` (default), ``None`` (no crop), or (top, bottom) row fractions.
        cache, cache_verify: see :class:`~geo_bench.datasets.CVUSA`.
        on_missing: ``"raise"`` or ``"skip"`` (see the module docstring).

    Sample keys: ``ground``, ``aerial``, ``id`` (panoId), ``utm`` (float64 (2,), easting, northing).
    No ``yaw`` is returned: the reference notes do not state the panoramas' orientation.

    .. versionadded:: 0.1
    """

    name: ClassVar[str] = "CVACT"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    # 832 rows (reference notes); equirectangular, so 2:1 (1664 wide is commonly cited)
    native_ground: ClassVar[tuple[int, int] | None] = (832, 1664)
    native_aerial: ClassVar[tuple[int, int] | None] = (1200, 1200)
    layout: ClassVar[str] = """\
  <root>/ACT_data.mat                 panoIds, utm, trainSet.trainInd, valSet.valInd, valSetAll.valInd
  <root>/ANU_data_small/streetview/<panoId>_grdView.jpg               train + val panoramas
  <root>/ANU_data_small/satview_polish/<panoId>_satView_polish.jpg    train + val aerials, 1200x1200
  <root>/ANU_data_test/streetview/<panoId>_grdView.jpg                CVACT_test panoramas
  <root>/ANU_data_test/satview_polish/<panoId>_satView_polish.jpg     CVACT_test aerials"""

    def __init__(
        self,
        root: str | os.PathLike[str] = "data",
        split: str = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        ground_size: Sequence[int] | int | str | None = (112, 616),
        aerial_size: Sequence[int] | int | str | None = (256, 256),
        polar: bool | str | Sequence[int] | None = False,
        polar_center: str = "safa",
        crop: str | tuple[float, float] | None = "middle_half",
        cache: str | os.PathLike[str] | None = None,
        cache_verify: str = "lazy",
        on_missing: str = "raise",
    ) -> None:
        self._init_common(root, split, transforms, ground_size, aerial_size, polar, polar_center, on_missing)
        if crop is None or isinstance(crop, str):
            key = "none" if crop is None else crop
            if key not in _CROPS:
                raise ValueError(f"crop must be 'middle_half', None or (top, bottom) fractions, got {crop!r}")
            self.crop = None if crop is None else crop
            self.ground_crop = _CROPS[key]
        else:
            top, bottom = (float(c) for c in crop)
            if not 0.0 <= top < bottom <= 1.0:
                raise ValueError(f"crop fractions must satisfy 0 <= top < bottom <= 1, got {crop!r}")
            self.crop = f"rows[{top:g}H,{bottom:g}H)"
            self.ground_crop = (top, bottom)
        struct, field, folder = _SPLIT_FIELDS[split]
        self.index_field = f"{struct}.{field}"
        self.folder = folder
        mat = read_act_data(self._require(self.root / "ACT_data.mat", "the metadata file"))
        self.index_base: int = mat["index_base"]
        ind = mat[split]
        if ind is None:
            raise DatasetFormatError(
                f"{self.root / 'ACT_data.mat'}: no struct {struct!r}, needed for split {split!r}",
                path=self.root / "ACT_data.mat",
            )
        if cache is None:  # with a cache the images are not needed
            self._require(self.root / folder, f"the image folder of split {split!r}")
        all_ids = [mat["panoIds"][k] for k in ind]

        def paths_of(i: int) -> list[Path]:
            return [self._paths(all_ids[i])[0], self._paths(all_ids[i])[1]]

        keep = self._select(all_ids, paths_of, cache, cache_verify)
        self.indices = ind[keep]  # 0-based rows of panoIds / utm
        self.ids = [all_ids[k] for k in keep]
        self.utm = mat["utm"][self.indices]

    def _paths(self, pano_id: str) -> tuple[Path, Path]:
        base = self.root / self.folder
        return (
            base / "streetview" / f"{pano_id}_grdView.jpg",
            base / "satview_polish" / f"{pano_id}_satView_polish.jpg",
        )

    def _config(self) -> dict[str, Any]:
        return {"crop": self.crop, "index_field": self.index_field, "folder": self.folder}

    def _ground_path(self, i: int) -> Path:
        return self._paths(self.ids[i])[0]

    def _aerial_path(self, i: int) -> Path:
        return self._paths(self.ids[i])[1]

    def _extra(self, i: int) -> dict[str, Any]:
        return {"utm": torch.from_numpy(self.utm[i].copy())}
