import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geo_synthesis.layers import (
    ConvLayer,
    ResidualBlock,
    ResidualBlockDown,
    ResidualBlockUp,
    SelfAttention,
    init_normal_,
    remove_spectral_norm_,
    sn_conv2d,
)
from geo_transforms.testing import BaseTester


def _reference_attention(att: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """SAGAN attention written out with explicit loops over batch elements (spectral_norm=False)."""
    b, c, h, w = x.shape
    outs = []
    for i in range(b):
        xi = x[i : i + 1]
        theta = F.conv2d(xi, att.theta.weight)[0].reshape(c // 8, h * w)
        phi = F.max_pool2d(F.conv2d(xi, att.phi.weight), 2)[0].reshape(c // 8, -1)
        g = F.max_pool2d(F.conv2d(xi, att.g.weight), 2)[0].reshape(c // 2, -1)
        beta = torch.softmax(theta.T @ phi, dim=1)  # (HW, HW/4), rows sum to 1 over keys
        y = (g @ beta.T).reshape(1, c // 2, h, w)
        outs.append(att.gamma * F.conv2d(y, att.o.weight) + xi)
    return torch.cat(outs)


class TestSelfAttention(BaseTester):
    def test_smoke_identity_at_init(self, device, dtype):
        att = SelfAttention(16).to(device, dtype)
        x = torch.randn(2, 16, 6, 10, device=device, dtype=dtype)
        assert att.gamma.item() == 0.0
        assert torch.equal(att(x), x)

    def test_exception(self):
        with pytest.raises(ValueError, match="multiple of 8"):
            SelfAttention(12)
        att = SelfAttention(16)
        with pytest.raises(ValueError, match="must be"):
            att(torch.zeros(1, 8, 4, 4))
        with pytest.raises(ValueError, match="H, W >= 2"):
            att(torch.zeros(1, 16, 1, 8))

    def test_cardinality_and_widths(self):
        att = SelfAttention(64)
        assert att.theta.weight.shape == (8, 64, 1, 1)
        assert att.phi.weight.shape == (8, 64, 1, 1)
        assert att.g.weight.shape == (32, 64, 1, 1)
        assert att.o.weight.shape == (64, 32, 1, 1)
        assert all(m.bias is None for m in (att.theta, att.phi, att.g, att.o))
        assert att(torch.randn(1, 64, 5, 7)).shape == (1, 64, 5, 7)

    def test_matches_reference(self, dtype):
        torch.manual_seed(0)
        att = SelfAttention(16, spectral_norm=False).to(dtype=dtype)
        with torch.no_grad():
            att.gamma.fill_(0.7)
        x = torch.randn(3, 16, 6, 8, dtype=dtype)
        out = att(x)
        assert not torch.allclose(out, x)
        self.assert_close(out, _reference_attention(att, x))

    def test_spectral_norm_on_all_convs(self):
        att = SelfAttention(16)
        for name in ("theta", "phi", "g", "o"):
            assert hasattr(getattr(att, name), "parametrizations"), name

    def test_gradcheck(self):
        torch.manual_seed(0)
        att = SelfAttention(8, spectral_norm=False).double()
        with torch.no_grad():
            att.gamma.fill_(0.5)
        x = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
        assert self.gradcheck(att, (x,))


class TestResidualBlocks(BaseTester):
    @pytest.mark.parametrize("size", [(8, 8), (16, 40), (14, 22)])
    def test_shapes(self, size):
        h, w = size
        x = torch.randn(2, 8, h, w)
        assert ResidualBlockDown(8, 16)(x).shape == (2, 16, h // 2, w // 2)
        assert ResidualBlockUp(8, 4)(x).shape == (2, 4, 2 * h, 2 * w)
        assert ResidualBlock(8)(x).shape == (2, 8, h, w)
        assert ConvLayer(8, 5, 7)(x).shape == (2, 5, h, w)

    def test_down_block_is_preactivation(self):
        # a non-negative input: the first ReLU is the identity; the shortcut has no activation
        torch.manual_seed(0)
        blk = ResidualBlockDown(3, 4, spectral_norm=False)
        x = torch.randn(1, 3, 8, 8)
        main = blk.conv_r2(F.relu(blk.conv_r1(F.relu(x))))
        expected = F.avg_pool2d(main, 2) + F.avg_pool2d(blk.conv_l(x), 2)
        self.assert_close(blk(x), expected)

    def test_gradcheck_blocks(self):
        torch.manual_seed(0)
        for blk in (ResidualBlockDown(2, 2, spectral_norm=False), ResidualBlockUp(2, 2, spectral_norm=False)):
            blk = blk.double()
            x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
            assert self.gradcheck(blk, (x,))


class TestSpectralNorm(BaseTester):
    def test_sigma_is_one_after_power_iterations(self):
        torch.manual_seed(0)
        conv = sn_conv2d(8, 16, 3, padding=1)
        with torch.no_grad():
            conv.parametrizations.weight.original.mul_(10.0)
        for _ in range(30):  # training-mode forwards run the power iteration
            conv(torch.zeros(1, 8, 4, 4))
        sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(16, -1), ord=2)
        assert abs(float(sigma) - 1.0) < 1e-3

    def test_remove_spectral_norm_keeps_outputs_and_gives_plain_keys(self):
        torch.manual_seed(0)
        blk = ResidualBlockDown(4, 8)
        blk(torch.randn(1, 4, 8, 8))  # one power iteration
        blk.eval()
        x = torch.randn(2, 4, 8, 8)
        before = blk(x)
        remove_spectral_norm_(blk)
        self.assert_close(blk(x), before)
        assert set(blk.state_dict()) == set(ResidualBlockDown(4, 8, spectral_norm=False).state_dict())
        assert "conv_r1.conv2d.weight" in blk.state_dict()


def test_init_normal_std_and_zero_bias():
    torch.manual_seed(0)
    net = nn.Sequential(sn_conv2d(64, 128, 3), nn.Conv2d(64, 64, 3), nn.InstanceNorm2d(4, affine=True))
    with torch.no_grad():
        net[1].bias.fill_(3.0)
    init_normal_(net, std=0.02)
    orig = net[0].parametrizations.weight.original
    assert abs(float(orig.std()) - 0.02) < 1e-3 and abs(float(orig.mean())) < 1e-3
    assert abs(float(net[1].weight.std()) - 0.02) < 2e-3
    assert torch.count_nonzero(net[1].bias) == 0 and torch.count_nonzero(net[0].bias) == 0
    assert torch.all(net[2].weight == 1)
