from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_transforms import (
    CropFoV,
    JointHFlip,
    JointRotate,
    RotatePanorama,
    crop_fov,
    fov_width,
    joint_hflip,
    joint_rotate,
    polar_transform,
    rotate_panorama,
)
from geo_transforms.testing import BaseTester


def _noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64)


def _smooth_aerial(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.linspace(-1, 1, size, dtype=torch.float64)
    y, x = p[:, None], p[None, :]
    f = torch.rand(3, 4, generator=g, dtype=torch.float64) * 3
    channels = [torch.sin(f[c, 0] * x + f[c, 1]) * torch.cos(f[c, 2] * y + f[c, 3]) for c in range(3)]
    return torch.stack(channels)[None]


class TestRotatePanorama(BaseTester):
    def test_smoke(self, device, dtype):
        pano = _noise((2, 3, 8, 32)).to(device, dtype)
        out = rotate_panorama(pano, 12.5)
        assert out.shape == pano.shape and out.dtype == dtype and out.device.type == device.type

    @pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 2, 5, 7), (2, 3, 16, 64)])
    def test_cardinality(self, device, shape):
        pano = torch.zeros(shape, device=device)
        assert rotate_panorama(pano, 30.0).shape == shape
        assert rotate_panorama(pano, torch.full((shape[0],), 30.0)).shape == shape

    def test_exception(self):
        pano = torch.rand(2, 3, 4, 8)
        with pytest.raises(ValueError, match=r"pano must be \(B, C, H, W\), got shape \(3, 4, 8\)"):
            rotate_panorama(torch.rand(3, 4, 8), 10.0)
        with pytest.raises(TypeError, match="pano must be a floating tensor"):
            rotate_panorama(torch.zeros(2, 3, 4, 8, dtype=torch.uint8), 10.0)
        with pytest.raises(TypeError, match=r"pano must be a torch\.Tensor"):
            rotate_panorama([[1.0]], 10.0)
        with pytest.raises(ValueError, match=r"yaw_deg must be .* shape \(B,\) = \(2,\), got shape \(3,\)"):
            rotate_panorama(pano, torch.zeros(3))
        with pytest.raises(ValueError, match=r"yaw_deg must be .*got shape \(2, 1\)"):
            rotate_panorama(pano, torch.zeros(2, 1))
        with pytest.raises(TypeError, match="yaw_deg must be a number"):
            rotate_panorama(pano, "10")
        with pytest.raises(TypeError, match="yaw_deg must be a real number"):
            rotate_panorama(pano, torch.zeros(2, dtype=torch.complex64))
        with pytest.raises(ValueError, match="yaw_deg must be finite"):
            rotate_panorama(pano, float("nan"))

    @settings(max_examples=40, deadline=None)
    @given(width=st.integers(2, 64), shift=st.integers(-200, 200), seed=st.integers(0, 2**16))
    def test_integer_shift_is_roll_exactly(self, width, shift, seed):
        pano = _noise((2, 3, 4, width), seed=seed).float()
        yaw = 360.0 * shift / width
        assert torch.equal(rotate_panorama(pano, yaw), torch.roll(pano, -shift, dims=-1))

    def test_integer_shift_exact_on_device(self, device, dtype):
        pano = _noise((2, 3, 4, 616)).to(device, dtype)
        for shift in (1, 7, 154, 308, -3, 615, 616, 1000):
            out = rotate_panorama(pano, 360.0 * shift / 616)
            assert torch.equal(out, torch.roll(pano, -shift, dims=-1))

    def test_sign_convention(self):
        # positive yaw = clockwise turn: the column that looked east (3W/4) is now in the centre.
        pano = torch.zeros(1, 1, 2, 16)
        pano[..., 12] = 1.0
        out = rotate_panorama(pano, 90.0)
        assert out[0, 0, 0].argmax() == 8

    def test_fractional_and_wrap(self, device):
        pano = torch.arange(8.0, device=device, dtype=torch.float64).expand(1, 1, 2, 8)
        out = rotate_panorama(pano, 360.0 * 0.25 / 8)  # a quarter column
        expected = torch.tensor([0.25, 1.25, 2.25, 3.25, 4.25, 5.25, 6.25, 7 * 0.75], dtype=torch.float64)
        self.assert_close(out[0, 0, 0], expected.to(device))
        # opposite sign: between column W-1 and column 0 on the left
        out = rotate_panorama(pano, -360.0 * 0.25 / 8)
        self.assert_close(
            out[0, 0, 0, 0], torch.tensor(0.75 * 0 + 0.25 * 7, dtype=torch.float64, device=device)
        )

    def test_per_sample_yaw(self, device, dtype):
        pano = _noise((3, 2, 4, 24)).to(device, dtype)
        yaw = torch.tensor([15.0, -30.0, 45.0], device=device)
        out = rotate_panorama(pano, yaw)
        for b in range(3):
            assert torch.equal(out[b], torch.roll(pano[b], -int(yaw[b]) * 24 // 360, dims=-1))

    def test_composition(self, device):
        pano = _noise((2, 3, 4, 40)).to(device)
        a, b = 17.3, 41.1
        # linear interpolation does not compose exactly, but closely on a smooth signal
        smooth = torch.sin(torch.linspace(0, 2 * torch.pi, 41, device=device, dtype=torch.float64)[:-1])
        smooth = smooth.expand(1, 1, 2, 40)
        twice = rotate_panorama(rotate_panorama(smooth, a), b)
        once = rotate_panorama(smooth, a + b)
        assert (twice - once).abs().max() < 5e-3
        full_turn = rotate_panorama(pano, 360.0)
        assert torch.equal(full_turn, pano)

    def test_module(self, device):
        pano = _noise((2, 3, 4, 16)).to(device)
        assert torch.equal(RotatePanorama(45.0)(pano), rotate_panorama(pano, 45.0))
        assert "yaw_deg=45.0" in repr(RotatePanorama(45.0))

    def test_gradcheck(self, device):
        pano = _noise((2, 2, 3, 10)).to(device).requires_grad_()
        yaw = torch.tensor([13.0, -50.0], dtype=torch.float64, device=device, requires_grad=True)
        assert self.gradcheck(rotate_panorama, (pano, yaw))

    @pytest.mark.slow
    def test_compile(self, device):
        pano = _noise((2, 3, 8, 32)).to(device, torch.float32)
        yaw = torch.tensor([10.0, 200.0], device=device)
        op = torch.compile(rotate_panorama, fullgraph=True)
        self.assert_close(op(pano, yaw), rotate_panorama(pano, yaw))


class TestCropFoV(BaseTester):
    def test_smoke(self, device, dtype):
        pano = _noise((2, 3, 8, 64)).to(device, dtype)
        out = crop_fov(pano, 90.0)
        assert out.shape == (2, 3, 8, 16) and out.dtype == dtype

    @pytest.mark.parametrize(
        ("fov", "width"), [(360, 512), (180, 256), (90, 128), (70, 99), (120, 170), (100, 142)]
    )
    def test_cardinality_dsm_widths(self, device, fov, width):
        assert fov_width(fov, 512) == width == int(fov / 360 * 512)
        assert crop_fov(torch.zeros(1, 3, 4, 512, device=device), fov).shape == (1, 3, 4, width)

    def test_exception(self):
        pano = torch.rand(1, 3, 4, 64)
        with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 360\]"):
            crop_fov(pano, 0.0)
        with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 360\]"):
            crop_fov(pano, 400.0)
        with pytest.raises(ValueError, match="keeps no column"):
            crop_fov(pano, 1.0)
        with pytest.raises(TypeError, match="fov_deg must be a number"):
            crop_fov(pano, torch.tensor(90.0))
        with pytest.raises(ValueError, match=r"pano must be \(B, C, H, W\)"):
            crop_fov(torch.rand(4, 64), 90.0)
        with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 360\]"):
            CropFoV(-5.0)

    def test_columns(self, device):
        pano = torch.arange(512.0, device=device).expand(1, 1, 2, 512)
        assert torch.equal(crop_fov(pano, 360.0), pano)
        assert torch.equal(crop_fov(pano, 90.0)[0, 0, 0], torch.arange(192.0, 320.0, device=device))
        # odd width: centred exactly on column W/2
        assert torch.equal(crop_fov(pano, 70.0)[0, 0, 0], torch.arange(256.0 - 49, 256.0 + 50, device=device))
        # yaw 90: centred on the east column 3W/4
        assert torch.equal(crop_fov(pano, 90.0, 90.0)[0, 0, 0], torch.arange(320.0, 448.0, device=device))
        # wrap-around
        out = crop_fov(pano, 90.0, 180.0)[0, 0, 0]
        assert torch.equal(out, torch.remainder(torch.arange(448.0, 576.0, device=device), 512))

    def test_equals_rotate_then_slice(self, device, dtype):
        pano = _noise((3, 2, 4, 96)).to(device, dtype)
        yaw = torch.tensor([10.0, -100.0, 33.3], device=device)
        w = fov_width(70.0, 96)
        expected = rotate_panorama(pano, yaw)[..., 48 - w // 2 : 48 - w // 2 + w]
        assert torch.equal(crop_fov(pano, 70.0, yaw), expected)

    @pytest.mark.parametrize("fov", [360, 180, 90, 70])
    def test_reproduces_dsm_query(self, fov):
        # DSM: roll right by `shift`, keep the first int(fov/360*W) columns.
        pano = _noise((1, 3, 4, 512), seed=fov).float()
        rng = np.random.RandomState(2019)
        for _ in range(5):
            shift = int(rng.rand() * 512 * 360 / 360)
            w = int(fov / 360 * 512)
            dsm = torch.from_numpy(np.roll(pano.numpy(), shift, axis=-1)[..., :w])
            ours = crop_fov(pano, fov, yaw_deg=360.0 * (w // 2 - 256 - shift) / 512)
            assert torch.equal(ours, dsm)

    def test_module(self, device):
        pano = _noise((1, 3, 4, 64)).to(device)
        assert torch.equal(CropFoV(90.0, 45.0)(pano), crop_fov(pano, 90.0, 45.0))
        assert "fov_deg=90.0" in repr(CropFoV(90.0))

    def test_gradcheck(self, device):
        pano = _noise((2, 1, 3, 20)).to(device).requires_grad_()
        yaw = torch.tensor([7.0, 100.0], dtype=torch.float64, device=device, requires_grad=True)
        assert self.gradcheck(lambda p, y: crop_fov(p, 90.0, y), (pano, yaw))

    @pytest.mark.slow
    def test_compile(self, device):
        pano = _noise((2, 3, 8, 64)).to(device, torch.float32)
        op = torch.compile(lambda p: crop_fov(p, 90.0, 30.0), fullgraph=True)
        self.assert_close(op(pano), crop_fov(pano, 90.0, 30.0))


class TestJointRotate(BaseTester):
    def test_smoke(self, device, dtype):
        aerial = _noise((2, 3, 16, 16)).to(device, dtype)
        pano = _noise((2, 3, 8, 32)).to(device, dtype)
        a, p = joint_rotate(aerial, pano, k=1)
        assert a.shape == aerial.shape and p.shape == pano.shape
        a, p = joint_rotate(aerial, pano, angle_deg=30.0)
        assert a.shape == aerial.shape and p.shape == pano.shape and a.dtype == dtype

    def test_exception(self):
        aerial, pano = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 8, 32)
        with pytest.raises(ValueError, match="exactly one of k or angle_deg"):
            joint_rotate(aerial, pano)
        with pytest.raises(ValueError, match="exactly one of k or angle_deg"):
            joint_rotate(aerial, pano, k=1, angle_deg=90.0)
        with pytest.raises(ValueError, match="divisible by 4"):
            joint_rotate(aerial, torch.rand(2, 3, 8, 30), k=1)
        with pytest.raises(TypeError, match="k must be an int"):
            joint_rotate(aerial, pano, k=1.0)
        with pytest.raises(
            ValueError, match=r"aerial must be square \(B, C, S, S\), got shape \(2, 3, 16, 15\)"
        ):
            joint_rotate(torch.rand(2, 3, 16, 15), pano, k=1)
        with pytest.raises(ValueError, match="same batch size"):
            joint_rotate(torch.rand(3, 3, 16, 16), pano, k=1)
        with pytest.raises(ValueError, match=r"angle_deg must be .*shape \(B,\)"):
            joint_rotate(aerial, pano, angle_deg=torch.zeros(5))
        with pytest.raises(ValueError, match="exactly one of k or angle_deg"):
            JointRotate()

    def test_uint8_quarter_turns_and_mirror_move_the_stored_bytes(self):
        # quarter turns and the mirror only move pixels: uint8 images give the float result exactly
        g = torch.Generator().manual_seed(0)
        aerial = torch.randint(0, 256, (2, 3, 16, 16), generator=g, dtype=torch.uint8)
        pano = torch.randint(0, 256, (2, 3, 8, 32), generator=g, dtype=torch.uint8)
        for k in (1, 2, 3, -1):
            a, p = joint_rotate(aerial, pano, k=k)
            fa, fp = joint_rotate(aerial.float(), pano.float(), k=k)
            assert a.dtype == p.dtype == torch.uint8
            assert torch.equal(a.float(), fa) and torch.equal(p.float(), fp)
        a, p = joint_hflip(aerial, pano)
        fa, fp = joint_hflip(aerial.float(), pano.float())
        assert a.dtype == p.dtype == torch.uint8
        assert torch.equal(a.float(), fa) and torch.equal(p.float(), fp)
        # a fractional turn resamples: it still needs floating images, and says so
        with pytest.raises(TypeError, match="aerial must be a floating tensor"):
            joint_rotate(aerial, pano, angle_deg=30.0)

    @settings(max_examples=25, deadline=None)
    @given(
        size=st.integers(4, 33), height=st.integers(2, 16), quarter=st.integers(1, 20), k=st.integers(-5, 5)
    )
    def test_quarter_turns_keep_polar_consistent_exactly(self, size, height, quarter, k):
        aerial = _noise((2, 3, size, size), seed=size).float()
        pano = polar_transform(aerial, (height, 4 * quarter), center="pixel")
        a, p = joint_rotate(aerial, pano, k=k)
        assert torch.equal(polar_transform(a, (height, 4 * quarter), center="pixel"), p)
        assert torch.equal(p, rotate_panorama(pano, 90.0 * k))

    def test_angle_90_matches_quarter_turn(self, device):
        aerial = _smooth_aerial(48).to(device)
        pano = _noise((1, 3, 8, 64)).to(device)
        a_k, p_k = joint_rotate(aerial, pano, k=1)
        a_t, p_t = joint_rotate(aerial, pano, angle_deg=90.0)
        self.assert_close(a_t, a_k, rtol=0, atol=1e-6)
        assert torch.equal(p_t, p_k)

    @pytest.mark.parametrize("angle", [37.0, -123.4, 200.0])
    def test_arbitrary_angle_keeps_polar_consistent(self, device, angle):
        size, out_size = 96, (24, 128)
        aerial = _smooth_aerial(size).to(device)
        pano = polar_transform(aerial, out_size, center="pixel")
        a, p = joint_rotate(aerial, pano, angle_deg=angle)
        err = (polar_transform(a, out_size, center="pixel") - p).abs().max().item()
        assert err < 2e-2, f"polar(rotate(aerial)) vs rotate_panorama(polar(aerial)): {err:.3g}"

    def test_per_sample_angle(self, device):
        aerial = _noise((2, 3, 16, 16)).to(device)
        pano = _noise((2, 3, 4, 32)).to(device)
        angles = torch.tensor([90.0, 180.0], device=device)
        a, p = joint_rotate(aerial, pano, angle_deg=angles)
        assert torch.equal(p[0], torch.roll(pano[0], -8, dims=-1))
        assert torch.equal(p[1], torch.roll(pano[1], -16, dims=-1))
        self.assert_close(a[1], torch.rot90(aerial[1], 2, dims=(-2, -1)), rtol=0, atol=1e-5)

    def test_module(self, device):
        aerial, pano = _noise((1, 3, 16, 16)).to(device), _noise((1, 3, 4, 32)).to(device)
        for a, b in zip(JointRotate(k=3)(aerial, pano), joint_rotate(aerial, pano, k=3)):
            assert torch.equal(a, b)
        assert "k=3" in repr(JointRotate(k=3)) and "angle_deg=10.0" in repr(JointRotate(angle_deg=10.0))

    def test_gradcheck(self, device):
        aerial = _noise((1, 1, 6, 6)).to(device).requires_grad_()
        pano = _noise((1, 1, 3, 8)).to(device).requires_grad_()
        angle = torch.tensor([20.0], dtype=torch.float64, device=device, requires_grad=True)
        assert self.gradcheck(lambda a, p, t: joint_rotate(a, p, angle_deg=t), (aerial, pano, angle))

    @pytest.mark.slow
    def test_compile(self, device):
        aerial, pano = _noise((2, 3, 16, 16)).to(device).float(), _noise((2, 3, 4, 32)).to(device).float()
        op = torch.compile(lambda a, p: joint_rotate(a, p, k=1), fullgraph=True)
        for x, y in zip(op(aerial, pano), joint_rotate(aerial, pano, k=1)):
            self.assert_close(x, y)


class TestJointHFlip(BaseTester):
    def test_smoke(self, device, dtype):
        aerial = _noise((2, 3, 16, 16)).to(device, dtype)
        pano = _noise((2, 3, 8, 32)).to(device, dtype)
        a, p = joint_hflip(aerial, pano)
        assert a.shape == aerial.shape and p.shape == pano.shape and p.dtype == dtype

    def test_exception(self):
        with pytest.raises(ValueError, match="same batch size"):
            joint_hflip(torch.rand(1, 3, 8, 8), torch.rand(2, 3, 4, 8))
        with pytest.raises(ValueError, match=r"pano must be \(B, C, H, W\)"):
            joint_hflip(torch.rand(1, 3, 8, 8), torch.rand(3, 4, 8))

    def test_mirror_columns(self, device):
        pano = torch.arange(6.0, device=device).expand(1, 1, 2, 6)
        _, p = joint_hflip(torch.rand(1, 1, 4, 4, device=device), pano)
        assert p[0, 0, 0].tolist() == [0.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # j -> (W - j) mod W

    @settings(max_examples=25, deadline=None)
    @given(size=st.integers(4, 33), height=st.integers(2, 16), quarter=st.integers(1, 20))
    def test_keeps_polar_consistent_exactly(self, size, height, quarter):
        aerial = _noise((2, 3, size, size), seed=size).float()
        pano = polar_transform(aerial, (height, 4 * quarter), center="pixel")
        a, p = joint_hflip(aerial, pano)
        assert torch.equal(polar_transform(a, (height, 4 * quarter), center="pixel"), p)
        a2, p2 = joint_hflip(a, p)
        assert torch.equal(a2, aerial) and torch.equal(p2, pano)  # an involution

    def test_module(self, device):
        aerial, pano = _noise((1, 3, 8, 8)).to(device), _noise((1, 3, 4, 16)).to(device)
        for a, b in zip(JointHFlip()(aerial, pano), joint_hflip(aerial, pano)):
            assert torch.equal(a, b)

    def test_gradcheck(self, device):
        aerial = _noise((1, 1, 4, 4)).to(device).requires_grad_()
        pano = _noise((1, 1, 2, 8)).to(device).requires_grad_()
        assert self.gradcheck(joint_hflip, (aerial, pano))
