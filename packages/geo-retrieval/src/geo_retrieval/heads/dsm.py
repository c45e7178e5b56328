"""DSM: dynamic similarity matching of polar feature maps (Shi et al., CVPR'20).

Convention: maps are (B, C, h, W) with W spanning 360 degrees of azimuth for the aerial (polar)
branch and ``wg <= W`` columns (the field of view) for the ground branch. Shift s aligns ground
column v with aerial column (s + v) mod W, i.e. if ``aerial = torch.roll(ground360, s, dims=-1)``
the estimated shift is s; in degrees it is ``s * 360 / W``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import check_feature_map, register_head

__all__ = [
    "DSMHead",
    "DSMMatch",
    "circular_w_padding_",
    "dsm_correlation",
    "dsm_shift_to_degrees",
    "dsm_similarity",
]


class DSMMatch(NamedTuple):
    """Result of :func:`dsm_similarity`: ``similarity`` (Bg, Ba) float, ``shift`` (Bg, Ba) long."""

    similarity: Tensor
    shift: Tensor


def _check_pair(ground: Tensor, aerial: Tensor) -> None:
    for name, t in (("ground_maps", ground), ("aerial_maps", aerial)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{name} must be (B, C, h, w), got {tuple(t.shape)}")
    if ground.shape[1:3] != aerial.shape[1:3]:
        raise ValueError(
            f"ground_maps (Bg, C, h, wg) and aerial_maps (Ba, C, h, W) must share C and h, got "
            f"{tuple(ground.shape)} and {tuple(aerial.shape)}"
        )
    if ground.shape[-1] > aerial.shape[-1]:
        raise ValueError(
            f"ground width ({ground.shape[-1]}) must not exceed aerial width ({aerial.shape[-1]})"
        )


def dsm_correlation(ground_maps: Tensor, aerial_maps: Tensor, *, method: str = "fft") -> Tensor:
    """Circular cross-correlation of every ground map with every aerial map over all W shifts.

    ``corr[g, a, s] = sum_{c, i, v < wg} ground[g, c, i, v] * aerial[a, c, i, (s + v) mod W]``.

    Args:
        ground_maps: (Bg, C, h, wg).
        aerial_maps: (Ba, C, h, W), wg <= W.
        method: ``"fft"`` (rfft along W, O(W log W) per pair-channel) or ``"direct"`` (batched
            sliding windows, one einsum; memory Ba*C*h*W*wg).

    Returns:
        (Bg, Ba, W) correlations, in the promoted dtype of the inputs.
    """
    _check_pair(ground_maps, aerial_maps)
    wg, width = ground_maps.shape[-1], aerial_maps.shape[-1]
    if method == "fft":
        real = torch.promote_types(ground_maps.dtype, torch.float32)
        g = F.pad(ground_maps.to(real), (0, width - wg))
        gf = torch.fft.rfft(g, dim=-1)
        af = torch.fft.rfft(aerial_maps.to(real), dim=-1)
        prod = torch.einsum("gchk,achk->gak", gf.conj(), af)
        return torch.fft.irfft(prod, n=width, dim=-1).to(
            torch.promote_types(ground_maps.dtype, aerial_maps.dtype)
        )
    if method == "direct":
        ext = torch.cat([aerial_maps, aerial_maps[..., : wg - 1]], dim=-1)
        windows = ext.unfold(-1, wg, 1)  # (Ba, C, h, W, wg)
        return torch.einsum("gchv,achsv->gas", ground_maps, windows)
    raise ValueError(f"method must be 'fft' or 'direct', got {method!r}")


def dsm_similarity(
    ground_maps: Tensor, aerial_maps: Tensor, *, method: str = "fft", eps: float = 1e-12
) -> DSMMatch:
    """DSM similarity and orientation for every (ground, aerial) pair.

    For each pair, the shift s* = argmax_s corr[g, a, s] (:func:`dsm_correlation`); the aerial map
    is cropped at s* to the ground width, the crop is L2-normalised, and the similarity is its
    inner product with the whole-map-normalised ground map, so ``d = 2 - 2 * similarity`` is
    DSM's distance. The crop is never materialised: its inner product is ``corr[g, a, s*]`` and its
    norm a circular window sum of per-column energies. Gradients flow through the chosen shift.

    Args:
        ground_maps: (Bg, C, h, wg) ground feature maps (wg < W for a limited field of view).
        aerial_maps: (Ba, C, h, W) polar aerial feature maps spanning 360 degrees.
        method: correlation method, ``"fft"`` or ``"direct"``.

    Returns:
        :class:`DSMMatch` ``(similarity (Bg, Ba), shift (Bg, Ba) long in [0, W))``.

    Example:
        >>> a = torch.randn(3, 4, 2, 16)
        >>> g = torch.roll(a, -5, dims=-1)[..., :8]   # 180-degree FoV starting at aerial column 5
        >>> sim, shift = dsm_similarity(g, a)
        >>> int(shift[0, 0]), round(float(sim[0, 0]), 4)
        (5, 1.0)
    """
    corr = dsm_correlation(ground_maps, aerial_maps, method=method)  # (Bg, Ba, W)
    wg = ground_maps.shape[-1]
    shift = corr.argmax(dim=-1)  # (Bg, Ba)
    best = torch.take_along_dim(corr, shift[..., None], dim=-1)[..., 0]
    col_energy = aerial_maps.pow(2).sum(dim=(1, 2))  # (Ba, W)
    ext = torch.cat([col_energy, col_energy[:, : wg - 1]], dim=-1)
    crop_sq = ext.unfold(-1, wg, 1).sum(-1)  # (Ba, W): energy of the crop starting at each shift
    crop_norm = (
        torch.gather(crop_sq.expand(shift.shape[0], -1, -1), 2, shift[..., None])[..., 0]
        .clamp_min(eps)
        .sqrt()
    )
    ground_norm = ground_maps.flatten(1).norm(dim=1).clamp_min(eps)  # (Bg,)
    return DSMMatch(best / (crop_norm * ground_norm[:, None]), shift)


def dsm_shift_to_degrees(shift: Tensor, width: int) -> Tensor:
    """Shift in columns -> azimuth in degrees in [0, 360): ``shift * 360 / width`` (float)."""
    return shift.to(torch.float64 if not shift.is_floating_point() else shift.dtype) * (360.0 / width) % 360.0


def _wrap_w_hook(pw: int, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Forward pre-hook (``pw`` bound by :func:`circular_w_padding_`): pad W circularly by ``pw``."""
    x = args[0]
    return (F.pad(x, (pw, pw, 0, 0), mode="circular"), *args[1:])


