import math

import numpy as np
import pytest
import torch
from kornia.geometry.transform import warp_perspective

from geo_transforms import GroundPlaneView, ground_plane_homography, ground_plane_view
from geo_transforms.testing import BaseTester

OPTS = {"camera_height": 2.0, "meters_per_pixel": 0.5}


def coordinate_aerial(size: int) -> torch.Tensor:
    """(1, 2, S, S): channel 0 = column index, channel 1 = row index (bilinear is exact)."""
    cols = torch.arange(size, dtype=torch.float64).expand(size, size)
    return torch.stack((cols, cols.T))[None].clone()


def numpy_ground_hits(size, yaw, pitch, roll, fov, out_size, height, mpp, c):
    """Independent ray-plane intersection in numpy: aerial (col, row) per view pixel, NaN above the horizon."""
    h, w = out_size
    y, p, r = np.radians([yaw, pitch, roll])
    forward = np.array([np.sin(y) * np.cos(p), np.cos(y) * np.cos(p), np.sin(p)])
    right = np.array([np.cos(y), -np.sin(y), 0.0])
    up = np.cross(right, forward)
    # roll the camera clockwise about its axis: its right vector turns towards its down vector
    right, up = np.cos(r) * right - np.sin(r) * up, np.sin(r) * right + np.cos(r) * up
    focal = (w / 2) / np.tan(np.radians(fov) / 2)
    xs, ys = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
    rays = focal * forward + xs[..., None] * right - ys[..., None] * up
    col = np.full((h, w), np.nan)
    row = np.full((h, w), np.nan)
    below = rays[..., 2] < 0
    t = height / -rays[below][:, 2]
    east, north = t * rays[below][:, 0], t * rays[below][:, 1]
    col[below] = c + east / mpp
    row[below] = c - north / mpp
    return col, row


