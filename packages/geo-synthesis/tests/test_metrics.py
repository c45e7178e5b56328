import math

import pytest
import torch
import torch.nn.functional as F

from geo_synthesis.metrics import (
    SynthesisMetricAccumulator,
    psnr,
    sharpness_difference,
    ssim,
    synthesis_metrics,
)
from geo_transforms.testing import BaseTester


def _ssim_reference(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """Wang et al. SSIM, 11x11 Gaussian (sigma 1.5), valid windows, float64, per image."""
    x, y = x.double(), y.double()
    c = x.shape[1]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(c, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, win, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return smap.flatten(1).mean(1)


def _sd_reference(p: torch.Tensor, t: torch.Tensor, data_range: float) -> float:
    p, t = p.double(), t.double()
    c, h, w = p.shape
    total, n = 0.0, 0
    for ch in range(c):
        for i in range(1, h):
            for j in range(1, w):
                gt = abs(t[ch, i, j] - t[ch, i - 1, j]) + abs(t[ch, i, j] - t[ch, i, j - 1])
                gp = abs(p[ch, i, j] - p[ch, i - 1, j]) + abs(p[ch, i, j] - p[ch, i, j - 1])
                total += float(abs(gt - gp))
                n += 1
    return 10 * math.log10(data_range**2 / (total / n))


class TestPSNR(BaseTester):
    def test_known_mse(self):
        t = torch.rand(2, 3, 8, 8)
        p = t.clone()
        p[0] += 0.1  # MSE 0.01 -> 20 dB
        p[1, :, :4] += 0.2  # MSE 0.04 / 2 = 0.02
        out = psnr(p, t)
        self.assert_close(out, torch.tensor([20.0, 10 * math.log10(1 / 0.02)]), rtol=1e-4, atol=1e-4)
        self.assert_close(psnr(2 * p - 1, 2 * t - 1, data_range=2.0), out, rtol=1e-4, atol=1e-4)

    def test_identical_is_inf(self):
        t = torch.rand(1, 3, 4, 4)
        assert math.isinf(float(psnr(t, t)))

    def test_exception(self):
        with pytest.raises(ValueError):
            psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
        with pytest.raises(TypeError):
            psnr(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


class TestSSIM(BaseTester):
    def test_identical_is_one(self, device, dtype):
        t = torch.rand(2, 3, 16, 20, device=device, dtype=dtype)
        self.assert_close(ssim(t, t), torch.ones(2, device=device), rtol=1e-3, atol=1e-3)

    def test_matches_reference(self):
        torch.manual_seed(0)
        t = torch.rand(3, 3, 24, 30)
        p = (t + 0.2 * torch.randn_like(t)).clamp(0, 1)
        self.assert_close(ssim(p, t).double(), _ssim_reference(p, t, 1.0), rtol=1e-4, atol=1e-4)

    def test_decreases_with_noise(self):
        torch.manual_seed(0)
        t = torch.rand(1, 3, 32, 32)
        values = [float(ssim((t + s * torch.randn_like(t)).clamp(0, 1), t)) for s in (0.05, 0.2, 0.5)]
        assert values[0] > values[1] > values[2]

    def test_exception(self):
        with pytest.raises(ValueError, match="at least"):
            ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


class TestSharpnessDifference(BaseTester):
    def test_matches_direct_formula(self):
        torch.manual_seed(0)
        t, p = torch.rand(2, 2, 6, 7), torch.rand(2, 2, 6, 7)
        out = sharpness_difference(p, t)
        for b in range(2):
            assert math.isclose(float(out[b]), _sd_reference(p[b], t[b], 1.0), rel_tol=1e-5)

    def test_blur_scores_lower_than_noise_free(self):
        torch.manual_seed(0)
        t = torch.rand(1, 3, 32, 32)
        blurred = F.avg_pool2d(t, 3, stride=1, padding=1)
        slightly = 0.9 * t + 0.1 * blurred
        assert float(sharpness_difference(slightly, t)) > float(sharpness_difference(blurred, t))
        assert math.isinf(float(sharpness_difference(t, t)))


def test_accumulator_is_mean_of_per_image_values():
    torch.manual_seed(0)
    acc = SynthesisMetricAccumulator(data_range=1.0)
    batches = [
        (torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)),
        (torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)),
    ]
    per = {"ssim": [], "psnr": [], "sharpness_difference": []}
    for p, t in batches:
        acc.update(p, t)
        for k, v in synthesis_metrics(p, t).items():
            per[k].append(v)
    scores = acc.compute()
    assert scores.n_images == 5
    for k in per:
        assert math.isclose(getattr(scores, k), float(torch.cat(per[k]).double().mean()), rel_tol=1e-6)
    assert set(scores.as_dict()) == {"SSIM", "PSNR", "SD", "n_images", "data_range"}
    acc.reset()
    with pytest.raises(ValueError):
        acc.compute()
