import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geo_retrieval.heads import (
    DSMHead,
    SAFAHead,
    TransformerHead,
    circular_w_padding_,
    create_head,
    dsm_correlation,
    dsm_shift_to_degrees,
    dsm_similarity,
    list_heads,
)
from geo_retrieval.heads.transformer import attention, sincos_pos_embed_2d
from geo_transforms.testing import BaseTester


def test_registry():
    assert {"safa", "gem", "avg", "transformer", "dsm"} <= set(list_heads())
    with pytest.raises(ValueError, match="unknown head 'nope'; available"):
        create_head("nope")


class TestSAFAHead(BaseTester):
    def test_smoke(self, device, dtype):
        head = create_head("safa", in_channels=6, feature_size=(2, 5)).to(device, dtype)
        out = head(torch.rand(3, 6, 2, 5, device=device, dtype=dtype))
        assert out.shape == (3, 8 * 6) and head.out_dim == 48
        self.assert_close(out.norm(dim=1), torch.ones(3, device=device, dtype=dtype))

    def test_cardinality_and_init(self):
        head = SAFAHead(in_channels=4, feature_size=(4, 20), num_heads=8)  # SAFA's N = 80
        assert head.w1.shape == (8, 80, 40) and head.w2.shape == (8, 40, 80)
        assert head.b1.shape == (8, 40) and head.b2.shape == (8, 80)
        assert head.w1.abs().max() <= 0.01 and head.w2.abs().max() <= 0.01
        assert 0.003 < head.w1.std() < 0.006
        assert torch.all(head.b1 == 0.1) and torch.all(head.b2 == 0.1)
        toker = SAFAHead(in_channels=256, feature_size=(14, 77))  # N = 1078 -> 539
        assert toker.w1.shape == (8, 1078, 539)
        assert sum(p.numel() for p in toker.parameters()) == pytest.approx(9.31e6, rel=1e-3)

    @pytest.mark.parametrize("pool", ["max", "mean"])
    @pytest.mark.parametrize("flatten", ["head_major", "channel_major"])
    def test_matches_paper_formula(self, pool, flatten):
        torch.manual_seed(0)
        c, h, w, k = 5, 2, 3, 4
        head = SAFAHead(in_channels=c, feature_size=(h, w), num_heads=k, pool=pool, flatten=flatten).double()
        with torch.no_grad():
            for p in head.parameters():
                p.normal_()
        x = torch.randn(2, c, h, w, dtype=torch.float64)
        out = head(x)
        n = h * w
        for b in range(2):
            xn = x[b].permute(1, 2, 0).reshape(n, c)  # X[n, c], n row-major over (h, w)
            m = xn.max(dim=1).values if pool == "max" else xn.mean(dim=1)
            f = torch.zeros(k, c, dtype=torch.float64)
            for kk in range(k):
                a = (m @ head.w1[kk] + head.b1[kk]) @ head.w2[kk] + head.b2[kk]
                f[kk] = torch.einsum("nc,n->c", xn, a)
            vec = f.reshape(-1) if flatten == "head_major" else f.T.reshape(-1)
            self.assert_close(out[b], vec / vec.norm())

    def test_options_have_effect(self):
        torch.manual_seed(0)
        x = torch.rand(2, 3, 2, 4)
        a = SAFAHead(3, (2, 4), num_heads=2, pool="max")
        b = SAFAHead(3, (2, 4), num_heads=2, pool="mean")
        b.load_state_dict(a.state_dict())
        assert not torch.allclose(a(x), b(x))
        c = SAFAHead(3, (2, 4), num_heads=2, flatten="channel_major")
        c.load_state_dict(a.state_dict())
        self.assert_close(c(x).reshape(2, 3, 2).transpose(1, 2).reshape(2, 6), a(x))

    def test_exception(self):
        head = SAFAHead(in_channels=4, feature_size=(2, 5))
        with pytest.raises(ValueError, match=r"\(B, 4, 2, 5\)"):
            head(torch.rand(1, 4, 3, 5))
        with pytest.raises(ValueError, match="pool"):
            SAFAHead(4, (2, 5), pool="sum")
        with pytest.raises(ValueError, match="flatten"):
            SAFAHead(4, (2, 5), flatten="x")

    def test_gradcheck(self):
        head = SAFAHead(in_channels=3, feature_size=(2, 2), num_heads=2).double()
        x = torch.rand(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
        assert self.gradcheck(head, (x,))


class TestPoolingHeads(BaseTester):
    def test_gem_p1_is_avg(self):
        x = torch.rand(2, 4, 3, 5) + 0.1
        gem = create_head("gem", in_channels=4, p=1.0, learn_p=False)
        avg = create_head("avg", in_channels=4)
        self.assert_close(gem(x), avg(x))
        self.assert_close(avg(x), F.normalize(x.mean(dim=(2, 3)), dim=1))

    def test_gem_p_learnable_and_projection(self):
        head = create_head("gem", in_channels=4, out_dim=7)
        out = head(torch.rand(3, 4, 2, 2))
        assert out.shape == (3, 7) and head.out_dim == 7
        out.sum().backward()
        assert head.p.grad is not None
        large = create_head("gem", in_channels=4, p=50.0, learn_p=False)
        x = torch.rand(1, 4, 3, 3)
        self.assert_close(large(x), F.normalize(x.amax(dim=(2, 3)), dim=1), rtol=0.05, atol=0.05)

    def test_exception(self):
        with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
            create_head("avg", in_channels=4)(torch.rand(2, 3, 2, 2))


class TestAttention:
    """``attention`` is SDPA; its written-out CPU half-precision path must agree with it."""

    def _qkv(self, dtype, nq=65, nk=65):
        g = torch.Generator().manual_seed(0)
        return [torch.randn(3, 4, n, 32, generator=g, dtype=torch.float64).to(dtype) for n in (nq, nk, nk)]

    def test_float_path_is_sdpa(self):
        q, k, v = self._qkv(torch.float64)
        assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))

    @pytest.mark.parametrize("nk", [65, 17])
    def test_bf16_path_matches_float64_reference(self, nk):
        q, k, v = self._qkv(torch.float64, nk=nk)
        ref = torch.softmax(q @ k.transpose(-2, -1) / 32**0.5, dim=-1) @ v
        out = attention(*(t.to(torch.bfloat16) for t in (q, k, v)))
        assert out.dtype == torch.bfloat16 and out.shape == ref.shape
        fused = F.scaled_dot_product_attention(*(t.to(torch.bfloat16) for t in (q, k, v)))
        err, err_fused = (out.double() - ref).abs().max(), (fused.double() - ref).abs().max()
        # float32 inside, one bf16 rounding of the output: as exact as the fused kernel
        assert err < 0.01 and err <= 1.05 * err_fused + 1e-4

    def test_bf16_path_gradients(self):
        q, k, v = (t.requires_grad_() for t in self._qkv(torch.float64))
        (attention(q, k, v) ** 2).sum().backward()
        ref_grads = [t.grad.clone() for t in (q, k, v)]
        q2, k2, v2 = (t.detach().to(torch.bfloat16).requires_grad_() for t in (q, k, v))
        (attention(q2, k2, v2).float() ** 2).sum().backward()
        for got, ref in zip((q2.grad, k2.grad, v2.grad), ref_grads):
            assert (got.double() - ref).abs().max() < 0.05 * ref.abs().max()

    def test_dropout_only_in_written_out_path_when_asked(self):
        q, k, v = (t.to(torch.bfloat16) for t in self._qkv(torch.float64))
        torch.manual_seed(0)
        assert torch.equal(attention(q, k, v, 0.0), attention(q, k, v, 0.0))
        assert not torch.equal(attention(q, k, v, 0.5), attention(q, k, v, 0.0))


