"""Converted-checkpoint folders: ``model.safetensors``, ``recipe.json`` and ``manifest.json``.

Convention: a converted checkpoint is one folder, written as a whole (a temporary sibling switched in
by :func:`~geo_retrieval.checkpoint.commit_directory`, so a crash leaves the old folder or the new
one, never a mix):

- ``model.safetensors``: our model's state dict (metadata: recipe, variant, source kind / file /
  sha256, converter);
- ``recipe.json``: ``recipe.to_dict()`` of the recipe the weights belong to (registered name and
  variant with the overrides applied), as a run folder has it;
- ``manifest.json``: :class:`Manifest`: the source (kind, file name, sha256, options), the converter
  version, the recipe (name, variant and the model-defining fields as overrides, so
  :func:`recipe_from_manifest` rebuilds the model exactly), the weights' sha256, the mapping
  (keys dropped on purpose, dtype casts) and the **upstream preprocessing**
  (:class:`UpstreamPreprocessing`: reader, resize method, input sizes (H, W), mean / std of x / 255,
  crop, polar preset and size) with the descriptor dimension and normalisation.

``geo-bench evaluate --checkpoint OUT_DIR`` reads the manifest and, by default, reproduces the
upstream preprocessing (``geo_bench.datasets.upstream_preprocess``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .. import __version__
from ..checkpoint import atomic_write_bytes, commit_directory, file_sha256, load_model_weights, save_weights
from ..recipes import Recipe, build, get_recipe
from .mapping import MappedState

__all__ = [
    "FORMAT",
    "MANIFEST_FILE",
    "MODEL_FIELDS",
    "RECIPE_FILE",
    "WEIGHTS_FILE",
    "Manifest",
    "UpstreamPreprocessing",
    "is_converted",
    "load_converted",
    "read_manifest",
    "recipe_from_manifest",
    "write_converted",
]

FORMAT = "geo-retrieval/converted-checkpoint"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"

#: The recipe fields that define the model (and its input layout); a manifest records them all as
#: overrides, so the model is rebuilt exactly even if the registered recipe changes later.
MODEL_FIELDS = (
    "backbone",
    "aerial_backbone",
    "shared",
    "backbone_kwargs",
    "head",
    "head_kwargs",
    "ground_size",
    "aerial_size",
    "fov",
    "polar",
    "polar_preset",
    "polar_center",
)


@dataclass(frozen=True)
class UpstreamPreprocessing:
    """How the upstream code turns image files into model inputs at evaluation.

    Attributes:
        reader: the image reader, by name (``"opencv"``: ``cv2.imread`` then BGR -> RGB, uint8).
        resize: the resize method (``"cv2.INTER_LINEAR_EXACT"``).
        ground_size, aerial_size: (H, W) of the model inputs.
        mean, std: per-channel normalisation of x / ``max_pixel_value`` (RGB order).
        max_pixel_value: the scale of the uint8 pixels (255).
        ground_crop: rows (a, b) as fractions of H kept before the resize, or None (no crop).
        polar: ``{"preset", "size", "center"}`` of a polar aerial, or None (raw aerial).
        prepared: the intermediate image files upstream's data-preparation script writes and its loader
            reads back, replayed in memory, or None (the loader reads the dataset's files): ``{"views":
            [...], "decode", "format": "jpeg", "quality"}`` (Toker et al.'s CVACT ``polarmap/`` and
            ``streetview_polish/`` JPEGs).
        aerial_tokens: the aerial patch tokens upstream's model keeps at evaluation, or None (all):
            ``{"method": "transgeo_attention", "keep_rate", ...}`` (TransGeo's stage-2 crop).
        code: where upstream does this (repository and files), for the record.
    """

    reader: str
    resize: str
    ground_size: tuple[int, int]
    aerial_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_pixel_value: float = 255.0
    ground_crop: tuple[float, float] | None = None
    polar: dict[str, Any] | None = None
    prepared: dict[str, Any] | None = None
    aerial_tokens: dict[str, Any] | None = None
    code: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("prepared", "aerial_tokens"):  # absent unless used (older manifests lack them)
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UpstreamPreprocessing:
        d = dict(d)
        for key in ("ground_size", "aerial_size", "mean", "std", "ground_crop"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class Manifest:
    """The ``manifest.json`` of a converted checkpoint (see the module Convention)."""

    source_kind: str
    source_file: str
    source_sha256: str
    recipe: str
    variant: str
    overrides: dict[str, Any]
    weights_sha256: str
    preprocessing: UpstreamPreprocessing
    descriptor_dim: int
    descriptor_normalisation: str = "l2"
    source_options: dict[str, Any] = field(default_factory=dict)
    source_extra: dict[str, Any] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    casts: dict[str, int] = field(default_factory=dict)
    converter_version: str = __version__
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json``."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": {
                "kind": self.source_kind,
                "file": self.source_file,
                "sha256": self.source_sha256,
                "options": self.source_options,
                **({"extra": self.source_extra} if self.source_extra else {}),
            },
            "converter": {"name": "geo_retrieval.convert", "version": self.converter_version},
            "recipe": {"name": self.recipe, "variant": self.variant, "overrides": self.overrides},
            "weights": {"file": WEIGHTS_FILE, "sha256": self.weights_sha256},
            "mapping": {"dropped": self.dropped, "casts": self.casts},
            "preprocessing": self.preprocessing.to_dict(),
            "descriptor": {"dim": self.descriptor_dim, "normalisation": self.descriptor_normalisation},
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """Parse a ``manifest.json`` object (``ValueError`` naming what is wrong)."""
        if d.get("format") != FORMAT:
            raise ValueError(
                f"not a converted-checkpoint manifest (format {d.get('format')!r}, expected {FORMAT!r})"
            )
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"manifest format_version {d.get('format_version')} is newer than this geo-retrieval reads "
                f"({FORMAT_VERSION}); update geo-retrieval"
            )
        try:
            src, rec = d["source"], d["recipe"]
            return cls(
                source_kind=str(src["kind"]),
                source_file=str(src["file"]),
                source_sha256=str(src["sha256"]),
                source_options=dict(src.get("options", {})),
                source_extra=dict(src.get("extra", {})),
                recipe=str(rec["name"]),
                variant=str(rec["variant"]),
                overrides=dict(rec.get("overrides", {})),
                weights_sha256=str(d["weights"]["sha256"]),
                preprocessing=UpstreamPreprocessing.from_dict(d["preprocessing"]),
                descriptor_dim=int(d["descriptor"]["dim"]),
                descriptor_normalisation=str(d["descriptor"].get("normalisation", "l2")),
                dropped=dict(d.get("mapping", {}).get("dropped", {})),
                casts=dict(d.get("mapping", {}).get("casts", {})),
                converter_version=str(d.get("converter", {}).get("version", "")),
                notes=tuple(d.get("notes", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"incomplete converted-checkpoint manifest: {type(exc).__name__} {exc}"
            ) from None


def _json_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _restore(value: Any) -> Any:
    """JSON lists back to the tuples the recipes use."""
    if isinstance(value, Mapping):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_restore(v) for v in value)
    return value


def model_overrides(recipe: Recipe) -> dict[str, Any]:
    """The :data:`MODEL_FIELDS` of ``recipe`` as JSON values."""
    return {name: _json_value(getattr(recipe, name)) for name in MODEL_FIELDS}


def recipe_from_manifest(manifest: Manifest) -> Recipe:
    """The registered recipe ``manifest.recipe`` / ``manifest.variant`` with the manifest's overrides.

    Raises:
        ValueError: unknown recipe, or an override that is no field of it.
    """
    recipe = get_recipe(manifest.recipe, manifest.variant)
    unknown = sorted(set(manifest.overrides) - set(recipe.to_dict()))
    if unknown:
        raise ValueError(f"manifest overrides {unknown} are no fields of recipe {manifest.recipe!r}")
    return recipe.replace(**_restore(manifest.overrides))


def is_converted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a converted-checkpoint folder (or a file inside one): it holds ``manifest.json``."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    return (folder / MANIFEST_FILE).is_file()


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The :class:`Manifest` of a converted-checkpoint folder (or of its ``manifest.json`` / weights file).

    Raises:
        FileNotFoundError: no ``manifest.json`` there.
        ValueError: the file is not valid JSON or not a manifest (names the file).
    """
    p = Path(path)
    file = p if p.name == MANIFEST_FILE else (p if p.is_dir() else p.parent) / MANIFEST_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_FILE} in {os.fspath(file.parent)!r}: not a converted checkpoint"
        )
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); convert the checkpoint again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(data).__name__}")
    try:
        return Manifest.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


