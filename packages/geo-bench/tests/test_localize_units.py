"""Pieces of geo_bench.localize without a model: tiling, windowed reads, CRSs, refinement, truth files."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("pyproj")

from geo_bench.localize import open_maps, plan_tiles, read_tiles, read_truth, refine_position, utm_crs_for
from geo_bench.localize.maps import from_latlon, to_latlon


def _write_map(path, crs="EPSG:32633", west=400_000.0, north=5_000_300.0, res=1.0, size=(300, 200)):
    """A synthetic RGB raster whose red channel encodes the column and green the row (so reads can be
    checked pixel by pixel)."""
    import rasterio
    from rasterio.transform import from_origin

    h, w = size
    rows, cols = np.mgrid[0:h, 0:w]
    data = np.stack([cols % 256, rows % 256, np.full_like(rows, 7)]).astype(np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=3,
        dtype="uint8",
        crs=crs,
        transform=from_origin(west, north, res, res),
    ) as dst:
        dst.write(data)
    return path


class TestTiling:
    def test_grid_inside_map(self, tmp_path):
        grid = open_maps([_write_map(tmp_path / "m.tif")])
        assert grid.crs == "EPSG:32633" and not grid.warped
        assert grid.maps[0].bounds == (400_000.0, 5_000_000.0, 400_200.0, 5_000_300.0)
        xy, k = plan_tiles(grid, 64.0, 32.0)
        # 200 m wide: centres 32, 64, ..., 160 (5); 300 m tall: 268, 236, ..., 44 (8); north to south, west to east
        assert len(xy) == 5 * 8 and (k == 0).all()
        assert tuple(xy[0]) == (400_032.0, 5_000_268.0) and tuple(xy[1]) == (400_064.0, 5_000_268.0)
        assert xy[:, 1].min() - 32 >= 5_000_000.0 and xy[:, 0].max() + 32 <= 400_200.0

    def test_exact_fit_keeps_last_tile(self, tmp_path):
        grid = open_maps([_write_map(tmp_path / "m.tif", size=(128, 128))])
        xy, _ = plan_tiles(grid, 64.0, 64.0)
        assert len(xy) == 4

    def test_window_read_is_north_up(self, tmp_path):
        grid = open_maps([_write_map(tmp_path / "m.tif")])
        # tile of 64 m centred 100 m east, 50 m south of the north-west corner; read at native 1 m/px
        t = read_tiles(grid, np.array([[400_100.0, 5_000_250.0]]), np.array([0]), 64.0, 64)
        assert t.shape == (1, 3, 64, 64) and t.dtype == np.uint8
        assert t[0, 0, 0, 0] == 68 and t[0, 0, 0, 63] == 131  # columns 68..131 (red = column)
        assert t[0, 1, 0, 0] == 18 and t[0, 1, 63, 0] == 81  # rows 18..81 from the north edge (green = row)

    def test_resampled_read(self, tmp_path):
        grid = open_maps([_write_map(tmp_path / "m.tif")])
        t = read_tiles(grid, np.array([[400_100.0, 5_000_250.0]]), np.array([0]), 64.0, 32)
        assert t.shape == (1, 3, 32, 32)
        assert abs(int(t[0, 0, 0, 0]) - 68.5) <= 1.5 and abs(int(t[0, 0, 0, 31]) - 130.5) <= 1.5

    def test_geographic_map_is_tiled_in_its_utm_zone(self, tmp_path):
        import rasterio
        from rasterio.transform import from_origin

        path = tmp_path / "wgs84.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=100,
            height=100,
            count=3,
            dtype="uint8",
            crs="EPSG:4326",
            transform=from_origin(15.0, 48.002, 0.00002, 0.00002),
        ) as dst:
            dst.write(np.full((3, 100, 100), 90, np.uint8))
        grid = open_maps([path])
        assert grid.warped and grid.crs == "EPSG:32633"
        xy, _ = plan_tiles(grid, 64.0, 64.0)
        assert len(xy) >= 1
        assert (read_tiles(grid, xy[:1], np.array([0]), 64.0, 16) == 90).all()

    def test_no_tile_fits(self, tmp_path):
        grid = open_maps([_write_map(tmp_path / "m.tif", size=(50, 50))])
        with pytest.raises(ValueError, match="no 64 m tile fits"):
            plan_tiles(grid, 64.0, 32.0)

    def test_feet_crs_refused(self, tmp_path):
        path = _write_map(tmp_path / "ft.tif", crs="EPSG:2263")  # NY state plane, US feet
        with pytest.raises(ValueError, match="not metres"):
            open_maps([path])

    def test_too_few_bands(self, tmp_path):
        import rasterio
        from rasterio.transform import from_origin

        path = tmp_path / "grey.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=10,
            height=10,
            count=1,
            dtype="uint8",
            crs="EPSG:32633",
            transform=from_origin(0, 10, 1, 1),
        ) as dst:
            dst.write(np.zeros((1, 10, 10), np.uint8))
        with pytest.raises(ValueError, match=r"grey\.tif has 1 band"):
            open_maps([path])


class TestCoordinates:
    def test_utm_zone(self):
        assert utm_crs_for(39.74, -104.99) == "EPSG:32613"
        assert utm_crs_for(-33.9, 151.2) == "EPSG:32756"
        assert utm_crs_for(51.5, 0.1) == "EPSG:32631"

    def test_roundtrip_latlon_first(self):
        ll = np.array([[39.7446, -104.995], [39.75, -104.98]])
        xy = from_latlon(ll, "EPSG:32613")
        assert 490_000 < xy[0, 0] < 510_000 and 4_390_000 < xy[0, 1] < 4_410_000
        np.testing.assert_allclose(to_latlon(xy, "EPSG:32613"), ll, atol=1e-9)


class TestRefine:
    def test_weighted_mean_near_best(self):
        xy = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 40.0], [300.0, 0.0]])
        s = np.array([0.9, 0.8, 0.6, 0.5])
        w = np.array([0.4, 0.3, 0.1])  # score - min; the far tile is excluded
        expected = (xy[:3] * w[:, None]).sum(0) / w.sum()
        np.testing.assert_allclose(refine_position(xy, s, 64.0), expected)

    def test_single_or_tied(self):
        np.testing.assert_array_equal(
            refine_position(np.array([[5.0, 6.0]]), np.array([0.3]), 64.0), [5.0, 6.0]
        )
        xy = np.array([[5.0, 6.0], [10.0, 6.0]])
        np.testing.assert_array_equal(refine_position(xy, np.array([0.3, 0.3]), 64.0), [5.0, 6.0])


class TestTruth:
    def test_keys(self, tmp_path):
        p = tmp_path / "t.csv"
        p.write_text("id,file,lat,lon\nq1,queries/q1.jpg,39.7,-105.0\n")
        t = read_truth(p)
        assert t["q1"] == t["q1.jpg"] == t["queries/q1.jpg"] == (39.7, -105.0)

    def test_bad_header(self, tmp_path):
        p = tmp_path / "t.csv"
        p.write_text("name,x,y\na,1,2\n")
        with pytest.raises(ValueError, match=r"t\.csv needs a header"):
            read_truth(p)
