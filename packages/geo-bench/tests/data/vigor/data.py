#!/usr/bin/env python3
"""Write a tiny fake VIGOR in the official layout (seeded; run directly to write into a folder and print md5s).

- 4 cities x 4 tiles ``<City>/satellite/satellite_<lat>_<lon>.png`` (16x16) listed in
  ``splits/<City>/satellite_list.txt``; 4 cities x 3 panoramas
  ``<City>/panorama/<prefix>,<lat>,<lon>,.jpg`` (8x16).
- ``same_area_balanced_train.txt`` holds each city's first 2 panoramas, ``..._test.txt`` the third,
  ``pano_label_balanced.txt`` all 3. Label rows: pano, positive tile, dx, dy, then 3 x (semi-positive
  tile, dx, dy), single-space separated like the released files.
- Colours: tile number t (0..15, city-major in CITIES order) has red = 20 + 13 * t, green 190;
  panorama number q (0..11, same order) has red = 20 + 13 * q, green 60.
- The positive of panorama j of a city is that city's tile (j + 1) % 4, the semi-positives the
  other three in increasing order.
"""

from __future__ import annotations

import hashlib
import string
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
BASE = {
    "Chicago": (41.88, -87.63),
    "NewYork": (40.71, -74.0),
    "SanFrancisco": (37.77, -122.42),
    "Seattle": (47.61, -122.33),
}
TILES, PANOS = 4, 3
_ALPHABET = string.ascii_letters + string.digits + "-_"


def colour(k: int, view: str) -> tuple[int, int, int]:
    return (20 + 13 * k, 60 if view == "ground" else 190, 100)


def decode_id(img: np.ndarray) -> int:
    red = float(np.asarray(img, dtype=np.float64)[0].mean())
    if red <= 1.0 + 1e-9:
        red *= 255.0
    return round((red - 20) / 13)


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    root = Path(root)
    info: dict = {"tiles": {}, "panos": {}, "labels": {}}
    for ci, city in enumerate(CITIES):
        (root / city / "satellite").mkdir(parents=True, exist_ok=True)
        (root / city / "panorama").mkdir(parents=True, exist_ok=True)
        (root / "splits" / city).mkdir(parents=True, exist_ok=True)
        lat0, lon0 = BASE[city]
        tiles = []
        for t in range(TILES):
            name = f"satellite_{lat0 + 0.001 * t:.6f}_{lon0 - 0.001 * t:.6f}.png"
            Image.new("RGB", (16, 16), colour(ci * TILES + t, "aerial")).save(
                root / city / "satellite" / name
            )
            tiles.append(name)
        (root / "splits" / city / "satellite_list.txt").write_text("\n".join(tiles) + "\n")
        rows = []
        panos = []
        for j in range(PANOS):
            prefix = "".join(rng.choice(list(_ALPHABET), 22))
            name = f"{prefix},{lat0 + 0.0003 + 0.001 * j:.6f},{lon0 - 0.0004 - 0.001 * j:.6f},.jpg"
            Image.new("RGB", (16, 8), colour(ci * PANOS + j, "ground")).save(
                root / city / "panorama" / name, quality=95
            )
            pos = (j + 1) % TILES
            order = [pos] + [t for t in range(TILES) if t != pos]
            cols = [name]
            for t in order:
                cols += [tiles[t], f"{rng.uniform(-320, 320):.4f}", f"{rng.uniform(-320, 320):.4f}"]
            rows.append(" ".join(cols))
            panos.append(name)
        (root / "splits" / city / "same_area_balanced_train.txt").write_text("\n".join(rows[:2]) + "\n")
        (root / "splits" / city / "same_area_balanced_test.txt").write_text("\n".join(rows[2:]) + "\n")
        (root / "splits" / city / "pano_label_balanced.txt").write_text("\n".join(rows) + "\n")
        info["tiles"][city] = tiles
        info["panos"][city] = panos
        info["labels"][city] = rows
    return info


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")
    write(out)
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(hashlib.md5(p.read_bytes()).hexdigest(), p.relative_to(out))
