"""Named, versioned polar-transform presets: the preprocessing chains that published results used.

Convention:
    A preset turns aerial images (B, C, S, S), values on ``[0, max_value]`` (default 0-255, the
    scale of the original scripts), into polar images (B, C, H, W) by running its ``steps`` in
    order. The steps are

    - ``"polar"``: :func:`geo_transforms.polar_transform` at ``render_size`` with ``center``
      (bilinear, zeros outside, equal to SAFA's numpy sampler to ~4e-5 in float32);
    - ``"polar_safa_exact"``: SAFA's script replayed operation by operation in float64 (its maps
      built with numpy's sin/cos, truncating ``astype(int)``, interpolation along rows then
      columns), bit-identical to the script's float output. Needed before ``"uint8_truncate"``:
      values that are integers in exact arithmetic (equal neighbours, on-pixel samples) land on
      either side of the integer depending on the last bit, and ``floor`` turns that into a
      difference of 1 (about 1 value in 4000 with the fast path). Centre S/2 only; the chain
      then runs in float64 and is cast back at the end;
    - ``"uint8_truncate"``: ``ndarray.astype(np.uint8)`` on the 0-255 scale, i.e.
      ``floor(clamp(x, 0, 255))``, what saving a float map as an 8-bit PNG after ``astype`` did;
    - ``"uint8_bytescale"``: what ``scipy.misc.imsave`` (SciPy 0.19 ... 1.1, removed in 1.2) wrote
      for a float image: ``bytescale`` with ``cmin`` / ``cmax`` the image's own minimum and maximum
      over all pixels and channels (one pair per image of the batch; ``cmax == cmin`` counts as 1),
      ``scale = 255.0 / (cmax - cmin)``, ``(x - cmin) * scale``, clipped to 0-255, then ``+ 0.5`` and
      truncated (round half up), in float64 in that order; the image's range is stretched to 0-255;
    - ``"uint8_imageio"``: what ``imageio.imsave`` (imageio 2.x ``image_as_uint``, here as in 2.9.0, the
      release of Toker et al.'s time) wrote for a float image, per image over all pixels and channels:
      ``mi == ma``: truncation; ``0 <= mi`` and ``ma <= 1``: ``x * 255 + 0.499999999``, truncated;
      otherwise ``(x - mi) / (ma - mi) * 255 + 0.499999999``, truncated (in float64 in that order);
      the image's range is stretched to 0-255 like ``"uint8_bytescale"``, with other rounding;
    - ``"resize_bicubic"``: resize to ``out_size`` with OpenCV's ``INTER_CUBIC`` kernel (Keys
      a = -0.75, half-pixel centres, replicated border, no antialiasing), which is
      ``F.interpolate(mode="bicubic", align_corners=False)``;
    - ``"uint8_round"``: round half to even and clamp to 0-255, what ``cv2.resize`` of a uint8
      image returns.

    A result records ``preset.record()`` (name, version, sizes, centre, steps) and the package
    version. Presets are frozen: a changed recipe is registered under a new ``version``.

Registered presets (docs/protocols.md#preprocessing):

======================  =======  ===========  ======================================================
name                    version  out (H, W)   steps
======================  =======  ===========  ======================================================
``safa``                1        112 x 616    polar at 112x616, centre S/2 (SAFA, CVUSA and CVACT)
``dsm``                 1        128 x 512    polar at 128x512, centre S/2 (DSM)
``toker_cvusa_legacy``  1        112 x 616    exact SAFA render at 224x1232 -> uint8 truncation ->
                                              bicubic to 112x616 -> uint8 (Toker et al. CVUSA maps
                                              since the 2022-01-17 script change, as their loader
                                              reads them); matches the numpy + OpenCV chain exactly
                                              on 0-255 input
``safa_imsave``         1        112 x 616    exact SAFA render -> ``uint8_bytescale``: the PNGs of
                                              SAFA's ``data_preparation.py`` (``scipy.misc.imsave``
                                              of the float maps), bit for bit on 0-255 input
``dsm_imsave``          1        128 x 512    the same at DSM's size (DSM's ``data_preparation.py``)
``geodtr``              1        122 x 671    exact SAFA render -> uint8 truncation: the PNGs of
                                              GeoDTR's ``data_preparation.py`` (``astype(np.uint8)``,
                                              ``imageio.imwrite``)
``toker_cvact``         1        112 x 616    exact SAFA render -> ``uint8_imageio``: the levels
                                              Toker et al.'s ``convert_polar.py`` (CVACT block) hands
                                              to the JPEG encoder (``imageio.imsave`` of the float
                                              maps); the JPEG itself is the reader's business
======================  =======  ===========  ======================================================

The uint8 steps have zero gradient almost everywhere; only presets made of ``"polar"`` and
``"resize_bicubic"`` are usefully differentiable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_image, check_size
from .polar import Center, _center, polar_transform
from .registry import Registry

__all__ = [
    "PolarPreset",
    "PolarPresetTransform",
    "apply_polar_preset",
    "get_polar_preset",
    "list_polar_presets",
    "register_polar_preset",
]

_STEPS = (
    "polar",
    "polar_safa_exact",
    "uint8_truncate",
    "uint8_bytescale",
    "uint8_imageio",
    "resize_bicubic",
    "uint8_round",
)
_POLAR_STEPS = ("polar", "polar_safa_exact")


@lru_cache(maxsize=8)
def _safa_exact_table(size: int, render_size: tuple[int, int], device: torch.device) -> tuple[Tensor, ...]:
    """Neighbour indices, in-image masks and the script's weights, computed as the script does."""
    height, width = render_size
    jj, ii = np.meshgrid(np.arange(0, width), np.arange(0, height))
    # The script's expressions, in its order, with numpy's sin/cos (torch's differ in the last bit).
    y = size / 2.0 - size / 2.0 / height * (height - 1 - ii) * np.sin(2 * np.pi * jj / width)
    x = size / 2.0 + size / 2.0 / height * (height - 1 - ii) * np.cos(2 * np.pi * jj / width)
    ix0, iy0 = x.astype(int), y.astype(int)
    ix1, iy1 = ix0 + 1, iy0 + 1
    weights = np.stack([ix1 - x, x - ix0, iy1 - y, y - iy0]).reshape(4, -1)
    index, mask = [], []
    for ix, iy in ((ix0, iy0), (ix1, iy0), (ix0, iy1), (ix1, iy1)):
        ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
        index.append(np.where(ok, ix * size + iy, 0).reshape(-1))
        mask.append(ok.reshape(-1))
    as_tensor = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
    return (
        as_tensor(np.concatenate(index), torch.int64),
        as_tensor(np.stack(mask), torch.float64),
        as_tensor(weights, torch.float64),
    )


