"""CVACT loader on the tiny fake in tests/data/cvact/data.py (1-based .mat indices, crop, missing files)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.datasets import CVACT, DatasetNotFoundError, read_act_data


def _data_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_fake_{name}", Path(__file__).parent / "data" / name / "data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fake = _data_module("cvact")
SIZES = {"ground_size": (4, 16), "aerial_size": (8, 8)}


@pytest.fixture(scope="session")
def cvact(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cvact")
    return root, fake.write(root)


class TestCVACT:
    def test_read_act_data_zero_based(self, cvact):
        root, info = cvact
        m = read_act_data(root / "ACT_data.mat")
        assert m["panoIds"] == info["panoIds"]
        assert m["train"].tolist() == info["train"] == [0, 2, 3, 5, 9]
        assert m["val"].tolist() == [1, 4, 6] and m["test"].tolist() == [8, 7, 1]
        assert m["utm"].dtype == np.float64

    @pytest.mark.parametrize("split", ["train", "val", "test"])
    def test_pairing_index_shift(self, cvact, split):
        root, info = cvact
        ds = CVACT(root, split, **SIZES)
        rows = info[split]
        assert len(ds) == len(rows)
        assert ds.ids == [info["panoIds"][k] for k in rows]
        for j, k in enumerate(rows):
            s = ds[j]
            assert s["id"] == info["panoIds"][k]
            assert fake.decode_id(s["ground"]) == k
            assert fake.decode_id(s["aerial"]) == k
            assert s["utm"].dtype == torch.float64
            assert torch.equal(s["utm"], torch.from_numpy(info["utm"][k]))  # exact: float64 kept
        assert ds.protocol["folder"] == ("ANU_data_test" if split == "test" else "ANU_data_small")

    def test_getitem_shapes(self, cvact):
        s = CVACT(cvact[0], "train", **SIZES)[0]
        assert s["ground"].shape == (3, 4, 16) and s["aerial"].shape == (3, 8, 8)
        assert s["utm"].shape == (2,)

    def test_crop_middle_half(self, cvact):
        root, _ = cvact
        cropped = CVACT(root, "val", **SIZES)[0]["ground"]
        full = CVACT(root, "val", crop=None, **SIZES)[0]["ground"]
        assert float(cropped.max()) < 0.8  # only the id colour (all channels < 0.6)
        assert float(full.max()) > 0.9 and float(full.min()) < 0.1  # white and black quarters
        native = CVACT(root, "val", ground_size=None, aerial_size=None)[0]
        assert native["ground"].shape == (3, 8, 32) and native["aerial"].shape == (3, 16, 16)
        assert CVACT(root, "val", crop=(0.0, 0.5), ground_size=None)[0]["ground"].shape == (3, 8, 32)
        with pytest.raises(ValueError, match="crop"):
            CVACT(root, "val", crop="top_half")

    def test_polar(self, cvact):
        ds = CVACT(cvact[0], "train", polar=(4, 16), **{"ground_size": (4, 16)})
        s = ds[1]
        assert s["aerial"].shape == (3, 4, 16)
        assert fake.decode_id(s["aerial"]) == 2

    def test_invalid_split(self, cvact):
        with pytest.raises(ValueError, match=r"valid splits: \['train', 'val', 'test'\]"):
            CVACT(cvact[0], "CVACT_test")

    def test_not_downloaded(self, tmp_path):
        with pytest.raises(DatasetNotFoundError, match="Dataset not found") as err:
            CVACT(tmp_path, "train")
        assert "ACT_data.mat" in str(err.value) and "satview_polish" in str(err.value)

    def test_missing_files(self, cvact, tmp_path):
        root, info = cvact
        copy = tmp_path / "act"
        shutil.copytree(root, copy)
        gone = info["panoIds"][3]
        (copy / "ANU_data_small" / "satview_polish" / f"{gone}_satView_polish.jpg").unlink()
        with pytest.raises(DatasetNotFoundError, match=f"{gone}_satView_polish.jpg"):
            CVACT(copy, "train", **SIZES)
        with pytest.warns(UserWarning, match="skipped 1 of 5"):
            ds = CVACT(copy, "train", on_missing="skip", **SIZES)
        assert len(ds) == 4 and ds.missing == 1 and gone not in ds.ids
        assert ds.protocol["n"] == 4 and ds.protocol["missing"] == 1
        for j in range(len(ds)):  # the remaining pairs stay aligned with their utm
            k = info["panoIds"].index(ds.ids[j])
            assert fake.decode_id(ds[j]["aerial"]) == k
            assert torch.equal(ds[j]["utm"], torch.from_numpy(info["utm"][k]))

    def test_struct_read_by_name(self, cvact, tmp_path):
        import scipy.io

        root, _ = cvact
        m = scipy.io.loadmat(root / "ACT_data.mat")
        bad = {k: v for k, v in m.items() if not k.startswith("__")}
        bad["trainSet"] = {"field0": np.zeros((2, 1))}
        copy = tmp_path / "act"
        copy.mkdir()
        scipy.io.savemat(copy / "ACT_data.mat", bad)
        with pytest.raises(ValueError, match=r"no field 'trainInd'; fields: \['field0'\]"):
            read_act_data(copy / "ACT_data.mat")

    def test_plot(self, cvact):
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        ds = CVACT(cvact[0], "val", **SIZES)
        fig = ds.plot(ds[0])
        assert isinstance(fig, Figure)
        plt.close(fig)
