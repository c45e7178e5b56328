"""Leaderboard figures (matplotlib, Agg backend, PNG).

Convention:
    - :func:`plot_recall_curves`: R@K against K (log x axis) per method, one panel per orientation
      protocol, read from the ``R@K`` metrics of measured records (the evaluation stores a curve).
    - :func:`plot_bars`: grouped bars of R@1 and R@5 per method, one group per method, hatched bars
      for the orientation-unknown protocol, a dashed line at chance (1 / gallery size).
    - :func:`plot_area_bars`: R@1 on the same-area test region beside the cross-area city per
      method (orientation known), the mean over every world seed and training seed in the records
      with one sample standard deviation as an error bar (:func:`area_summary`); written when the
      records have a cross-area evaluation.
    - :func:`plot_retrieval_examples`: per recipe and example query (rows = recipes x queries), the
      panorama, then its top-5 aerial tiles with their scores; the true tile framed green, the others
      red; written atomically.
    All return the written path; figures are closed after saving.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geo_retrieval.checkpoint import atomic_save

from ..protocols.corruptions import CORRUPTIONS
from ..records import ResultRecord

__all__ = [
    "area_summary",
    "plot_area_bars",
    "plot_bars",
    "plot_corruption_heatmap",
    "plot_pose_examples",
    "plot_recall_curves",
    "plot_retrieval_examples",
    "write_plots",
]


def _label(r: ResultRecord) -> str:
    return r.recipe if r.variant in ("none", "reported") else f"{r.recipe} ({r.variant})"


def _curve(r: ResultRecord) -> tuple[list[int], list[float]]:
    pts = []
    for k, v in r.metrics.items():
        m = re.fullmatch(r"R@(\d+)", k)
        if m and isinstance(v, (int, float)):
            pts.append((int(m.group(1)), float(v)))
    pts.sort()
    return [p[0] for p in pts], [p[1] for p in pts]


def _pyplot():
    # matplotlib stays lazy: heavy to import, and the Agg backend must be chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` as a PNG atomically (temporary file, fsync, rename: a killed run never leaves a
    half-written figure) and close it; the one writer of every figure here."""
    import matplotlib.pyplot as plt  # lazy: heavy; loaded after _pyplot chose the Agg backend

    path = Path(path)
    try:
        atomic_save(path, lambda fh: fig.savefig(fh, format="png", **savefig))
    finally:
        plt.close(fig)
    return path


def plot_recall_curves(records: Sequence[ResultRecord], path: str | Path, *, title: str = "Recall@K") -> Path:
    """Recall@K curves per method (see the module Convention)."""
    plt = _pyplot()
    measured = [r for r in records if r.provenance.kind == "measured"]
    groups: dict[str, list[ResultRecord]] = {}
    for r in measured:
        ok = r.protocol.get("orientation_known")
        key = "orientation known" if ok is not False else "orientation unknown"
        groups.setdefault(key, []).append(r)
    keys = sorted(groups) or ["orientation known"]
    # one colour per method in every panel, methods ordered by R@1 in the first panel
    order: list[str] = []
    for key in keys:
        for r in sorted(groups.get(key, []), key=lambda r: -(r.metrics.get("R@1") or 0)):
            if _label(r) not in order:
                order.append(_label(r))
    cmap = plt.get_cmap("tab10")
    colour = {name: cmap(i % 10) for i, name in enumerate(order)}
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys) + 2.2, 3.8), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        for r in sorted(groups.get(key, []), key=lambda r: order.index(_label(r))):
            ks, vs = _curve(r)
            if ks:
                ax.plot(
                    ks, vs, marker=".", markersize=3, linewidth=1.4, label=_label(r), color=colour[_label(r)]
                )
        n_ref = max((r.n_reference or 0) for r in groups.get(key, [])) if groups.get(key) else 0
        if n_ref:
            ks = [k for k in range(1, min(100, n_ref) + 1)]
            ax.plot(ks, [100.0 * k / n_ref for k in ks], "k:", linewidth=1, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("K")
        ax.set_title(key)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("R@K (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (5.2 * len(keys) + 2.2), 1))
    return _save_png(fig, path, dpi=110)


def _chance_line(ax: Any, measured: Sequence[ResultRecord]) -> None:
    """A dotted line at chance R@1 (100 / the largest gallery among ``measured``), if any."""
    n_ref = max((r.n_reference or 0) for r in measured) if measured else 0
    if n_ref:
        ax.axhline(
            100.0 / n_ref, color="k", linestyle=":", linewidth=1, label=f"chance R@1 ({100.0 / n_ref:.2f}%)"
        )


def plot_bars(
    records: Sequence[ResultRecord], path: str | Path, *, title: str = "R@1 / R@5 on the test split"
) -> Path:
    """Grouped R@1 / R@5 bars per method and orientation protocol (see the module Convention)."""
    plt = _pyplot()
    measured = [r for r in records if r.provenance.kind == "measured"]
    methods: list[str] = []
    for r in sorted(
        measured,
        key=lambda r: -(r.metrics.get("R@1") or 0) if r.protocol.get("orientation_known") is not False else 0,
    ):
        if _label(r) not in methods:
            methods.append(_label(r))
    protocols = (
        [True, False] if any(r.protocol.get("orientation_known") is False for r in measured) else [True]
    )
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * len(methods) + 2), 4.0))
    width = 0.8 / (2 * len(protocols))
    colours = {"R@1": "tab:blue", "R@5": "tab:orange"}
    for pi, known in enumerate(protocols):
        for mi, metric in enumerate(("R@1", "R@5")):
            xs, ys = [], []
            for i, name in enumerate(methods):
                rec = next(
                    (
                        r
                        for r in measured
                        if _label(r) == name and (r.protocol.get("orientation_known") is not False) == known
                    ),
                    None,
                )
                if rec is not None and rec.metrics.get(metric) is not None:
                    xs.append(i - 0.4 + width * (pi * 2 + mi + 0.5))
                    ys.append(rec.metrics[metric])
            label = f"{metric}, orientation {'known' if known else 'unknown'}"
            bars = ax.bar(
                xs,
                ys,
                width,
                color=colours[metric],
                alpha=1.0 if known else 0.55,
                hatch=None if known else "//",
                edgecolor="white" if known else "black",
                linewidth=0.4,
                label=label,
            )
            for b, y in zip(bars, ys):
                ax.annotate(
                    f"{y:.0f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom", fontsize=6
                )
    _chance_line(ax, measured)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _save_png(fig, path, dpi=100)


