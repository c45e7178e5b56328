"""Input validation shared by the mappings: clear ``TypeError``/``ValueError`` naming the argument.

Convention: an output size is a pair of positive ints ``(H, W)`` (a side ``S`` for square outputs)
of at most :data:`MAX_OUTPUT_PIXELS` = 2**26 pixels per image (8192 x 8192), so a mistyped size
fails at once with a ``ValueError`` naming the argument and the limit instead of trying to
allocate tens of gigabytes. Input images may have any batch size, including 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["MAX_OUTPUT_PIXELS", "check_image", "check_pixels", "check_size"]

MAX_OUTPUT_PIXELS = 2**26
"""Largest output of a mapping, in pixels per image (8192 x 8192; a 112 x 616 polar map is 69,000)."""


def check_image(image: object, name: str, *, square: bool = False, any_dtype: bool = False) -> Tensor:
    """Require a floating (B, C, H, W) tensor (square when ``square``; of any dtype with
    ``any_dtype``, for the exact pixel permutations); return it unchanged."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(image).__name__}")
    if not any_dtype and not image.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {image.dtype}; "
            f"convert uint8 images with {name}.float() / 255"
        )
    if image.ndim != 4:
        expected = "(B, C, S, S)" if square else "(B, C, H, W)"
        raise ValueError(f"{name} must be {expected}, got shape {tuple(image.shape)}")
    if square and image.shape[-1] != image.shape[-2]:
        raise ValueError(f"{name} must be square (B, C, S, S), got shape {tuple(image.shape)}")
    if image.shape[-1] < 2 or image.shape[-2] < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels, got shape {tuple(image.shape)}")
    return image


def check_pixels(size: object, pixels: int, name: str) -> None:
    """Refuse an output ``size`` (as given, for the message) of ``pixels`` > :data:`MAX_OUTPUT_PIXELS`."""
    if pixels > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"{name} {size} asks for {pixels:,} pixels per image, above the limit of {MAX_OUTPUT_PIXELS:,} "
            "(2**26, e.g. 8192 x 8192)"
        )


def check_size(size: object, name: str) -> tuple[int, int]:
    """Require ``(H, W)`` with two positive ints of at most :data:`MAX_OUTPUT_PIXELS` pixels in all;
    return it as a tuple."""
    if isinstance(size, torch.Size):
        size = tuple(size)
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise TypeError(f"{name} must be a pair of ints (H, W), got {size!r}")
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"{name} must be positive (H, W), got {tuple(size)}")
    check_pixels(tuple(size), size[0] * size[1], name)
    return int(size[0]), int(size[1])
