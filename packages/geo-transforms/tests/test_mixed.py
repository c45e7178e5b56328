import dataclasses

import pytest
import torch

from geo_transforms import (
    MixedParams,
    MixedPerspectivePolar,
    mixed_perspective_polar,
    mixed_pixel_map,
    mixed_radius_profile,
    polar_pixel_map,
    polar_transform,
)
from geo_transforms.testing import BaseTester


class TestMixedPerspectivePolar(BaseTester):
    def test_smoke(self, device, dtype):
        aerial = torch.rand(2, 3, 32, 32, device=device, dtype=dtype)
        out = mixed_perspective_polar(aerial, (16, 64))
        assert out.shape == (2, 3, 16, 64)
        assert out.dtype == dtype and out.device == aerial.device
        assert torch.isfinite(out.float()).all()

    def test_exception(self):
        aerial = torch.rand(1, 3, 16, 16)
        with pytest.raises(ValueError, match="aerial"):
            mixed_perspective_polar(torch.rand(1, 3, 16, 12), (8, 16))
        with pytest.raises(TypeError, match="aerial"):
            mixed_perspective_polar(aerial.numpy(), (8, 16))
        with pytest.raises(ValueError, match="near_fraction"):
            mixed_perspective_polar(aerial, (8, 16), near_fraction=1.5)
        with pytest.raises(TypeError, match="near_fraction"):
            mixed_perspective_polar(aerial, (8, 16), near_fraction="0.4")
        with pytest.raises(ValueError, match="camera_height"):
            mixed_perspective_polar(aerial, (8, 16), camera_height=0.0)
        with pytest.raises(ValueError, match="blend"):
            mixed_perspective_polar(aerial, (8, 16), blend=-0.1)
        with pytest.raises(ValueError, match="center"):
            mixed_perspective_polar(aerial, (8, 16), center="middle")
        with pytest.raises(ValueError, match="camera_height"):
            mixed_perspective_polar(aerial, (8, 16), camera_height=torch.ones(2, 2))
        with pytest.raises(ValueError, match="B = 1"):
            mixed_perspective_polar(aerial, (8, 16), camera_height=torch.ones(3))

    def test_cardinality(self):
        aerial = torch.rand(2, 3, 24, 24)
        heights = torch.tensor([1.0, 4.0])
        out = mixed_perspective_polar(aerial, (12, 40), camera_height=heights)
        assert out.shape == (2, 3, 12, 40)
        self.assert_close(out[1:], mixed_perspective_polar(aerial[1:], (12, 40), camera_height=4.0))
        row, col = mixed_pixel_map(24, (12, 40), MixedParams(camera_height=heights))
        assert row.shape == col.shape == (2, 12, 40)

    @pytest.mark.parametrize("center", ["safa", "pixel"])
    def test_near_fraction_zero_is_polar_exactly(self, center, dtype):
        aerial = torch.rand(2, 3, 40, 40, dtype=dtype)
        out = mixed_perspective_polar(aerial, (16, 48), near_fraction=0.0, center=center)
        assert torch.equal(out, polar_transform(aerial, (16, 48), center=center))
        # the map itself, and the differentiable path with a tensor near_fraction
        row, col = mixed_pixel_map(40, (16, 48), MixedParams(near_fraction=0.0, center=center))
        row_p, col_p = polar_pixel_map(40, (16, 48), center=center)
        assert torch.equal(row[0], row_p) and torch.equal(col[0], col_p)
        zero = mixed_perspective_polar(aerial, (16, 48), near_fraction=torch.tensor(0.0), center=center)
        self.assert_close(zero, polar_transform(aerial, (16, 48), center=center))

    def test_far_field_is_polar(self):
        size, out_size = 64, (20, 80)
        params = MixedParams(near_fraction=0.4)
        row, col = mixed_pixel_map(size, out_size, params)
        row_p, col_p = polar_pixel_map(size, out_size)
        far = 12  # rows < (H - 1) * 0.6 = 11.4 are above the band
        assert torch.equal(row[0, :far], row_p[:far]) and torch.equal(col[0, :far], col_p[:far])
        assert not torch.equal(row[0, far:], row_p[far:])
        aerial = torch.rand(1, 3, size, size)
        self.assert_close(
            mixed_perspective_polar(aerial, out_size)[..., :far, :],
            polar_transform(aerial, out_size)[..., :far, :],
        )

    def test_radius_profile_is_monotone_and_ends_at_the_camera(self):
        for blend in (0.0, 0.25, 1.0):
            radius, polar = mixed_radius_profile(750, 256, MixedParams(blend=blend))
            assert torch.all(radius.diff() < 0)
            assert torch.all(radius <= polar + 1e-12)
            assert radius[0, -1].item() == pytest.approx(0.0, abs=1e-9)

    def test_continuous_at_the_band_boundary(self):
        height = 257  # band boundary i_b = 256 * 0.75 = 192 is a whole row
        params = MixedParams(near_fraction=0.25, blend=0.3)
        radius, _ = mixed_radius_profile(750, height, params)
        slope = radius[0].diff()
        b = 192
        # value and slope are continuous: the first band step continues the polar step
        assert radius[0, b].item() == pytest.approx(375 * (height - 1 - b) / height)
        assert (slope[b] - slope[b - 1]).abs() < 0.05 * slope[b - 1].abs()
        # without a blend the profile is still continuous in value (no seam) but has a kink
        hard, _ = mixed_radius_profile(750, height, MixedParams(near_fraction=0.25, blend=0.0))
        hard_slope = hard[0].diff()
        assert hard[0, b].item() == pytest.approx(radius[0, b].item())
        assert (hard[0, b] - hard[0, b + 1]).abs() < 0.1 * hard[0, b]
        assert (hard_slope[b] - hard_slope[b - 1]).abs() > 0.5 * hard_slope[b - 1].abs()
        # images: adjacent rows differ no more across the boundary than inside the far field
        yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
        smooth = torch.sin(xx / 9.0) + torch.cos(yy / 11.0)
        out = mixed_perspective_polar(smooth[None, None], (height, 256), near_fraction=0.25, blend=0.3)[0, 0]
        row_step = out.diff(dim=0).abs().mean(dim=1)
        assert row_step[b - 2 : b + 2].max() < 1.5 * row_step[b - 10 : b - 4].max()

    def test_roads_widen_towards_the_bottom(self):
        # a north-south road through the centre: its width in columns grows down the near field,
        # faster than in the polar map (horizontal stretch r_polar / r >= 1)
        size, (h, w) = 129, (64, 256)
        aerial = torch.zeros(1, 1, size, size, dtype=torch.float64)
        aerial[..., 58:71] = 1.0
        polar = polar_transform(aerial, (h, w), center="pixel")[0, 0]
        mixed = mixed_perspective_polar(
            aerial, (h, w), center="pixel", camera_height=1.0, meters_per_pixel=0.25
        )[0, 0]
        width_polar = (polar > 0.5).sum(1).double()
        width_mixed = (mixed > 0.5).sum(1).double()
        band = slice(40, 62)
        assert torch.all(width_mixed[band] >= width_polar[band])
        assert torch.all(width_mixed[band].diff() >= 0)
        assert width_mixed[55] > 1.5 * width_polar[55]
        radius, polar_radius = mixed_radius_profile(
            size, h, MixedParams(camera_height=1.0, meters_per_pixel=0.25)
        )
        stretch = polar_radius[0, :-1] / radius[0, :-1]
        assert torch.all(stretch >= 1 - 1e-12) and stretch[band].max() > 2

    @pytest.mark.parametrize("k", [1, 2, 3])
    def test_rot90_is_roll(self, k):
        aerial = torch.rand(1, 3, 33, 33, dtype=torch.float64)
        size = (24, 64)
        out = mixed_perspective_polar(aerial, size, center="pixel")
        rotated = mixed_perspective_polar(torch.rot90(aerial, k, dims=(-2, -1)), size, center="pixel")
        self.assert_close(rotated, torch.roll(out, -k * size[1] // 4, dims=-1), rtol=0, atol=1e-9)

    def test_params_record_and_module(self):
        module = MixedPerspectivePolar((16, 64), near_fraction=0.3, camera_height=2.0)
        assert module.params == MixedParams(near_fraction=0.3, camera_height=2.0)
        assert module.params.to_dict() == {
            "near_fraction": 0.3,
            "camera_height": 2.0,
            "meters_per_pixel": 0.1,
            "blend": 0.25,
            "center": "safa",
        }
        with pytest.raises(dataclasses.FrozenInstanceError):
            module.params.near_fraction = 0.5  # type: ignore[misc]
        aerial = torch.rand(2, 3, 32, 32)
        self.assert_close(
            module(aerial), mixed_perspective_polar(aerial, (16, 64), near_fraction=0.3, camera_height=2.0)
        )
        assert "near_fraction" in repr(module)
        height = torch.nn.Parameter(torch.tensor(2.0))
        learnable = MixedPerspectivePolar((16, 64), camera_height=height)
        assert list(learnable.parameters()) == [height]
        learnable(aerial).sum().backward()
        assert height.grad is not None and height.grad != 0

    def test_static_grid_is_cached(self):
        from geo_transforms.mixed import _cached_mixed_grid

        aerial = torch.rand(1, 3, 16, 16)
        mixed_perspective_polar(aerial, (8, 32), near_fraction=0.35)
        hits = _cached_mixed_grid.cache_info().hits
        mixed_perspective_polar(aerial, (8, 32), near_fraction=0.35)
        assert _cached_mixed_grid.cache_info().hits == hits + 1

    def test_gradcheck(self):
        aerial = torch.rand(1, 2, 12, 12, dtype=torch.float64, requires_grad=True)
        height = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        near = torch.tensor(0.45, dtype=torch.float64, requires_grad=True)
        blend = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

        def fn(a, h, n, b):
            return mixed_perspective_polar(a, (7, 12), near_fraction=n, camera_height=h, blend=b)

        assert self.gradcheck(fn, (aerial, height, near, blend))

    @pytest.mark.slow
    def test_compile(self):
        aerial = torch.rand(1, 3, 16, 16)
        height = torch.tensor(2.0)
        fn = torch.compile(mixed_perspective_polar, fullgraph=True)
        self.assert_close(
            fn(aerial, (8, 32), camera_height=height),
            mixed_perspective_polar(aerial, (8, 32), camera_height=height),
        )
        self.assert_close(fn(aerial, (8, 32)), mixed_perspective_polar(aerial, (8, 32)))


@pytest.mark.parametrize("low_dtype", [torch.float16, torch.bfloat16])
def test_low_precision_samples_at_float32_coordinates(low_dtype):
    # half-precision grids would misplace samples by up to ~1 px on large tiles; the op samples
    # fp16 / bf16 images at float32 coordinates, so only the value rounding remains
    aerial = torch.rand(1, 3, 300, 300, dtype=torch.float64)
    ref = mixed_perspective_polar(aerial, (64, 256), near_fraction=0.5)
    low = mixed_perspective_polar(aerial.to(low_dtype), (64, 256), near_fraction=0.5)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[low_dtype]
    torch.testing.assert_close(low.double(), ref, rtol=0, atol=tol)
