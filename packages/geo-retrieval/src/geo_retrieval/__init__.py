"""geo-retrieval: backbones, retrieval heads, losses, training and search for cross-view
geo-localisation."""

from __future__ import annotations

__version__ = "0.1.0"

# --- models, losses, search (backbones/heads/losses/distributed/model/checkpoint/search/convert)
from .backbones import Backbone, create_backbone, list_backbones, register_backbone
from .checkpoint import (
    UnsafeCheckpointError,
    atomic_save,
    atomic_write_bytes,
    load_trainer_state,
    load_weights,
    read_metadata,
    save_trainer_state,
    save_weights,
    strip_prefixes,
    unwrap_state_dict,
)
from .convert import bake_spectral_norm, convert_toker
from .distributed import all_gather_with_grad, barrier, is_distributed, is_main_process, rank, world_size
from .heads import (
    AvgHead,
    DSMHead,
    DSMMatch,
    GeMHead,
    SAFAHead,
    TransformerHead,
    circular_w_padding_,
    create_head,
    dsm_correlation,
    dsm_shift_to_degrees,
    dsm_similarity,
    list_heads,
    register_head,
    safa_aggregate,
)
from .losses import InfoNCELoss, SoftMarginTripletLoss, cosine_similarity_matrix, create_loss, list_losses
from .model import CrossViewModel, build_model
from .recipes import Recipe, build_recipe, get_recipe, list_recipes, register_recipe
from .sampling import (
    GPSNeighbourBatchSampler,
    NeighbourBatchSampler,
    SimilarityBatchSampler,
    UniqueIdBatchSampler,
    geo_neighbours,
    haversine_distance,
    similarity_neighbours,
)
from .search import FaissIndex, MissingDependencyError, dsm_orientations, extract_descriptors, topk_search
from .training import (
    Augmentation,
    BatchTransform,
    Normalisation,
    RecallResult,
    StopTraining,
    SyntheticPairs,
    Trainer,
    TrainResult,
    holdout_ids,
    recall_at_k,
    split_holdout,
)

__all__ = [
    "__version__",
    # models, losses, search
    "AvgHead",
    "Backbone",
    "CrossViewModel",
    "DSMHead",
    "DSMMatch",
    "FaissIndex",
    "GeMHead",
    "InfoNCELoss",
    "MissingDependencyError",
    "SAFAHead",
    "SoftMarginTripletLoss",
    "TransformerHead",
    "UnsafeCheckpointError",
    "all_gather_with_grad",
    "atomic_save",
    "atomic_write_bytes",
    "bake_spectral_norm",
    "barrier",
    "build_model",
    "circular_w_padding_",
    "convert_toker",
    "cosine_similarity_matrix",
    "create_backbone",
    "create_head",
    "create_loss",
    "dsm_correlation",
    "dsm_orientations",
    "dsm_shift_to_degrees",
    "dsm_similarity",
    "extract_descriptors",
    "is_distributed",
    "is_main_process",
    "list_backbones",
    "list_heads",
    "list_losses",
    "load_trainer_state",
    "load_weights",
    "rank",
    "read_metadata",
    "register_backbone",
    "register_head",
    "safa_aggregate",
    "save_trainer_state",
    "save_weights",
    "strip_prefixes",
    "topk_search",
    "unwrap_state_dict",
    "world_size",
    # recipes, training, sampling
    "Augmentation",
    "BatchTransform",
    "GPSNeighbourBatchSampler",
    "NeighbourBatchSampler",
    "Normalisation",
    "RecallResult",
    "Recipe",
    "SimilarityBatchSampler",
    "StopTraining",
    "SyntheticPairs",
    "TrainResult",
    "Trainer",
    "UniqueIdBatchSampler",
    "build_recipe",
    "geo_neighbours",
    "get_recipe",
    "haversine_distance",
    "holdout_ids",
    "list_recipes",
    "recall_at_k",
    "register_recipe",
    "similarity_neighbours",
    "split_holdout",
]