class TestTransformerHead(BaseTester):
    def test_smoke(self, device):
        head = TransformerHead(in_channels=6, feature_size=(2, 3), dim=8, depth=2, num_heads=2, out_dim=5).to(
            device
        )
        out = head(torch.rand(4, 6, 2, 3, device=device))
        assert out.shape == (4, 5)
        self.assert_close(out.norm(dim=1), torch.ones(4, device=device))

    def test_self_cross_key_streams(self):
        """Layer l takes keys from x_{l-2} (layer 1: x_0) through its own LayerNorm."""
        torch.manual_seed(0)
        head = TransformerHead(in_channels=4, feature_size=(1, 3), depth=4, num_heads=2).eval()
        block_in, key_in = [], []
        for blk in head.blocks:
            blk.register_forward_pre_hook(lambda m, a: block_in.append(a[0].detach()))
            blk.key_norm.register_forward_pre_hook(lambda m, a: key_in.append(a[0].detach()))
        head(torch.rand(2, 4, 1, 3))
        self.assert_close(key_in[0], block_in[0])  # layer 1: K from x_0
        for layer in range(1, 4):  # layer l+1: keys x_{l-1}, queries x_l
            self.assert_close(key_in[layer], block_in[layer - 1])
            assert not torch.allclose(key_in[layer], block_in[layer])

    def test_block_is_standard_attention_without_cross(self):
        torch.manual_seed(0)
        head = TransformerHead(
            in_channels=4, feature_size=(1, 3), depth=2, num_heads=1, self_cross=False
        ).eval()
        blk = head.blocks[0]
        assert blk.key_norm is None
        x = torch.rand(2, 4, 4)
        xn = blk.norm1(x)
        q, k, v = blk.q(xn), blk.k(xn), blk.v(xn)
        att = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v
        y = x + blk.proj(att)
        y = y + blk.mlp(blk.norm2(y))
        self.assert_close(blk(x), y)

    def test_cross_changes_output(self):
        torch.manual_seed(0)
        a = TransformerHead(in_channels=4, feature_size=(1, 3), depth=3, num_heads=2, self_cross=True).eval()
        x = torch.rand(2, 4, 1, 3)
        ref = a(x)
        with torch.no_grad():  # break the layer-1 key norm: only matters if the key stream is used
            a.blocks[1].key_norm.weight.mul_(3.0)
        assert not torch.allclose(a(x), ref)

    def test_cls_input(self):
        head = TransformerHead(in_channels=4, feature_size=(1, 2), depth=1, num_heads=2)
        x = torch.rand(2, 4, 1, 2)
        assert not torch.allclose(head(x, cls=torch.rand(2, 4)), head(x))
        with pytest.raises(ValueError, match="cls"):
            head(x, cls=torch.rand(2, 3))

    def test_sincos_matches_mae(self):
        """Oracle: a numpy port of MAE's get_2d_sincos_pos_embed (models_mae / util/pos_embed.py)."""

        def mae_1d(d, pos):
            omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
            out = np.einsum("m,d->md", pos.reshape(-1), omega)
            return np.concatenate([np.sin(out), np.cos(out)], axis=1)

        def mae_2d(d, h, w):
            grid = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))  # (w, h) order
            return np.concatenate([mae_1d(d // 2, grid[0]), mae_1d(d // 2, grid[1])], axis=1)

        for d, (h, w) in [(8, (2, 3)), (128, (4, 16)), (16, (1, 5))]:
            ours = sincos_pos_embed_2d(d, (h, w))
            self.assert_close(ours, torch.from_numpy(mae_2d(d, h, w)).float(), atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="divisible by 4"):
            sincos_pos_embed_2d(6, (2, 2))

    def test_pos_init_and_pool_options(self):
        torch.manual_seed(0)
        head = TransformerHead(
            in_channels=4, feature_size=(2, 4), dim=8, depth=1, num_heads=2, pos_init="sincos"
        )
        self.assert_close(head.pos_embed[0, 1:].detach(), sincos_pos_embed_2d(8, (2, 4)))
        assert torch.all(head.pos_embed[0, 0] == 0)
        assert head.pos_embed.requires_grad  # an initialisation, still learned
        avg = TransformerHead(
            in_channels=4, feature_size=(2, 4), dim=8, depth=1, num_heads=2, pool="avg"
        ).eval()
        x = torch.rand(3, 4, 2, 4)
        tokens = []
        avg.norm.register_forward_pre_hook(lambda m, a: tokens.append(a[0]))
        blocks_out = []
        avg.blocks[-1].register_forward_hook(lambda m, a, out: blocks_out.append(out))
        out = avg(x)
        self.assert_close(tokens[0], blocks_out[0][:, 1:].mean(dim=1))  # the patch tokens, not CLS
        self.assert_close(out, F.normalize(avg.norm(blocks_out[0][:, 1:].mean(dim=1)), dim=1))
        with pytest.raises(ValueError, match="pool"):
            TransformerHead(in_channels=4, feature_size=(1, 2), pool="max")
        with pytest.raises(ValueError, match="pos_init"):
            TransformerHead(in_channels=4, feature_size=(1, 2), pos_init="learned")

    def test_gradcheck(self):
        head = TransformerHead(in_channels=2, feature_size=(1, 2), depth=2, num_heads=1).double()
        x = torch.rand(2, 2, 1, 2, dtype=torch.float64, requires_grad=True)
        assert self.gradcheck(head, (x,))


def _naive_corr(g, a):
    bg, _, _, wg = g.shape
    ba, _, _, width = a.shape
    out = torch.zeros(bg, ba, width, dtype=g.dtype)
    for i in range(bg):
        for j in range(ba):
            for s in range(width):
                cols = [(s + v) % width for v in range(wg)]
                out[i, j, s] = (g[i] * a[j][..., cols]).sum()
    return out


class TestDSM(BaseTester):
    @pytest.mark.parametrize("wg", [16, 7])
    def test_correlation_matches_naive_loop(self, wg):
        torch.manual_seed(0)
        g = torch.randn(3, 4, 2, wg, dtype=torch.float64)
        a = torch.randn(2, 4, 2, 16, dtype=torch.float64)
        ref = _naive_corr(g, a)
        self.assert_close(dsm_correlation(g, a, method="fft"), ref)
        self.assert_close(dsm_correlation(g, a, method="direct"), ref)

    @pytest.mark.parametrize("s", [0, 1, 5, 15])
    def test_recovers_circular_shift(self, s):
        torch.manual_seed(s)
        ground = torch.randn(4, 3, 2, 16)
        aerial = torch.roll(ground, s, dims=-1)
        sim, shift = dsm_similarity(ground, aerial)
        assert torch.all(shift.diagonal() == s)
        self.assert_close(sim.diagonal(), torch.ones(4))
        assert dsm_shift_to_degrees(shift, 16)[0, 0].item() == pytest.approx(s * 22.5)

    def test_limited_fov_crop(self):
        """Ground narrower than W: crop the aerial at the best shift, L2-normalise, inner product."""
        torch.manual_seed(1)
        full = torch.randn(3, 4, 2, 16, dtype=torch.float64)
        ground = torch.roll(full, -5, dims=-1)[..., :6] + 0.3 * torch.randn(3, 4, 2, 6, dtype=torch.float64)
        aerial = torch.randn(4, 4, 2, 16, dtype=torch.float64)
        aerial[:3] = full
        for method in ("fft", "direct"):
            sim, shift = dsm_similarity(ground, aerial, method=method)
            assert torch.all(shift.diagonal()[:3] == 5)
            corr = _naive_corr(ground, aerial)
            for i in range(3):
                for j in range(4):
                    s = int(corr[i, j].argmax())
                    assert int(shift[i, j]) == s
                    crop = aerial[j][..., [(s + v) % 16 for v in range(6)]]
                    expected = (
                        F.normalize(crop.flatten(), dim=0) * F.normalize(ground[i].flatten(), dim=0)
                    ).sum()
                    self.assert_close(sim[i, j], expected)

    def test_gradients(self):
        g = torch.randn(2, 3, 2, 8, requires_grad=True)
        a = torch.randn(3, 3, 2, 16, requires_grad=True)
        sim, _ = dsm_similarity(g, a)
        sim.sum().backward()
        assert g.grad.abs().sum() > 0 and a.grad.abs().sum() > 0

    def test_gradcheck(self):
        g = torch.randn(2, 2, 1, 4, dtype=torch.float64, requires_grad=True)
        a = torch.randn(2, 2, 1, 8, dtype=torch.float64, requires_grad=True)
        assert self.gradcheck(lambda x, y: dsm_similarity(x, y).similarity, (g, a))

    def test_exception(self):
        with pytest.raises(ValueError, match="share C and h"):
            dsm_similarity(torch.rand(1, 3, 2, 4), torch.rand(1, 4, 2, 8))
        with pytest.raises(ValueError, match="exceed"):
            dsm_similarity(torch.rand(1, 3, 2, 9), torch.rand(1, 3, 2, 8))
        with pytest.raises(ValueError, match="method"):
            dsm_correlation(torch.rand(1, 3, 2, 4), torch.rand(1, 3, 2, 8), method="loop")

    def test_head_shapes(self):
        head = create_head("dsm", in_channels=512)
        out = head(torch.rand(1, 512, 16, 64))  # DSM: 128x512 input -> conv4_3 16x64 -> 4x64x16
        assert out.shape == (1, 16, 4, 64)
        self.assert_close(out.flatten(1).norm(dim=1), torch.ones(1))

    def test_circular_head_is_roll_equivariant(self):
        torch.manual_seed(0)
        aerial_head = DSMHead(in_channels=4, channels=(6, 5, 3), circular=True)
        ground_head = DSMHead(in_channels=4, channels=(6, 5, 3), circular=False)
        ground_head.load_state_dict(aerial_head.state_dict())  # same parameter names
        x = torch.rand(2, 4, 8, 12)
        self.assert_close(aerial_head(torch.roll(x, 3, dims=-1)), torch.roll(aerial_head(x), 3, dims=-1))
        assert not torch.allclose(
            ground_head(torch.roll(x, 3, dims=-1)), torch.roll(ground_head(x), 3, dims=-1)
        )

    def test_circular_padding_matches_manual(self):
        conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        x = torch.rand(1, 2, 5, 7)
        ref = F.conv2d(F.pad(F.pad(x, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1)), conv.weight, conv.bias)
        circular_w_padding_(conv)
        self.assert_close(conv(x), ref)
        circular_w_padding_(conv)  # idempotent
        self.assert_close(conv(x), ref)
