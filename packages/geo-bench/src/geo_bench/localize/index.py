"""Tile descriptor index of georeferenced maps: build (resumable, memory bounded), load, search.

Convention:
    An index is a folder::

        manifest.json      model (recipe, variant, weights digest, checkpoint path), maps (path,
                           sha256, CRS, bounds), tiling (crs, tile_m, stride_m, px), counts, status
        tiles_xy.npy       (N, 2) float64 tile centres (easting, northing) metres in tiling.crs
        tiles_latlon.npy   (N, 2) float64 tile centres (lat, lon) degrees WGS84, latitude first
        tiles_map.npy      (N,) int64 index into manifest["maps"]
        chunks/NNNNNN.npy  descriptors of tiles [i * chunk, (i + 1) * chunk) while building
        descriptors.npy    (N, ...) float32 descriptors (flat (N, D) unit vectors; DSM: (N, C, h, W)
                           unit maps), written from the chunks at the end (memory-mapped on load)
        faiss.index        optional faiss index of flat descriptors (IndexFlatIP up to
                           ``flat_max`` tiles, IVF-PQ beyond)

    Building is resumable: each chunk is written to a temporary file and renamed (atomic), so a
    killed build leaves only whole chunks; a rerun with the same model, maps and tiling continues
    from the first missing chunk. A rerun with another model (weights digest, recipe, variant),
    changed maps (sha256) or another tiling is refused with what differs.

    Tile preprocessing is the evaluation's: ``BatchTransform.from_recipe(recipe)(batch, None,
    train=False)`` on uint8 tiles of ``px`` pixels (the square the recipe was trained on; polar
    recipes polar-transform it), then ``model.encode_aerial``.

    Search: :func:`search` runs the exact torch reference (:func:`geo_retrieval.search.topk_search`,
    blockwise, the model's similarity for non-flat descriptors) or faiss (``"faiss"``: the stored
    index, flat or IVF-PQ; IVF-PQ fetches ``RERANK x k`` candidates and re-ranks them with the exact
    descriptors, so its scores are exact and only its recall is approximate). Scores are cosine
    similarities (inner products of unit vectors).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from geo_bench.leaderboard import get_recipe_or_raise, resolve_run
from geo_bench.localize.maps import TileReader, open_maps, open_tile_folder, plan_tiles, to_latlon
from geo_bench.metrics.faiss_backend import import_faiss
from geo_retrieval.checkpoint import load_model_weights
from geo_retrieval.embedding import embed
from geo_retrieval.protocols import CrossViewEncoder
from geo_retrieval.recipes import Recipe, build
from geo_retrieval.search import topk_search
from geo_retrieval.training import BatchTransform

__all__ = [
    "FORMAT",
    "IndexMismatchError",
    "LoadedModel",
    "TileIndex",
    "build_index",
    "default_px",
    "load_checkpoint",
    "search",
]

log = logging.getLogger(__name__)

#: manifest format version
FORMAT = 1
#: IVF-PQ searches fetch this many times k candidates and re-rank them with the exact descriptors
RERANK = 10
#: default tile width in metres: the synthetic world's aerial tiles (``RenderConfig.aerial_m``)
DEFAULT_TILE_M = 64.0


class IndexMismatchError(ValueError):
    """An existing index was built from another model, other maps or another tiling."""


@dataclass
class LoadedModel:
    """A model ready to embed, with what identifies it.

    Attributes:
        model: the recipe's model in eval mode on ``device``.
        recipe: the recipe (``geo_retrieval.recipes.Recipe``).
        variant: ``"small"`` or ``"full"``.
        digest: :func:`geo_retrieval.checkpoint.weights_digest` of the weights.
        weights: the weights file.
        run_info: the run folder's ``run.json`` (empty if none).
        device: torch device string.
    """

    model: nn.Module
    recipe: Recipe
    variant: str
    digest: str
    weights: Path
    run_info: dict[str, Any]
    device: str

    @property
    def encoder(self) -> CrossViewEncoder:
        """``model`` seen through its encoding interface (``encode_ground`` / ``encode_aerial`` / ``similarity``)."""
        return cast(CrossViewEncoder, self.model)

    def identity(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "variant": self.variant,
            "weights_digest": self.digest,
            "checkpoint": str(self.weights.resolve()),
            "orientation_aware": bool(getattr(self.recipe, "orientation_aware", False)),
        }


def load_checkpoint(
    checkpoint: str | Path, *, recipe: str | None = None, variant: str | None = None, device: str = "cpu"
) -> LoadedModel:
    """Load a run folder / ``best`` / ``last`` folder / weights file as ``geo-bench evaluate`` does.

    Raises:
        FileNotFoundError: no weights there. ValueError: unknown recipe or weights that do not fit.
    """
    found = resolve_run(checkpoint, recipe=recipe, variant=variant)
    rec = get_recipe_or_raise(found.recipe, found.variant)
    model = build(rec)
    digest = load_model_weights(model, found.weights)
    model.eval().to(device)
    return LoadedModel(model, rec, found.variant, digest, found.weights, found.info, device)


def default_px(loaded: LoadedModel) -> int:
    """Tile side in pixels the model expects: the training world's ``aerial_size`` (``run.json``),
    else the recipe's square aerial input, else (polar recipes) twice the polar height."""
    world = (loaded.run_info.get("data") or {}).get("world") or {}
    if isinstance(world.get("aerial_size"), int):
        return int(world["aerial_size"])
    h, w = loaded.recipe.aerial_size
    if not loaded.recipe.polar and h == w:
        return int(h)
    return int(2 * h)


