"""Training: the :class:`Trainer`, lr schedules, batch augmentation, validation recall and DDP helpers."""

from __future__ import annotations

from .augment import Augmentation, BatchTransform, Normalisation, joint_hflip, joint_rot90
from .ddp import get_rank, get_world_size, init_distributed, is_distributed, unwrap_model
from .evaluate import RecallResult, compute_ranks, embed_dataset, recall_at_k
from .schedules import WarmupCosine, build_lr_scheduler, piecewise_value
from .splits import IdSubset, dataset_ids, holdout_ids, load_id_list, save_id_list, split_holdout
from .synthetic import SyntheticPairs
from .trainer import (
    ResumeMismatchError,
    StopTraining,
    Trainer,
    TrainResult,
    build_optimizer,
    recover_checkpoint,
)

__all__ = [
    "Augmentation",
    "BatchTransform",
    "IdSubset",
    "Normalisation",
    "RecallResult",
    "ResumeMismatchError",
    "StopTraining",
    "SyntheticPairs",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "build_lr_scheduler",
    "build_optimizer",
    "compute_ranks",
    "dataset_ids",
    "embed_dataset",
    "get_rank",
    "get_world_size",
    "holdout_ids",
    "init_distributed",
    "is_distributed",
    "joint_hflip",
    "joint_rot90",
    "load_id_list",
    "piecewise_value",
    "recall_at_k",
    "recover_checkpoint",
    "save_id_list",
    "split_holdout",
    "unwrap_model",
]
