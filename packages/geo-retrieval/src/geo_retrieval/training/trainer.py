"""A small, readable trainer for cross-view retrieval recipes (single process or ``torchrun`` DDP).

Convention:
    - **Data.** Datasets yield ``{"ground": (3,H,W), "aerial": (3,h,w), "id": str}`` plus optional
      ``"utm"`` (2,) float64 / ``"latlon"`` (2,). Batches come from a *batch sampler* of global
      unique-ID batches (:mod:`geo_retrieval.sampling`), sliced per rank under DDP. Images are
      preprocessed and augmented on the device by :class:`~.augment.BatchTransform` with a
      ``torch.Generator`` seeded from ``(seed, global_step)``.
    - **Step.** Default: ``g, a = model(ground, aerial)`` under autocast; descriptors gathered across
      ranks with gradient; ``sim = model.similarity(g, a)`` (Bg, Ba) in float32; ``loss(sim[, utm=])``
      (``utm`` is passed when the batch has it and the recipe sets ``geo_mask_m``: negatives closer
      than that radius are masked, as SAFA / DSM / Toker do on CVACT with 25 m; L2LTR and
      Sample4Geo set none); ``loss.set_epoch(epoch)`` each epoch;
      backward (GradScaler for fp16); gradient clipping by norm or value; optimiser and per-step lr
      schedule (warm-up + cosine).
    - **Custom steps.** A model may define ``training_step(batch, trainer) -> dict`` (the returned
      ``"loss"`` tensor is back-propagated and stepped by the trainer), or additionally
      ``configure_optimizers(recipe) -> dict[str, Optimizer]``, in which case ``training_step`` does
      its own backward passes and calls :meth:`Trainer.optimizer_step` per optimiser (GANs). The
      trainer still owns schedulers (one per optimiser), AMP scaler, checkpoints and evaluation.
    - **Similarity sampling** re-embeds the train set (eval preprocessing) at the start of every
      ``sampling.similarity_every``-th epoch; under DDP every rank embeds it (identical weights give
      identical neighbour tables, no broadcast needed).
    - **Validation** is a held-out slice of train (never a split named ``"test"``), evaluated on
      rank 0 every ``eval_every`` epochs from epoch ``eval_start`` on (and after the last); the
      best ``selection_metric`` (default ``"R@1"``) among the validated epochs is kept
      in ``best/``; ``selection_split`` is recorded. Recall for selection counts ties *against*
      the query (``ties="pessimistic"``, recorded as ``val/ties``), so a collapsed model (all
      descriptors equal) scores 0, not 100. Non-finite weights or validation descriptors raise
      :class:`FloatingPointError` before anything is evaluated or saved.
    - **Checkpoints** (rank 0): ``last/model.safetensors`` (weights, ``module.`` stripped) +
      ``last/trainer_state.pt`` (optimisers, schedulers, scaler, loss state, epoch, step, sampler
      state, RNG states of torch/numpy/python, best metric, history, the run's settings; plain
      containers and tensors only, so it loads with ``weights_only=True``). Both are committed
      together as one folder (:func:`~geo_retrieval.checkpoint.commit_directory`), share a random
      ``checkpoint_id`` and the ``global_step``, and the state holds the weights' SHA-256; resume
      checks the pair (:class:`~geo_retrieval.checkpoint.InconsistentCheckpointError`) and puts back
      a folder a crash left missing (:func:`recover_checkpoint`). ``best/`` (weights + ``info.json``
      with the same step and id) is committed the same way. Resuming from ``last/`` continues bitwise
      identically to an uninterrupted run with the same seed.
    - **Resume** must use the settings the run was started with: seed, global batch size, epochs,
      recipe name and variant, and the recipe's other settings (a fingerprint); any difference
      raises :class:`ResumeMismatchError` listing them all. ``max_steps`` may differ (splitting a
      run in pieces is its purpose), as may the device and the number of ranks (a warning).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import random
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .. import __version__
from .. import distributed as ddp
from ..checkpoint import (
    atomic_write_bytes,
    commit_directory,
    file_sha256,
    load_weights,
    read_metadata,
    recover_directory,
    save_trainer_state,
    save_weights,
    verify_checkpoint_pair,
)
from ..embedding import embed_dataset
from ..losses import create_loss
from ..protocols import ConfiguresOptimizers, CrossViewEncoder, CustomStepModel, EvaluatesItself, PairDataset
from ..ranking import model_similarity, retrieval_recall
from ..recipes import Recipe
from ..run_folder import INFO_FILE, STATE_FILE, WEIGHTS_FILE, RunLayout
from ..sampling import (
    NeighbourBatchSampler,
    SimilarityBatchSampler,
    UniqueIdBatchSampler,
    geo_neighbours,
    rank_slice,
)
from .augment import BatchTransform
from .prepared import PreparedPairs, prepared_size
from .schedules import build_lr_scheduler

__all__ = [
    "ResumeMismatchError",
    "StopTraining",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "check_resume",
    "recover_checkpoint",
]

logger = logging.getLogger(__name__)

_STATE_FORMAT = 1
EVAL_SHIFT_SEED = 20_200_614  # fixed query-set seed of the orientation-unknown evaluation


class StopTraining(Exception):
    """Raise from a callback to stop after the current step; the trainer saves ``last/`` first."""


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class ResumeMismatchError(ValueError):
    """A run is resumed with settings other than those it was started with.

    Attributes:
        source: the checkpoint or run folder.
        differences: ``(name, value the run was started with, value now)`` for every difference.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        differences: Sequence[tuple[str, Any, Any]],
        hint: str = "start a new run in another folder",
    ) -> None:
        self.source = os.fspath(source)
        self.differences = list(differences)
        listed = "; ".join(
            f"{name}: run has {_show(old)}, now {_show(new)}" for name, old, new in self.differences
        )
        super().__init__(
            f"cannot resume {self.source}: it was started with other settings ({listed}); resume with the "
            f"settings it was started with, or {hint} (a run never mixes two configurations)"
        )


