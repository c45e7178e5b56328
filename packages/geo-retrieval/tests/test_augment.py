"""Photometric augmentation of :class:`BatchTransform` (colour jitter, Gaussian blur, coarse dropout):
kornia's functional ops on the whole batch, parameters drawn only from the step's seeded generator."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geo_retrieval.config import Augmentation
from geo_retrieval.training import BatchTransform
from geo_retrieval.training.augment import _Draws, _dropout_mask
from geo_transforms.testing import assert_close

pytestmark = pytest.mark.one_thread

B, H, W = 6, 16, 48
ALL = Augmentation(color_jitter=0.3, color_jitter_p=0.5, blur_p=0.5, dropout_p=0.5, dropout_holes=(1, 4))


def _images(device: torch.device, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed)).to(device)


def _photometric(
    aug: Augmentation, x: torch.Tensor, seed: int = 1, *, offset: int = 0, total: int | None = None
) -> tuple[torch.Tensor, torch.Generator]:
    t = BatchTransform(ground_size=(H, W), aerial_size=(H, W), augmentation=aug)
    g = torch.Generator().manual_seed(seed)
    return t._photometric(x, _Draws(g, x.shape[0], offset, total)), g


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blur_reference(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """One image (1, 3, H, W): 5x5 Gaussian kernel exp(-r^2 / 2 sigma^2) / sum, replicate border."""
    r = torch.arange(-2, 3, dtype=torch.float64)
    k1 = torch.exp(-(r**2) / (2 * sigma**2))
    k2 = (k1[:, None] * k1[None, :] / k1.sum() ** 2).to(x.device, x.dtype)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k2.expand(3, 1, 5, 5), groups=3)


def _dropout_reference(size, on, counts, fracs, positions) -> torch.Tensor:
    """The former per-sample, per-hole loop (the definition of the holes)."""
    h, w = size
    mask = torch.ones(on.shape[0], 1, h, w)
    for i in on.nonzero().flatten().tolist():
        n = int(counts[i])
        for (fh, fw), (ph, pw) in zip(fracs[i, :n].tolist(), positions[i, :n].tolist()):
            hh, ww = max(1, math.ceil(fh * h)), max(1, math.ceil(fw * w))
            top, left = int(ph * (h - hh + 1)), int(pw * (w - ww + 1))
            mask[i, :, top : top + hh, left : left + ww] = 0
    return mask


class TestPhotometric:
    def test_smoke(self, device):
        x = _images(device)
        out, _ = _photometric(ALL, x)
        assert out.shape == x.shape and out.device == x.device and out.dtype == x.dtype
        assert bool(((out >= 0) & (out <= 1)).all())
        assert not torch.equal(out, x)

    def test_disabled_is_identity(self, device):
        x = _images(device)
        out, g = _photometric(Augmentation(), x)
        assert torch.equal(out, x)
        assert torch.equal(g.get_state(), torch.Generator().manual_seed(1).get_state())  # no draw

    def test_draw_order_is_unchanged(self):
        """The draws (and so a resumed run's augmentations) are those of the former per-sample loops:
        jitter (on, brightness, contrast, saturation), blur (on, sigma), dropout (on, count, sizes,
        positions), each for the whole batch."""
        _, g = _photometric(ALL, _images(torch.device("cpu")))
        ref = torch.Generator().manual_seed(1)
        for _ in range(4 + 2 + 1):
            torch.rand(B, generator=ref)
        torch.randint(1, 5, (B,), generator=ref)
        torch.rand(B, 4, 2, generator=ref)
        torch.rand(B, 4, 2, generator=ref)
        assert torch.equal(g.get_state(), ref.get_state())

    def test_global_rng_untouched(self, device):
        x = _images(device)
        torch.manual_seed(0)
        state = torch.get_rng_state()
        a, _ = _photometric(ALL, x, seed=3)
        assert torch.equal(torch.get_rng_state(), state)
        torch.manual_seed(12345)
        b, _ = _photometric(ALL, x, seed=3)
        assert torch.equal(a, b)

    def test_rank_slices_equal_the_global_batch(self, device):
        x = _images(device)
        full, _ = _photometric(ALL, x, seed=5)
        for lo in (0, 3):
            part, _ = _photometric(ALL, x[lo : lo + 3], seed=5, offset=lo, total=B)
            assert_close(part, full[lo : lo + 3], atol=1e-6, rtol=1e-6)

    def test_colour_jitter_is_torchvision_formulas(self, device):
        x, s = _images(device), 0.4
        out, _ = _photometric(Augmentation(color_jitter=s, color_jitter_p=1.0), x, seed=7)
        g = torch.Generator().manual_seed(7)
        assert bool((torch.rand(B, generator=g) < 1.0).all())
        bright, contrast, sat = (
            (1 + (2 * torch.rand(B, generator=g) - 1) * s).view(B, 1, 1, 1).to(device) for _ in range(3)
        )
        ref = (x * bright).clamp(0, 1)
        mean = _gray(ref).mean(dim=(-2, -1), keepdim=True)
        ref = (ref * contrast + mean * (1 - contrast)).clamp(0, 1)
        ref = (ref * sat + _gray(ref) * (1 - sat)).clamp(0, 1)
        assert_close(out, ref, atol=1e-6, rtol=1e-6)

    def test_blur_matches_per_sample_convolution(self, device):
        x = _images(device)
        out, _ = _photometric(Augmentation(blur_p=0.5), x, seed=2)
        g = torch.Generator().manual_seed(2)
        on, sigma = torch.rand(B, generator=g) < 0.5, 0.1 + 1.4 * torch.rand(B, generator=g)
        assert 0 < int(on.sum()) < B
        for i in range(B):
            ref = _blur_reference(x[i : i + 1], float(sigma[i])) if on[i] else x[i : i + 1]
            assert_close(out[i : i + 1], ref, atol=1e-5, rtol=1e-5)

    def test_dropout_holes_are_exact(self, device):
        x = _images(device) + 0.5  # no pixel is 0 before the dropout
        out, _ = _photometric(Augmentation(dropout_p=0.5, dropout_holes=(2, 6)), x, seed=4)
        g = torch.Generator().manual_seed(4)
        on = torch.rand(B, generator=g) < 0.5
        counts = torch.randint(2, 7, (B,), generator=g)
        fracs, positions = 0.1 + 0.1 * torch.rand(B, 6, 2, generator=g), torch.rand(B, 6, 2, generator=g)
        ref = _dropout_reference((H, W), on, counts, fracs, positions).to(device)
        assert torch.equal(out, x * ref)
        assert 0 < int(on.sum()) < B and bool((ref == 0).any())

    def test_dropout_mask_cardinality(self):
        """Holes of the same size overlap into one; a hole touching the border is clipped at it."""
        on, counts = torch.tensor([True, True, False]), torch.tensor([2, 1, 2])
        fracs = torch.full((3, 2, 2), 0.25)  # 4 x 8 of a 16 x 32 image
        positions = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.999, 0.999], [0.5, 0.5]], [[0.5, 0.5]] * 2])
        mask = _dropout_mask((16, 32), on, counts, fracs, positions)
        assert mask.shape == (3, 1, 16, 32) and mask.dtype == torch.float32
        assert int((mask[0] == 0).sum()) == 4 * 8 and bool((mask[0, 0, :4, :8] == 0).all())
        assert int((mask[1] == 0).sum()) == 4 * 8 and bool((mask[1, 0, -4:, -8:] == 0).all())
        assert bool((mask[2] == 1).all())
        assert torch.equal(mask, _dropout_reference((16, 32), on, counts, fracs, positions))


class TestStoredBytes:
    def test_joint_augmentation_on_uint8_equals_the_float_images(self):
        """Flips, quarter turns and rolls run on the stored uint8 images, before the conversion to
        float: bit for bit what the same draws give on the images already in [0, 1]."""
        g = torch.Generator().manual_seed(0)
        ground = torch.randint(0, 256, (B, 3, 16, 64), generator=g, dtype=torch.uint8)
        aerial = torch.randint(0, 256, (B, 3, 32, 32), generator=g, dtype=torch.uint8)
        aug = Augmentation(hflip_p=0.5, rot90_p=0.75, color_jitter=0.2, color_jitter_p=0.5)
        t = BatchTransform(ground_size=(8, 32), aerial_size=(16, 16), augmentation=aug)
        for seed in range(4):
            stored = t({"ground": ground, "aerial": aerial}, torch.Generator().manual_seed(seed), train=True)
            floats = t(
                {"ground": ground.float() / 255, "aerial": aerial.float() / 255},
                torch.Generator().manual_seed(seed),
                train=True,
            )
            assert torch.equal(stored["ground"], floats["ground"])
            assert torch.equal(stored["aerial"], floats["aerial"])
