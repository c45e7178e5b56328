"""SAFA spatial-aware feature aggregation (Shi et al., NeurIPS'19)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import check_feature_map, register_head

__all__ = ["SAFAHead", "safa_aggregate"]


def safa_aggregate(
    x: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    *,
    pool: str = "max",
    flatten: str = "head_major",
) -> Tensor:
    """Functional SAFA: spatial-aware aggregation of a feature map into one L2-normalised vector.

    Convention: positions n = i*w + j (row-major over (h, w)); m = channel-pool(x) in R^N;
    for each head k, a_k = (m W1_k + b1_k) W2_k + b2_k (no non-linearity, no softmax);
    f[k, c] = sum_n x[c, n] a_k[n]. ``flatten="head_major"`` orders the output k*C + c (SAFA),
    ``"channel_major"`` orders it c*K + k (Toker et al.). The result is L2-normalised.

    Args:
        x: (B, C, h, w) features, N = h*w.
        w1: (K, N, N2), b1: (K, N2), w2: (K, N2, N), b2: (K, N).
        pool: ``"max"`` or ``"mean"`` over channels.
        flatten: ``"head_major"`` or ``"channel_major"``.

    Returns:
        (B, K*C) unit descriptors.
    """
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
    if flatten not in ("head_major", "channel_major"):
        raise ValueError(f"flatten must be 'head_major' or 'channel_major', got {flatten!r}")
    b = x.shape[0]
    feats = x.flatten(2)  # (B, C, N)
    m = feats.amax(dim=1) if pool == "max" else feats.mean(dim=1)  # (B, N)
    hidden = torch.einsum("bn,knh->bkh", m, w1) + b1  # (B, K, N2)
    attn = torch.einsum("bkh,khn->bkn", hidden, w2) + b2  # (B, K, N)
    f = torch.einsum("bcn,bkn->bkc", feats, attn)  # (B, K, C)
    if flatten == "channel_major":
        f = f.transpose(1, 2)
    return F.normalize(f.reshape(b, -1), dim=1)


class SAFAHead(nn.Module):
    """SAFA head: K spatial-aware attention maps from a channel-pooled map, sized at build time.

    Args:
        in_channels: C of the input map.
        feature_size: (h, w) of the input map; N = h*w fixes the FC sizes (N -> N//2 -> N).
        num_heads: K (8 in SAFA and Toker).
        pool: channel pooling, ``"max"`` (paper, Toker, SAFA's first release) or ``"mean"`` (SAFA
            after commit dcb915e).
        flatten: ``"head_major"`` (SAFA, k*C + c) or ``"channel_major"`` (Toker, c*K + k).
        init_std: std of the truncated-normal weight init (truncated at 2 std), SAFA's 0.005.
        init_bias: constant bias init, SAFA's 0.1.

    Shapes: (B, C, h, w) -> (B, K*C), L2-normalised. ``out_dim`` = K*C.

    Example:
        >>> head = SAFAHead(in_channels=16, feature_size=(2, 5), num_heads=4)
        >>> head(torch.rand(3, 16, 2, 5)).shape
        torch.Size([3, 64])
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: tuple[int, int],
        num_heads: int = 8,
        pool: str = "max",
        flatten: str = "head_major",
        init_std: float = 0.005,
        init_bias: float = 0.1,
    ) -> None:
        super().__init__()
        if pool not in ("max", "mean"):
            raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
        if flatten not in ("head_major", "channel_major"):
            raise ValueError(f"flatten must be 'head_major' or 'channel_major', got {flatten!r}")
        if feature_size is None or len(feature_size) != 2:
            raise ValueError(f"feature_size must be (h, w), got {feature_size!r}")
        h, w = int(feature_size[0]), int(feature_size[1])
        n = h * w
        if n < 2:
            raise ValueError(f"SAFA needs at least 2 positions, got feature_size={feature_size}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.in_channels = int(in_channels)
        self.feature_size = (h, w)
        self.num_heads = int(num_heads)
        self.pool = pool
        self.flatten = flatten
        self.out_dim = self.num_heads * self.in_channels
        n2 = n // 2
        self.w1 = nn.Parameter(torch.empty(num_heads, n, n2))
        self.b1 = nn.Parameter(torch.empty(num_heads, n2))
        self.w2 = nn.Parameter(torch.empty(num_heads, n2, n))
        self.b2 = nn.Parameter(torch.empty(num_heads, n))
        self.init_std = init_std
        self.init_bias = init_bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for wt in (self.w1, self.w2):
            nn.init.trunc_normal_(wt, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)
        for bias in (self.b1, self.b2):
            nn.init.constant_(bias, self.init_bias)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, feature_size={self.feature_size}, num_heads={self.num_heads}, "
            f"pool={self.pool!r}, flatten={self.flatten!r}"
        )

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x, self.in_channels, self.feature_size)
        return safa_aggregate(x, self.w1, self.b1, self.w2, self.b2, pool=self.pool, flatten=self.flatten)


register_head("safa")(SAFAHead)
