"""Tables of the optional protocols: limited field of view (R@1 per FoV, orientation unknown) and
corruption robustness (R@1 per corruption, mean over severities, and the relative corruption error).

Convention:
    - Records are told apart by their protocol: an FoV record carries ``fov_protocol``, a corruption
      record ``corruption`` (see :func:`geo_bench.leaderboard.evaluation.expected_protocols`); the main
      leaderboard table shows only the others (:func:`split_records`).
    - One row per (method, variant, seed); when a store holds the same protocol twice for a row, the
      last record wins (the store is append-only).
    - FoV table: ``R@1`` at each FoV, plus the query file's hash prefix, so the query set can be
      checked. Corruption table: the mean over severities of R@1 per corruption, the clean R@1 and the
      mean RCE over corruptions (``mRCE``, percent: (clean - corrupted) / clean).
    - Files are written atomically: ``<stem>_fov.{md,csv}``, ``<stem>_corruption.{md,csv}``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from geo_retrieval.checkpoint import atomic_write_bytes

from ..records import ResultRecord
from .table import format_value, markdown_table

__all__ = [
    "corruption_rows",
    "fov_rows",
    "render_rich_tables",
    "split_records",
    "to_markdown_tables",
    "write_protocol_tables",
]


def split_records(
    records: Sequence[ResultRecord],
) -> tuple[list[ResultRecord], list[ResultRecord], list[ResultRecord]]:
    """``(base, fov, corruption)``: the main-table records and the two optional protocols' records."""
    base, fov, corruption = [], [], []
    for r in records:
        if r.protocol.get("corruption") is not None:
            corruption.append(r)
        elif r.protocol.get("fov_protocol") is not None:
            fov.append(r)
        else:
            base.append(r)
    return base, fov, corruption


def _key(r: ResultRecord) -> tuple[str, str, int | None]:
    return (r.recipe, r.variant, r.provenance.seed)


def fov_rows(records: Sequence[ResultRecord]) -> tuple[list[dict[str, Any]], list[float]]:
    """Rows ``{"method", "variant", "seed", "R@1 @ <fov>", ..., "query files"}`` and the FoVs (descending)."""
    _, fov, _ = split_records(records)
    fovs = sorted({float(r.protocol["fov"]) for r in fov}, reverse=True)
    rows: dict[tuple[str, str, int | None], dict[str, Any]] = {}
    for r in fov:
        row = rows.setdefault(
            _key(r), {"method": r.recipe, "variant": r.variant, "seed": r.provenance.seed, "hashes": {}}
        )
        f = float(r.protocol["fov"])
        row[f"R@1 @ {f:g}"] = float(r.metrics["R@1"])
        row["hashes"][f] = str(r.protocol.get("query_file_sha256", ""))[:8]
    out = []
    for row in rows.values():
        hashes = row.pop("hashes")
        row["query files"] = " ".join(f"{f:g}:{hashes[f]}" for f in fovs if f in hashes)
        out.append(row)
    out.sort(key=lambda r: -max((v for k, v in r.items() if k.startswith("R@1 @")), default=0.0))
    return out, fovs


def corruption_rows(records: Sequence[ResultRecord]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows ``{"method", "variant", "seed", "clean R@1", "<corruption>": mean R@1, ..., "mRCE"}`` and
    the corruption names in the order first seen."""
    _, _, corr = split_records(records)
    names: list[str] = []
    rows: dict[tuple[str, str, int | None], dict[str, Any]] = {}
    rces: dict[tuple[str, str, int | None], dict[str, float]] = {}
    for r in corr:
        name = str(r.protocol["corruption"])
        if name not in names:
            names.append(name)
        row = rows.setdefault(_key(r), {"method": r.recipe, "variant": r.variant, "seed": r.provenance.seed})
        row[name] = float(r.metrics["R@1"])
        if "R@1_clean" in r.metrics:
            row["clean R@1"] = float(r.metrics["R@1_clean"])
        if "RCE" in r.metrics:
            rces.setdefault(_key(r), {})[name] = float(r.metrics["RCE"])
    for key, row in rows.items():
        values = list(rces.get(key, {}).values())
        row["mRCE"] = float(np.mean(values)) if values else None
    out = sorted(rows.values(), key=lambda r: (r["mRCE"] is None, r["mRCE"] or 0.0))
    return out, names


def _md(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    return markdown_table(rows, [(c, c) for c in cols]) + "\n"


def _csv(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({c: row.get(c) for c in cols})
    return buf.getvalue()


def _fov_cols(fovs: Sequence[float]) -> list[str]:
    return ["method", "variant", "seed", *(f"R@1 @ {f:g}" for f in fovs), "query files"]


def _corruption_cols(names: Sequence[str]) -> list[str]:
    return ["method", "variant", "seed", "clean R@1", *names, "mRCE"]


def to_markdown_tables(records: Sequence[ResultRecord]) -> str:
    """Both tables as Markdown sections (empty string when no record has either protocol)."""
    parts = []
    rows, fovs = fov_rows(records)
    if rows:
        parts.append("## Limited field of view, orientation unknown (R@1 %)\n\n" + _md(rows, _fov_cols(fovs)))
    rows_c, names = corruption_rows(records)
    if rows_c:
        parts.append(
            "## Corruption robustness (R@1 %, mean over 5 severities; mRCE %)\n\n"
            + _md(rows_c, _corruption_cols(names))
        )
    return "\n".join(parts)


def write_protocol_tables(
    records: Sequence[ResultRecord], out_dir: str | Path, stem: str = "leaderboard"
) -> dict[str, Path]:
    """Write ``<stem>_fov.{md,csv}`` and ``<stem>_corruption.{md,csv}`` for the protocols present."""
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    rows, fovs = fov_rows(records)
    if rows:
        cols = _fov_cols(fovs)
        paths["fov_markdown"] = atomic_write_bytes(out_dir / f"{stem}_fov.md", _md(rows, cols).encode())
        paths["fov_csv"] = atomic_write_bytes(out_dir / f"{stem}_fov.csv", _csv(rows, cols).encode())
    rows_c, names = corruption_rows(records)
    if rows_c:
        cols = _corruption_cols(names)
        paths["corruption_markdown"] = atomic_write_bytes(
            out_dir / f"{stem}_corruption.md", _md(rows_c, cols).encode()
        )
        paths["corruption_csv"] = atomic_write_bytes(
            out_dir / f"{stem}_corruption.csv", _csv(rows_c, cols).encode()
        )
    return paths


def render_rich_tables(records: Sequence[ResultRecord], console: Any) -> None:
    """Print both tables on a rich console (nothing when no record has either protocol)."""
    rows, fovs = fov_rows(records)
    if rows:
        t = Table(title="Limited field of view, orientation unknown: R@1 %")
        for c in _fov_cols(fovs):
            t.add_column(c, justify="right" if c.startswith("R@") else "left")
        for row in rows:
            t.add_row(*(format_value(row.get(c)) for c in _fov_cols(fovs)))
        console.print(t)
    rows_c, names = corruption_rows(records)
    if rows_c:
        t = Table(title="Corruption robustness: R@1 % (mean over 5 severities), mRCE %")
        for c in _corruption_cols(names):
            t.add_column(c, justify="left" if c in ("method", "variant") else "right", overflow="fold")
        for row in rows_c:
            t.add_row(*(format_value(row.get(c)) for c in _corruption_cols(names)))
        console.print(t)
