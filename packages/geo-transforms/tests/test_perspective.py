import math

import pytest
import torch

from geo_transforms import PanoramaToPerspective, panorama_to_perspective
from geo_transforms.testing import BaseTester


def column_pano(height: int = 16, width: int = 64, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(1, 2, H, W): channel 0 = column index, channel 1 = row index (bilinear sampling is exact)."""
    cols = torch.arange(width, dtype=dtype).expand(height, width)
    rows = torch.arange(height, dtype=dtype)[:, None].expand(height, width)
    return torch.stack((cols, rows))[None].clone()


def expected_column(bearing_deg: float, width: int) -> float:
    return (width / 2 + bearing_deg * width / 360.0) % width


class TestPanoramaToPerspective(BaseTester):
    def test_smoke(self, device, dtype):
        pano = torch.rand(2, 3, 16, 32, device=device, dtype=dtype)
        out = panorama_to_perspective(pano, 30.0, -10.0, 90.0, (8, 12))
        assert out.shape == (2, 3, 8, 12)
        assert out.dtype == dtype and out.device == pano.device
        assert torch.isfinite(out.float()).all()

    def test_exception(self):
        pano = torch.rand(1, 3, 8, 16)
        with pytest.raises(TypeError, match="pano"):
            panorama_to_perspective(pano.numpy(), 0.0, 0.0, 90.0, (4, 4))
        with pytest.raises(TypeError, match="pano"):
            panorama_to_perspective(pano.to(torch.uint8), 0.0, 0.0, 90.0, (4, 4))
        with pytest.raises(ValueError, match="pano"):
            panorama_to_perspective(pano[0], 0.0, 0.0, 90.0, (4, 4))
        with pytest.raises(ValueError, match="fov"):
            panorama_to_perspective(pano, 0.0, 0.0, 180.0, (4, 4))
        with pytest.raises(ValueError, match="fov"):
            panorama_to_perspective(pano, 0.0, 0.0, [90.0, 0.0], (4, 4))
        with pytest.raises(TypeError, match="yaw"):
            panorama_to_perspective(pano, "north", 0.0, 90.0, (4, 4))
        with pytest.raises(ValueError, match="yaw"):
            panorama_to_perspective(pano, torch.zeros(1, 1, 1), 0.0, 90.0, (4, 4))
        with pytest.raises(ValueError, match="elevation_range"):
            panorama_to_perspective(pano, 0.0, 0.0, 90.0, (4, 4), elevation_range=(-10.0, 10.0))
        with pytest.raises(TypeError, match="out_size"):
            panorama_to_perspective(pano, 0.0, 0.0, 90.0, 4)
        with pytest.raises(ValueError, match="broadcast"):
            panorama_to_perspective(pano, torch.zeros(3), torch.zeros(2), 90.0, (4, 4))
        with pytest.raises(ValueError, match="batch"):
            panorama_to_perspective(pano, torch.zeros(2, 3), 0.0, 90.0, (4, 4))

    def test_cardinality(self):
        pano = torch.rand(2, 3, 8, 16)
        assert panorama_to_perspective(pano, torch.tensor(5.0), 0.0, 60.0, (4, 6)).shape == (2, 3, 4, 6)
        assert panorama_to_perspective(pano, [0.0, 90.0, 180.0], 0.0, 60.0, (4, 6)).shape == (2, 3, 3, 4, 6)
        yaw = torch.rand(2, 5) * 360
        assert panorama_to_perspective(pano, yaw, 0.0, 60.0, (4, 6)).shape == (2, 5, 3, 4, 6)
        # pitch (V,) broadcasts against a scalar yaw
        assert panorama_to_perspective(pano, 0.0, torch.tensor([-10.0, 10.0]), 60.0, (4, 6)).shape == (
            2,
            2,
            3,
            4,
            6,
        )

    def test_multi_view_equals_single_views(self, device):
        pano = torch.rand(2, 3, 16, 32, device=device)
        yaws = [10.0, 100.0, 250.0]
        many = panorama_to_perspective(pano, yaws, -5.0, 70.0, (6, 8))
        for v, yaw in enumerate(yaws):
            self.assert_close(many[:, v], panorama_to_perspective(pano, yaw, -5.0, 70.0, (6, 8)))
        per_batch = panorama_to_perspective(
            pano, torch.tensor([[10.0], [250.0]], device=device), -5.0, 70.0, (6, 8)
        )
        self.assert_close(per_batch[0, 0], many[0, 0])
        self.assert_close(per_batch[1, 0], many[1, 2])

    @pytest.mark.parametrize("yaw", [0.0, 90.0, -90.0, 45.0, 123.4, 300.0])
    def test_centre_pixel_samples_the_yaw_column(self, yaw):
        width = 64
        out = panorama_to_perspective(column_pano(16, width), yaw, 0.0, 60.0, (5, 7))
        assert out[0, 0, 2, 3].item() == pytest.approx(expected_column(yaw, width), abs=1e-9)
        # pitch 0: the centre row is the horizon, between rows 7 and 8 of a 16-row full sphere
        assert out[0, 1, 2, 3].item() == pytest.approx(7.5, abs=1e-9)

    def test_east_is_three_quarters(self):
        out = panorama_to_perspective(column_pano(8, 32), 90.0, 0.0, 30.0, (3, 3))
        assert out[0, 0, 1, 1].item() == pytest.approx(24.0)

    def test_adjacent_90_degree_views_tile_the_horizon(self):
        width, w = 360, 9
        pano = column_pano(8, width)
        views = panorama_to_perspective(pano, [0.0, 90.0], 0.0, 90.0, (3, w))
        bearing_0 = views[0, 0, 0, 1] - width / 2  # columns are degrees here
        bearing_90 = views[0, 1, 0, 1] - width / 2
        # view 0 spans (-45, 45), view 90 spans (45, 135): they meet at 45 without overlap or gap
        half_pixel = 45.0 - math.degrees(math.atan((w - 1) / w))
        assert bearing_0.max().item() == pytest.approx(45.0 - half_pixel, abs=1e-9)
        assert bearing_90.min().item() == pytest.approx(45.0 + half_pixel, abs=1e-9)
        assert torch.all(bearing_0.diff() > 0) and torch.all(bearing_90.diff() > 0)

    def test_longitude_only_panorama_gives_vertical_lines(self):
        # content depends on longitude only -> at pitch 0 every view column sees one bearing,
        # bearing(x) = yaw + atan((x - cx) / f): straight vertical lines stay vertical
        width, (h, w), fov, yaw = 360, (9, 11), 80.0, 30.0
        out = panorama_to_perspective(column_pano(32, width), yaw, 0.0, fov, (h, w))[0, 0]
        focal = (w / 2) / math.tan(math.radians(fov / 2))
        x = torch.arange(w, dtype=torch.float64)
        expected = width / 2 + yaw + torch.rad2deg(torch.atan((x - (w - 1) / 2) / focal))
        self.assert_close(out, expected.expand(h, w), rtol=0, atol=1e-9)

    def test_pitch_and_roll(self):
        pano = column_pano(18, 36)
        # looking 30 deg up: the centre pixel sees elevation 30 -> row (90 - 30) / 10 - 0.5
        up = panorama_to_perspective(pano, 0.0, 30.0, 60.0, (5, 5))
        assert up[0, 1, 2, 2].item() == pytest.approx(5.5)
        # a positive roll turns the camera clockwise: its right edge looks below the horizon
        rolled = panorama_to_perspective(pano, 0.0, 0.0, 60.0, (5, 5), roll=30.0)
        assert rolled[0, 1, 2, 4] > rolled[0, 1, 2, 0]

    def test_cropped_panorama_elevation_range(self):
        # a 224x1232-like crop with square pixels covering +-32.7 deg around the horizon
        height, width = 16, 88
        top = 180.0 * height / width
        pano = column_pano(height, width)
        out = panorama_to_perspective(pano, 0.0, 10.0, 40.0, (5, 5), elevation_range=(top, -top))
        assert out[0, 1, 2, 2].item() == pytest.approx((top - 10.0) / (2 * top) * height - 0.5)
        # rays beyond the crop sample zeros
        steep = panorama_to_perspective(
            torch.ones(1, 1, height, width), 0.0, 60.0, 20.0, (5, 5), elevation_range=(top, -top)
        )
        assert steep.abs().max() == 0

    def test_seam_has_no_black_line(self, device, dtype):
        pano = torch.ones(1, 3, 8, 16, device=device, dtype=dtype)
        out = panorama_to_perspective(pano, 180.0, 0.0, 90.0, (6, 40))  # straddles column 0 / W-1
        self.assert_close(out, torch.ones_like(out))
        # the seam interpolates between the last and the first column
        ramp = column_pano(8, 16)
        seam = panorama_to_perspective(ramp, 180.0 - 360.0 / 32, 0.0, 10.0, (1, 1))  # u = 15.5
        assert seam[0, 0, 0, 0].item() == pytest.approx(0.5 * 15 + 0.5 * 0)

    def test_module_matches_function_and_moves_buffers(self, device):
        pano = torch.rand(2, 3, 16, 32, device=device)
        module = PanoramaToPerspective(torch.tensor([0.0, 90.0]), -10.0, 75.0, (6, 8), roll=2.0).to(device)
        assert module.yaw.device == pano.device
        self.assert_close(
            module(pano), panorama_to_perspective(pano, [0.0, 90.0], -10.0, 75.0, (6, 8), roll=2.0)
        )
        assert "out_size=(6, 8)" in repr(module)

    def test_static_grid_is_cached(self):
        from geo_transforms.perspective import _cached_perspective_grid

        pano = torch.rand(1, 3, 8, 16)
        panorama_to_perspective(pano, 12.5, 0.0, 90.0, (4, 4))
        hits = _cached_perspective_grid.cache_info().hits
        panorama_to_perspective(pano, 12.5, 0.0, 90.0, (4, 4))
        assert _cached_perspective_grid.cache_info().hits == hits + 1

    def test_gradcheck(self):
        pano = torch.rand(1, 2, 6, 12, dtype=torch.float64, requires_grad=True)
        yaw = torch.tensor([17.3, 101.0], dtype=torch.float64, requires_grad=True)
        fov = torch.tensor(63.0, dtype=torch.float64, requires_grad=True)
        pitch = torch.tensor(4.1, dtype=torch.float64, requires_grad=True)

        def fn(p, y, f, t):
            return panorama_to_perspective(p, y, t, f, (3, 4))

        assert self.gradcheck(fn, (pano, yaw, fov, pitch))

    @pytest.mark.slow
    def test_compile(self):
        pano = torch.rand(1, 3, 8, 16)
        yaw = torch.tensor([10.0, 200.0])
        fn = torch.compile(panorama_to_perspective, fullgraph=True)
        self.assert_close(
            fn(pano, yaw, 0.0, 90.0, (4, 4)), panorama_to_perspective(pano, yaw, 0.0, 90.0, (4, 4))
        )


@pytest.mark.parametrize("low_dtype", [torch.float16, torch.bfloat16])
def test_low_precision_samples_at_float32_coordinates(low_dtype):
    pano = torch.rand(1, 3, 128, 512, dtype=torch.float64)
    yaw = [12.3, 250.0]
    ref = panorama_to_perspective(pano, yaw, -7.0, 75.0, (32, 32))
    low = panorama_to_perspective(pano.to(low_dtype), yaw, -7.0, 75.0, (32, 32))
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[low_dtype]
    torch.testing.assert_close(low.double(), ref, rtol=0, atol=tol)
