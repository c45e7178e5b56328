"""Image IO of the cross-view datasets: decode, crop, resize and polar-transform to uint8.

Convention:
    - Images are decoded with Pillow and converted to RGB (:func:`read_rgb`); an image that cannot
      be decoded raises :class:`~geo_bench.datasets.errors.ImageDecodeError` naming the file and the
      sample.
    - Resizing uses Pillow's ``Image.resize(..., Image.BILINEAR)``: a triangle filter whose support
      widens with the downscale factor, i.e. *antialiased* bilinear (the same family as torch's
      ``interpolate(mode="bilinear", antialias=True)``; values differ by rounding only). The result
      is uint8 (C, H, W), so samples loaded from the raw files and from a ``prepare`` cache are
      bit-identical (:data:`INTERPOLATION` names it in every ``protocol``).
    - Polar aerials are computed from the *full-resolution* decoded aerial with
      :func:`geo_transforms.polar_transform` (bilinear, ``align_corners=True``, SAFA geometry), then
      rounded to uint8 like every other view (:func:`polar_uint8`).

.. versionadded:: 0.1
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from geo_transforms import polar_transform
from geo_transforms.polar import Center

from .errors import ImageDecodeError
from .options import PolarSpec

__all__ = ["INTERPOLATION", "crop_to_rows", "polar_uint8", "read_rgb", "resize_uint8", "to_float"]

INTERPOLATION = "pillow-bilinear-antialiased"
"""Name of the resampling used for every resize; recorded in each dataset's ``protocol``."""


#: What Pillow raises for a file it cannot decode (garbage, truncated, corrupt chunks).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
)
#: What reading an image may raise besides a missing file: a decode error or a decompression bomb.
_READ_ERRORS: tuple[type[BaseException], ...] = (*_DECODE_ERRORS, Image.DecompressionBombError)


def read_rgb(
    path: Path, *, crop_rows: tuple[float, float] | None = None, sample: str | None = None
):  # -> PIL.Image.Image
    """Decode ``path`` with Pillow as RGB, optionally keeping the rows [a*H, b*H).

    Args:
        path: the image file.
        crop_rows: (a, b) row fractions to keep, or None.
        sample: the sample id, named in the error message.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ImageDecodeError: the file exists but cannot be decoded (garbage, truncated): one line
            ``"cannot decode image FILE (sample ID): REASON; re-download or remove it"``. It is a
            ``ValueError`` and an ``OSError``. Errors of the file system itself (permissions, I/O)
            propagate as the ``OSError`` they are.
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {str(path)!r}") from None
    except _READ_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the file system's error (permission denied, I/O error), not the image's
        reason = " ".join(str(exc).replace(f" {str(path)!r}", "").split()) or type(exc).__name__
        where = f" (sample {sample})" if sample is not None else ""
        # from None: the message says it all, and a DataLoader worker would copy PIL's traceback into it
        raise ImageDecodeError(
            f"cannot decode image {path}{where}: {reason}; re-download or remove it", path=path
        ) from None
    return rgb if crop_rows is None else crop_to_rows(rgb, crop_rows)


def crop_to_rows(img, rows: tuple[float, float]):  # img: PIL.Image -> PIL.Image
    """Keep the rows [floor(a*H), floor(b*H)) of ``img``."""
    h = img.height
    top, bottom = int(rows[0] * h), int(rows[1] * h)  # floor
    return img.crop((0, top, img.width, bottom))


def resize_uint8(img, size: tuple[int, int] | None, *, nearest: bool = False) -> Tensor:  # img: PIL.Image
    """Resize a PIL image to ``size`` = (H, W) and return a (C, H, W) uint8 tensor.

    Bilinear (antialiased on downscale, see module docstring), or nearest for label maps.
    """
    if size is not None and (img.height, img.width) != tuple(size):
        resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        img = img.resize((size[1], size[0]), resample=resample)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def polar_uint8(img, spec: PolarSpec) -> Tensor:  # img: PIL.Image
    """Polar-transform a full-resolution square RGB aerial; returns (3, H, W) uint8."""
    if img.width != img.height:
        raise ValueError(f"polar=: the aerial must be square, got {img.width}x{img.height} (W x H)")
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()).float().div_(255.0)
    with torch.no_grad():
        p = polar_transform(x[None], spec.size, center=cast(Center, spec.center))[
            0
        ]  # validated by parse_polar
    return p.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def to_float(x: Tensor) -> Tensor:
    """uint8 (C, H, W) -> float32 in [0, 1]."""
    return x.to(torch.float32).div_(255.0)