def _polar_safa_exact(aerial: Tensor, render_size: tuple[int, int]) -> Tensor:
    """SAFA's ``sample_bilinear`` on (B, C, S, S) float64, bit-identical to the numpy script."""
    b, c, size, _ = aerial.shape
    index, mask, w = _safa_exact_table(size, render_size, aerial.device)
    n = w.shape[-1]
    v = aerial.reshape(b * c, size * size).index_select(1, index).view(b * c, 4, n) * mask  # B may be 0
    fx1 = w[0] * v[:, 0] + w[1] * v[:, 1]
    fx2 = w[0] * v[:, 2] + w[1] * v[:, 3]
    return (w[2] * fx1 + w[3] * fx2).view(b, c, *render_size)


def _uint8_bytescale(x: Tensor) -> Tensor:
    """``scipy.misc.bytescale`` (SciPy 0.19 ... 1.1) of each image of (B, C, H, W) float64, on 0-255."""
    flat = x.flatten(1)
    cmin = flat.amin(dim=1).view(-1, 1, 1, 1)
    cscale = flat.amax(dim=1).view(-1, 1, 1, 1) - cmin
    cscale = torch.where(cscale == 0, torch.ones_like(cscale), cscale)
    # ``float(high - low) / cscale``, an IEEE division (``255.0 / tensor`` would multiply by the reciprocal)
    scale = torch.full_like(cscale, 255.0).div(cscale)
    return torch.floor(((x - cmin) * scale).clamp(0.0, 255.0) + 0.5)


