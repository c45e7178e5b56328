"""Limited field of view with unknown orientation: fixed, shipped query files.

Papers draw limited-FoV queries differently (crop position, heading, resize or not), so the same
method is reported at 16.3 in one paper and 55.1 in another at 90 degrees. Here the query set is a
file, made once per (dataset, split, FoV, seed), saved next to the results and reused by every
model, and its sha256 goes into every record measured with it.

Convention:
    - A query file is JSON: ``{"protocol": "fov", "version", "dataset", "split", "fov_deg", "seed",
      "width", "crop_width", "ids": [...], "shifts": [...]}``; its identity is the sha256 of that
      canonical JSON (sorted keys, no spaces), :attr:`FovQueryFile.sha256`.
    - Headings: ``shifts[i]`` is the number of columns panorama ``i`` is rolled right (an unknown
      heading), drawn as DSM draws them: ``make_fov_queries(N, fov, noise 360, seed, width)``, the
      legacy numpy RNG seeded with ``seed`` (2019 by default, DSM's value). The shifts do not depend
      on the FoV, so FoV 360 / 180 / 90 / 70 see the same headings, and FoV 360 with seed 2019 is
      exactly the leaderboard's "orientation unknown" protocol.
    - The view: the rolled panorama's first ``crop_width = int(fov/360 * W)`` columns (DSM's rule)
      are kept in a full-width frame and every other column is set to the recipe's normalisation
      mean (so it is exactly 0 after normalisation: "not seen"); see
      ``geo_transforms.panorama.limit_fov``. One model therefore takes every FoV at its trained
      input size and scale; nothing is resized.
    - Files live in ``<results folder>/queries/fov-<dataset>-<split>-<fov>deg-s<seed>.json``; an
      existing file is reused after checking that it is the same protocol for the same samples
      (ids, width); a different one is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from geo_retrieval.checkpoint import atomic_write_bytes
from geo_transforms.panorama import fov_width, limit_fov

from ..metrics import make_fov_queries

__all__ = [
    "DEFAULT_FOVS",
    "FOV_PROTOCOL_VERSION",
    "FOV_QUERY_SEED",
    "FovQueryFile",
    "LimitedFovGround",
    "fov_query_file",
]

#: Version of the query-file format and drawing rule; recorded in every FoV record.
FOV_PROTOCOL_VERSION = "fov-1"
#: The FoVs the leaderboard reports (degrees), SinGeo's and DSM's set.
DEFAULT_FOVS: tuple[float, ...] = (360.0, 180.0, 90.0, 70.0)
#: DSM's seed of the test-time headings.
FOV_QUERY_SEED = 2019


@dataclass(frozen=True)
class FovQueryFile:
    """One fixed limited-FoV query set (see the module Convention).

    Attributes:
        dataset, split: what the queries are drawn from.
        fov_deg: field of view in degrees, in (0, 360].
        seed: seed of the headings.
        width: panorama width in columns the shifts refer to.
        ids: the query sample ids, in dataset order.
        shifts: one right roll (columns) per query.
        version: :data:`FOV_PROTOCOL_VERSION`.
    """

    dataset: str
    split: str
    fov_deg: float
    seed: int
    width: int
    ids: tuple[str, ...]
    shifts: tuple[int, ...]
    version: str = FOV_PROTOCOL_VERSION

    @property
    def crop_width(self) -> int:
        """Columns seen: ``int(fov/360 * width)`` (DSM's rule)."""
        return fov_width(self.fov_deg, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": "fov",
            "version": self.version,
            "dataset": self.dataset,
            "split": self.split,
            "fov_deg": self.fov_deg,
            "seed": self.seed,
            "width": self.width,
            "crop_width": self.crop_width,
            "ids": list(self.ids),
            "shifts": list(self.shifts),
        }

    def to_json(self) -> bytes:
        """The canonical bytes (sorted keys, no spaces) hashed by :attr:`sha256`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    def protocol(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The record's protocol fields of this query set."""
        out: dict[str, Any] = {
            "orientation_known": False,
            "fov": self.fov_deg,
            "fov_protocol": self.version,
            "query_seed": self.seed,
            "query_file_sha256": self.sha256[:16],
        }
        if path is not None:
            out["query_file"] = Path(path).name
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "query file") -> FovQueryFile:
        try:
            q = cls(
                dataset=str(d["dataset"]),
                split=str(d["split"]),
                fov_deg=float(d["fov_deg"]),
                seed=int(d["seed"]),
                width=int(d["width"]),
                ids=tuple(str(i) for i in d["ids"]),
                shifts=tuple(int(s) for s in d["shifts"]),
                version=str(d["version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where} is not an FoV query file ({type(exc).__name__}: {exc})") from None
        if d.get("protocol") != "fov" or len(q.ids) != len(q.shifts):
            raise ValueError(
                f"{where} is not an FoV query file (protocol {d.get('protocol')!r}, "
                f"{len(q.ids)} ids and {len(q.shifts)} shifts)"
            )
        return q


def fov_query_file(
    folder: str | os.PathLike[str],
    dataset: str,
    split: str,
    ids: Sequence[str],
    fov_deg: float,
    *,
    width: int,
    seed: int = FOV_QUERY_SEED,
) -> tuple[FovQueryFile, Path]:
    """The query file of (dataset, split, FoV, seed) in ``folder``: made (atomically) when absent,
    else read and checked.

    Args:
        folder: where query files live (created).
        dataset, split: names recorded in the file.
        ids: the query ids in dataset order.
        fov_deg: field of view in degrees, in (0, 360].
        width: panorama width in columns (the dataset's, before any resizing).
        seed: heading seed.

    Returns:
        ``(query_file, path)``.

    Raises:
        ValueError: an existing file at that path is not this protocol for these samples (names the
            file and what differs).
    """
    made = make_fov_queries(len(ids), float(fov_deg), noise_deg=360.0, seed=int(seed), width=int(width))
    want = FovQueryFile(
        dataset, split, float(fov_deg), int(seed), int(width), tuple(str(i) for i in ids), tuple(made.shifts)
    )
    path = Path(folder) / f"fov-{dataset}-{split}-{fov_deg:g}deg-s{seed}.json"
    if not path.exists():
        atomic_write_bytes(path, want.to_json() + b"\n")
        return want, path
    try:
        have = FovQueryFile.from_dict(json.loads(path.read_text()), str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it to draw the query set again") from None
    diffs = [
        f"{name}: file has {getattr(have, name)!r}, expected {getattr(want, name)!r}"
        for name in ("version", "dataset", "split", "fov_deg", "seed", "width")
        if getattr(have, name) != getattr(want, name)
    ]
    if have.ids != want.ids:
        diffs.append(f"ids: the file lists {len(have.ids)} queries that are not this split's {len(want.ids)}")
    if diffs:
        raise ValueError(f"{path} is another query set ({'; '.join(diffs)}); use another results folder")
    return have, path


class LimitedFovGround(Dataset):
    """``dataset`` whose panoramas are the limited-FoV views of a :class:`FovQueryFile`.

    Args:
        dataset: yields dicts with ``"ground"`` (3, H, W) (uint8 or float in [0, 1]) and ``"id"``.
        queries: the query file; its ids must be the dataset's, in order.
        fill: (3,) values in the images' scale for the unseen columns (the recipe's normalisation
            mean, scaled to 0..255 for uint8 images); default mid-grey.
    """

    def __init__(
        self, dataset: Dataset, queries: FovQueryFile, fill: Sequence[float] | Tensor | None = None
    ) -> None:
        if len(queries.ids) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"the query file has {len(queries.ids)} queries for {len(dataset)} samples")  # type: ignore[arg-type]
        self.dataset, self.queries = dataset, queries
        self.fill = torch.as_tensor(fill if fill is not None else (0.5, 0.5, 0.5), dtype=torch.float64)
        self.split = getattr(dataset, "split", None)
        self.ids = getattr(dataset, "ids", None)

    def __len__(self) -> int:
        return len(self.queries.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.dataset[i])
        if str(sample["id"]) != self.queries.ids[i]:
            raise ValueError(
                f"sample {i} is {sample['id']!r} but the query file expects {self.queries.ids[i]!r}"
            )
        ground = sample["ground"]
        if ground.shape[-1] != self.queries.width:
            raise ValueError(
                f"panorama {sample['id']!r} is {ground.shape[-1]} columns wide, the query file "
                f"was drawn for {self.queries.width}"
            )
        x = ground.double()
        fill = self.fill * (255.0 if not ground.is_floating_point() else 1.0)
        out = limit_fov(x[None], self.queries.fov_deg, self.queries.shifts[i], fill)[0]
        sample["ground"] = (
            out.round().to(ground.dtype) if not ground.is_floating_point() else out.to(ground.dtype)
        )
        return sample
