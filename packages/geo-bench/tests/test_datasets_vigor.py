"""VIGOR loader on the tiny fake in tests/data/vigor/data.py (queries vs gallery, areas, labels)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from geo_bench.datasets import VIGOR, DatasetNotFoundError, parse_pano_latlon, parse_tile_latlon


def _data_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_fake_{name}", Path(__file__).parent / "data" / name / "data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fake = _data_module("vigor")
SIZES = {"ground_size": (4, 8), "aerial_size": (8, 8)}


@pytest.fixture(scope="session")
def vigor(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("vigor")
    return root, fake.write(root)


class TestVIGOR:
    def test_getitem(self, vigor):
        ds = VIGOR(vigor[0], "train", **SIZES)
        s = ds[0]
        assert s["ground"].shape == (3, 4, 8) and s["aerial"].shape == (3, 8, 8)
        assert s["positives"].dtype == torch.long and s["positives"].shape == (1,)
        assert s["semi_positives"].shape == (3,) and s["offset"].shape == (2,)
        assert s["semi_offsets"].shape == (3, 2) and s["offset"].dtype == torch.float64
        assert s["latlon"].dtype == torch.float64
        g = ds.gallery[0]
        assert g["aerial"].shape == (3, 8, 8) and g["latlon"].dtype == torch.float64

    @pytest.mark.parametrize(
        ("area", "split", "cities", "n_query"),
        [
            ("same", "train", fake.CITIES, 8),
            ("same", "test", fake.CITIES, 4),
            ("cross", "train", ("NewYork", "Seattle"), 6),
            ("cross", "test", ("Chicago", "SanFrancisco"), 6),
        ],
    )
    def test_areas_and_pairing(self, vigor, area, split, cities, n_query):
        root, info = vigor
        ds = VIGOR(root, split, area=area, **SIZES)
        assert len(ds) == n_query and ds.cities == tuple(cities)
        assert len(ds.gallery) == 4 * len(cities)
        assert ds.protocol["n_reference"] == len(ds.gallery) and ds.protocol["area"] == area
        for i in range(len(ds)):
            s = ds[i]
            city = s["city"]
            ci, j = fake.CITIES.index(city), info["panos"][city].index(s["id"] + ".jpg")
            assert fake.decode_id(s["ground"]) == ci * fake.PANOS + j
            pos = int(s["positives"][0])
            assert ds.gallery.ids[pos] == info["tiles"][city][(j + 1) % 4].removesuffix(".png")
            t = fake.CITIES.index(ds.gallery[pos]["city"]) * fake.TILES + (j + 1) % 4
            assert fake.decode_id(s["aerial"]) == fake.decode_id(ds.gallery[pos]["aerial"]) == t
            semis = sorted(int(x) for x in s["semi_positives"])
            assert len(set(semis) | {pos}) == 4
            assert all(ds.gallery[x]["city"] == city for x in semis)
            row = info["labels"][city][j].split(" ")
            assert s["offset"].tolist() == [float(row[2]), float(row[3])]
            assert s["semi_offsets"][2].tolist() == [float(row[11]), float(row[12])]
            assert s["latlon"].tolist() == list(parse_pano_latlon(s["id"] + ".jpg"))
        assert torch.equal(ds.positives, torch.stack([ds[i]["positives"][0] for i in range(len(ds))]))

    def test_gps_from_names(self):
        assert parse_pano_latlon("abc,41.880300,-87.630400,.jpg") == (41.8803, -87.6304)
        assert parse_tile_latlon("satellite_41.88_-87.63.png") == (41.88, -87.63)
        with pytest.raises(ValueError, match="satellite_"):
            parse_tile_latlon("tile_1_2.png")

    def test_corrected_labels(self, vigor, tmp_path):
        root, info = vigor
        corr = tmp_path / "VIGOR_corrected"
        for city in fake.CITIES:
            (corr / city).mkdir(parents=True)
            rows = []
            for line in info["labels"][city][:2]:
                c = line.split(" ")
                c[1:4], c[4:7] = c[4:7], c[1:4]  # swap the positive with the first semi-positive
                rows.append(" ".join(c))
            (corr / city / "same_area_balanced_train__corrected.txt").write_text("\n".join(rows) + "\n")
        orig = VIGOR(root, "train", **SIZES)
        fixed = VIGOR(root, "train", labels="corrected", labels_dir=corr, **SIZES)
        assert orig.labels == "orig" and fixed.labels == "slicematch_corrected"
        assert fixed.protocol["vigor_labels"] == "slicematch_corrected"
        assert torch.equal(fixed.positives, orig.semi_positives[:, 0])
        with pytest.raises(ValueError, match="labels_dir"):
            VIGOR(root, "train", labels="corrected")

    def test_invalid_split_and_area(self, vigor):
        with pytest.raises(ValueError, match=r"valid splits: \['train', 'test'\]"):
            VIGOR(vigor[0], "val")
        with pytest.raises(ValueError, match="area"):
            VIGOR(vigor[0], "train", area="near")

    def test_not_downloaded(self, tmp_path):
        with pytest.raises(DatasetNotFoundError, match="Dataset not found") as err:
            VIGOR(tmp_path, "train")
        assert "Chicago" in str(err.value) and "satellite_list.txt" in str(err.value)

    def test_missing_files(self, vigor, tmp_path):
        root, info = vigor
        copy = tmp_path / "v"
        shutil.copytree(root, copy)
        pano = info["panos"]["Seattle"][0]
        (copy / "Seattle" / "panorama" / pano).unlink()
        with pytest.raises(DatasetNotFoundError, match="Seattle/panorama"):
            VIGOR(copy, "train", **SIZES)
        with pytest.warns(UserWarning, match="skipped 1"):
            ds = VIGOR(copy, "train", on_missing="skip", **SIZES)
        assert len(ds) == 7 and ds.missing == 1
        tile = info["tiles"]["Chicago"][2]
        (copy / "Chicago" / "satellite" / tile).unlink()
        with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(DatasetNotFoundError, match=tile):
            VIGOR(copy, "train", on_missing="skip", **SIZES)

    def test_plot(self, vigor):
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        ds = VIGOR(vigor[0], "test", **SIZES)
        fig = ds.plot(ds[0], suptitle="VIGOR")
        assert isinstance(fig, Figure)
        plt.close(fig)
