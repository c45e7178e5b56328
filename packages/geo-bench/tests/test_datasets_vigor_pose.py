"""VIGORPose on a synthetic VIGOR folder written by write_vigor: the camera pixel converted to metres
is the world's camera position relative to the tile centre; resizing; the tile choice; the label
scale (measured, or a published constant); bad arguments and label files with the wrong sign."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.datasets.errors import DatasetFormatError
from geo_bench.datasets.vigor import parse_pano_latlon
from geo_bench.datasets.vigor_pose import VIGOR_CITY_METRES_PER_PX, VIGORPose
from geo_bench.world import CityConfig
from geo_bench.world.dataset import RenderConfig
from geo_bench.world.layouts import CITY_ORIGINS, write_vigor
from geo_retrieval.geodesy import latlon_to_equirectangular

RENDER = RenderConfig(ground_size=(16, 32), aerial_size=64, steps=16, elevation=(-90.0, 90.0))
GSD = RENDER.gsd  # 1 m per pixel of the written 64-px tiles
GROUND = (16, 32)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vigor_pose")
    write_vigor(out, 4, 0, city=CityConfig(size_m=250), render=RENDER, progress=False)
    return out


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "vigor"
    shutil.copytree(root, dst)
    return dst


def _rewrite_offsets(labels_dir: Path, cities: tuple[str, ...], transform) -> None:
    """Apply ``transform(d0, d1) -> (d0, d1)`` to every offset of the cities' label files."""
    for city in cities:
        for path in sorted((labels_dir / city).glob("*.txt")):
            if path.name == "satellite_list.txt":
                continue
            rows = []
            for line in path.read_text().splitlines():
                cols = line.split()
                for k in (2, 5, 8, 11):
                    d0, d1 = transform(float(cols[k]), float(cols[k + 1]))
                    cols[k], cols[k + 1] = f"{d0:.6f}", f"{d1:.6f}"
                rows.append(" ".join(cols))
            path.write_text("\n".join(rows) + "\n")


def _camera_metres(sample: dict) -> np.ndarray:
    """(east, north) metres of the camera from the tile centre, from camera_px and metres_per_px."""
    c = (sample["aerial"].shape[-1] - 1) / 2
    row, col = sample["camera_px"].tolist()
    return np.array([col - c, -(row - c)]) * float(sample["metres_per_px"])


def _true_metres(ds: VIGORPose, sample: dict) -> np.ndarray:
    """The world's camera position minus the tile centre, both as written into the file names."""
    origin = CITY_ORIGINS[sample["city"]]
    pano = torch.tensor(parse_pano_latlon(sample["id"] + ".jpg"), dtype=torch.float64)
    tile = torch.from_numpy(ds.gallery_latlon[sample["tile"]].copy())
    cam = latlon_to_equirectangular(pano, (0.0, 0.0), origin)
    return (cam - latlon_to_equirectangular(tile, (0.0, 0.0), origin)).numpy()


