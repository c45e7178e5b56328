"""Synthetic world on disk: the CVUSA / CVACT / VIGOR layouts load through the real loaders; CLI; chunking."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from geo_bench.cli import main
from geo_bench.world import CityConfig, SyntheticWorld
from geo_bench.world.dataset import RenderConfig
from geo_bench.world.layouts import write_layout

CITY = CityConfig(size_m=400)
FRACTIONS = (0.4, 0.3, 0.3)
PANO = RenderConfig(ground_size=(32, 128), aerial_size=64, steps=48)
SPHERE = replace(PANO, ground_size=(64, 128), elevation=(-90.0, 90.0))


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    root = tmp_path_factory.mktemp("vigor")
    write_layout("vigor", root, 4, 0, city=CityConfig(size_m=250), render=SPHERE, chunk=8, progress=False)
    out["vigor"] = root
    for layout, render in (("cvusa", PANO), ("cvact", SPHERE)):
        root = tmp_path_factory.mktemp(layout)
        write_layout(
            layout, root, 10, 0, city=CITY, render=render, split_fractions=FRACTIONS, chunk=4, progress=False
        )
        out[layout] = root
    return out


class TestCVUSALayout:
    def test_files_and_csv(self, roots: dict[str, Path]) -> None:
        root = roots["cvusa"]
        rows = (root / "splits" / "train-19zl.csv").read_text().split()
        assert len(rows) == 8
        assert (
            rows[0]
            == "bingmap/19/0000001.jpg,streetview/panos/0000001.jpg,streetview/annotations/0000001.png"
        )
        test_rows = (root / "splits" / "val-19zl.csv").read_text().split()
        assert test_rows[0].startswith("bingmap/19/0000009.jpg")
        gps = np.loadtxt(root / "split_locations" / "all.csv", delimiter=",")
        assert gps.shape == (10, 5)

    def test_loads_through_cvusa_loader(self, roots: dict[str, Path]) -> None:
        from geo_bench.datasets import CVUSA

        ds = CVUSA(roots["cvusa"], "train", ground_size=(32, 128), aerial_size=(64, 64), ground_seg=True)
        assert len(ds) == 8 and ds.ids[0] == "0000001"
        s = ds[0]
        assert s["ground"].shape == (3, 32, 128) and s["aerial"].shape == (3, 64, 64)
        world = SyntheticWorld("train", 8, 0, city=CITY, render=PANO, split_fractions=FRACTIONS)
        assert torch.allclose(s["latlon"], world.render_batch([0])["latlon"][0], atol=1e-7)
        assert len(CVUSA(roots["cvusa"], "test")) == 2


class TestCVACTLayout:
    def test_mat_contents(self, roots: dict[str, Path]) -> None:
        m = scipy.io.loadmat(roots["cvact"] / "ACT_data.mat")
        assert m["utm"].dtype == np.float64 and m["utm"].shape == (10, 2)
        train = m["trainSet"]["trainInd"][0][0]
        assert train.shape == (6, 1) and train.min() == 1  # 1-based column vector
        assert np.array_equal(m["trainSet"][0][0][1], train)  # positional read (Sample4Geo) works
        assert m["valSetAll"]["valInd"][0][0].ravel().tolist() == [9, 10]
        assert len(m["panoIds"]) == 10 and all(len(p) == 22 for p in m["panoIds"])

    def test_loads_through_cvact_loader(self, roots: dict[str, Path]) -> None:
        from geo_bench.datasets import CVACT

        world = SyntheticWorld("train", 6, 0, city=CITY, render=SPHERE, split_fractions=FRACTIONS)
        ds = CVACT(roots["cvact"], "train", ground_size=(32, 128), aerial_size=(64, 64))
        assert len(ds) == 6
        s = ds[2]
        assert s["utm"].dtype == torch.float64
        assert torch.allclose(s["utm"], world.utm[2])
        assert s["ground"].shape == (3, 32, 128)  # middle-half crop of a full-sphere panorama
        assert len(CVACT(roots["cvact"], "val")) == 2
        test = CVACT(roots["cvact"], "test")
        assert len(test) == 2
        assert (roots["cvact"] / "ANU_data_test" / "streetview" / f"{test.ids[0]}_grdView.jpg").is_file()


class TestVIGORLayout:
    def test_loads_through_vigor_loader(self, roots: dict[str, Path]) -> None:
        from geo_bench.datasets import VIGOR

        for split in ("train", "test"):
            ds = VIGOR(roots["vigor"], split, ground_size=(32, 64), aerial_size=(32, 32))
            assert len(ds) == 8  # 2 of 4 panoramas per city, 4 cities
            s = ds[0]
            assert s["positives"].shape == (1,) and s["semi_positives"].shape == (3,)
        cross = VIGOR(roots["vigor"], "test", area="cross", ground_size=(32, 64), aerial_size=(32, 32))
        assert len(cross) == 8

    def test_positive_tile_holds_panorama(self, roots: dict[str, Path]) -> None:
        from geo_bench.datasets.vigor import parse_pano_latlon, parse_tile_latlon

        for line in (
            (roots["vigor"] / "splits" / "Seattle" / "pano_label_balanced.txt").read_text().splitlines()
        ):
            cols = line.split()
            lat, lon = parse_pano_latlon(cols[0])
            tiles = [parse_tile_latlon(cols[k]) for k in (1, 4, 7, 10)]
            assert len(set(cols[1::3])) == 4
            # positive: within a quarter tile (16 m) in both axes, semi-positives within half a tile
            dlat = [abs(lat - t[0]) * 111_195 for t in tiles]
            dlon = [abs(lon - t[1]) * 111_195 * np.cos(np.radians(lat)) for t in tiles]
            assert dlat[0] <= 16.1 and dlon[0] <= 16.1
            assert max(dlat) < 32.1 and max(dlon) < 32.1
            assert 40 < lat < 50  # Seattle

    def test_delta_puts_camera_at_its_pixel_under_vigor_convention(self, roots: dict[str, Path]) -> None:
        # Upstream convention (CCVPE datasets.py, VIGOR evaluate_from_npy.py, HC-Net, SliceMatch):
        # delta (d0, d1) puts the panorama at image (row, col) = (c + d0, c - d1), rows growing south,
        # columns east. The exact camera and tile-centre positions are the world's metres, written
        # into the file names as lat/lon (rounded to 1e-7 degrees, about 1 cm), inverted here.
        from geo_bench.datasets.vigor import parse_pano_latlon, parse_tile_latlon
        from geo_bench.metrics import vigor_offset_to_latlon
        from geo_bench.world.layouts import CITY_ORIGINS
        from geo_retrieval.geodesy import great_circle_distance, latlon_to_equirectangular

        size, gsd = SPHERE.aerial_size, SPHERE.gsd
        c = (size - 1) / 2  # the tile centre in pixel-centre coordinates (render_aerial)
        checked = 0
        for city in ("Chicago", "Seattle"):
            origin = CITY_ORIGINS[city]
            for line in (
                (roots["vigor"] / "splits" / city / "pano_label_balanced.txt").read_text().splitlines()
            ):
                cols = line.split()
                pano = torch.tensor(parse_pano_latlon(cols[0]), dtype=torch.float64)
                cam_en = latlon_to_equirectangular(pano, (0.0, 0.0), origin)
                for k in (1, 4, 7, 10):
                    tile = torch.tensor(parse_tile_latlon(cols[k]), dtype=torch.float64)
                    true_en = (cam_en - latlon_to_equirectangular(tile, (0.0, 0.0), origin)).numpy()
                    d0, d1 = float(cols[k + 1]), float(cols[k + 2])
                    row, col = c + d0, c - d1
                    # pixel (row, col) of a north-up tile looks at centre + ((col - c), -(row - c)) * gsd
                    east, north = (col - c) * gsd, -(row - c) * gsd
                    assert abs(east - true_en[0]) < 0.05 and abs(north - true_en[1]) < 0.05, (city, cols[0])
                    # VIGOR's own evaluation maps the delta back onto the panorama's GPS
                    pred = vigor_offset_to_latlon(
                        tile.numpy()[None], np.array([[d0, d1]]), meters_per_pixel=gsd, half_tile_px=size / 2
                    )
                    assert great_circle_distance(pred, pano.numpy()[None])[0] < 0.2
                    checked += 1
        assert checked == 2 * 4 * 4  # 4 panoramas x 4 tiles in each city


def test_cli_synth_writes_layout(tmp_path: Path) -> None:
    out = tmp_path / "cvusa"
    rc = main(
        [
            "synth",
            "--layout",
            "cvusa",
            "--out",
            str(out),
            "--num",
            "3",
            "--district-m",
            "400",
            "--ground-size",
            "16",
            "64",
            "--aerial-size",
            "32",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert len(list((out / "streetview" / "panos").glob("*.jpg"))) == 3
    assert main(["synth"]) == 2
    assert main(["synth", "--layout", "cvusa", "--num", "0", "--out", str(out)]) == 2


def test_chunked_rendering_is_bounded_and_identical(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sizes: list[int] = []
    original = SyntheticWorld.render_batch

    def spy(self, indices):
        sizes.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(SyntheticWorld, "render_batch", spy)
    write_layout("cvusa", tmp_path / "a", 5, 0, city=CITY, render=PANO, chunk=2, progress=False)
    assert max(sizes) <= 2 and sum(sizes) == 5
    sizes.clear()
    write_layout("cvusa", tmp_path / "b", 5, 0, city=CITY, render=PANO, chunk=5, progress=False)
    assert max(sizes) == 4
    for name in ("0000001", "0000004", "0000005"):
        a = (tmp_path / "a" / "streetview" / "panos" / f"{name}.jpg").read_bytes()
        b = (tmp_path / "b" / "streetview" / "panos" / f"{name}.jpg").read_bytes()
        assert a == b
