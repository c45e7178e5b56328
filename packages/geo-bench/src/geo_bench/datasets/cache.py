"""A memory-mappable uint8 cache of decoded, cropped, resized (and polar-transformed) views.

Layout of one cache *entry* (one dataset, split and preprocessing configuration)::

    CACHE/<dataset>-<split>-<config hash>/
        ground.npy       (N, 3, H, W) uint8, the queries, in the dataset's order
        aerial.npy       (M, 3, h, w) uint8, the aerials (M = N for CVUSA/CVACT, the gallery for VIGOR)
        progress.json    only while preparing: finished chunks and their sha256
        manifest.json    written last: the entry is complete iff it exists

``manifest.json`` holds the format version, the dataset's full ``cache_config()`` (dataset, split,
sizes, polar preset/size/centre, crop, interpolation, dataset-specific settings), the package
versions, and per view: file, shape, ids, chunk size, the sha256 of every chunk of ``chunk_size``
items (the raw bytes of ``array[k*chunk:(k+1)*chunk]``) and ``sha256`` = sha256 of the concatenated
chunk digests.

Convention: arrays are (count, 3, H, W) uint8, opened with ``np.load(mmap_mode="r")``; a sample read
from the cache equals the one decoded from the raw files bit for bit (the loaders quantise to uint8
too). Preparing is resumable: chunks are written, flushed and recorded one at a time, and a rerun
continues at the first unrecorded chunk. Opening verifies the manifest against the dataset
(configuration, ids, shapes); the chunk checksums are checked ``"lazy"`` (a chunk the first time it
is read, per process, default), ``"full"`` (all at open) or not at all (``"meta"``).

Damage: an array file that is missing, truncated, not a ``.npy`` or of another shape than the
manifest says raises :class:`CacheError` naming the file and saying to run ``geo-bench prepare``
again, which rebuilds exactly the damaged views of a complete entry (with a warning) and restarts a
damaged view of an interrupted one. :class:`CacheError` is a ``ValueError``, so the command line
reports it in one line.

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from geo_transforms import __version__ as _geo_transforms_version

from .. import __version__ as _geo_bench_version
from .errors import CacheError

__all__ = ["CACHE_FORMAT", "CacheEntry", "CacheError", "CacheableDataset", "open_cache", "prepare_cache"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_VERIFY = ("lazy", "full", "meta")
_REBUILD = "run `geo-bench prepare` again to rebuild it"


class CacheableDataset(Protocol):
    """What the cache needs of a dataset; :class:`~geo_bench.datasets.base.CrossViewDataset` has it.

    The cache depends on this interface only, not on the dataset module (which imports the cache).
    """

    _cache: CacheEntry | None

    @property
    def name(self) -> str: ...

    @property
    def split(self) -> str: ...

    @property
    def root(self) -> Path: ...

    @property
    def ground_size(self) -> tuple[int, int] | None: ...

    @property
    def aerial_size(self) -> tuple[int, int] | None: ...

    @property
    def native_ground(self) -> tuple[int, int] | None: ...

    @property
    def native_aerial(self) -> tuple[int, int] | None: ...

    @property
    def protocol(self) -> dict[str, Any]: ...

    @property
    def aspect_mismatches(self) -> dict[str, int]: ...

    def cache_key(self) -> str: ...

    def cache_config(self) -> dict[str, Any]: ...

    def view_ids(self) -> dict[str, list[str]]: ...

    def load_view(self, view: str, i: int) -> Tensor: ...


def _versions() -> dict[str, str]:
    return {"geo-bench": _geo_bench_version, "geo-transforms": _geo_transforms_version}


def _atomic_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def _tree_sha(chunks: list[str]) -> str:
    return hashlib.sha256("".join(chunks).encode()).hexdigest()


def _entry_dir(cache: str | os.PathLike[str], dataset: CacheableDataset) -> Path:
    cache = Path(cache)
    if (cache / "manifest.json").is_file() or (cache / "progress.json").is_file():
        return cache
    return cache / dataset.cache_key()


def _load_array(path: Path, mode: Literal["r", "r+"] = "r", shape: list[int] | None = None) -> np.ndarray:
    """``np.load(path, mmap_mode=mode)`` of a cache array, checked against ``shape`` (uint8).

    Raises:
        CacheError: the file is missing, truncated, not a ``.npy`` array or of another shape or
            dtype; one line naming the file and ending with the advice to run prepare again.
    """
    try:
        arr = np.load(path, mmap_mode=mode, allow_pickle=False)
    except FileNotFoundError:
        problem = f"cache file {path} is missing"
    except (OSError, ValueError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        problem = f"cache file {path} is damaged (truncated or not a .npy array: {reason})"
    else:
        if shape is None or (list(arr.shape) == list(shape) and arr.dtype == np.uint8):
            return arr
        problem = (
            f"cache file {path} holds {tuple(arr.shape)} {arr.dtype}, the manifest says {tuple(shape)} uint8"
        )
    raise CacheError(f"{problem}; {_REBUILD}")


def _damaged_views(entry: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """View -> what is wrong with its array file, for the views of ``manifest`` that are damaged."""
    damaged = {}
    for view, meta in manifest.get("views", {}).items():
        try:
            _load_array(entry / meta["file"], shape=meta["shape"])
        except CacheError as exc:
            damaged[view] = str(exc).removesuffix(f"; {_REBUILD}")
    return damaged


def _rebuild_state(
    entry: Path, config: dict[str, Any], view_ids: dict[str, list[str]]
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """Resume state that re-prepares the damaged views of the complete entry ``entry``.

    None when the manifest is unreadable, belongs to another configuration or other ids, or when
    no view is damaged: then the entry's own error stands.
    """
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        views = manifest["views"]
        chunk_size = int(views["ground"]["chunk_size"])
        if _diff(manifest.get("config", {}), config) or manifest.get("format") != CACHE_FORMAT:
            return None
        if set(views) != set(view_ids) or any(views[v]["ids"] != view_ids[v] for v in views):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    damaged = _damaged_views(entry, manifest)
    if not damaged:
        return None
    state: dict[str, Any] = {"format": CACHE_FORMAT, "config": config, "chunk_size": chunk_size, "views": {}}
    for view, meta in views.items():
        if view not in damaged:
            chunks = {str(k): sha for k, sha in enumerate(meta["chunk_sha256"])}
            state["views"][view] = {"shape": meta["shape"], "ids": meta["ids"], "chunks": chunks}
    return state, damaged


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: cache has {a.get(k)!r}, dataset wants {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def prepare_cache(
    dataset: CacheableDataset,
    out: str | os.PathLike[str],
    *,
    chunk_size: int = 256,
    progress: bool = True,
) -> Path:
    """Decode, crop, resize (and polar-transform) every view of ``dataset`` once into ``out``.

    Resumable: rerunning after an interruption continues at the first unfinished chunk; rerunning
    on a complete entry only checks its manifest, and rebuilds the views whose array file is
    missing, truncated or of the wrong shape (with a ``UserWarning`` naming the file).

    Args:
        dataset: a dataset opened *without* ``cache=``.
        out: cache root; the entry goes to ``out / dataset.cache_key()``.
        chunk_size: items per written, checksummed chunk.
        progress: show a tqdm progress bar.

    Returns:
        the entry directory (pass it, or ``out``, as ``cache=`` to the dataset).
    """
    if dataset._cache is not None:
        raise ValueError("prepare_cache needs a dataset opened without cache=")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    entry = Path(out) / dataset.cache_key()
    entry.mkdir(parents=True, exist_ok=True)
    config = dataset.cache_config()
    view_ids = dataset.view_ids()
    prog_path = entry / "progress.json"
    if (entry / "manifest.json").is_file():
        try:
            open_cache(entry, dataset, verify="meta", query_ids=view_ids["ground"])
        except CacheError:
            rebuild = _rebuild_state(entry, config, view_ids)
            if rebuild is None:
                raise
            state, damaged = rebuild
            for view, problem in damaged.items():
                warnings.warn(f"{problem}: rebuilding the {view} view of {entry}", UserWarning, stacklevel=2)
                (entry / f"{view}.npy").unlink(missing_ok=True)
            chunk_size = state["chunk_size"]
            _atomic_json(prog_path, state)
            (entry / "manifest.json").unlink()  # incomplete until rebuilt
        else:
            log.info("cache entry %s is already complete", entry)
            return entry
    elif prog_path.is_file():
        state = json.loads(prog_path.read_text())
        problems = _diff(state.get("config", {}), config)
        if state.get("format") != CACHE_FORMAT:
            problems.append(f"format: {state.get('format')} != {CACHE_FORMAT}")
        if state.get("chunk_size") != chunk_size:
            log.info("resuming with the recorded chunk_size=%s", state.get("chunk_size"))
            chunk_size = int(state["chunk_size"])
        for v, ids in view_ids.items():
            if state.get("views", {}).get(v, {}).get("ids") not in (None, ids):
                problems.append(f"{v} ids differ")
        if problems:
            raise CacheError(
                f"cannot resume {entry}: the partial cache was made with other settings:\n  "
                + "\n  ".join(problems)
                + f"\nDelete {entry} to start over."
            )
    else:
        state = {"format": CACHE_FORMAT, "config": config, "chunk_size": chunk_size, "views": {}}

    total = sum(len(ids) for ids in view_ids.values())
    done = sum(
        min(len(view_ids[v]), len(s.get("chunks", {})) * chunk_size) for v, s in state["views"].items()
    )
    bar = None
    if progress:
        bar = tqdm(total=total, initial=done, unit="img", desc=f"prepare {dataset.name} {dataset.split}")
    decoded: dict[str, int] = {}
    try:
        for view, ids in view_ids.items():
            decoded[view] = _prepare_view(dataset, entry, state, view, ids, chunk_size, prog_path, bar)
    finally:
        if bar is not None:
            bar.close()
    _report_aspect(dataset, decoded)

    views = {}
    for view, ids in view_ids.items():
        s = state["views"][view]
        chunks = [s["chunks"][str(k)] for k in range(len(s["chunks"]))]
        views[view] = {
            "file": f"{view}.npy",
            "shape": s["shape"],
            "dtype": "uint8",
            "count": len(ids),
            "ids": ids,
            "chunk_size": chunk_size,
            "chunk_sha256": chunks,
            "sha256": _tree_sha(chunks),
        }
    manifest = {
        "format": CACHE_FORMAT,
        "dataset": dataset.name,
        "split": dataset.split,
        "count": len(view_ids["ground"]),
        "config": config,
        "protocol": {k: v for k, v in dataset.protocol.items() if k != "cache"},
        "versions": _versions(),
        "views": views,
    }
    _atomic_json(entry / "manifest.json", manifest)
    prog_path.unlink(missing_ok=True)
    return entry


def _prepare_view(
    dataset: CacheableDataset,
    entry: Path,
    state: dict[str, Any],
    view: str,
    ids: list[str],
    chunk_size: int,
    prog_path: Path,
    bar: Any,
) -> int:
    """Write the unrecorded chunks of ``view``; returns how many items it decoded."""
    path = entry / f"{view}.npy"
    n = len(ids)
    n_chunks = (n + chunk_size - 1) // chunk_size
    s = state["views"].get(view)
    if s is not None and path.is_file():
        try:
            _load_array(path, "r", s["shape"])
        except CacheError as exc:  # e.g. a full disk cut the file short: its chunks are lost
            problem = str(exc).removesuffix(f"; {_REBUILD}")
            warnings.warn(f"{problem}: starting that view again", UserWarning, stacklevel=3)
            path.unlink()
    if s is None or not path.is_file():
        first = dataset.load_view(view, 0).numpy() if n else np.zeros((3, 1, 1), np.uint8)
        shape = [n, *first.shape]
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=tuple(shape)).flush()
        s = {"shape": shape, "ids": ids, "chunks": {}}
        state["views"][view] = s
        _atomic_json(prog_path, state)
    arr = _load_array(path, "r+", s["shape"])
    assert isinstance(arr, np.memmap)  # np.load with mmap_mode opens a memory map
    item_shape = tuple(s["shape"][1:])
    count = 0
    for k in range(n_chunks):
        if str(k) in s["chunks"]:
            continue
        lo, hi = k * chunk_size, min(n, (k + 1) * chunk_size)
        for i in range(lo, hi):
            x = dataset.load_view(view, i).numpy()
            if x.shape != item_shape:
                raise ValueError(
                    f"{dataset.name} {view} item {ids[i]!r} has shape {x.shape} after preprocessing, "
                    f"expected {item_shape}; pass an explicit size so every item is resized alike"
                )
            arr[i] = x
            count += 1
            if bar is not None:
                bar.update(1)
        arr.flush()
        s["chunks"][str(k)] = _sha(arr[lo:hi])
        _atomic_json(prog_path, state)
    del arr
    return count


def _report_aspect(dataset: CacheableDataset, decoded: dict[str, int]) -> None:
    """Log how many of the decoded images had another aspect ratio than the dataset's files."""
    for view, n in dataset.aspect_mismatches.items():
        native = dataset.native_ground if view == "ground" else dataset.native_aerial
        size = dataset.ground_size if view == "ground" else dataset.aerial_size
        shown = f"{native[1]}x{native[0]}" if native else "native"
        into = f"stretched to {size[1]}x{size[0]}" if size else "at their own size"
        log.warning(
            "%s %s: %d of the %d %s images prepared by this run have another aspect ratio than %s's %s "
            "(the first is named in the warning above); the cache holds them %s",
            dataset.name,
            dataset.split,
            n,
            decoded.get(view, n),
            view,
            dataset.name,
            shown,
            into,
        )


