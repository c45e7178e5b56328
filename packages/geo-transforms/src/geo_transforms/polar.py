"""Polar transform of square aerial images into panorama-shaped images (SAFA's geometry), and back.

Convention:
    input (B, C, S, S) -> output (B, C, H, W). With A the aerial image, row i and column j of the
    output sample A at

        r_i = (S/2) * (H - 1 - i) / H,          theta_j = 2*pi*j / W
        row = c + r_i * cos(theta_j),           col = c - r_i * sin(theta_j)

    where c = S/2 (``center="safa"``, SAFA's ``data_preparation.py``) or (S-1)/2
    (``center="pixel"``, the true pixel centre). Row 0 is the outer ring, row H-1 the camera;
    column 0 looks south (down the image), W/4 west, W/2 (the centre column) north, 3W/4 east: a
    clockwise sweep on the map, matching north-centred panoramas. Bilinear in pixel coordinates
    (pixel k at coordinate k, i.e. align_corners=True), neighbours outside the image contribute 0
    and the weights are not renormalised (SAFA's ``sample_within_bounds``).

Implementation: the four neighbours of every output pixel and their bilinear weights are computed
once in float64 per (S, H, W, center, device, dtype), cached, and applied with one gather
(``index_select``) and a weighted sum. This is exact to the rounding of the image dtype (about
4e-5 on a 0-255 image in float32), whereas ``grid_sample`` with a float32 normalised grid is off
by up to ~0.02 because the normalised coordinates themselves round. The cached normalised grid
is still available from :func:`polar_grid` for callers who want ``grid_sample``.

On the CPU, for large sources (planes of about 362 x 362 pixels and up) when autograd does not
record (no input requiring grad, or ``torch.no_grad`` / ``inference_mode``), the same table is
applied one (image, channel) plane at a time (:func:`_gather_planewise`; with several torch
threads, runs of planes on a thread pool, one run per thread): the output pixels are visited in the memory order of their source
pixels (a permutation cached with the table, in int32), so the gather streams through each plane
instead of jumping around the rings, and small tap buffers are reused instead of allocating 4x the
whole batch's output. The arithmetic is the same, element for element, so the result is bit for
bit the batched path's; with autograd recording, on other devices, for small sources and under
``torch.compile`` the batched path runs.

With ``center="pixel"`` and W divisible by 4 the identities
``polar(rot90(A, k)) == roll(polar(A), -k*W/4)`` and
``polar(flip_W(A)) == roll(flip_W(polar(A)), +1)`` hold bit for bit (the table is built with
exact quadrant/mirror symmetry and the four products are summed as two diagonal pairs); with
``"safa"`` only up to a one-pixel misregistration.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_image, check_pixels, check_size
from ._sampling import normalise_pixel_grid

__all__ = [
    "InversePolarTransform",
    "PolarTransform",
    "inverse_polar_transform",
    "polar_grid",
    "polar_pixel_map",
    "polar_transform",
]

Center = Literal["safa", "pixel"]

# Coordinates are snapped to multiples of 2**-36 pixel before the table is built: every later step
# (floor, fractional part, 1 - fraction) is then exact in float64 and symmetric under the
# rotations and mirrors of the square, which makes the equivariance identities hold bit for bit.
# The snap moves a sample by at most 2**-37 (7e-12) pixel; exact for coordinates below 2**17.
_QUANTUM = 2.0**36

_PLANEWISE_MIN_SOURCE = 2**17
"""Source pixels per plane from which the CPU applies a table plane by plane in source order
(:func:`_gather_planewise`; about 362 x 362 and up, 512 KB in float32): smaller planes stay in
cache whatever the order, and there the batched path is as fast or faster."""


def _center(size: int, center: str) -> float:
    if center == "safa":
        return size / 2.0
    if center == "pixel":
        return (size - 1) / 2.0
    raise ValueError(f"center must be 'safa' (S/2) or 'pixel' ((S-1)/2), got {center!r}")


def _check_side(size: object, name: str = "size", *, output: bool = False) -> int:
    """Require an int aerial side S >= 2; an ``output`` side also at most MAX_OUTPUT_PIXELS in all."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"{name} must be an int (the aerial side S), got {type(size).__name__}")
    if size < 2:
        raise ValueError(f"{name} must be >= 2 (the aerial side S), got {size}")
    if output:
        check_pixels(size, size * size, name)
    return size


