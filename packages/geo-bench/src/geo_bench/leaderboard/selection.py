"""The validation evidence of a run: how each recipe's checkpoint was selected, read back from its
run folder's ``history.json``.

Convention:
    A trained run's ``history.json`` holds one entry per trained epoch; the validated ones carry
    ``val/R@1`` (the selection metric, ties counted against the query, on the selection split: the
    world's val region or a held-out slice of train; the leaderboard validates from half-way through
    the schedule, ``RunConfig.val_from``). :func:`selection_rows` gives per recipe the epochs
    trained, the first validated epoch, the selected epoch (the first epoch with the best val R@1,
    as the trainer keeps it in ``best/``), the val R@1 there and at the last epoch, and the curve
    (None for epochs not validated); :func:`selection_markdown` prints them ("-" where not
    validated). This is what the small variants' settings are judged on: never the test split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..records import ResultRecord
from .table import markdown_table

__all__ = ["selection_markdown", "selection_rows", "write_selection"]


def _history(run_dir: Path) -> list[dict[str, Any]] | None:
    """The epoch entries of ``run_dir/history.json`` (None when absent or unreadable)."""
    path = run_dir / "history.json"
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else None


def _val(entry: dict[str, Any]) -> float | None:
    value = entry.get("val/R@1")
    return float(value) if isinstance(value, (int, float)) else None


def selection_rows(records: Sequence[ResultRecord]) -> list[dict[str, Any]]:
    """One row per trained run among ``records`` (measured, with a run folder as their source):
    ``method``, ``variant``, ``seed``, ``world_seed``, ``selection_split``, ``epochs`` (trained),
    ``first_validated`` and ``best_epoch`` (1-based), ``best_val_R@1``, ``last_val_R@1`` (the last
    validated epoch's) and ``curve`` (val R@1 per trained epoch, None where not validated)."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in records:
        source = r.provenance.source
        if r.provenance.kind != "measured" or not source or source in seen:
            continue
        history = _history(Path(source)) or []
        curve = [_val(e) for e in history]
        validated = [i for i, v in enumerate(curve) if v is not None]
        if not validated:
            continue
        seen.add(source)
        best = max(validated, key=lambda i: (curve[i], -i))
        world = r.protocol.get("world")
        rows.append(
            {
                "method": r.recipe,
                "variant": r.variant,
                "seed": r.provenance.seed,
                "world_seed": world.get("seed") if isinstance(world, dict) else None,
                "selection_split": r.protocol.get("selection_split"),
                "epochs": len(curve),
                "first_validated": validated[0] + 1,
                "best_epoch": int(history[best].get("epoch", best)) + 1,
                "best_val_R@1": curve[best],
                "last_val_R@1": curve[validated[-1]],
                "curve": curve,
            }
        )
    rows.sort(key=lambda row: (row["method"], row["variant"], row["world_seed"] or 0, row["seed"] or 0))
    return rows


def selection_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`selection_rows` (the curve as every epoch's R@1 rounded to an integer,
    "-" for an epoch not validated)."""
    cols = [
        ("method", "method"),
        ("variant", "variant"),
        ("world_seed", "world seed"),
        ("seed", "seed"),
        ("selection_split", "selected on"),
        ("epochs", "epochs"),
        ("best_epoch", "selected epoch"),
        ("best", "val R@1 selected"),
        ("last", "val R@1 last"),
        ("curve_text", "val R@1 per epoch"),
    ]
    body = [
        {
            **row,
            "best": f"{row['best_val_R@1']:.1f}",
            "last": f"{row['last_val_R@1']:.1f}",
            "curve_text": " ".join("-" if v is None else f"{v:.0f}" for v in row["curve"]),
        }
        for row in rows
    ]
    note = (
        "\nval R@1 (%) counts ties against the query; the selected epoch's weights are `best/`, the ones "
        'evaluated on test; "-": an epoch not validated (validation starts half-way through the schedule, '
        "`--val-from`). A curve still rising at its last epoch says more epochs would help on val; one "
        "that peaked early says fewer would do.\n"
    )
    return markdown_table(body, cols) + "\n" + note


def write_selection(
    records: Sequence[ResultRecord], out_dir: str | Path, stem: str = "leaderboard_selection"
) -> dict[str, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` (the rows of :func:`selection_rows`) into ``out_dir``;
    nothing when no record has a run folder with a history."""
    rows = selection_rows(records)
    if not rows:
        return {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"selection_markdown": out_dir / f"{stem}.md", "selection_json": out_dir / f"{stem}.json"}
    paths["selection_markdown"].write_text(selection_markdown(rows), encoding="utf-8")
    paths["selection_json"].write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return paths
