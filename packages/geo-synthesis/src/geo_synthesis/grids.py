"""PNG image grids of synthesis results (Pillow): one row per sample, one column per image kind.

Convention:
    ``columns`` is a sequence of (B, 3, H_c, W_c) tensors (typically aerial / synthesised / real),
    all with the same B; each column keeps its own size, rows are as tall as the tallest column,
    ``padding`` pixels of ``pad_value`` grey separate cells. Values are mapped from
    ``value_range`` (default [-1, 1], Toker's normalisation) to bytes with clamping. Optional
    ``labels`` are drawn in a header row with Pillow's default bitmap font. The file is written
    atomically (temporary file + rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["image_grid", "load_image", "save_image_grid", "to_uint8"]


def to_uint8(x: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(3, H, W) or (1, H, W) float tensor in ``value_range`` -> (H, W, 3) uint8 array."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"image must be (3, H, W) or (1, H, W), got {tuple(x.shape)}")
    lo, hi = value_range
    if hi <= lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    y = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if y.shape[0] == 1:
        y = y.expand(3, -1, -1)
    return (y.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def image_grid(
    columns: Sequence[Tensor],
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 2,
    pad_value: int = 128,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Compose the grid as an (H, W, 3) uint8 array (see module docstring).

    Example:
        >>> grid = image_grid([torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 16)], padding=1)
        >>> grid.shape
        (19, 27, 3)
    """
    if not columns:
        raise ValueError("columns must not be empty")
    b = columns[0].shape[0]
    for i, c in enumerate(columns):
        if not isinstance(c, Tensor):
            raise TypeError(f"columns[{i}] must be a Tensor, got {type(c).__name__}")
        if c.ndim != 4 or c.shape[0] != b or c.shape[1] not in (1, 3):
            raise ValueError(f"columns[{i}] must be (B={b}, 3, H, W), got {tuple(c.shape)}")
    if labels is not None and len(labels) != len(columns):
        raise ValueError(f"{len(labels)} labels for {len(columns)} columns")
    row_h = max(int(c.shape[2]) for c in columns)
    widths = [int(c.shape[3]) for c in columns]
    header = 12 + padding if labels else 0
    height = header + b * row_h + (b + 1) * padding
    width = sum(widths) + (len(columns) + 1) * padding
    grid = np.full((height, width, 3), pad_value, dtype=np.uint8)
    for r in range(b):
        y = header + padding + r * (row_h + padding)
        x = padding
        for c, w in zip(columns, widths):
            img = to_uint8(c[r], value_range)
            grid[y : y + img.shape[0], x : x + w] = img
            x += w + padding
    if labels:
        pil = Image.fromarray(grid)
        draw = ImageDraw.Draw(pil)
        x = padding
        for label, w in zip(labels, widths):
            draw.text((x + 1, 1), str(label), fill=(255, 255, 255))
            x += w + padding
        grid = np.asarray(pil)
    return grid


def save_image_grid(
    columns: Sequence[Tensor],
    path: str | os.PathLike[str],
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 2,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write :func:`image_grid` to a PNG file atomically; returns the path.

    Args:
        columns: (B, 3, H_c, W_c) tensors, e.g. ``[aerial, synthesised, real]``.
        path: destination ``.png`` (parent directories are created).
        value_range: input value range mapped to 0..255.
        padding: pixels between cells.
        labels: optional column titles.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(columns, value_range=value_range, padding=padding, labels=labels)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(grid).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_image(path: str | os.PathLike[str]) -> Tensor:
    """An RGB image file as a (3, H, W) float32 tensor in [0, 1]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0
