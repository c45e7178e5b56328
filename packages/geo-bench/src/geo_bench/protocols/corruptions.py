"""Corruption robustness: 16 seeded corruptions at 5 severities (CVUSA-C / CVACT_val-C style).

Zhang & Zhu, "Benchmarking the Robustness of Cross-view Geo-localization Models" (ECCV 2024) corrupt the
ground queries of CVUSA and CVACT with 16 of the ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019)
at 5 severities and re-evaluate the models against the clean aerial references. Their list and grouping
(``CorruptionRobustnessEvaluation.md`` of ``zqwlearning/CrossViewRobustness-Code``) is

    noise:   gaussian_noise, shot_noise, impulse_noise, speckle_noise
    blur:    defocus_blur, glass_blur, motion_blur, zoom_blur
    weather: snow, frost, fog, brightness, spatter
    digital: contrast, pixelate, jpeg_compression

Their generation code is not published; the per-severity parameters below are those of ImageNet-C
(``hendrycks/robustness``, ``ImageNet-C/imagenet_c/imagenet_c/corruptions.py``), written for 224 x 224
images. This module is our own implementation of the same definitions, batched in torch.

Convention:
    - Images are (B, 3, H, W), RGB, float in [0, 1] or uint8. They are read as 8-bit levels first
      (``v = round(255 x)``, like loading a saved file) and the result is rounded back to 8-bit levels
      (``x = round(255 x) / 255``, or uint8 for uint8 input); the output dtype is the input dtype.
    - **Size.** ImageNet-C's lengths are pixels of a 224-pixel-high image. Every length here (blur
      sigmas and radii, motion lengths, glass-blur displacements, snow flake zoom, spatter drop size,
      fractal cell size, distance truncation) is multiplied by ``s = H / 224``, the image height over
      224, so a corruption covers the same share of the field of view at any resolution. CVUSA's
      panoramas are 224 pixels high, so there ``s = 1`` and the upstream values apply unchanged; the
      synthetic world's 128 x 512 panoramas get ``s = 0.571``. Integer lengths are rounded half up
      (``floor(x + 0.5)``) and kept >= 1. Per-pixel amplitudes (noise, colours, blend weights, JPEG
      quality, pixelate and zoom factors) do not depend on the size. Note CVACT_val-C (832-pixel-high
      panoramas) was generated with the 224-pixel values in pixels, so its spatial corruptions are
      milder than ours at that size.
    - Borders are the upstream ones (edge replication for skimage's ``gaussian`` and for motion blur,
      reflect-101 for OpenCV filters); a panorama is treated as a flat image (no wrap-around at the
      360 degree seam), as the upstream generator did.
    - **Randomness.** Each image has its own ``numpy.random.Generator`` (PCG64). :func:`corrupt` seeds
      it from SHA-256 of ``(seed, corruption name, severity, sample id)`` (:func:`sample_generator`),
      so a sample's corrupted pixels do not depend on the batch size, on the other images of the
      batch or on Python's salted ``hash``. Within an image the draws come in a fixed order of fixed
      shapes.
    - **Reproducible arithmetic.** Everything is computed in float64 with operations whose result does
      not depend on the machine: elementwise IEEE operations (``+ - * /``, sqrt, min / max, floor) in
      a fixed order, gathers, and sums in which every term is an integer (or a multiple of 2**-16)
      small enough to be exact in float64, so the summation order of a convolution, a cumulative sum
      or a mean cannot change the result. Filter taps are quantised to multiples of 2**-16 summing
      exactly to 1 (where a sum could pass 2**53, only for defocus blur above ~1100-pixel-high images,
      the products and sums are rounded separately in a fixed order instead, still the same on every
      machine). The only inexact inputs are a few scalars computed with Python's ``math`` (kernel
      taps before quantisation, trigonometry of the motion angle) and libm calls inside numpy's
      samplers (Poisson, the tail of the normal sampler); a last-bit difference there could change one
      8-bit level in about one pixel in 1e13. The golden hashes in the tests catch any drift of
      numpy's samplers or of libjpeg.
    - **Severity** is an int in 1..5 (ImageNet-C's scale).

Parameter tables (ImageNet-C's values, severity 1 .. 5; ``[s]`` marks lengths multiplied by ``s``)::

    noise
      gaussian_noise    sigma of the added N(0, sigma)             .08  .12  .18  .26  .38
      shot_noise        photons c: Poisson(c x) / c                60   25   12   5    3
      impulse_noise     salt-and-pepper share per value (1:1)      .03  .06  .09  .17  .27
      speckle_noise     sigma of x + x N(0, sigma)                 .15  .20  .35  .45  .60
    blur
      defocus_blur      (disk radius [s], alias sigma px)          (3,.1) (4,.5) (6,.5) (8,.5) (10,.5)
      glass_blur        (sigma [s], shift [s], iterations)         (.7,1,2) (.9,2,1) (1,2,3) (1.1,3,2) (1.5,4,2)
      motion_blur       (radius [s], sigma [s]); angle U(-45, 45)  (10,3) (15,5) (15,8) (15,12) (20,15)
      zoom_blur         (step, zooms): factors 1 + k step          (.01,12) (.01,16) (.02,11) (.02,13) (.03,11)
    weather
      snow              (loc, scale, zoom [s], threshold,          (.1,.3,3,.5,10,4,.8)  (.2,.3,2,.5,12,4,.7)
                         radius [s], sigma [s], blend);            (.55,.3,4,.9,12,8,.7) (.55,.3,4.5,.85,12,8,.65)
                         angle U(-135, -45)                        (.55,.3,2.5,.85,12,12,.55)
      frost             (image weight, frost weight)               (1,.4) (.8,.6) (.7,.7) (.65,.7) (.6,.75)
      fog               (strength, fractal decay)                  (1.5,2) (2,2) (2.5,1.7) (2.5,1.5) (3,1.4)
      brightness        added to the HSV value                     .1   .2   .3   .4   .5
      spatter           (loc, scale, sigma [s], threshold,         (.65,.3,4,.69,.6,0) (.65,.3,3,.68,.6,0)
                         water intensity | mud sigma [s],          (.65,.3,2,.68,.5,0) (.65,.3,1,.65,1.5,1)
                         mode 0 water | 1 mud)                     (.67,.4,1,.65,1.5,1)
    digital
      contrast          factor towards the channel mean            .4   .3   .2   .1   .05
      pixelate          resize factor (BOX down, BOX up)           .6   .5   .4   .3   .25
      jpeg_compression  JPEG quality (Pillow, 4:2:0)               25   18   15   10   7

At the world's ``s = 0.571`` this gives, e.g., defocus radii 1.7 .. 5.7 px, motion blur radii 6 .. 11 px
(sigma 1.7 .. 8.6), glass-blur sigma 0.4 .. 0.86 px with shifts 0.57 .. 2.3 px, snow flake zoom 1.1 .. 2.6
and fog / frost fractal cells of 128 px.

Differences from the upstream code (each documented at its function):
    - ``frost`` overlays photographs of frost in ImageNet-C; we cannot ship them, so the frost layer
      is procedural (ridges of diamond-square fractals at three scales over a patchy haze, tinted ice
      blue: thin bright crystal veins); the blend weights are upstream's.
    - ``motion_blur`` and ``snow`` call ImageMagick's MotionBlurImage upstream; we implement its kernel
      (one-sided, Gaussian-weighted taps along the motion direction) ourselves.
    - ``spatter`` (water) uses OpenCV's Canny, distance transform and histogram equalisation upstream;
      we use the chessboard distance to the drop boundary (repeated 3 x 3 erosion), a linear rescale,
      and the same emboss kernel and 3 x 3 box blur. The blurred liquid field is rescaled to the
      variance it has at 224 pixels, so the drop coverage does not change with the image size.
    - ``glass_blur`` swaps pixels in a sequential Python loop upstream; we let every pixel read a
      random neighbour (symmetric, stochastically rounded uniform offsets of up to ``shift s``), all
      pixels in parallel.
    - ``fog`` / ``frost`` fractals are diamond-square on a torus of square cells of side
      ``2 ** round(log2(256 s))`` covering the image (upstream: one 256 x 256 square cropped to 224).
    - ``shot_noise``, ``gaussian_noise``, ``speckle_noise`` and ``impulse_noise`` follow upstream
      exactly (up to the random streams).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CORRUPTIONS",
    "CORRUPTION_GROUPS",
    "CORRUPTION_SET_VERSION",
    "REFERENCE_HEIGHT",
    "Corruption",
    "CorruptedViews",
    "corrupt",
    "corruption_set_hash",
    "get_corruption",
    "relative_corruption_error",
    "sample_generator",
    "summarise_corruptions",
]

#: Names this set in result records; bump it whenever an implementation changes the pixels.
CORRUPTION_SET_VERSION = "cvbench-c-1"
#: Image height the ImageNet-C lengths refer to (see the module Convention, "Size").
REFERENCE_HEIGHT = 224
GROUPS = ("noise", "blur", "weather", "digital")
SEVERITIES = (1, 2, 3, 4, 5)

_BITS = 16
_ONE = float(1 << _BITS)  # filter taps are integers summing to _ONE (multiples of 2**-16 summing to 1)
_EPS_RANGE = 0.5 / 255  # float inputs may exceed [0, 1] by half an 8-bit level (rendering round-off)

# Constants of the implementations that are not per-severity parameters (hashed with the tables).
_CONSTANTS: dict[str, Any] = {
    "stream": "sha256(json{seed, corruption, severity, sample_id}) -> SeedSequence -> PCG64",
    "tap_bits": _BITS,
    "reference_height": REFERENCE_HEIGHT,
    "fractal_cell_at_224": 256,
    "gaussian_truncate": 4.0,
    "alias_truncate": 3.0,
    "water_rgb": (175, 238, 238),
    "mud_rgb": (63, 42, 20),
    "water_distance_cap_at_224": 20,
    "emboss": ((-2, -1, 0), (-1, 1, 1), (0, 1, 2)),
    "snow_gray": (0.299, 0.587, 0.114),
    "frost_tint": (0.83, 0.91, 1.0),
    "frost_mix": {
        "base": 0.25,
        "density": 0.35,
        "density_decay": 1.6,
        "vein_decay": 2.0,
        "power": 12,
        "vein_gain": (0.6, 0.8),
        "octaves": ((1.0, 0.5), (0.5, 0.35), (0.25, 0.25)),
    },
    "jpeg": "Pillow, subsampling 4:2:0, optimize False",
}

_GeneratorArg = np.random.Generator | Sequence[np.random.Generator] | None


# --------------------------------------------------------------------------------------- primitives
def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _taps(weights: Sequence[float]) -> list[int]:
    """Integer taps proportional to ``weights`` summing exactly to 2**16 (the rounding residue goes to
    the largest tap)."""
    total = math.fsum(weights)
    ints = [_round_half_up(w / total * _ONE) for w in weights]
    big = max(range(len(ints)), key=lambda i: ints[i])
    ints[big] += int(_ONE) - sum(ints)
    return ints


def _gauss_taps(sigma: float, truncate: float | None = None) -> list[int]:
    """Symmetric Gaussian taps of radius ``max(1, floor(truncate sigma + 0.5))`` (skimage's rule)."""
    truncate = _CONSTANTS["gaussian_truncate"] if truncate is None else truncate
    radius = max(1, _round_half_up(truncate * sigma))
    if sigma <= 0:
        return [0] * radius + [int(_ONE)] + [0] * radius
    return _taps([math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)])