def _prepare_aerial(loaded: LoadedModel, tiles: Tensor) -> Tensor:
    """(B, 3, px, px) uint8 tiles -> the recipe's prepared aerial input (evaluation preprocessing)."""
    transform = BatchTransform.from_recipe(loaded.recipe)
    h, w = loaded.recipe.ground_size
    dummy = torch.zeros(tiles.shape[0], 3, h, w, dtype=torch.uint8)
    return transform({"ground": dummy, "aerial": tiles}, None, train=False)["aerial"]


def embed_tiles(loaded: LoadedModel, tiles: np.ndarray) -> np.ndarray:
    """(B, 3, px, px) uint8 tiles -> (B, ...) float32 descriptors (``encode_aerial``, no grad).

    The tiles are prepared on the CPU, then encoded in one forward pass on ``loaded.device`` by
    :func:`geo_retrieval.embedding.embed` (the builder calls this once per batch of a chunk, so an
    index build holds one chunk at a time)."""
    x = _prepare_aerial(loaded, torch.from_numpy(np.ascontiguousarray(tiles)))
    out, _ = embed(
        {None: loaded.encoder.encode_aerial},
        x,
        batch_size=max(1, x.shape[0]),
        device=loaded.device,
        out_device="cpu",
        desc="embed tiles",
    )
    return out[None].numpy()


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _compare(old: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    """Refuse to continue an index built from something else (names what differs)."""
    om, nm = old.get("model", {}), new["model"]
    for key in ("recipe", "variant", "weights_digest"):
        if om.get(key) != nm.get(key):
            raise IndexMismatchError(
                f"index {out} was built with another model ({key} {om.get(key)!r}, this checkpoint "
                f"{nm.get(key)!r}); choose another --out or delete {out}"
            )
    old_maps = [(m.get("path"), m.get("sha256")) for m in old.get("maps", [])]
    new_maps = [(m["path"], m["sha256"]) for m in new["maps"]]
    if old_maps != new_maps:
        changed = [p for (p, s), (p2, s2) in zip(new_maps, old_maps) if p != p2 or s != s2] or [
            p for p, _ in new_maps
        ]
        raise IndexMismatchError(
            f"index {out} was built from other maps or the map changed ({', '.join(changed)}); "
            f"choose another --out or delete {out}"
        )
    if old.get("tiles") != new.get("tiles"):
        raise IndexMismatchError(
            f"index {out} was built from other tiles or the tile CSV changed; "
            f"choose another --out or delete {out}"
        )
    if old.get("tiling") != new["tiling"]:
        raise IndexMismatchError(
            f"index {out} was built with tiling {old.get('tiling')}, asked for "
            f"{new['tiling']}; choose another --out or delete {out}"
        )


def build_index(
    loaded: LoadedModel,
    maps: Sequence[str | Path],
    out: str | Path,
    *,
    tile_m: float = DEFAULT_TILE_M,
    stride_m: float | None = None,
    px: int | None = None,
    batch_size: int = 64,
    chunk_tiles: int = 1024,
    flat_max: int = 200_000,
    ivf_nprobe: int = 16,
    progress: bool = False,
    stop_after_chunks: int | None = None,
    tiles_csv: str | Path | None = None,
) -> Path:
    """Embed every tile of ``maps`` into an index folder (module Convention); resumes a partial one.

    Args:
        loaded: the model (:func:`load_checkpoint`).
        maps: raster files, one CRS (see :mod:`geo_bench.localize.maps`).
        out: the index folder.
        tile_m: tile width in metres (default 64, the world's aerial tiles).
        stride_m: grid step in metres (default ``tile_m / 2``).
        px: tile side in pixels (default :func:`default_px`).
        batch_size: tiles embedded at once. chunk_tiles: tiles per chunk file (multiple of nothing).
        flat_max: faiss flat index up to this many tiles, IVF-PQ beyond (flat descriptors only).
        ivf_nprobe: IVF lists probed per query (stored in the manifest).
        progress: tqdm bar.
        stop_after_chunks: stop (raise ``KeyboardInterrupt``) after writing this many chunks in
            this call: simulates an interrupted build (tests, benchmarks).
        tiles_csv: instead of ``maps``, a folder of pre-cut square tiles listed in a CSV (``file``,
            ``lat``, ``lon`` of the centre; :class:`~geo_bench.localize.maps.TileFolder`), each
            ``tile_m`` wide; centres are projected to their UTM zone; ``stride_m`` is not used.

    Returns:
        The index folder.

    Memory: one chunk of tiles and descriptors at a time, plus (N, 2) centres; the final
    ``descriptors.npy`` is filled chunk by chunk through a memory map.
    """
    out = Path(out)
    stride = float(stride_m) if stride_m is not None else float(tile_m) / 2
    px = int(px) if px is not None else default_px(loaded)
    if px < 8:
        raise ValueError(f"px must be >= 8, got {px}")
    if batch_size < 1 or chunk_tiles < 1:
        raise ValueError(f"batch_size and chunk_tiles must be positive, got {batch_size} and {chunk_tiles}")
    folder = None
    if tiles_csv is not None:
        if maps:
            raise ValueError("give maps or a tile CSV, not both")
        folder = open_tile_folder(tiles_csv)
        grid = None
        xy, map_index, crs = folder.xy, np.full(len(folder.files), -1, dtype=np.int64), folder.crs
        tiling = {
            "crs": crs,
            "warped": False,
            "tile_m": float(tile_m),
            "stride_m": None,
            "px": px,
            "resampling": "pillow-bilinear",
        }
        sources: dict[str, Any] = {"maps": [], "tiles": {"csv": folder.csv, "sha256": folder.sha256}}
    else:
        grid = open_maps(list(maps))
        xy, map_index = plan_tiles(grid, float(tile_m), stride)
        crs = grid.crs
        tiling = {
            "crs": crs,
            "warped": grid.warped,
            "tile_m": float(tile_m),
            "stride_m": stride,
            "px": px,
            "resampling": "gdal-bilinear",
        }
        sources = {"maps": [m.to_dict() for m in grid.maps]}
    n = len(xy)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "model": loaded.identity(),
        **sources,
        "tiling": tiling,
        "n_tiles": n,
        "chunk_tiles": int(chunk_tiles),
        "search": {"flat_max": int(flat_max), "ivf_nprobe": int(ivf_nprobe)},
        "status": "building",
    }
    mpath = out / "manifest.json"
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{mpath} is not valid JSON ({exc}); delete {out} and rebuild") from None
        _compare(old, manifest, out)
        manifest["chunk_tiles"] = int(old.get("chunk_tiles", chunk_tiles))
        if old.get("status") == "complete" and (out / "descriptors.npy").is_file():
            log.info("index %s is complete; nothing to do", out)
            return out
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"--out {out} exists and is not an index (no manifest.json); choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "chunks").mkdir(exist_ok=True)
    _atomic_save(out / "tiles_xy.npy", xy)
    _atomic_save(out / "tiles_latlon.npy", folder.latlon if folder is not None else to_latlon(xy, crs))
    _atomic_save(out / "tiles_map.npy", map_index)
    _atomic_json(mpath, manifest)
    chunk = manifest["chunk_tiles"]
    n_chunks = -(-n // chunk)
    done = [i for i in range(n_chunks) if (out / "chunks" / f"{i:06d}.npy").is_file()]
    written = 0
    t0 = time.perf_counter()
    reader = TileReader(grid) if grid is not None else None

    def read(s: int, e: int) -> np.ndarray:
        if folder is not None:
            return folder.read(s, e, px)
        assert reader is not None  # maps were given (no tile folder)
        return reader.read(xy[s:e], map_index[s:e], float(tile_m), px)

    bar = tqdm(
        total=n, initial=min(n, len(done) * chunk), desc="index tiles", unit="tile", disable=not progress
    )
    try:
        for i in range(n_chunks):
            path = out / "chunks" / f"{i:06d}.npy"
            if path.is_file():
                continue
            lo, hi = i * chunk, min(n, (i + 1) * chunk)
            parts = []
            for s in range(lo, hi, batch_size):
                e = min(hi, s + batch_size)
                parts.append(embed_tiles(loaded, read(s, e)))
                bar.update(e - s)
            _atomic_save(path, np.concatenate(parts).astype(np.float32, copy=False))
            written += 1
            if stop_after_chunks is not None and written >= stop_after_chunks and i < n_chunks - 1:
                raise KeyboardInterrupt(f"stopped after {written} chunk(s)")
    finally:
        bar.close()
        if reader is not None:
            reader.close()
    _finish(out, manifest, n_chunks, loaded)
    log.info("indexed %d tiles in %.1f s", n, time.perf_counter() - t0)
    return out


def _finish(out: Path, manifest: dict[str, Any], n_chunks: int, loaded: LoadedModel) -> None:
    """Concatenate the chunks into descriptors.npy (memory map), build the faiss index, mark complete."""
    n = manifest["n_tiles"]
    first = np.load(out / "chunks" / f"{0:06d}.npy", mmap_mode="r")
    tmp = out / "descriptors.npy.part"
    desc = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *first.shape[1:]))
    pos = 0
    for i in range(n_chunks):
        part = np.load(out / "chunks" / f"{i:06d}.npy", mmap_mode="r")
        if part.shape[1:] != first.shape[1:]:
            raise ValueError(
                f"chunk {i} of {out} has descriptors {part.shape[1:]}, others {first.shape[1:]}; "
                f"delete {out} and rebuild"
            )
        desc[pos : pos + len(part)] = part
        pos += len(part)
    if pos != n:
        raise ValueError(f"{out}: chunks hold {pos} descriptors for {n} tiles; delete {out} and rebuild")
    desc.flush()
    del desc
    os.replace(tmp, out / "descriptors.npy")
    manifest["descriptor_shape"] = list(first.shape[1:])
    manifest["faiss"] = None
    if len(first.shape) == 2:
        try:
            manifest["faiss"] = write_faiss(out, manifest)
        except ImportError as exc:
            log.warning("no faiss index written (%s); searches use the exact torch path", exc)
    manifest["status"] = "complete"
    _atomic_json(out / "manifest.json", manifest)
    for i in range(n_chunks):
        (out / "chunks" / f"{i:06d}.npy").unlink(missing_ok=True)


