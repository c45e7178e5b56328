"""Training: the :class:`Trainer`, lr schedules, batch augmentation and DDP helpers (validation recall and
descriptors come from :mod:`geo_retrieval.ranking` and :mod:`geo_retrieval.embedding`)."""

from __future__ import annotations

from ..config import Augmentation, Normalisation
from ..distributed import init_distributed, is_distributed, unwrap_model
from .augment import PREPARED, BatchTransform, joint_hflip, joint_rot90
from .prepared import PreparedPairs, prepared_size
from .schedules import WarmupCosine, build_lr_scheduler, piecewise_value
from .splits import IdSubset, dataset_ids, holdout_ids, load_id_list, save_id_list, split_holdout
from .trainer import (
    ResumeMismatchError,
    StopTraining,
    Trainer,
    TrainResult,
    build_optimizer,
    check_resume,
    recover_checkpoint,
)

__all__ = [
    "PREPARED",
    "Augmentation",
    "BatchTransform",
    "IdSubset",
    "Normalisation",
    "PreparedPairs",
    "ResumeMismatchError",
    "StopTraining",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "build_lr_scheduler",
    "build_optimizer",
    "check_resume",
    "dataset_ids",
    "holdout_ids",
    "init_distributed",
    "is_distributed",
    "joint_hflip",
    "joint_rot90",
    "load_id_list",
    "piecewise_value",
    "prepared_size",
    "recover_checkpoint",
    "save_id_list",
    "split_holdout",
    "unwrap_model",
]
