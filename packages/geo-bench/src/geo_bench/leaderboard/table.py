"""Leaderboard tables: measured rows and published (reported) rows, kept in separate sections.

Convention:
    - :func:`measured_rows` turns measured :class:`~geo_bench.records.ResultRecord` s into flat rows:
      method, variant, backbone, polar, synthesis, protocol (orientation known / unknown, FoV,
      CVACT_test rule...), R@1 / R@5 / R@10 / R@1% (with K), dataset-specific metrics (orientation
      accuracy, hit rate, localisation), the compute (train / eval seconds, optimiser steps
      ``train_steps``, ``pairs_seen`` = steps x batch size, derived from the throughput for records
      older than these metrics, and the ``time_budget_s`` when one was set, also named in the
      protocol text), throughput, and the provenance every measured number needs: data, seed,
      commit, hardware. Rows are grouped by protocol (orientation
      known first) and sorted by R@1, best first.
    - :func:`reported_rows` does the same for published numbers: method, dataset / split, polar,
      synthesis, protocol, recalls, **source** (as in ``results.md``) and whether it is unverified.
    - Renderers: :func:`render_rich` (terminal, two tables), :func:`to_markdown` (two sections
      "Measured here" / "Reported by papers"), :func:`to_csv` (one file, a ``section`` column) and
      :func:`to_json` (rows + the full records); :func:`write_outputs` writes the files.
    - Numbers are recalls in percent with one decimal in the text outputs; CSV / JSON keep full precision.
    - **Ties.** R@1 counts ties in the query's favour (the literature's rule). When a record also holds
      ``R@1_pessimistic`` (ties counted against the query) and the two differ by more than
      :data:`TIE_FLAG_POINTS` (1 point), the row's ``ties_flag`` is set: its R@1 cell gets
      :data:`TIE_MARK` and a footnote under the table (rich and Markdown) gives both values and the
      ``tie_share``; CSV / JSON carry ``R@1_pessimistic``, ``tie_share`` and ``ties_flag`` columns.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..records import ResultRecord

__all__ = [
    "MEASURED_COLUMNS",
    "REPORTED_COLUMNS",
    "TIE_FLAG_POINTS",
    "TIE_MARK",
    "format_value",
    "markdown_table",
    "measured_rows",
    "render_rich",
    "reported_rows",
    "to_csv",
    "to_json",
    "to_markdown",
    "write_outputs",
]

MEASURED_COLUMNS = (
    "method",
    "variant",
    "backbone",
    "polar",
    "synthesis",
    "protocol",
    "R@1",
    "R@5",
    "R@10",
    "R@1%",
    "R@1_pessimistic",
    "tie_share",
    "ties_flag",
    "other",
    "train_s",
    "train_steps",
    "pairs_seen",
    "time_budget_s",
    "eval_s",
    "train_pairs_per_s",
    "eval_pairs_per_s",
    "data",
    "seed",
    "commit",
    "hardware",
)
REPORTED_COLUMNS = (
    "method",
    "dataset",
    "split",
    "polar",
    "synthesis",
    "protocol",
    "R@1",
    "R@5",
    "R@10",
    "R@1%",
    "source",
    "unverified",
)
#: R@1 with ties for the query minus R@1 with ties against it, in points, above which a row is flagged.
TIE_FLAG_POINTS = 1.0
#: The marker of a flagged R@1 cell and of its footnote.
TIE_MARK = "†"
_EXTRA_METRICS = (
    ("orientation_within_2", "orient ±2 bins {:.1f}%"),
    ("orientation_median_error_deg", "orient median err {:.1f}°"),
    ("hit_rate", "hit rate {:.1f}%"),
    ("median_error_m", "median err {:.1f} m"),
    ("acc@10m", "≤10 m {:.1f}%"),
)


def _polar(value: Any) -> str:
    if value is None:
        return "?"
    if value is False:
        return "no"
    if value is True:
        return "yes"
    if isinstance(value, dict):
        size = value.get("size")
        return "yes" + (f" {size[0]}x{size[1]}" if isinstance(size, list) and len(size) == 2 else "")
    return str(value)


def _protocol_text(p: dict[str, Any]) -> str:
    parts = []
    ok = p.get("orientation_known")
    if ok is not None:
        parts.append("orientation known" if ok else "orientation unknown")
    fov = p.get("fov")
    if fov is not None and float(fov) != 360.0:
        parts.append(f"FoV {float(fov):g}°")
    if p.get("cvact_test") and p["cvact_test"] != "unknown":
        parts.append(f"CVACT_test {p['cvact_test']}")
    elif p.get("cvact_test") or p.get("cvact_test_note"):
        parts.append(f"CVACT_test protocol {p.get('cvact_test_note') or 'unknown'}")
    if p.get("area"):
        parts.append(f"{p['area']}-area")
    if p.get("trained_on"):
        parts.append(f"trained on {p['trained_on']}")
    if p.get("conflict"):
        parts.append(f"conflicting source: {p['conflict']}")
    if p.get("top1pct_rule") == "int_plus_one":
        parts.append("top-1% K=int(N/100)+1")
    elif p.get("top1pct_rule") == "floor" and p.get("world") is None:  # the world rows all use floor
        parts.append("top-1% K=floor(N/100)")
    if p.get("selected_on_reported_split"):
        parts.append("checkpoint selected on the reported split")
    if _number(p.get("time_budget_s")) is not None:
        parts.append(f"time budget {float(p['time_budget_s']):g} s")
    return ", ".join(parts) or "-"


def _hardware(hw: Any) -> str:
    if isinstance(hw, dict):
        cuda = hw.get("cuda")
        if cuda:
            return ", ".join(cuda) if isinstance(cuda, list) else str(cuda)
        cpu = str(hw.get("cpu", "cpu"))
        cores = hw.get("cores")
        threads = hw.get("torch_threads")
        text = cpu + (f" ({cores} cores" if cores else "")
        if cores:
            text += f", {threads} torch threads)" if threads else ")"
        return text
    return str(hw) if hw else "-"


def _data(r: ResultRecord, *, world_seed: bool = True) -> str:
    """The data of a record in words (``world_seed=False`` leaves the world seed out: the across-world
    summary groups the worlds of one configuration)."""
    world = r.protocol.get("world")
    if isinstance(world, dict):
        n_train = world.get("n_train")
        if not n_train:
            return "synthetic world"
        name = f"synthetic world seed {world.get('seed')}" if world_seed else "synthetic world"
        if "n_val" in world:  # val region, same- and cross-area test cities
            styles = "+".join(world.get("styles") or ())
            return (
                f"{name} ({styles}; cross-area {world.get('cross_style')}): {n_train} train / "
                f"{world['n_val']} val region / {r.n_query} test"
            )
        # before the val region: a held-out slice of train selected
        n_val = round(n_train * world.get("holdout", 0))
        return f"{name}: {n_train - n_val} train / {n_val} held-out / {r.n_query} test"
    return f"{r.dataset} {r.split} ({r.n_query} queries / {r.n_reference} references)"


def _commit(c: str | None) -> str:
    if not c:
        return "-"
    dirty = c.endswith("+dirty")
    return c[:10] + ("+dirty" if dirty else "")


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _pairs_seen(m: dict[str, Any], train_seconds: Any) -> float | None:
    """``pairs_seen``, else the training throughput times the training seconds (older records)."""
    seen = _number(m.get("pairs_seen"))
    if seen is not None:
        return seen
    rate, seconds = _number(m.get("train_pairs_per_s")), _number(train_seconds)
    return float(round(rate * seconds)) if rate is not None and seconds is not None else None


def _ties_flag(r1: Any, r1_pessimistic: Any) -> bool:
    a, b = _number(r1), _number(r1_pessimistic)
    return a is not None and b is not None and a - b > TIE_FLAG_POINTS


def measured_rows(records: Sequence[ResultRecord]) -> list[dict[str, Any]]:
    """Flat rows of measured records (see the module Convention)."""
    rows = []
    for r in records:
        if r.provenance.kind != "measured":
            continue
        m, p = r.metrics, r.protocol
        other = [fmt.format(m[k]) for k, fmt in _EXTRA_METRICS if isinstance(m.get(k), (int, float))]
        rows.append(
            {
                "method": r.recipe,
                "variant": r.variant,
                "backbone": p.get("backbone", "-"),
                "polar": _polar(p.get("polar")),
                "synthesis": "yes" if p.get("synthesis") else "no",
                "protocol": _protocol_text(p),
                "orientation_known": p.get("orientation_known"),
                "R@1": m.get("R@1"),
                "R@5": m.get("R@5"),
                "R@10": m.get("R@10"),
                "R@1%": m.get("R@1%"),
                "K_1pct": m.get("K_1pct"),
                "R@1_pessimistic": m.get("R@1_pessimistic"),
                "tie_share": m.get("tie_share"),
                "ties_flag": _ties_flag(m.get("R@1"), m.get("R@1_pessimistic")),
                "other": "; ".join(other),
                "train_s": r.provenance.train_seconds,
                "train_steps": m.get("train_steps"),
                "pairs_seen": _pairs_seen(m, r.provenance.train_seconds),
                "time_budget_s": p.get("time_budget_s"),
                "eval_s": r.provenance.eval_seconds,
                "train_pairs_per_s": m.get("train_pairs_per_s"),
                "eval_pairs_per_s": m.get("eval_pairs_per_s"),
                "dataset": r.dataset,
                "split": r.split,
                "data": _data(r),
                "data_any_world": _data(r, world_seed=False),
                "world_seed": (p.get("world") or {}).get("seed")
                if isinstance(p.get("world"), dict)
                else None,
                "seed": r.provenance.seed,
                "commit": r.provenance.commit,
                "hardware": _hardware(r.provenance.hardware),
            }
        )
    rows.sort(key=lambda row: (row["orientation_known"] is False, row["protocol"], -(row["R@1"] or 0.0)))
    return rows


def reported_rows(records: Sequence[ResultRecord]) -> list[dict[str, Any]]:
    """Flat rows of reported records, in file order."""
    rows = []
    for r in records:
        if r.provenance.kind != "reported":
            continue
        p = r.protocol
        rows.append(
            {
                "method": r.recipe,
                "dataset": r.dataset,
                "split": r.split,
                "polar": _polar(p.get("polar")) + (f" ({p['polar_note']})" if p.get("polar_note") else ""),
                "synthesis": "yes" if p.get("synthesis") else "no",
                "protocol": _protocol_text(p),
                "R@1": r.metrics.get("R@1"),
                "R@5": r.metrics.get("R@5"),
                "R@10": r.metrics.get("R@10"),
                "R@1%": r.metrics.get("R@1%"),
                "source": r.provenance.source,
                "unverified": bool(p.get("unverified")),
            }
        )
    return rows


def format_value(v: Any, digits: int = 1) -> str:
    """A table cell: floats to ``digits`` decimals, None as "–"."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(row: dict[str, Any], col: str) -> str:
    v = row.get(col)
    if col == "R@1" and row.get("ties_flag") and v is not None:
        return f"{format_value(v)} {TIE_MARK}"
    if col == "R@1%" and row.get("K_1pct") is not None and v is not None:
        return f"{v:.1f} (K={int(row['K_1pct'])})"
    if col in ("train_s", "eval_s"):
        return format_value(v, 0 if col == "train_s" else 1)
    if col in ("train_pairs_per_s", "eval_pairs_per_s", "train_steps", "pairs_seen"):
        return format_value(v, 0)
    if col == "commit":
        return _commit(v)
    if col == "unverified":
        return "unverified" if v else ""
    return format_value(v)