class TestGroundPlaneView(BaseTester):
    def test_smoke(self, device, dtype):
        aerial = torch.rand(2, 3, 32, 32, device=device, dtype=dtype)
        out, mask = ground_plane_view(aerial, 30.0, 90.0, (8, 12), pitch=-20.0, return_mask=True, **OPTS)
        assert out.shape == (2, 3, 8, 12) and mask.shape == (2, 1, 8, 12)
        assert out.dtype == dtype and out.device == aerial.device and mask.dtype == torch.bool
        assert torch.isfinite(out.float()).all()

    def test_exception(self):
        aerial = torch.rand(1, 3, 16, 16)
        with pytest.raises(ValueError, match="aerial"):
            ground_plane_view(torch.rand(1, 3, 16, 17), 0.0, 90.0, (4, 4), **OPTS)
        with pytest.raises(TypeError, match="aerial"):
            ground_plane_view(aerial.long(), 0.0, 90.0, (4, 4), **OPTS)
        with pytest.raises(ValueError, match="camera_height"):
            ground_plane_view(aerial, 0.0, 90.0, (4, 4), camera_height=0.0, meters_per_pixel=1.0)
        with pytest.raises(ValueError, match="meters_per_pixel"):
            ground_plane_view(aerial, 0.0, 90.0, (4, 4), camera_height=1.0, meters_per_pixel=-1.0)
        with pytest.raises(TypeError, match="camera_height"):
            ground_plane_view(aerial, 0.0, 90.0, (4, 4), camera_height=[1.0, 2.0], meters_per_pixel=1.0)
        with pytest.raises(ValueError, match="fov"):
            ground_plane_view(aerial, 0.0, 0.0, (4, 4), **OPTS)
        with pytest.raises(ValueError, match="center"):
            ground_plane_view(aerial, 0.0, 90.0, (4, 4), center="middle", **OPTS)
        with pytest.raises(ValueError, match="per-image"):
            ground_plane_view(aerial, 0.0, 90.0, (4, 4), camera_height=torch.ones(3), meters_per_pixel=1.0)

    def test_cardinality(self):
        aerial = torch.rand(2, 3, 16, 16)
        views, mask = ground_plane_view(aerial, [0.0, 90.0, 180.0], 60.0, (4, 6), return_mask=True, **OPTS)
        assert views.shape == (2, 3, 3, 4, 6) and mask.shape == (2, 3, 1, 4, 6)
        per_image = ground_plane_view(
            aerial, 0.0, 60.0, (4, 6), camera_height=torch.tensor([1.0, 2.0]), meters_per_pixel=0.5
        )
        assert per_image.shape == (2, 3, 4, 6)
        self.assert_close(per_image[1], ground_plane_view(aerial[1:], 0.0, 60.0, (4, 6), **OPTS)[0])

    @pytest.mark.parametrize("center", ["safa", "pixel"])
    def test_matches_numpy_ray_plane_intersection(self, center):
        size, out_size = 40, (9, 13)
        yaw, pitch, roll, fov, height, mpp = 33.0, -25.0, 7.0, 75.0, 3.0, 0.4
        aerial = coordinate_aerial(size)
        view, mask = ground_plane_view(
            aerial, yaw, fov, out_size, camera_height=height, meters_per_pixel=mpp, pitch=pitch, roll=roll,
            center=center, return_mask=True,
        )  # fmt: skip
        c = size / 2 if center == "safa" else (size - 1) / 2
        col, row = numpy_ground_hits(size, yaw, pitch, roll, fov, out_size, height, mpp, c)
        inside = (col >= 0) & (col <= size - 1) & (row >= 0) & (row <= size - 1)
        inside &= ~np.isnan(col)
        assert 10 < inside.sum() < inside.size  # the check sees ground, sky and off-tile pixels
        assert np.array_equal(mask[0, 0].numpy(), inside)
        np.testing.assert_allclose(view[0, 0].numpy()[inside], col[inside], atol=1e-9)
        np.testing.assert_allclose(view[0, 1].numpy()[inside], row[inside], atol=1e-9)
        assert view[0][:, ~torch.from_numpy(inside)].abs().max() == 0

    def test_point_east_of_centre(self):
        size = 41
        aerial = torch.zeros(1, 1, size, size, dtype=torch.float64)
        aerial[0, 0, 19:22, 29:32] = 1.0  # 10 px east of the pixel centre 20
        opts = {"camera_height": 2.0, "meters_per_pixel": 0.5, "pitch": -30.0, "center": "pixel"}

        def centroid_column(yaw):
            view = ground_plane_view(aerial, yaw, 90.0, (41, 41), **opts)[0, 0]
            weights = view.sum(0)
            assert weights.sum() > 0
            return float((weights * torch.arange(41.0, dtype=torch.float64)).sum() / weights.sum())

        assert centroid_column(90.0) == pytest.approx(20.0, abs=1e-6)  # straight ahead
        assert centroid_column(45.0) > 25.0  # looking north-east: east is on the right
        assert centroid_column(135.0) < 15.0  # looking south-east: east is on the left
        # looking north with a 90 deg FoV, a point due east is at the edge of view: not visible
        assert ground_plane_view(aerial, 0.0, 90.0, (41, 41), **opts).abs().max() == 0

    def test_sky_is_zero(self):
        aerial = torch.ones(1, 3, 32, 32)
        view, mask = ground_plane_view(aerial, 0.0, 90.0, (9, 9), pitch=0.0, return_mask=True, **OPTS)
        assert view[..., :5, :].abs().max() == 0 and not mask[..., :5, :].any()  # horizon is row 4
        assert mask[..., -1, :].all()

    def test_homography_agrees_with_view_and_kornia_warp(self):
        size, out_size = 48, (12, 16)
        opts = {"camera_height": 2.5, "meters_per_pixel": 0.3, "pitch": -35.0, "center": "pixel"}
        aerial = coordinate_aerial(size)
        view, mask = ground_plane_view(aerial, 120.0, 80.0, out_size, return_mask=True, **opts)
        hom = ground_plane_homography(size, 120.0, 80.0, out_size, **opts)[0, 0]
        ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(16.0), indexing="ij")
        q = torch.stack((xs, ys, torch.ones_like(xs)), -1).double() @ hom.T
        valid = mask[0, 0]
        assert (q[..., 2][valid] > 0).all()
        self.assert_close(q[..., 0][valid] / q[..., 2][valid], view[0, 0][valid], rtol=0, atol=1e-9)
        self.assert_close(q[..., 1][valid] / q[..., 2][valid], view[0, 1][valid], rtol=0, atol=1e-9)
        # kornia's warp_perspective with the aerial -> view homography reproduces the valid pixels
        warped = warp_perspective(aerial, torch.linalg.inv(hom)[None], out_size, align_corners=True)
        self.assert_close(warped[0][:, valid], view[0][:, valid], rtol=0, atol=1e-6)

    def test_rot90_equivariance(self):
        aerial = torch.rand(1, 3, 33, 33, dtype=torch.float64)
        opts = {"camera_height": 2.0, "meters_per_pixel": 0.5, "pitch": -30.0, "center": "pixel"}
        base = ground_plane_view(aerial, 10.0, 70.0, (8, 8), **opts)
        # rotating the aerial counter-clockwise by 90 deg moves what was north to the west (bearing 270)
        rotated = ground_plane_view(torch.rot90(aerial, 1, dims=(-2, -1)), 10.0 - 90.0, 70.0, (8, 8), **opts)
        self.assert_close(rotated, base, rtol=0, atol=1e-9)

    def test_module(self):
        aerial = torch.rand(2, 3, 16, 16)
        module = GroundPlaneView([0.0, 180.0], 90.0, (4, 4), pitch=-20.0, return_mask=True, **OPTS)
        out, mask = module(aerial)
        ref, ref_mask = ground_plane_view(
            aerial, [0.0, 180.0], 90.0, (4, 4), pitch=-20.0, return_mask=True, **OPTS
        )
        self.assert_close(out, ref)
        assert torch.equal(mask, ref_mask)
        height = torch.nn.Parameter(torch.tensor(2.0))
        learnable = GroundPlaneView(
            0.0, 90.0, (4, 4), camera_height=height, meters_per_pixel=0.5, pitch=-30.0
        )
        assert list(learnable.parameters()) == [height]
        learnable(aerial).sum().backward()
        assert height.grad is not None and torch.isfinite(height.grad)

    def test_gradcheck(self):
        aerial = torch.rand(1, 2, 10, 10, dtype=torch.float64, requires_grad=True)
        height = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
        yaw = torch.tensor(21.0, dtype=torch.float64, requires_grad=True)

        def fn(a, h, y):
            return ground_plane_view(a, y, 70.0, (4, 5), camera_height=h, meters_per_pixel=0.5, pitch=-40.0)

        assert self.gradcheck(fn, (aerial, height, yaw))

    @pytest.mark.slow
    def test_compile(self):
        aerial = torch.rand(1, 3, 16, 16)
        height = torch.tensor(2.0)
        fn = torch.compile(ground_plane_view, fullgraph=True)
        args = (aerial, 30.0, 90.0, (4, 4))
        kwargs = {"camera_height": height, "meters_per_pixel": 0.5, "pitch": -20.0}
        self.assert_close(fn(*args, **kwargs), ground_plane_view(*args, **kwargs))


def test_pitch_down_sees_the_camera_foot():
    # looking (almost) straight down, the centre pixel sees the camera's foot: the aerial centre
    aerial = coordinate_aerial(21)
    view = ground_plane_view(
        aerial, 0.0, 60.0, (5, 5), camera_height=3.0, meters_per_pixel=1.0, pitch=-89.999, center="pixel"
    )
    assert view[0, 0, 2, 2].item() == pytest.approx(10.0, abs=1e-3)
    assert view[0, 1, 2, 2].item() == pytest.approx(10.0, abs=1e-3)
    assert math.isfinite(view.sum().item())
