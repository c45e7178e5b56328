"""The published numbers (``results.md``) as ``kind="reported"`` :class:`~geo_bench.records.ResultRecord` s.

Convention:
    ``data/reported.json`` holds ``{"format": "geo_bench.reported/1", "records": [...]}``, one record
    per (method, dataset, split, FoV / orientation protocol) of the tables in ``results.md``:
    CVUSA (``dataset="cvusa"``, ``split="test"`` = val-19zl), CVACT_val (``"cvact"``, ``"val"``),
    CVACT_test (``"cvact"``, ``"test"``, with ``protocol.cvact_test`` where stated), the DSM
    unknown-orientation / limited-FoV table (``orientation_known=False``, ``fov``), VIGOR R@1
    (``"vigor"``, ``"same_area"`` / ``"cross_area"``) and the CVUSA -> CVACT transfer rows
    (``protocol.trained_on="cvusa"``). ``provenance.source`` is the source cell of ``results.md``
    verbatim (markdown emphasis removed); ``protocol.unverified`` is True where the source says
    "unverified"; conflicting cells ("A vs B") become two records marked ``protocol.conflict``.
    Missing values ("–") are ``None``. The recipe name is the method as printed there.

    ``data/reported_pose.json`` (same format) holds the fine-grained pose numbers on VIGOR
    (:func:`reported_pose_records`): ``split`` ``"same_area"`` / ``"cross_area"``, ``metrics``
    ``mean_m`` / ``median_m`` (metres) and ``heading_mean_deg`` / ``heading_median_deg`` where a
    source gives them (the keys of :class:`~geo_bench.metrics.PoseResult`), ``protocol`` with
    ``task="pose"``, ``area``, ``labels`` (the VIGOR label version the paper used),
    ``orientation_known`` (None where the source does not say), ``venue``, ``unverified`` and a
    ``note``. A number not confirmed from a primary source (paper table or the authors' README) is
    marked ``unverified``; a number no source gave is ``None``, never filled in.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from ..records import ResultRecord

__all__ = ["REPORTED_FORMAT", "reported_pose_records", "reported_records"]

REPORTED_FORMAT = "geo_bench.reported/1"


@lru_cache(maxsize=2)
def _load(name: str = "reported.json") -> tuple[ResultRecord, ...]:
    text = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("format") != REPORTED_FORMAT:
        raise ValueError(f"{name} has format {data.get('format')!r}, expected {REPORTED_FORMAT!r}")
    return tuple(ResultRecord.from_dict(d) for d in data["records"])


def _select(records: tuple[ResultRecord, ...], dataset: str | None, split: str | None) -> list[ResultRecord]:
    out = list(records)
    if dataset is not None:
        known = sorted({r.dataset for r in out})
        if dataset not in known:
            raise ValueError(f"no reported numbers for dataset {dataset!r}; available: {known}")
        out = [r for r in out if r.dataset == dataset]
    if split is not None:
        out = [r for r in out if r.split == split]
    return out


def reported_records(dataset: str | None = None, split: str | None = None) -> list[ResultRecord]:
    """Published results, optionally only one dataset (``"cvusa"``, ``"cvact"``, ``"vigor"``) / split.

    Example:
        >>> recs = reported_records("cvusa")
        >>> all(r.provenance.kind == "reported" and r.provenance.source for r in recs)
        True
    """
    return _select(_load("reported.json"), dataset, split)


def reported_pose_records(dataset: str | None = None, split: str | None = None) -> list[ResultRecord]:
    """Published fine-grained pose numbers (``data/reported_pose.json``), optionally one dataset / split.

    Args:
        dataset: ``"vigor"`` (the only one so far) or None for all.
        split: ``"same_area"`` or ``"cross_area"``, or None for both.

    Returns:
        ``kind="reported"`` records whose metrics are metres / degrees (``mean_m``, ``median_m``,
        ``heading_mean_deg``, ``heading_median_deg``; None where no source gave the number).

    Raises:
        ValueError: an unknown ``dataset`` (the message lists the available ones).

    Example:
        >>> recs = reported_pose_records("vigor", "cross_area")
        >>> sorted({r.recipe for r in recs})
        ['CCVPE', 'FG²', 'HC-Net']
    """
    return _select(_load("reported_pose.json"), dataset, split)
