"""CVUSA loader and the CVUSA duplicate finder, on the tiny fake in tests/data/cvusa/data.py."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import matplotlib
import pytest
import torch

from geo_bench.cli import main
from geo_bench.datasets import CVUSA, DatasetNotFoundError, find_exact_duplicates

matplotlib.use("Agg")


def _data_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_fake_{name}", Path(__file__).parent / "data" / name / "data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fake = _data_module("cvusa")
SIZES = {"ground_size": (4, 16), "aerial_size": (8, 8)}


@pytest.fixture(scope="session")
def cvusa_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cvusa")
    fake.write(root)
    return root


class TestCVUSA:
    def test_getitem(self, cvusa_root):
        ds = CVUSA(cvusa_root, "train", **SIZES)
        s = ds[0]
        assert s["ground"].shape == (3, 4, 16) and s["ground"].dtype == torch.float32
        assert s["aerial"].shape == (3, 8, 8) and s["aerial"].dtype == torch.float32
        assert 0.0 <= float(s["ground"].min()) and float(s["aerial"].max()) <= 1.0
        assert s["id"] == "0000001" and isinstance(s["id"], str)
        assert s["latlon"].dtype == torch.float64 and s["latlon"].shape == (2,)
        assert s["yaw"] == 0.0

    def test_len_and_test_alias(self, cvusa_root):
        assert len(CVUSA(cvusa_root, "train", **SIZES)) == 8
        val, test = CVUSA(cvusa_root, "val", **SIZES), CVUSA(cvusa_root, "test", **SIZES)
        assert len(val) == len(test) == 4
        assert val.ids == [f"{k:07d}" for k in fake.VAL] == test.ids

    def test_pairing_and_gps(self, cvusa_root):
        ds = CVUSA(cvusa_root, "train", **SIZES)
        dup = {b for pairs in fake.DUPLICATES.values() for _, b in pairs}
        for i in range(len(ds)):
            s = ds[i]
            k = int(s["id"])
            if s["id"] not in dup:
                assert fake.decode_id(s["ground"]) == k
                assert fake.decode_id(s["aerial"]) == k
            gps = torch.tensor([round(v, 6) for v in fake.gps(k)], dtype=torch.float64)
            assert s["latlon"].dtype == torch.float64 and torch.allclose(
                s["latlon"], gps[2:], rtol=0, atol=1e-12
            )
            assert torch.allclose(s["aerial_latlon"], gps[:2], rtol=0, atol=1e-12)

    def test_whitespace_stripped(self, cvusa_root):
        assert CVUSA(cvusa_root, "train", **SIZES).ids[1] == "0000002"

    def test_polar_and_seg(self, cvusa_root):
        ds = CVUSA(
            cvusa_root,
            "val",
            ground_size=(4, 16),
            polar=True,
            ground_seg=True,
            seg_palette=[(70, 130, 180), (128, 64, 128)],
        )
        s = ds[0]
        assert s["aerial"].shape == (3, 4, 16)
        assert fake.decode_id(s["aerial"]) == int(s["id"])
        assert s["ground_seg"].dtype == torch.long and s["ground_seg"].shape == (4, 16)
        assert s["ground_seg"][:2].eq(0).all() and s["ground_seg"][2:].eq(1).all()
        assert ds.protocol["polar"] == {"preset": "4x16", "size": [4, 16], "center": "safa"}
        assert CVUSA(cvusa_root, "val", polar="safa")[0]["aerial"].shape == (3, 112, 616)
        assert CVUSA(cvusa_root, "val", ground_seg=True, **SIZES)[0]["ground_seg_rgb"].dtype == torch.uint8

    def test_transforms_get_whole_dict(self, cvusa_root):
        seen = []

        def t(sample):
            seen.append(sorted(sample))
            sample["ground"] = sample["ground"].flip(-1)
            return sample

        CVUSA(cvusa_root, "val", transforms=t, **SIZES)[0]
        assert {"ground", "aerial", "id"} <= set(seen[0])

    def test_split_file_override(self, cvusa_root, tmp_path):
        csv = tmp_path / "clean.csv"
        rows = (cvusa_root / "splits/train-19zl.csv").read_text().splitlines()
        csv.write_text("\n".join(rows[:3]) + "\n")
        ds = CVUSA(cvusa_root, "train", split_file=csv, cvusa_split="geodtr_clean", **SIZES)
        assert len(ds) == 3 and ds.protocol["cvusa_split"] == "geodtr_clean"
        assert CVUSA(cvusa_root, "train", split_file=csv, **SIZES).cvusa_split == "custom"
        assert CVUSA(cvusa_root, "train", **SIZES).cvusa_split == "orig"
        with pytest.raises(ValueError, match="cvusa_split"):
            CVUSA(cvusa_root, "train", cvusa_split="clean")

    def test_invalid_split(self, cvusa_root):
        with pytest.raises(ValueError, match=r"valid splits: \['train', 'val', 'test'\]"):
            CVUSA(cvusa_root, "validation")

    def test_not_downloaded(self, tmp_path):
        with pytest.raises(DatasetNotFoundError, match="Dataset not found") as err:
            CVUSA(tmp_path / "nowhere", "train")
        assert "nowhere" in str(err.value) and "bingmap/19" in str(err.value)
        with pytest.raises(DatasetNotFoundError, match=re.escape("train-19zl.csv")):
            CVUSA(tmp_path, "train")

    def test_missing_image_named(self, cvusa_root, tmp_path):
        root = tmp_path / "c"
        shutil.copytree(cvusa_root, root)
        (root / "streetview/panos/0000004.jpg").unlink()
        with pytest.raises(DatasetNotFoundError, match=re.escape("0000004.jpg")):
            CVUSA(root, "train", **SIZES)
        with pytest.warns(UserWarning, match="skipped 1"):
            ds = CVUSA(root, "train", on_missing="skip", **SIZES)
        assert len(ds) == 7 and ds.missing == 1 and "0000004" not in ds.ids

    def test_bad_image_named(self, cvusa_root, tmp_path):
        root = tmp_path / "c"
        shutil.copytree(cvusa_root, root)
        (root / "bingmap/19/0000002.jpg").write_bytes(b"not a jpeg")
        ds = CVUSA(root, "train", **SIZES)
        with pytest.raises(OSError, match=re.escape("0000002.jpg")):
            ds[1]

    def test_plot(self, cvusa_root):
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        ds = CVUSA(cvusa_root, "val", ground_seg=True, **SIZES)
        fig = ds.plot(ds[0], suptitle="fake")
        assert isinstance(fig, Figure)
        plt.close(fig)
        fig = ds.plot(ds[1], show_titles=False)
        assert isinstance(fig, Figure)
        plt.close(fig)


class TestDuplicates:
    def test_finds_planted(self, cvusa_root):
        pairs = find_exact_duplicates(cvusa_root, "train")
        got = {(p.view, p.id_a, p.id_b) for p in pairs}
        assert got == {(v, a, b) for v, ps in fake.DUPLICATES.items() for a, b in ps}
        assert find_exact_duplicates(cvusa_root, "val") == []

    def test_cli(self, cvusa_root, capsys, tmp_path):
        assert (
            main(
                [
                    "duplicates",
                    "cvusa",
                    "--root",
                    str(cvusa_root),
                    "--no-progress",
                    "--csv",
                    str(tmp_path / "d.csv"),
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "aerial\t0000003\t0000005" in out and "ground\t0000002\t0000007" in out
        assert "2 duplicate pair(s)" in out
        assert len((tmp_path / "d.csv").read_text().splitlines()) == 3

    def test_cli_missing_root(self, tmp_path, caplog):
        assert main(["duplicates", "cvusa", "--root", str(tmp_path), "--no-progress"]) == 2
        assert "Dataset not found" in caplog.text
