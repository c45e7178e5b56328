import pytest
import torch

from geo_synthesis.discriminators import MultiScaleDiscriminator, PatchDiscriminator, patch_output_size
from geo_synthesis.layers import remove_spectral_norm_
from geo_transforms.testing import BaseTester


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class TestPatchDiscriminator(BaseTester):
    def test_paper_config(self):
        d = PatchDiscriminator(6, base=64)
        assert round(_count(d) / 1e6, 2) == 2.79  # docs/methods.md#toker21: 2.79 M
        with torch.no_grad():
            out = d(torch.zeros(1, 3, 112, 616), torch.zeros(1, 3, 112, 616))
        assert out.shape == (1, 1, 12, 75)

    @pytest.mark.parametrize("size", [(32, 128), (64, 256), (40, 96), (24, 24)])
    def test_cardinality(self, size, device, dtype):
        d = PatchDiscriminator(6, base=8).to(device, dtype)
        x = torch.randn(2, 3, *size, device=device, dtype=dtype)
        out = d(x, x)
        assert out.shape == (2, 1, *patch_output_size(size)) and out.dtype == dtype

    def test_layout_matches_toker_indices(self):
        keys = set(PatchDiscriminator(6, base=8, spectral_norm=False).state_dict())
        for k in (
            "model.0.weight",
            "model.2.weight",
            "model.4.gamma",
            "model.4.theta.weight",
            "model.5.weight",
            "model.7.weight",
            "model.9.weight",
            "model.9.bias",
        ):
            assert k in keys, k
        d = PatchDiscriminator(6, base=8)
        assert not hasattr(d.model[0], "parametrizations") and not hasattr(d.model[9], "parametrizations")
        assert all(hasattr(d.model[i], "parametrizations") for i in (2, 5, 7))
        assert set(remove_spectral_norm_(d).state_dict()) == keys

    def test_condition_matters(self):
        torch.manual_seed(0)
        d = PatchDiscriminator(6, base=8, attention=False)
        img = torch.randn(1, 3, 32, 64)
        d.eval()
        assert not torch.allclose(d(torch.zeros_like(img), img), d(torch.ones_like(img), img))

    def test_unconditional(self):
        d = PatchDiscriminator(3, base=8)
        assert d(None, torch.zeros(1, 3, 32, 32)).shape == (1, 1, 2, 2)

    def test_exception(self):
        d = PatchDiscriminator(6, base=8)
        with pytest.raises(ValueError, match="channels"):
            d(torch.zeros(1, 4, 32, 32), torch.zeros(1, 3, 32, 32))
        with pytest.raises(ValueError, match="matching"):
            d(torch.zeros(1, 3, 32, 30), torch.zeros(1, 3, 32, 32))
        with pytest.raises(ValueError, match="too small"):
            d(torch.zeros(1, 3, 16, 64), torch.zeros(1, 3, 16, 64))
        with pytest.raises(ValueError):
            PatchDiscriminator(6, n_layers=1, attention=True)

    def test_gradients_reach_both_inputs(self):
        d = PatchDiscriminator(6, base=8)
        c = torch.randn(1, 3, 32, 32, requires_grad=True)
        x = torch.randn(1, 3, 32, 32, requires_grad=True)
        d(c, x).sum().backward()
        assert c.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


class TestMultiScaleDiscriminator(BaseTester):
    def test_cardinality(self):
        d = MultiScaleDiscriminator(6, num_scales=3, base=8)
        x = torch.randn(2, 3, 96, 384)
        outs = d(x, x)
        assert [tuple(o.shape) for o in outs] == [
            (2, 1, *patch_output_size((96, 384))),
            (2, 1, *patch_output_size((48, 192))),
            (2, 1, *patch_output_size((24, 96))),
        ]

    def test_separate_weights(self):
        d = MultiScaleDiscriminator(6, num_scales=2, base=8)
        a, b = d.discriminators
        assert a.model[0].weight.data_ptr() != b.model[0].weight.data_ptr()
        assert not torch.equal(a.model[0].weight, b.model[0].weight)

    def test_exception(self):
        with pytest.raises(ValueError, match="num_scales"):
            MultiScaleDiscriminator(6, num_scales=0)
        d = MultiScaleDiscriminator(6, num_scales=3, base=8)
        with pytest.raises(ValueError, match="too small"):
            d(torch.zeros(1, 3, 48, 48), torch.zeros(1, 3, 48, 48))