def _pad_index(n: int, r: int, mode: str, device: torch.device) -> Tensor:
    """Source indices of ``r`` padded positions on both sides of an axis of length ``n``:
    ``edge`` replicates, ``reflect`` is reflect-101 (OpenCV's default, ``... 2 1 | 0 1 2 ...``)."""
    i = np.arange(-r, n + r)
    if mode == "edge" or n == 1:
        i = np.clip(i, 0, n - 1)
    else:
        period = 2 * (n - 1)
        i = np.abs(i) % period
        i = np.where(i >= n, period - i, i)
    return torch.from_numpy(i).to(device)


def _correlate1d(x: Tensor, taps: Sequence[int], dim: int, mode: str) -> Tensor:
    """``y[i] = sum_k taps[k] x[i + k - r]`` along ``dim`` (-1 or -2), integer taps, no normalisation
    (the result is ``2**16`` times the filtered signal). Every caller passes integer-valued ``x``; while
    ``max|x| * 2**16 < 2**53`` every product and partial sum is an exact integer, so fused multiply-adds
    give the same bits on every machine; above that, products and sums are rounded one by one in a
    fixed order (also machine-independent, one more pass per tap)."""
    r = len(taps) // 2
    n = x.shape[dim]
    padded = x.index_select(dim, _pad_index(n, r, mode, x.device))
    exact = float(x.abs().amax()) * _ONE < 2.0**53
    out: Tensor | None = None
    for k, t in enumerate(taps):
        if t == 0:
            continue
        if out is None:
            out = padded.narrow(dim, k, n) * float(t)
        elif exact:
            out.add_(padded.narrow(dim, k, n), alpha=float(t))
        else:
            out.add_(padded.narrow(dim, k, n) * float(t))
    assert out is not None  # taps sum to 2**16
    return out


def _blur(x: Tensor, sigma: float, mode: str = "edge", truncate: float | None = None) -> Tensor:
    """Separable Gaussian blur of (..., H, W); exact for integer-valued ``x`` below 2**21."""
    taps = _gauss_taps(sigma, truncate)
    y = _correlate1d(_correlate1d(x, taps, -1, mode), taps, -2, mode)
    return y / (_ONE * _ONE)


def _filter2d(x: Tensor, kernel: Sequence[Sequence[float]], mode: str = "reflect") -> Tensor:
    """Small 2-D correlation (OpenCV ``filter2D``) of (..., H, W), taps summed in raster order."""
    kh, kw = len(kernel), len(kernel[0])
    rh, rw = kh // 2, kw // 2
    h, w = x.shape[-2:]
    p = x.index_select(-2, _pad_index(h, rh, mode, x.device)).index_select(
        -1, _pad_index(w, rw, mode, x.device)
    )
    out: Tensor | None = None
    for i in range(kh):
        for j in range(kw):
            if kernel[i][j] == 0:
                continue
            term = p[..., i : i + h, j : j + w] * float(kernel[i][j])
            out = term if out is None else out + term
    assert out is not None
    return out


