"""Fine-grained metric pose errors: the camera's position and heading inside the retrieved aerial tile.

Convention:
    - Positions are metres ``(east, north)``, shape (N, 2), in any local frame shared by the
      prediction and the truth (a tile's centre, UTM, the synthetic world's district frame).
    - Headings are bearings in degrees clockwise from north (0 = north, 90 = east): the synthetic
      world's ``yaw`` (bearing of the panorama's centre column); VIGOR panoramas face north (0).
    - With the true heading ``h``, the forward unit vector is ``f = (sin h, cos h)`` and the right
      unit vector ``r = (cos h, -sin h)`` in ``(east, north)``. For the error ``e = pred - true``:
      ``longitudinal = |e . f|`` (along the direction the camera faces / drives) and
      ``lateral = |e . r|`` (across it), the KITTI convention of HighlyAccurate, CCVPE and FG^2;
      ``distance = |e|`` and ``distance^2 = longitudinal^2 + lateral^2``. Both components use the
      TRUE heading, never the predicted one. Swapping the two is a published mistake:
      vita-epfl/Loc2 issue #6 (``eval_kitti.py`` built the heading vector as ``(sin, cos)`` of the yaw
      where ``(cos, sin)`` was meant, so its lateral and longitudinal recalls were exchanged; the
      author confirmed and fixed it).
    - Heading error: :func:`~geo_bench.metrics.circular_error_deg`, the circular absolute difference
      in [0, 180] degrees.
    - Recall at a threshold ``t``: percentage of queries with error ``<= t`` (inclusive). Means and
      medians are over all queries. Everything is float64 numpy; torch inputs are accepted on any
      device (copied to the CPU).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.special import cosdg, sindg
from torch import Tensor

from geo_bench.metrics.orientation import circular_error_deg

__all__ = ["PoseErrors", "PoseResult", "pose_errors", "pose_metrics"]

_DEFAULT_M = (1.0, 3.0, 5.0)
_DEFAULT_DEG = (1.0, 3.0, 5.0)


def _array(x: object, name: str) -> np.ndarray:
    """``x`` (numpy, torch or a nested sequence) as a float64 array; TypeError names ``name``."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numeric array (numpy or torch), got {type(x).__name__}") from None
    return arr


def _finite(arr: np.ndarray, name: str) -> None:
    ok = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
    if not ok.all():
        raise ValueError(f"{name} must be finite; row {int(np.flatnonzero(~ok)[0])} holds NaN or inf")


def _points(x: object, name: str, n: int | None) -> np.ndarray:
    arr = _array(x, name)
    expected = "(N, 2)" if n is None else f"(N, 2) = ({n}, 2)"
    if arr.ndim != 2 or arr.shape[1] != 2 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"{name} must be {expected} metres (east, north), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one point, got shape {arr.shape}")
    _finite(arr, name)
    return arr


def _angles(x: object, name: str, n: int) -> np.ndarray:
    arr = _array(x, name)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be (N,) = ({n},) degrees, got shape {arr.shape}")
    _finite(arr, name)
    return arr


