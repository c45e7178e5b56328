"""The leaderboard's fine-grained pose table: where inside the aerial tile the camera stood, and which
way it faced (``geo-bench leaderboard --pose``).

Convention:
    - **Data.** On the synthetic world: the world's train / val / test stripes
      (:class:`~.data.WorldConfig`: same styles, seed, stripes, counts and image sizes; districts
      of at least :data:`POSE_MIN_DISTRICT_M`) with tiles whose centre is off the camera by up to a
      quarter tile on each axis (:func:`~geo_bench.world.render_world_pose`; the wider split
      buffers this needs place the cameras apart from the retrieval world's), rendered once and
      cached under ``<out>/cache``. On VIGOR (``--dataset vigor``):
      :class:`~geo_bench.datasets.VIGORPose` with the positive tiles, the run's area and label
      version; a seeded slice of train is held out for selection.
    - **Training and selection.** Each pose recipe (``list_recipes(task="pose")``) trains with the
      leaderboard's trainer (:func:`~.training.train_recipe`, resumable) and keeps the epoch with the
      lowest median position error on the selection split (orientation unknown); test is read once.
    - **Protocols.** Every test is scored twice: orientation ``known`` (the true heading given as a
      prior) and ``unknown`` (panoramas rolled by seeded random whole columns); records say which in
      ``protocol.orientation_known`` and carry ``task="pose"``, the label version, the tile's metres
      per pixel and the largest camera offset.
    - **Baseline.** ``tile centre`` predicts the tile's centre pixel for every query: what retrieval
      alone gives (the locate workflow's answer for a retrieved tile). It has no heading.
    - **Metrics.** :func:`geo_bench.metrics.pose_metrics` (mean / median metres, recall at 1 / 3 / 5
      m, lateral / longitudinal along the true heading, heading errors and recall at 1 / 3 / 5
      degrees).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geo_retrieval.checkpoint import atomic_save, atomic_write_bytes
from geo_retrieval.pose.inference import (
    PosePredictions,
    decode_model_pose,
    pose_batch_targets,
    predict_poses,
    roll_headings,
)
from geo_retrieval.pose.recipes import POSE_EVAL_SEED
from geo_retrieval.recipes import Recipe, list_recipes
from geo_retrieval.run_folder import RunLayout
from geo_retrieval.training import BatchTransform

from ..datasets import VIGORPose
from ..metrics.pose import pose_metrics
from ..records import ResultRecord, collect_provenance, git_commit
from ..store import ResultStore
from ..world import WorldPose, city_style, render_world_pose
from .checkpoints import write_run_json
from .config import RunConfig, _hash, get_recipe_or_raise
from .data import WorldConfig
from .plots import plot_pose_examples
from .progress import ProgressBoard, ProgressView
from .runner import _queued_event
from .training import EventSink, train_recipe

__all__ = [
    "POSE_BASELINE",
    "POSE_N_TRAIN",
    "PoseData",
    "evaluate_pose_model",
    "open_pose_datasets",
    "pose_examples",
    "pose_records_table",
    "run_pose_leaderboard",
    "tile_centre_predictions",
    "write_pose_outputs",
]

log = logging.getLogger(__name__)

POSE_BASELINE = "tile centre"
#: the pose world's smallest district: its val stripe must hold cameras whose off-centre tiles keep
#: clear of the neighbouring stripes (buffers of half a tile + the offset's diagonal)
POSE_MIN_DISTRICT_M = 700.0
#: training cameras of the default pose world: the small ccvpe over-fits the retrieval world's 1,200
#: (val median 7.3 m after 5 epochs, rising after; 4.1 m with 2,000, chosen on val)
POSE_N_TRAIN = 2000
_POSE_CACHE_FORMAT = 1


@dataclass
class PoseData:
    """The pose datasets of a run (``val`` is None on real data: a slice of train is held out)."""

    train: Any
    val: Any
    test: Any
    protocol: dict[str, Any]


# ------------------------------------------------------------------------------------------------ data


def _world_key(world: WorldConfig) -> str:
    text = json.dumps({**world.to_dict(), "pose_cache": _POSE_CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _load_world_pose(world: WorldConfig, split: str, cache_dir: Path, progress: bool) -> WorldPose:
    num = world.split_size(split)
    path = cache_dir / f"pose-{_world_key(world)}-{split}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
            return WorldPose(arrays, split)
        except (OSError, ValueError, KeyError, EOFError) as err:  # a damaged cache is rendered again
            log.warning("pose cache %s unreadable (%s); rendering again", path, err)
    arrays = render_world_pose(
        split,
        num,
        world.seed,
        city=[city_style(s, size_m=max(world.district_m, POSE_MIN_DISTRICT_M)) for s in world.styles],
        ground_size=world.ground_size,
        aerial_size=world.aerial_size,
        split_fractions=world.split_fractions,
        progress=progress,
    )
    atomic_save(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
    return WorldPose(arrays, split)


def open_pose_datasets(
    cfg: RunConfig, cache_dir: str | Path, *, progress: bool = False, n_train: int | None = None
) -> PoseData:
    """The pose datasets of a run (see the module Convention); ``n_train``: training cameras of the
    pose world (default the world's ``n_train``)."""
    cache_dir = Path(cache_dir)
    if cfg.dataset == "synthetic":
        world = cfg.world if n_train is None else replace(cfg.world, n_train=int(n_train))
        splits = {s: _load_world_pose(world, s, cache_dir, progress) for s in ("train", "val", "test")}
        proto = dict(splits["test"].protocol)
        proto.pop("split", None)
        proto.pop("n", None)
        proto["n_train"] = len(splits["train"])
        return PoseData(
            splits["train"], splits["val"], splits["test"], {**proto, "labels": "exact (rendered)"}
        )
    if cfg.dataset == "vigor":
        common = cfg.vigor_options()
        if cfg.cache is not None:
            common["cache"] = cfg.cache
        root = str(cfg.root)
        train = VIGORPose(root, "train", **common)
        test = VIGORPose(root, "test", **common)
        proto = dict(test.protocol)
        return PoseData(train, None, test, proto)
    raise ValueError(f"the pose table runs on the synthetic world or VIGOR, not {cfg.dataset!r}")


# ------------------------------------------------------------------------------------------------ evaluation


def tile_centre_predictions(dataset: Any) -> PosePredictions:
    """The retrieval-only answer: every camera at its tile's centre pixel (no heading)."""
    rows = [dataset[i] for i in range(len(dataset))]
    size = np.array([float(r["aerial_px"]) for r in rows])
    centre = np.stack([(size - 1) / 2, (size - 1) / 2], axis=1)
    truth = np.stack([np.asarray(r["camera_px"], dtype=np.float64) for r in rows])
    return PosePredictions(
        ids=[str(r["id"]) for r in rows],
        pred_px=centre,
        true_px=truth,
        pred_heading=np.full(len(rows), np.nan),
        true_heading=np.array([float(r["heading"]) for r in rows]),
        metres_per_px=np.array([float(r["metres_per_px"]) for r in rows]),
        peak_probability=np.full(len(rows), np.nan),
        orientation="unknown",
    )


def predictions_metrics(pred: PosePredictions, *, with_heading: bool) -> dict[str, float | int]:
    """:func:`~geo_bench.metrics.pose_metrics` of predictions in (east, north) metres."""
    p, t = pred.en_metres()
    return pose_metrics(p, t, pred.true_heading, pred.pred_heading if with_heading else None).as_dict()


def evaluate_pose_model(
    model: Any,
    recipe: Recipe,
    dataset: Any,
    *,
    orientation: str,
    device: Any = "cpu",
    batch_size: int | None = None,
    progress: bool = False,
) -> PosePredictions:
    """Predictions of a trained pose model on ``dataset`` (the recipe's evaluation preprocessing)."""
    transform = BatchTransform.from_recipe(recipe)
    return predict_poses(
        model,
        dataset,
        prepare=lambda b: transform(b, None, train=False),
        orientation=orientation,
        seed=POSE_EVAL_SEED,
        batch_size=batch_size or recipe.batch_size,
        device=device,
        progress=progress,
    )


def pose_examples(
    model: Any,
    recipe: Recipe,
    dataset: Any,
    indices: Sequence[int],
    *,
    label: str,
    orientation: str = "unknown",
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """What :func:`~.plots.plot_pose_examples` draws for ``dataset[indices]``: images (the panorama
    as the model saw it), the heatmap resized to the tile, predicted and true pixels and headings,
    errors. ``orientation="unknown"`` rolls the panoramas by the evaluation's seeded shifts (the
    first ones of :data:`~geo_retrieval.pose.recipes.POSE_EVAL_SEED`), ``"known"`` gives the true
    heading as a zero-range prior."""
    if orientation not in ("known", "unknown"):
        raise ValueError(f"orientation must be 'known' or 'unknown', got {orientation!r}")
    transform = BatchTransform.from_recipe(recipe)
    rows = [dataset[int(i)] for i in indices]
    batch = {
        "ground": torch.stack([r["ground"] for r in rows]),
        "aerial": torch.stack([r["aerial"] for r in rows]),
        "camera_px": torch.stack([torch.as_tensor(r["camera_px"]) for r in rows]),
        "aerial_px": torch.tensor([int(r["aerial_px"]) for r in rows]),
        "heading": torch.tensor([float(r["heading"]) for r in rows]),
    }
    size = int(model.aerial_size)
    _, heading = pose_batch_targets(batch, size)
    shown = batch["ground"]
    prepared = transform(dict(batch), None, train=False)
    ground = prepared["ground"]
    if orientation == "unknown":
        gen = torch.Generator().manual_seed(POSE_EVAL_SEED)
        shifts = torch.randint(0, ground.shape[-1], (ground.shape[0],), generator=gen)
        ground, heading = roll_headings(ground, heading, shifts)
        scale = shown.shape[-1] / ground.shape[-1]
        shown, _ = roll_headings(shown, heading, (shifts.double() * scale).round().long())
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            if orientation == "unknown":
                out = model(ground.to(device), prepared["aerial"].to(device))
            else:
                out = model(ground.to(device), prepared["aerial"].to(device), heading.to(device), 0.0)
            pred, pred_heading, prob = decode_model_pose(model, out)
    finally:
        model.train(was)
    examples = []
    for k, r in enumerate(rows):
        s = int(r["aerial_px"])
        back = s / size
        p = ((pred[k].double().cpu() + 0.5) * back - 0.5).numpy()
        t = np.asarray(r["camera_px"], dtype=np.float64)
        heat = F.interpolate(
            prob[k : k + 1].float().cpu(), size=(s, s), mode="bilinear", align_corners=False
        )[0, 0]
        true_heading = float(heading[k])
        err_deg = abs((float(pred_heading[k]) - true_heading + 180.0) % 360.0 - 180.0)
        examples.append(
            {
                "label": f"{label}, {r['id']}",
                "ground": shown[k].numpy(),
                "aerial": r["aerial"].numpy(),
                "probability": heat.numpy(),
                "pred_px": p,
                "true_px": t,
                "pred_heading": float(pred_heading[k]),
                "true_heading": true_heading,
                "error_m": float(np.linalg.norm((p - t) * float(r["metres_per_px"]))),
                "heading_error_deg": err_deg,
            }
        )
    return examples


# ------------------------------------------------------------------------------------------------ the run


def _record(
    *,
    recipe: str,
    variant: str,
    cfg: RunConfig,
    n: int,
    metrics: dict[str, Any],
    protocol: dict[str, Any],
    train_seconds: float | None,
    eval_seconds: float,
    source: str,
    commit: str | None,
) -> ResultRecord:
    prov = collect_provenance(
        seed=cfg.seed, train_seconds=train_seconds, eval_seconds=eval_seconds, source=source
    )
    if commit is not None:  # the code a long run imported at its start
        prov = dataclasses.replace(prov, commit=commit)
    return ResultRecord(
        recipe=recipe,
        variant=variant,
        dataset=cfg.dataset,
        split=cfg.test_split,
        protocol=protocol,
        n_query=n,
        n_reference=1,
        metrics=metrics,
        provenance=prov,
    )


def _base_protocol(cfg: RunConfig, data: PoseData, config: str) -> dict[str, Any]:
    extra: dict[str, Any] = (
        {"world": cfg.world.to_dict(), "world_seed": cfg.world.seed}
        if cfg.dataset == "synthetic"
        else {"area": cfg.vigor_area}
    )
    return {
        "task": "pose",
        "polar": False,
        "fov": 360.0,
        "top1pct_rule": None,
        "tie_rule": None,
        "cvact_test": None,
        "labels": data.protocol.get("labels"),
        "config": config,
        "pose_data": data.protocol,
        "orientation_eval_seed": POSE_EVAL_SEED,
        **extra,
    }


def _stored(
    store: ResultStore, recipe: str, variant: str, cfg: RunConfig, config: str, commit: str
) -> list[ResultRecord]:
    """The store's records of this pose run (both orientation settings), or [] when any is missing."""
    mine = [
        r
        for r in store.records(recipe=recipe, variant=variant, dataset=cfg.dataset, split=cfg.test_split)
        if r.provenance.kind == "measured"
        and r.protocol.get("task") == "pose"
        and r.protocol.get("config") == config
        and r.provenance.seed == cfg.seed
        and r.provenance.commit == commit
    ]
    found = []
    for known in (True, False):
        hits = [r for r in mine if r.protocol.get("orientation_known") is known]
        if not hits:
            return []
        found.append(hits[-1])
    return found


def run_pose_leaderboard(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    recipes: Sequence[str] | None = None,
    store: ResultStore | None = None,
    progress: bool = False,
    on_event: Callable[[str], None] | None = None,
    events: EventSink | None = None,
    predictions: dict[str, PosePredictions] | None = None,
    figure: str | Path | None = None,
    figure_queries: int = 4,
    n_train: int | None = None,
    live_console: Any = None,
) -> list[ResultRecord]:
    """Train and evaluate the pose recipes and the tile-centre baseline (see the module Convention).

    Args:
        cfg: the run configuration (variant, epochs / batch overrides, seed, data).
        out_dir: the leaderboard folder (cache, runs, store).
        recipes: pose recipe names (default: every registered pose recipe).
        store: the results store (default ``<out_dir>/results.jsonl``).
        on_event: one-line status messages.
        events: progress events of the training (a caller's progress view); None: this function shows
            its own (``live_console``: a rich console for a live table; else a line through
            ``on_event`` about every 30 s).
        predictions: if given, filled with ``{label: known-orientation test predictions}``.
        n_train: training cameras of the pose world (default :data:`POSE_N_TRAIN`, or the world's
            ``n_train`` when that is smaller than 1000, e.g. ``--tiny``).
        figure: if given, the PNG path of :func:`~.plots.plot_pose_examples` for the first pose
            recipe's first ``figure_queries`` test queries (orientation unknown).

    Returns:
        The records of this configuration (fresh or found in the store).
    """
    out_dir = Path(out_dir)
    # the pose recipes validate every epoch: the retrieval leaderboard's val_from was checked
    # against the retrieval recipes' selected epochs only, and the pose config hash leaves it out
    cfg = replace(cfg, val_from=0.0)
    store = store or ResultStore(out_dir / "results.jsonl")
    say = on_event or (lambda msg: log.info("%s", msg))
    names = list(recipes) if recipes is not None else list_recipes(cfg.variant, task="pose")
    known_pose = list_recipes(task="pose")
    unknown = [n for n in names if n not in known_pose]
    if unknown:
        raise ValueError(f"unknown pose recipes {unknown}; available: {known_pose}")
    commit = git_commit()
    t0 = time.perf_counter()
    if n_train is None:
        n_train = POSE_N_TRAIN if cfg.world.n_train >= 1000 else cfg.world.n_train
    data = open_pose_datasets(cfg, out_dir / "cache", progress=progress, n_train=n_train)
    say(
        f"pose data ready: {len(data.train)} train / {len(data.test)} test pairs ({time.perf_counter() - t0:.0f} s)"
    )
    records: list[ResultRecord] = []
    # the retrieval-only baseline
    t1 = time.perf_counter()
    centre = tile_centre_predictions(data.test)
    base_cfg = _hash({"baseline": POSE_BASELINE, "data": cfg.data_dict(), "pose": data.protocol})
    metrics = predictions_metrics(centre, with_heading=False)
    records.append(
        _record(
            recipe=POSE_BASELINE,
            variant="none",
            cfg=cfg,
            n=len(data.test),
            metrics=metrics,
            protocol={**_base_protocol(cfg, data, base_cfg), "orientation_known": None},
            train_seconds=0.0,
            eval_seconds=time.perf_counter() - t1,
            source="geo_bench.leaderboard.pose.tile_centre_predictions",
            commit=commit,
        )
    )
    store.append(records[-1])
    say(f"{POSE_BASELINE}: median {metrics['median_m']:.2f} m")
    drawn = False
    for name in names:
        recipe = get_recipe_or_raise(
            name, cfg.variant, epochs=cfg.epochs, batch_size=cfg.batch_size, task="pose"
        )
        config = _hash({"recipe": recipe.to_dict(), "data": cfg.data_dict(), "pose": data.protocol})
        found = _stored(store, recipe.name, recipe.variant, cfg, config, commit)
        if found:
            say(
                f"{recipe.name} ({recipe.variant}) pose: already in the store for this config/seed/commit; skipped"
            )
            records += found
            continue
        run_dir = out_dir / "runs" / f"{recipe.name}-{recipe.variant}-{config}-s{cfg.seed}"
        # the world selects on its val region; VIGOR on a seeded held-out slice of train (train_recipe)
        say(f"{recipe.name} ({recipe.variant}) pose: training in {run_dir}")
        if events is not None:
            run = train_recipe(
                recipe, data.train, cfg, run_dir, progress=progress, events=events, val=data.val
            )
        else:  # our own progress: a line every 30 s (or the live table on a terminal)
            board = ProgressBoard(jobs=1)
            board.update(_queued_event(recipe, cfg, len(data.train)))
            with ProgressView(board, live=live_console is not None, emit=say, console=live_console) as view:
                view.update({"kind": "start", "recipe": recipe.name})
                run = train_recipe(
                    recipe,
                    data.train,
                    cfg,
                    run_dir,
                    progress=progress and live_console is None,
                    events=view.update,
                    val=data.val,
                )
                view.update({"kind": "done", "recipe": recipe.name, "r1": None})
        info = {  # the run's summary, as geo-bench train writes it (locate --refine reads the data)
            "recipe": recipe.name,
            "variant": recipe.variant,
            "seed": cfg.seed,
            "data": cfg.data_dict(),
            "pose_data": data.protocol,
            "config": config,
            "global_step": run.global_step,
            "train_seconds": round(run.train_seconds, 2),
            "selection_split": run.selection_split,
            "best_median_m": run.best_metric,
            "checkpoint": run.checkpoint,
        }
        write_run_json(RunLayout(run_dir).run_json, info)
        base = _base_protocol(cfg, data, config) | {
            "selection_split": run.selection_split,
            "selection_metric": "median_m (orientation unknown)",
        }
        for orientation in ("known", "unknown"):
            t2 = time.perf_counter()
            pred = evaluate_pose_model(
                run.model, recipe, data.test, orientation=orientation, device=cfg.device or "cpu"
            )
            metrics = predictions_metrics(pred, with_heading=True)
            metrics["steps"] = run.global_step
            rec = _record(
                recipe=recipe.name,
                variant=recipe.variant,
                cfg=cfg,
                n=len(pred.ids),
                metrics=metrics,
                protocol={**base, "orientation_known": orientation == "known"},
                train_seconds=run.train_seconds,
                eval_seconds=time.perf_counter() - t2,
                source=recipe.source,
                commit=commit,
            )
            store.append(rec)
            records.append(rec)
            if predictions is not None and orientation == "known":
                predictions[f"{recipe.name} ({recipe.variant})"] = pred
            if figure is not None and orientation == "unknown" and not drawn:
                label = f"{recipe.name} ({recipe.variant})"
                picks = range(min(figure_queries, len(data.test)))
                examples = pose_examples(
                    run.model, recipe, data.test, list(picks), label=label, device=cfg.device or "cpu"
                )
                plot_pose_examples(
                    examples,
                    figure,
                    title=f"{label} on {cfg.dataset} test, orientation unknown (panoramas rolled at random)\n"
                    "probability of the camera's position (magma), true (green) and predicted (red) position "
                    "and heading, tile centre (x)",
                )
                drawn = True
            say(
                f"{recipe.name} ({recipe.variant}) pose, orientation {orientation}: median {metrics['median_m']:.2f} m, "
                f"heading median {metrics.get('heading_median_deg', float('nan')):.1f} deg (train {run.train_seconds:.0f} s)"
            )
    return records


def pose_records_table(records: Sequence[ResultRecord], reported: Sequence[ResultRecord] = ()) -> str:
    """A Markdown table of pose records: measured rows (with their training time and steps), then
    reported rows marked as such (venue; "unverified" where no primary source was read)."""
    cols = (
        "method",
        "variant",
        "data",
        "labels",
        "orientation",
        "n",
        "mean m",
        "median m",
        "R@1m %",
        "R@5m %",
        "lateral median m",
        "longitudinal median m",
        "heading median deg",
        "R@5deg %",
        "train s (steps)",
        "numbers",
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(v: Any, digits: int = 2) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "–"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    for r in [*records, *reported]:
        m, p = r.metrics, r.protocol
        known = p.get("orientation_known")
        orient = "–" if known is None else ("known" if known else "unknown")
        data = r.dataset if r.dataset != "synthetic" else "world"
        if p.get("area"):
            data += f" {p['area']}-area"
        if r.provenance.kind == "measured":
            train = r.provenance.train_seconds
            kind = "measured here"
            cost = "–" if not train else f"{train:.0f} ({m.get('steps', '–')})"
        else:
            kind = f"reported ({p.get('venue', '?')}{', unverified' if p.get('unverified') else ''})"
            cost = "–"
        cells = (
            r.recipe,
            r.variant,
            data,
            str(p.get("labels") or "–"),
            orient,
            str(r.n_query) if r.n_query is not None else "–",
            fmt(m.get("mean_m")),
            fmt(m.get("median_m")),
            fmt(m.get("R@1m"), 1),
            fmt(m.get("R@5m"), 1),
            fmt(m.get("lateral_median_m")),
            fmt(m.get("longitudinal_median_m")),
            fmt(m.get("heading_median_deg"), 1),
            fmt(m.get("R@5deg"), 1),
            cost,
            kind,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_pose_outputs(
    records: Sequence[ResultRecord], reported: Sequence[ResultRecord], out_dir: str | Path
) -> dict[str, Path]:
    """Write ``leaderboard_pose.md`` (:func:`pose_records_table`) and ``leaderboard_pose.json``
    (every record, measured and reported) into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    md = "# Fine-grained pose\n\n" + pose_records_table(records, reported) + "\n"
    js = json.dumps(
        {"measured": [r.to_dict() for r in records], "reported": [r.to_dict() for r in reported]}, indent=1
    )
    paths = {"pose_markdown": out_dir / "leaderboard_pose.md", "pose_json": out_dir / "leaderboard_pose.json"}
    atomic_write_bytes(paths["pose_markdown"], md.encode())
    atomic_write_bytes(paths["pose_json"], js.encode())
    return paths
