"""Across-seed summary of leaderboard records: mean ± sample standard deviation per method.

Convention:
    :func:`seed_summary` groups measured records by method, variant, protocol text (as in
    :func:`~geo_bench.leaderboard.table.measured_rows`) and data, and gives, for R@1 / R@5 / R@10,
    the mean, the sample standard deviation (``ddof=1``; None with one seed) and the per-seed
    values in seed order. A group with two records of the same seed is refused (it would count one
    seed twice). Rows are ordered like the leaderboard: orientation known first, then by mean R@1,
    best first. Written as ``leaderboard_seeds.md`` / ``.json`` by ``geo-bench leaderboard --seeds``.
    ``over="world_seed"`` summarises over synthetic worlds instead (records of one training seed,
    grouped by the world's configuration without its seed): ``leaderboard_worlds.md`` / ``.json`` by
    ``geo-bench leaderboard --world-seeds``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..records import ResultRecord
from .table import measured_rows

__all__ = ["SEED_METRICS", "mean_std_text", "seed_summary", "seeds_markdown", "write_seed_summary"]

SEED_METRICS = ("R@1", "R@5", "R@10")


def seed_summary(records: Sequence[ResultRecord], over: str = "seed") -> list[dict[str, Any]]:
    """One row per (method, variant, protocol, data): ``n_seeds``, ``seeds`` and, per metric in
    :data:`SEED_METRICS`, ``<metric>_mean``, ``<metric>_std`` and ``<metric>_values``.

    ``over``: ``"seed"`` (training seeds of one world) or ``"world_seed"`` (synthetic worlds, one
    training seed; ``seeds`` then lists the world seeds)."""
    if over not in ("seed", "world_seed"):
        raise ValueError(f"over must be 'seed' or 'world_seed', got {over!r}")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in measured_rows(records):
        if over == "seed":
            key = (row["method"], row["variant"], row["protocol"], row["data"])
        else:
            key = (
                row["method"],
                row["variant"],
                row["protocol"],
                f"{row['data_any_world']}, seed {row['seed']}",
            )
        groups.setdefault(key, []).append({**row, "seed": row[over]})
    out = []
    for (method, variant, protocol, data), rows in groups.items():
        seeds = [r["seed"] for r in rows]
        if len(set(seeds)) != len(seeds):
            raise ValueError(
                f"{method} ({variant}, {protocol}): more than one record for a seed in {sorted(seeds)}; "
                "pass one record per seed (e.g. one commit's records)"
            )
        rows = sorted(rows, key=lambda r: r["seed"])
        entry: dict[str, Any] = {
            "method": method,
            "variant": variant,
            "protocol": protocol,
            "data": data,
            "orientation_known": rows[0]["orientation_known"],
            "n_seeds": len(rows),
            "seeds": [r["seed"] for r in rows],
        }
        for metric in SEED_METRICS:
            values = [float(r[metric]) for r in rows if r[metric] is not None]
            entry[f"{metric}_values"] = values
            entry[f"{metric}_mean"] = statistics.fmean(values) if values else None
            entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(entry)
    out.sort(key=lambda e: (e["orientation_known"] is False, e["protocol"], -(e["R@1_mean"] or 0.0)))
    return out


def mean_std_text(entry: dict[str, Any], metric: str) -> str:
    """``"21.6 ± 4.8"`` (one decimal; the mean alone with one seed, "–" without values)."""
    mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
    if mean is None:
        return "–"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def seeds_markdown(summary: Sequence[dict[str, Any]], over: str = "seed") -> str:
    """A Markdown table: method, variant, protocol, seeds, R@1 / R@5 / R@10 as mean ± std, and the
    per-seed R@1 values (``over="world_seed"``: per world)."""
    what = "world seeds" if over == "world_seed" else "seeds"
    lines = [
        f"| method | variant | protocol | {what} | R@1 | R@5 | R@10 | R@1 per {what[:-1]} |",
        "|" + "---|" * 8,
    ]
    for e in summary:
        per_seed = ", ".join(f"{v:.1f}" for v in e["R@1_values"])
        cells = [
            e["method"],
            e["variant"],
            e["protocol"],
            ", ".join(str(s) for s in e["seeds"]),
            *(mean_std_text(e, m) for m in SEED_METRICS),
            per_seed,
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    note = (
        "synthetic worlds (cities, cameras, appearance), one training seed"
        if over == "world_seed"
        else "training seeds (initialisation, data order, augmentation)"
    )
    return "\n".join(lines) + f"\n\nmean ± sample standard deviation over {note}\n"


def write_seed_summary(
    records: Sequence[ResultRecord], out_dir: str | Path, stem: str = "leaderboard_seeds", over: str = "seed"
) -> dict[str, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` (the rows of :func:`seed_summary`) into ``out_dir``."""
    summary = seed_summary(records, over=over)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {f"{stem}_markdown": out_dir / f"{stem}.md", f"{stem}_json": out_dir / f"{stem}.json"}
    paths[f"{stem}_markdown"].write_text(seeds_markdown(summary, over=over), encoding="utf-8")
    paths[f"{stem}_json"].write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return paths