def _gather_shifted(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """``out[b, c, y, x] = x[b, c, clamp(y + dy), clamp(x + dx)]`` with per-image (B,) or per-pixel
    (B, H, W) integer shifts, edges replicated."""
    b, c, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    if dy.ndim == 1:
        dy, dx = dy.view(b, 1, 1), dx.view(b, 1, 1)
    rows = (ys + dy).clamp_(0, h - 1)
    cols = (xs + dx).clamp_(0, w - 1)
    index = (rows * w + cols).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(x.reshape(b, c, h * w), 2, index).view(b, c, h, w)


def _motion(x: Tensor, radius: int, sigma: float, angles_deg: Sequence[float]) -> Tensor:
    """ImageMagick-style motion blur of integer-valued (B, C, H, W) with one angle per image.

    Kernel: ``2 radius + 1`` one-sided taps ``k_i ~ exp(-i^2 / (2 sigma^2))``, ``i = 0 .. 2 radius``,
    tap ``i`` displaced by ``i`` pixels along the angle: ``out(y, x) = sum_i k_i in(y + [i sin a],
    x + [i cos a])`` (``[.]`` rounds half up; a in degrees from +x (columns) towards +y (rows, pointing
    down); edges replicated). The shifts differ per image, so each image is summed from slices of one
    edge-padded copy (integer products and sums: exact). Returns the blurred levels (not rounded).
    """
    taps = _taps(
        [math.exp(-0.5 * (i / sigma) ** 2) if sigma > 0 else float(i == 0) for i in range(2 * radius + 1)]
    )
    _, _, h, w = x.shape
    pad = 2 * radius
    padded = x.index_select(-2, _pad_index(h, pad, "edge", x.device))
    padded = padded.index_select(-1, _pad_index(w, pad, "edge", x.device))
    out = torch.zeros_like(x)
    for b, angle in enumerate(angles_deg):
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        for i, t in enumerate(taps):
            if t == 0:
                continue
            dy, dx = _round_half_up(i * sin), _round_half_up(i * cos)
            out[b].add_(padded[b, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w], alpha=float(t))
    return out / _ONE


def _bilinear_axis(x: Tensor, src: Tensor, dim: int) -> Tensor:
    """Linear interpolation of ``x`` along ``dim`` at float64 source coordinates ``src`` (clamped)."""
    n = x.shape[dim]
    src = src.clamp(0, n - 1)
    i0 = torch.floor(src)
    frac = src - i0
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=n - 1)
    a, b = x.index_select(dim, i0), x.index_select(dim, i1)
    shape = [1] * x.ndim
    shape[dim] = -1
    return a + (b - a) * frac.view(shape)


def _zoom_centre(x: Tensor, factor: float) -> Tensor:
    """Zoom (..., H, W) by ``factor`` about the image centre, bilinear, same size ("clipped zoom")."""
    h, w = x.shape[-2:]
    ys = torch.arange(h, dtype=torch.float64, device=x.device)
    xs = torch.arange(w, dtype=torch.float64, device=x.device)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y = _bilinear_axis(x, (ys - cy) / factor + cy, -2)
    return _bilinear_axis(y, (xs - cx) / factor + cx, -1)


def _per_image(
    rngs: Sequence[np.random.Generator], draw: Callable[[np.random.Generator], Any], device: torch.device
) -> Tensor:
    """Stack one float64 array per image, each drawn from that image's own generator."""
    return torch.from_numpy(np.stack([np.asarray(draw(g), dtype=np.float64) for g in rngs])).to(device)