class CacheEntry:
    """An opened, verified cache entry (see the module docstring). Safe to pickle into workers."""

    def __init__(self, path: Path, manifest: dict[str, Any], verify: str) -> None:
        self.path = path
        self.manifest = manifest
        self.verify = verify
        self._arrays: dict[str, np.ndarray] = {}
        self._verified: dict[str, set[int]] = {v: set() for v in manifest["views"]}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def ids(self, view: str) -> list[str]:
        return list(self.manifest["views"][view]["ids"])

    def array(self, view: str) -> np.ndarray:
        """The memory-mapped (count, 3, H, W) uint8 array of ``view`` (read-only)."""
        arr = self._arrays.get(view)
        if arr is None:
            meta = self.manifest["views"][view]
            arr = _load_array(self.path / meta["file"], "r", meta["shape"])
            self._arrays[view] = arr
        return arr

    def verify_chunk(self, view: str, k: int) -> None:
        meta = self.manifest["views"][view]
        cs = meta["chunk_size"]
        got = _sha(self.array(view)[k * cs : (k + 1) * cs])
        if got != meta["chunk_sha256"][k]:
            raise CacheError(
                f"cache checksum mismatch in {self.path / meta['file']}, chunk {k} (items {k * cs}.."
                f"{min(meta['count'], (k + 1) * cs) - 1}): the file was modified or corrupted; "
                "delete the entry and run `geo-bench prepare` again"
            )
        self._verified[view].add(k)

    def verify_all(self) -> None:
        for view, meta in self.manifest["views"].items():
            for k in range(len(meta["chunk_sha256"])):
                self.verify_chunk(view, k)

    def get(self, view: str, i: int) -> Tensor:
        """Item ``i`` of ``view`` as a (3, H, W) uint8 tensor (a copy)."""
        if self.verify == "lazy":
            k = i // self.manifest["views"][view]["chunk_size"]
            if k not in self._verified[view]:
                self.verify_chunk(view, k)
        return torch.from_numpy(np.array(self.array(view)[i]))


