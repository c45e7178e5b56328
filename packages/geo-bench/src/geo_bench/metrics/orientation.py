"""DSM's unknown-orientation / limited-FoV protocol: fixed query sets and orientation metrics.

Convention (``docs/protocols.md#orientation-known-and-unknown``, DSM ``input_data_*.py`` / ``cal_FOV_acc.py``):
    - Panoramas are (B, C, H, W) with W = ``width`` (512 in DSM, after resizing to 128 x 512).
    - Per query, in order: ``shift = int(u * width * noise_deg / 360)`` with ``u`` the next draw of
      numpy's legacy RNG seeded with ``seed`` (DSM calls ``np.random.seed(2019)`` before the test scan;
      here ``np.random.RandomState(seed).rand`` gives the same numbers without touching global state).
      ``noise_deg = 360`` is unknown orientation, ``0`` known orientation.
    - The query keeps columns ``(j - shift) mod W`` for ``j < int(fov_deg / 360 * W)``: roll right by
      ``shift``, then keep the first ``w`` columns.
    - Ground-truth orientation bin: ``np.round((W - shift) / W * n_bins) % n_bins`` (64 bins of 5.625
      degrees; ``np.round`` rounds halves to even, as DSM does).
    - Orientation accuracy: exact bin, and within ``tolerance`` bins using the circular bin distance
      (``rule="circular"``). DSM's script actually computes ``|gt - pred| < 2`` without wrap-around
      (``rule="dsm_script"``, i.e. within +-1 bin); both are available, the rule is recorded.
    - The median orientation error is circular, in degrees (the paper's number has no script, DSM#5).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FovQuerySet",
    "OrientationResult",
    "apply_fov",
    "circular_error_deg",
    "make_fov_queries",
    "orientation_accuracy",
    "orientation_bins",
]

_FORMAT = "geo_bench.fov_query_set"
_ORIENTATION_RULES = ("circular", "dsm_script")


def _crop_width(fov_deg: float, width: int) -> int:
    return int(fov_deg / 360 * width)


def orientation_bins(
    shifts: Sequence[int] | np.ndarray | Tensor, width: int = 512, n_bins: int = 64
) -> np.ndarray:
    """Ground-truth orientation bins ``np.round((width - shift) / width * n_bins) % n_bins``.

    Example:
        >>> orientation_bins([0, 4, 12, 256]).tolist()
        [0, 0, 62, 32]
    """
    s = np.asarray(shifts.cpu() if isinstance(shifts, Tensor) else shifts, dtype=np.float64)
    return (np.round((width - s) / width * n_bins) % n_bins).astype(np.int64)


@dataclass(frozen=True)
class FovQuerySet:
    """A fixed, recorded set of per-query shifts and one field of view.

    Attributes:
        seed: the legacy-RNG seed (2019 in DSM).
        fov_deg: field of view in degrees (360, 180, 90, 70; 100 and 120 are also used).
        noise_deg: orientation noise range in degrees (360 = unknown orientation, 0 = known).
        width: panorama width the shifts refer to (512 in DSM).
        shifts: one int shift per query, in dataset order.
    """

    seed: int
    fov_deg: float
    noise_deg: float
    width: int
    shifts: tuple[int, ...]

    @property
    def n(self) -> int:
        """Number of queries."""
        return len(self.shifts)

    @property
    def crop_width(self) -> int:
        """Columns kept per query: ``int(fov_deg / 360 * width)``."""
        return _crop_width(self.fov_deg, self.width)

    def gt_bins(self, n_bins: int = 64) -> np.ndarray:
        """(n,) int64 ground-truth orientation bins."""
        return orientation_bins(self.shifts, self.width, n_bins)

    def apply(self, panoramas: Tensor, start: int = 0) -> Tensor:
        """Crop ``panoramas`` (B, C, H, W) with the shifts of queries ``[start, start + B)``."""
        b = panoramas.shape[0] if isinstance(panoramas, Tensor) and panoramas.ndim == 4 else None
        if b is None:
            raise ValueError("panoramas must be a (B, C, H, W) tensor")
        if start < 0 or start + b > self.n:
            raise ValueError(f"queries [{start}, {start + b}) are outside this set of {self.n}")
        if panoramas.shape[-1] != self.width:
            raise ValueError(
                f"panoramas must be {self.width} columns wide, got shape {tuple(panoramas.shape)}"
            )
        return apply_fov(panoramas, self.shifts[start : start + b], self.crop_width)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (with the derived crop width and ground-truth bins, for readers)."""
        return {
            "format": _FORMAT,
            "version": 1,
            "seed": self.seed,
            "fov_deg": self.fov_deg,
            "noise_deg": self.noise_deg,
            "width": self.width,
            "crop_width": self.crop_width,
            "n": self.n,
            "shifts": list(self.shifts),
            "gt_bins_64": self.gt_bins(64).tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FovQuerySet:
        """Inverse of :meth:`to_dict`; checks the format tag and the stored length."""
        if d.get("format") != _FORMAT:
            raise ValueError(f"not a FoV query set: format {d.get('format')!r}, expected {_FORMAT!r}")
        shifts = tuple(int(s) for s in d["shifts"])
        out = cls(int(d["seed"]), float(d["fov_deg"]), float(d["noise_deg"]), int(d["width"]), shifts)
        if "n" in d and int(d["n"]) != out.n:
            raise ValueError(f"FoV query set says n={d['n']} but holds {out.n} shifts")
        return out

    def save(self, path: str | Path) -> Path:
        """Write to ``.json`` or ``.npz`` (chosen by suffix); returns the path."""
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict()) + "\n")
        elif path.suffix == ".npz":
            np.savez(
                path,
                format=np.array(_FORMAT),
                seed=np.int64(self.seed),
                fov_deg=np.float64(self.fov_deg),
                noise_deg=np.float64(self.noise_deg),
                width=np.int64(self.width),
                shifts=np.asarray(self.shifts, dtype=np.int64),
            )
        else:
            raise ValueError(f"path must end in .json or .npz, got {path.name!r}")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FovQuerySet:
        """Read a set written by :meth:`save`."""
        path = Path(path)
        if path.suffix == ".json":
            return cls.from_dict(json.loads(path.read_text()))
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return cls.from_dict(
                    {
                        "format": str(z["format"]),
                        "seed": int(z["seed"]),
                        "fov_deg": float(z["fov_deg"]),
                        "noise_deg": float(z["noise_deg"]),
                        "width": int(z["width"]),
                        "shifts": z["shifts"].tolist(),
                    }
                )
        raise ValueError(f"path must end in .json or .npz, got {path.name!r}")


