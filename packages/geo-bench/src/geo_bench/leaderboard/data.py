"""Datasets for the leaderboard: the embedded synthetic world (rendered once, kept as uint8 tensors and
cached on disk) and the real benchmarks (CVUSA, CVACT, VIGOR) behind one small interface.

Convention:
    - :class:`WorldConfig` fixes everything the synthetic data depends on; its :meth:`~WorldConfig.key`
      (a short hash) names the on-disk cache ``<cache_dir>/world-<key>/{train,val,test,cross}.npz`` (plain
      arrays, read with ``allow_pickle=False``). A cache file that cannot be used, whatever the
      damage (truncated, garbage, a missing array, arrays of other shapes or dtypes than the
      config gives), is rendered again and rewritten, with a logged warning naming the file.
    - :class:`TensorPairs` serves ``{"ground": (3, H, W) uint8, "aerial": (3, S, S) uint8, "id",
      "utm"[, "ground_seg": (H, W) int64]}`` (the panorama's labels: SMDT trains its label-conditioned
      generator on them); the trainer's batch transform turns uint8 into floats in [0, 1] and polar-transforms
      square aerials for polar recipes. It exposes ``ids``, ``utm`` and ``split`` (GPS sampling, the
      held-out slice and the trainer's ``test`` guard use them).
    - The world's four splits (:data:`WORLD_SPLITS`): ``train``, ``val`` (the selection region) and
      ``test`` are the three easting stripes of the same districts (``styles``), separated by buffers
      wider than a tile, so no camera and no aerial pixel is shared between them; ``cross`` is the
      ``test`` stripe of districts of another city style (``cross_style``, never trained or selected
      on), in its own UTM frame 100 km east: the cross-area protocol.
    - :class:`RolledGround` is a view whose panoramas are rolled right by fixed per-query shifts
      (``geo_bench.metrics.apply_fov`` convention, 360 degrees kept): the unknown-orientation queries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from geo_retrieval.checkpoint import atomic_save, atomic_write_bytes
from geo_retrieval.geodesy import equirectangular_to_latlon

from ..datasets import DATASETS
from ..world import CITY_STYLES, CityConfig, SyntheticWorld, city_style

__all__ = [
    "DATASET_NAMES",
    "WORLD_SPLITS",
    "RolledGround",
    "TensorPairs",
    "WorldConfig",
    "load_world",
    "load_world_split",
    "open_real_dataset",
]

log = logging.getLogger(__name__)

DATASET_NAMES = ("synthetic", "cvusa", "cvact", "vigor")
#: the splits of the synthetic world (see the module Convention)
WORLD_SPLITS = ("train", "val", "test", "cross")
_CACHE_FORMAT = (
    3  # bump when the cached arrays change (2: + ground_seg; 3: city styles, val and cross splits)
)
#: offset of the cross-area city's seed stream from the world seed (its cities and cameras are its own)
_CROSS_SEED = 7_919_000
#: the cross-area city lies this far east of the training cities (its own frame; no coordinate is shared)
CROSS_OFFSET_M = 100_000.0
_ARRAYS = ("ground", "aerial", "ids", "utm", "ground_seg")


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic world of a leaderboard run.

    Attributes:
        n_train: training cameras (the train stripe of the districts).
        n_val: validation cameras: the val stripe of the same districts, the only data model
            selection and tuning look at.
        n_test: test cameras: the test stripe of the same districts (same-area protocol), and as many
            cameras of the cross-area city (``cross_style``).
        seed: world seed (the cities, cameras and every sample's randomness derive from it).
        ground_size: rendered panorama (H, W); recipes resize it to their own input size.
        aerial_size: rendered aerial side S (the tile stays 64 m wide).
        district_m: side of one city district in metres (more cameras continue in more districts).
        styles: city styles of the districts (district ``k`` has ``styles[k % len(styles)]``; see
            :data:`geo_bench.world.CITY_STYLES`).
        cross_style: the style of the cross-area test city, not among ``styles``.
        split_fractions: easting proportions of the train / val / test stripes of each district.
    """

    n_train: int = 1200
    n_val: int = 250
    n_test: int = 500
    seed: int = 0
    ground_size: tuple[int, int] = (64, 256)
    aerial_size: int = 128
    district_m: float = 1000.0
    styles: tuple[str, ...] = ("downtown", "suburb")
    cross_style: str = "town"
    split_fractions: tuple[float, float, float] = (0.55, 0.2, 0.25)

    def __post_init__(self) -> None:
        if self.n_train < 8 or self.n_test < 2 or self.n_val < 2:
            raise ValueError(
                f"need n_train >= 8, n_val >= 2 and n_test >= 2, got {self.n_train}, {self.n_val} and {self.n_test}"
            )
        object.__setattr__(self, "styles", tuple(str(s) for s in self.styles))
        unknown = sorted({*self.styles, self.cross_style} - set(CITY_STYLES))
        if unknown or not self.styles:
            raise ValueError(
                f"unknown or no city styles {unknown or self.styles}; available: {sorted(CITY_STYLES)}"
            )
        if self.cross_style in self.styles:
            raise ValueError(
                f"cross_style {self.cross_style!r} must differ from the training styles {self.styles}"
            )

    def split_size(self, split: str) -> int:
        """Number of cameras of one of :data:`WORLD_SPLITS`."""
        sizes = {"train": self.n_train, "val": self.n_val, "test": self.n_test, "cross": self.n_test}
        if split not in sizes:
            raise ValueError(f"unknown world split {split!r}; available: {WORLD_SPLITS}")
        return sizes[split]

    def cities(self, split: str) -> list[CityConfig]:
        """The city configs the districts of ``split`` are built from."""
        if split == "cross":  # the world's own projection of a point 100 km east of its origin
            frame = CityConfig()
            e, n = frame.origin_utm
            moved = (e + CROSS_OFFSET_M, n)
            latlon = equirectangular_to_latlon(
                torch.tensor([moved], dtype=torch.float64), frame.origin_utm, frame.origin_latlon
            )[0]
            return [
                city_style(
                    self.cross_style,
                    size_m=self.district_m,
                    origin_utm=moved,
                    origin_latlon=(float(latlon[0]), float(latlon[1])),
                )
            ]
        return [city_style(s, size_m=self.district_m) for s in self.styles]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ground_size"] = list(self.ground_size)
        d["styles"] = list(self.styles)
        d["split_fractions"] = list(self.split_fractions)
        return d

    def key(self) -> str:
        """Short hash of the configuration (names the cache and enters run keys)."""
        text = json.dumps({**self.to_dict(), "cache_format": _CACHE_FORMAT}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


class TensorPairs(Dataset):
    """In-memory uint8 cross-view pairs (see the module Convention).

    Args:
        ground: (N, 3, H, W) uint8 panoramas.
        aerial: (N, 3, S, S) uint8 aerial tiles.
        ids: N sample ids.
        utm: (N, 2) float64 camera coordinates (metres), or None.
        split: split name (``"train"``, ``"test"``...).
        ground_seg: (N, H, W) uint8 panorama labels, or None.
    """

    def __init__(
        self,
        ground: Tensor,
        aerial: Tensor,
        ids: Sequence[str],
        utm: Tensor | None,
        split: str,
        ground_seg: Tensor | None = None,
    ) -> None:
        if (
            ground.ndim != 4
            or aerial.ndim != 4
            or ground.shape[0] != aerial.shape[0]
            or ground.shape[0] != len(ids)
        ):
            raise ValueError(
                f"ground (N,3,H,W), aerial (N,3,S,S) and ids must agree in N, got {tuple(ground.shape)}, "
                f"{tuple(aerial.shape)}, {len(ids)}"
            )
        self.ground, self.aerial = ground, aerial
        self.ids = [str(i) for i in ids]
        self.utm = utm
        self.split = split
        self.ground_seg = ground_seg

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"ground": self.ground[i], "aerial": self.aerial[i], "id": self.ids[i]}
        if self.utm is not None:
            out["utm"] = self.utm[i]
        if self.ground_seg is not None:
            out["ground_seg"] = self.ground_seg[i].long()
        return out


