"""Input validation shared by the mappings: clear ``TypeError``/``ValueError`` naming the argument."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_image", "check_size"]


def check_image(image: object, name: str, *, square: bool = False) -> Tensor:
    """Require a floating (B, C, H, W) tensor (square when ``square``); return it unchanged."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(image).__name__}")
    if not image.is_floating_point():
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


def check_size(size: object, name: str) -> tuple[int, int]:
    """Require ``(H, W)`` with two positive ints; return it as a tuple."""
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
    return int(size[0]), int(size[1])