def _flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level, keys joined with dots (``{"world": {"seed": 0}}`` ->
    ``{"world.seed": 0}``), values as JSON stores them (tuples become lists)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.loads(json.dumps(value, default=str))
    return flat


def check_resume(
    source: str | os.PathLike[str],
    saved: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    recorded_only: bool = False,
    hint: str = "start a new run in another folder",
) -> None:
    """Refuse to resume a run with settings other than those it was started with.

    Nested settings are compared key by key (``world.seed``), as JSON would store them.

    Args:
        source: the checkpoint or run folder (named in the error).
        saved: the settings the run was started with.
        now: the settings of this resume.
        recorded_only: compare only the settings ``saved`` records (a run recorded before a setting
            existed); else a setting only one side has differs too (``None`` on the other).
        hint: what to do instead, ending the error message.

    Raises:
        ResumeMismatchError: every difference, as ``(name, started with, now)``.
    """
    old, new = _flatten_settings(saved), _flatten_settings(now)
    keys = [*new] if recorded_only else [*new, *(key for key in old if key not in new)]
    differences = [
        (key, old.get(key), new.get(key))
        for key in keys
        if (key in old or not recorded_only) and old.get(key) != new.get(key)
    ]
    if differences:
        raise ResumeMismatchError(source, differences, hint=hint)


def _recipe_settings(recipe: Recipe) -> str:
    """Fingerprint of a recipe without ``name``, ``variant``, ``epochs`` and ``batch_size`` (the run
    records and compares those on their own, as the trainer's effective values)."""
    to_dict = getattr(recipe, "to_dict", None)
    if to_dict is None:
        return str(recipe.fingerprint()) if hasattr(recipe, "fingerprint") else ""
    settings = {k: v for k, v in to_dict().items() if k not in ("name", "variant", "epochs", "batch_size")}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_complete_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a complete checkpoint folder: a consistent weights + trainer-state
    pair (``last/``), or weights + ``info.json`` of the same step (``best/``)."""
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        return False
    if (directory / STATE_FILE).is_file():
        verify_checkpoint_pair(weights, directory / STATE_FILE)
        return True
    if (directory / INFO_FILE).is_file():
        info = json.loads((directory / INFO_FILE).read_text())
        meta = read_metadata(weights)
        return str(info.get("step")) == meta.get("global_step") and info.get("checkpoint_id") == meta.get(
            "checkpoint_id"
        )
    return False


def recover_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """Put back a ``last/``- or ``best/``-style folder that a crash during its replacement left
    missing, from its newest complete sibling (see :func:`~geo_retrieval.checkpoint.recover_directory`).
    Call it before testing whether a run has a checkpoint; :class:`Trainer` calls it when resuming.

    Returns:
        The recovered folder, or None when nothing was missing or nothing complete was found.
    """
    return recover_directory(directory, _is_complete_checkpoint)


def _check_finite(tensors: dict[str, Tensor], what: str) -> None:
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise FloatingPointError(f"non-finite values in {what}: {shown}")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :meth:`Trainer.fit`."""

    recipe: str
    variant: str
    epochs_completed: int
    global_step: int
    finished: bool
    best_metric: float | None
    best_epoch: int | None
    selection_metric: str
    selection_split: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    out_dir: str = ""


def build_optimizer(params: Iterable[nn.Parameter] | Iterable[dict], config: Any) -> torch.optim.Optimizer:
    """Optimiser from a recipe's ``optimizer`` config (``name`` in adam / adamw / sgd); ``params`` is
    read once (a generator such as ``model.parameters()`` is fine).

    Torch's default implementation (on the CPU a loop over the parameters). Its fused kernel is
    3-4x faster on the CPU in isolation but changed the small recipes' trajectories (val R@1 of
    L2LTR small 36.8 -> 32.4, SAFA 44.0 -> 43.2 on the synthetic world, float rounding only) for
    under 3 % of a step, so it is not used (issue 15).
    """
    listed: list[Any] = list(params)
    name = config.name.lower()
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(
            listed, lr=config.lr, betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay
        )
    if name == "sgd":
        return torch.optim.SGD(
            listed, lr=config.lr, momentum=config.betas[0], weight_decay=config.weight_decay
        )
    raise ValueError(f"unknown optimiser {config.name!r}; available: adam, adamw, sgd")


# ------------------------------------------------------------------------------------------------
# RNG state as plain containers (weights_only=True compatible)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global RNG user code may draw from
    assert isinstance(np_state, tuple)  # the global RNG is MT19937: its legacy state is a tuple
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class _FixedBatches(Sampler[list[int]]):
    def __init__(self, batches: list[list[int]]) -> None:
        self._batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def _atomic_text(text: str, path: Path) -> None:
    atomic_write_bytes(path, text.encode())


# ------------------------------------------------------------------------------------------------