class RolledGround(Dataset):
    """``dataset`` with each panorama rolled right by ``shifts[i]`` columns (unknown orientation)."""

    def __init__(self, dataset: Dataset, shifts: Sequence[int]) -> None:
        if len(shifts) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"need one shift per sample: {len(shifts)} for {len(dataset)}")  # type: ignore[arg-type]
        self.dataset, self.shifts = dataset, [int(s) for s in shifts]
        self.split = getattr(dataset, "split", None)
        self.ids = getattr(dataset, "ids", None)

    def __len__(self) -> int:
        return len(self.shifts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.dataset[i])
        sample["ground"] = torch.roll(sample["ground"], self.shifts[i], dims=-1)
        return sample


def _render(split: str, num: int, cfg: WorldConfig, progress: bool) -> dict[str, np.ndarray]:
    # the cross-area city: the test stripe of other districts, with its own seed stream
    stripe, seed = ("test", cfg.seed + _CROSS_SEED) if split == "cross" else (split, cfg.seed)
    fractions = cfg.split_fractions
    world = SyntheticWorld(
        stripe,
        num=num,
        seed=seed,
        ground_size=(cfg.ground_size[0], cfg.ground_size[1]),
        aerial_size=cfg.aerial_size,
        city=cfg.cities(split),
        split_fractions=(fractions[0], fractions[1], fractions[2]),
    )
    h, w = cfg.ground_size
    s = cfg.aerial_size
    ground = np.empty((num, 3, h, w), np.uint8)
    aerial = np.empty((num, 3, s, s), np.uint8)
    seg = np.empty((num, h, w), np.uint8)
    chunk = 64
    for start in tqdm(range(0, num, chunk), desc=f"render world {split}", disable=not progress, leave=False):
        idx = list(range(start, min(num, start + chunk)))
        b = world.render_batch(idx)
        ground[idx] = (b["ground"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        aerial[idx] = (b["aerial"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        seg[idx] = b["ground_seg"].to(torch.uint8).numpy()
    return {
        "ground": ground,
        "aerial": aerial,
        "ids": np.array(world.ids),
        "utm": world.utm.numpy(),
        "ground_seg": seg,
    }


#: What reading a damaged ``.npz`` can raise (numpy's header and pickle checks, zipfile, zlib, short reads).
_CACHE_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
)


def _expected_arrays(cfg: WorldConfig, num: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Array name -> (shape, dtype kind) of one cached split of ``num`` samples."""
    h, w = cfg.ground_size
    s = cfg.aerial_size
    return {
        "ground": ((num, 3, h, w), "u"),
        "aerial": ((num, 3, s, s), "u"),
        "ids": ((num,), "U"),
        "utm": ((num, 2), "f"),
        "ground_seg": ((num, h, w), "u"),
    }


def _read_world_cache(path: Path, cfg: WorldConfig, num: int) -> dict[str, np.ndarray] | None:
    """The arrays of one cached split, or None (with a logged warning naming ``path``) when the file
    cannot be used: unreadable, or arrays of other shapes or dtypes than ``cfg`` gives."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ARRAYS}
    except _CACHE_READ_ERRORS as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        log.warning(
            "world cache %s is unreadable (%s: %s); rendering again", path, type(err).__name__, reason
        )
        return None
    for name, (shape, kind) in _expected_arrays(cfg, num).items():
        a = arrays[name]
        if a.shape != shape or a.dtype.kind != kind:
            log.warning(
                "world cache %s holds %s %s %s, expected %s; rendering again",
                path,
                name,
                a.shape,
                a.dtype,
                shape,
            )
            return None
    return arrays


def load_world_split(
    cfg: WorldConfig, split: str, cache_dir: str | Path | None = None, *, progress: bool = False
) -> TensorPairs:
    """One of the world's :data:`WORLD_SPLITS` as :class:`TensorPairs`, rendered once.

    Args:
        cfg: the world.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"cross"`` (see the module Convention).
        cache_dir: where ``world-<key>/<split>.npz`` is kept (None: render, do not cache). A damaged
            cache file is rendered again and rewritten (see the module Convention).
        progress: show rendering progress bars.
    """
    num = cfg.split_size(split)
    folder = Path(cache_dir) / f"world-{cfg.key()}" if cache_dir is not None else None
    path = folder / f"{split}.npz" if folder is not None else None
    arrays = None
    if path is not None and path.exists():
        arrays = _read_world_cache(path, cfg, num)
    if arrays is None:
        arrays = _render(split, num, cfg, progress)
        if path is not None and folder is not None:
            # a unique temporary file per writer: runs sharing a cache (two leaderboards, the
            # tuning script) may render the same split at once; the last rename wins, both complete
            atomic_save(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # numpy's stub
            atomic_write_bytes(folder / "world.json", (json.dumps(cfg.to_dict(), indent=1) + "\n").encode())
    return TensorPairs(
        torch.from_numpy(arrays["ground"]),
        torch.from_numpy(arrays["aerial"]),
        [str(i) for i in arrays["ids"]],
        torch.from_numpy(arrays["utm"]).double(),
        split,
        torch.from_numpy(arrays["ground_seg"]),
    )


def load_world(
    cfg: WorldConfig, cache_dir: str | Path | None = None, *, progress: bool = False, train: bool = True
) -> tuple[TensorPairs | None, TensorPairs]:
    """The (train, test) splits of the synthetic world (:func:`load_world_split`); ``train=False``
    returns None for train."""
    train_split = load_world_split(cfg, "train", cache_dir, progress=progress) if train else None
    return train_split, load_world_split(cfg, "test", cache_dir, progress=progress)


def open_real_dataset(name: str, root: str | Path, split: str, **kwargs: Any) -> Dataset:
    """CVUSA / CVACT / VIGOR split ``split`` from ``root`` (the loaders' own errors propagate:
    :class:`~geo_bench.datasets.DatasetNotFoundError` for missing data, ``ValueError`` for a bad split)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {list(DATASET_NAMES)}")
    return DATASETS[name](root, split, **kwargs)
