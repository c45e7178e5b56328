"""Faithful numpy port of SAFA's polar sampler (``data_preparation.py``), the reference for tests.

SAFA (Shi et al., NeurIPS'19) precomputed its polar aerial maps with a small numpy script. This
module reproduces its arithmetic step by step so that :func:`geo_transforms.polar_transform`, the
presets and the benchmark can be checked against it without the original repository:

- the maps are built exactly as in the script,
  ``x = S/2. + S/2./height*(height-1-ii)*np.cos(2*np.pi*jj/width)`` (row index into the image) and
  ``y = S/2. - S/2./height*(height-1-ii)*np.sin(2*np.pi*jj/width)`` (column index);
- the four neighbours come from ``astype(int)`` (truncation toward zero, which equals floor for the
  non-negative coordinates of every size in use) and ``+1``;
- neighbours outside the image contribute 0 (``sample_within_bounds``), the weights are not
  renormalised;
- bilinear interpolation first along x (rows), then along y (columns), in float64.

Only ``center`` is an addition: ``None`` keeps SAFA's S/2, a number replaces the centre (used to
check ``center="pixel"``, (S-1)/2). The image layout is the script's: (S, S, C) numpy, any dtype
(scipy's ``imread`` gave uint8); the result is float64 (H, W, C), not yet written to disk, so the
writer's byte-scaling (docs/protocols.md#preprocessing) is not part of this reference.

This module imports only numpy, so benchmarks can use it without pytest.
"""

from __future__ import annotations

import numpy as np

__all__ = ["safa_polar", "safa_polar_maps", "sample_bilinear", "sample_within_bounds"]


def safa_polar_maps(
    size: int, height: int, width: int, *, center: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SAFA's sampling maps ``(x, y)``: x indexes image rows, y image columns; both (H, W) float64.

    Args:
        size: aerial side S.
        height: polar height H.
        width: polar width W.
        center: sampling centre; ``None`` is SAFA's ``S/2.``.

    Returns:
        ``(x, y)``, two (H, W) float64 arrays.
    """
    S = size
    i = np.arange(0, height)
    j = np.arange(0, width)
    jj, ii = np.meshgrid(j, i)
    c = S / 2.0 if center is None else float(center)
    y = c - S / 2.0 / height * (height - 1 - ii) * np.sin(2 * np.pi * jj / width)
    x = c + S / 2.0 / height * (height - 1 - ii) * np.cos(2 * np.pi * jj / width)
    return x, y


def sample_within_bounds(signal: np.ndarray, x: np.ndarray, y: np.ndarray, bounds: tuple) -> np.ndarray:
    """``signal[x, y, :]`` where (x, y) lies inside ``bounds`` = (xmin, xmax, ymin, ymax), else 0."""
    xmin, xmax, ymin, ymax = bounds
    idxs = (xmin <= x) & (x < xmax) & (ymin <= y) & (y < ymax)
    sample = np.zeros((x.shape[0], x.shape[1], signal.shape[-1]))
    sample[idxs, :] = signal[x[idxs], y[idxs], :]
    return sample


def sample_bilinear(signal: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """SAFA's bilinear sampler: ``signal`` (S_x, S_y, C) at float coordinates (rx rows, ry columns).

    Returns:
        (H, W, C) float64.
    """
    signal_dim_x = signal.shape[0]
    signal_dim_y = signal.shape[1]

    # obtain four sample coordinates
    ix0 = rx.astype(int)
    iy0 = ry.astype(int)
    ix1 = ix0 + 1
    iy1 = iy0 + 1

    bounds = (0, signal_dim_x, 0, signal_dim_y)

    # sample signal at each four positions
    signal_00 = sample_within_bounds(signal, ix0, iy0, bounds)
    signal_10 = sample_within_bounds(signal, ix1, iy0, bounds)
    signal_01 = sample_within_bounds(signal, ix0, iy1, bounds)
    signal_11 = sample_within_bounds(signal, ix1, iy1, bounds)

    na = np.newaxis
    # linear interpolation in x-direction
    fx1 = (ix1 - rx)[..., na] * signal_00 + (rx - ix0)[..., na] * signal_10
    fx2 = (ix1 - rx)[..., na] * signal_01 + (rx - ix0)[..., na] * signal_11

    # linear interpolation in y-direction
    return (iy1 - ry)[..., na] * fx1 + (ry - iy0)[..., na] * fx2


def safa_polar(aerial: np.ndarray, height: int, width: int, *, center: float | None = None) -> np.ndarray:
    """Polar-transform one aerial image exactly as SAFA's script does.

    Args:
        aerial: (S, S, C) or (S, S) array (row, column, channel), north up.
        height: polar height H.
        width: polar width W.
        center: sampling centre; ``None`` is SAFA's ``S/2.``.

    Returns:
        (H, W, C) float64 array, or (H, W) for a 2-D input.

    Example:
        >>> import numpy as np
        >>> safa_polar(np.ones((750, 750, 3), np.uint8), 112, 616).shape
        (112, 616, 3)
    """
    if aerial.ndim not in (2, 3) or aerial.shape[0] != aerial.shape[1]:
        raise ValueError(f"aerial must be (S, S) or (S, S, C), got shape {aerial.shape}")
    signal = aerial[..., None] if aerial.ndim == 2 else aerial
    x, y = safa_polar_maps(signal.shape[0], height, width, center=center)
    out = sample_bilinear(signal, x, y)
    return out[..., 0] if aerial.ndim == 2 else out