def open_cache(
    cache: str | os.PathLike[str],
    dataset: CacheableDataset,
    *,
    verify: str = "lazy",
    query_ids: list[str] | None = None,
) -> CacheEntry:
    """Open the entry of ``cache`` matching ``dataset``'s configuration and check it.

    Args:
        cache: a cache root (as given to ``prepare``) or one entry directory.
        dataset: the dataset whose configuration the entry must match.
        verify: ``"lazy"`` | ``"full"`` | ``"meta"`` (see the module docstring).
        query_ids: if given, the cached query ids must equal these.

    Raises:
        FileNotFoundError: no entry for this configuration (lists what the root holds).
        CacheError: incomplete entry, configuration/ids/shape mismatch, or a bad checksum.
    """
    if verify not in _VERIFY:
        raise ValueError(f"cache_verify must be one of {_VERIFY}, got {verify!r}")
    entry = _entry_dir(cache, dataset)
    mpath = entry / "manifest.json"
    if not mpath.is_file():
        if (entry / "progress.json").is_file():
            raise CacheError(
                f"cache entry {entry} is incomplete (preparation was interrupted); rerun prepare to resume"
            )
        root = Path(cache)
        present = (
            sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []
        )
        raise FileNotFoundError(
            f"no prepared cache for this configuration: looked for {str(mpath)!r}; "
            f"{root} holds {present or 'no entries'}. Create it with `geo-bench prepare {dataset.name.lower()} "
            f"--root {dataset.root} --out {root} --split {dataset.split} ...` using the same sizes/polar options."
        )
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise CacheError(f"unreadable cache manifest {mpath}: {exc}") from exc
    if manifest.get("format") != CACHE_FORMAT:
        raise CacheError(
            f"{mpath}: cache format {manifest.get('format')!r}, this version reads {CACHE_FORMAT}"
        )
    problems = _diff(manifest.get("config", {}), dataset.cache_config())
    if problems:
        raise CacheError(f"cache manifest {mpath} does not match the dataset:\n  " + "\n  ".join(problems))
    versions = _versions()
    if manifest.get("versions") != versions:
        warnings.warn(
            f"cache {entry} was prepared with {manifest.get('versions')}, running {versions}; "
            "re-prepare if the preprocessing changed between these versions",
            stacklevel=3,
        )
    views = manifest.get("views", {})
    expected = {"ground", "aerial"}
    if set(views) != expected:
        raise CacheError(f"{mpath}: views {sorted(views)}, expected {sorted(expected)}")
    for view, meta in views.items():
        _load_array(entry / meta["file"], "r", meta["shape"])
        if len(meta["ids"]) != meta["count"]:
            raise CacheError(f"{mpath}: {view} lists {len(meta['ids'])} ids for {meta['count']} items")
        n_chunks = (meta["count"] + meta["chunk_size"] - 1) // meta["chunk_size"]
        if len(meta["chunk_sha256"]) != n_chunks or _tree_sha(meta["chunk_sha256"]) != meta["sha256"]:
            raise CacheError(f"{mpath}: the checksum list of {view} is inconsistent")
    if query_ids is not None and views["ground"]["ids"] != list(query_ids):
        raise CacheError(f"{mpath}: the cached query ids differ from the dataset's")
    out = CacheEntry(entry, manifest, verify)
    if verify == "full":
        out.verify_all()
    return out
