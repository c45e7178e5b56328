"""Self-contained offline HTML report of one :meth:`~geo_bench.localize.Localizer.locate` call.

Convention: one section per query with the query image, the top-k candidate tiles (re-read from the
maps, one window each) and a heat map of the query's score at every tile centre over the map extent
(map CRS, east right, north up; flat descriptors only: the cosine of the query against every tile),
the truth (white star, when given), the refined position (red cross) and the best tile (black
square); with a pose model, the pose-refined position (magenta diamond) joined to the best tile's
centre by a dashed line, with an arrow along its heading (half a tile long), and its heading and
confidence in the caption. Every picture is an inline base64 PNG; the page loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from geo_bench.localize.maps import from_latlon, open_maps, read_tiles

if TYPE_CHECKING:
    from geo_bench.localize.index import TileIndex
    from geo_bench.localize.locate import LocateResult

__all__ = ["write_report"]

_THUMB = 128


def _png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(path: str) -> str:
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            rgb.thumbnail((4 * _THUMB, _THUMB))
            return _png(rgb)
    except OSError:
        return ""


def _heatmap(
    index: TileIndex,
    scores: np.ndarray,
    marks: dict[str, tuple[float, float] | None],
    pose_heading: float | None = None,
) -> str:
    import matplotlib  # lazy: heavy, and the backend is chosen here before pyplot loads

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    xy = index.xy
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    size = max(4.0, 4000.0 / max(1, len(xy)) ** 0.5)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=scores, s=size, marker="s", cmap="viridis", linewidths=0)
    fig.colorbar(sc, ax=ax, fraction=0.046, label="score")
    styles = {
        "truth": ("*", "white", 180),
        "refined": ("x", "red", 90),
        "best": ("s", "black", 40),
        "pose": ("D", "magenta", 40),
    }
    pose, best = marks.get("pose"), marks.get("best")
    if pose is not None and best is not None:
        ax.plot([best[0], pose[0]], [best[1], pose[1]], "--", color="magenta", linewidth=0.8)
        if pose_heading is not None:
            length = index.tile_m / 2
            rad = np.deg2rad(pose_heading)  # clockwise from north: east = sin, north = cos
            ax.annotate(
                "",
                xy=(pose[0] + length * np.sin(rad), pose[1] + length * np.cos(rad)),
                xytext=pose,
                arrowprops={"arrowstyle": "->", "color": "magenta", "linewidth": 0.8},
            )
    for name, pos in marks.items():
        if pos is not None:
            m, c, s = styles[name]
            edge: dict[str, Any] = (
                {} if m == "x" else {"edgecolors": "black"}
            )  # an unfilled marker takes no edge colour
            ax.scatter([pos[0]], [pos[1]], marker=m, c=c, s=s, linewidths=0.8, label=name, **edge)
    ax.set_aspect("equal")
    ax.set_xlabel(f"easting (m, {index.crs})")
    ax.set_ylabel("northing (m)")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _refine_line(refine: dict[str, Any] | None) -> str:
    if not refine:
        return ""
    return html.escape(
        f"; pose refinement {refine.get('recipe')} ({refine.get('variant')}) on {refine.get('tile_m', 0):g} m "
        f"tiles at {refine.get('px')} px, orientation {refine.get('orientation')}"
    )


def write_report(
    result: LocateResult, index: TileIndex, path: str | Path, *, descriptors: Any = None
) -> Path:
    """Write the report (module Convention) and return its path.

    Args:
        result: the located queries.
        index: their index (tile centres, descriptors, maps).
        path: the HTML file to write.
        descriptors: optional (N_q, D) query descriptors for the heat maps (default
            ``result.descriptors``); without flat descriptors the heat map shows the top-k only.
    """
    path = Path(path)
    desc = descriptors if descriptors is not None else getattr(result, "descriptors", None)
    grid = None
    try:
        grid = open_maps([m["path"] for m in index.manifest["maps"]], hash_files=False)
    except (OSError, ValueError):
        grid = None  # maps moved: no candidate thumbnails
    tiling = index.manifest["tiling"]
    flat = desc is not None and np.asarray(index.descriptors).ndim == 2
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>geo-bench locate</title>",
        "<style>body{font-family:sans-serif;margin:1em}section{border-top:1px solid #ccc;padding:.5em 0}"
        "figure{display:inline-block;margin:.2em;text-align:center;font-size:11px}img{image-rendering:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style>",
        "</head><body><h1>geo-bench locate</h1>",
        f"<p>index {html.escape(str(index.path))}: {len(index)} tiles of {tiling['tile_m']:g} m in "
        f"{html.escape(index.crs)}; model {html.escape(index.manifest['model']['recipe'])} "
        f"({html.escape(index.manifest['model']['variant'])}); search {html.escape(result.backend)}; "
        f"orientation {html.escape(result.orientation)}"
        + (f" ({result.headings_searched} headings searched)" if result.headings_searched else "")
        + f"; FoV {result.fov_deg or 360:g} deg"
        + _refine_line(result.refine)
        + "</p>",
    ]
    if result.metrics:
        parts.append(
            "<table><tr>"
            + "".join(f"<th>{html.escape(k)}</th>" for k in result.metrics)
            + "</tr><tr>"
            + "".join(f"<td>{v:.1f}</td>" for v in result.metrics.values())
            + "</tr></table>"
        )
    for qi, q in enumerate(result.queries):
        parts.append(f"<section><h2>{html.escape(q.id)}</h2>")
        parts.append(
            f"<figure><img src='{_thumb(q.file)}' alt='query'><figcaption>query "
            f"{html.escape(Path(q.file).name)}</figcaption></figure>"
        )
        if grid is not None:
            ids = np.array([c.tile for c in q.candidates])
            tiles = read_tiles(grid, index.xy[ids], index.map_index[ids], float(tiling["tile_m"]), _THUMB)
            for c, t in zip(q.candidates, tiles):
                head = "" if c.heading_deg is None else f", {c.heading_deg:.0f} deg"
                parts.append(
                    f"<figure><img src='{_png(Image.fromarray(t.transpose(1, 2, 0)))}' alt='tile'>"
                    f"<figcaption>#{c.rank + 1} {c.score:.3f}{head}<br>{c.lat:.6f}, {c.lon:.6f}"
                    "</figcaption></figure>"
                )
        if flat and desc is not None:
            scores = np.asarray(index.descriptors) @ np.asarray(desc[qi], dtype=np.float32)
        else:
            scores = np.full(len(index), np.nan, dtype=np.float32)
            scores[[c.tile for c in q.candidates]] = [c.score for c in q.candidates]
        truth_xy = None
        if q.truth_latlon is not None:
            truth_xy = tuple(from_latlon(np.array([q.truth_latlon]), index.crs)[0])
        best = q.candidates[0]
        marks = {"truth": truth_xy, "refined": q.refined_xy, "best": (best.x, best.y), "pose": q.pose_xy}
        err = "" if q.error_m is None else f" error {q.error_m:.1f} m, refined {q.refined_error_m:.1f} m"
        pose = ""
        if q.pose_latlon is not None:
            pose = (
                f"<br>pose {q.pose_latlon[0]:.6f}, {q.pose_latlon[1]:.6f}, heading {q.pose_heading:.0f} deg, "
                f"confidence {q.pose_confidence:.3f}"
                + ("" if q.pose_error_m is None else f", error {q.pose_error_m:.1f} m")
            )
        parts.append(
            f"<figure><img src='{_heatmap(index, scores, marks, q.pose_heading)}' alt='heat map'><figcaption>"
            f"refined {q.refined_latlon[0]:.6f}, {q.refined_latlon[1]:.6f}{err}{pose}</figcaption></figure>"
        )
        parts.append("</section>")
    parts.append("</body></html>")
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path
