from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_transforms import (
    InversePolarTransform,
    PolarTransform,
    inverse_polar_transform,
    polar_grid,
    polar_pixel_map,
    polar_transform,
)
from geo_transforms import polar as polar_module
from geo_transforms.testing import BaseTester
from geo_transforms.testing.safa_reference import safa_polar, safa_polar_maps

# (S, (H, W)): SAFA on CVUSA and CVACT, DSM, and odd sizes everywhere.
PARITY_SIZES = [
    (750, (112, 616)),
    (750, (128, 512)),
    (1200, (112, 616)),
    (333, (37, 101)),
    (64, (31, 90)),
]


def _noise(shape: tuple[int, ...], seed: int = 0, scale: float = 255.0) -> torch.Tensor:
    """Uniform noise generated on the CPU (CPU and CUDA generators differ), float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * scale


def _smooth(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """A smooth image: a few low-frequency sinusoids, values in about [-1, 1], float64."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, size, dtype=torch.float64)[:, None]
    x = torch.linspace(0, 1, size, dtype=torch.float64)[None, :]
    out = torch.zeros(batch, channels, size, size, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            fx, fy, px, py = (
                torch.rand(4, generator=g, dtype=torch.float64) * torch.tensor([2, 2, 6, 6])
            ).tolist()
            out[b, c] = 0.5 * torch.sin(2 * torch.pi * fx * x + px) + 0.5 * torch.cos(
                2 * torch.pi * fy * y + py
            )
    return out


def _reference(aerial: torch.Tensor, out_size: tuple[int, int], center: float | None = None) -> torch.Tensor:
    """Run the numpy SAFA port image by image on (B, C, S, S) and return (B, C, H, W) float64."""
    out = [safa_polar(a.permute(1, 2, 0).cpu().double().numpy(), *out_size, center=center) for a in aerial]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def _batched_polar(aerial: torch.Tensor, out_size: tuple[int, int], center: str) -> torch.Tensor:
    """The batched gather of ``polar_transform`` (one index_select over the whole batch), called
    directly: the reference for the CPU plane-by-plane path."""
    table = polar_module._polar_table(aerial.shape[-1], out_size, center, aerial.device, aerial.dtype)
    return polar_module._gather_bilinear(aerial, *table, out_size)


class _PlanewiseSpy:
    """Counts the calls of the plane-by-plane CPU path (``polar._gather_planewise``)."""

    def __init__(self) -> None:
        self.calls = 0
        self._gather = polar_module._gather_planewise

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._gather(*args, **kwargs)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def planewise(request, monkeypatch):
    """Send every CPU input that autograd does not record through the plane-by-plane path
    (``force(out_pixels, workers)``: on one torch thread one run of planes; on two, the planes split
    over up to ``workers`` pool threads); returns the call counter. Runs each test with 1 and with 2
    torch threads."""
    spy = _PlanewiseSpy()
    monkeypatch.setattr(polar_module, "_gather_planewise", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(request.param)

    def force(out_pixels: int, workers: int = 2) -> _PlanewiseSpy:
        monkeypatch.setattr(polar_module, "_PLANEWISE_MIN_SOURCE", 0)
        if request.param > 1:  # one thread always runs one run; the pool's split is what varies
            monkeypatch.setattr(
                polar_module, "_planewise_workers", lambda planes: max(1, min(workers, planes))
            )
        return spy

    force.spy = spy  # type: ignore[attr-defined]
    try:
        yield force
    finally:
        torch.set_num_threads(threads)


class TestPolarTransform(BaseTester):
    def test_smoke(self, device, dtype):
        aerial = _noise((2, 3, 40, 40), scale=1.0).to(device, dtype)
        out = polar_transform(aerial, (16, 64))
        assert out.shape == (2, 3, 16, 64)
        assert out.dtype == dtype
        assert out.device.type == device.type

    @pytest.mark.parametrize(
        ("batch", "channels", "size", "out_size"),
        [(1, 1, 2, (1, 1)), (3, 2, 17, (5, 7)), (2, 4, 50, (8, 36)), (1, 3, 751, (3, 5))],
    )
    def test_cardinality(self, device, dtype, batch, channels, size, out_size):
        aerial = torch.zeros(batch, channels, size, size, device=device, dtype=dtype)
        assert polar_transform(aerial, out_size).shape == (batch, channels, *out_size)

    def test_exception(self):
        good = torch.rand(1, 3, 8, 8)
        with pytest.raises(TypeError, match=r"aerial must be a torch\.Tensor"):
            polar_transform(np.zeros((1, 3, 8, 8)), (4, 8))
        with pytest.raises(TypeError, match=r"aerial must be a floating tensor.*torch.uint8"):
            polar_transform(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), (4, 8))
        with pytest.raises(TypeError, match="aerial must be a floating tensor"):
            polar_transform(torch.zeros(1, 3, 8, 8, dtype=torch.int64), (4, 8))
        with pytest.raises(ValueError, match=r"aerial must be \(B, C, S, S\), got shape \(3, 8, 8\)"):
            polar_transform(torch.rand(3, 8, 8), (4, 8))
        with pytest.raises(ValueError, match=r"aerial must be \(B, C, S, S\), got shape \(1, 1, 3, 8, 8\)"):
            polar_transform(torch.rand(1, 1, 3, 8, 8), (4, 8))
        with pytest.raises(
            ValueError, match=r"aerial must be square \(B, C, S, S\), got shape \(1, 3, 8, 9\)"
        ):
            polar_transform(torch.rand(1, 3, 8, 9), (4, 8))
        with pytest.raises(ValueError, match=r"out_size must be positive \(H, W\), got \(0, 8\)"):
            polar_transform(good, (0, 8))
        with pytest.raises(ValueError, match=r"out_size must be positive \(H, W\), got \(4, -1\)"):
            polar_transform(good, (4, -1))
        with pytest.raises(TypeError, match=r"out_size must be a pair of ints \(H, W\)"):
            polar_transform(good, (4.0, 8))
        with pytest.raises(TypeError, match=r"out_size must be a pair of ints \(H, W\)"):
            polar_transform(good, (4, 8, 2))
        with pytest.raises(ValueError, match="center must be 'safa'"):
            polar_transform(good, (4, 8), center="middle")
        with pytest.raises(ValueError, match="center must be 'safa'"):
            PolarTransform((4, 8), center="middle")
        with pytest.raises(ValueError, match=r"out_size must be positive"):
            PolarTransform((4, 0))
        with pytest.raises(ValueError, match=r"size must be >= 2"):
            polar_pixel_map(1, (4, 8))
        with pytest.raises(TypeError, match=r"size must be an int"):
            polar_grid(7.5, (4, 8))

    @pytest.mark.parametrize(("size", "out_size"), PARITY_SIZES)
    @pytest.mark.parametrize("precision", [torch.float32, torch.float64])
    def test_matches_safa_reference(self, device, size, out_size, precision):
        aerial = _noise((2, 3, size, size), seed=size)
        expected = _reference(aerial, out_size)
        actual = polar_transform(aerial.to(device, precision), out_size).cpu().double()
        tol = 1e-3 if precision == torch.float32 else 1e-6  # on a 0-255 scale
        err = (actual - expected).abs().max().item()
        assert err < tol, f"max |torch - SAFA| = {err:.3g} for S={size}, out={out_size}, {precision}"

    @pytest.mark.parametrize(("size", "out_size"), [(64, (31, 92)), (65, (20, 64)), (750, (128, 512))])
    def test_pixel_center_matches_reference(self, device, size, out_size):
        aerial = _noise((1, 3, size, size), seed=1)
        expected = _reference(aerial, out_size, center=(size - 1) / 2)
        actual = polar_transform(aerial.to(device), out_size, center="pixel").cpu().double()
        assert (actual - expected).abs().max().item() < 1e-3

    def test_pixel_map_matches_reference_maps(self):
        for size, (h, w) in PARITY_SIZES:
            x, y = safa_polar_maps(size, h, w)
            row, col = polar_pixel_map(size, (h, w))
            np.testing.assert_allclose(row.numpy(), x, rtol=0, atol=1e-10)
            np.testing.assert_allclose(col.numpy(), y, rtol=0, atol=1e-10)

    def test_orientation(self, device):
        # A bright north-east quadrant shows up in the columns between north (W/2) and east (3W/4).
        aerial = torch.zeros(1, 1, 100, 100, device=device)
        aerial[..., :50, 50:] = 1.0
        out = polar_transform(aerial, (10, 400))[0, 0]
        assert out[:5, 210:290].min() > 1 - 1e-6
        assert out[:5, :190].max() == 0.0 and out[:5, 310:].max() == 0.0
        # row 0 is the outer ring: a central dot only reaches the bottom rows.
        aerial = torch.zeros(1, 1, 100, 100, device=device)
        aerial[..., 45:55, 45:55] = 1.0
        out = polar_transform(aerial, (10, 40), center="pixel")[0, 0]
        assert out[-1].min() > 1 - 1e-6 and out[0].max() == 0.0

    @settings(max_examples=30, deadline=None)
    @given(
        size=st.integers(4, 40),
        height=st.integers(1, 24),
        quarter=st.integers(1, 30),
        k=st.integers(-4, 4),
        seed=st.integers(0, 2**16),
    )
    def test_rot90_is_roll_exactly(self, size, height, quarter, k, seed):
        width = 4 * quarter
        aerial = _noise((2, 2, size, size), seed=seed).float()
        polar = polar_transform(aerial, (height, width), center="pixel")
        rotated = polar_transform(torch.rot90(aerial, k, dims=(-2, -1)), (height, width), center="pixel")
        assert torch.equal(rotated, torch.roll(polar, -k * quarter, dims=-1))

    @settings(max_examples=30, deadline=None)
    @given(
        size=st.integers(4, 40),
        height=st.integers(1, 24),
        quarter=st.integers(1, 30),
        seed=st.integers(0, 2**16),
    )
    def test_flip_is_mirror_exactly(self, size, height, quarter, seed):
        width = 4 * quarter
        aerial = _noise((2, 2, size, size), seed=seed).float()
        polar = polar_transform(aerial, (height, width), center="pixel")
        flipped = polar_transform(aerial.flip(-1), (height, width), center="pixel")
        assert torch.equal(flipped, torch.roll(polar.flip(-1), 1, dims=-1))

    def test_identities_exact_on_device(self, device, dtype):
        aerial = _noise((2, 3, 31, 31), seed=3, scale=1.0).to(device, dtype)
        polar = polar_transform(aerial, (12, 40), center="pixel")
        for k in range(4):
            rotated = polar_transform(torch.rot90(aerial, k, dims=(-2, -1)), (12, 40), center="pixel")
            assert torch.equal(rotated, torch.roll(polar, -10 * k, dims=-1))
        flipped = polar_transform(aerial.flip(-1), (12, 40), center="pixel")
        assert torch.equal(flipped, torch.roll(polar.flip(-1), 1, dims=-1))

    def test_safa_center_is_half_pixel_off(self):
        # With S/2 the identity only holds up to the half-pixel offset: close on a smooth image,
        # but not exact.
        aerial = _smooth(1, 1, 64).float()
        polar = polar_transform(aerial, (16, 64))
        rotated = polar_transform(torch.rot90(aerial, 1, dims=(-2, -1)), (16, 64))
        diff = (rotated - torch.roll(polar, -16, dims=-1)).abs().max().item()
        assert 0 < diff < 0.2

    def test_matches_grid_sample_in_float64(self, device):
        aerial = _noise((2, 3, 50, 50), seed=5).to(device)
        for center in ("safa", "pixel"):
            grid = polar_grid(50, (20, 72), center=center, device=device, dtype=torch.float64)
            expected = F.grid_sample(aerial, grid.expand(2, -1, -1, -1), align_corners=True)
            self.assert_close(polar_transform(aerial, (20, 72), center=center), expected, rtol=0, atol=1e-8)

    def test_zeros_outside(self, device):
        # Radius beyond the image (S < H makes the pixel-centre ring start at a negative
        # coordinate): samples fall partly outside and the outside contributes 0, like grid_sample.
        aerial = torch.ones(1, 1, 6, 6, device=device, dtype=torch.float64)
        grid = polar_grid(6, (20, 32), center="pixel", device=device, dtype=torch.float64)
        expected = F.grid_sample(aerial, grid, align_corners=True, padding_mode="zeros")
        out = polar_transform(aerial, (20, 32), center="pixel")
        self.assert_close(out, expected, rtol=0, atol=1e-12)
        assert out.min() < 1.0

    def test_batch_and_layout(self, device, dtype):
        aerial = _noise((3, 2, 30, 30), seed=7, scale=1.0).to(device, dtype)
        batched = polar_transform(aerial, (10, 24))
        for b in range(3):
            assert torch.equal(batched[b : b + 1], polar_transform(aerial[b : b + 1], (10, 24)))
        channels_last = aerial.contiguous(memory_format=torch.channels_last)
        assert torch.equal(polar_transform(channels_last, (10, 24)), batched)
        strided = _noise((3, 2, 60, 60), seed=7, scale=1.0).to(device, dtype)[..., ::2, ::2]
        assert torch.equal(
            polar_transform(strided, (10, 24)), polar_transform(strided.contiguous(), (10, 24))
        )

    @pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
    def test_low_precision(self, device, low):
        aerial = _noise((2, 3, 40, 40), seed=9, scale=1.0)
        expected = polar_transform(aerial.to(device), (16, 64))
        actual = polar_transform(aerial.to(device, low), (16, 64))
        assert actual.dtype == low
        self.assert_close(actual, expected)

    def test_table_is_cached(self, device):
        from geo_transforms.polar import _polar_table

        a = _polar_table(40, (16, 64), "safa", device, torch.float32)
        b = _polar_table(40, (16, 64), "safa", device, torch.float32)
        assert a[0] is b[0] and a[1] is b[1]
        c = _polar_table(40, (16, 64), "safa", device, torch.float64)
        assert c[0] is a[0]  # one index table shared by every dtype

    def test_module(self, device, dtype):
        aerial = _noise((1, 3, 20, 20), scale=1.0).to(device, dtype)
        module = PolarTransform((8, 32), center="pixel")
        assert torch.equal(module(aerial), polar_transform(aerial, (8, 32), center="pixel"))
        assert "out_size=(8, 32)" in repr(module) and "'pixel'" in repr(module)

    def test_gradcheck(self, device):
        aerial = _noise((1, 2, 9, 9), seed=11, scale=1.0).to(device).requires_grad_()
        for center in ("safa", "pixel"):
            assert self.gradcheck(lambda a, c=center: polar_transform(a, (4, 12), center=c), (aerial,))

    @pytest.mark.slow
    def test_compile(self, device):
        aerial = _noise((2, 3, 32, 32), scale=1.0).to(device, torch.float32)
        op = torch.compile(lambda a: polar_transform(a, (12, 48)), fullgraph=True)
        self.assert_close(op(aerial), polar_transform(aerial, (12, 48)))

    # The CPU plane-by-plane path (sorted gather, runs of planes on a thread pool): same bits as the
    # batched path.

    @pytest.mark.parametrize("center", ["safa", "pixel"])
    @pytest.mark.parametrize(
        ("size", "out_size", "workers"), [(40, (16, 64), 2), (33, (7, 13), 1), (50, (20, 72), 3)]
    )
    def test_planewise_matches_batched(self, dtype, planewise, center, size, out_size, workers):
        # 5 planes (B=5, C=1 and B=1, C=5) over 1-3 pool threads: runs of 5, 2 + 3, 2 + 1 + 2 planes
        spy = planewise(out_size[0] * out_size[1], workers)
        for shape in ((5, 1, size, size), (1, 5, size, size)):
            aerial = _noise(shape, seed=size, scale=1.0).to(dtype)
            expected = _batched_polar(aerial, out_size, center)
            strided = torch.zeros(*shape[:2], 2 * size, 2 * size, dtype=dtype)[..., ::2, ::2]
            strided.copy_(aerial)
            for layout in (aerial, aerial.contiguous(memory_format=torch.channels_last), strided):
                calls = spy.calls
                actual = polar_transform(layout, out_size, center=center)
                assert spy.calls == calls + 1
                assert actual.dtype == dtype and actual.shape == expected.shape
                assert torch.equal(actual, expected)

    def test_planewise_identities_exact(self, planewise):
        aerial = _noise((2, 3, 31, 31), seed=3, scale=1.0).float()
        spy = planewise(12 * 40, 4)
        polar = polar_transform(aerial, (12, 40), center="pixel")
        for k in range(4):
            rotated = polar_transform(torch.rot90(aerial, k, dims=(-2, -1)), (12, 40), center="pixel")
            assert torch.equal(rotated, torch.roll(polar, -10 * k, dims=-1))
        flipped = polar_transform(aerial.flip(-1), (12, 40), center="pixel")
        assert torch.equal(flipped, torch.roll(polar.flip(-1), 1, dims=-1))
        assert spy.calls == 6

    @pytest.mark.parametrize("precision", [torch.float32, torch.float64])
    def test_planewise_matches_safa_reference(self, planewise, precision):
        # the benchmark's sizes, with the default thresholds (a 750 x 750 source takes this path)
        aerial = _noise((2, 3, 750, 750), seed=750)
        expected = _reference(aerial, (128, 512))
        actual = polar_transform(aerial.to(precision), (128, 512)).double()
        assert planewise.spy.calls == 1
        tol = 1e-3 if precision == torch.float32 else 1e-6  # on a 0-255 scale
        assert (actual - expected).abs().max().item() < tol
        assert torch.equal(actual.to(precision), _batched_polar(aerial.to(precision), (128, 512), "safa"))

    def test_planewise_not_used_for_autograd(self, planewise):
        aerial = _noise((2, 3, 20, 20), seed=13, scale=1.0)
        spy = planewise(8 * 32, 1)
        expected = polar_transform(aerial, (8, 32))
        assert spy.calls == 1
        leaf = aerial.clone().requires_grad_()
        out = polar_transform(leaf, (8, 32))
        assert spy.calls == 1 and out.requires_grad  # autograd records: the batched path
        assert torch.equal(out.detach(), expected)
        out.square().sum().backward()
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0
        with torch.no_grad():
            assert torch.equal(polar_transform(leaf, (8, 32)), expected)
        assert spy.calls == 2
        assert self.gradcheck(
            lambda a: polar_transform(a, (4, 12)), (aerial[:1, :2, :9, :9].clone().requires_grad_(),)
        )

    def test_planewise_empty_batch(self, planewise):
        planewise(8 * 32, 1)
        assert polar_transform(torch.rand(0, 3, 20, 20), (8, 32)).shape == (0, 3, 8, 32)

    @pytest.mark.slow
    def test_planewise_compile(self, monkeypatch):
        aerial = _noise((2, 3, 32, 32), scale=1.0).float()
        spy = _PlanewiseSpy()
        monkeypatch.setattr(polar_module, "_gather_planewise", spy)
        monkeypatch.setattr(polar_module, "_PLANEWISE_MIN_SOURCE", 0)
        op = torch.compile(lambda a: polar_transform(a, (12, 48)), fullgraph=True)
        actual = op(aerial)
        assert spy.calls == 0  # compiled: the batched formulation is traced instead
        self.assert_close(actual, polar_transform(aerial, (12, 48)))
        assert spy.calls == 1


class TestInversePolarTransform(BaseTester):
    def test_smoke(self, device, dtype):
        polar = _noise((2, 3, 16, 64), scale=1.0).to(device, dtype)
        out = inverse_polar_transform(polar, 40)
        assert out.shape == (2, 3, 40, 40) and out.dtype == dtype and out.device.type == device.type

    @pytest.mark.parametrize(("polar_size", "size"), [((2, 2), 2), ((7, 13), 9), ((16, 64), 33)])
    def test_cardinality(self, device, polar_size, size):
        polar = torch.zeros(2, 1, *polar_size, device=device)
        assert inverse_polar_transform(polar, size).shape == (2, 1, size, size)

    def test_exception(self):
        with pytest.raises(ValueError, match=r"polar must be \(B, C, H, W\), got shape \(16, 64\)"):
            inverse_polar_transform(torch.rand(16, 64), 32)
        with pytest.raises(TypeError, match="polar must be a floating tensor"):
            inverse_polar_transform(torch.zeros(1, 1, 16, 64, dtype=torch.uint8), 32)
        with pytest.raises(ValueError, match="size must be >= 2"):
            inverse_polar_transform(torch.rand(1, 1, 16, 64), 0)
        with pytest.raises(TypeError, match="size must be an int"):
            inverse_polar_transform(torch.rand(1, 1, 16, 64), (32, 32))
        with pytest.raises(ValueError, match="center must be"):
            inverse_polar_transform(torch.rand(1, 1, 16, 64), 32, center="centre")
        with pytest.raises(ValueError, match="size must be >= 2"):
            InversePolarTransform(-3)

    @pytest.mark.parametrize("center", ["safa", "pixel"])
    def test_round_trip_on_smooth_images(self, device, center):
        size = 64
        aerial = _smooth(2, 3, size, seed=2).to(device)
        polar = polar_transform(aerial, (128, 512), center=center)
        back = inverse_polar_transform(polar, size, center=center)
        c = size / 2 if center == "safa" else (size - 1) / 2
        p = torch.arange(size, dtype=torch.float64, device=device)
        radius = torch.sqrt((p[:, None] - c) ** 2 + (p[None, :] - c) ** 2)
        disc = radius < 0.9 * (size / 2) * 127 / 128
        err = (back - aerial)[..., disc].abs().max().item()
        assert err < 5e-3, f"round trip error {err:.3g} inside the disc"

    def test_zero_outside_outer_ring(self, device):
        size, out_size = 40, (10, 64)
        back = inverse_polar_transform(torch.ones(1, 1, *out_size, device=device, dtype=torch.float64), size)
        p = torch.arange(size, dtype=torch.float64, device=device)
        radius = torch.sqrt((p[:, None] - size / 2) ** 2 + (p[None, :] - size / 2) ** 2)
        outer = (size / 2) * (out_size[0] - 1) / out_size[0]
        assert back[..., radius > outer + 1e-9].abs().max() == 0
        # a constant polar image comes back constant on the covered disc (weights sum to 1)
        self.assert_close(back[..., radius <= outer], torch.ones_like(back[..., radius <= outer]))

    def test_wraps_around_columns(self, device):
        # a pixel just west of due south reads between the last and the first polar column
        polar = torch.zeros(1, 1, 4, 8, device=device, dtype=torch.float64)
        polar[..., 0] = 1.0
        back = inverse_polar_transform(polar, 41, center="pixel")
        south = back[0, 0, 30, 20]  # straight down from the centre (20, 20)
        assert south == 1.0
        assert 0 < back[0, 0, 30, 19] < 1.0 and 0 < back[0, 0, 30, 21] < 1.0

    def test_module(self, device, dtype):
        polar = _noise((1, 3, 8, 32), scale=1.0).to(device, dtype)
        module = InversePolarTransform(20, center="pixel")
        assert torch.equal(module(polar), inverse_polar_transform(polar, 20, center="pixel"))
        assert "size=20" in repr(module)

    def test_gradcheck(self, device):
        polar = _noise((1, 2, 4, 12), seed=4, scale=1.0).to(device).requires_grad_()
        assert self.gradcheck(lambda p: inverse_polar_transform(p, 9), (polar,))

    @pytest.mark.slow
    def test_compile(self, device):
        polar = _noise((2, 3, 8, 32), scale=1.0).to(device, torch.float32)
        op = torch.compile(lambda p: inverse_polar_transform(p, 24), fullgraph=True)
        self.assert_close(op(polar), inverse_polar_transform(polar, 24))

    @pytest.mark.parametrize("center", ["safa", "pixel"])
    def test_planewise_matches_batched(self, dtype, planewise, center):
        polar = _noise((3, 2, 16, 64), seed=21, scale=1.0).to(dtype)
        table = polar_module._inverse_table(33, (16, 64), center, polar.device, dtype)
        expected = polar_module._gather_bilinear(polar, *table, (33, 33))
        spy = planewise(33 * 33, 4)
        actual = inverse_polar_transform(polar, 33, center=center)
        assert spy.calls == 1 and torch.equal(actual, expected)