def _plasma(
    rngs: Sequence[np.random.Generator], h: int, w: int, scale: float, decay: float, device: torch.device
) -> Tensor:
    """Diamond-square fractal per image, (B, 1, h, w) float64 in [0, 1].

    A torus of ``R x C`` square cells of side ``T = 2 ** round(log2(256 s))`` (T >= 2), with
    ``R = ceil(h / T)``, ``C = ceil(w / T)``, all cell corners 0. Each level halves the step: centres
    get the mean of their 4 corners, edge midpoints the mean of their 4 neighbours, each plus
    ``wibble**2 * U(-1, 1)``; ``wibble`` starts at 100 and is divided by ``decay`` per level (as
    ImageNet-C's ``plasma_fractal``). The map is min-max normalised, then its top-left (h, w) is kept.
    When ``C T == w`` the field wraps seamlessly across a panorama's 360 degree seam.
    """
    cell = 2 ** max(1, _round_half_up(math.log2(_CONSTANTS["fractal_cell_at_224"] * scale)))
    rows, cols = math.ceil(h / cell), math.ceil(w / cell)
    sizes, step = [], cell
    while step >= 2:
        sizes.append((rows * cell // step) * (cols * cell // step))
        step //= 2
    total = 3 * sum(sizes)
    noise = np.stack([g.uniform(-1.0, 1.0, size=total) for g in rngs])
    b = len(rngs)
    grid = np.zeros((b, rows * cell, cols * cell))
    step, wibble, offset = cell, 100.0, 0
    for n in sizes:
        half = step // 2
        nr, nc = rows * cell // step, cols * cell // step
        amp = wibble * wibble
        jitter = [amp * noise[:, offset + k * n : offset + (k + 1) * n].reshape(b, nr, nc) for k in range(3)]
        corners = grid[:, ::step, ::step]
        four = corners + np.roll(corners, -1, axis=1)
        four = four + np.roll(four, -1, axis=2)
        centres = four / 4 + jitter[0]
        grid[:, half::step, half::step] = centres
        horizontal = (corners + np.roll(corners, -1, axis=2)) + (centres + np.roll(centres, 1, axis=1))
        grid[:, ::step, half::step] = horizontal / 4 + jitter[1]
        vertical = (corners + np.roll(corners, -1, axis=1)) + (centres + np.roll(centres, 1, axis=2))
        grid[:, half::step, ::step] = vertical / 4 + jitter[2]
        offset += 3 * n
        step = half
        wibble /= decay
    lo = grid.min(axis=(1, 2), keepdims=True)
    hi = grid.max(axis=(1, 2), keepdims=True)
    grid = (grid - lo) / np.maximum(hi - lo, np.finfo(np.float64).tiny)
    return torch.from_numpy(np.ascontiguousarray(grid[:, None, :h, :w])).to(device)


def _ipow(x: Tensor, n: int) -> Tensor:
    """``x ** n`` for an int ``n >= 1`` by binary powering in a fixed order of products (``torch.pow``
    may go through libm ``pow``, whose last bit differs between machines)."""
    result: Tensor | None = None
    base = x
    while True:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if not n:
            break
        base = base * base
    assert result is not None
    return result


def _gray(x: Tensor) -> Tensor:
    """OpenCV's RGB2GRAY of (B, 3, H, W): ``0.299 R + 0.587 G + 0.114 B`` -> (B, 1, H, W)."""
    wr, wg, wb = _CONSTANTS["snow_gray"]
    return (x[:, 0:1] * wr + x[:, 1:2] * wg) + x[:, 2:3] * wb


# ---------------------------------------------------------------------------------- corruptions
# Every implementation takes levels ``v`` (B, 3, H, W) float64 with integer values in [0, 255], the
# severity's parameter row, one generator per image and the size scale s = H / 224, and returns
# float64 levels (clamped and rounded by the caller).
def _gaussian_noise(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """``x + N(0, sigma)`` per value (ImageNet-C ``gaussian_noise``)."""
    (sigma,) = p
    n = _per_image(rngs, lambda g: g.standard_normal(v.shape[1:]), v.device)
    return v + n * (255.0 * sigma)


def _shot_noise(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """``Poisson(c x) / c`` per value (ImageNet-C ``shot_noise``)."""
    (c,) = p
    lam = (v * (c / 255.0)).cpu().numpy()
    k = torch.from_numpy(np.stack([g.poisson(lam[i]).astype(np.float64) for i, g in enumerate(rngs)]))
    return k.to(v.device) * (255.0 / c)


def _impulse_noise(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Salt and pepper (skimage ``random_noise(mode="s&p")``, ImageNet-C ``impulse_noise``): each value
    is replaced with probability ``amount``, by 1 or 0 with equal odds (channels independently)."""
    (amount,) = p
    u = _per_image(rngs, lambda g: g.random((2, *v.shape[1:])), v.device)
    flipped, salt = u[:, 0] < amount, u[:, 1] < 0.5
    return torch.where(flipped, (salt * 255.0).to(v.dtype), v)


def _speckle_noise(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """``x + x N(0, sigma)`` per value (ImageNet-C ``speckle_noise``)."""
    (sigma,) = p
    n = _per_image(rngs, lambda g: g.standard_normal(v.shape[1:]), v.device)
    return v + v * (n * sigma)


def _defocus_blur(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Disk blur (ImageNet-C ``defocus_blur``): the mean over the pixels with ``dx^2 + dy^2 <= r^2``,
    ``r = radius s``, then a Gaussian of ``alias`` pixels (unscaled: it anti-aliases the disk's edge at
    pixel level, upstream's ``GaussianBlur`` of the kernel); reflect-101 borders. The disk sums are
    exact integer box sums along rows (cumulative sums), so the result is bit-reproducible."""
    radius, alias = p
    r = radius * s
    big = math.floor(r)
    half = [math.floor(math.sqrt(max(r * r - dy * dy, 0.0))) for dy in range(-big, big + 1)]
    h, w = v.shape[-2:]
    padded = v.index_select(-2, _pad_index(h, big, "reflect", v.device))
    padded = padded.index_select(-1, _pad_index(w, big, "reflect", v.device))
    cum = F.pad(torch.cumsum(padded, dim=-1), (1, 0))  # cum[..., j] = sum of the first j columns
    total = torch.zeros_like(v)
    for k, a in enumerate(half):  # integer sums: exact in any order
        rows = cum[..., k : k + h, :]
        total.add_(rows[..., big + a + 1 : big + a + 1 + w]).sub_(rows[..., big - a : big - a + w])
    count = float(sum(2 * a + 1 for a in half))
    blurred = _blur(total, alias, mode="reflect", truncate=_CONSTANTS["alias_truncate"])
    return blurred / count


def _glass_blur(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Glass blur (ImageNet-C ``glass_blur``): Gaussian blur, 8-bit rounding, ``iterations`` rounds of
    local pixel scrambling, Gaussian blur again. Upstream swaps each pixel with a random neighbour
    (integer offsets in ``[-shift, shift)``) in a sequential Python loop; here every pixel reads the
    pixel at a random integer offset, all pixels in parallel (edges replicated): per axis
    ``floor(U(-d, d) + U(0, 1))`` with ``d = shift s``, the stochastic rounding of a uniform
    displacement (offsets -1, 0, 1 with probabilities 1/4, 1/2, 1/4 for ``d = 1``). It is symmetric
    (upstream's one-sided range would shift the whole image under a gather) and weakens continuously
    at smaller sizes instead of jumping between integers. ``sigma`` scales with ``s``."""
    sigma, shift, iterations = p
    sig, d, n = sigma * s, shift * s, int(iterations)
    x = torch.round(_blur(v, sig))
    _, _, h, w = v.shape

    def draw(g: np.random.Generator) -> np.ndarray:
        return np.floor(g.uniform(-d, d, size=(n, 2, h, w)) + g.random(size=(n, 2, h, w)))

    offsets = _per_image(rngs, draw, v.device).long()
    for it in range(n):
        x = _gather_shifted(x, offsets[:, it, 0], offsets[:, it, 1])
    return _blur(x, sig)


def _motion_blur(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Motion blur (ImageNet-C ``motion_blur``, ImageMagick ``MotionBlurImage(radius, sigma, angle)``):
    see :func:`_motion` for the kernel; angle ~ U(-45, 45) degrees per image, radius and sigma scaled
    by ``s`` (radius >= 1)."""
    radius, sigma = p
    angles = [float(g.uniform(-45.0, 45.0)) for g in rngs]
    return _motion(v, max(1, _round_half_up(radius * s)), sigma * s, angles)


def _lerp_taps(n: int, factor: float, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Linear interpolation along an axis of length ``n`` zoomed by ``factor`` about its centre: source
    rows ``i0``, ``i1 = i0 + 1`` (clamped) and integer weights ``(2**16 - f, f)`` with ``f`` the
    fractional position rounded to a multiple of 2**-16 (so the interpolation is exact integer
    arithmetic)."""
    centre = (n - 1) / 2
    src = ((torch.arange(n, dtype=torch.float64, device=device) - centre) / factor + centre).clamp(0, n - 1)
    i0 = torch.floor(src)
    f = torch.round((src - i0) * _ONE)
    i0 = i0.long()
    return i0, (i0 + 1).clamp(max=n - 1), _ONE - f, f


def _zoom_blur(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Zoom blur (ImageNet-C ``zoom_blur``): the mean of the image and its zooms about the centre by
    ``1 + k step``, ``k = 0 .. n - 1`` (numpy's ``arange(1, stop, step)`` of upstream), each bilinear
    (rows, then columns) with weights on a 2**-16 grid, so every sum is exact. Zoom factors are
    relative, so nothing scales with the size. The sum is kept transposed (W before H) so both
    interpolations select whole rows."""
    step, n = p
    h, w = v.shape[-2:]
    acc = (v * (_ONE * _ONE)).transpose(-1, -2).contiguous()
    for k in range(int(n)):
        z = 1.0 + k * step
        r0, r1, ra, rb = _lerp_taps(h, z, v.device)
        rows = v.index_select(-2, r0) * ra.view(h, 1)
        rows.addcmul_(v.index_select(-2, r1), rb.view(h, 1))
        rows = rows.transpose(-1, -2).contiguous()
        c0, c1, ca, cb = _lerp_taps(w, z, v.device)
        acc.addcmul_(rows.index_select(-2, c0), ca.view(w, 1))
        acc.addcmul_(rows.index_select(-2, c1), cb.view(w, 1))
    return acc.transpose(-1, -2) / (_ONE * _ONE * (int(n) + 1))


def _snow(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Snow (ImageNet-C ``snow``): a N(loc, scale) layer, zoomed about the centre by ``zoom s`` (>= 1,
    flake size), values below ``threshold`` set to 0, clipped and stored as 8 bits, motion-blurred
    (:func:`_motion`, radius and sigma scaled by ``s``, angle ~ U(-135, -45) per image) and rounded to
    8 bits (upstream: an ImageMagick round trip); the image is whitened towards
    ``max(x, 1.5 gray + 0.5)`` with weight ``1 - blend`` and the layer is added twice (as is and
    rotated by 180 degrees)."""
    loc, scale, zoom, threshold, radius, sigma, blend = p
    h, w = v.shape[-2:]
    layer = _per_image(rngs, lambda g: g.normal(loc, scale, size=(1, h, w)), v.device)
    angles = [float(g.uniform(-135.0, -45.0)) for g in rngs]
    layer = _zoom_centre(layer, max(1.0, zoom * s))
    layer = torch.where(layer < threshold, 0.0, layer)
    layer = torch.floor(layer.clamp(0.0, 1.0) * 255.0)
    layer = torch.round(_motion(layer, max(1, _round_half_up(radius * s)), sigma * s, angles)) / 255.0
    x = v / 255.0
    x = x * blend + torch.maximum(x, _gray(x) * 1.5 + 0.5) * (1.0 - blend)
    x = (x + layer) + torch.flip(layer, dims=(-2, -1))
    return x * 255.0


def _frost_layer(
    rngs: Sequence[np.random.Generator], h: int, w: int, s: float, device: torch.device
) -> Tensor:
    """Procedural frost (B, 3, h, w) in [0, 1], our substitute for ImageNet-C's frost photographs:
    ``tint * clip(base + a D + (c + e D) sum_k w_k R_k^p, 0, 1)``. D is a fractal (decay 1.6) giving
    patchy coverage; ``R_k = 1 - |2 F_k - 1|`` are the ridges of smooth fractals F_k (decay 2.0) at
    three cell sizes (1, 1/2, 1/4 of the fog cell), sharpened by the power p: a branching network of
    thin bright veins, like ice crystals on a window, over a milky haze. Draw order per image: D, F_1,
    F_2, F_3."""
    mix = _CONSTANTS["frost_mix"]
    density = _plasma(rngs, h, w, s, mix["density_decay"], device)
    veins: Tensor | None = None
    for cell, weight in mix["octaves"]:
        ridge = 1.0 - torch.abs(_plasma(rngs, h, w, s * cell, mix["vein_decay"], device) * 2.0 - 1.0)
        sharp = _ipow(ridge, int(mix["power"]))
        veins = sharp * weight if veins is None else veins + sharp * weight
    assert veins is not None
    frost = (density * mix["density"] + mix["base"]) + veins * (
        density * mix["vein_gain"][1] + mix["vein_gain"][0]
    )
    tint = torch.tensor(_CONSTANTS["frost_tint"], dtype=torch.float64, device=device).view(1, 3, 1, 1)
    return frost.clamp(0.0, 1.0) * tint


def _frost(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Frost (ImageNet-C ``frost``): ``image_weight x + frost_weight F``. Upstream F is a random crop of
    one of six photographs of frost; we cannot ship them, so F is the procedural layer of
    :func:`_frost_layer` (our substitute, not a reproduction); the blend weights are upstream's."""
    image_w, frost_w = p
    _, _, h, w = v.shape
    layer = _frost_layer(rngs, h, w, s, v.device)
    return (v / 255.0 * image_w + layer * frost_w) * 255.0


def _fog(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Fog (ImageNet-C ``fog``): ``(x + c F) max(x) / (max(x) + c)`` with F the diamond-square fractal of
    :func:`_plasma` (``decay`` upstream's ``wibbledecay``) and max(x) over the whole image."""
    strength, decay = p
    _, _, h, w = v.shape
    x = v / 255.0
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    x = x + _plasma(rngs, h, w, s, decay, v.device) * strength
    return x * top / (top + strength) * 255.0


def _brightness(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Brightness (ImageNet-C ``brightness``): HSV value ``V -> min(V + c, 1)`` with hue and saturation
    kept. With H and S fixed every channel is proportional to V, so this is ``x V' / V`` (grey ``V'`` where
    V = 0), the same as the HSV round trip without its rounding."""
    (c,) = p
    x = v / 255.0
    value = x.amax(dim=1, keepdim=True)
    new = (value + c).clamp(max=1.0)
    ratio = new / torch.where(value > 0, value, 1.0)
    return torch.where(value > 0, x * ratio, new) * 255.0


def _spatter(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Spatter (ImageNet-C ``spatter``). Liquid layer: N(loc, scale) per pixel (stored as multiples of
    2**-16), Gaussian blur of ``sigma s`` pixels, deviations from ``loc`` rescaled by
    ``sum(k_224^2) / sum(k_s^2)`` (the ratio of the blurred noise's standard deviations at 224 pixels
    and at this size, so drops cover the same share of the image at any size), values below
    ``threshold`` set to 0.

    Water (mode 0, severities 1-3): inside the drops, the chessboard distance to the drop boundary
    (repeated 3 x 3 erosions), capped at ``20 s`` pixels and divided by the cap, is embossed with
    upstream's kernel ``[[-2,-1,0],[-1,1,1],[0,1,2]]`` (clipped to [0, 1]) and box-blurred 3 x 3; times
    the liquid layer, normalised to a maximum of ``intensity`` per image, it adds pale turquoise
    (175, 238, 238). Upstream takes the distance to Canny edges, histogram-equalises it and embosses it
    in 8 bits (OpenCV); ours is that recipe without OpenCV. Mud (mode 1, severities 4-5) is upstream's:
    the drop mask Gaussian-blurred by ``sigma_mud s``, values below 0.8 dropped, and the image replaced
    by mud brown (63, 42, 20) in proportion.
    """
    loc, scale, sigma, threshold, fourth, mode = p
    h, w = v.shape[-2:]
    noise = _per_image(rngs, lambda g: np.round(g.normal(loc, scale, size=(1, h, w)) * _ONE), v.device)
    sig = sigma * s
    liquid = _blur(noise, sig) / _ONE
    ref, own = _gauss_taps(sigma), _gauss_taps(sig)
    gain = math.fsum(t * t for t in ref) / math.fsum(t * t for t in own)
    liquid = (liquid - loc) * gain + loc
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    x = v / 255.0
    if int(mode) == 0:
        cap = max(1, _round_half_up(_CONSTANTS["water_distance_cap_at_224"] * s))
        mask = (liquid > 0).to(torch.float64)
        depth = torch.zeros_like(mask)
        inner = mask
        for _ in range(cap):
            depth = depth + inner
            inner = -F.max_pool2d(-inner, 3, stride=1, padding=1)
        relief = _filter2d(depth / cap, _CONSTANTS["emboss"]).clamp(0.0, 1.0)
        relief = _filter2d(relief, [[1, 1, 1]] * 3) / 9.0
        m = liquid * relief
        top = m.amax(dim=(1, 2, 3), keepdim=True)
        m = torch.where(top > 0, m / torch.where(top > 0, top, 1.0), 0.0) * fourth
        colour = (
            torch.tensor(_CONSTANTS["water_rgb"], dtype=torch.float64, device=v.device).view(1, 3, 1, 1)
            / 255.0
        )
        x = x + m * colour
    else:
        mask = (liquid > threshold).to(torch.float64)
        m = _blur(mask, fourth * s)
        m = torch.where(m < 0.8, 0.0, m)
        colour = (
            torch.tensor(_CONSTANTS["mud_rgb"], dtype=torch.float64, device=v.device).view(1, 3, 1, 1) / 255.0
        )
        x = x * (1.0 - m) + colour * m
    return x * 255.0


def _contrast(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Contrast (ImageNet-C ``contrast``): ``(x - mean) c + mean`` with the per-image, per-channel mean
    (an exact integer sum divided once)."""
    (c,) = p
    _, _, h, w = v.shape
    mean = v.sum(dim=(2, 3), keepdim=True) / float(h * w)
    return (v - mean) * c + mean


def _pixelate(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """Pixelate (ImageNet-C ``pixelate``): PIL BOX resize to ``(int(H c), int(W c))`` and BOX back.
    PIL's BOX gives each output pixel the plain mean of the source pixels whose centres fall in its
    box, and upscaling with BOX is nearest; together: source pixel ``i`` belongs to cell
    ``floor((2 i + 1) n / (2 N))`` and every pixel becomes its cell's mean (integer sums, one division;
    upstream also rounds to 8 bits between the horizontal and vertical passes)."""
    (c,) = p
    b, ch, h, w = v.shape
    frac = Fraction(str(c))
    sh, sw = max(1, int(h * frac)), max(1, int(w * frac))
    rows = torch.div((2 * torch.arange(h, device=v.device) + 1) * sh, 2 * h, rounding_mode="floor")
    cols = torch.div((2 * torch.arange(w, device=v.device) + 1) * sw, 2 * w, rounding_mode="floor")
    sums = torch.zeros(b, ch, sh, w, dtype=v.dtype, device=v.device).index_add_(2, rows, v)
    sums = torch.zeros(b, ch, sh, sw, dtype=v.dtype, device=v.device).index_add_(3, cols, sums)
    count_r = torch.bincount(rows, minlength=sh).to(v.dtype)
    count_c = torch.bincount(cols, minlength=sw).to(v.dtype)
    means = sums / (count_r.view(sh, 1) * count_c.view(1, sw))
    return means.index_select(2, rows).index_select(3, cols)


def _jpeg_compression(v: Tensor, p: tuple, rngs: Sequence[np.random.Generator], s: float) -> Tensor:
    """JPEG round trip with Pillow (libjpeg) at ``quality``, 4:2:0 chroma subsampling (Pillow's
    default, as upstream), one image at a time. Bit-reproducible for a given libjpeg (its integer DCT);
    the golden-hash test watches for a libjpeg that decodes differently. Nothing scales with the size
    (the 8 x 8 blocks are pixels)."""
    (quality,) = p
    arrays = v.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for arr in arrays:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(arr)).save(
            buf, format="JPEG", quality=int(quality), subsampling=2, optimize=False
        )
        buf.seek(0)
        with Image.open(buf) as img:
            out.append(np.asarray(img.convert("RGB"), dtype=np.float64))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(v.device)


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Corruption:
    """One corruption of the set: its group, parameter table and implementation.

    Calling it, ``corruption(images, severity, generator)``, corrupts (B, 3, H, W) images (float in
    [0, 1] or uint8) at ``severity`` (1..5) and returns (B, 3, H, W) of the input dtype on its device,
    quantised to 8-bit levels (see the module Convention). ``generator``: one
    ``numpy.random.Generator`` per image (what :func:`corrupt` passes), or a single one from which
    per-image generators are derived in batch order, or None for a corruption without randomness.

    Attributes:
        name: registry key (ImageNet-C's function name).
        group: "noise" | "blur" | "weather" | "digital" (CVUSA-C's grouping).
        fields: names of the parameters in each row of ``params``.
        params: one parameter row per severity 1..5.
        random: whether it draws random numbers.
        source: where the parameters come from.
        impl: ``(levels (B,3,H,W) float64, row, generators, s) -> levels`` (unrounded).
    """

    name: str
    group: str
    fields: tuple[str, ...]
    params: tuple[tuple[float, ...], ...]
    random: bool
    source: str
    impl: Callable[[Tensor, tuple, Sequence[np.random.Generator], float], Tensor]

    def __call__(self, images: Tensor, severity: int, generator: _GeneratorArg = None) -> Tensor:
        _check_severity(severity)
        levels, out_dtype, device = _to_levels(images)
        rngs = _generators(generator, levels.shape[0], self)
        scale = levels.shape[-2] / REFERENCE_HEIGHT
        out = self.impl(levels, self.params[severity - 1], rngs, scale)
        return _from_levels(out, out_dtype, device)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (what :func:`corruption_set_hash` hashes)."""
        return {
            "name": self.name,
            "group": self.group,
            "fields": list(self.fields),
            "params": [list(row) for row in self.params],
            "random": self.random,
        }


def _spec(
    name: str,
    group: str,
    fields: tuple[str, ...],
    rows: Sequence[Any],
    impl: Callable,
    *,
    random: bool,
    source: str = "ImageNet-C (hendrycks/robustness, imagenet_c/corruptions.py)",
) -> Corruption:
    params = tuple(tuple(float(x) for x in (row if isinstance(row, tuple) else (row,))) for row in rows)
    return Corruption(name, group, fields, params, random, source, impl)


_IMAGEMAGICK = "ImageNet-C; ImageMagick MotionBlurImage kernel reimplemented"
_PROCEDURAL = "ImageNet-C blend weights; procedural frost layer (photographs not shipped)"

#: The 16 corruptions in CVUSA-C's order (noise, blur, weather, digital); name -> callable spec.
CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        _spec(
            "gaussian_noise",
            "noise",
            ("sigma",),
            (0.08, 0.12, 0.18, 0.26, 0.38),
            _gaussian_noise,
            random=True,
        ),
        _spec("shot_noise", "noise", ("photons",), (60, 25, 12, 5, 3), _shot_noise, random=True),
        _spec(
            "impulse_noise", "noise", ("amount",), (0.03, 0.06, 0.09, 0.17, 0.27), _impulse_noise, random=True
        ),
        _spec(
            "speckle_noise", "noise", ("sigma",), (0.15, 0.2, 0.35, 0.45, 0.6), _speckle_noise, random=True
        ),
        _spec(
            "defocus_blur",
            "blur",
            ("radius", "alias_sigma"),
            ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
            _defocus_blur,
            random=False,
        ),
        _spec(
            "glass_blur",
            "blur",
            ("sigma", "max_shift", "iterations"),
            ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
            _glass_blur,
            random=True,
        ),
        _spec(
            "motion_blur",
            "blur",
            ("radius", "sigma"),
            ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
            _motion_blur,
            random=True,
            source=_IMAGEMAGICK,
        ),
        _spec(
            "zoom_blur",
            "blur",
            ("step", "zooms"),
            ((0.01, 12), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11)),
            _zoom_blur,
            random=False,
        ),
        _spec(
            "snow",
            "weather",
            ("loc", "scale", "zoom", "threshold", "radius", "sigma", "blend"),
            (
                (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
            ),
            _snow,
            random=True,
            source=_IMAGEMAGICK,
        ),
        _spec(
            "frost",
            "weather",
            ("image_weight", "frost_weight"),
            ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
            _frost,
            random=True,
            source=_PROCEDURAL,
        ),
        _spec(
            "fog",
            "weather",
            ("strength", "decay"),
            ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
            _fog,
            random=True,
        ),
        _spec("brightness", "weather", ("delta_v",), (0.1, 0.2, 0.3, 0.4, 0.5), _brightness, random=False),
        _spec(
            "spatter",
            "weather",
            ("loc", "scale", "sigma", "threshold", "intensity_or_mud_sigma", "mode"),
            (
                (0.65, 0.3, 4, 0.69, 0.6, 0),
                (0.65, 0.3, 3, 0.68, 0.6, 0),
                (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1),
                (0.67, 0.4, 1, 0.65, 1.5, 1),
            ),
            _spatter,
            random=True,
        ),
        _spec("contrast", "digital", ("factor",), (0.4, 0.3, 0.2, 0.1, 0.05), _contrast, random=False),
        _spec("pixelate", "digital", ("factor",), (0.6, 0.5, 0.4, 0.3, 0.25), _pixelate, random=False),
        _spec(
            "jpeg_compression", "digital", ("quality",), (25, 18, 15, 10, 7), _jpeg_compression, random=False
        ),
    )
}

#: group -> corruption names, in registry order.
CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    g: tuple(n for n, c in CORRUPTIONS.items() if c.group == g) for g in GROUPS
}


def get_corruption(name: str) -> Corruption:
    """The registered corruption ``name``; ``ValueError`` listing the names when unknown."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; available: {list(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def corruption_set_hash() -> str:
    """SHA-256 (hex) of the set: version, names, groups, severities, parameter tables and constants.

    A result record stores it beside :data:`CORRUPTION_SET_VERSION`, so it names exactly which set ran;
    it changes when any parameter changes.

    Example:
        >>> len(corruption_set_hash())
        64
    """
    payload = {
        "version": CORRUPTION_SET_VERSION,
        "severities": list(SEVERITIES),
        "corruptions": [c.describe() for c in CORRUPTIONS.values()],
        "constants": _CONSTANTS,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ entry points
def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise TypeError(f"severity must be an int in 1..5, got {type(severity).__name__}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be in 1..5, got {severity}")


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return int(seed)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] < 2 or images.shape[3] < 2:
        raise ValueError(f"images must be non-empty with H, W >= 2, got {tuple(images.shape)}")


def _to_levels(images: Tensor) -> tuple[Tensor, torch.dtype, torch.device]:
    _check_images(images)
    device = images.device
    work = device if device.type in ("cpu", "cuda") else torch.device("cpu")  # float64 needed
    if images.dtype == torch.uint8:
        return images.to(work, torch.float64), images.dtype, device
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1] or uint8, got {images.dtype}")
    lo_t, hi_t = torch.aminmax(images)  # NaN propagates
    lo, hi = float(lo_t), float(hi_t)
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError("images contain NaN values")
    if not (lo >= -_EPS_RANGE and hi <= 1 + _EPS_RANGE):
        raise ValueError(f"images must be in [0, 1] (not normalised), got values in [{lo:.4g}, {hi:.4g}]")
    x = images.to(work, torch.float64) * 255.0  # out of place: .to() may return the caller's tensor
    return torch.round_(x).clamp_(0.0, 255.0), images.dtype, device


def _from_levels(levels: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    q = torch.round_(levels.clamp(0.0, 255.0))
    if dtype == torch.uint8:
        return q.to(device=device, dtype=torch.uint8)
    return q.to(device=device, dtype=dtype).div_(255)


def _generators(generator: _GeneratorArg, batch: int, spec: Corruption) -> list[np.random.Generator]:
    if generator is None:
        if spec.random:
            raise ValueError(f"corruption {spec.name!r} is random: pass one numpy Generator per image")
        return [np.random.Generator(np.random.PCG64(0))] * batch  # never drawn from
    if isinstance(generator, np.random.Generator):
        seeds = generator.integers(0, 2**63 - 1, size=batch)
        return [np.random.Generator(np.random.PCG64(int(x))) for x in seeds]
    rngs = list(generator)
    if len(rngs) != batch or not all(isinstance(g, np.random.Generator) for g in rngs):
        raise ValueError(
            f"generator must be one numpy Generator or {batch} of them (one per image), got {len(rngs)} items"
        )
    return rngs


def sample_generator(seed: int, name: str, severity: int, sample_id: str | int) -> np.random.Generator:
    """The random stream of one image: PCG64 seeded (through ``SeedSequence``) with the SHA-256 of the
    canonical JSON ``{"corruption", "sample_id", "seed", "severity"}`` (``sample_id`` as ``str``).

    Example:
        >>> float(sample_generator(0, "fog", 3, "a").random()) == float(sample_generator(0, "fog", 3, "a").random())
        True
    """
    payload = json.dumps(
        {
            "seed": _check_seed(seed),
            "corruption": str(name),
            "severity": int(severity),
            "sample_id": str(sample_id),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(b"geo_bench.protocols.corruptions\x00" + payload.encode("utf-8")).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int.from_bytes(digest, "big"))))


def corrupt(
    images: Tensor, name: str, severity: int, *, seed: int, sample_ids: Sequence[str | int]
) -> Tensor:
    """Corrupt a batch reproducibly: image ``i`` uses the stream ``(seed, name, severity, sample_ids[i])``.

    Args:
        images: (B, 3, H, W) float in [0, 1] or uint8, RGB.
        name: one of :data:`CORRUPTIONS`.
        severity: 1..5.
        seed: the protocol seed (an int recorded with the results).
        sample_ids: B sample ids (``str(id)`` is hashed, so ``1`` and ``"1"`` are the same id).

    Returns:
        (B, 3, H, W), same dtype and device as ``images``, on 8-bit levels. The same pixels on every
        run, machine and batch composition (see the module Convention).

    Example:
        >>> x = torch.full((2, 3, 16, 32), 0.5)
        >>> y = corrupt(x, "gaussian_noise", 3, seed=0, sample_ids=["a", "b"])
        >>> y.shape, torch.equal(y[1:], corrupt(x[1:], "gaussian_noise", 3, seed=0, sample_ids=["b"]))
        (torch.Size([2, 3, 16, 32]), True)
    """
    spec = get_corruption(name)
    _check_severity(severity)
    seed = _check_seed(seed)
    if isinstance(sample_ids, (str, bytes)):
        raise TypeError("sample_ids must be a sequence of ids, not one string")
    ids = list(sample_ids)
    _check_images(images)
    if len(ids) != images.shape[0]:
        raise ValueError(f"sample_ids has {len(ids)} ids for a batch of {images.shape[0]} images")
    rngs = [sample_generator(seed, name, severity, i) for i in ids] if spec.random else None
    return spec(images, severity, rngs)


class CorruptedViews(Dataset):
    """A cross-view dataset whose chosen views are corrupted on the fly (the robustness protocol).

    Wraps a dataset of sample dicts ``{"ground": (3, H, W), "aerial": (3, h, w), "id": str, ...}`` with
    views float in [0, 1] or uint8; returns a shallow copy of each sample with the views in ``views``
    replaced by their corruption (same dtype, on 8-bit levels) and everything else untouched, so an
    evaluation can reuse the clean aerial descriptors and re-embed only the corrupted queries.

    Convention: view ``v`` of sample ``id`` uses the stream
    ``sample_generator(seed, name, severity, f"{v}:{id}")``, i.e. it equals
    ``corrupt(x[None], name, severity, seed=seed, sample_ids=[f"{v}:{id}"])[0]``; :meth:`apply` does the
    same for a collated batch (views (B, 3, H, W), ``"id"`` a list of B ids).

    Args:
        dataset: the clean dataset (``__getitem__`` / ``__len__``).
        name: one of :data:`CORRUPTIONS`.
        severity: 1..5.
        seed: the protocol seed.
        views: keys of the views to corrupt, ``("ground",)`` for CVUSA-C (queries only).
    """

    def __init__(
        self, dataset: Any, name: str, severity: int, *, seed: int, views: Sequence[str] = ("ground",)
    ) -> None:
        get_corruption(name)
        _check_severity(severity)
        if isinstance(views, str) or not views or not all(isinstance(v, str) for v in views):
            raise ValueError(f"views must be a non-empty sequence of sample keys, got {views!r}")
        self.dataset = dataset
        self.name = name
        self.severity = int(severity)
        self.seed = _check_seed(seed)
        self.views = tuple(views)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        if not isinstance(sample, Mapping):
            raise TypeError(f"dataset samples must be dicts, got {type(sample).__name__}")
        out = dict(sample)
        sid = self._id(sample)
        for view in self.views:
            image = self._view(sample, view)
            if image.ndim != 3:
                raise ValueError(f"sample[{view!r}] must be (3, H, W), got {tuple(image.shape)}")
            out[view] = corrupt(
                image[None], self.name, self.severity, seed=self.seed, sample_ids=[f"{view}:{sid}"]
            )[0]
        return out

    def apply(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Corrupt the views of a collated batch (views (B, 3, H, W), ``"id"`` a sequence of B ids)."""
        out = dict(batch)
        ids = batch.get("id")
        if ids is None or isinstance(ids, str):
            raise KeyError("the batch needs an 'id' list (one sample id per image) to seed the corruption")
        for view in self.views:
            image = self._view(batch, view)
            out[view] = corrupt(
                image, self.name, self.severity, seed=self.seed, sample_ids=[f"{view}:{i}" for i in ids]
            )
        return out

    @staticmethod
    def _id(sample: Mapping[str, Any]) -> str:
        if "id" not in sample:
            raise KeyError("samples need an 'id' to seed the corruption reproducibly")
        return str(sample["id"])

    @staticmethod
    def _view(sample: Mapping[str, Any], view: str) -> Tensor:
        if view not in sample:
            raise KeyError(f"sample has no view {view!r}; keys: {sorted(sample)}")
        image = sample[view]
        if not isinstance(image, Tensor):
            raise TypeError(f"sample[{view!r}] must be a Tensor, got {type(image).__name__}")
        return image

    def __repr__(self) -> str:
        return (
            f"CorruptedViews({type(self.dataset).__name__}, {self.name!r}, severity={self.severity}, "
            f"seed={self.seed}, views={self.views})"
        )


# ----------------------------------------------------------------------------------- metrics
def _r1(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite R@1 >= 0, got {value}")
    return value


def _severity_values(values: float | Sequence[float] | Mapping[int, float], what: str) -> list[float]:
    if isinstance(values, Mapping):
        keyed = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in values.items()}
        for sev in keyed:
            _check_severity(sev)
        items = [keyed[k] for k in sorted(keyed)]
    elif isinstance(values, (int, float, np.integer, np.floating)):
        if isinstance(values, bool):  # not a number here, and not iterable
            raise TypeError(f"'{type(values).__name__}' object is not iterable")
        items = [values]
    else:
        items = list(values)
    if not items:
        raise ValueError(f"{what} has no values")
    return [_r1(v, what) for v in items]


def relative_corruption_error(
    clean_r1: float, corrupt_r1: float | Sequence[float] | Mapping[int, float]
) -> float:
    """Relative corruption error ``RCE = (R@1_clean - R@1_corrupt) / R@1_clean``.

    Convention: ``corrupt_r1`` is one R@1, or the R@1 of one corruption at several severities (a
    sequence, or a mapping severity -> R@1), which are averaged first; since the RCE is affine in the
    corrupted R@1 this equals the mean of the per-severity RCEs. The set's mRCE is the mean of the
    per-corruption RCEs (:func:`summarise_corruptions`). Both R@1 in the same unit (percent or
    fraction); the RCE is a fraction: 0 = no loss, 1 = everything lost, negative = the corruption
    helped. This is the relative drop of one model, not Hendrycks' AlexNet-normalised relative mCE.

    Raises:
        ValueError: ``clean_r1 == 0`` (the relative error is undefined), or a negative / non-finite R@1.

    Example:
        >>> relative_corruption_error(50.0, [50.0, 40.0, 30.0, 20.0, 10.0])
        0.4
    """
    clean = _r1(clean_r1, "clean_r1")
    if clean == 0:
        raise ValueError(
            "clean R@1 is 0: the relative corruption error (R@1_clean - R@1_corrupt) / R@1_clean "
            "is undefined; report the corrupted R@1 itself"
        )
    values = _severity_values(corrupt_r1, "corrupt_r1")
    mean = math.fsum(values) / len(values)
    return (clean - mean) / clean


def summarise_corruptions(
    clean_r1: float, results: Mapping[str, Sequence[float] | Mapping[int, float]]
) -> dict[str, Any]:
    """Per-corruption R@1 -> a table dict (registry order, then groups and overall means).

    Args:
        clean_r1: R@1 of the same model on the clean queries.
        results: corruption name -> R@1 per severity (a sequence for severities 1.., or a mapping
            severity -> R@1).

    Returns:
        ``{"clean_R@1", "corruptions": {name: {"group", "R@1": {severity: R@1}, "mean_R@1", "RCE"}},
        "groups": {group: {"mean_R@1", "mRCE", "n"}}, "mean_R@1", "mRCE", "corruption_set":
        {"version", "hash"}}``; means are over the corruptions given (``mean_R@1`` per corruption is
        over its severities). ``RCE`` is None when ``clean_r1`` is 0.

    Example:
        >>> t = summarise_corruptions(80.0, {"fog": [80, 60, 40, 40, 60], "contrast": [80, 80, 80, 80, 80]})
        >>> t["corruptions"]["fog"]["RCE"], t["mRCE"]
        (0.3, 0.15)
    """
    clean = _r1(clean_r1, "clean_r1")
    unknown = [n for n in results if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown}; available: {list(CORRUPTIONS)}")
    table: dict[str, Any] = {}
    for name in (n for n in CORRUPTIONS if n in results):
        raw = results[name]
        per = dict(raw) if isinstance(raw, Mapping) else {i + 1: v for i, v in enumerate(raw)}
        values = _severity_values(per, f"results[{name!r}]")
        per = {int(k): float(v) for k, v in sorted(per.items(), key=lambda kv: int(kv[0]))}
        mean = math.fsum(values) / len(values)
        rce = relative_corruption_error(clean, values) if clean > 0 else None
        table[name] = {"group": CORRUPTIONS[name].group, "R@1": per, "mean_R@1": mean, "RCE": rce}

    def _means(names: list[str]) -> dict[str, Any]:
        r1 = [table[n]["mean_R@1"] for n in names]
        rce = [table[n]["RCE"] for n in names]
        return {
            "mean_R@1": math.fsum(r1) / len(r1) if r1 else None,
            "mRCE": math.fsum(rce) / len(rce) if rce and clean > 0 else None,
            "n": len(names),
        }

    groups = {g: _means([n for n in table if table[n]["group"] == g]) for g in GROUPS}
    overall = _means(list(table))
    return {
        "clean_R@1": clean,
        "corruptions": table,
        "groups": {g: v for g, v in groups.items() if v["n"]},
        "mean_R@1": overall["mean_R@1"],
        "mRCE": overall["mRCE"],
        "corruption_set": {"version": CORRUPTION_SET_VERSION, "hash": corruption_set_hash()},
    }
