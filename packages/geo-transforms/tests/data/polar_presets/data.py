#!/usr/bin/env python3
"""Generate the reference arrays for tests/test_presets.py (seeded, tiny; run from anywhere).

The references come from the numpy port of SAFA's sampler (geo_transforms.testing.safa_reference),
not from the code under test, plus OpenCV for the legacy Toker chain:

- ``aerial.npy``: (64, 64, 3) uint8 noise, ``np.random.RandomState(0)``;
- ``safa.npy``: SAFA sampler at 112x616, rows ::5, columns ::7, float32 (23, 88, 3);
- ``dsm.npy``: SAFA sampler at 128x512, rows ::6, columns ::8, float32 (22, 64, 3);
- ``toker_cvusa_legacy.npy``: SAFA sampler at 224x1232 -> ``astype(np.uint8)`` ->
  ``cv2.resize(..., (616, 112), interpolation=cv2.INTER_CUBIC)`` (uint8 in, uint8 out, as Toker's
  loader), rows ::5, columns ::7, uint8 (23, 88, 3);
- ``safa_imsave.npy`` / ``dsm_imsave.npy``: SAFA sampler at 112x616 / 128x512 of ``aerial // 2 + 40``
  (levels 40-167, so the stretch matters) -> :func:`bytescale`, the numpy of SciPy 1.1's
  ``scipy.misc.bytescale`` as ``imsave`` calls it (checked equal to ``scipy.misc.bytescale`` of SciPy
  1.1.0 under Python 3.7 on these arrays), rows / columns as ``safa`` / ``dsm``, uint8;
- ``geodtr.npy``: SAFA sampler at 122x671 -> ``astype(np.uint8)`` (GeoDTR's script), rows ::5,
  columns ::7, uint8 (25, 96, 3);
- ``toker_cvact.npy``: SAFA sampler at 112x616 of ``aerial // 2 + 40`` -> imageio's own
  ``imageio.core.util.image_as_uint(x, bitdepth=8)`` (what ``imageio.imsave`` of Toker et al.'s CVACT
  block calls; needs ``imageio``, made with imageio 2.9.0), rows ::5, columns ::7, uint8 (23, 88, 3).

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
STRIDES = {
    "safa": (5, 7),
    "dsm": (6, 8),
    "toker_cvusa_legacy": (5, 7),
    "safa_imsave": (5, 7),
    "dsm_imsave": (6, 8),
    "geodtr": (5, 7),
    "toker_cvact": (5, 7),
}


def bytescale(data: np.ndarray) -> np.ndarray:
    """SciPy 1.1's ``scipy.misc.bytescale(data)`` (cmin / cmax from the data, high 255, low 0)."""
    cmin, cmax = data.min(), data.max()
    cscale = cmax - cmin
    if cscale == 0:
        cscale = 1
    scale = float(255 - 0) / cscale
    bytedata = (data - cmin) * scale + 0
    return (bytedata.clip(0, 255) + 0.5).astype(np.uint8)


def _imageio_uint8(data: np.ndarray) -> np.ndarray:
    """The ``image_as_uint`` of imageio itself (imported here: only this reference needs imageio)."""
    import warnings

    from imageio.core.util import image_as_uint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Lossy conversion from float64 to uint8"
        return image_as_uint(data, bitdepth=8)


def make() -> dict[str, np.ndarray]:
    aerial = np.random.RandomState(0).randint(0, 256, size=(SIZE, SIZE, 3)).astype(np.uint8)
    safa = safa_polar(aerial, 112, 616)
    dsm = safa_polar(aerial, 128, 512)
    legacy = safa_polar(aerial, 224, 1232).astype(np.uint8)
    legacy = cv2.resize(legacy, (616, 112), interpolation=cv2.INTER_CUBIC)
    narrow = aerial // 2 + 40
    outs = {
        "safa": safa.astype(np.float32),
        "dsm": dsm.astype(np.float32),
        "toker_cvusa_legacy": legacy,
        "safa_imsave": bytescale(safa_polar(narrow, 112, 616)),
        "dsm_imsave": bytescale(safa_polar(narrow, 128, 512)),
        "geodtr": safa_polar(aerial, 122, 671).astype(np.uint8),
        "toker_cvact": _imageio_uint8(safa_polar(narrow, 112, 616)),
    }
    return {"aerial": aerial, **{k: v[:: STRIDES[k][0], :: STRIDES[k][1]] for k, v in outs.items()}}


def main() -> None:
    for name, array in make().items():
        path = HERE / f"{name}.npy"
        np.save(path, array)
        print(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.name}  {array.dtype} {array.shape}")


if __name__ == "__main__":
    main()