def write_faiss(out: Path, manifest: dict[str, Any], *, kind: str | None = None) -> dict[str, Any]:
    """Write ``faiss.index`` for ``descriptors.npy``: flat inner product up to ``flat_max`` tiles,
    IVF-PQ beyond (``nlist = min(4 sqrt(N), N / 39)`` lists, ``m = D / 8`` sub-quantisers of 8
    dimensions, 8 bits (fewer for small N), trained on at most 50,000 descriptors; searches re-rank
    ``RERANK x k`` IVF-PQ candidates exactly). Returns the manifest's faiss entry."""
    faiss = import_faiss()
    desc = np.load(out / "descriptors.npy", mmap_mode="r")
    n, d = desc.shape
    flat_max = int(manifest.get("search", {}).get("flat_max", 200_000))
    kind = kind or ("flat" if n <= flat_max else "ivfpq")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        info: dict[str, Any] = {"kind": "flat"}
    elif kind == "ivfpq":
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
        m = next(c for c in (d // 8, d // 4, d // 2, d, 1) if c >= 1 and d % c == 0 and c <= 64)
        nbits = int(min(8, max(4, np.floor(np.log2(max(2, n // 39))))))  # faiss wants >= 39 points a centroid
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = np.ascontiguousarray(
            desc[np.sort(rng.choice(n, min(n, 50_000), replace=False))], dtype=np.float32
        )
        index.train(train)
        index.nprobe = int(manifest.get("search", {}).get("ivf_nprobe", 16))
        info = {
            "kind": "ivfpq",
            "nlist": nlist,
            "m": m,
            "nbits": nbits,
            "nprobe": index.nprobe,
            "rerank": RERANK,
        }
    else:
        raise ValueError(f"faiss kind must be 'flat' or 'ivfpq', got {kind!r}")
    for s in range(0, n, 65_536):
        index.add(np.ascontiguousarray(desc[s : s + 65_536], dtype=np.float32))
    tmp = out / "faiss.index.part"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, out / "faiss.index")
    return info


@dataclass
class TileIndex:
    """A complete index folder, loaded (descriptors memory-mapped).

    Attributes:
        path: the folder. manifest: its manifest.
        descriptors: (N, ...) float32 (memory map). xy: (N, 2) easting, northing in ``crs``.
        latlon: (N, 2) lat, lon degrees. map_index: (N,) int64.
    """

    path: Path
    manifest: dict[str, Any]
    descriptors: np.ndarray
    xy: np.ndarray
    latlon: np.ndarray
    map_index: np.ndarray
    _faiss: Any = None

    @property
    def crs(self) -> str:
        return str(self.manifest["tiling"]["crs"])

    @property
    def tile_m(self) -> float:
        return float(self.manifest["tiling"]["tile_m"])

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])

    @classmethod
    def load(cls, path: str | Path) -> TileIndex:
        """Open an index folder; an incomplete or missing one raises with the next step."""
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(
                f"--index {path}: no manifest.json (not an index; build one with geo-bench index)"
            )
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{mpath} is not valid JSON ({exc})") from None
        if manifest.get("status") != "complete" or not (path / "descriptors.npy").is_file():
            raise ValueError(
                f"index {path} is incomplete (interrupted build); rerun the same geo-bench index "
                "command to finish it"
            )
        return cls(
            path,
            manifest,
            np.load(path / "descriptors.npy", mmap_mode="r"),
            np.load(path / "tiles_xy.npy"),
            np.load(path / "tiles_latlon.npy"),
            np.load(path / "tiles_map.npy"),
        )

    def faiss_index(self) -> Any:
        """The stored faiss index (loaded once); ``ValueError`` when the index has none."""
        if self._faiss is None:
            faiss = import_faiss()
            f = self.path / "faiss.index"
            if not f.is_file():
                raise ValueError(
                    f"index {self.path} has no faiss.index (descriptors are not flat, or faiss was "
                    "missing when it was built); use --search exact"
                )
            self._faiss = faiss.read_index(str(f))
            if hasattr(self._faiss, "nprobe"):
                self._faiss.nprobe = int(self.manifest.get("search", {}).get("ivf_nprobe", 16))
        return self._faiss


def _as_tensor(arr: np.ndarray) -> Tensor:
    """A tensor view of a read-only memory map (never written; torch's non-writable warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(arr))


def search(
    index: TileIndex,
    query: Tensor,
    k: int,
    *,
    backend: str = "exact",
    similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
    chunk_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` tiles of each query.

    Args:
        index: the loaded index.
        query: (N_q, ...) query descriptors (same layout as the index's).
        k: candidates per query (clipped to the tile count).
        backend: ``"exact"`` (torch, the reference) or ``"faiss"`` (the stored flat / IVF-PQ index).
        similarity: score callable for non-flat descriptors (the model's ``similarity``).
        chunk_size: query rows per block (exact).

    Returns:
        ``(scores (N_q, k) float32, indices (N_q, k) int64)``, best first.
    """
    kk = min(int(k), len(index))
    if kk < 1:
        raise ValueError(f"top-k must be >= 1, got {k}")
    if backend == "exact":
        ref = _as_tensor(index.descriptors)
        flat = ref.ndim == 2
        s, i = topk_search(
            query.float(),
            ref,
            kk,
            chunk_size=chunk_size,
            reference_chunk_size=8192,
            similarity=None if flat else similarity,
        )
        return s.float().cpu(), i.long().cpu()
    if backend == "faiss":
        f = index.faiss_index()
        q = np.ascontiguousarray(query.detach().float().cpu().numpy())
        if q.ndim != 2 or q.shape[1] != f.d:
            raise ValueError(f"query descriptors must be (N, {f.d}) for faiss, got {q.shape}")
        kind = (index.manifest.get("faiss") or {}).get("kind")
        if kind != "ivfpq":
            s, i = f.search(q, kk)
            return torch.from_numpy(s), torch.from_numpy(i).long()
        # IVF-PQ: approximate candidates, exact re-ranking on the stored descriptors (memory map)
        _, cand = f.search(q, min(len(index), RERANK * kk))
        cand = np.where(cand < 0, cand.max(axis=1, keepdims=True), cand)  # unfilled slots (few lists probed)
        exact = np.einsum(
            "qkd,qd->qk", np.asarray(index.descriptors)[cand.ravel()].reshape(*cand.shape, -1), q
        )
        order = np.argsort(-exact, axis=1, kind="stable")[:, :kk]
        return (
            torch.from_numpy(np.take_along_axis(exact, order, 1).astype(np.float32)),
            torch.from_numpy(np.take_along_axis(cand, order, 1)).long(),
        )
    raise ValueError(f"search backend must be 'exact' or 'faiss', got {backend!r}")
