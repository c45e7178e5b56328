"""Exact duplicates in CVUSA (GeoDTR's check): identical decoded pixels under different ids.

Convention: every image of the split is decoded with Pillow (as stored, no RGB conversion, as
GeoDTR's ``check_cvusa_duplicate.py`` hashes ``Image.open(path).tobytes()``) and its bytes hashed
with MD5; images sharing a hash are reported as pairs, per view. Duplicated references score
exactly equal in retrieval, which is why the tie rule matters (see ``docs/protocols.md#cvusa``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .cvusa import CVUSA, read_cvusa_split
from .errors import DatasetNotFoundError

__all__ = ["DuplicatePair", "find_exact_duplicates", "image_md5"]


@dataclass(frozen=True)
class DuplicatePair:
    """Two samples of a split whose ``view`` images decode to identical pixels.

    .. versionadded:: 0.1
    """

    view: str  # "aerial" or "ground"
    id_a: str
    id_b: str
    md5: str
    path_a: str
    path_b: str


def image_md5(path: str | os.PathLike[str]) -> str:
    """MD5 of the decoded pixels of ``path`` (mode as stored, e.g. RGB for JPEG)."""
    try:
        with Image.open(path) as img:
            data = img.tobytes()  # pixel bytes only, as GeoDTR, so the hashes equal theirs
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {str(path)!r}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise OSError(f"cannot decode image {str(path)!r}: {exc}") from exc
    return hashlib.md5(data).hexdigest()


def find_exact_duplicates(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    views: tuple[str, ...] = ("aerial", "ground"),
    split_file: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> list[DuplicatePair]:
    """List the exact-duplicate pairs of a CVUSA split.

    Args:
        root: CVUSA root.
        split: ``"train"``, ``"val"`` or ``"test"``.
        views: which images to hash (``"aerial"`` = column 0, ``"ground"`` = column 1).
        split_file: a CSV to check instead of the official one.
        progress: show a tqdm bar.

    Returns:
        pairs ``(view, id_a, id_b, md5, path_a, path_b)`` with ``id_a`` before ``id_b`` in CSV
        order; a group of k identical images gives its k-1 pairs against the first occurrence.
    """
    bad = [v for v in views if v not in ("aerial", "ground")]
    if bad:
        raise ValueError(f"views must be 'aerial' and/or 'ground', got {bad}")
    if split not in CVUSA.splits:
        raise ValueError(f"CVUSA: unknown split {split!r}; valid splits: {list(CVUSA.splits)}")
    root = Path(root)
    csv = Path(split_file) if split_file is not None else root / "splits" / CVUSA.split_files[split]
    if not csv.is_file():
        raise DatasetNotFoundError("CVUSA", root, csv, CVUSA.layout)
    rows = read_cvusa_split(csv)
    items: Iterable[tuple[str, str, Path]] = [
        (v, Path(r[0]).stem, root / r[0 if v == "aerial" else 1]) for r in rows for v in views
    ]
    if progress:
        items = tqdm(items, unit="img", desc=f"hash CVUSA {split}")
    first: dict[tuple[str, str], tuple[str, Path]] = {}
    pairs: dict[str, list[DuplicatePair]] = defaultdict(list)
    for view, sid, path in items:
        h = image_md5(path)
        if (view, h) in first:
            sid0, p0 = first[(view, h)]
            pairs[view].append(DuplicatePair(view, sid0, sid, h, str(p0), str(path)))
        else:
            first[(view, h)] = (sid, path)
    return [p for v in views for p in pairs[v]]
