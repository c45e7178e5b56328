#!/usr/bin/env python3
"""Generate the reference arrays for tests/test_presets.py (seeded, tiny; run from anywhere).

The references come from the numpy port of SAFA's sampler (geo_transforms.testing.safa_reference),
not from the code under test, plus OpenCV for the legacy Toker chain:

- ``aerial.npy``: (64, 64, 3) uint8 noise, ``np.random.RandomState(0)``;
- ``safa.npy``: SAFA sampler at 112x616, rows ::5, columns ::7, float32 (23, 88, 3);
- ``dsm.npy``: SAFA sampler at 128x512, rows ::6, columns ::8, float32 (22, 64, 3);
- ``toker_cvusa_legacy.npy``: SAFA sampler at 224x1232 -> ``astype(np.uint8)`` ->
  ``cv2.resize(..., (616, 112), interpolation=cv2.INTER_CUBIC)`` (uint8 in, uint8 out, as Toker's
  loader), rows ::5, columns ::7, uint8 (23, 88, 3).

Only a strided subset of each output is stored to keep the files small (< 60 KB in all). Prints the
md5 of every file it writes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from geo_transforms.testing.safa_reference import safa_polar

HERE = Path(__file__).resolve().parent
SIZE = 64
STRIDES = {"safa": (5, 7), "dsm": (6, 8), "toker_cvusa_legacy": (5, 7)}


def make() -> dict[str, np.ndarray]:
    aerial = np.random.RandomState(0).randint(0, 256, size=(SIZE, SIZE, 3)).astype(np.uint8)
    safa = safa_polar(aerial, 112, 616)
    dsm = safa_polar(aerial, 128, 512)
    legacy = safa_polar(aerial, 224, 1232).astype(np.uint8)
    legacy = cv2.resize(legacy, (616, 112), interpolation=cv2.INTER_CUBIC)
    (rs, cs), (rd, cd), (rt, ct) = STRIDES["safa"], STRIDES["dsm"], STRIDES["toker_cvusa_legacy"]
    return {
        "aerial": aerial,
        "safa": safa[::rs, ::cs].astype(np.float32),
        "dsm": dsm[::rd, ::cd].astype(np.float32),
        "toker_cvusa_legacy": legacy[::rt, ::ct],
    }


def main() -> None:
    for name, array in make().items():
        path = HERE / f"{name}.npy"
        np.save(path, array)
        print(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.name}  {array.dtype} {array.shape}")


if __name__ == "__main__":
    main()
