"""The base class of the cross-view datasets, and their shared conventions.

The pieces it builds on each have their module: :mod:`~geo_bench.datasets.errors`,
:mod:`~geo_bench.datasets.image_io` (decode, crop, resize, polar), :mod:`~geo_bench.datasets.options`
(sizes and ``polar=``), :mod:`~geo_bench.datasets.splits` (split-file helpers) and
:mod:`~geo_bench.datasets.cache` (the ``prepare`` cache, which sees a dataset only through
:class:`~geo_bench.datasets.cache.CacheableDataset`).

Convention (every dataset of :mod:`geo_bench.datasets`):

- Images are decoded with Pillow and converted to RGB.
- Resizing uses Pillow's ``Image.resize(..., Image.BILINEAR)``: a triangle filter whose support
  widens with the downscale factor, i.e. *antialiased* bilinear (the same family as torch's
  ``interpolate(mode="bilinear", antialias=True)``; values differ by rounding only). The result is
  uint8, so samples loaded from the raw files and from a ``prepare`` cache are bit-identical.
- Polar aerials are computed from the *full-resolution* decoded aerial with
  :func:`geo_transforms.polar_transform` (bilinear, ``align_corners=True``, SAFA geometry:
  row 0 = outer ring, centre column = north, clockwise sweep), then rounded to uint8 like every
  other view, as SAFA's precomputed maps were.
- Samples are dicts: ``"ground"`` (3, H, W) float32 in [0, 1], ``"aerial"`` (3, h, w) float32 in
  [0, 1], ``"id"`` (str), plus what the dataset has. ``transforms`` receives the whole dict.
- Damaged files (see :mod:`geo_bench.datasets.errors`): an image that cannot be decoded raises
  :class:`~geo_bench.datasets.errors.ImageDecodeError` naming the file and the sample; a non-square
  aerial under ``polar=`` raises :class:`~geo_bench.datasets.errors.DatasetFormatError` naming the
  file and the sizes. An image whose aspect ratio (W / H) differs by more than
  :data:`ASPECT_TOLERANCE` from the released files' (``native_ground`` / ``native_aerial``, e.g.
  CVUSA's 1232x224 panoramas) is still resized (so stretched) to the requested size, with one
  ``UserWarning`` per dataset and view naming the first such file; ``.aspect_mismatches`` counts
  them as they are read and ``prepare`` reports the total. (A DataLoader worker holds its own copy
  of the dataset, so each worker may warn once.)
- Exact repeats in a split file are dropped with one ``UserWarning`` per file (naming it, the count
  and the first repeat), so every sample and gallery item appears once: a repeated pair would add a
  copy of its reference to the gallery (a tie with the true match) and break the cache's id list.
  Two *different* rows for one sample id are refused (:class:`DatasetFormatError`).

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from .cache import CacheEntry, open_cache
from .errors import CacheError, DatasetFormatError, DatasetNotFoundError
from .image_io import INTERPOLATION, crop_to_rows, polar_uint8, read_rgb, resize_uint8, to_float
from .options import PolarSpec, parse_polar, parse_size

__all__ = ["ASPECT_TOLERANCE", "CrossViewDataset"]

ASPECT_TOLERANCE = 0.01
"""Relative tolerance on an image's aspect ratio against the dataset's native one (rounding of
pre-resized copies, e.g. 1231x224 for 1232x224); beyond it the loaders warn (see the module
docstring)."""


class CrossViewDataset(Dataset):
    """Base class of the cross-view datasets (see the module docstring for the conventions).

    Subclasses fill ``self.ids`` and the per-sample path lists, and implement
    :meth:`_ground_path`, :meth:`_aerial_path`, :meth:`_extra` and :meth:`_config`. A dataset is
    made of *views* (``"ground"``, ``"aerial"``), each a list of items that the ``prepare`` cache
    stores as one uint8 array; paired datasets (CVUSA, CVACT) have one aerial per query, VIGOR has a
    separate gallery.

    .. versionadded:: 0.1
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()
    layout: ClassVar[str] = ""
    #: (H, W) of the released panoramas / aerials: their aspect ratio is what the loader expects
    native_ground: ClassVar[tuple[int, int] | None] = None
    native_aerial: ClassVar[tuple[int, int] | None] = None
    default_ground_size: ClassVar[tuple[int, int] | None] = None
    default_aerial_size: ClassVar[tuple[int, int] | None] = None
    ground_crop: tuple[float, float] | None = None
    #: the sample ids, in order (filled by the subclass)
    ids: list[str]

    def _init_common(
        self,
        root: str | os.PathLike[str],
        split: str,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None,
        ground_size: Sequence[int] | int | str | None,
        aerial_size: Sequence[int] | int | str | None,
        polar: bool | str | Sequence[int] | None,
        polar_center: str,
        on_missing: str,
    ) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; valid splits: {list(self.splits)}")
        if on_missing not in ("raise", "skip"):
            raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be callable or None, got {type(transforms).__name__}")
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.ground_size = parse_size(ground_size, "ground_size")
        self.polar: PolarSpec | None = parse_polar(polar, self.ground_size, polar_center)
        self.aerial_size = (
            self.polar.size if self.polar is not None else parse_size(aerial_size, "aerial_size")
        )
        self.on_missing = on_missing
        self.missing = 0
        self._cache: CacheEntry | None = None
        self._aspect_seen: dict[str, set[int]] = {}
        if not self.root.is_dir():
            raise DatasetNotFoundError(self.name, self.root, self.root, self.layout)

    def _require(self, path: Path, what: str = "") -> Path:
        if not path.exists():
            hint = f"({what})" if what else ""
            raise DatasetNotFoundError(self.name, self.root, path, self.layout, hint)
        return path

    # -- views -------------------------------------------------------------------------------------
    def view_ids(self) -> dict[str, list[str]]:
        """The items of each stored view, in order (``"ground"``: queries, ``"aerial"``: aerials)."""
        return {"ground": list(self.ids), "aerial": list(self.ids)}

    def load_view(self, view: str, i: int) -> Tensor:
        """Item ``i`` of ``view`` as (3, H, W) uint8, processed (crop, resize, polar).

        Raises:
            ImageDecodeError: the image cannot be decoded (names the file and the sample).
            DatasetFormatError: a non-square aerial under ``polar=`` (names the file and sizes).
        """
        if self._cache is not None:
            return self._cache.get(view, i)
        if view == "ground":
            path = self._ground_path(i)
            img = read_rgb(path, sample=self._item_id(view, i))
            self._check_aspect(view, i, path, img)
            if self.ground_crop is not None:
                img = crop_to_rows(img, self.ground_crop)
            return resize_uint8(img, self.ground_size)
        if view == "aerial":
            path = self._aerial_path(i)
            img = read_rgb(path, sample=self._item_id(view, i))
            if self.polar is not None:
                if img.width != img.height:
                    native = self.native_aerial
                    expected = f" ({native[1]}x{native[0]} for {self.name})" if native else ""
                    raise DatasetFormatError(
                        f"aerial image {path} (sample {self._item_id(view, i)}) is {img.width}x{img.height} "
                        f"(W x H); polar= needs a square aerial{expected}",
                        path=path,
                    )
                return polar_uint8(img, self.polar)
            self._check_aspect(view, i, path, img)
            return resize_uint8(img, self.aerial_size)
        raise ValueError(f"unknown view {view!r}; views: {sorted(self.view_ids())}")

    def _item_id(self, view: str, i: int) -> str:
        """The id of item ``i`` of ``view``, named in messages (paired datasets: the query's id)."""
        return str(self.ids[i])

    @property
    def aspect_mismatches(self) -> dict[str, int]:
        """Per view, how many images read so far had another aspect ratio than the native files'."""
        return {view: len(seen) for view, seen in self._aspect_seen.items() if seen}

    def _check_aspect(self, view: str, i: int, path: Path, img) -> None:  # img: PIL.Image
        """Count (and warn on the first per view) an image whose aspect ratio is not the native one."""
        native = self.native_ground if view == "ground" else self.native_aerial
        if native is None:
            return
        expected, found = native[1] / native[0], img.width / img.height
        if abs(found / expected - 1.0) <= ASPECT_TOLERANCE:
            return
        seen = self._aspect_seen.setdefault(view, set())
        first = not seen
        seen.add(i)
        if first:
            size = self.ground_size if view == "ground" else self.aerial_size
            fate = (
                f"it is resized to {size[1]}x{size[0]} anyway, i.e. stretched"
                if size is not None
                else "it is kept at its size (size None)"
            )
            warnings.warn(
                f"{self.name} {self.split}: {view} image {path} (sample {self._item_id(view, i)}) is "
                f"{img.width}x{img.height} (W x H, aspect {found:.3g}), but {self.name} {view} images are "
                f"{native[1]}x{native[0]} (aspect {expected:.3g}); {fate}. Warned once per dataset and "
                f"view: .aspect_mismatches counts such images as they are read, `geo-bench prepare` "
                f"reports the total",
                UserWarning,
                stacklevel=4,
            )

    def _ground_path(self, i: int) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    def _aerial_path(self, i: int) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra(self, i: int) -> dict[str, Any]:
        return {}

    def _config(self) -> dict[str, Any]:
        """Dataset-specific settings that change what is stored (cache key)."""
        return {}

    def cache_config(self) -> dict[str, Any]:
        """Everything that determines the cached arrays; equal configs give equal caches."""
        return {
            "dataset": self.name,
            "split": self.split,
            "ground_size": list(self.ground_size) if self.ground_size else None,
            "aerial_size": list(self.aerial_size) if self.aerial_size else None,
            "polar": self.polar.as_dict() if self.polar is not None else False,
            "ground_crop": list(self.ground_crop) if self.ground_crop else None,
            "interpolation": INTERPOLATION,
            "on_missing": self.on_missing,
            **self._config(),
        }

    def cache_key(self) -> str:
        cfg = self.cache_config()
        blob = json.dumps(cfg, sort_keys=True).encode()
        return f"{self.name.lower()}-{cfg['split']}-{hashlib.sha256(blob).hexdigest()[:12]}"

    def _attach_cache(self, cache: str | os.PathLike[str] | None, verify: str) -> list[str] | None:
        """Open the cache entry for this configuration; returns the cached query ids (or None)."""
        if cache is None:
            return None
        self._cache = open_cache(cache, self, verify=verify)
        return self._cache.ids("ground")

    def _select(
        self,
        all_ids: Sequence[str],
        paths_of: Callable[[int], Sequence[Path]],
        cache: str | os.PathLike[str] | None,
        verify: str,
    ) -> list[int]:
        """Indices into ``all_ids`` of the samples to serve.

        Without a cache: the samples whose files exist (see ``on_missing``). With a cache: the ids
        recorded in its manifest (the raw images are not needed then), which must be all of
        ``all_ids`` (``on_missing="raise"``) or a subsequence of them (``"skip"``).
        """
        cached = self._attach_cache(cache, verify)
        if cached is None:
            return self._filter_missing(paths_of, len(all_ids))
        assert self._cache is not None  # attached with the ids it lists
        pos = {x: k for k, x in enumerate(all_ids)}
        unknown = [x for x in cached if x not in pos]
        keep = [pos[x] for x in cached if x in pos]
        if unknown or keep != sorted(keep) or (self.on_missing == "raise" and len(keep) != len(all_ids)):
            raise CacheError(
                f"cache {self._cache.path} lists {len(cached)} {self.name} {self.split} samples that do not "
                f"match the split's {len(all_ids)} (unknown ids: {unknown[:3]}); re-run prepare"
            )
        self.missing = len(all_ids) - len(keep)
        return keep

    def _filter_missing(self, paths_of: Callable[[int], Sequence[Path]], n: int) -> list[int]:
        """Indices whose files all exist; raises (default) or warns and counts (``on_missing="skip"``)."""
        keep: list[int] = []
        missing: list[Path] = []
        for i in range(n):
            absent = [p for p in paths_of(i) if not p.is_file()]
            if absent:
                missing.extend(absent)
            else:
                keep.append(i)
        self.missing = n - len(keep)
        if missing:
            if self.on_missing == "raise":
                shown = "\n".join(f"  {p}" for p in missing[:5])
                more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise DatasetNotFoundError(
                    self.name,
                    self.root,
                    missing[0],
                    self.layout,
                    f"{len(missing)} image file(s) missing for split {self.split!r}:\n{shown}{more}\n"
                    "To drop those samples (counted in .missing): pass on_missing='skip' to the dataset "
                    "in Python; on the command line only `geo-bench prepare --on-missing skip` offers it.",
                )
            warnings.warn(
                f"{self.name} {self.split}: skipped {self.missing} of {n} samples with missing files "
                f"(first: {missing[0]}); N = {len(keep)}",
                stacklevel=3,
            )
        return keep

    # -- Dataset API -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} {self.split} with {n} samples")
        i = i % n
        sample: dict[str, Any] = {
            "ground": to_float(self.load_view("ground", i)),
            "aerial": to_float(self._query_aerial(i)),
            "id": self.ids[i],
        }
        sample.update(self._extra(i))
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _query_aerial(self, i: int) -> Tensor:
        return self.load_view("aerial", i)

    @property
    def protocol(self) -> dict[str, Any]:
        """What a results record needs to know about this data (dataset, split, N, settings)."""
        views = self.view_ids()
        info = {
            "dataset": self.name,
            "split": self.split,
            "n": len(self),
            "n_query": len(self),
            "n_reference": len(views["aerial"]),
            "missing": self.missing,
            "ground_size": list(self.ground_size) if self.ground_size else None,
            "aerial_size": list(self.aerial_size) if self.aerial_size else None,
            "polar": self.polar.as_dict() if self.polar is not None else False,
            "ground_crop": list(self.ground_crop) if self.ground_crop else None,
            "interpolation": INTERPOLATION,
            "cache": str(self._cache.path) if self._cache is not None else None,
        }
        info.update(self._config())
        return info

    info = protocol

    def plot(self, sample: dict[str, Any], show_titles: bool = True, suptitle: str | None = None):
        """Plot a sample's ground and aerial views (and its annotation if present); returns a
        matplotlib ``Figure``."""
        import matplotlib.pyplot as plt  # lazy: heavy and only needed to plot

        panels = [
            ("ground", sample["ground"]),
            ("aerial (polar)" if self.polar else "aerial", sample["aerial"]),
        ]
        for key in ("ground_seg", "ground_seg_rgb"):
            if key in sample:
                panels.append((key, sample[key]))
        widths = [p[1].shape[-1] / p[1].shape[-2] for p in panels]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * sum(widths), 3), width_ratios=widths)
        for ax, (title, img) in zip(axes, panels):
            img = img.detach().cpu()
            if img.ndim == 3:
                arr = img.permute(1, 2, 0).numpy()
                if arr.dtype != np.uint8:
                    arr = arr.clip(0, 1)
                ax.imshow(arr)
            else:
                ax.imshow(img.numpy(), interpolation="nearest")
            ax.axis("off")
            if show_titles:
                ax.set_title(f"{title} {sample.get('id', '')}".strip() if title == "ground" else title)
        if suptitle is not None:
            fig.suptitle(suptitle)
        fig.tight_layout()
        return fig

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        polar = f", polar={self.polar.name!r}" if self.polar else ""
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, N={len(self)}, "
            f"ground_size={self.ground_size}, aerial_size={self.aerial_size}{polar})"
        )
