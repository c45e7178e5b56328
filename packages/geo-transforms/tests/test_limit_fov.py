"""limit_fov: DSM's limited-FoV query (roll right by shift, keep the first int(fov/360*W) columns)
kept in the full-width panorama frame, the other columns set to a fill value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo_transforms import crop_fov, fov_width, limit_fov
from geo_transforms.testing import BaseTester


def _noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64)


def _reference(pano: np.ndarray, fov: float, shift: int, fill: np.ndarray | float) -> np.ndarray:
    """One (C, H, W) sample, written the way DSM / geo-bench's ``apply_fov`` state it: roll right by
    ``shift`` (out[j] = in[(j - shift) mod W]), crop the first ``int(fov / 360 * W)`` columns, then
    pad on the right with ``fill`` back to W columns."""
    c, h, w = pano.shape
    n = int(fov / 360 * w)
    query = np.roll(pano, shift, axis=-1)[..., :n]
    pad = np.broadcast_to(np.asarray(fill, dtype=pano.dtype).reshape(-1, 1, 1), (c, h, w - n))
    return np.concatenate([query, pad], axis=-1)


class TestLimitFoV(BaseTester):
    def test_smoke(self, device, dtype):
        pano = _noise((2, 3, 8, 64)).to(device, dtype)
        out = limit_fov(pano, 90.0, 5)
        assert out.shape == pano.shape and out.dtype == dtype and out.device.type == device.type

    @pytest.mark.parametrize("shape", [(0, 3, 4, 8), (1, 1, 2, 2), (3, 2, 5, 7), (2, 3, 16, 64)])
    def test_cardinality(self, device, shape):
        pano = torch.zeros(shape, device=device)
        b = shape[0]
        assert limit_fov(pano, 360.0).shape == shape
        assert limit_fov(pano, torch.full((b,), 200.0), torch.arange(b)).shape == shape
        assert limit_fov(pano, torch.tensor(270.0), torch.tensor(3), fill=torch.ones(shape[1])).shape == shape

    def test_exception(self):
        pano = torch.rand(2, 3, 4, 8)
        with pytest.raises(TypeError, match=r"panorama must be a torch\.Tensor"):
            limit_fov([[1.0]], 90.0)
        with pytest.raises(TypeError, match="panorama must be a floating tensor"):
            limit_fov(torch.zeros(2, 3, 4, 8, dtype=torch.uint8), 90.0)
        with pytest.raises(ValueError, match=r"panorama must be \(B, C, H, W\), got shape \(3, 4, 8\)"):
            limit_fov(torch.rand(3, 4, 8), 90.0)
        with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 360\] degrees, got 400"):
            limit_fov(pano, 400.0)
        with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 360\] degrees, got 0"):
            limit_fov(pano, torch.tensor([90.0, 0.0]))
        with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 360\] degrees, got nan"):
            limit_fov(pano, float("nan"))
        with pytest.raises(ValueError, match=r"fov_deg=10\.0 keeps no column of a panorama of width 8"):
            limit_fov(pano, torch.tensor([90.0, 10.0]))
        with pytest.raises(ValueError, match=r"fov_deg must be .*shape \(B,\) = \(2,\), got shape \(3,\)"):
            limit_fov(pano, torch.full((3,), 90.0))
        with pytest.raises(TypeError, match="fov_deg must be a number"):
            limit_fov(pano, "90")
        with pytest.raises(TypeError, match="fov_deg must be a number or a real tensor"):
            limit_fov(pano, torch.tensor([True, False]))
        with pytest.raises(TypeError, match="shift must be an int or an integer tensor"):
            limit_fov(pano, 90.0, torch.tensor([1.0, 2.0]))
        with pytest.raises(TypeError, match="shift must be an int"):
            limit_fov(pano, 90.0, 1.5)
        with pytest.raises(ValueError, match=r"shift must be .*got shape \(2, 1\)"):
            limit_fov(pano, 90.0, torch.zeros(2, 1, dtype=torch.long))
        with pytest.raises(ValueError, match=r"fill must be .*\(C,\) = \(3,\), got shape \(2,\)"):
            limit_fov(pano, 90.0, fill=torch.zeros(2))
        with pytest.raises(TypeError, match="fill must be a number"):
            limit_fov(pano, 90.0, fill=None)

    def test_hand_cases(self, device):
        # one row 0..7 (two identical rows: images are at least 2x2)
        pano = torch.arange(8.0, device=device).expand(1, 1, 2, 8)
        out = limit_fov(pano, 180.0, 2, fill=-1.0)[0, 0, 0].tolist()
        assert out == [6.0, 7.0, 0.0, 1.0, -1.0, -1.0, -1.0, -1.0]
        out = limit_fov(pano, 90.0, -3, fill=9.0)[0, 0, 0].tolist()  # roll left by 3
        assert out == [3.0, 4.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]
        out = limit_fov(pano, 360.0, 9)[0, 0, 0].tolist()  # shift taken mod W: a pure roll right by 1
        assert out == [7.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        # DSM's width rule truncates: 70 degrees of 8 columns is int(1.55...) = 1 column
        out = limit_fov(pano, 70.0, 0)[0, 0, 0].tolist()
        assert out == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] and fov_width(70.0, 8) == 1
        out = limit_fov(pano + 1, 70.0, 0)[0, 0, 0].tolist()
        assert out == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]

    def test_full_fov_without_shift_is_identity(self, device, dtype):
        pano = _noise((3, 3, 4, 64)).to(device, dtype)
        assert torch.equal(limit_fov(pano, 360.0), pano)
        assert torch.equal(limit_fov(pano, torch.full((3,), 360.0), torch.zeros(3, dtype=torch.long)), pano)

    @pytest.mark.parametrize("fov", [360, 180, 90, 70, 120, 100])
    def test_matches_roll_crop_pad(self, fov):
        pano = _noise((1, 3, 4, 512), seed=fov)
        rng = np.random.RandomState(2019)  # DSM's test-time shifts
        fill = np.array([0.485, 0.456, 0.406])
        for _ in range(4):
            shift = int(rng.rand() * 512)
            expected = _reference(pano[0].numpy(), fov, shift, fill)
            out = limit_fov(pano, float(fov), shift, fill=torch.tensor(fill))
            assert np.array_equal(out[0].numpy(), expected)

    def test_per_sample_fov_and_shift(self, device, dtype):
        pano = _noise((5, 3, 4, 96), seed=3)
        fovs = torch.tensor([360.0, 180.0, 90.0, 70.0, 300.5])
        shifts = torch.tensor([0, 5, -3, 600, 95])
        fill = torch.tensor([0.1, -0.2, 0.3])
        out = limit_fov(pano.to(device, dtype), fovs.to(device), shifts.to(device), fill=fill.to(device))
        for b in range(5):
            expected = _reference(pano[b].numpy(), float(fovs[b]), int(shifts[b]), fill.numpy())
            self.assert_close(out[b], torch.from_numpy(expected).to(device, dtype))
            n = fov_width(float(fovs[b]), 96)
            # exactly the fill outside the window, one value per channel
            assert torch.equal(out[b, :, :, n:], fill.to(device, dtype).view(3, 1, 1).expand(3, 4, 96 - n))

    def test_window_equals_crop_fov(self, device):
        # crop_fov's documented identity for DSM's query: the kept columns are the same pixels
        pano = _noise((1, 3, 4, 512), seed=1).to(device)
        for fov, shift in ((90.0, 0), (70.0, 17), (180.0, 400)):
            w = fov_width(fov, 512)
            window = limit_fov(pano, fov, shift)[..., :w]
            assert torch.equal(window, crop_fov(pano, fov, yaw_deg=360.0 * (w // 2 - 256 - shift) / 512))

    def test_mean_fill_normalises_to_zero(self, device):
        mean = torch.tensor([0.485, 0.456, 0.406], device=device)
        std = torch.tensor([0.229, 0.224, 0.225], device=device)
        pano = _noise((2, 3, 4, 64)).to(device, torch.float32)
        out = limit_fov(pano, torch.tensor([90.0, 180.0]), torch.tensor([3, 40]), fill=mean)
        normalised = (out - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        assert torch.equal(normalised[0, ..., 16:], torch.zeros(3, 4, 48, device=device))
        assert torch.equal(normalised[1, ..., 32:], torch.zeros(3, 4, 32, device=device))
        assert (normalised[0, ..., :16] != 0).all()

    def test_gradcheck(self, device):
        pano = _noise((3, 2, 3, 20)).to(device).requires_grad_()
        fovs = torch.tensor([360.0, 90.0, 200.0], device=device)
        shifts = torch.tensor([0, 7, -25], device=device)
        assert self.gradcheck(lambda p: limit_fov(p, fovs, shifts, fill=0.5), (pano,))
        fill = torch.tensor([0.2, 0.7], dtype=torch.float64, device=device, requires_grad=True)
        assert self.gradcheck(lambda p, f: limit_fov(p, fovs, shifts, fill=f), (pano, fill))

    @pytest.mark.slow
    def test_compile(self, device):
        pano = _noise((2, 3, 8, 64)).to(device, torch.float32)
        fovs, shifts = torch.tensor([90.0, 250.0], device=device), torch.tensor([3, 50], device=device)
        op = torch.compile(lambda p: limit_fov(p, fovs, shifts), fullgraph=False)
        self.assert_close(op(pano), limit_fov(pano, fovs, shifts))
