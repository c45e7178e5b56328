"""CVUSA (the "CVPR subset" of ``viibridges/crossnet``): street panoramas paired with Bing tiles.

Convention: ``split="train"`` reads ``splits/train-19zl.csv`` (35,532 pairs); ``"val"`` and its
alias ``"test"`` read ``splits/val-19zl.csv`` (8,884 pairs, the standard test set: CVUSA has no
separate validation split). CSV rows are headerless ``aerial,panorama,annotation`` relative paths;
whitespace is stripped; the sample id is the file stem of column 0. Exact repeats of a row are
dropped with one warning (each pair is kept once); two different rows with one id are refused.
Images are expected at the released sizes' aspect ratios (panoramas 1232x224, aerials square): others
are still resized, with one warning (see :mod:`geo_bench.datasets.base`). Panoramas are not cropped
(1232x224 W x H, full 360 degrees, north at the centre column, so ``"yaw"`` is 0). GPS comes from
``split_locations/all.csv`` when present (row ``id - 1`` belongs to image ``id``).

CVUSA is licence-gated (released on request), so there is no ``download``; point ``root`` at the
folder holding ``bingmap/``, ``streetview/`` and ``splits/``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .base import CrossViewDataset
from .errors import DatasetFormatError
from .image_io import read_rgb, resize_uint8
from .splits import warn_repeats

__all__ = ["CVUSA", "read_cvusa_split"]

_CVUSA_SPLITS = ("orig", "geodtr_clean", "custom")


def read_cvusa_split(path: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """Rows ``(aerial, panorama, annotation)`` of a CVUSA split CSV (headerless, 3 columns).

    Exact repeats of a row (after stripping whitespace) are dropped, keeping the first, with one
    ``UserWarning`` naming the file, the count and the first repeat: a repeated pair would put a
    second copy of its aerial in the gallery (a tie with the true match) and make the sample ids,
    which the ``prepare`` cache lists, ambiguous.

    Raises:
        DatasetFormatError: a row without 3 columns, or two different rows with the same sample id
            (the file stem of column 0); the message names the file and line(s).
    """
    rows: list[tuple[str, str, str]] = []
    first_line: dict[str, tuple[int, tuple[str, str, str]]] = {}  # sample id -> (line, row)
    repeats: list[tuple[int, int, str]] = []
    with open(path, newline="") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            cols = [c.strip() for c in line.split(",")]
            if len(cols) < 3 or not all(cols[:3]):
                raise DatasetFormatError(
                    f"{path}:{lineno}: expected 3 comma-separated paths, got {line.strip()!r}",
                    path=path,
                    line=lineno,
                )
            row = (cols[0], cols[1], cols[2])
            sid = Path(row[0]).stem
            if sid in first_line:
                first, other = first_line[sid]
                if other != row:
                    raise DatasetFormatError(
                        f"{path}:{lineno}: sample id {sid!r} (the file stem of the aerial, first column) is already on line "
                        f"{first} with other files ({','.join(other)!r}); each id must name one pair",
                        path=path,
                        line=lineno,
                    )
                repeats.append((lineno, first, ",".join(row)))
                continue
            first_line[sid] = (lineno, row)
            rows.append(row)
    warn_repeats(Path(path), repeats)
    return rows


class CVUSA(CrossViewDataset):
    """CVUSA ground-to-aerial pairs.

    Args:
        root: dataset root (holds ``bingmap/19``, ``streetview/panos``, ``splits``).
        split: ``"train"``, ``"val"`` or ``"test"`` (alias of ``"val"``).
        transforms: callable on the whole sample dict.
        ground_size: panorama output (H, W); default (112, 616) (SAFA/Toker); None keeps 224x1232.
        aerial_size: raw aerial output (h, w); default (256, 256); None keeps 750x750.
        polar: ``False`` (raw aerial), ``True`` (polar at ``ground_size``), ``"safa"``/``"dsm"``,
            ``"HxW"`` or (H, W); computed on the fly from the 750x750 tile with
            :func:`geo_transforms.polar_transform`.
        polar_center: ``"safa"`` (S/2) or ``"pixel"`` ((S-1)/2).
        split_file: a CSV in the same format to use instead of the official one (e.g. GeoDTR's
            cleaned ``train``/``val`` CSVs); paths are relative to ``root``.
        cvusa_split: the name recorded in ``protocol`` (``"orig"``, ``"geodtr_clean"``,
            ``"custom"``); default ``"orig"`` without ``split_file``, ``"custom"`` with one.
        ground_seg: also return the panorama's annotation (``streetview/annotations``), resized
            with nearest neighbour: as ``"ground_seg"`` (H, W) long when ``seg_palette`` is given
            (index of the exact RGB colour in the palette, -1 for other colours), otherwise as
            ``"ground_seg_rgb"`` (3, H, W) uint8 colours.
        seg_palette: RGB colours of the annotation classes, in class order.
        cache: a ``prepare`` cache root or entry to read the ground/aerial views from (the
            annotations are still read from ``root``).
        cache_verify: ``"lazy"``, ``"full"`` or ``"meta"`` (see :mod:`geo_bench.datasets.cache`).
        on_missing: ``"raise"`` (default) or ``"skip"`` samples whose files are missing.

    Sample keys: ``ground`` (3, H, W) float, ``aerial`` (3, h, w) float, ``id`` (str, e.g.
    ``"0000001"``), ``yaw`` (0.0), and when ``split_locations/all.csv`` exists ``latlon``
    (ground lat, lon, float64 (2,)) and ``aerial_latlon`` (float64 (2,)).

    Example:
        >>> ds = CVUSA("data/CVUSA", "test", polar="safa")  # needs the dataset on disk  # doctest: +SKIP
        >>> ds[0]["aerial"].shape  # doctest: +SKIP
        torch.Size([3, 112, 616])

    .. versionadded:: 0.1
    """

    name: ClassVar[str] = "CVUSA"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    native_ground: ClassVar[tuple[int, int] | None] = (224, 1232)
    native_aerial: ClassVar[tuple[int, int] | None] = (750, 750)
    split_files: ClassVar[dict[str, str]] = {
        "train": "train-19zl.csv",
        "val": "val-19zl.csv",
        "test": "val-19zl.csv",
    }
    layout: ClassVar[str] = """\
  <root>/bingmap/19/<id>.jpg                  aerial, 750x750
  <root>/streetview/panos/<id>.jpg            panorama, 224x1232 (H x W)
  <root>/streetview/annotations/<id>.png      (optional) panorama annotation
  <root>/splits/train-19zl.csv, val-19zl.csv  headerless 'aerial,panorama,annotation' rows
  <root>/split_locations/all.csv              (optional) GPS"""

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
        split_file: str | os.PathLike[str] | None = None,
        cvusa_split: str | None = None,
        ground_seg: bool = False,
        seg_palette: Sequence[Sequence[int]] | None = None,
        cache: str | os.PathLike[str] | None = None,
        cache_verify: str = "lazy",
        on_missing: str = "raise",
    ) -> None:
        self._init_common(root, split, transforms, ground_size, aerial_size, polar, polar_center, on_missing)
        if cvusa_split is None:
            cvusa_split = "orig" if split_file is None else "custom"
        if cvusa_split not in _CVUSA_SPLITS:
            raise ValueError(f"cvusa_split must be one of {_CVUSA_SPLITS}, got {cvusa_split!r}")
        if cvusa_split == "orig" and split_file is not None:
            raise ValueError("cvusa_split='orig' reads the official CSV; drop split_file or name it 'custom'")
        self.cvusa_split = cvusa_split
        if split_file is None:
            self.split_file = self._require(
                self.root / "splits" / self.split_files[split], "official split CSV"
            )
        else:
            self.split_file = Path(split_file)
            if not self.split_file.is_file():
                raise FileNotFoundError(f"CVUSA split_file not found: {str(self.split_file)!r}")
        self.ground_seg = bool(ground_seg)
        self.seg_palette = (
            None if seg_palette is None else np.asarray(seg_palette, dtype=np.int64).reshape(-1, 3)
        )

        rows = read_cvusa_split(self.split_file)
        all_ids = [Path(r[0]).stem for r in rows]

        def paths_of(i: int) -> list[Path]:
            a, g, s = rows[i]
            return [self.root / a, self.root / g] + ([self.root / s] if self.ground_seg else [])

        keep = self._select(all_ids, paths_of, cache, cache_verify)
        self.rows = [rows[k] for k in keep]
        self.ids = [all_ids[k] for k in keep]
        self._gps = self._read_gps()

    def _config(self) -> dict[str, Any]:
        return {"cvusa_split": self.cvusa_split, "split_file": self.split_file.name}

    def cache_config(self) -> dict[str, Any]:
        # "test" is an alias of "val": both read val-19zl.csv and share one cache entry
        return {**super().cache_config(), "split": "val" if self.split == "test" else self.split}

    def _read_gps(self) -> np.ndarray | None:
        path = self.root / "split_locations" / "all.csv"
        if not path.is_file():
            return None
        rows = []
        with open(path, newline="") as fh:
            for lineno, rec in enumerate(csv.reader(fh), 1):
                if not rec:
                    continue
                try:
                    rows.append([float(v) for v in rec[:4]])
                except ValueError:
                    raise DatasetFormatError(
                        f"{path}:{lineno}: expected sat_lat,sat_long,ground_lat,ground_long numbers, "
                        f"got {','.join(rec)!r}",
                        path=path,
                        line=lineno,
                    ) from None
        gps = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        for sid in self.ids:
            if not sid.isdigit() or not 1 <= int(sid) <= len(gps):
                raise DatasetFormatError(
                    f"{path} has {len(gps)} rows, no row for image id {sid!r} (row id - 1)", path=path
                )
        return gps

    def _ground_path(self, i: int) -> Path:
        return self.root / self.rows[i][1]

    def _aerial_path(self, i: int) -> Path:
        return self.root / self.rows[i][0]

    def annotation_path(self, i: int) -> Path:
        """Path of sample ``i``'s annotation PNG (column 2 of the CSV)."""
        return self.root / self.rows[i][2]

    def _extra(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"yaw": 0.0}
        if self._gps is not None:
            row = self._gps[int(self.ids[i]) - 1]
            out["latlon"] = torch.from_numpy(row[2:4].copy())
            out["aerial_latlon"] = torch.from_numpy(row[0:2].copy())
        if self.ground_seg:
            seg = resize_uint8(
                read_rgb(self.annotation_path(i), sample=self.ids[i]), self.ground_size, nearest=True
            )
            if self.seg_palette is None:
                out["ground_seg_rgb"] = seg
            else:
                code = (seg[0].long() << 16) | (seg[1].long() << 8) | seg[2].long()
                pal = torch.from_numpy(
                    (self.seg_palette[:, 0] << 16) | (self.seg_palette[:, 1] << 8) | self.seg_palette[:, 2]
                )
                match = code[..., None] == pal
                out["ground_seg"] = torch.where(
                    match.any(-1), match.float().argmax(-1), torch.full_like(code, -1)
                )
        return out
