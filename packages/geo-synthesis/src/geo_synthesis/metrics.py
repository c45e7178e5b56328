"""Synthesis quality metrics: SSIM, PSNR and sharpness difference, per image and per dataset.

Convention:
    ``pred`` and ``target`` are (B, C, H, W) floating images on the same intensity scale
    [0, ``data_range``] (Toker's generator outputs [-1, 1]: pass ``(x + 1) / 2`` with
    ``data_range=1``, the form we report; PSNR is the same for raw [-1, 1] values with
    ``data_range=2``, SSIM's luminance term and sharpness difference are not). Per-image functions
    return (B,) tensors; the
    dataset value is the mean of the per-image values (as in the cross-view synthesis literature:
    Regmi & Borji CVPR'18, SelectionGAN CVPR'19, Toker CVPR'21).

    - **SSIM** (Wang et al., TIP 2004): :func:`kornia.metrics.ssim` (11x11 Gaussian window,
      sigma 1.5, K1 0.01, K2 0.03), ``padding="valid"`` (no border effects), map averaged over
      channels and positions of each image.
    - **PSNR**: ``10 log10(data_range^2 / MSE)`` with the MSE of each image (kornia's ``psnr``
      pools the MSE over the whole batch, so it is not used for the per-image value).
    - **Sharpness difference** (Mathieu, Couprie, LeCun, ICLR'16, "Deep multi-scale video
      prediction beyond mean square error", Eq. 8; used by Regmi & Borji and SelectionGAN):
      with ``grad_i Y = |Y[i, j] - Y[i-1, j]|`` and ``grad_j Y = |Y[i, j] - Y[i, j-1]|`` on the
      (H-1) x (W-1) interior,
      ``SD = 10 log10(data_range^2 / mean_{c,i,j} |(grad_i Y + grad_j Y) - (grad_i P + grad_j P)|)``.
      Higher is better. Unlike SSIM and PSNR, SD depends on the intensity scale: rescaling both
      images and ``data_range`` by s adds ``10 log10(s)`` dB (the numerator scales by s^2, the
      mean gradient difference by s), so report it with its ``data_range``.

    Identical images give ``inf`` for PSNR and SD (no clamping); dataset means then are ``inf``.

    **FID / KID are not provided.** They need Inception-v3 weights (torchmetrics' FID downloads
    torch-fidelity's ``pt_inception-2015-12-05`` at first use); this toolkit runs offline and does
    not fake them with a randomly initialised network.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
from torch import Tensor

__all__ = [
    "SynthesisMetricAccumulator",
    "SynthesisScores",
    "psnr",
    "sharpness_difference",
    "ssim",
    "synthesis_metrics",
]


def _check_pair(pred: Tensor, target: Tensor) -> None:
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must be (B, C, H, W) of equal shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def _wide(x: Tensor) -> Tensor:
    return x.double() if x.dtype == torch.float64 else x.float()


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB: ``10 log10(data_range^2 / mean((pred - target)^2))``.

    Args:
        pred, target: (B, C, H, W) on the scale [0, data_range].
        data_range: max intensity (1 for [0, 1], 2 for [-1, 1], 255 for bytes).

    Returns:
        (B,) float32 (float64 for float64 inputs); ``inf`` for identical images.

    Example:
        >>> x = torch.zeros(1, 3, 4, 4)
        >>> float(psnr(x + 0.1, x))  # MSE 0.01 -> 20 dB
        20.0
    """
    _check_pair(pred, target)
    mse = (_wide(pred) - _wide(target)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, window_size: int = 11) -> Tensor:
    """Per-image SSIM (kornia, Gaussian window, ``padding="valid"``), mean over channels and positions.

    Args:
        pred, target: (B, C, H, W), H and W >= ``window_size``.
        data_range: max intensity (sets C1 = (0.01 L)^2, C2 = (0.03 L)^2).
        window_size: odd Gaussian window (11 in Wang et al.).

    Returns:
        (B,) SSIM values in [-1, 1]; 1 for identical images.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> ssim(x, x)
        tensor([1., 1.])
    """
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(
            f"images must be at least {window_size}x{window_size} for SSIM, got {tuple(pred.shape[-2:])}"
        )
    smap = kornia.metrics.ssim(
        _wide(pred), _wide(target), window_size, max_val=float(data_range), padding="valid"
    )
    return smap.flatten(1).mean(1)


def sharpness_difference(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image sharpness difference in dB (Mathieu et al., ICLR'16; see module docstring).

    Args:
        pred, target: (B, C, H, W) on the scale [0, data_range], H, W >= 2.
        data_range: max intensity.

    Returns:
        (B,) values; higher means gradients closer to the target's; ``inf`` for identical images.

    Example:
        >>> y = torch.zeros(1, 1, 3, 3); y[..., 1, 1] = 1.0
        >>> float(sharpness_difference(torch.zeros_like(y), y))  # mean |grad diff| = 1/4*(2+1+1+0)=1
        0.0
    """
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < 2:
        raise ValueError(f"images must be at least 2x2, got {tuple(pred.shape[-2:])}")

    def grad_sum(x: Tensor) -> Tensor:
        x = _wide(x)
        gi = (x[..., 1:, 1:] - x[..., :-1, 1:]).abs()
        gj = (x[..., 1:, 1:] - x[..., 1:, :-1]).abs()
        return gi + gj

    diff = (grad_sum(target) - grad_sum(pred)).abs().flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / diff)


def synthesis_metrics(pred: Tensor, target: Tensor, data_range: float = 1.0) -> dict[str, Tensor]:
    """``{"ssim", "psnr", "sharpness_difference"}`` per image, each (B,)."""
    return {
        "ssim": ssim(pred, target, data_range),
        "psnr": psnr(pred, target, data_range),
        "sharpness_difference": sharpness_difference(pred, target, data_range),
    }


@dataclass(frozen=True)
class SynthesisScores:
    """Dataset means of the per-image metrics (see module docstring)."""

    ssim: float
    psnr: float
    sharpness_difference: float
    n_images: int
    data_range: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "SSIM": self.ssim,
            "PSNR": self.psnr,
            "SD": self.sharpness_difference,
            "n_images": self.n_images,
            "data_range": self.data_range,
        }


class SynthesisMetricAccumulator:
    """Accumulate per-image metrics over batches; :meth:`compute` returns the dataset means.

    Example:
        >>> acc = SynthesisMetricAccumulator()
        >>> x = torch.rand(2, 3, 16, 16)
        >>> _ = acc.update(x * 0.5, x)
        >>> acc.compute().n_images
        2
    """

    def __init__(self, data_range: float = 1.0) -> None:
        self.data_range = float(data_range)
        self.reset()

    def reset(self) -> None:
        self._sums = {"ssim": 0.0, "psnr": 0.0, "sharpness_difference": 0.0}
        self._n = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Add a batch; returns its per-image values."""
        values = synthesis_metrics(pred.detach(), target.detach(), self.data_range)
        for k, v in values.items():
            self._sums[k] += float(v.double().sum())
        self._n += pred.shape[0]
        return values

    def compute(self) -> SynthesisScores:
        if self._n == 0:
            raise ValueError("no images accumulated")
        mean = {k: v / self._n for k, v in self._sums.items()}
        return SynthesisScores(
            ssim=mean["ssim"],
            psnr=mean["psnr"],
            sharpness_difference=mean["sharpness_difference"],
            n_images=self._n,
            data_range=self.data_range,
        )