def _thresholds(values: Iterable[float], name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not out or not all(np.isfinite(v) and v > 0 for v in out) or len(set(out)) != len(out):
        raise ValueError(f"{name} must be distinct positive finite numbers, got {out}")
    return out


def _key(t: float) -> str:
    return f"{t:g}"


def _recalls(err: np.ndarray, thresholds: tuple[float, ...]) -> dict[float, float]:
    return {t: 100.0 * float(np.mean(err <= t)) for t in thresholds}


@dataclass(frozen=True)
class PoseErrors:
    """Per-query pose errors (all (N,) float64 numpy arrays, see the module Convention).

    Attributes:
        distance_m: Euclidean position error, metres.
        longitudinal_m: absolute error component along the TRUE heading, metres.
        lateral_m: absolute error component across the TRUE heading, metres.
        heading_deg: circular absolute heading error in [0, 180] degrees; None without a
            predicted heading.
    """

    distance_m: np.ndarray
    longitudinal_m: np.ndarray
    lateral_m: np.ndarray
    heading_deg: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of queries."""
        return int(self.distance_m.shape[0])

    def summary(
        self,
        thresholds_m: Iterable[float] = _DEFAULT_M,
        thresholds_deg: Iterable[float] = _DEFAULT_DEG,
    ) -> PoseResult:
        """Means, medians and recalls (``<=``) of these errors as a :class:`PoseResult`."""
        tm = _thresholds(thresholds_m, "thresholds_m")
        td = _thresholds(thresholds_deg, "thresholds_deg")
        h = self.heading_deg
        return PoseResult(
            n=self.n,
            mean_m=float(np.mean(self.distance_m)),
            median_m=float(np.median(self.distance_m)),
            recall_m=_recalls(self.distance_m, tm),
            lateral_mean_m=float(np.mean(self.lateral_m)),
            lateral_median_m=float(np.median(self.lateral_m)),
            lateral_recall_m=_recalls(self.lateral_m, tm),
            longitudinal_mean_m=float(np.mean(self.longitudinal_m)),
            longitudinal_median_m=float(np.median(self.longitudinal_m)),
            longitudinal_recall_m=_recalls(self.longitudinal_m, tm),
            heading_mean_deg=None if h is None else float(np.mean(h)),
            heading_median_deg=None if h is None else float(np.median(h)),
            heading_recall_deg=None if h is None else _recalls(h, td),
        )


@dataclass(frozen=True)
class PoseResult:
    """Summary of :class:`PoseErrors`: metres, degrees, recalls in percent (error ``<=`` threshold).

    Attributes:
        n: number of queries.
        mean_m, median_m: position error.
        recall_m: ``{threshold_m: percent}`` of the position error.
        lateral_mean_m, lateral_median_m, lateral_recall_m: the lateral component.
        longitudinal_mean_m, longitudinal_median_m, longitudinal_recall_m: the longitudinal one.
        heading_mean_deg, heading_median_deg, heading_recall_deg: heading error (None without a
            predicted heading).
    """

    n: int
    mean_m: float
    median_m: float
    recall_m: dict[float, float]
    lateral_mean_m: float
    lateral_median_m: float
    lateral_recall_m: dict[float, float]
    longitudinal_mean_m: float
    longitudinal_median_m: float
    longitudinal_recall_m: dict[float, float]
    heading_mean_deg: float | None = None
    heading_median_deg: float | None = None
    heading_recall_deg: dict[float, float] | None = None

    def as_dict(self) -> dict[str, float | int]:
        """Flat metrics: ``mean_m``, ``median_m``, ``R@1m``..., ``lateral_*``, ``longitudinal_*``,
        ``lat_R@1m``..., ``lon_R@1m``..., with headings ``heading_mean_deg``, ``heading_median_deg``,
        ``R@1deg``...; and ``n``."""
        out: dict[str, float | int] = {"mean_m": self.mean_m, "median_m": self.median_m}
        out.update({f"R@{_key(t)}m": v for t, v in self.recall_m.items()})
        out["lateral_mean_m"] = self.lateral_mean_m
        out["lateral_median_m"] = self.lateral_median_m
        out["longitudinal_mean_m"] = self.longitudinal_mean_m
        out["longitudinal_median_m"] = self.longitudinal_median_m
        out.update({f"lat_R@{_key(t)}m": v for t, v in self.lateral_recall_m.items()})
        out.update({f"lon_R@{_key(t)}m": v for t, v in self.longitudinal_recall_m.items()})
        if self.heading_recall_deg is not None:
            assert self.heading_mean_deg is not None and self.heading_median_deg is not None
            out["heading_mean_deg"] = self.heading_mean_deg
            out["heading_median_deg"] = self.heading_median_deg
            out.update({f"R@{_key(t)}deg": v for t, v in self.heading_recall_deg.items()})
        out["n"] = self.n
        return out


def pose_errors(
    pred_en_m: object,
    true_en_m: object,
    true_heading_deg: object,
    pred_heading_deg: object | None = None,
) -> PoseErrors:
    """Per-query position error split along / across the true heading, and the heading error.

    Args:
        pred_en_m: (N, 2) predicted positions, metres (east, north).
        true_en_m: (N, 2) true positions in the same frame.
        true_heading_deg: (N,) true headings, degrees clockwise from north.
        pred_heading_deg: optional (N,) predicted headings, degrees clockwise from north.

    Returns:
        A :class:`PoseErrors` of (N,) float64 arrays.

    Raises:
        TypeError: an argument is not numeric.
        ValueError: a wrong shape (the message names the argument and the expected shape), an
            empty set, or a NaN / inf.

    Example:
        >>> e = pose_errors([[0.0, 2.0]], [[0.0, 0.0]], [90.0])  # facing east, 2 m too far north
        >>> e.lateral_m.tolist(), e.longitudinal_m.tolist(), e.distance_m.tolist()
        ([2.0], [0.0], [2.0])
    """
    true = _points(true_en_m, "true_en_m", None)
    n = true.shape[0]
    pred = _points(pred_en_m, "pred_en_m", n)
    h = _angles(true_heading_deg, "true_heading_deg", n)
    e = pred - true
    sin, cos = sindg(h), cosdg(h)  # exact at multiples of 90 degrees
    forward = np.stack([sin, cos], axis=1)
    right = np.stack([cos, -sin], axis=1)
    heading = None
    if pred_heading_deg is not None:
        heading = circular_error_deg(_angles(pred_heading_deg, "pred_heading_deg", n), h)
    return PoseErrors(
        distance_m=np.hypot(e[:, 0], e[:, 1]),
        longitudinal_m=np.abs(np.sum(e * forward, axis=1)),
        lateral_m=np.abs(np.sum(e * right, axis=1)),
        heading_deg=heading,
    )


def pose_metrics(
    pred_en_m: object,
    true_en_m: object,
    true_heading_deg: object,
    pred_heading_deg: object | None = None,
    *,
    thresholds_m: Iterable[float] = _DEFAULT_M,
    thresholds_deg: Iterable[float] = _DEFAULT_DEG,
) -> PoseResult:
    """Mean / median errors and recalls (``<=``) of a set of pose predictions.

    Args:
        pred_en_m, true_en_m, true_heading_deg, pred_heading_deg: as for :func:`pose_errors`.
        thresholds_m: position thresholds in metres (for ``R@tm``, ``lat_R@tm``, ``lon_R@tm``).
        thresholds_deg: heading thresholds in degrees (``R@tdeg``; used with a predicted heading).

    Returns:
        A :class:`PoseResult`; ``as_dict()`` gives the flat table keys.

    Example:
        >>> r = pose_metrics([[0.0, 1.0], [4.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [359.0, 10.0])
        >>> d = r.as_dict()
        >>> d["mean_m"], d["R@1m"], d["lon_R@1m"], d["lat_R@3m"], d["heading_median_deg"], d["R@1deg"]
        (2.5, 50.0, 100.0, 50.0, 5.5, 50.0)
    """
    errors = pose_errors(pred_en_m, true_en_m, true_heading_deg, pred_heading_deg)
    return errors.summary(thresholds_m, thresholds_deg)
