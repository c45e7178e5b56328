#!/usr/bin/env python3
"""Write a tiny fake CVACT in the real layout (seeded; run directly to write into a folder and print md5s).

- ``ACT_data.mat`` (``scipy.io.savemat``): ``panoIds`` (10 random 22-character ids, stored as a
  MATLAB char matrix like the real file), ``utm`` (10, 2) float64 with sub-metre fractions on
  northings near 6.09e6 m, and the structs ``trainSet.trainInd``, ``valSet.valInd``,
  ``valSetAll.valInd`` as **1-based** column vectors. Each struct also has a field before the index
  (the real file's field #0 is unverified), so reading by position instead of name breaks.
- Index vectors (1-based): train [1, 3, 4, 6, 10], val [2, 5, 7], test [9, 8, 2]. They include 1
  and N, so forgetting to subtract 1 raises or pairs the wrong ids/files.
- ``ANU_data_small/{streetview,satview_polish}`` hold the train + val ids only, ``ANU_data_test``
  the test ids only.
- Every image encodes the 0-based row k of its panoId: red = 20 + 13 * k. Panoramas are 16x32 with
  the id colour only in the middle half of the rows [4, 12); the top and bottom quarters are black
  and white, so the ``middle_half`` crop is visible.
"""

from __future__ import annotations

import hashlib
import string
import sys
from pathlib import Path

import numpy as np
from PIL import Image

N = 10
AERIAL = 16  # real: 1200
PANO = (16, 32)  # real: 832 rows
TRAIN_1BASED = [1, 3, 4, 6, 10]
VAL_1BASED = [2, 5, 7]
TEST_1BASED = [9, 8, 2]
_ALPHABET = string.ascii_letters + string.digits + "-_"


def colour(k: int, view: str) -> tuple[int, int, int]:
    return (20 + 13 * k, 60 if view == "ground" else 190, 100)


def decode_id(img: np.ndarray) -> int:
    red = float(np.asarray(img, dtype=np.float64)[0].mean())
    if red <= 1.0 + 1e-9:
        red *= 255.0
    return round((red - 20) / 13)


def write(root: Path, seed: int = 0) -> dict:
    import scipy.io

    rng = np.random.RandomState(seed)
    root = Path(root)
    ids = ["".join(rng.choice(list(_ALPHABET), 22)) for _ in range(N)]
    utm = np.stack([690000.0 + 10.5 * np.arange(N), 6090000.0 + 7.25 * np.arange(N) + 0.125], 1)
    col = lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 1)  # noqa: E731 (MATLAB doubles)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        root / "ACT_data.mat",
        {
            "panoIds": np.asarray(ids),
            "utm": utm,
            "trainSet": {"field0": col(np.zeros(len(TRAIN_1BASED))), "trainInd": col(TRAIN_1BASED)},
            "valSet": {"field0": col(np.zeros(len(VAL_1BASED))), "valInd": col(VAL_1BASED)},
            "valSetAll": {"field0": col(np.zeros(len(TEST_1BASED))), "valInd": col(TEST_1BASED)},
        },
    )
    groups = {
        "ANU_data_small": sorted({k - 1 for k in TRAIN_1BASED + VAL_1BASED}),
        "ANU_data_test": sorted({k - 1 for k in TEST_1BASED}),
    }
    for folder, rows in groups.items():
        (root / folder / "streetview").mkdir(parents=True, exist_ok=True)
        (root / folder / "satview_polish").mkdir(parents=True, exist_ok=True)
        for k in rows:
            pano = np.zeros((*PANO, 3), np.uint8)
            pano[PANO[0] // 4 : 3 * PANO[0] // 4] = colour(k, "ground")
            pano[3 * PANO[0] // 4 :] = 255
            Image.fromarray(pano).save(root / folder / "streetview" / f"{ids[k]}_grdView.jpg", quality=95)
            Image.new("RGB", (AERIAL, AERIAL), colour(k, "aerial")).save(
                root / folder / "satview_polish" / f"{ids[k]}_satView_polish.jpg", quality=95
            )
    return {
        "panoIds": ids,
        "utm": utm,
        "train": [k - 1 for k in TRAIN_1BASED],
        "val": [k - 1 for k in VAL_1BASED],
        "test": [k - 1 for k in TEST_1BASED],
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")
    write(out)
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(hashlib.md5(p.read_bytes()).hexdigest(), p.relative_to(out))
