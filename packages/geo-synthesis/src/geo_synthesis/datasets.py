"""Datasets of geo-synthesis: paired aerial / ground image folders for training outside geo-bench.

Convention: a sample is ``{"ground": (3, H, W), "aerial": (3, h, w), "id": str}`` with images as
:func:`geo_synthesis.grids.load_image` returns them (float in [0, 1]); the transforms of the
training recipe are applied by the trainer's batch transform, not here.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from .grids import load_image

__all__ = ["IMAGE_EXTENSIONS", "PairedImageFolder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) read as images."""


class PairedImageFolder(Dataset):
    """Pairs ``root/aerial/<id>.*`` and ``root/ground/<id>.*`` (matched by stem), images in [0, 1].

    Raises:
        FileNotFoundError: a missing ``aerial`` / ``ground`` folder or no matched pair.
    """

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        folders = {k: root / k for k in ("aerial", "ground")}
        for k, f in folders.items():
            if not f.is_dir():
                raise FileNotFoundError(
                    f"no {k}/ folder in {root} (expected {root}/aerial and {root}/ground)"
                )
        files = {
            k: {p.stem: p for p in sorted(f.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
            for k, f in folders.items()
        }
        self.ids = sorted(set(files["aerial"]) & set(files["ground"]))
        if not self.ids:
            raise FileNotFoundError(f"no aerial/ground pair with matching file names under {root}")
        self.files = files
        self.split = split

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor | str]:
        key = self.ids[i]
        return {
            "ground": load_image(self.files["ground"][key]),
            "aerial": load_image(self.files["aerial"][key]),
            "id": key,
        }
