"""Global pooling heads: average and GeM, with an optional linear projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import check_feature_map, register_head

__all__ = ["AvgHead", "GeMHead", "gem"]


def gem(x: Tensor, p: Tensor | float = 3.0, eps: float = 1e-6) -> Tensor:
    """Generalised-mean pooling: (mean over h, w of clamp(x, eps)^p)^(1/p); (B, C, h, w) -> (B, C)."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class _PoolHead(nn.Module):
    def __init__(
        self, in_channels: int, out_dim: int | None = None, feature_size: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.proj = nn.Linear(self.in_channels, out_dim) if out_dim is not None else None
        self.out_dim = int(out_dim) if out_dim is not None else self.in_channels

    def _pool(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, out_dim), L2-normalised."""
        check_feature_map(x, self.in_channels)
        z = self._pool(x)
        if self.proj is not None:
            z = self.proj(z)
        return F.normalize(z, dim=1)


class AvgHead(_PoolHead):
    """Global average pooling (+ optional ``nn.Linear(C, out_dim)``), L2-normalised.

    On a (B, C, 1, 1) map (e.g. a ConvNeXt backbone with ``pool=True``) it only normalises.
    ``feature_size`` is accepted (and ignored) so every head builds from the same keywords.

    Example:
        >>> AvgHead(in_channels=4, out_dim=3)(torch.rand(2, 4, 5, 5)).shape
        torch.Size([2, 3])
    """

    def _pool(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


class GeMHead(_PoolHead):
    """GeM pooling with learnable exponent ``p`` (init 3) (+ optional projection), L2-normalised.

    Args:
        in_channels: C.
        out_dim: optional projection size.
        p: initial exponent; ``learn_p=False`` keeps it fixed.
        eps: clamp floor before the power.
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int | None = None,
        feature_size: tuple[int, int] | None = None,
        p: float = 3.0,
        learn_p: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(in_channels, out_dim, feature_size)
        p_t = torch.tensor(float(p))
        if learn_p:
            self.p = nn.Parameter(p_t)
        else:
            self.register_buffer("p", p_t)
        self.eps = eps

    def _pool(self, x: Tensor) -> Tensor:
        return gem(x, self.p, self.eps)


register_head("avg")(AvgHead)
register_head("gem")(GeMHead)
