"""String-keyed head registry (one factory, loud failures; :class:`geo_transforms.registry.Registry`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from geo_transforms.registry import Registry

__all__ = ["check_feature_map", "create_head", "list_heads", "register_head"]

_HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


def register_head(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a head class or builder under ``name``; an existing name raises
    ``ValueError`` unless ``overwrite=True``."""
    return _HEADS.register(name, overwrite=overwrite)


def list_heads(filter: str | None = None) -> list[str]:
    """Registered head names, sorted (only those matching the fnmatch ``filter`` if given)."""
    return _HEADS.names(filter)


def create_head(name: str, **kwargs: Any) -> nn.Module:
    """Build the head registered as ``name``; ``kwargs`` go to its constructor.

    Heads are sized at build time from ``in_channels`` and, where they need it,
    ``feature_size=(h, w)`` of the backbone's actual feature map. An unknown name raises
    ``ValueError`` listing the registered heads.

    Example:
        >>> import torch
        >>> head = create_head("gem", in_channels=8)
        >>> head(torch.rand(2, 8, 3, 5)).shape
        torch.Size([2, 8])
    """
    return _HEADS.get(name)(**kwargs)


def check_feature_map(
    x: Tensor, in_channels: int, feature_size: tuple[int, int] | None = None, name: str = "x"
) -> None:
    """Raise a clear error unless ``x`` is (B, in_channels, h, w) (with (h, w) == feature_size if given)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{name} must be (B, {in_channels}, h, w), got {tuple(x.shape)}")
    if feature_size is not None and tuple(x.shape[-2:]) != tuple(feature_size):
        raise ValueError(
            f"{name} must be (B, {in_channels}, {feature_size[0]}, {feature_size[1]}) (the head was sized for "
            f"that feature map), got {tuple(x.shape)}"
        )
