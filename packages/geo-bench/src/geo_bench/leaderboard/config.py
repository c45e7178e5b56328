"""What a leaderboard / train / evaluate run depends on: :class:`RunConfig`, its hash, the recipes
it trains and the datasets it opens.

Convention:
    - **Config hash.** :func:`config_hash` is a 12-hex-digit sha256 of the recipe (after overrides),
      the data (:meth:`RunConfig.data_dict`), the step limit and, only when set, the time budget; the
      seed and the code are recorded beside it, not in it. Run folders and records carry it.
    - **Data.** ``dataset="synthetic"`` renders the embedded world (:class:`~.data.WorldConfig`),
      cached in ``cfg.cache`` or the caller's folder; CVUSA / CVACT / VIGOR are read from
      ``cfg.root``. The test split is ``cfg.eval_split``, else the dataset's first of
      :data:`EVAL_SPLITS`.
    - **Selection.** On the world, ``best/`` is selected on its ``val`` region (a stripe of the
      training cities that shares no camera and no aerial pixel with train or test;
      ``selection_split="val"``); on real data on a held-out slice of train
      (``cfg.holdout``, ``"train-holdout"``). Test is read once, after training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from geo_retrieval import recipes as registry
from geo_retrieval.recipes import Recipe, get_recipe, list_recipes

from .data import DATASET_NAMES, WorldConfig, load_world_split, open_real_dataset
from .evaluation import parse_protocols

log = logging.getLogger(__name__)

__all__ = [
    "EVAL_SPLITS",
    "TINY",
    "TINY_WORLD",
    "RunConfig",
    "RunData",
    "config_hash",
    "get_recipe_or_raise",
    "open_datasets",
    "selection_split",
    "tiny_config",
    "uses_synthesis",
]

#: The CI smoke-test world: tiny districts of the default (mixed) style, tiny images, one epoch of a few steps
#: per recipe; its cross-area city is the default town.
TINY_WORLD = WorldConfig(
    n_train=72,
    n_val=12,
    n_test=20,
    ground_size=(32, 128),
    aerial_size=64,
    district_m=500.0,
    styles=("mixed",),
)


#: The splits a run may be evaluated on, per dataset (the first is the default). The synthetic
#: world renders one test region; CVUSA's test split is its val-19zl list ("val" is an alias);
#: CVACT_val (default) or CVACT_test; VIGOR's test split (same- or cross-area by ``vigor_area``).
EVAL_SPLITS: dict[str, tuple[str, ...]] = {
    "synthetic": ("test",),
    "cvusa": ("test", "val"),
    "cvact": ("val", "test"),
    "vigor": ("test",),
}


@dataclass(frozen=True)
class RunConfig:
    """What a leaderboard / train run depends on.

    Attributes:
        dataset: ``"synthetic"``, ``"cvusa"``, ``"cvact"`` or ``"vigor"``.
        root: dataset folder (real datasets).
        variant: recipe variant (``"small"`` on the synthetic world, ``"full"`` on real data).
        seed: training seed.
        epochs, batch_size, max_steps: overrides of the recipe's values (None: the recipe's).
        world: the synthetic world.
        holdout: held-out fraction of train for selection (real datasets; the world selects on its
            ``val`` region).
        eval_split: the split evaluated (None: ``test``, CVACT ``val``).
        device: ``"cpu"``, ``"cuda"``... (None: CUDA when available).
        vigor_area: ``"same"`` or ``"cross"``.
        vigor_labels: VIGOR's label version, ``"orig"`` or ``"corrected"`` (SliceMatch's, read from
            ``vigor_labels_dir``, which mirrors ``splits/``); recorded in every record's protocol.
        cache: real datasets: a ``geo-bench prepare`` cache root, read instead of the images
            (prepared with the loaders' default sizes); synthetic world: where the rendered world
            is cached (default: the caller's, e.g. ``<out>/cache``). Not part of
            :meth:`data_dict`: it changes where pixels come from, not what they are.
        protocols: optional evaluation protocols (``"fov"``, ``"corruption"``; see
            :data:`~.evaluation.EXTRA_PROTOCOLS`), evaluated besides the dataset's own. Not part of
            the config hash: they change what is measured, not what is trained.
        time_budget_s: train every recipe for at most this many wall-clock seconds (None: no
            budget); part of the config hash and of the records' protocol.
        val_from: validate from this fraction of the schedule on: epochs ``< floor(val_from *
            epochs)`` (0-based) are not validated and cannot be selected; the last always is. 0
            (default): every epoch. ``geo-bench leaderboard`` uses 0.5 (half the validation work;
            every small recipe's selected epoch lies in the last fifth of its schedule). Needs the
            whole schedule, so not with ``time_budget_s`` or ``max_steps``; part of the config hash
            and of the records' protocol when not 0.
    """

    dataset: str = "synthetic"
    root: str | None = None
    variant: str = "small"
    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    world: WorldConfig = field(default_factory=WorldConfig)
    holdout: float = 0.02
    eval_split: str | None = None
    device: str | None = None
    vigor_area: str = "same"
    vigor_labels: str = "orig"
    vigor_labels_dir: str | None = None
    cache: str | None = None
    protocols: tuple[str, ...] = ()
    time_budget_s: float | None = None
    val_from: float = 0.0

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; available: {list(DATASET_NAMES)}")
        if self.dataset != "synthetic" and not self.root:
            raise ValueError(f"dataset {self.dataset!r} needs --root DIR (the folder of its official layout)")
        object.__setattr__(self, "protocols", parse_protocols(self.protocols))
        if self.vigor_labels not in ("orig", "corrected"):
            raise ValueError(f"--vigor-labels must be 'orig' or 'corrected', got {self.vigor_labels!r}")
        if (self.vigor_labels == "corrected") != (self.vigor_labels_dir is not None):
            raise ValueError(
                "--vigor-labels corrected needs --vigor-labels-dir DIR (the corrected split files), and "
                "--vigor-labels-dir is only used with --vigor-labels corrected"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps must be a positive integer, got {self.max_steps}")
        if self.time_budget_s is not None:
            budget = float(self.time_budget_s)
            if not (budget > 0 and math.isfinite(budget)):
                raise ValueError(
                    f"--time-budget must be a positive number of seconds, got {self.time_budget_s}"
                )
            object.__setattr__(self, "time_budget_s", budget)
        val_from = float(self.val_from)
        if not 0.0 <= val_from < 1.0:
            raise ValueError(f"--val-from must be a fraction of the schedule in [0, 1), got {self.val_from}")
        if val_from > 0 and (self.time_budget_s is not None or self.max_steps is not None):
            raise ValueError(
                f"--val-from {val_from:g} needs the whole schedule, but --time-budget / --max-steps may stop "
                "training before the validated epochs: use --val-from 0 with them"
            )
        object.__setattr__(self, "val_from", val_from)
        splits = EVAL_SPLITS[self.dataset]
        if self.eval_split is not None and self.eval_split not in splits:
            raise ValueError(
                f"--split {self.eval_split!r}: {self.dataset} is evaluated on "
                f"{' or '.join(map(repr, splits))}"
            )

    @property
    def test_split(self) -> str:
        if self.eval_split:
            return self.eval_split
        return EVAL_SPLITS[self.dataset][0]

    def data_dict(self) -> dict[str, Any]:
        """The data part of the configuration (enters :func:`config_hash`)."""
        if self.dataset == "synthetic":
            return {"dataset": "synthetic", "world": self.world.to_dict()}
        d: dict[str, Any] = {
            "dataset": self.dataset,
            "root": str(self.root),
            "holdout": self.holdout,
            "eval_split": self.test_split,
        }
        if self.dataset == "vigor":
            d["area"] = self.vigor_area
            if self.vigor_labels != "orig":  # absent for the original labels: older config hashes stay
                d["labels"] = self.vigor_labels
                d["labels_dir"] = str(self.vigor_labels_dir)
        return d

    def vigor_options(self) -> dict[str, Any]:
        """The VIGOR loader's area and label options of this run."""
        opts: dict[str, Any] = {"area": self.vigor_area, "labels": self.vigor_labels}
        if self.vigor_labels_dir is not None:
            opts["labels_dir"] = self.vigor_labels_dir
        return opts


#: the ``--tiny`` configuration (CI smoke test).
TINY = RunConfig(world=TINY_WORLD, epochs=1, batch_size=16)


def tiny_config(**changes: Any) -> RunConfig:
    """:data:`TINY` with changes (e.g. ``seed``)."""
    return replace(TINY, **changes)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_hash(recipe_dict: dict[str, Any], cfg: RunConfig) -> str:
    """Short hash of everything a result depends on besides seed and code: the recipe (after
    overrides), the data, the step limit, the time budget and the first validated fraction (the last
    two only when set, so that runs without them keep their hash)."""
    parts: dict[str, Any] = {"recipe": recipe_dict, "data": cfg.data_dict(), "max_steps": cfg.max_steps}
    if cfg.time_budget_s is not None:
        parts["time_budget_s"] = cfg.time_budget_s
    if cfg.val_from:
        parts["val_from"] = cfg.val_from
    return _hash(parts)


def selection_split(cfg: RunConfig) -> str:
    """What selects ``best/``: ``"val"`` (the world's val region) or ``"train-holdout"``."""
    return "val" if cfg.dataset == "synthetic" else "train-holdout"


class RunData(NamedTuple):
    """The datasets of a run: ``train`` (None when not needed), ``val`` (the world's selection region;
    None on real data, where a slice of train is held out), ``test`` and ``cross`` (the world's
    cross-area city; None on real data)."""

    train: Any
    val: Any
    test: Any
    cross: Any


def get_recipe_or_raise(
    name: str,
    variant: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    task: str | None = None,
) -> Recipe:
    """The registered recipe with overrides; unknown names raise ``ValueError`` listing the known ones.

    ``task``: ``"retrieval"`` or ``"pose"`` accepts only recipes of that task (what the caller can
    train and score); None accepts any (loading a checkpoint)."""
    known = list_recipes(task=task)
    if name not in known:
        hint = (
            ""
            if any(n in ("toker21", "smdt") for n in list_recipes(task=None))
            else (" (toker21 and smdt come with geo-synthesis: pip install 'geo-bench[synthesis]')")
        )
        if task == "retrieval" and name in list_recipes(task="pose"):
            hint = (
                f" ({name} is a fine-grained pose recipe: geo-bench leaderboard --recipes {name}, or --pose)"
            )
        raise ValueError(
            f"unknown recipe {name!r}; known {task + ' ' if task else ''}recipes: {', '.join(known)}{hint}"
        )
    for option, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value}")
    recipe = get_recipe(name, variant)
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if batch_size is not None:
        changes["batch_size"] = int(batch_size)
    return recipe.replace(**changes) if changes else recipe


def uses_synthesis(recipe: Recipe) -> bool:
    """Whether a recipe trains with cross-view synthesis (an explicit ``synthesis`` attribute, else a
    model builder that lives in geo-synthesis)."""
    flag = getattr(recipe, "synthesis", None)
    if flag is not None:
        return bool(flag)
    builder = registry.get_builder(recipe.name)
    return bool(builder is not None and getattr(builder, "__module__", "").startswith("geo_synthesis"))


def open_datasets(
    cfg: RunConfig,
    cache_dir: str | Path | None,
    *,
    progress: bool = False,
    need_train: bool = True,
    rendering: Mapping[str, Future[Any]] | None = None,
) -> RunData:
    """The :class:`RunData` of a run; train (and the world's val) is None when ``need_train`` is False.
    ``cache_dir`` is the synthetic world's cache when ``cfg.cache`` does not name one. ``rendering``
    maps world splits that another process is rendering into that cache to its future: each is
    awaited before its split is read (if it failed, the split is rendered here)."""
    if cfg.dataset == "synthetic":
        cache = cfg.cache or cache_dir
        elsewhere = dict(rendering or {})

        def split(name: str) -> Any:
            if name in elsewhere:
                try:
                    elsewhere[name].result()
                except Exception as exc:  # rendered here instead; the split is the same
                    log.warning(
                        "rendering the world's %r split in a worker failed (%s); rendering it here", name, exc
                    )
            return load_world_split(cfg.world, name, cache, progress=progress)

        return RunData(
            split("train") if need_train else None,
            split("val") if need_train else None,
            split("test"),
            split("cross"),
        )
    kwargs: dict[str, Any] = cfg.vigor_options() if cfg.dataset == "vigor" else {}
    if cfg.cache is not None:
        kwargs["cache"] = cfg.cache
    train = open_real_dataset(cfg.dataset, cfg.root, "train", **kwargs) if need_train else None  # type: ignore[arg-type]
    test = open_real_dataset(cfg.dataset, cfg.root, cfg.test_split, **kwargs)  # type: ignore[arg-type]
    return RunData(train, None, test, None)