def _uint8_imageio(x: Tensor) -> Tensor:
    """The ``uint8_imageio`` step: imageio 2.x ``image_as_uint(im, 8)`` per image of (B, C, H, W) float64."""
    flat = x.flatten(1)
    mi = flat.amin(dim=1).view(-1, 1, 1, 1)
    ma = flat.amax(dim=1).view(-1, 1, 1, 1)
    unit = (mi >= 0) & (ma <= 1)
    span = torch.where(ma == mi, torch.ones_like(ma), ma - mi)
    stretched = (x - mi) / span * 255.0 + 0.499999999
    scaled = torch.where(unit, x * 255.0 + 0.499999999, stretched)
    # ``ma == mi`` returns ``im.astype(uint8)`` unscaled (C truncation toward zero, wrapping ignored)
    return torch.floor(torch.where(ma == mi, x.clamp(0.0, 255.0), scaled))


@dataclass(frozen=True)
class PolarPreset:
    """A named, versioned polar preprocessing chain.

    Attributes:
        name: registry name, e.g. ``"safa"``.
        version: integer version; a changed recipe gets a new version, never an edit.
        out_size: final polar ``(H, W)``.
        center: ``"safa"`` (S/2) or ``"pixel"`` ((S-1)/2).
        render_size: ``(H, W)`` the polar map is first rendered at (``out_size`` unless resized).
        steps: step names, applied in order (see the module docstring).
        source: where the recipe comes from.
    """

    name: str
    version: int
    out_size: tuple[int, int]
    center: Center
    render_size: tuple[int, int]
    steps: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.name or "@" in self.name:
            raise ValueError(f"preset name must be non-empty without '@', got {self.name!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"preset version must be an int >= 1, got {self.version!r}")
        check_size(self.out_size, "out_size")
        check_size(self.render_size, "render_size")
        _center(2, self.center)
        unknown = [s for s in self.steps if s not in _STEPS]
        if (
            unknown
            or not self.steps
            or self.steps[0] not in _POLAR_STEPS
            or self.steps.count(self.steps[0]) > 1
        ):
            raise ValueError(
                f"steps must start with one of {_POLAR_STEPS} and use only {_STEPS}, got {self.steps}"
            )
        if self.steps[0] == "polar_safa_exact" and self.center != "safa":
            raise ValueError(
                f"'polar_safa_exact' replays SAFA's script (center 'safa'), got center {self.center!r}"
            )
        if "resize_bicubic" not in self.steps and tuple(self.render_size) != tuple(self.out_size):
            raise ValueError(
                f"render_size {self.render_size} differs from out_size {self.out_size} without a resize step"
            )

    @property
    def identifier(self) -> str:
        """``"name@version"``, e.g. ``"safa@1"``."""
        return f"{self.name}@{self.version}"

    def record(self) -> dict[str, Any]:
        """A JSON-ready description to store with results (add the package version beside it)."""
        out = asdict(self)
        out["out_size"] = list(self.out_size)
        out["render_size"] = list(self.render_size)
        out["steps"] = list(self.steps)
        out["identifier"] = self.identifier
        return out


_PRESETS: Registry[PolarPreset] = Registry("polar preset")  # keyed by identifier ``name@version``


def register_polar_preset(preset: PolarPreset, *, overwrite: bool = False) -> PolarPreset:
    """Add a preset to the registry under ``name@version``.

    Presets are frozen: a changed recipe gets a new ``version``. Registering an identifier that is
    already registered raises ``ValueError`` unless ``overwrite=True`` (the toolkit's one registry
    policy, :class:`~geo_transforms.registry.Registry`).

    Args:
        preset: the preset.
        overwrite: replace an existing preset of the same name and version.

    Returns:
        The preset, so this can be used inline.
    """
    if not isinstance(preset, PolarPreset):
        raise TypeError(f"preset must be a PolarPreset, got {type(preset).__name__}")
    return _PRESETS.register(preset.identifier, preset, overwrite=overwrite)


def list_polar_presets(filter: str | None = None) -> list[str]:
    """Identifiers ``name@version`` of every registered preset, sorted (only those matching the
    fnmatch ``filter`` if given).

    Example:
        >>> list_polar_presets()
        ['dsm@1', 'dsm_imsave@1', 'geodtr@1', 'safa@1', 'safa_imsave@1', 'toker_cvact@1', 'toker_cvusa_legacy@1']
    """
    return _PRESETS.names(filter)


def get_polar_preset(name: str) -> PolarPreset:
    """Look up a preset by ``"name"`` (latest version) or ``"name@version"``.

    Args:
        name: preset name, optionally with ``@version``.

    Returns:
        The frozen :class:`PolarPreset`.

    Example:
        >>> get_polar_preset("dsm").out_size
        (128, 512)
        >>> get_polar_preset("toker_cvusa_legacy@1").render_size
        (224, 1232)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a preset name string, got {type(name).__name__}")
    base, _, version = name.partition("@")
    versions = {p.version: p for _, p in _PRESETS.items() if p.name == base}
    if not versions:
        raise ValueError(f"unknown polar preset {name!r}; available: {list_polar_presets()}")
    if not version:
        return versions[max(versions)]
    if not version.isdigit() or int(version) not in versions:
        raise ValueError(f"unknown version in {name!r}; available: {list_polar_presets()}")
    return versions[int(version)]


def _resolve(preset: str | PolarPreset) -> PolarPreset:
    if isinstance(preset, PolarPreset):
        return preset
    return get_polar_preset(preset)


def apply_polar_preset(aerial: Tensor, preset: str | PolarPreset, *, max_value: float = 255.0) -> Tensor:
    """Run a preset's preprocessing chain on aerial images.

    Convention:
        (B, C, S, S) -> (B, C, H, W) with (H, W) = ``preset.out_size``; the geometry is that of
        :func:`geo_transforms.polar_transform`. Chains with uint8 steps run in float64 on the
        0-255 scale (the input times ``255 / max_value``) and are scaled back and cast to the
        input dtype at the end. On 0-255 input (any dtype holding integers) the legacy chain is
        bit-identical to the numpy + OpenCV scripts; on [0, 1] input it is too when the values
        are float64 ``uint8 / 255``, while float32 ``uint8 / 255`` input differs by one grey
        level on a few values in a thousand (the division rounds).

    Args:
        aerial: (B, C, S, S) floating tensor, values in ``[0, max_value]``.
        preset: a :class:`PolarPreset` or a registered name (``"safa"``, ``"dsm@1"``, ...).
        max_value: the value that stands for 255.

    Returns:
        (B, C, H, W) tensor of ``aerial``'s dtype and device.

    Example:
        >>> aerial = torch.rand(1, 3, 750, 750) * 255
        >>> apply_polar_preset(aerial, "toker_cvusa_legacy").shape
        torch.Size([1, 3, 112, 616])
    """
    check_image(aerial, "aerial", square=True)
    spec = _resolve(preset)
    if not isinstance(max_value, (int, float)) or isinstance(max_value, bool) or not max_value > 0:
        raise ValueError(f"max_value must be a positive number, got {max_value!r}")
    scale = 255.0 / float(max_value)
    quantised = any(step.startswith("uint8") for step in spec.steps)
    x = aerial.to(torch.float64) * scale if quantised else aerial
    for step in spec.steps:
        if step == "polar":
            x = polar_transform(x, spec.render_size, center=spec.center)
        elif step == "polar_safa_exact":
            x = _polar_safa_exact(x.to(torch.float64), spec.render_size)
        elif step == "uint8_truncate":
            x = torch.floor(x.clamp(0.0, 255.0))
        elif step == "uint8_bytescale":
            x = _uint8_bytescale(x)
        elif step == "uint8_imageio":
            x = _uint8_imageio(x)
        elif step == "resize_bicubic":
            x = F.interpolate(x, size=spec.out_size, mode="bicubic", align_corners=False)
        elif step == "uint8_round":
            x = torch.round(x).clamp(0.0, 255.0)  # half to even, as cv2.resize on uint8
    if quantised:
        x = x / scale
    return x.to(aerial.dtype)


class PolarPresetTransform(nn.Module):
    """Module form of :func:`apply_polar_preset`; stores the resolved preset and ``max_value``.

    Example:
        >>> module = PolarPresetTransform("safa")
        >>> module.preset.identifier
        'safa@1'
    """

    def __init__(self, preset: str | PolarPreset, *, max_value: float = 255.0) -> None:
        super().__init__()
        self.preset = _resolve(preset)
        self.max_value = max_value

    def forward(self, aerial: Tensor) -> Tensor:
        return apply_polar_preset(aerial, self.preset, max_value=self.max_value)

    def extra_repr(self) -> str:
        return f"preset={self.preset.identifier!r}, max_value={self.max_value}"


register_polar_preset(
    PolarPreset(
        name="safa",
        version=1,
        out_size=(112, 616),
        center="safa",
        render_size=(112, 616),
        steps=("polar",),
        source="SAFA data_preparation.py (Shi et al., NeurIPS'19): S/2 centre, 112x616, bilinear",
    )
)
register_polar_preset(
    PolarPreset(
        name="dsm",
        version=1,
        out_size=(128, 512),
        center="safa",
        render_size=(128, 512),
        steps=("polar",),
        source="DSM (Shi et al., CVPR'20): SAFA's sampler at 128x512",
    )
)
register_polar_preset(
    PolarPreset(
        name="toker_cvusa_legacy",
        version=1,
        out_size=(112, 616),
        center="safa",
        render_size=(224, 1232),
        steps=("polar_safa_exact", "uint8_truncate", "resize_bicubic", "uint8_round"),
        source=(
            "Toker et al. CVPR'21 (comingdowntoearth) CVUSA maps after the 2022-01-17 script change: "
            "rendered 224x1232, astype(uint8), PNG, cv2.resize(..., (616, 112), INTER_CUBIC) at load"
        ),
    )
)
register_polar_preset(
    PolarPreset(
        name="safa_imsave",
        version=1,
        out_size=(112, 616),
        center="safa",
        render_size=(112, 616),
        steps=("polar_safa_exact", "uint8_bytescale"),
        source=(
            "SAFA data_preparation.py (Shi et al., NeurIPS'19): sample_bilinear at 112x616 in float64, "
            "scipy.misc.imsave PNG (SciPy <= 1.1 bytescale: the image's min..max -> 0..255, round half up)"
        ),
    )
)
register_polar_preset(
    PolarPreset(
        name="dsm_imsave",
        version=1,
        out_size=(128, 512),
        center="safa",
        render_size=(128, 512),
        steps=("polar_safa_exact", "uint8_bytescale"),
        source=(
            "DSM data_preparation.py (Shi et al., CVPR'20): SAFA's sample_bilinear at 128x512 in float64, "
            "scipy.misc.imsave PNG (SciPy <= 1.1 bytescale: the image's min..max -> 0..255, round half up)"
        ),
    )
)
register_polar_preset(
    PolarPreset(
        name="geodtr",
        version=1,
        out_size=(122, 671),
        center="safa",
        render_size=(122, 671),
        steps=("polar_safa_exact", "uint8_truncate"),
        source=(
            "GeoDTR data_preparation.py (Zhang et al., AAAI'23): SAFA's sample_bilinear at 122x671 in float64, "
            "astype(np.uint8), imageio.imwrite PNG"
        ),
    )
)
register_polar_preset(
    PolarPreset(
        name="toker_cvact",
        version=1,
        out_size=(112, 616),
        center="safa",
        render_size=(112, 616),
        steps=("polar_safa_exact", "uint8_imageio"),
        source=(
            "Toker et al. CVPR'21 (comingdowntoearth) data/convert_polar.py, CVACT block: SAFA's sample_bilinear "
            "at 112x616 (S = 1200) in float64, imageio.imsave of the float map (image_as_uint: the image's "
            "min..max -> 0..255, + 0.499999999, truncated) as <id>_satView_polish.jpg (JPEG, quality 75)"
        ),
    )
)