def area_summary(records: Sequence[ResultRecord]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{method label: {area: (mean R@1, sample std, n)}}`` over the measured, orientation-known,
    full-FoV records that carry a protocol ``area`` (``"same"`` / ``"cross"``); one value per record
    (every world seed and training seed); the std is 0.0 when n is 1.

    Example:
        >>> area_summary([])
        {}
    """
    values: dict[str, dict[str, list[float]]] = {}
    for r in records:
        area = r.protocol.get("area")
        if (
            r.provenance.kind != "measured"
            or area not in ("same", "cross")
            or r.protocol.get("orientation_known") is False
            or float(r.protocol.get("fov") or 360.0) != 360.0
            or r.metrics.get("R@1") is None
        ):
            continue
        values.setdefault(_label(r), {}).setdefault(area, []).append(float(r.metrics["R@1"]))
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for label, areas in values.items():
        out[label] = {}
        for area, xs in areas.items():
            arr = np.asarray(xs, dtype=np.float64)
            sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
            out[label][area] = (float(arr.mean()), sd, len(arr))
    return out


def plot_area_bars(records: Sequence[ResultRecord], path: str | Path, *, title: str | None = None) -> Path:
    """Same-area vs cross-area R@1 bars per method, mean +- sample std (:func:`area_summary`),
    sorted by same-area mean; a dotted line at chance (1 / gallery size)."""
    plt = _pyplot()
    summary = area_summary(records)
    methods = sorted(summary, key=lambda m: -summary[m].get("same", (0.0, 0.0, 0))[0])
    n_max = max((v[2] for m in summary.values() for v in m.values()), default=0)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(methods) + 2), 4.0))
    width = 0.38
    for ai, (area, colour, hatch) in enumerate((("same", "tab:blue", None), ("cross", "tab:red", "//"))):
        xs, ys, errs = [], [], []
        for i, name in enumerate(methods):
            if area in summary[name]:
                mean, sd, _ = summary[name][area]
                xs.append(i + (ai - 0.5) * width)
                ys.append(mean)
                errs.append(sd)
        bars = ax.bar(
            xs,
            ys,
            width,
            yerr=errs if n_max > 1 else None,
            capsize=2,
            color=colour,
            alpha=0.85,
            hatch=hatch,
            edgecolor="white" if hatch is None else "black",
            linewidth=0.4,
            label=f"{area}-area test",
        )
        for b, y, e in zip(bars, ys, errs):  # the value above its error bar
            top_of_bar = y + (e if n_max > 1 else 0.0)
            ax.annotate(
                f"{y:.1f}", (b.get_x() + b.get_width() / 2, top_of_bar), ha="center", va="bottom", fontsize=6
            )
    _chance_line(ax, [r for r in records if r.provenance.kind == "measured" and r.protocol.get("area")])
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("R@1 (%), orientation known")
    top = max((v[0] + v[1] for m in summary.values() for v in m.values()), default=0.0)
    ax.set_ylim(0, min(100.0, max(10.0, 1.15 * top + 5)))
    spread = f"mean ± sd over {n_max} runs" if n_max > 1 else "one run"
    ax.set_title(title or f"Same-area vs cross-area R@1 ({spread})")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _save_png(fig, path, dpi=100)


def write_plots(
    records: Sequence[ResultRecord], out_dir: str | Path, stem: str = "leaderboard"
) -> dict[str, Path]:
    """``<stem>_recall.png`` and ``<stem>_bar.png`` in ``out_dir``, and ``<stem>_areas.png``
    (:func:`plot_area_bars`) when the records have a cross-area evaluation."""
    out_dir = Path(out_dir)
    paths = {
        "recall_curves": plot_recall_curves(records, out_dir / f"{stem}_recall.png"),
        "bar_chart": plot_bars(records, out_dir / f"{stem}_bar.png"),
    }
    if any(r.protocol.get("area") == "cross" for r in records):
        paths["area_chart"] = plot_area_bars(records, out_dir / f"{stem}_areas.png")
    return paths


def _image(x: Any) -> np.ndarray:
    """(3, H, W) float in [0, 1] or uint8 tensor / array -> (H, W, 3) float array in [0, 1]."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.max(initial=0.0) > 1.0:
        arr = arr / 255.0
    return np.clip(arr, 0.0, 1.0)


def plot_retrieval_examples(
    examples: Mapping[str, Mapping[str, Any]], test: Any, path: str | Path, *, title: str | None = None
) -> Path:
    """Retrieval examples: one row per (recipe, query): the query panorama, then the top-k aerial
    tiles with their scores, the true tile framed green (and "true" in its caption), wrong ones red.

    Convention: ``examples`` maps a recipe label to :func:`~.runner.retrieval_examples`' dict
    (``query_index``, ``query_id``, ``true_index``, ``top_index``, ``top_score``); ``test[i]``
    gives ``"ground"`` (3, H, W) and ``"aerial"`` (3, h, w) images in [0, 1] (or uint8). A row's
    title gives the rank of the true tile when it is outside the top k. The layout is
    ``rows = sum of queries over recipes``, ``columns = 1 + k`` (the panorama spans two columns
    of width); the PNG is written atomically (temporary file, fsync, rename).

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: ``examples`` is empty or a recipe has no queries.
    """
    if not examples:
        raise ValueError("examples is empty: nothing to plot")
    rows: list[tuple[str, int, str, int, list[int], list[float]]] = []
    for label, ex in examples.items():
        if not ex.get("query_index"):
            raise ValueError(f"examples[{label!r}] has no queries")
        for qi, qid, true, top, score in zip(
            ex["query_index"], ex["query_id"], ex["true_index"], ex["top_index"], ex["top_score"]
        ):
            rows.append(
                (label, int(qi), str(qid), int(true), [int(t) for t in top], [float(v) for v in score])
            )
    k = max(len(r[4]) for r in rows)
    plt = _pyplot()
    fig_h = 1.45 * len(rows) + 0.5
    fig = plt.figure(figsize=(2.0 * (k + 2), fig_h))
    # margins in inches, not fractions: with many rows a fractional top margin left inches of blank
    grid = fig.add_gridspec(
        len(rows), k + 2, wspace=0.08, hspace=0.45, top=1 - 0.55 / fig_h, bottom=0.1 / fig_h
    )
    cache: dict[int, dict[str, Any]] = {}

    def sample(i: int) -> dict[str, Any]:
        if i not in cache:
            cache[i] = test[i]
        return cache[i]

    try:
        for r, (label, qi, qid, true, top, score) in enumerate(rows):
            ax = fig.add_subplot(grid[r, 0:2])
            ax.imshow(_image(sample(qi)["ground"]), aspect="auto")
            hit = (
                "true tile at rank 1"
                if top and top[0] == true
                else (
                    f"true tile at rank {top.index(true) + 1}" if true in top else f"true tile not in top {k}"
                )
            )
            ax.set_title(f"{label}: query {qid} ({hit})", fontsize=7, loc="left")
            ax.set_axis_off()
            for c, (j, value) in enumerate(zip(top, score)):
                ax = fig.add_subplot(grid[r, 2 + c])
                ax.imshow(_image(sample(j)["aerial"]))
                ok = j == true
                ax.set_title(
                    f"#{c + 1} {value:.2f}" + (" true" if ok else ""),
                    fontsize=6,
                    color="green" if ok else "black",
                )
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_edgecolor("limegreen" if ok else "red")
                    spine.set_linewidth(3.0 if ok else 0.8)
        fig.suptitle(
            title or f"Top-{k} retrievals of fixed test queries (green: the true tile)",
            fontsize=9,
            y=1 - 0.15 / fig_h,
        )
    except BaseException:
        plt.close(fig)
        raise
    return _save_png(fig, path, dpi=90, bbox_inches="tight")


def plot_corruption_heatmap(
    rows: Mapping[str, Mapping[str, Any]], path: str | Path, *, metric: str = "R@1", title: str | None = None
) -> Path:
    """Heat map of corruption robustness: one row per recipe, one column per corruption.

    Convention: ``rows`` maps a recipe label to either ``{corruption name: value}`` (the value already
    averaged over severities) or a :func:`geo_bench.protocols.summarise_corruptions` table, from which
    ``mean_R@1`` (``metric="R@1"``) or ``RCE`` (``metric="RCE"``) per corruption is read. Columns follow
    the registry order (noise, blur, weather, digital; group names above, white rules between groups),
    unknown names last, then a ``mean`` column (the table's ``mean_R@1`` / ``mRCE``, else the mean of the
    row's cells). Rows keep the given order. R@1 uses viridis (bright = better) on [0, 100] for percents
    ([0, 1] when every value is <= 1); RCE uses magma_r (dark = worse) from min(0, lowest) to
    max(highest, 1e-6). Missing cells are grey. Every cell is annotated; the PNG is written atomically
    (temporary file, fsync, rename) and the figure closed.

    Returns:
        ``Path(path)``.
    """
    if metric not in ("R@1", "RCE"):
        raise ValueError(f"metric must be 'R@1' or 'RCE', got {metric!r}")
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    cell_key, mean_key = ("mean_R@1", "mean_R@1") if metric == "R@1" else ("RCE", "mRCE")
    table: dict[str, dict[str, float]] = {}
    means: dict[str, float | None] = {}
    for label, row in rows.items():
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{label!r}] must be a mapping, got {type(row).__name__}")
        if "corruptions" in row:
            cells = {n: c.get(cell_key) for n, c in row["corruptions"].items()}
            means[label] = row.get(mean_key)
        else:
            cells, means[label] = dict(row), None
        table[label] = {n: float(v) for n, v in cells.items() if v is not None}
    names = [n for n in CORRUPTIONS if any(n in r for r in table.values())]
    names += sorted({n for r in table.values() for n in r} - set(names))
    if not names:
        raise ValueError("rows name no corruption values")
    columns = [*names, "mean"] if len(names) > 1 else names
    data = np.full((len(table), len(columns)), np.nan)
    for i, (label, cells) in enumerate(table.items()):
        for j, name in enumerate(names):
            if name in cells:
                data[i, j] = cells[name]
        if len(columns) > len(names):
            mean = means[label]
            data[i, -1] = float(mean) if mean is not None else (np.nanmean(data[i, :-1]) if cells else np.nan)
    finite = data[np.isfinite(data)]
    if metric == "R@1":
        cmap_name, vmin = "viridis", 0.0
        vmax = 1.0 if finite.size and finite.max() <= 1.0 else 100.0
        cbar_label, fmt = "R@1, mean over severities" + (" (%)" if vmax == 100.0 else ""), "{:.1f}"
    else:
        cmap_name = "magma_r"
        vmin = min(0.0, float(finite.min())) if finite.size else 0.0
        vmax = max(float(finite.max()), 1e-6) if finite.size else 1.0
        cbar_label, fmt = "relative corruption error (R@1 clean - corrupt) / clean", "{:.2f}"
    plt = _pyplot()
    cmap = plt.get_cmap(cmap_name).with_extremes(bad="#d9d9d9")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * len(columns) + 3.2), max(2.6, 0.42 * len(table) + 2.2)))
    try:
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                value = data[i, j]
                if not np.isfinite(value):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="#555555")
                    continue
                shade = (value - vmin) / (vmax - vmin) if vmax > vmin else 0.5
                dark = shade < 0.55 if metric == "R@1" else shade > 0.45
                ax.text(
                    j,
                    i,
                    fmt.format(value),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if dark else "black",
                )
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([c.replace("_", " ") for c in columns], rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(len(table)))
        ax.set_yticklabels(list(table), fontsize=7)
        groups = [CORRUPTIONS[n].group if n in CORRUPTIONS else "other" for n in names]
        start = 0
        for j in range(1, len(names) + 1):
            if j == len(names) or groups[j] != groups[start]:
                ax.text(
                    (start + j - 1) / 2,
                    -0.7,
                    groups[start],
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    fontweight="bold",
                )
                if j < len(columns):
                    ax.axvline(j - 0.5, color="white", linewidth=2.5 if j == len(names) else 1.5)
                start = j
        ax.set_ylim(len(table) - 0.5, -1.0)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        cbar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.02)
        cbar.set_label(cbar_label, fontsize=7)
        cbar.ax.tick_params(labelsize=6)
        default = (
            "R@1 under corruption (mean over severities)" if metric == "R@1" else "Relative corruption error"
        )
        ax.set_title(title or default, fontsize=9)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return _save_png(fig, path, dpi=110)


