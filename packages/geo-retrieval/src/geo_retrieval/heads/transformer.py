"""A small pre-LN transformer encoder over feature tokens, with L2LTR's self-cross attention option."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import check_feature_map, register_head

__all__ = ["SelfCrossBlock", "TransformerHead", "attention", "sincos_pos_embed_2d"]


class SelfCrossBlock(nn.Module):
    """Pre-LN transformer block whose keys may come from a second stream.

    ``forward(x, key_source)`` computes
    ``x + Attn(Q = LN1(x) Wq, K = LNk(key_source) Wk, V = LN1(x) Wv)`` then ``+ MLP(LN2(.))``.
    With ``key_source is x`` and ``separate_key_norm=False`` it is a standard ViT block.

    Shapes: x (B, L, D), key_source (B, L, D) -> (B, L, D).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        separate_key_norm: bool = True,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.key_norm = nn.LayerNorm(dim, eps=1e-6) if separate_key_norm else None
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = float(attn_dropout)

    def forward(self, x: Tensor, key_source: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        key_source = x if key_source is None else key_source
        xn = self.norm1(x)
        kn = (self.key_norm or self.norm1)(key_source)
        h = self.num_heads

        def split(t: Tensor) -> Tensor:
            return t.reshape(b, -1, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(xn)), split(self.k(kn)), split(self.v(xn))
        drop = self.attn_dropout if self.training else 0.0
        attn = attention(q, k, v, dropout_p=drop)
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.dropout(self.mlp(self.norm2(x)))


def attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(d)) v``, with the fastest CPU path.

    ``F.scaled_dot_product_attention`` everywhere except half-precision inputs on the CPU (bf16
    under CPU autocast), where PyTorch's fused kernels are slow: there the product is written out
    in float32 (logits, softmax and the weighted sum) and the output cast back to the input dtype.
    Measured on the 2-core AVX-512 machine, one thread, L2LTR small's model forward + backward
    (attention over 65 tokens): 221 ms with the fused bf16 kernel, 218 ms with the fused kernel in
    float32, 164 ms written out in float32 (158 ms written out in bf16, which rounds the logits and
    the weights to bf16; not used).

    Shapes: (B, heads, Nq, d), (B, heads, Nk, d), (B, heads, Nk, d) -> (B, heads, Nq, d);
    ``dropout_p`` drops attention weights (training only; the caller passes 0 in eval).
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        weights = ((q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)
        if dropout_p > 0:
            weights = F.dropout(weights, dropout_p)
        return (weights @ v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def sincos_pos_embed_2d(dim: int, size: tuple[int, int], temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine-cosine position embedding in MAE's layout (``get_2d_sincos_pos_embed``).

    Token ``(i, j)`` of an ``h x w`` grid (row-major, row i, column j) gets
    ``[sin(j w_k), cos(j w_k), sin(i w_k), cos(i w_k)]`` with ``w_k = temperature ** (-k / (dim/4))``,
    ``k = 0 .. dim/4 - 1``: the column (azimuth, on panoramas and polar aerials) comes first.

    Shapes: -> (h*w, dim), float32. ``dim`` must be divisible by 4.
    """
    h, w = size
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for a 2-D sin-cos embedding, got {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    omega = temperature ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    j = cols.reshape(-1, 1) * omega
    i = rows.reshape(-1, 1) * omega
    return torch.cat([j.sin(), j.cos(), i.sin(), i.cos()], dim=1).float()


class TransformerHead(nn.Module):
    """Transformer encoder over the (h*w) feature tokens with a CLS output.

    Convention: tokens are the map's positions in row-major order, projected C -> ``dim`` (identity
    when equal), prepended with a learnable CLS token (or the ``cls`` passed to ``forward``), plus a
    learnable 1-D position embedding of length 1 + h*w (initialised ViT-style, N(0, 0.02), or with
    :func:`sincos_pos_embed_2d` for the patch tokens and zero for CLS). Blocks are pre-LN; the
    output is LayerNorm(CLS) (``pool="token"``) or LayerNorm(mean of the patch tokens)
    (``pool="avg"``), L2-normalised.

    Self-cross attention (L2LTR, ``self_cross=True``): with x_0 the embedded tokens and x_l the
    output of layer l, layer l takes queries and values from x_{l-1} and keys from x_{l-2}
    (layer 1: keys from x_0), the key stream having its own LayerNorm. ``self_cross=False`` is a
    plain ViT encoder.

    Args:
        in_channels: C of the input map.
        feature_size: (h, w); fixes the position-embedding length.
        dim: model width (default: ``in_channels``).
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio, dropout: block options (``dropout``: after the embedding, the attention
            projection and inside the MLP, ViT's ``dropout_rate``).
        attn_dropout: dropout on the attention weights (ViT's ``attention_dropout_rate``; 0.0 in
            the ViT / L2LTR configs).
        self_cross: L2LTR attention.
        out_dim: optional linear projection of the normalised CLS.
        pool: ``"token"`` (CLS output, L2LTR) or ``"avg"`` (mean of the patch tokens).
        pos_init: ``"normal"`` (trunc. N(0, 0.02), what ViT checkpoints are trained from) or
            ``"sincos"`` (2-D sin-cos; a randomly initialised small model trained on little data
            learns the layout from a near-zero start too slowly to use it).

    Shapes: (B, C, h, w) [, cls (B, C)] -> (B, out_dim or dim), L2-normalised.

    Example:
        >>> head = TransformerHead(in_channels=8, feature_size=(2, 3), depth=2, num_heads=2)
        >>> head(torch.rand(4, 8, 2, 3)).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: tuple[int, int],
        dim: int | None = None,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        self_cross: bool = True,
        out_dim: int | None = None,
        attn_dropout: float = 0.0,
        pool: str = "token",
        pos_init: str = "normal",
    ) -> None:
        super().__init__()
        if feature_size is None or len(feature_size) != 2:
            raise ValueError(f"feature_size must be (h, w), got {feature_size!r}")
        if pos_init not in ("normal", "sincos"):
            raise ValueError(f"pos_init must be 'normal' or 'sincos', got {pos_init!r}")
        if pool not in ("token", "avg"):
            raise ValueError(
                f"pool must be 'token' (the CLS output) or 'avg' (mean of the patch tokens), got {pool!r}"
            )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_channels = int(in_channels)
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))
        self.dim = int(dim or in_channels)
        self.self_cross = self_cross
        self.pool = pool
        n = self.feature_size[0] * self.feature_size[1]
        self.embed = nn.Linear(self.in_channels, self.dim) if self.dim != self.in_channels else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, self.dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            SelfCrossBlock(
                self.dim,
                num_heads,
                mlp_ratio,
                dropout,
                separate_key_norm=self_cross,
                attn_dropout=attn_dropout,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(self.dim, eps=1e-6)
        self.proj = nn.Linear(self.dim, out_dim) if out_dim is not None else None
        self.out_dim = int(out_dim) if out_dim is not None else self.dim
        if pos_init == "sincos":
            with torch.no_grad():
                self.pos_embed[0, 1:] = sincos_pos_embed_2d(self.dim, self.feature_size)
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor, cls: Tensor | None = None) -> Tensor:
        check_feature_map(x, self.in_channels, self.feature_size)
        b = x.shape[0]
        tokens = self.embed(x.flatten(2).transpose(1, 2))  # (B, N, dim)
        if cls is None:
            cls_tok = self.cls_token.expand(b, -1, -1)
        else:
            if cls.shape != (b, self.in_channels):
                raise ValueError(f"cls must be (B, C) = ({b}, {self.in_channels}), got {tuple(cls.shape)}")
            cls_tok = self.embed(cls)[:, None]
        h = self.pos_drop(torch.cat([cls_tok, tokens], dim=1) + self.pos_embed)
        prev = h  # x_{l-2}; for layer 1 it is x_0
        for block in self.blocks:
            if self.self_cross:
                h, prev = block(h, prev), h
            else:
                h = block(h)
        z = self.norm(h[:, 0] if self.pool == "token" else h[:, 1:].mean(dim=1))
        if self.proj is not None:
            z = self.proj(z)
        return F.normalize(z, dim=1)


register_head("transformer")(TransformerHead)