class TestVIGORPose:
    @pytest.mark.parametrize(("split", "area"), [("train", "same"), ("test", "same"), ("test", "cross")])
    def test_camera_pixel_is_the_world_camera(self, root, split, area):
        ds = VIGORPose(root, split, area=area, ground_size=GROUND, aerial_size=None)
        assert len(ds) == 8
        for i in range(len(ds)):
            s = ds[i]
            assert s["ground"].shape == (3, *GROUND) and s["ground"].dtype == torch.float32
            assert s["aerial"].shape == (3, 64, 64) and s["aerial"].dtype == torch.float32
            assert s["camera_px"].dtype == torch.float64 and s["camera_px"].shape == (2,)
            assert s["heading"].dtype == torch.float32 and float(s["heading"]) == 0.0
            assert s["metres_per_px"].dtype == torch.float64
            assert float(s["metres_per_px"]) == pytest.approx(GSD, rel=1e-3)
            assert s["tile"] == int(ds.positives[i])
            err = np.abs(_camera_metres(s) - _true_metres(ds, s))
            # within half a pixel is the requirement; the names' 1e-7 degree rounding is ~1 cm
            assert err.max() < 0.5 * GSD and err.max() < 0.05, (s["id"], err)
            # the positive holds the camera in its centre quarter
            assert np.all(np.abs(s["camera_px"].numpy() - 31.5) <= 16.1)
        assert ds.metres_per_px_source == dict.fromkeys(ds.cities, "label_fit")

    def test_resizing_scales_camera_px(self, root):
        full = VIGORPose(root, "train", ground_size=GROUND, aerial_size=None)
        half = VIGORPose(root, "train", ground_size=GROUND, aerial_size=32)
        for i in range(len(full)):
            a, b = full[i], half[i]
            assert b["aerial"].shape == (3, 32, 32)
            # continuous pixel-centre coordinates: x_32 = (x_64 + 0.5) / 2 - 0.5
            torch.testing.assert_close(b["camera_px"], (a["camera_px"] + 0.5) / 2 - 0.5)
            assert float(b["metres_per_px"]) == pytest.approx(2 * float(a["metres_per_px"]))
            np.testing.assert_allclose(_camera_metres(b), _camera_metres(a), atol=1e-9)

    def test_covering_tiles_are_deterministic_and_hold_the_camera(self, root):
        ds = VIGORPose(root, "train", ground_size=GROUND, aerial_size=None, positives_only=False, seed=3)
        again = VIGORPose(root, "train", ground_size=GROUND, aerial_size=None, positives_only=False, seed=3)
        tiles = [ds[i]["tile"] for i in range(len(ds))]
        assert tiles == [again[i]["tile"] for i in range(len(ds))] == [ds[i]["tile"] for i in range(len(ds))]
        assert any(t != int(p) for t, p in zip(tiles, ds.positives, strict=True))  # semi-positives are drawn
        for i in range(len(ds)):
            s = ds[i]
            assert s["tile"] in {int(ds.positives[i]), *ds.semi_positives[i].tolist()}
            assert np.all(
                (s["camera_px"].numpy() > -0.5) & (s["camera_px"].numpy() < 63.5)
            )  # inside the tile
            assert np.abs(_camera_metres(s) - _true_metres(ds, s)).max() < 0.05
        other = VIGORPose(root, "train", ground_size=GROUND, aerial_size=None, positives_only=False, seed=4)
        assert [other[i]["tile"] for i in range(len(ds))] != tiles  # the seed matters

    def test_protocol(self, root):
        p = VIGORPose(root, "test", area="cross", ground_size=GROUND, aerial_size=48).protocol
        assert p["vigor_labels"] == "orig" and p["area"] == "cross" and p["positives_only"] is True
        assert p["aerial_size"] == [48, 48] and p["task"] == "pose"
        assert set(p["metres_per_label_px"]) == {"Chicago", "SanFrancisco"}
        assert all(v == pytest.approx(GSD, rel=1e-3) for v in p["metres_per_label_px"].values())

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"positives_only": "yes"}, TypeError, "positives_only must be a bool"),
            ({"seed": 1.5}, TypeError, "seed must be an int"),
            ({"seed": -1}, ValueError, "seed must be >= 0"),
            ({"aerial_size": (32, 64)}, ValueError, "aerial_size must be square"),
            ({"split": "test", "positives_only": False}, ValueError, "positives_only=False.*split='test'"),
            ({"area": "far"}, ValueError, "area must be"),
            ({"split": "val"}, ValueError, "unknown split"),
        ],
    )
    def test_bad_arguments(self, root, kwargs, error, match):
        args = {"split": "train", "ground_size": GROUND, **kwargs}
        with pytest.raises(error, match=match):
            VIGORPose(root, **args)

    def test_rejects_labels_with_the_old_column_sign(self, root, tmp_path):
        folder = _copy(root, tmp_path)
        _rewrite_offsets(folder / "splits", ("Chicago",), lambda d0, d1: (d0, -d1))
        with pytest.raises(DatasetFormatError, match=r"Chicago.*column \(d1\) offsets.*write_vigor") as info:
            VIGORPose(folder, "train", ground_size=GROUND)
        assert info.value.path is not None and info.value.path.endswith("same_area_balanced_train.txt")

    def test_uses_the_published_constant_when_the_labels_match_it(self, root, tmp_path):
        # offsets rewritten in pixels of 0.1141 m: the original labels' 0.114 m/px (within 2 %)
        folder = _copy(root, tmp_path)
        _rewrite_offsets(folder / "splits", ("NewYork", "Seattle"), lambda d0, d1: (d0 / 0.1141, d1 / 0.1141))
        ds = VIGORPose(folder, "train", area="cross", ground_size=GROUND, aerial_size=None)
        assert ds.metres_per_label_px == {"NewYork": 0.114, "Seattle": 0.114}
        assert ds.metres_per_px_source == {"NewYork": "vigor_0.114", "Seattle": "vigor_0.114"}
        s = ds[0]
        assert float(s["metres_per_px"]) == pytest.approx(0.114)
        assert np.abs(_camera_metres(s) - _true_metres(ds, s)).max() < 0.05 + 0.001 * 40

    def test_corrected_labels_use_ccvpe_city_resolution(self, root, tmp_path):
        folder = _copy(root, tmp_path)
        corrected = folder / "corrected"
        for city in ("NewYork", "Seattle"):
            (corrected / city).mkdir(parents=True)
            src = folder / "splits" / city / "pano_label_balanced.txt"
            shutil.copy(src, corrected / city / "pano_label_balanced__corrected.txt")
        _rewrite_offsets(corrected, ("NewYork",), lambda d0, d1: (d0 / 0.1135, d1 / 0.1135))
        ds = VIGORPose(
            folder, "train", area="cross", labels="corrected", labels_dir=corrected, ground_size=GROUND
        )
        assert ds.metres_per_label_px["NewYork"] == VIGOR_CITY_METRES_PER_PX["NewYork"]
        assert ds.metres_per_px_source == {"NewYork": "ccvpe_city_resolution", "Seattle": "label_fit"}
        assert ds.protocol["vigor_labels"] == "slicematch_corrected"