def make_fov_queries(
    n: int, fov_deg: float, noise_deg: float = 360, seed: int = 2019, width: int = 512
) -> FovQuerySet:
    """Draw DSM's fixed test-time shifts: the first ``n`` draws of the legacy RNG seeded with ``seed``.

    Equivalent to ``np.random.seed(seed); [int(np.random.rand() * width * noise_deg / 360) for _ in
    range(n)]`` but without touching numpy's global state. The shifts do not depend on ``fov_deg``.

    Args:
        n: number of queries (dataset order).
        fov_deg: field of view in degrees, in (0, 360].
        noise_deg: orientation noise in degrees, in [0, 360].
        seed: the legacy RNG seed (2019 as in DSM).
        width: panorama width in columns (512 as in DSM).

    Returns:
        A :class:`FovQuerySet`.

    Example:
        >>> qs = make_fov_queries(3, fov_deg=90)
        >>> qs.crop_width, len(qs.shifts)
        (128, 3)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not 0 < fov_deg <= 360:
        raise ValueError(f"fov_deg must be in (0, 360], got {fov_deg}")
    if not 0 <= noise_deg <= 360:
        raise ValueError(f"noise_deg must be in [0, 360], got {noise_deg}")
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if _crop_width(fov_deg, width) < 1:
        raise ValueError(f"fov_deg={fov_deg} keeps no column of a {width}-wide panorama")
    rng = np.random.RandomState(seed)
    shifts = tuple(int(rng.rand() * width * noise_deg / 360) for _ in range(n))
    return FovQuerySet(
        seed=int(seed), fov_deg=float(fov_deg), noise_deg=float(noise_deg), width=width, shifts=shifts
    )


def apply_fov(panoramas: Tensor, shifts: Sequence[int] | Tensor, crop_width: int) -> Tensor:
    """Roll each panorama right by its shift and keep the first ``crop_width`` columns.

    Convention: output column j is input column ``(j - shift) mod W`` (DSM's
    ``img[:, ((j - shift) % 512)[:w]]``), so ``shift = 0`` keeps the leftmost ``crop_width`` columns.

    Args:
        panoramas: (B, C, H, W) tensor.
        shifts: (B,) integer shifts.
        crop_width: columns kept, 1 <= crop_width <= W.

    Returns:
        (B, C, H, crop_width) tensor on the input's device and dtype.

    Example:
        >>> x = torch.arange(8.0).view(1, 1, 1, 8)
        >>> apply_fov(x, [2], 4).flatten().tolist()
        [6.0, 7.0, 0.0, 1.0]
    """
    if not isinstance(panoramas, Tensor):
        raise TypeError(f"panoramas must be a torch.Tensor, got {type(panoramas).__name__}")
    if panoramas.ndim != 4:
        raise ValueError(f"panoramas must be (B, C, H, W), got shape {tuple(panoramas.shape)}")
    b, c, h, w = panoramas.shape
    s = torch.as_tensor(shifts, dtype=torch.long, device=panoramas.device)
    if s.shape != (b,):
        raise ValueError(f"shifts must be (B,) = ({b},), got {tuple(s.shape)}")
    if not 1 <= crop_width <= w:
        raise ValueError(f"crop_width must be in [1, {w}], got {crop_width}")
    j = torch.arange(crop_width, device=panoramas.device)
    cols = (j[None, :] - s[:, None]) % w  # (B, w)
    index = cols[:, None, None, :].expand(b, c, h, crop_width)
    return panoramas.gather(3, index)


def circular_error_deg(pred_deg: object, gt_deg: object) -> np.ndarray:
    """Absolute circular difference of angles in degrees, in [0, 180].

    Example:
        >>> circular_error_deg([350.0, 10.0], [10.0, 190.0]).tolist()
        [20.0, 180.0]
    """
    p = np.asarray(pred_deg.cpu() if isinstance(pred_deg, Tensor) else pred_deg, dtype=np.float64)
    g = np.asarray(gt_deg.cpu() if isinstance(gt_deg, Tensor) else gt_deg, dtype=np.float64)
    d = np.mod(p - g, 360.0)
    return np.minimum(d, 360.0 - d)


@dataclass(frozen=True)
class OrientationResult:
    """Orientation accuracy of ``n`` queries (fractions in percent, error in degrees)."""

    exact: float
    within: float
    tolerance_bins: int
    rule: str
    median_error_deg: float
    n_bins: int
    n: int

    def as_dict(self) -> dict[str, float]:
        """``{"orientation_exact", "orientation_within_2", "orientation_median_error_deg"}``."""
        return {
            "orientation_exact": self.exact,
            f"orientation_within_{self.tolerance_bins}": self.within,
            "orientation_median_error_deg": self.median_error_deg,
        }

    def protocol_dict(self) -> dict[str, int | str]:
        """The flags these numbers depend on: the tolerance rule, tolerance and bin count."""
        return {
            "orientation_rule": self.rule,
            "orientation_tolerance_bins": self.tolerance_bins,
            "orientation_bins": self.n_bins,
        }


def orientation_accuracy(
    pred_bins: object, gt_bins: object, n_bins: int = 64, tolerance: int = 2, rule: str = "circular"
) -> OrientationResult:
    """Exact and within-``tolerance`` orientation accuracy and the circular median error.

    Args:
        pred_bins: (N,) predicted orientation bins in [0, n_bins).
        gt_bins: (N,) ground-truth bins (see :func:`orientation_bins`).
        n_bins: bins per full turn (64: 5.625 degrees each).
        tolerance: bins of tolerance for ``within``.
        rule: ``"circular"``: circular bin distance ``<= tolerance``; ``"dsm_script"``: DSM's
            ``|gt - pred| < tolerance`` without wrap-around.

    Returns:
        An :class:`OrientationResult`; ``median_error_deg`` is always circular.

    Example:
        >>> r = orientation_accuracy([0, 63, 10, 40], [0, 1, 10, 8])
        >>> r.exact, r.within, r.median_error_deg
        (50.0, 75.0, 5.625)
    """
    if rule not in _ORIENTATION_RULES:
        raise ValueError(f"rule must be one of {_ORIENTATION_RULES}, got {rule!r}")
    p = np.asarray(pred_bins.cpu() if isinstance(pred_bins, Tensor) else pred_bins)
    g = np.asarray(gt_bins.cpu() if isinstance(gt_bins, Tensor) else gt_bins)
    if p.ndim != 1 or p.shape != g.shape or p.size == 0:
        raise ValueError(f"pred_bins and gt_bins must be equal non-empty (N,), got {p.shape} and {g.shape}")
    if p.dtype.kind == "f" and not np.all(p == np.round(p)):
        raise ValueError("pred_bins must hold integer bins")
    p = p.astype(np.int64)
    g = g.astype(np.int64)
    for name, x in (("pred_bins", p), ("gt_bins", g)):
        if x.min() < 0 or x.max() >= n_bins:
            raise ValueError(f"{name} must lie in [0, {n_bins}), got range [{x.min()}, {x.max()}]")
    d = np.mod(p - g, n_bins)
    circ = np.minimum(d, n_bins - d)
    within = circ <= tolerance if rule == "circular" else np.abs(g - p) < tolerance
    return OrientationResult(
        exact=100.0 * float(np.mean(circ == 0)),
        within=100.0 * float(np.mean(within)),
        tolerance_bins=int(tolerance),
        rule=rule,
        median_error_deg=float(np.median(circ * (360.0 / n_bins))),
        n_bins=n_bins,
        n=int(p.size),
    )