def _unit_circle(width: int, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """``(cos, sin)`` of 2*pi*j/W, j < W, in float64, exactly symmetric when W % 4 == 0.

    For W divisible by 4 every angle is reduced to a base angle in [0, pi/4] and rebuilt with exact
    sign flips and swaps, so cos/sin at j + W/4 are exactly (-sin, cos) at j and at W - j exactly
    (cos, -sin). That is what makes the rotation and mirror identities bitwise exact.
    """
    j = torch.arange(width, device=device, dtype=torch.int64)
    if width % 4:
        theta = (2.0 * math.pi / width) * j.to(torch.float64)
        return torch.cos(theta), torch.sin(theta)
    quarter = width // 4
    q = torch.div(j, quarter, rounding_mode="floor")
    m = j - q * quarter
    swap = m > quarter - m
    base = torch.where(swap, quarter - m, m).to(torch.float64) * (2.0 * math.pi / width)
    cb, sb = torch.cos(base), torch.sin(base)
    c1 = torch.where(swap, sb, cb)
    s1 = torch.where(swap, cb, sb)
    cos = torch.where(q == 0, c1, torch.where(q == 1, -s1, torch.where(q == 2, -c1, s1)))
    sin = torch.where(q == 0, s1, torch.where(q == 1, c1, torch.where(q == 2, -s1, -c1)))
    return cos, sin


def polar_pixel_map(
    size: int,
    out_size: tuple[int, int],
    *,
    center: Center = "safa",
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Source pixel coordinates of every polar output pixel, in float64.

    Convention:
        Pixel k of the aerial image sits at coordinate k. ``row`` indexes the aerial's height
        (SAFA's ``x``), ``col`` its width (SAFA's ``y``); see the module docstring for the formula.

    Args:
        size: aerial side S.
        out_size: polar ``(H, W)``.
        center: ``"safa"`` (S/2) or ``"pixel"`` ((S-1)/2).
        device: where to build the map.

    Returns:
        ``(row, col)``: two (H, W) float64 tensors of aerial row and column coordinates.

    Example:
        >>> row, col = polar_pixel_map(750, (112, 616))
        >>> row.shape
        torch.Size([112, 616])
        >>> round(float(row[0, 0]), 4), round(float(col[0, 0]), 4)  # outer ring, looking south
        (746.6518, 375.0)
        >>> round(float(row[0, 308]), 4), round(float(col[0, 154]), 4)  # north: top row; west: left column
        (3.3482, 3.3482)
    """
    _check_side(size)
    height, width = check_size(out_size, "out_size")
    c = _center(size, center)
    i = torch.arange(height, device=device, dtype=torch.float64)
    radius = (size / 2.0) * (height - 1 - i) / height
    cos, sin = _unit_circle(width, device)
    dx = radius[:, None] * cos[None, :]
    dy = radius[:, None] * sin[None, :]
    # Snap the offsets (symmetric: round(-a) == -round(a)), then add the centre exactly.
    dx = torch.round(dx * _QUANTUM) / _QUANTUM
    dy = torch.round(dy * _QUANTUM) / _QUANTUM
    return c + dx, c - dy


def _bilinear_table(
    row: Tensor, col: Tensor, height: int, width: int, *, wrap_cols: bool = False, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Flat neighbour indices and bilinear weights for sampling a (height, width) image.

    Args:
        row, col: float64 source coordinates of N output pixels (any shape, N elements).
        height, width: source image size.
        wrap_cols: columns wrap around (panorama-like source) instead of zero padding.
        valid: optional bool mask; output pixels where it is False get all-zero weights.

    Returns:
        ``index`` (4*N,) int64 into the flattened source, in the order (00, 11, 10, 01) blocks of
        N (the two diagonals of the 2x2 neighbourhood next to each other), and ``weight`` (4, N)
        float64. Out-of-image neighbours get index 0 and weight 0.
    """
    row = row.reshape(-1)
    col = col.reshape(-1)
    r0f = torch.floor(row)
    c0f = torch.floor(col)
    fr = row - r0f
    fc = col - c0f
    r0 = r0f.to(torch.int64)
    c0 = c0f.to(torch.int64)
    gr = 1.0 - fr
    gc = 1.0 - fc
    corners = ((0, 0, gr * gc), (1, 1, fr * fc), (1, 0, fr * gc), (0, 1, gr * fc))
    indices, weights = [], []
    for dr, dc, w in corners:
        r = r0 + dr
        c = c0 + dc
        ok = (r >= 0) & (r < height)
        if wrap_cols:
            c = torch.remainder(c, width)
        else:
            ok = ok & (c >= 0) & (c < width)
        if valid is not None:
            ok = ok & valid.reshape(-1)
        indices.append(torch.where(ok, r * width + c, 0))
        weights.append(torch.where(ok, w, 0.0))
    return torch.cat(indices), torch.stack(weights)


def _gather_bilinear(image: Tensor, index: Tensor, weight: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Apply a table from :func:`_bilinear_table`: (B, C, h, w) -> (B, C, *out_hw).

    The four products are summed as two diagonal pairs, ``(p00 + p11) + (p10 + p01)``, which is
    invariant (bit for bit) under the symmetries of the square.
    """
    b, c, h, w = image.shape
    n = weight.shape[-1]
    values = image.reshape(b * c, h * w).index_select(1, index).view(b * c, 4, n)  # (explicit: B may be 0)
    # In place on the fresh gather buffer (index_select's backward does not need it): one large
    # allocation instead of eight, which is most of the cost on the CPU.
    values.mul_(weight)
    values[:, 0].add_(values[:, 1])  # p00 + p11
    values[:, 2].add_(values[:, 3])  # p10 + p01
    out = values[:, 0] + values[:, 2]
    return out.view(b, c, *out_hw)


class _GatherPlan(NamedTuple):
    """A table from :func:`_bilinear_table` with its output pixels sorted by source address.

    ``source`` (4*N,) and ``weight`` (4, N) are the table's index and weights, in the same
    (00, 11, 10, 01) blocks, with the N output pixels reordered by the source index of their first
    tap; ``order`` (N,) puts them back: ``out[n] = sorted_out[order[n]]``. The indices are int32
    where they fit (half the memory traffic of int64 for the gather to stream), else int64.
    """

    source: Tensor
    weight: Tensor
    order: Tensor


def _gather_plan(index: Tensor, weight: Tensor, source_pixels: int) -> _GatherPlan:
    """Sort a table's output pixels by the source address of their first tap (once, cached)."""
    n = weight.shape[-1]
    perm = torch.argsort(index[:n], stable=True)
    order = torch.empty_like(perm)
    order[perm] = torch.arange(n, device=perm.device)
    sorted_index = index.view(4, n)[:, perm].reshape(-1)
    if max(source_pixels, n) < 2**31:
        sorted_index, order = sorted_index.to(torch.int32), order.to(torch.int32)
    return _GatherPlan(sorted_index, weight[:, perm].contiguous(), order)


def _use_planewise(image: Tensor) -> bool:
    """Whether :func:`_gather_planewise` applies: CPU, a non-empty batch of source planes of at least
    ``_PLANEWISE_MIN_SOURCE`` pixels, nothing for autograd to record, eager mode."""
    b, c, h, w = image.shape
    return (
        image.device.type == "cpu"
        and h * w >= _PLANEWISE_MIN_SOURCE
        and b * c > 0
        and not (image.requires_grad and torch.is_grad_enabled())
        and not torch.compiler.is_compiling()
    )


def _planewise_workers(planes: int) -> int:
    """Threads of :func:`_gather_planewise` for ``planes`` planes: torch's intra-op thread count, at
    most one per plane."""
    return max(1, min(torch.get_num_threads(), planes))


def _gather_planes(planes: Tensor, plan: _GatherPlan, out: Tensor, lo: int, hi: int) -> None:
    """Planes ``lo .. hi - 1`` of ``planes`` (P, h*w) into ``out`` (P, N), one plane at a time: a 1-D
    ``index_select`` of the 4 taps (torch's cheapest gather) into a buffer that stays in cache, the
    weights, ``(p00 + p11) + (p10 + p01)`` in place, and the gather back to output order."""
    n = plan.weight.shape[-1]
    taps = planes.new_empty(4, n)
    flat = taps.view(-1)
    p00, p11, p10, p01 = taps[0], taps[1], taps[2], taps[3]
    for k in range(lo, hi):
        torch.index_select(planes[k], 0, plan.source, out=flat)
        taps.mul_(plan.weight)
        p00.add_(p11)
        p10.add_(p01)
        p00.add_(p10)
        torch.index_select(p00, 0, plan.order, out=out[k])


def _gather_planewise(image: Tensor, plan: _GatherPlan, out_hw: tuple[int, int]) -> Tensor:
    """Apply a sorted table plane by plane: (B, C, h, w) -> (B, C, *out_hw).

    The same products and the same ``(p00 + p11) + (p10 + p01)`` sum as :func:`_gather_bilinear`
    (so bit for bit its result), computed in the plan's source order so that the gather walks each
    plane forwards (:func:`_gather_planes`). With several torch threads the planes are split into
    contiguous runs, one per thread of a short-lived thread pool (the ops release the GIL), each run
    still plane by plane: faster than letting every op spread over the threads, since one plane's
    ops are too short to share. The loops run over planes, never over pixels. Not differentiable
    (``out=`` buffers): callers use it only when autograd does not record.
    """
    b, c, h, w = image.shape
    count = b * c
    planes = image.reshape(count, h * w)
    out = image.new_empty(count, plan.weight.shape[-1])
    workers = _planewise_workers(count)
    if workers == 1:
        _gather_planes(planes, plan, out, 0, count)
    else:
        bounds = [round(i * count / workers) for i in range(workers + 1)]
        with ThreadPoolExecutor(workers, thread_name_prefix="polar") as pool:
            runs = [
                pool.submit(_gather_planes, planes, plan, out, bounds[i], bounds[i + 1])
                for i in range(workers)
            ]
            for run in runs:
                run.result()
    return out.view(b, c, *out_hw)


def _build_polar_table(
    size: int, out_size: tuple[int, int], center: str, device: torch.device
) -> tuple[Tensor, Tensor]:
    row, col = polar_pixel_map(size, out_size, center=center, device=device)  # type: ignore[arg-type]
    return _bilinear_table(row, col, size, size)


@lru_cache(maxsize=32)
def _polar_table64(
    size: int, out_size: tuple[int, int], center: str, device: torch.device
) -> tuple[Tensor, Tensor]:
    return _build_polar_table(size, out_size, center, device)


@lru_cache(maxsize=64)
def _cached_polar_table(
    size: int, out_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    index, weight = _polar_table64(size, out_size, center, device)
    return index, weight.to(dtype)


def _polar_table(
    size: int, out_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The (index, weight) table: cached in eager mode; under ``torch.compile`` it is traced into
    the graph instead (O(H*W) work per call, small next to the gather), because Dynamo cannot use
    an ``lru_cache``."""
    if torch.compiler.is_compiling():
        index, weight = _build_polar_table(size, out_size, center, device)
        return index, weight.to(dtype)
    return _cached_polar_table(size, out_size, center, device, dtype)


@lru_cache(maxsize=32)
def _cached_polar_plan(
    size: int, out_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> _GatherPlan:
    return _gather_plan(*_cached_polar_table(size, out_size, center, device, dtype), size * size)


@lru_cache(maxsize=64)
def _cached_polar_grid(
    size: int, out_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> Tensor:
    row, col = polar_pixel_map(size, out_size, center=center, device=device)  # type: ignore[arg-type]
    return normalise_pixel_grid(col, row, size, size)[None].to(dtype)


def polar_grid(
    size: int,
    out_size: tuple[int, int],
    *,
    center: Center = "safa",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The cached normalised sampling grid (1, H, W, 2) of the polar transform, for ``grid_sample``.

    Convention:
        (x=column, y=row) order, normalised corner to corner (``align_corners=True``):
        ``2 * col / (S - 1) - 1``. Built once in float64 per (S, H, W, center, device, dtype) and
        cast once to ``dtype``. The returned tensor is shared: do not modify it in place.

    :func:`polar_transform` does not use this grid (it gathers with exact float64 weights); in
    float32 ``F.grid_sample(aerial, grid, align_corners=True)`` differs from it by up to ~0.02 on
    a 0-255 image because the normalised coordinates round.

    Args:
        size: aerial side S.
        out_size: polar ``(H, W)``.
        center: ``"safa"`` or ``"pixel"``.
        device: where to build the grid.
        dtype: grid dtype.

    Returns:
        (1, H, W, 2) tensor.

    Example:
        >>> polar_grid(750, (112, 616)).shape
        torch.Size([1, 112, 616, 2])
    """
    _check_side(size)
    out_size = check_size(out_size, "out_size")
    _center(size, center)
    return _cached_polar_grid(size, out_size, center, torch.device(device or "cpu"), dtype)


def polar_transform(aerial: Tensor, out_size: tuple[int, int], *, center: Center = "safa") -> Tensor:
    """Warp square aerial images to polar, panorama-shaped images (SAFA's geometry).

    Convention:
        (B, C, S, S) -> (B, C, H, W). Row 0 is the outer ring at radius (S/2)(H-1)/H, row H-1 the
        centre; column 0 looks south, W/2 north, sweep clockwise on the map; centre S/2
        (``"safa"``) or (S-1)/2 (``"pixel"``); bilinear with pixel k at coordinate k
        (align_corners=True); zeros outside the image.

    Args:
        aerial: (B, C, S, S) floating tensor (float16, bfloat16, float32 or float64), north up.
        out_size: polar ``(H, W)``, e.g. (112, 616) for SAFA or (128, 512) for DSM; at most 2**26
            pixels (``ValueError`` above).
        center: ``"safa"`` (S/2, reproduces SAFA's maps) or ``"pixel"`` ((S-1)/2, exact
            rotation/flip equivariance).

    Returns:
        (B, C, H, W) tensor of the input's dtype and device (B = 0 gives an empty one);
        differentiable w.r.t. ``aerial``.

    Example:
        >>> aerial = torch.rand(2, 3, 750, 750)
        >>> polar_transform(aerial, (112, 616)).shape
        torch.Size([2, 3, 112, 616])
    """
    check_image(aerial, "aerial", square=True)
    out_size = check_size(out_size, "out_size")
    _center(2, center)
    size = aerial.shape[-1]
    if _use_planewise(aerial):
        plan = _cached_polar_plan(size, out_size, center, aerial.device, aerial.dtype)
        return _gather_planewise(aerial, plan, out_size)
    index, weight = _polar_table(size, out_size, center, aerial.device, aerial.dtype)
    return _gather_bilinear(aerial, index, weight, out_size)


def _build_inverse_table(
    size: int, polar_size: tuple[int, int], center: str, device: torch.device
) -> tuple[Tensor, Tensor]:
    height, width = polar_size
    c = _center(size, center)
    p = torch.arange(size, device=device, dtype=torch.float64)
    dx = (p - c)[:, None].expand(size, size)  # along the aerial's rows
    dy = (p - c)[None, :].expand(size, size)  # along the aerial's columns
    radius = torch.sqrt(dx * dx + dy * dy)
    theta = torch.remainder(torch.atan2(-dy, dx), 2.0 * math.pi)
    col = theta * (width / (2.0 * math.pi))
    row = (height - 1) - radius * (height / (size / 2.0))
    return _bilinear_table(row, col, height, width, wrap_cols=True, valid=row >= 0)


@lru_cache(maxsize=32)
def _cached_inverse_table(
    size: int, polar_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    index, weight = _build_inverse_table(size, polar_size, center, device)
    return index, weight.to(dtype)


def _inverse_table(
    size: int, polar_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    if torch.compiler.is_compiling():
        index, weight = _build_inverse_table(size, polar_size, center, device)
        return index, weight.to(dtype)
    return _cached_inverse_table(size, polar_size, center, device, dtype)


@lru_cache(maxsize=32)
def _cached_inverse_plan(
    size: int, polar_size: tuple[int, int], center: str, device: torch.device, dtype: torch.dtype
) -> _GatherPlan:
    return _gather_plan(
        *_cached_inverse_table(size, polar_size, center, device, dtype), polar_size[0] * polar_size[1]
    )


def inverse_polar_transform(polar: Tensor, size: int, *, center: Center = "safa") -> Tensor:
    """Map polar images back onto the square aerial grid (the inverse of :func:`polar_transform`).

    Convention:
        (B, C, H, W) -> (B, C, S, S). Aerial pixel (row p, column q) reads the polar image at
        ring ``i = H - 1 - r * H / (S/2)`` and column ``j = W * phi / (2*pi)``, with
        ``r = hypot(p - c, q - c)`` and ``phi = atan2(-(q - c), p - c) mod 2*pi`` (the same centre
        c and orientation as the forward transform). Bilinear, wrapping around in j (column W-1
        is next to column 0), clamped to nothing in i: pixels farther from the centre than the
        outer ring (r > (S/2)(H-1)/H, i.e. i < 0, the image corners and a thin border) are 0.

    Args:
        polar: (B, C, H, W) floating tensor laid out as :func:`polar_transform` writes it.
        size: aerial side S of the output; S * S at most 2**26 (``ValueError`` above).
        center: ``"safa"`` (S/2) or ``"pixel"`` ((S-1)/2); use the forward transform's choice.

    Returns:
        (B, C, S, S) tensor of the input's dtype and device; differentiable w.r.t. ``polar``.

    Example:
        >>> polar = torch.rand(1, 3, 112, 616)
        >>> inverse_polar_transform(polar, 256).shape
        torch.Size([1, 3, 256, 256])
    """
    check_image(polar, "polar")
    _check_side(size, output=True)
    _center(size, center)
    height, width = polar.shape[-2:]
    if _use_planewise(polar):
        plan = _cached_inverse_plan(size, (height, width), center, polar.device, polar.dtype)
        return _gather_planewise(polar, plan, (size, size))
    index, weight = _inverse_table(size, (height, width), center, polar.device, polar.dtype)
    return _gather_bilinear(polar, index, weight, (size, size))


class PolarTransform(nn.Module):
    """Module form of :func:`polar_transform`; stores ``out_size`` and ``center`` only.

    Example:
        >>> PolarTransform((128, 512))(torch.rand(1, 3, 750, 750)).shape
        torch.Size([1, 3, 128, 512])
    """

    def __init__(self, out_size: tuple[int, int], *, center: Center = "safa") -> None:
        super().__init__()
        self.out_size = check_size(out_size, "out_size")
        _center(2, center)
        self.center = center

    def forward(self, aerial: Tensor) -> Tensor:
        return polar_transform(aerial, self.out_size, center=self.center)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, center={self.center!r}"


class InversePolarTransform(nn.Module):
    """Module form of :func:`inverse_polar_transform`; stores ``size`` and ``center`` only.

    Example:
        >>> InversePolarTransform(128)(torch.rand(1, 3, 64, 256)).shape
        torch.Size([1, 3, 128, 128])
    """

    def __init__(self, size: int, *, center: Center = "safa") -> None:
        super().__init__()
        self.size = _check_side(size, output=True)
        _center(2, center)
        self.center = center

    def forward(self, polar: Tensor) -> Tensor:
        return inverse_polar_transform(polar, self.size, center=self.center)

    def extra_repr(self) -> str:
        return f"size={self.size}, center={self.center!r}"