def load_converted(
    path: str | os.PathLike[str], *, verify: bool = True
) -> tuple[Manifest, Recipe, nn.Module]:
    """Read a converted-checkpoint folder: its manifest, the recipe (overrides applied) and the model
    with the weights loaded strictly.

    Args:
        path: the folder (or a file inside it).
        verify: check the weights file's sha256 against the manifest first.

    Raises:
        FileNotFoundError: no manifest or no weights file.
        ValueError: a manifest that does not match its weights (sha256), or weights that do not fit.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    manifest = read_manifest(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {os.fspath(folder)!r}")
    if verify and file_sha256(weights) != manifest.weights_sha256:
        raise ValueError(
            f"{weights} does not match {folder / MANIFEST_FILE} (sha256 differs): the folder was changed "
            "after the conversion; convert the checkpoint again"
        )
    recipe = recipe_from_manifest(manifest)
    model = build(recipe)
    load_model_weights(model, weights)
    return manifest, recipe, model


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a converted checkpoint (the whole folder is replaced)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"OUT_DIR {os.fspath(out_dir)!r} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
        raise FileExistsError(
            f"OUT_DIR {os.fspath(out_dir)!r} is not empty and holds no {MANIFEST_FILE}: a conversion replaces the "
            "whole folder; name a new or empty folder (or an earlier conversion's)"
        )


def write_converted(
    out_dir: str | os.PathLike[str],
    *,
    model: nn.Module,
    recipe: Recipe,
    mapped: MappedState,
    src: Path,
    source_kind: str,
    preprocessing: UpstreamPreprocessing,
    descriptor_dim: int,
    source_options: Mapping[str, Any] | None = None,
    source_extra: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Load ``mapped`` into ``model`` strictly (proving the mapping), then write the folder ``out_dir``
    atomically (see the module Convention).

    Returns:
        ``{"model": ..., "recipe": ..., "manifest": ...}`` paths.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    model.load_state_dict(mapped.state, strict=True)
    src_sha = file_sha256(src)

    def write(tmp: Path) -> None:
        metadata = {
            "format": FORMAT,
            "recipe": recipe.name,
            "variant": recipe.variant,
            "source_kind": source_kind,
            "source_file": src.name,
            "source_sha256": src_sha,
            "converter": f"geo_retrieval.convert {__version__}",
        }
        save_weights(mapped.state, tmp / WEIGHTS_FILE, metadata)
        atomic_write_bytes(
            tmp / RECIPE_FILE, (json.dumps(recipe.to_dict(), indent=1, default=str) + "\n").encode()
        )
        manifest = Manifest(
            source_kind=source_kind,
            source_file=src.name,
            source_sha256=src_sha,
            source_options=_json_value(dict(source_options or {})),
            source_extra=_json_value(dict(source_extra or {})),
            recipe=recipe.name,
            variant=recipe.variant,
            overrides=model_overrides(recipe),
            weights_sha256=file_sha256(tmp / WEIGHTS_FILE),
            preprocessing=preprocessing,
            descriptor_dim=int(descriptor_dim),
            dropped=dict(mapped.dropped),
            casts=dict(mapped.casts),
            notes=tuple(notes),
        )
        text = json.dumps(_json_value(manifest.to_dict()), indent=1) + "\n"
        atomic_write_bytes(tmp / MANIFEST_FILE, text.encode())

    commit_directory(out_dir, write)
    return {
        "model": out_dir / WEIGHTS_FILE,
        "recipe": out_dir / RECIPE_FILE,
        "manifest": out_dir / MANIFEST_FILE,
    }