def circular_w_padding_(module: nn.Module) -> nn.Module:
    """In place: every ``nn.Conv2d`` with W padding p pads W circularly by p instead (H keeps zero
    padding), as DSM's aerial branch does. Parameter names are unchanged (a forward pre-hook pads).

    Returns:
        ``module``.
    """
    for conv in module.modules():
        if not isinstance(conv, nn.Conv2d) or getattr(conv, "_circular_w", None) is not None:
            continue
        if isinstance(conv.padding, str):
            if conv.padding == "valid":
                continue
            raise ValueError("circular_w_padding_ needs numeric conv padding, got 'same'")
        ph, pw = conv.padding
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv already uses padding_mode={conv.padding_mode!r}")
        if pw == 0:
            continue
        conv.padding = (ph, 0)
        # a plain-int marker (torch's stub types Module.__setattr__ for tensors and modules only)
        conv._circular_w = pw  # type: ignore[assignment]
        conv.register_forward_pre_hook(functools.partial(_wrap_w_hook, pw))
    return module


def _tf_same_hook(module: nn.Conv2d, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Forward pre-hook of :func:`_tf_same_padding_`: zero-pad as TensorFlow's ``SAME`` for this input."""
    x = args[0]
    pads: list[int] = []
    for dim, k, s, d in zip((-1, -2), module.kernel_size[::-1], module.stride[::-1], module.dilation[::-1]):
        n = x.shape[dim]
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return (F.pad(x, pads), *args[1:])


def _tf_same_padding_(module: nn.Module) -> nn.Module:
    """In place: every zero-padded ``nn.Conv2d`` pads as TensorFlow's ``padding='SAME'``: per dimension
    ``total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)``, ``total // 2`` before and the rest
    after (for a stride-2 3x3 conv on an even size: 0 before, 1 after, where ``padding=1`` pads 1 and 1
    and samples other rows). Stride-1 odd kernels pad symmetrically as before. Parameter names are
    unchanged (a forward pre-hook pads); circularly padded convs (:func:`circular_w_padding_`) are left
    alone.

    Returns:
        ``module``.
    """
    for conv in module.modules():
        if not isinstance(conv, nn.Conv2d) or getattr(conv, "_circular_w", None) is not None:
            continue
        if getattr(conv, "_tf_same", False):
            continue
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("_tf_same_padding_ needs zero-padded convs with numeric padding")
        conv.padding = (0, 0)
        conv._tf_same = True  # type: ignore[assignment]
        conv.register_forward_pre_hook(_tf_same_hook)
    return module


class DSMHead(nn.Module):
    """DSM's projection of backbone features to a small polar feature map.

    Three 3x3 convs ``in_channels -> channels[0] -> channels[1] -> channels[2]`` with H strides
    ``h_strides`` (W stride 1), ReLU after all but the last. ``circular=True`` (aerial branch) wraps
    columns; ``False`` (ground) zero-pads. The output map is L2-normalised as a whole; its layout is
    kept, so the "descriptor" of this head is a (B, C', h', w) unit map, matched with
    :func:`dsm_similarity`.

    With DSM's VGG16 conv4_3 on a 128x512 input (16x64) the default gives (B, 16, 4, 64).

    ``padding="tf_same"`` (zero-padded heads only) pads as TensorFlow's ``SAME`` (:func:`_tf_same_padding_`),
    as DSM's ground branch does: its stride-2 convs pad 0 above and 1 below, where the default
    ``"symmetric"`` (``padding=1``) pads 1 and 1. A circular head ignores it: DSM's aerial branch pads
    explicitly (wrap 1 column each side, zero 1 row each side), which the circular padding reproduces.

    Example:
        >>> head = DSMHead(in_channels=8, channels=(8, 8, 4), circular=True)
        >>> head(torch.rand(2, 8, 16, 32)).shape
        torch.Size([2, 4, 4, 32])
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: tuple[int, int] | None = None,
        channels: tuple[int, int, int] = (256, 64, 16),
        h_strides: tuple[int, int, int] = (2, 2, 1),
        circular: bool = False,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if padding not in ("symmetric", "tf_same"):
            raise ValueError(f"padding must be 'symmetric' or 'tf_same', got {padding!r}")
        if len(channels) != len(h_strides):
            raise ValueError(f"channels and h_strides must have equal length, got {channels} and {h_strides}")
        self.in_channels = int(in_channels)
        self.circular = circular
        layers: list[nn.Module] = []
        prev = self.in_channels
        for i, (ch, sh) in enumerate(zip(channels, h_strides)):
            layers.append(nn.Conv2d(prev, ch, 3, stride=(sh, 1), padding=1))
            if i < len(channels) - 1:
                layers.append(nn.ReLU(inplace=True))
            prev = ch
        self.convs = nn.Sequential(*layers)
        self.out_channels = prev
        self.padding = padding
        if circular:
            circular_w_padding_(self.convs)
        elif padding == "tf_same":
            _tf_same_padding_(self.convs)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> unit map (B, C', h', w)."""
        check_feature_map(x, self.in_channels)
        y = self.convs(x)
        norm = y.flatten(1).norm(dim=1).clamp_min(1e-12)
        return y / norm[:, None, None, None]


register_head("dsm")(DSMHead)
