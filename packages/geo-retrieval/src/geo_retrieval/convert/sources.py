"""The registry of checkpoint sources and the one ``convert()`` entry.

Convention: a *source* is a kind of published checkpoint (``"toker"``, ``"sample4geo"``, ...). Each
lives in one module of :mod:`geo_retrieval.convert` that registers a converter
``fn(src: Path, out_dir: Path, **options) -> {name: written path}`` with :func:`register_source`
(and, for the command line, the options it takes with ``add_arguments``). :func:`convert` looks the
source up by name and runs it; an unknown name raises ``ValueError`` listing the known ones. A
duplicate name raises unless ``overwrite=True`` (the toolkit's one registry policy).

A source that maps onto one of our recipes writes a *converted-checkpoint folder* through
:func:`geo_retrieval.convert.manifest.write_converted`: ``model.safetensors``, ``recipe.json`` and
``manifest.json``, mapped strictly by :func:`geo_retrieval.convert.mapping.map_state_dict`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geo_transforms.registry import Registry

__all__ = ["Source", "SourceConverter", "convert", "get_source", "list_sources", "register_source"]

#: ``fn(src, out_dir, **options) -> {name: written path}``
SourceConverter = Callable[..., dict[str, Path]]


@dataclass(frozen=True)
class Source:
    """One registered checkpoint source.

    Attributes:
        name: the registry name (the CLI's SOURCE).
        convert: ``fn(src, out_dir, **options) -> {name: written path}``.
        summary: one line for ``--help``.
        add_arguments: adds the source's own command-line options (their ``dest`` names are the
            keyword options of ``convert``), or None.
    """

    name: str
    convert: SourceConverter
    summary: str = ""
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


_SOURCES: Registry[Source] = Registry("checkpoint source")


def register_source(
    name: str,
    *,
    summary: str = "",
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    overwrite: bool = False,
) -> Callable[[SourceConverter], SourceConverter]:
    """Decorator registering a converter function as the source ``name``.

    Example:
        >>> @register_source("example-doc", summary="a doctest source")
        ... def _example(src, out_dir, **options):
        ...     return {}
        >>> "example-doc" in list_sources()
        True
        >>> _ = _SOURCES.unregister("example-doc")
    """

    def add(fn: SourceConverter) -> SourceConverter:
        _SOURCES.register(
            name, Source(name, fn, summary=summary, add_arguments=add_arguments), overwrite=overwrite
        )
        return fn

    return add


def list_sources() -> list[str]:
    """The registered source names, sorted."""
    return _SOURCES.names()


def get_source(name: str) -> Source:
    """The registered :class:`Source` ``name`` (``ValueError`` listing the known ones otherwise)."""
    if not isinstance(name, str):
        raise TypeError(f"source must be a str, got {type(name).__name__}")
    found = _SOURCES.find(name)
    if found is None:
        raise ValueError(f"unknown checkpoint source {name!r}; available: {list_sources()}")
    return found


def convert(
    source: str, src: str | os.PathLike[str], out_dir: str | os.PathLike[str], **options: Any
) -> dict[str, Path]:
    """Convert the published checkpoint ``src`` of kind ``source`` into ``out_dir``.

    Args:
        source: a registered source name (:func:`list_sources`).
        src: the checkpoint file (pickles are read with ``weights_only=True`` only).
        out_dir: the output folder (replaced as a whole where the source writes a recipe folder).
        **options: the source's options (``dataset=``, ``model=`` ...).

    Returns:
        ``{name: path}`` of the files written.

    Raises:
        ValueError: unknown source; a checkpoint that does not fit (names the file and the keys).
        FileNotFoundError: no file at ``src``.
        UnsafeCheckpointError, CorruptCheckpointError: an unsafe or damaged file.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(src)!r}")
    return get_source(source).convert(src, Path(out_dir), **options)