class Trainer:
    """Train a cross-view model with a recipe (see module docstring).

    Args:
        model: a :class:`~geo_retrieval.protocols.CrossViewEncoder` module (``forward(ground, aerial)
            -> (g, a)`` and ``similarity(g, a) -> (Bg, Ba)``), or a
            :class:`~geo_retrieval.protocols.CustomStepModel` (optionally also
            :class:`~geo_retrieval.protocols.ConfiguresOptimizers`).
        recipe: a :class:`~geo_retrieval.recipes.Recipe` (optimiser, schedule, epochs, batch size,
            clipping, AMP, augmentation, normalisation, sizes, loss, sampling).
        train_dataset: the training split (minus the held-out validation slice).
        val_dataset: held-out validation slice for selection (its ``split`` must not be ``"test"``).
        out_dir: checkpoint directory (created).
        seed: seeds the model-independent randomness: sampler order, augmentation, dropout.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available. Under ``torchrun`` each rank
            takes ``cuda:LOCAL_RANK``.
        loss: override the recipe's loss (callable on a (B, B) similarity matrix).
        epochs, batch_size: override the recipe's values (batch size is the *global* batch).
        amp: override ``recipe.amp``. CPU: bf16 autocast; CUDA: fp16 + GradScaler unless
            ``amp_dtype=torch.bfloat16``.
        amp_dtype: autocast dtype (default bf16 on CPU, fp16 on CUDA).
        channels_last: put the model and the image batches in channels-last memory format.
        sampler: ``None`` (recipe's ``sampling.kind``), ``"unique"``, ``"gps"``, ``"similarity"``, or a
            ready batch sampler with ``set_epoch`` / ``state_dict`` / ``load_state_dict``.
        eval_every: evaluate every this many epochs (and after the last epoch).
        eval_start: the first epoch (0-based) whose end may be evaluated: earlier epochs are not
            validated (their history has no ``val/`` keys and cannot be selected); the last epoch
            always is. 0 (default): from the first.
        selection_metric: metric of :meth:`evaluate` used to pick ``best/`` (default ``"R@1"``, higher
            is better; a model with ``evaluate_dataset`` (:class:`~geo_retrieval.protocols.EvaluatesItself`,
            a pose model) is validated by itself and names its metric and direction).
        val_split: name of the validation split (default: ``val_dataset.split`` or ``"val"``).
        max_steps: stop after this global step (saving ``last/``), e.g. to split a run in pieces.
        checkpoint_every: also save ``last/`` every this many steps (default: each epoch end only).
        callbacks: ``f(trainer, logs)`` called after every step; may raise :class:`StopTraining`.
        progress: tqdm bars; default only when stderr is a TTY.
        num_workers: DataLoader workers.
        resume: resume from ``out_dir/last`` (True) or from a given ``last``-style directory.
        eval_batch_size: batch size for embedding (default ``batch_size``).
        prepare_inputs_mb: on the CPU, keep the training and validation samples after the
            transform's deterministic steps (conversion, resize, polar transform) in memory,
            prepared once (:class:`~.prepared.PreparedPairs`; same values), when each split needs at
            most this many MiB, ``num_workers`` is 0 and, for training, no joint flip / turn comes
            first; 0 never.
    """

    def __init__(
        self,
        model: nn.Module,
        recipe: Recipe,
        train_dataset: PairDataset,
        val_dataset: PairDataset | None = None,
        *,
        out_dir: str | os.PathLike[str],
        seed: int = 0,
        device: torch.device | str | None = None,
        loss: Callable[..., Tensor] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        amp: bool | None = None,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        sampler: str | Sampler | None = None,
        eval_every: int = 1,
        eval_start: int = 0,
        selection_metric: str | None = None,
        val_split: str | None = None,
        max_steps: int | None = None,
        checkpoint_every: int | None = None,
        callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
        progress: bool | None = None,
        num_workers: int = 0,
        resume: bool | str | os.PathLike[str] = False,
        eval_batch_size: int | None = None,
        prepare_inputs_mb: float = 1024.0,
    ) -> None:
        self.recipe = recipe
        self.val_split = (
            val_split or getattr(val_dataset, "split", None) or ("val" if val_dataset is not None else None)
        )
        for name in (val_split, getattr(val_dataset, "split", None)):
            if name is not None and str(name).strip().lower() == "test":
                raise ValueError(
                    "the trainer never evaluates on a 'test' split: select checkpoints on a held-out slice "
                    "of train (geo_retrieval.training.split_holdout)"
                )
        if str(getattr(train_dataset, "split", "")).strip().lower() == "test":
            raise ValueError("refusing to train on a split named 'test'")
        if val_dataset is not None and val_dataset is train_dataset:
            raise ValueError("val_dataset must be held out from train_dataset, got the same object")
        self.device = ddp.init_distributed(device)
        self.rank, self.world_size = ddp.rank(), ddp.world_size()
        self.is_main = self.rank == 0
        self.seed = int(seed)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.out_dir = Path(out_dir)
        self.epochs = int(epochs if epochs is not None else recipe.epochs)
        self.batch_size = int(batch_size if batch_size is not None else recipe.batch_size)
        if self.batch_size % self.world_size:
            raise ValueError(
                f"global batch_size {self.batch_size} must be divisible by world size {self.world_size}"
            )
        self.eval_every = max(1, int(eval_every))
        if int(eval_start) < 0:
            raise ValueError(f"eval_start must be >= 0 (a 0-based epoch), got {eval_start}")
        self.eval_start = int(eval_start)
        self.max_steps = max_steps
        self.checkpoint_every = checkpoint_every
        self.callbacks = list(callbacks)
        self.progress = progress if progress is not None else sys.stderr.isatty()
        self.num_workers = num_workers
        self.eval_batch_size = eval_batch_size or self.batch_size
        self.channels_last = channels_last
        self.transform = BatchTransform.from_recipe(recipe)
        if prepare_inputs_mb < 0:
            raise ValueError(f"prepare_inputs_mb must be >= 0, got {prepare_inputs_mb}")
        self.prepare_inputs_mb = float(prepare_inputs_mb)

        # precision
        use_amp = bool(recipe.amp if amp is None else amp)
        if amp_dtype is None:
            amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.autocast_dtype: torch.dtype | None = amp_dtype if use_amp else None
        self.scaler: torch.amp.GradScaler | None = None
        if use_amp and amp_dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device.type, init_scale=2.0**10)

        # model, loss, optimisers
        self.raw_model = ddp.unwrap_model(model).to(self.device)
        if channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        # selection: a self-evaluating model (pose) names its metric and direction; else R@1, higher better
        self.self_evaluating = isinstance(self.raw_model, EvaluatesItself)
        if self.self_evaluating:
            own = cast(EvaluatesItself, self.raw_model)
            self.selection_metric = selection_metric or own.selection_metric
            self.selection_mode = own.selection_mode
        else:
            self.selection_metric = selection_metric or "R@1"
            self.selection_mode = "max"
        if self.selection_mode not in ("max", "min"):
            raise ValueError(f"selection_mode must be 'max' or 'min', got {self.selection_mode!r}")
        self.custom_step = isinstance(self.raw_model, CustomStepModel)
        self.custom_optim = isinstance(self.raw_model, ConfiguresOptimizers)
        self.loss_fn = loss if loss is not None else (None if self.custom_step else self._build_loss(recipe))
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(self.device)
        # the geo-distance mask is the recipe's (``geo_mask_m``): utm reaches the loss only when it is set
        self._loss_takes_utm = recipe.geo_mask_m is not None and self._accepts_utm(self.loss_fn)
        if recipe.geo_mask_m is not None and self.loss_fn is not None and not self._loss_takes_utm:
            raise ValueError(
                f"recipe {recipe.name}/{recipe.variant} sets geo_mask_m={recipe.geo_mask_m} but its loss "
                f"{recipe.loss!r} takes no utm= (no geo-distance mask); set geo_mask_m=None"
            )
        if self.custom_optim:
            self.optimizers: dict[str, torch.optim.Optimizer] = dict(
                cast(ConfiguresOptimizers, self.raw_model).configure_optimizers(recipe)
            )
        else:
            params = [p for p in self.raw_model.parameters() if p.requires_grad]
            params += self._extra_params()
            self.optimizers = {"main": build_optimizer(params, recipe.optimizer)}
        self.model: nn.Module = self.raw_model
        if self.world_size > 1 and not self.custom_step:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        # what the loaders read: the splits, or their samples prepared once (same values)
        self._train_data = self._prepared(train_dataset, training=True)
        self._val_data = None if val_dataset is None else self._prepared(val_dataset, training=False)

        # sampler and schedule
        self.batch_sampler = self._build_sampler(sampler)
        self.steps_per_epoch = max(1, len(self.train_dataset) // self.batch_size)
        sched = recipe.schedule
        total = sched.total_steps or self.epochs * self.steps_per_epoch
        warmup = sched.warmup_steps or round(sched.warmup_epochs * self.steps_per_epoch)
        self.schedulers = {
            name: build_lr_scheduler(
                opt,
                warmup_steps=warmup,
                total_steps=max(total, 1),
                kind=sched.kind,
                min_factor=sched.min_factor,
            )
            for name, opt in self.optimizers.items()
        }

        # progress state
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self._in_step = False
        self._epoch_sums: dict[str, float] = {}
        self._epoch_steps = 0
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)  # noqa: NPY002
        random.seed(self.seed)
        if resume:
            self.load_checkpoint(RunLayout(self.out_dir).last if resume is True else Path(resume))

    # -- construction helpers ---------------------------------------------------------------------
    def _prepared(self, dataset: PairDataset, *, training: bool) -> PairDataset | PreparedPairs:
        """``dataset`` wrapped in :class:`PreparedPairs` when that is allowed and fits (see
        ``prepare_inputs_mb``); self-evaluating models read their own validation inputs. CPU only:
        on an accelerator the per-batch steps are cheap and run there, as before."""
        if (
            self.prepare_inputs_mb == 0
            or self.device.type != "cpu"
            or self.num_workers > 0
            or (training and not self.transform.prepares_once)
            or (not training and self.self_evaluating)
            or prepared_size(self.transform, len(dataset)) > self.prepare_inputs_mb * 2**20
        ):
            return dataset
        return PreparedPairs(dataset, self.transform, training=training)

    @staticmethod
    def _build_loss(recipe: Recipe) -> Callable[..., Tensor]:
        kwargs = dict(recipe.loss_kwargs)
        loss = create_loss(recipe.loss, **kwargs)
        # the geo-mask radius is the recipe's (an explicit loss_kwargs value wins); a loss without a
        # mask is refused in __init__ when the recipe asks for one
        if (
            recipe.geo_mask_m is not None
            and hasattr(loss, "min_distance_m")
            and "min_distance_m" not in kwargs
        ):
            # a float attribute (torch types Module.__setattr__ for tensors and modules only)
            loss.min_distance_m = float(recipe.geo_mask_m)  # type: ignore[assignment]
        return loss

    @staticmethod
    def _accepts_utm(loss: Callable[..., Tensor] | None) -> bool:
        if loss is None:
            return False
        fn = loss.forward if isinstance(loss, nn.Module) else loss  # a Module's __call__ is (*args, **kwargs)
        try:
            return "utm" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return False

    def _extra_params(self) -> list[nn.Parameter]:
        if not isinstance(self.loss_fn, nn.Module):
            return []
        own = {id(p) for p in self.raw_model.parameters()}
        return [p for p in self.loss_fn.parameters() if p.requires_grad and id(p) not in own]

    def _groups(self) -> list[str] | None:
        for attr in ("group_ids", "ids"):
            value = getattr(self.train_dataset, attr, None)
            if value is not None:
                return [str(v) for v in value]
        return None

    def _coordinates(self) -> tuple[str, Tensor] | None:
        ds = self.train_dataset
        for key in ("utm", "latlon"):
            value = getattr(ds, key, None)
            if value is not None:
                return key, torch.as_tensor(value, dtype=torch.float64)
        if len(ds) == 0:
            return None
        first = ds[0]
        for key in ("utm", "latlon"):
            if key in first:
                rows = [torch.as_tensor(ds[i][key], dtype=torch.float64) for i in range(len(ds))]
                return key, torch.stack(rows)
        return None

    def _build_sampler(self, sampler: str | Sampler | None) -> Sampler:
        if sampler is not None and not isinstance(sampler, str):
            return sampler
        cfg = self.recipe.sampling
        kind = sampler or cfg.kind
        n, groups = len(self.train_dataset), self._groups()
        if kind == "unique":
            return UniqueIdBatchSampler(n, self.batch_size, groups=groups, seed=self.seed)
        if kind not in ("gps", "similarity"):
            raise ValueError(f"unknown sampler {kind!r}; available: unique, gps, similarity")
        coords = self._coordinates()
        neighbours = None
        if coords is not None:
            key, values = coords
            metric = "euclidean" if key == "utm" else "haversine"
            neighbours = geo_neighbours(values, cfg.neighbour_range, metric=metric, groups=groups)
        elif kind == "gps":
            logger.warning(
                "sampler 'gps' needs 'utm' or 'latlon' in the train samples; using unique-ID batches"
            )
        sampler_class = NeighbourBatchSampler if kind == "gps" else SimilarityBatchSampler
        return sampler_class(
            n,
            self.batch_size,
            neighbours=neighbours,
            n_near=cfg.n_near,
            n_far=cfg.n_far,
            neighbour_range=cfg.neighbour_range,
            groups=groups,
            seed=self.seed,
        )

    # -- public helpers for custom training steps -------------------------------------------------
    def autocast(self) -> torch.autocast:
        """The trainer's autocast context (disabled when AMP is off)."""
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def backward(self, loss: Tensor) -> None:
        """Back-propagate ``loss`` through the AMP scaler when one is active."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self, name: str = "main", params: Sequence[nn.Parameter] | None = None) -> None:
        """Average gradients across ranks (custom steps only), unscale, clip, step and zero one optimiser."""
        opt = self.optimizers[name]
        if params is None:
            params = [p for group in opt.param_groups for p in group["params"]]
        if self.world_size > 1 and self.model is self.raw_model:
            ddp.all_reduce_mean_([p.grad for p in params if p.grad is not None])
        elif self.world_size > 1:
            extra = self._extra_params()
            ddp.all_reduce_mean_([p.grad for p in extra if p.grad is not None])
        clip = self.recipe.grad_clip
        if clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(opt)
            if clip.kind == "norm":
                torch.nn.utils.clip_grad_norm_(params, clip.value)
            elif clip.kind == "value":
                torch.nn.utils.clip_grad_value_(params, clip.value)
            else:
                raise ValueError(f"grad_clip.kind must be 'norm' or 'value', got {clip.kind!r}")
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    # -- the step --------------------------------------------------------------------------------
    def _gather(self, x: Tensor) -> Tensor:
        if self.world_size == 1:
            return x
        return ddp.all_gather_with_grad(x.contiguous())

    def _default_step(self, batch: dict) -> dict[str, Tensor]:
        with self.autocast():
            g, a = self.model(batch["ground"], batch["aerial"])
        g, a = self._gather(g.float()), self._gather(a.float())
        sim = cast(CrossViewEncoder, self.raw_model).similarity(g, a)
        assert self.loss_fn is not None  # the default step runs only for models without their own step
        utm = batch.get("utm")
        if utm is not None and self._loss_takes_utm:
            if self.world_size > 1:
                parts = [torch.empty_like(utm) for _ in range(self.world_size)]
                dist.all_gather(parts, utm.contiguous())
                utm = torch.cat(parts)
            loss = self.loss_fn(sim, utm=utm)
        else:
            loss = self.loss_fn(sim)
        self.backward(loss)
        self.optimizer_step("main")
        return {"loss": loss.detach()}

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimisation step on a collated batch (this rank's share of a global batch): move to the
        device, preprocess + augment (seeded by ``(seed, global_step)``), forward/backward/step, lr
        schedule. Does not advance ``global_step`` (:meth:`fit` does); used by :meth:`fit` and the
        throughput benchmark."""
        batch = _to_device(batch, self.device)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        local = batch["ground"].shape[0]
        # progress (fractional epochs done / total epochs) drives the FoV curriculum; resume restores it
        progress = self.global_step / max(1, self.epochs * self.steps_per_epoch)
        batch = self.transform(
            batch,
            gen,
            train=True,
            offset=self.rank * local,
            global_batch=local * self.world_size,
            progress=progress,
        )
        if self.channels_last:
            batch["ground"] = batch["ground"].contiguous(memory_format=torch.channels_last)
            batch["aerial"] = batch["aerial"].contiguous(memory_format=torch.channels_last)
        if self.custom_optim:
            out = cast(CustomStepModel, self.raw_model).training_step(batch, self)
        elif self.custom_step:
            out = cast(CustomStepModel, self.raw_model).training_step(batch, self)
            self.backward(out["loss"])
            self.optimizer_step("main")
        else:
            out = self._default_step(batch)
        if self.scaler is not None:
            self.scaler.update()
        # Every schedule follows global_step, also for an optimiser that a custom training_step did
        # not step this time (staged training, e.g. SMDT's retrieval_start_epoch): torch's warning
        # about that order is expected here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for sched in self.schedulers.values():
                sched.step()
        logs = {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in out.items()}
        if not all(math.isfinite(v) for v in logs.values()):
            raise FloatingPointError(f"non-finite training logs at step {self.global_step}: {logs}")
        return logs

    # -- evaluation --------------------------------------------------------------------------------
    def embed(self, dataset: Dataset | PairDataset) -> tuple[Tensor, Tensor, list[str]]:
        """Ground and aerial descriptors of ``dataset`` (eval preprocessing, no augmentation)."""
        # orientation-unknown recipes are evaluated with random panorama rolls from a fixed seed,
        # identical at every evaluation (never with the known orientation)
        noise = bool(self.recipe.orientation_aware and self.recipe.augmentation.pano_shift_deg > 0)
        gen = torch.Generator().manual_seed(EVAL_SHIFT_SEED)
        if dataset is self.val_dataset and self._val_data is not None:
            dataset = self._val_data
        return embed_dataset(
            self.raw_model,
            cast(Dataset, dataset),  # a PairDataset is a map-style torch Dataset (DataLoader-ready)
            prepare=lambda b: self.transform(b, gen, train=False, orientation_noise=noise),
            batch_size=self.eval_batch_size,
            device=self.device,
            num_workers=self.num_workers,
            autocast_dtype=self.autocast_dtype,
            progress=self.progress,
        )

    def evaluate(self, dataset: Dataset | PairDataset | None = None) -> dict[str, Any]:
        """Recall of ``dataset`` (default the validation slice): ground queries, aerial gallery, ties
        counted against the query (``"ties": "pessimistic"`` in the result).

        Raises:
            FloatingPointError: non-finite descriptors (they would rank the true match first).
        """
        dataset = dataset if dataset is not None else self.val_dataset
        if dataset is None:
            raise ValueError("no validation dataset to evaluate")
        if str(getattr(dataset, "split", "")).lower() == "test":
            raise ValueError("the trainer never evaluates on a 'test' split")
        if self.self_evaluating:
            return cast(EvaluatesItself, self.raw_model).evaluate_dataset(dataset, self)
        g, a, _ = self.embed(dataset)
        _check_finite(
            {"ground": g, "aerial": a}, f"the descriptors of {getattr(dataset, 'split', 'the dataset')!r}"
        )
        # ties count against the query: a collapsed model (all descriptors equal) must not score 100
        # the one recall implementation, scored as the leaderboard scores (model_similarity)
        result = retrieval_recall(g, a, similarity=model_similarity(self.raw_model), ties="pessimistic")
        out: dict[str, Any] = result.summary()
        if self.recipe.orientation_aware and self.recipe.augmentation.pano_shift_deg > 0:
            out["orientation"] = f"unknown (shifts seeded {EVAL_SHIFT_SEED})"
        return out

    def _refresh_similarity_sampler(self) -> None:
        sampler = self.batch_sampler
        every = int(getattr(self.recipe.sampling, "similarity_every", 0) or 0)
        if not isinstance(sampler, SimilarityBatchSampler) or every <= 0:
            return
        if self.epoch == 0 or self.epoch % every:
            return
        g, a, _ = self.embed(self.train_dataset)
        sampler.update(g, a, similarity=cast(CrossViewEncoder, self.raw_model).similarity)
        logger.info("epoch %d: similarity neighbours recomputed from %d train samples", self.epoch, len(g))

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Trainer state (plain containers and tensors only)."""
        return {
            "format": _STATE_FORMAT,
            "recipe": str(self.recipe.name),
            "variant": str(self.recipe.variant),
            "seed": self.seed,
            "world_size": self.world_size,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "loss": dict(self.loss_fn.state_dict()) if isinstance(self.loss_fn, nn.Module) else None,
            "sampler": self.batch_sampler.state_dict() if hasattr(self.batch_sampler, "state_dict") else None,
            "rng": _rng_state(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "selection_metric": self.selection_metric,
            "selection_split": self.val_split,
            "history": self.history,
            "epoch_sums": dict(self._epoch_sums),
            "epoch_steps": self._epoch_steps,
            "train_seconds": self.train_seconds,
            "run": self._run_settings(),
        }

    def _run_settings(self) -> dict[str, Any]:
        """What the run was started with and a resume must not change (module convention)."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "recipe": str(self.recipe.name),
            "variant": str(self.recipe.variant),
            "recipe settings": _recipe_settings(self.recipe),
        }

    def _check_resume(self, state: dict[str, Any], source: str | os.PathLike[str]) -> None:
        """Raise :class:`ResumeMismatchError` listing every setting that differs from the run's.
        A state written before ``run`` was recorded is compared on seed, recipe and variant."""
        saved = state.get("run")
        if not isinstance(saved, dict):
            saved = {k: state[k] for k in ("seed", "recipe", "variant") if k in state}
        check_resume(source, saved, self._run_settings(), recorded_only=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the trainer state (not the weights).

        Raises:
            ResumeMismatchError: the state is of a run started with other settings (module convention).
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unsupported trainer state format {state.get('format')!r}")
        self._check_resume(state, "the trainer state")
        if state["world_size"] != self.world_size:
            logger.warning("resuming a %d-rank run on %d ranks", state["world_size"], self.world_size)
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(f"optimisers {sorted(state['optimizers'])} != {sorted(self.optimizers)}")
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if isinstance(self.loss_fn, nn.Module) and state["loss"] is not None:
            self.loss_fn.load_state_dict(state["loss"])
        if state["sampler"] is not None and hasattr(self.batch_sampler, "load_state_dict"):
            self.batch_sampler.load_state_dict(state["sampler"])
        self.seed = int(state["seed"])
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        self.global_step = int(state["global_step"])
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.history = list(state["history"])
        self._epoch_sums = {k: float(v) for k, v in state["epoch_sums"].items()}
        self._epoch_steps = int(state["epoch_steps"])
        self.train_seconds = float(state["train_seconds"])
        _set_rng_state(state["rng"])

    def _metadata(self) -> dict[str, str]:
        return {
            "recipe": str(self.recipe.name),
            "variant": str(self.recipe.variant),
            "recipe_hash": str(self.recipe.fingerprint()) if hasattr(self.recipe, "fingerprint") else "",
            "backbone": str(getattr(self.recipe, "backbone", "")),
            "polar": str(getattr(self.recipe, "polar", "")),
            "polar_preset": str(getattr(self.recipe, "polar_preset", "")),
            "seed": str(self.seed),
            "epoch": str(self.epoch),
            "global_step": str(self.global_step),
            "geo_retrieval": __version__,
            "selection_split": str(self.val_split),
        }

    def save_checkpoint(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Commit ``model.safetensors`` + ``trainer_state.pt`` together as one folder (rank 0; others
        wait): a crash leaves the previous pair or the new one, never a mix (module convention).

        ``directory`` (default ``out_dir/last``) is replaced as a whole, so it may hold only these
        two files.

        Raises:
            FloatingPointError: non-finite weights (the previous checkpoint is kept).
            ValueError: ``directory`` holds other files.
        """
        directory = Path(directory) if directory is not None else RunLayout(self.out_dir).last
        if self.is_main:
            present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
            # leftovers of an interrupted atomic file write (".NAME.XXXX.tmp") go with the old folder
            other = [
                name
                for name in present
                if name not in (WEIGHTS_FILE, STATE_FILE)
                and not (name.startswith(".") and name.endswith(".tmp"))
            ]
            if other:
                raise ValueError(
                    f"save_checkpoint replaces {directory} as a whole, but it holds other files "
                    f"({', '.join(other[:5])}); choose a folder for the checkpoint alone"
                )
            weights = self.raw_model.state_dict()
            _check_finite(dict(weights), f"the weights at step {self.global_step}; not saving {directory}")
            checkpoint_id = secrets.token_hex(8)

            def write(tmp: Path) -> None:
                path = save_weights(
                    weights, tmp / WEIGHTS_FILE, {**self._metadata(), "checkpoint_id": checkpoint_id}
                )
                state = self.state_dict()
                state.update(checkpoint_id=checkpoint_id, weights_sha256=file_sha256(path))
                save_trainer_state(state, tmp / STATE_FILE)

            commit_directory(directory, write)
            _atomic_text(json.dumps(self.history, indent=1) + "\n", RunLayout(self.out_dir).history_json)
        ddp.barrier()
        return directory

    def load_checkpoint(self, directory: str | os.PathLike[str]) -> None:
        """Restore weights (strict) and trainer state from a ``last``-style directory.

        A directory that a crash left missing is first recovered (:func:`recover_checkpoint`, rank 0).

        Raises:
            FileNotFoundError: no checkpoint there.
            InconsistentCheckpointError: the weights and the state were not written together.
            ResumeMismatchError: the checkpoint is of a run started with other settings.
        """
        directory = Path(directory)
        if self.is_main:
            recover_checkpoint(directory)
            if directory.parent.resolve() == self.out_dir.resolve():
                recover_checkpoint(RunLayout(self.out_dir).best)
        ddp.barrier()
        if not (directory / STATE_FILE).exists():
            raise FileNotFoundError(f"no trainer checkpoint at {directory} (expected {STATE_FILE})")
        state = verify_checkpoint_pair(directory / WEIGHTS_FILE, directory / STATE_FILE)
        self._check_resume(state, directory)
        self.raw_model.load_state_dict(load_weights(directory / WEIGHTS_FILE), strict=True)
        self.load_state_dict(state)
        logger.info("resumed from %s at epoch %d, step %d", directory, self.epoch, self.global_step)

    # -- the loop ----------------------------------------------------------------------------------
    def _loader(self, batches: list[list[int]]) -> DataLoader:
        if self.world_size > 1:
            batches = [rank_slice(b, self.rank, self.world_size) for b in batches]
        return DataLoader(
            cast(Dataset, self._train_data),  # a PairDataset is a map-style torch Dataset
            batch_sampler=_FixedBatches(batches),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            # a private generator: creating the iterator must not draw from the global RNG (resume)
            generator=torch.Generator().manual_seed(self.seed + self.epoch),
        )

    def _end_epoch(self, epoch_logs: dict[str, float]) -> None:
        record: dict[str, Any] = {"epoch": self.epoch, "step": self.global_step, **epoch_logs}
        last = self.epoch == self.epochs - 1
        _check_finite(dict(self.raw_model.state_dict()), f"the weights at the end of epoch {self.epoch}")
        due = self.epoch >= self.eval_start and (self.epoch + 1) % self.eval_every == 0
        if self.val_dataset is not None and (due or last):
            metrics = self.evaluate() if self.is_main else None
            metrics = ddp.broadcast_object(metrics)
            record.update({f"val/{k}": v for k, v in metrics.items()})
            value = float(metrics[self.selection_metric])
            if self.best_metric is None:
                better = True
            elif self.selection_mode == "max":
                better = value > self.best_metric
            else:
                better = value < self.best_metric
            if better:
                self.best_metric, self.best_epoch = value, self.epoch
                if self.is_main:
                    self._save_best(value)
                ddp.barrier()
        self.history.append(record)
        logger.info("epoch %d: %s", self.epoch, record)
        self.epoch += 1
        self.batch_in_epoch = 0

    def _save_best(self, value: float) -> None:
        """Commit ``best/``: the weights and ``info.json`` (same step and checkpoint id) as one folder."""
        checkpoint_id = secrets.token_hex(8)
        info = {
            "epoch": self.epoch,
            "step": self.global_step,
            self.selection_metric: value,
            "ties": "pessimistic",
            "selection_split": self.val_split,
            "checkpoint_id": checkpoint_id,
        }

        def write(tmp: Path) -> None:
            save_weights(
                self.raw_model, tmp / WEIGHTS_FILE, {**self._metadata(), "checkpoint_id": checkpoint_id}
            )
            _atomic_text(json.dumps(info, indent=1) + "\n", tmp / INFO_FILE)

        commit_directory(RunLayout(self.out_dir).best, write)

    def fit(self) -> TrainResult:
        """Train to ``epochs`` (or ``max_steps``), evaluating, selecting and checkpointing."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            recipe_json = getattr(self.recipe, "to_dict", None)
            if recipe_json is not None:
                _atomic_text(
                    json.dumps(recipe_json(), indent=1, default=str) + "\n",
                    RunLayout(self.out_dir).recipe_json,
                )
        self.raw_model.train()
        stopped = False
        start_time = time.perf_counter() - self.train_seconds
        try:
            while self.epoch < self.epochs and not stopped:
                if self.batch_in_epoch == 0:
                    self._refresh_similarity_sampler()
                if hasattr(self.batch_sampler, "set_epoch"):
                    self.batch_sampler.set_epoch(self.epoch)
                if self.loss_fn is not None and hasattr(self.loss_fn, "set_epoch"):
                    self.loss_fn.set_epoch(self.epoch)
                batches = list(self.batch_sampler)
                if not batches:
                    raise ValueError(
                        f"no full batch of {self.batch_size} fits {len(self.train_dataset)} training samples"
                    )
                loader = self._loader(batches[self.batch_in_epoch :])
                bar = tqdm(
                    loader,
                    desc=f"epoch {self.epoch}",
                    disable=not (self.progress and self.is_main),
                    leave=False,
                )
                for batch in bar:
                    self._in_step = True
                    logs = self.train_step(batch)
                    self.global_step += 1
                    self.batch_in_epoch += 1
                    self._in_step = False
                    for k, v in logs.items():
                        self._epoch_sums[k] = self._epoch_sums.get(k, 0.0) + v
                    self._epoch_steps += 1
                    bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
                    try:
                        for cb in self.callbacks:
                            cb(self, {"step": self.global_step, "epoch": self.epoch, **logs})
                    except StopTraining:
                        stopped = True
                    if self.max_steps is not None and self.global_step >= self.max_steps:
                        stopped = True
                    if self.checkpoint_every and self.global_step % self.checkpoint_every == 0:
                        self.train_seconds = time.perf_counter() - start_time
                        self.save_checkpoint()
                    if stopped:
                        break
                bar.close()
                if self.batch_in_epoch == len(batches):
                    steps = max(1, self._epoch_steps)
                    self._end_epoch({f"train/{k}": v / steps for k, v in self._epoch_sums.items()})
                    self._epoch_sums, self._epoch_steps = {}, 0
                self.train_seconds = time.perf_counter() - start_time
                self.save_checkpoint()
        except KeyboardInterrupt:
            self.train_seconds = time.perf_counter() - start_time
            if not self._in_step:
                logger.warning("interrupted between steps: saving %s", RunLayout(self.out_dir).last)
                self.save_checkpoint()
            else:
                logger.warning("interrupted inside a step: keeping the previous checkpoint")
            raise
        return TrainResult(
            recipe=str(self.recipe.name),
            variant=str(self.recipe.variant),
            epochs_completed=self.epoch,
            global_step=self.global_step,
            finished=self.epoch >= self.epochs,
            best_metric=self.best_metric,
            best_epoch=self.best_epoch,
            selection_metric=self.selection_metric,
            selection_split=self.val_split,
            history=list(self.history),
            train_seconds=self.train_seconds,
            out_dir=str(self.out_dir),
        )
