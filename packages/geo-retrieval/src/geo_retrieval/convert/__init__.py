"""Converters from published checkpoints to our models: one module per source, one ``convert()``.

Convention:
    - ``convert(source, src, out_dir, **options)`` (and ``python -m geo_retrieval.convert SOURCE SRC
      OUT_DIR``) looks the source up in a string registry (:mod:`.sources`); each source is one module
      here that registers itself with :func:`register_source`: ``toker`` (:mod:`.toker`, Toker et al.'s
      G / D / R components) and ``sample4geo`` (:mod:`.sample4geo`).
    - Loading is ``torch.load(weights_only=True)`` or safetensors only, never anything else.
    - Mapping is strict (:func:`map_state_dict`): every source key used (or dropped by name, with the
      reason), every parameter of our model filled, shapes equal; otherwise one
      :class:`StateDictMismatchError` names the file and the first missing / unexpected / mismatched keys
      with their counts. There is no ``strict=False``.
    - A source that maps onto a recipe writes a folder (:mod:`.manifest`): ``model.safetensors``,
      ``recipe.json`` and ``manifest.json`` (source kind, file and sha256, converter version, recipe name,
      variant and overrides, weights sha256, upstream preprocessing, descriptor dimension), written
      atomically as a whole.

Adding a source: write ``convert/<name>.py`` with a function decorated by ``@register_source("<name>",
summary=..., add_arguments=...)`` that loads with ``_safe_torch_load`` / ``load_weights``, renames keys
onto a built recipe's model through :func:`map_state_dict` and calls :func:`write_converted`; import the
module below.
"""

from __future__ import annotations

from . import dsm, geodtr, l2ltr, safa, sample4geo, toker, transgeo, vit_r50
from .cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, main
from .manifest import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Manifest,
    UpstreamPreprocessing,
    is_converted,
    load_converted,
    read_manifest,
    recipe_from_manifest,
    write_converted,
)
from .mapping import MappedState, StateDictMismatchError, map_state_dict
from .sample4geo import convert_sample4geo
from .sources import Source, convert, get_source, list_sources, register_source
from .toker import TOKER_COMPONENTS, bake_spectral_norm, convert_toker

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "MANIFEST_FILE",
    "TOKER_COMPONENTS",
    "WEIGHTS_FILE",
    "Manifest",
    "MappedState",
    "Source",
    "StateDictMismatchError",
    "UpstreamPreprocessing",
    "bake_spectral_norm",
    "convert",
    "convert_sample4geo",
    "convert_toker",
    "dsm",
    "geodtr",
    "get_source",
    "is_converted",
    "l2ltr",
    "list_sources",
    "load_converted",
    "main",
    "map_state_dict",
    "read_manifest",
    "recipe_from_manifest",
    "register_source",
    "safa",
    "sample4geo",
    "toker",
    "transgeo",
    "vit_r50",
    "write_converted",
]
