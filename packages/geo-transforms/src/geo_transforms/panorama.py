"""Equirectangular panorama utilities: yaw rotation, limited field of view, joint aerial/panorama ops.

Convention:
    Panoramas are (B, C, H, W) equirectangular images whose columns sweep the full circle
    clockwise (seen from above), like the polar images of :mod:`geo_transforms.polar`: in a
    north-centred panorama column W/2 looks north, 3W/4 east, 0 south and W/4 west, so column j
    looks at bearing ``180 + 360 * j / W`` degrees (mod 360). Yaw is in degrees, **positive = the
    camera turned clockwise (towards east)**: the content moves left, and the rotated panorama's
    column j shows the input at column ``j + yaw * W / 360`` (mod W). Columns wrap around.

    The aerial image is (B, C, S, S), north up. A counter-clockwise rotation of the aerial by
    ``angle`` degrees (``torch.rot90`` with k = angle / 90, or :func:`kornia.geometry.transform.rotate`)
    brings what was at bearing ``angle`` to the north, exactly as turning the camera by
    ``yaw = angle``; the joint ops below pair the two so that ``polar(aerial')`` stays consistent
    with ``pano'``. With ``center="pixel"`` polar images and W divisible by 4 the quarter-turn and
    mirror pairings are bit-exact.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.transform import rotate as _kornia_rotate
from torch import Tensor, nn

from ._checks import check_image

__all__ = [
    "CropFoV",
    "JointHFlip",
    "JointRotate",
    "RotatePanorama",
    "crop_fov",
    "fov_width",
    "joint_hflip",
    "joint_rotate",
    "limit_fov",
    "rotate_panorama",
]

# A fractional shift closer than this to an integer number of columns is snapped to it, so that
# yaw = 360 * n / W reproduces torch.roll exactly despite the rounding of 360 * n / W itself.
_SNAP = 1e-9


def _yaw_tensor(yaw_deg: object, batch: int, device: torch.device, name: str = "yaw_deg") -> Tensor:
    """A (B,) float64 yaw tensor from a number, a 0-d tensor or a (B,) tensor."""
    if isinstance(yaw_deg, Tensor):
        if not (yaw_deg.is_floating_point() or yaw_deg.dtype in (torch.int32, torch.int64, torch.int16)):
            raise TypeError(
                f"{name} must be a real number or a real tensor of shape (B,), got {yaw_deg.dtype}"
            )
        if yaw_deg.ndim == 0:
            yaw = yaw_deg.reshape(1).expand(batch)
        elif yaw_deg.ndim == 1 and yaw_deg.shape[0] in (1, batch):
            yaw = yaw_deg.expand(batch)
        else:
            raise ValueError(
                f"{name} must be a number, a 0-d tensor or a tensor of shape (B,) = ({batch},), "
                f"got shape {tuple(yaw_deg.shape)}"
            )
        return yaw.to(device=device, dtype=torch.float64)
    if isinstance(yaw_deg, bool) or not isinstance(yaw_deg, (int, float)):
        raise TypeError(f"{name} must be a number or a tensor of shape (B,), got {type(yaw_deg).__name__}")
    if not math.isfinite(yaw_deg):
        raise ValueError(f"{name} must be finite, got {yaw_deg}")
    return torch.full((batch,), float(yaw_deg), device=device, dtype=torch.float64)


def _sample_columns(pano: Tensor, cols: Tensor) -> Tensor:
    """Linear interpolation of ``pano`` (B, C, H, W) at fractional columns ``cols`` (B, w), wrapping.

    ``cols`` is float64 (and may carry gradient). Integer columns are read exactly: the result is
    ``v0 + 0 * (v1 - v0)``.
    """
    b, c, h, w = pano.shape
    near = torch.round(cols)
    cols = cols + torch.where((cols - near).abs() < _SNAP, near - cols, torch.zeros_like(cols)).detach()
    base = torch.floor(cols).detach()
    frac = (cols - base).to(pano.dtype)
    i0 = torch.remainder(base.to(torch.int64), w)
    i1 = torch.remainder(i0 + 1, w)
    n = cols.shape[-1]
    shape = (b, c, h, n)
    v0 = torch.gather(pano, -1, i0[:, None, None, :].expand(shape))
    v1 = torch.gather(pano, -1, i1[:, None, None, :].expand(shape))
    return torch.lerp(v0, v1, frac[:, None, None, :].expand(shape))


def rotate_panorama(pano: Tensor, yaw_deg: float | Tensor) -> Tensor:
    """Rotate equirectangular panoramas about the vertical axis by a (fractional) yaw.

    Convention:
        Positive yaw turns the camera clockwise (towards east) and moves the content **left**:
        ``out[..., j] = pano[..., (j + yaw * W / 360) mod W]``, linearly interpolated between the
        two neighbouring columns with wrap-around. Integer column shifts (``yaw = 360 * n / W``)
        equal ``torch.roll(pano, -n, dims=-1)`` exactly. Matches the polar convention:
        ``polar(rot90(A, k)) == rotate_panorama(polar(A), 90 * k)``.

    Args:
        pano: (B, C, H, W) floating tensor.
        yaw_deg: yaw in degrees, a number, a 0-d tensor or a (B,) tensor (one yaw per sample).

    Returns:
        (B, C, H, W) tensor of ``pano``'s dtype; differentiable w.r.t. ``pano`` and ``yaw_deg``
        (the derivative in yaw is that of the linear interpolation, right-sided at integer shifts).

    Example:
        >>> pano = torch.arange(8.0).expand(1, 1, 2, 8)  # two identical rows
        >>> rotate_panorama(pano, 90.0)[0, 0, 0]  # two columns to the left
        tensor([2., 3., 4., 5., 6., 7., 0., 1.])
        >>> rotate_panorama(pano, 22.5)[0, 0, 0]  # half a column
        tensor([0.5000, 1.5000, 2.5000, 3.5000, 4.5000, 5.5000, 6.5000, 3.5000])
    """
    check_image(pano, "pano")
    b, w = pano.shape[0], pano.shape[-1]
    shift = _yaw_tensor(yaw_deg, b, pano.device) * (w / 360.0)
    cols = torch.arange(w, device=pano.device, dtype=torch.float64)[None, :] + shift[:, None]
    return _sample_columns(pano, cols)


def fov_width(fov_deg: float, width: int) -> int:
    """Number of columns of a ``fov_deg`` crop of a W-column panorama: ``int(fov / 360 * W)`` (DSM).

    Example:
        >>> [fov_width(f, 512) for f in (360, 180, 90, 70)]
        [512, 256, 128, 99]
    """
    if isinstance(fov_deg, bool) or not isinstance(fov_deg, (int, float)):
        raise TypeError(f"fov_deg must be a number of degrees in (0, 360], got {type(fov_deg).__name__}")
    if not 0 < fov_deg <= 360:
        raise ValueError(f"fov_deg must be in (0, 360] degrees, got {fov_deg}")
    n = int(fov_deg / 360 * width)
    if n < 1:
        raise ValueError(f"fov_deg={fov_deg} keeps no column of a panorama of width {width}")
    return n


def crop_fov(pano: Tensor, fov_deg: float, yaw_deg: float | Tensor = 0.0) -> Tensor:
    """Crop a limited field of view centred at a yaw (DSM's limited-FoV queries).

    Convention:
        The crop keeps ``w = int(fov_deg / 360 * W)`` columns (DSM's width). Output column t is
        column ``W // 2 - w // 2 + t`` of ``rotate_panorama(pano, yaw_deg)``, i.e. input column
        ``(W // 2 - w // 2 + t + yaw * W / 360) mod W`` (interpolated when fractional): with
        yaw 0 the crop is centred on the centre column W/2 (north for a north-centred panorama;
        for even w the centre falls half a column left of W/2). ``fov_deg=360`` with yaw 0
        returns the panorama unchanged.

        DSM's query (roll right by ``shift`` columns, keep the first w) is
        ``crop_fov(pano, fov, yaw_deg=360 * (w // 2 - W // 2 - shift) / W)``.

    Args:
        pano: (B, C, H, W) floating tensor.
        fov_deg: field of view in degrees, (0, 360] (DSM uses 360, 180, 90, 70); a number, as it
            sets the output width.
        yaw_deg: centre of the crop in degrees relative to column W/2 (positive = clockwise), a
            number, a 0-d tensor or a (B,) tensor.

    Returns:
        (B, C, H, w) tensor; differentiable w.r.t. ``pano`` and ``yaw_deg``.

    Example:
        >>> pano = torch.rand(2, 3, 128, 512)
        >>> crop_fov(pano, 90.0).shape
        torch.Size([2, 3, 128, 128])
        >>> torch.equal(crop_fov(pano, 90.0), pano[..., 192:320])
        True
    """
    check_image(pano, "pano")
    b, w = pano.shape[0], pano.shape[-1]
    n = fov_width(fov_deg, w)
    shift = _yaw_tensor(yaw_deg, b, pano.device) * (w / 360.0)
    cols = torch.arange(w // 2 - n // 2, w // 2 - n // 2 + n, device=pano.device, dtype=torch.float64)
    return _sample_columns(pano, cols[None, :] + shift[:, None])


def _per_sample(value: object, batch: int, device: torch.device, name: str, *, integer: bool) -> Tensor:
    """A (B,) tensor (int64 when ``integer``, else float64) from a number or a 0-d / (1,) / (B,) tensor."""
    kind, tensor_kind = ("an int", "an integer tensor") if integer else ("a number", "a real tensor")
    if isinstance(value, Tensor):
        ok = not value.is_complex() and value.dtype != torch.bool
        ok = ok and (not value.is_floating_point() if integer else True)
        if not ok:
            raise TypeError(f"{name} must be {kind} or {tensor_kind} of shape (B,), got {value.dtype}")
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] not in (1, batch)):
            raise ValueError(
                f"{name} must be {kind}, a 0-d tensor or a tensor of shape (B,) = ({batch},), "
                f"got shape {tuple(value.shape)}"
            )
        out = value.detach().reshape(-1).to(device=device, dtype=torch.int64 if integer else torch.float64)
        return out.expand(batch)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"{name} must be {kind} or a tensor of shape (B,), got {type(value).__name__}")
    return torch.full((batch,), value, device=device, dtype=torch.int64 if integer else torch.float64)


def limit_fov(
    panorama: Tensor,
    fov_deg: float | Tensor,
    shift: int | Tensor = 0,
    fill: float | Tensor = 0.0,
) -> Tensor:
    """Limited-FoV view of a panorama at an unknown heading, kept in the full-width panorama frame.

    One model then takes the same (B, C, H, W) input at every FoV: the window is rolled into the
    first columns and everything else is set to ``fill`` (a recipe passes its normalisation mean, so
    those columns are exactly 0 after normalisation).

    Convention:
        Per sample b with ``w_b = int(fov_deg[b] / 360 * W)`` (DSM's width rule, as
        :func:`fov_width`): output column ``j < w_b`` is input column ``(j - shift[b]) mod W`` (roll
        right by ``shift``, DSM's limited-FoV query, geo-bench's ``apply_fov``), columns
        ``j >= w_b`` are ``fill``. So ``out[..., :w_b]`` is DSM's query and ``out[..., w_b:]`` its
        right padding. Integer shifts only: the window starts at input column ``(-shift) mod W``;
        for a north-centred panorama (column j looks at bearing ``180 + 360 j / W``) the window's
        centre looks at bearing ``180 + 360 * (w_b / 2 - shift) / W``. ``fov_deg=360`` with
        ``shift=0`` returns the panorama unchanged (values; a new tensor). Implemented with one
        ``gather`` and one ``where``, no loop over samples.

    Args:
        panorama: (B, C, H, W) floating tensor (B may be 0).
        fov_deg: field of view in degrees, in (0, 360]: a number, or a 0-d / (B,) real tensor (one
            FoV per sample). Must keep at least one column.
        shift: columns to roll right, any int (taken mod W): an int, or a 0-d / (B,) integer tensor.
        fill: value of the columns outside the window: a number, or a 0-d / (C,) tensor (per
            channel, e.g. the normalisation mean).

    Returns:
        (B, C, H, W) tensor of ``panorama``'s dtype and device; differentiable w.r.t. ``panorama``
        (and a tensor ``fill``); not w.r.t. ``fov_deg`` or ``shift`` (integer column counts).

    Raises:
        TypeError: a non-tensor or non-floating ``panorama``, a non-integer ``shift``, a wrong type
            of ``fov_deg`` or ``fill``.
        ValueError: a wrong shape of any argument, ``fov_deg`` outside (0, 360] or keeping no column.

    Example:
        >>> pano = torch.arange(8.0).expand(1, 1, 2, 8)  # two identical rows
        >>> limit_fov(pano, 180.0, shift=2, fill=-1.0)[0, 0, 0].tolist()
        [6.0, 7.0, 0.0, 1.0, -1.0, -1.0, -1.0, -1.0]
        >>> limit_fov(pano.expand(2, 1, 2, 8), torch.tensor([90.0, 360.0]), torch.tensor([0, 1]))[:, 0, 0]
        tensor([[0., 1., 0., 0., 0., 0., 0., 0.],
                [7., 0., 1., 2., 3., 4., 5., 6.]])
    """
    check_image(panorama, "panorama")
    b, c, h, w = panorama.shape
    device = panorama.device
    fov = _per_sample(fov_deg, b, device, "fov_deg", integer=False)
    if not isinstance(fov_deg, Tensor) and not 0 < fov_deg <= 360:
        raise ValueError(f"fov_deg must be in (0, 360] degrees, got {fov_deg}")
    if isinstance(fov_deg, Tensor) and b and not bool(((fov > 0) & (fov <= 360)).all()):
        bad = fov[~((fov > 0) & (fov <= 360))][0].item()
        raise ValueError(f"fov_deg must be in (0, 360] degrees, got {bad} in {tuple(fov_deg.shape)} fov_deg")
    widths = torch.floor(fov / 360 * w).to(torch.int64)  # int(fov / 360 * W), as fov_width
    if b and bool((widths < 1).any()):
        bad = fov[widths < 1][0].item()
        raise ValueError(f"fov_deg={bad} keeps no column of a panorama of width {w}")
    shifts = _per_sample(shift, b, device, "shift", integer=True)
    if isinstance(fill, Tensor):
        if fill.is_complex() or fill.dtype == torch.bool:
            raise TypeError(f"fill must be a number or a real tensor of shape (C,), got {fill.dtype}")
        if fill.ndim > 1 or (fill.ndim == 1 and fill.shape[0] not in (1, c)):
            raise ValueError(
                f"fill must be a number, a 0-d tensor or a tensor of shape (C,) = ({c},), "
                f"got shape {tuple(fill.shape)}"
            )
        fill_t = fill.to(device=device, dtype=panorama.dtype).reshape(1, -1, 1, 1)
    elif isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise TypeError(f"fill must be a number or a tensor of shape (C,), got {type(fill).__name__}")
    else:
        fill_t = torch.full((1, 1, 1, 1), float(fill), device=device, dtype=panorama.dtype)
    cols = torch.arange(w, device=device)
    index = torch.remainder(cols[None, :] - shifts[:, None], w)  # (B, W): output j <- input (j - shift) mod W
    rolled = torch.gather(panorama, -1, index[:, None, None, :].expand(b, c, h, w))
    keep = (cols[None, :] < widths[:, None])[:, None, None, :]  # (B, 1, 1, W)
    return torch.where(keep, rolled, fill_t)


def _check_pair(aerial: Tensor, pano: Tensor, *, any_dtype: bool = False) -> None:
    check_image(aerial, "aerial", square=True, any_dtype=any_dtype)
    check_image(pano, "pano", any_dtype=any_dtype)
    if aerial.shape[0] != pano.shape[0]:
        raise ValueError(
            f"aerial and pano must have the same batch size, got aerial {tuple(aerial.shape)} "
            f"and pano {tuple(pano.shape)}"
        )


def joint_rotate(
    aerial: Tensor,
    pano: Tensor,
    k: int | None = None,
    angle_deg: float | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Rotate an aerial image and turn its panorama consistently (Sample4Geo-style augmentation).

    Convention:
        Give exactly one of ``k`` or ``angle_deg``. The aerial turns **counter-clockwise** (on
        screen, north up) and the panorama by ``yaw = angle`` (content moves left):

        - ``k`` (quarter turns, any int): ``torch.rot90(aerial, k, dims=(-2, -1))`` and
          ``torch.roll(pano, -k * W / 4, dims=-1)``; exact, W must be divisible by 4. With
          ``pano = polar_transform(aerial, ..., center="pixel")`` the pair stays bit-exact.
        - ``angle_deg`` (a number or a (B,) tensor): the aerial is resampled with
          :func:`kornia.geometry.transform.rotate` (bilinear, about the pixel centre (S-1)/2,
          align_corners=True, corners filled with 0) and the panorama with
          :func:`rotate_panorama` (fractional, wrap-around).

    Args:
        aerial: (B, C, S, S) tensor, floating (any dtype with ``k``: quarter turns only move pixels,
            so uint8 images turn as they are stored).
        pano: (B, C', H, W) tensor (a ground panorama or a polar image), floating (any dtype with ``k``).
        k: number of counter-clockwise quarter turns.
        angle_deg: rotation angle in degrees, counter-clockwise for the aerial.

    Returns:
        ``(aerial', pano')`` with the input shapes; differentiable w.r.t. the images (and
        ``angle_deg``).

    Example:
        >>> aerial, pano = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 32, 128)
        >>> a1, p1 = joint_rotate(aerial, pano, k=1)
        >>> torch.equal(p1, torch.roll(pano, -32, dims=-1))
        True
    """
    _check_pair(aerial, pano, any_dtype=k is not None and angle_deg is None)
    if (k is None) == (angle_deg is None):
        raise ValueError(f"give exactly one of k or angle_deg, got k={k!r}, angle_deg={angle_deg!r}")
    w = pano.shape[-1]
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"k must be an int number of quarter turns, got {type(k).__name__}")
        if w % 4:
            raise ValueError(
                f"k quarter turns need a panorama width W divisible by 4, got pano {tuple(pano.shape)}"
            )
        k = k % 4
        return torch.rot90(aerial, k, dims=(-2, -1)), torch.roll(pano, -k * (w // 4), dims=-1)
    angle = _yaw_tensor(angle_deg, aerial.shape[0], aerial.device, name="angle_deg")
    rotated = _kornia_rotate(
        aerial, angle.to(aerial.dtype), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return rotated, rotate_panorama(pano, angle)


def joint_hflip(aerial: Tensor, pano: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror an aerial image east-west and its panorama consistently.

    Convention:
        The aerial is flipped along its width (``aerial.flip(-1)``); the panorama is mirrored
        about its columns 0 and W/2 (south and north), ``j -> (W - j) mod W``, which is
        ``torch.roll(pano.flip(-1), 1, dims=-1)``. (``cv2.flip``/``torch.flip`` alone map
        j -> W - 1 - j, one column off.) With ``pano = polar_transform(aerial, ..., center="pixel")``
        the pair stays bit-exact.

    Args:
        aerial: (B, C, S, S) tensor of any dtype (a mirror only moves pixels: uint8 images are
            mirrored as they are stored).
        pano: (B, C', H, W) tensor of any dtype.

    Returns:
        ``(aerial', pano')`` with the input shapes and dtypes.

    Example:
        >>> aerial, pano = torch.rand(1, 3, 8, 8), torch.arange(4.0).expand(1, 1, 2, 4)
        >>> joint_hflip(aerial, pano)[1][0, 0, 0]
        tensor([0., 3., 2., 1.])
    """
    _check_pair(aerial, pano, any_dtype=True)
    return aerial.flip(-1), torch.roll(pano.flip(-1), 1, dims=-1)


class RotatePanorama(nn.Module):
    """Module form of :func:`rotate_panorama`; stores ``yaw_deg`` (a number or a (B,) tensor).

    Example:
        >>> RotatePanorama(90.0)(torch.rand(1, 3, 4, 8)).shape
        torch.Size([1, 3, 4, 8])
    """

    def __init__(self, yaw_deg: float | Tensor) -> None:
        super().__init__()
        self.yaw_deg = yaw_deg

    def forward(self, pano: Tensor) -> Tensor:
        return rotate_panorama(pano, self.yaw_deg)

    def extra_repr(self) -> str:
        return f"yaw_deg={self.yaw_deg}"


class CropFoV(nn.Module):
    """Module form of :func:`crop_fov`; stores ``fov_deg`` and ``yaw_deg``.

    Example:
        >>> CropFoV(70.0)(torch.rand(1, 3, 128, 512)).shape
        torch.Size([1, 3, 128, 99])
    """

    def __init__(self, fov_deg: float, yaw_deg: float | Tensor = 0.0) -> None:
        super().__init__()
        fov_width(fov_deg, 360)  # validates the range
        self.fov_deg = fov_deg
        self.yaw_deg = yaw_deg

    def forward(self, pano: Tensor) -> Tensor:
        return crop_fov(pano, self.fov_deg, self.yaw_deg)

    def extra_repr(self) -> str:
        return f"fov_deg={self.fov_deg}, yaw_deg={self.yaw_deg}"


class JointRotate(nn.Module):
    """Module form of :func:`joint_rotate`; stores ``k`` or ``angle_deg``; returns ``(aerial', pano')``.

    Example:
        >>> a, p = JointRotate(k=2)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 16))
        >>> a.shape, p.shape
        (torch.Size([1, 3, 8, 8]), torch.Size([1, 3, 4, 16]))
    """

    def __init__(self, k: int | None = None, angle_deg: float | Tensor | None = None) -> None:
        super().__init__()
        if (k is None) == (angle_deg is None):
            raise ValueError(f"give exactly one of k or angle_deg, got k={k!r}, angle_deg={angle_deg!r}")
        self.k = k
        self.angle_deg = angle_deg

    def forward(self, aerial: Tensor, pano: Tensor) -> tuple[Tensor, Tensor]:
        return joint_rotate(aerial, pano, k=self.k, angle_deg=self.angle_deg)

    def extra_repr(self) -> str:
        return f"k={self.k}" if self.k is not None else f"angle_deg={self.angle_deg}"


class JointHFlip(nn.Module):
    """Module form of :func:`joint_hflip`; returns ``(aerial', pano')``.

    Example:
        >>> a, p = JointHFlip()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 16))
        >>> p.shape
        torch.Size([1, 3, 4, 16])
    """

    def forward(self, aerial: Tensor, pano: Tensor) -> tuple[Tensor, Tensor]:
        return joint_hflip(aerial, pano)
