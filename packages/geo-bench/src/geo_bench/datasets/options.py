"""The size and ``polar=`` options of the cross-view datasets.

Convention: sizes are ``(H, W)``; ``polar=`` resolves to a :class:`PolarSpec` (output size, the name
recorded in results, the centre convention); the polar *geometry* is always SAFA's (row 0 = outer
ring, centre column = north, clockwise sweep, see :mod:`geo_bench.datasets.base`).

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["POLAR_SIZES", "PolarSpec", "parse_polar", "parse_size"]

#: Named polar sizes accepted by ``polar=``. The geometry is always SAFA's (see :mod:`geo_bench.datasets.base`);
#: the name only fixes the output (H, W). ``toker_cvusa_legacy`` (render 224x1232, truncate,
#: cubic-resize) is a geo-transforms preset, not a size, and is not produced by these loaders.
POLAR_SIZES: dict[str, tuple[int, int]] = {"safa": (112, 616), "dsm": (128, 512)}


def parse_size(value: Sequence[int] | int | str | None, name: str) -> tuple[int, int] | None:
    """``(H, W)`` from a pair, an int (square), ``"HxW"`` or None (native size, no resize)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"{name} must look like 'HxW', got {value!r}")
        value = (int(parts[0]), int(parts[1]))
    if isinstance(value, bool):
        raise TypeError(f"{name} must be (H, W), an int, 'HxW' or None, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be (H, W), an int, 'HxW' or None, got {value!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {(h, w)}")
    return (h, w)


class PolarSpec:
    """Resolved ``polar=`` option: output size, the name recorded in results, and the centre."""

    __slots__ = ("center", "name", "size")

    def __init__(self, size: tuple[int, int], name: str, center: str) -> None:
        self.size = size
        self.name = name
        self.center = center

    def as_dict(self) -> dict[str, Any]:
        return {"preset": self.name, "size": list(self.size), "center": self.center}

    def __repr__(self) -> str:
        return f"PolarSpec(size={self.size}, name={self.name!r}, center={self.center!r})"


def parse_polar(
    polar: bool | str | Sequence[int] | None, ground_size: tuple[int, int] | None, center: str = "safa"
) -> PolarSpec | None:
    """Resolve ``polar=``.

    Args:
        polar: ``False``/``None`` (raw aerial), ``True`` (polar at the ground size, SAFA style),
            a name in :data:`POLAR_SIZES` (``"safa"`` = 112x616, ``"dsm"`` = 128x512), ``"HxW"`` or
            an ``(H, W)`` pair.
        ground_size: the ground output size (used by ``True``).
        center: ``"safa"`` (S/2) or ``"pixel"`` ((S-1)/2), passed to ``polar_transform``.
    """
    if center not in ("safa", "pixel"):
        raise ValueError(f"polar_center must be 'safa' or 'pixel', got {center!r}")
    if polar is None or polar is False:
        return None
    if polar is True:
        if ground_size is None:
            raise ValueError("polar=True takes the ground size, but ground_size is None; pass polar=(H, W)")
        return PolarSpec(ground_size, f"{ground_size[0]}x{ground_size[1]}", center)
    if isinstance(polar, str) and polar.lower() in POLAR_SIZES:
        return PolarSpec(POLAR_SIZES[polar.lower()], polar.lower(), center)
    if isinstance(polar, str) and "x" not in polar.lower():
        raise ValueError(f"unknown polar preset {polar!r}; available: {sorted(POLAR_SIZES)} or 'HxW'")
    size = parse_size(polar, "polar")
    assert size is not None
    return PolarSpec(size, f"{size[0]}x{size[1]}", center)
