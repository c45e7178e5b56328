"""GeoDTR's geometric layout extractor (Zhang et al., AAAI'23, ``zxh009123/GeoDTR``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import check_feature_map, register_head

__all__ = ["GeoDTRHead"]


class GeoDTRHead(nn.Module):
    """K spatial layout descriptors from a feature map, refined by a transformer over the K tokens.

    Convention: positions n = i*w + j (row-major over (h, w)), N = h*w, hidden width d = N / 2 (N must be
    even). With m[n] = max_c x[c, n] and p[n] = argmax_c x[c, n] / C (the first maximum),

    - tokens t_k = m W1_k + b1_k (K x d);
    - with ``tr_layers > 0``, the index-aware position embedding e_k = hardtanh(p P_k + E_k) is added,
      then dropout and a post-LN ``nn.TransformerEncoder`` (``tr_layers`` layers, ``tr_heads`` heads,
      feed-forward ``d_hid``, GELU, dropout ``dropout``) with a final LayerNorm;
    - layouts a_k = hardtanh(t_k W2_k + b2_k) in R^N;
    - f[c, k] = sum_n x[c, n] a_k[n], flattened c*K + k (channel-major), L2-normalised.

    Args:
        in_channels: C.
        feature_size: (h, w) of the map; fixes N.
        num_descriptors: K (GeoDTR's ``n_des``).
        tr_heads, tr_layers, d_hid, dropout: the transformer (``TR_heads``, ``TR_layers``, ``TR_dim``,
            ``dropout``); ``tr_layers=0`` drops it and the position embedding.

    Shapes: (B, C, h, w) -> (B, C*K), L2-normalised.

    Example:
        >>> head = GeoDTRHead(in_channels=8, feature_size=(2, 4), num_descriptors=3, tr_heads=2, d_hid=16)
        >>> head(torch.rand(5, 8, 2, 4)).shape
        torch.Size([5, 24])
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: tuple[int, int],
        num_descriptors: int = 8,
        tr_heads: int = 4,
        tr_layers: int = 2,
        d_hid: int = 2048,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if feature_size is None or len(feature_size) != 2:
            raise ValueError(f"feature_size must be (h, w), got {feature_size!r}")
        self.in_channels = int(in_channels)
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))
        n = self.feature_size[0] * self.feature_size[1]
        if n % 2:
            raise ValueError(f"GeoDTR needs an even number of positions h*w, got {self.feature_size}")
        k, d = int(num_descriptors), n // 2
        if tr_layers and d % tr_heads:
            raise ValueError(f"the hidden width h*w/2 = {d} must be divisible by tr_heads ({tr_heads})")
        self.num_descriptors = k
        self.out_dim = self.in_channels * k
        self.w1 = nn.Parameter(torch.empty(n, k, d).normal_(0.0, 0.005))
        self.b1 = nn.Parameter(torch.full((1, k, d), 0.1))
        self.w2 = nn.Parameter(torch.empty(d, k, n).normal_(0.0, 0.005))
        self.b2 = nn.Parameter(torch.full((1, k, n), 0.1))
        self.pos_linear: nn.Parameter | None = None
        self.pos_embedding: nn.Parameter | None = None
        self.encoder: nn.TransformerEncoder | None = None
        if tr_layers:
            self.pos_linear = nn.Parameter(torch.empty(n, k, d).normal_(0.0, 0.005))
            self.pos_embedding = nn.Parameter(torch.zeros(1, k, d))
            self.pos_drop = nn.Dropout(dropout)
            layer = nn.TransformerEncoderLayer(
                d, tr_heads, d_hid, dropout, activation="gelu", batch_first=True
            )
            self.encoder = nn.TransformerEncoder(
                layer, num_layers=tr_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
            )

    def layouts(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> the layouts a (B, N, K) in [-1, 1]."""
        check_feature_map(x, self.in_channels, self.feature_size)
        flat = x.flatten(2)
        m, idx = flat.max(dim=1)
        t = torch.einsum("bi,idj->bdj", m, self.w1) + self.b1
        if self.encoder is not None and self.pos_linear is not None and self.pos_embedding is not None:
            p = idx.to(flat.dtype) / flat.shape[1]
            e = F.hardtanh(torch.einsum("bi,idj->bdj", p, self.pos_linear) + self.pos_embedding)
            t = self.encoder(self.pos_drop(t + e))
        a = torch.einsum("bdj,jdi->bdi", t, self.w2) + self.b2
        return F.hardtanh(a.permute(0, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        a = self.layouts(x)
        f = torch.matmul(x.flatten(2), a).reshape(x.shape[0], -1)
        return F.normalize(f, dim=1)


register_head("geodtr")(GeoDTRHead)
