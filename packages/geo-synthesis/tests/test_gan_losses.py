import math

import pytest
import torch

from geo_synthesis.gan_losses import GANLoss, gan_loss
from geo_transforms.testing import BaseTester


def _bce(x: torch.Tensor, t: float) -> torch.Tensor:
    s = torch.sigmoid(x.double())
    return -(t * torch.log(s) + (1 - t) * torch.log(1 - s)).mean()


class TestGANLoss(BaseTester):
    def test_bce_real_label_is_explicit_target(self):
        x = torch.tensor([[-1.5, 0.3], [2.0, 0.0]])
        smooth, plain = GANLoss("bce", real_label=0.9), GANLoss("bce")
        self.assert_close(smooth(x, True).double(), _bce(x, 0.9))
        self.assert_close(plain(x, True).double(), _bce(x, 1.0))
        # the PanoGAN no-op: label smoothing must change the loss
        assert abs(float(smooth(x, True)) - float(plain(x, True))) > 1e-3
        assert torch.all(smooth.target(x, True) == 0.9) and torch.all(smooth.target(x, False) == 0.0)

    def test_bce_fake_label(self):
        x = torch.randn(3, 1, 4, 4)
        self.assert_close(GANLoss("bce", fake_label=0.1)(x, False).double(), _bce(x, 0.1))

    def test_label_as_target_is_real_is_refused(self):
        crit = GANLoss("bce")
        with pytest.raises(TypeError, match="bool"):
            crit(torch.zeros(2), 0.9)
        with pytest.raises(TypeError, match="bool"):
            gan_loss(torch.zeros(2), 1)

    def test_lsgan(self):
        x = torch.tensor([0.2, -0.4, 1.5])
        crit = GANLoss("lsgan", real_label=0.9)
        self.assert_close(crit(x, True), ((x - 0.9) ** 2).mean())
        self.assert_close(crit(x, False), (x**2).mean())
        self.assert_close(crit.generator_loss(x), ((x - 0.9) ** 2).mean())

    def test_hinge(self):
        real, fake = torch.tensor([0.5, 2.0, -1.0]), torch.tensor([-2.0, 0.0, 0.5])
        crit = GANLoss("hinge")
        d = crit.discriminator_loss(real, fake)
        expected = 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
        self.assert_close(d, expected)
        self.assert_close(crit.generator_loss(fake), -fake.mean())
        with pytest.raises(ValueError, match="hinge"):
            GANLoss("hinge", real_label=0.9)

    def test_discriminator_loss_is_half_sum(self):
        real, fake = torch.randn(2, 1, 3, 5), torch.randn(2, 1, 3, 5)
        crit = GANLoss("bce", real_label=0.9)
        expected = 0.5 * (_bce(real, 0.9) + _bce(fake, 0.0))
        self.assert_close(crit.discriminator_loss(real, fake).double(), expected)
        self.assert_close(crit.generator_loss(fake).double(), _bce(fake, 0.9))

    def test_multiscale_mean(self):
        preds = [torch.randn(2, 1, 4, 4), torch.randn(2, 1, 2, 2)]
        crit = GANLoss("lsgan")
        self.assert_close(crit(preds, True), 0.5 * (crit(preds[0], True) + crit(preds[1], True)))

    def test_float32_under_half_inputs(self):
        x = torch.zeros(4, dtype=torch.bfloat16)
        out = GANLoss("bce")(x, True)
        assert out.dtype == torch.float32 and math.isclose(float(out), math.log(2), rel_tol=1e-6)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="kind"):
            GANLoss("wgan")
        with pytest.raises(ValueError, match="\\[0, 1\\]"):
            GANLoss("bce", real_label=1.2)
        with pytest.raises(TypeError):
            GANLoss("bce", real_label=True)
        with pytest.raises(TypeError):
            gan_loss([], True)

    def test_gradcheck(self):
        x = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        for kind in ("bce", "lsgan", "hinge"):
            crit = GANLoss(kind)
            assert self.gradcheck(lambda p, c=crit: c.generator_loss(p), (x,))
