#!/usr/bin/env python3
"""Write a tiny fake CVUSA in the real layout (seeded; run directly to write into a folder and print md5s).

- 12 ids ``0000001`` .. ``0000012``: train = ids 1-8, val = ids 9-12 (``splits/train-19zl.csv``,
  ``splits/val-19zl.csv``, headerless ``bingmap/19/<id>.jpg,streetview/panos/<id>.jpg,
  streetview/annotations/<id>.png``; one row carries stray whitespace).
- Every image is one solid colour that encodes its id: red = 20 + 13 * id (decode with
  :func:`decode_id`), green 60 for panoramas, 190 for aerials.
- Planted exact duplicates: the aerial of id 5 is a byte copy of id 3's, the panorama of id 7 a
  copy of id 2's (train split).
- ``split_locations/all.csv``: row id - 1 = (sat_lat, sat_long, ground_lat, ground_long, 0).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

AERIAL = 16  # real: 750
PANO = (8, 44)  # (H, W), the real aspect 5.5; real: 224 x 1232
IDS = list(range(1, 13))
TRAIN, VAL = IDS[:8], IDS[8:]
DUPLICATES = {"aerial": [("0000003", "0000005")], "ground": [("0000002", "0000007")]}


def colour(k: int, view: str) -> tuple[int, int, int]:
    return (20 + 13 * k, 60 if view == "ground" else 190, 100)


def decode_id(img: np.ndarray) -> int:
    """Id encoded in a (3, H, W) float [0, 1] or uint8 image (mean red channel)."""
    red = float(np.asarray(img, dtype=np.float64)[0].mean())
    if red <= 1.0 + 1e-9:
        red *= 255.0
    return round((red - 20) / 13)


def gps(k: int) -> list[float]:
    return [40.0 + 0.01 * k, -80.0 - 0.01 * k, 40.0 + 0.01 * k + 1e-4, -80.0 - 0.01 * k - 1e-4]


def _solid(size: tuple[int, int], rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (size[1], size[0]), rgb)


def write(root: Path, seed: int = 0) -> dict:
    del seed  # nothing random: colours and GPS are functions of the id
    root = Path(root)
    for sub in ("bingmap/19", "streetview/panos", "streetview/annotations", "splits", "split_locations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in IDS:
        sid = f"{k:07d}"
        _solid((AERIAL, AERIAL), colour(k, "aerial")).save(root / f"bingmap/19/{sid}.jpg", quality=95)
        _solid(PANO, colour(k, "ground")).save(root / f"streetview/panos/{sid}.jpg", quality=95)
        seg = np.zeros((*PANO, 3), np.uint8)
        seg[: PANO[0] // 2] = (70, 130, 180)  # "sky" top half
        seg[PANO[0] // 2 :] = (128, 64, 128)  # "road" bottom half
        Image.fromarray(seg).save(root / f"streetview/annotations/{sid}.png")
    for view, pairs in DUPLICATES.items():
        folder = "bingmap/19" if view == "aerial" else "streetview/panos"
        for a, b in pairs:
            shutil.copyfile(root / f"{folder}/{a}.jpg", root / f"{folder}/{b}.jpg")
    for name, ids in (("train-19zl.csv", TRAIN), ("val-19zl.csv", VAL)):
        lines = [
            f"bingmap/19/{k:07d}.jpg,streetview/panos/{k:07d}.jpg,streetview/annotations/{k:07d}.png"
            for k in ids
        ]
        lines[1] = " " + lines[1].replace(",", " , ") + "  "  # stray whitespace, stripped by the reader
        (root / "splits" / name).write_text("\n".join(lines) + "\n")
    (root / "split_locations/all.csv").write_text(
        "".join(",".join(f"{v:.6f}" for v in gps(k)) + ",0\n" for k in IDS)
    )
    return {
        "ids": [f"{k:07d}" for k in IDS],
        "train": [f"{k:07d}" for k in TRAIN],
        "val": [f"{k:07d}" for k in VAL],
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")
    write(out)
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(hashlib.md5(p.read_bytes()).hexdigest(), p.relative_to(out))