_MD_MEASURED = (
    ("method", "method"),
    ("variant", "variant"),
    ("backbone", "backbone"),
    ("polar", "polar"),
    ("synthesis", "synthesis"),
    ("protocol", "protocol"),
    ("R@1", "R@1"),
    ("R@5", "R@5"),
    ("R@10", "R@10"),
    ("R@1%", "R@1%"),
    ("other", "other"),
    ("train_s", "train s"),
    ("train_steps", "steps"),
    ("pairs_seen", "pairs seen"),
    ("eval_s", "eval s"),
    ("train_pairs_per_s", "train pairs/s"),
    ("eval_pairs_per_s", "eval pairs/s"),
)
_MD_REPORTED = (
    ("method", "method"),
    ("dataset", "dataset"),
    ("split", "split"),
    ("polar", "polar"),
    ("synthesis", "synthesis"),
    ("protocol", "protocol"),
    ("R@1", "R@1"),
    ("R@5", "R@5"),
    ("R@10", "R@10"),
    ("R@1%", "R@1%"),
    ("source", "source"),
    ("unverified", ""),
)


def markdown_table(rows: list[dict[str, Any]], cols: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``cols`` = (key, header) pairs; cells as the leaderboard
    table formats them, ``|`` escaped. No trailing newline."""

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(esc(_cell(row, c)) for c, _ in cols) + " |")
    return "\n".join(lines)


def _tie_footnotes(rows: list[dict[str, Any]]) -> list[str]:
    """One footnote per flagged row (see the module Convention)."""
    out = []
    for r in rows:
        if not r.get("ties_flag"):
            continue
        share = _number(r.get("tie_share"))
        share_text = (
            f"; the true match ties with another reference for {share:.1f} % of the queries"
            if share is not None
            else ""
        )
        out.append(
            f"{TIE_MARK} {r['method']} ({r['variant']}), {r['protocol']}: R@1 {format_value(r['R@1'])} counts ties for the "
            f"query, {format_value(r['R@1_pessimistic'])} with ties against it{share_text}. Identical descriptors tie: the "
            "first number overstates the model (collapsed descriptors, or duplicated references)."
        )
    return out


def _provenance_lines(rows: list[dict[str, Any]]) -> list[str]:
    keys = sorted({(r["data"], r["seed"], _commit(r["commit"]), r["hardware"]) for r in rows}, key=str)
    return [f"- data: {d}; seed {s}; commit `{c}`; hardware: {h}" for d, s, c, h in keys]


def to_markdown(
    measured: Sequence[ResultRecord],
    reported: Sequence[ResultRecord] = (),
    *,
    title: str | None = "Leaderboard",
) -> str:
    """Markdown with a "Measured here" section (rows + their data / seed / commit / hardware) and,
    when ``reported`` is given, a separate "Reported by papers" section with sources."""
    m_rows, r_rows = measured_rows(measured), reported_rows(reported)
    out = []
    if title:
        out += [f"## {title}", ""]
    out += ["### Measured here", ""]
    if m_rows:
        out += [markdown_table(m_rows, _MD_MEASURED), ""]
        for note in _tie_footnotes(m_rows):
            out += [note, ""]
        out += [*_provenance_lines(m_rows), ""]
    else:
        out += ["(no measured results)", ""]
    if r_rows:
        out += ["### Reported by papers (not measured here; source tags as in results.md)", ""]
        out += [markdown_table(r_rows, _MD_REPORTED), ""]
    return "\n".join(out)


def to_csv(measured: Sequence[ResultRecord], reported: Sequence[ResultRecord] = ()) -> str:
    """One CSV with a ``section`` column (``measured`` / ``reported``); full precision."""
    cols = ["section", *dict.fromkeys([*MEASURED_COLUMNS, "K_1pct", "dataset", "split", *REPORTED_COLUMNS])]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in measured_rows(measured):
        writer.writerow({"section": "measured", **row})
    for row in reported_rows(reported):
        writer.writerow({"section": "reported", **row})
    return buf.getvalue()


def to_json(measured: Sequence[ResultRecord], reported: Sequence[ResultRecord] = ()) -> str:
    """``{"measured": {"rows", "records"}, "reported": {"rows", "records"}}`` as JSON text."""
    data = {
        "measured": {"rows": measured_rows(measured), "records": [r.to_dict() for r in measured]},
        "reported": {"rows": reported_rows(reported), "records": [r.to_dict() for r in reported]},
    }
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def render_rich(
    measured: Sequence[ResultRecord],
    reported: Sequence[ResultRecord] = (),
    *,
    console: Any = None,
    title: str = "Leaderboard",
) -> None:
    """Print the measured table and (separately) the reported table with rich."""
    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=200)
    m_rows = measured_rows(measured)
    if m_rows:
        table = Table(title=f"{title}: measured here", show_lines=False)
        cols = [c for c in _MD_MEASURED if c[0] != "eval_pairs_per_s"]
        for key, head in cols:
            numeric = key.startswith("R@") or key.endswith("_s") or key in ("train_steps", "pairs_seen")
            table.add_column(head, justify="right" if numeric else "left", overflow="fold")
        for row in m_rows:
            table.add_row(*(_cell(row, c) for c, _ in cols))
        console.print(table)
        for line in [*_tie_footnotes(m_rows), *_provenance_lines(m_rows)]:
            console.print(line, markup=False)
    r_rows = reported_rows(reported)
    if r_rows:
        table = Table(title="Reported by papers (not measured here)", show_lines=False)
        for key, head in _MD_REPORTED:
            table.add_column(
                head or "flag", justify="right" if key.startswith("R@") else "left", overflow="fold"
            )
        for row in r_rows:
            table.add_row(*(_cell(row, c) for c, _ in _MD_REPORTED))
        console.print(table)


def write_outputs(
    measured: Sequence[ResultRecord],
    reported: Sequence[ResultRecord],
    out_dir: str | Path,
    stem: str = "leaderboard",
) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / f"{stem}.md",
        "csv": out_dir / f"{stem}.csv",
        "json": out_dir / f"{stem}.json",
    }
    paths["markdown"].write_text(to_markdown(measured, reported), encoding="utf-8")
    paths["csv"].write_text(to_csv(measured, reported), encoding="utf-8")
    paths["json"].write_text(to_json(measured, reported), encoding="utf-8")
    return paths