def plot_pose_examples(
    examples: Sequence[Mapping[str, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """Fine-grained pose examples: per query, the panorama and the aerial tile with the predicted
    position probability over it, the predicted (red) and true (green) positions and headings, and
    the tile centre (white cross: the retrieval-only answer).

    Convention: each example holds ``ground`` (3, H, W) and ``aerial`` (3, S, S) in [0, 1],
    ``probability`` (S, S) (the model's heatmap at the tile's size), ``pred_px`` / ``true_px`` (row,
    col), ``pred_heading`` / ``true_heading`` (degrees clockwise from north; arrows point that way,
    north up), ``error_m`` and ``label``. The PNG is written atomically.

    Raises:
        ValueError: no examples.
    """
    if not examples:
        raise ValueError("examples is empty: nothing to plot")
    plt = _pyplot()
    n = len(examples)
    fig = plt.figure(figsize=(7.6, 2.9 * n + 0.4))
    grid = fig.add_gridspec(n, 2, width_ratios=[2.2, 1.0], wspace=0.05, hspace=0.35)
    for i, ex in enumerate(examples):
        ground = np.asarray(ex["ground"], dtype=np.float32).transpose(1, 2, 0).clip(0, 1)
        aerial = np.asarray(ex["aerial"], dtype=np.float32).transpose(1, 2, 0).clip(0, 1)
        prob = np.asarray(ex["probability"], dtype=np.float64)
        s = aerial.shape[0]
        ax_g = fig.add_subplot(grid[i, 0])
        ax_g.imshow(ground)
        ax_g.set_axis_off()
        ax_g.set_title(
            f"{ex['label']}: panorama, centre column heading {ex['true_heading']:.0f} deg", fontsize=8
        )
        ax_a = fig.add_subplot(grid[i, 1])
        ax_a.imshow(aerial)
        ax_a.imshow(
            prob / max(prob.max(), 1e-12), cmap="magma", alpha=0.55, extent=(-0.5, s - 0.5, s - 0.5, -0.5)
        )
        arrow = s * 0.12
        for (r, c), h, colour in (
            (ex["true_px"], ex["true_heading"], "lime"),
            (ex["pred_px"], ex["pred_heading"], "red"),
        ):
            ax_a.plot([c], [r], "o", color=colour, markersize=5, markeredgecolor="black", markeredgewidth=0.5)
            if np.isfinite(h):
                rad = np.deg2rad(h)  # clockwise from north, north up: d(col) = sin, d(row) = -cos
                ax_a.arrow(c, r, arrow * np.sin(rad), -arrow * np.cos(rad), color=colour, width=s * 0.008)
        ax_a.plot([(s - 1) / 2], [(s - 1) / 2], "x", color="white", markersize=6)
        ax_a.set_xlim(-0.5, s - 0.5)
        ax_a.set_ylim(s - 0.5, -0.5)
        ax_a.set_axis_off()
        ax_a.set_title(
            f"error {ex['error_m']:.1f} m, heading {ex['pred_heading']:.0f} deg "
            f"(off by {ex.get('heading_error_deg', float('nan')):.0f})",
            fontsize=8,
        )
    if title:
        fig.suptitle(title, fontsize=9)
    return _save_png(fig, path, dpi=90, bbox_inches="tight")
