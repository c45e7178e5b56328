"""Faults a user can make in dataset files, and the one-line errors or warnings they get.

Each test damages a copy of a tiny fake dataset (``tests/data/<name>/data.py``, the real layouts):
undecodable images, CVACT index vectors (0- or 1-based, fractional), malformed or duplicated split
files, truncated ``prepare`` caches and synthetic-world caches, non-square or stretched images.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import pickle
import shutil
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geo_bench.datasets import (
    CVACT,
    CVUSA,
    VIGOR,
    CacheError,
    DatasetFormatError,
    DatasetNotFoundError,
    open_cache,
    prepare_cache,
    read_act_data,
)
from geo_bench.leaderboard import data as leaderboard_data
from geo_bench.leaderboard.data import WorldConfig, load_world


def _data_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_fake_{name}", Path(__file__).parent / "data" / name / "data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FAKE = {name: _data_module(name) for name in ("cvusa", "cvact", "vigor")}
SIZES = {"ground_size": (4, 16), "aerial_size": (8, 8)}
CVUSA_PANO = (8, 44)  # (H, W): the real 224 x 1232 aspect, 5.5


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The three fakes, written once; CVUSA's panoramas redrawn at the real aspect ratio."""
    out = {}
    for name, fake in FAKE.items():
        root = tmp_path_factory.mktemp(f"faults_{name}")
        out[name] = (root, fake.write(root))
    cvusa = out["cvusa"][0]
    for k in FAKE["cvusa"].IDS:
        img = Image.new("RGB", CVUSA_PANO[::-1], FAKE["cvusa"].colour(k, "ground"))
        img.save(cvusa / f"streetview/panos/{k:07d}.jpg", quality=95)
    return out


def _copy(pristine: dict, name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(pristine[name][0], root)
    return root


def _noisy_jpeg(path: Path, size: tuple[int, int] = (64, 64)) -> bytes:
    arr = (np.random.default_rng(0).random((*size, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=95)
    return path.read_bytes()


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------------
# 1. undecodable images


class TestUndecodableImage:
    @pytest.mark.parametrize("damage", ["garbage", "truncated"])
    def test_names_file_and_sample(self, pristine, tmp_path, damage):
        root = _copy(pristine, "cvusa", tmp_path)
        bad = root / "streetview/panos/0000002.jpg"
        if damage == "garbage":
            bad.write_bytes(b"this is not a jpeg" * 4)
        else:
            data = _noisy_jpeg(bad, CVUSA_PANO)
            bad.write_bytes(data[: len(data) // 2])
        ds = CVUSA(root, "train", **SIZES)
        ds[0]  # the others still load
        with pytest.raises(DatasetFormatError) as err:
            ds[1]
        msg = _one_line(err)
        assert f"cannot decode image {bad} (sample 0000002): " in msg
        assert msg.endswith("; re-download or remove it")
        assert err.value.path == str(bad)
        assert isinstance(err.value, OSError)  # read_rgb documents OSError
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no PIL traceback

    def test_vigor_gallery_tile_names_tile(self, pristine, tmp_path):
        root = _copy(pristine, "vigor", tmp_path)
        ds = VIGOR(root, "test", area="cross", ground_size=(4, 8), aerial_size=(8, 8))
        j = 2
        bad = root / ds.gallery_city[j] / "satellite" / f"{ds.gallery_ids[j]}.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        with pytest.raises(DatasetFormatError, match=f"sample {ds.gallery_ids[j]}"):
            ds.gallery[j]

    def test_from_a_dataloader_worker(self, pristine, tmp_path):
        root = _copy(pristine, "cvusa", tmp_path)
        (root / "bingmap/19/0000010.jpg").write_bytes(b"garbage")
        loader = DataLoader(CVUSA(root, "val", **SIZES), batch_size=4, num_workers=1)
        with pytest.raises(DatasetFormatError, match=r"0000010\.jpg"):
            next(iter(loader))


# --------------------------------------------------------------------------------------------------
# 2. CVACT index vectors


def _write_act(root: Path, info: dict, train: list, val: list, test: list) -> Path:
    import scipy.io

    col = lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 1)  # noqa: E731 (MATLAB doubles)
    path = root / "ACT_data.mat"
    scipy.io.savemat(
        path,
        {
            "panoIds": np.asarray(info["panoIds"]),
            "utm": info["utm"],
            "trainSet": {"field0": col(np.zeros(len(train))), "trainInd": col(train)},
            "valSet": {"field0": col(np.zeros(len(val))), "valInd": col(val)},
            "valSetAll": {"field0": col(np.zeros(len(test))), "valInd": col(test)},
        },
    )
    return path


class TestCVACTIndices:
    def test_official_one_based(self, pristine):
        root, info = pristine["cvact"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # decisive: the vectors hold N
            m = read_act_data(root / "ACT_data.mat")
        assert m["index_base"] == 1 and m["train"].tolist() == info["train"]

    def test_zero_based_vector_without_zero(self, pristine, tmp_path):
        # valInd (0-based) lacks 0; trainInd holds 0, so the file is 0-based: no shift in val
        root, info = _copy(pristine, "cvact", tmp_path), pristine["cvact"][1]
        path = _write_act(root, info, info["train"], info["val"], info["test"])
        assert 0 in info["train"] and 0 not in info["val"]
        m = read_act_data(path)
        assert m["index_base"] == 0 and m["val"].tolist() == info["val"] == [1, 4, 6]
        ds = CVACT(root, "val", **SIZES)
        assert ds.ids == [info["panoIds"][k] for k in info["val"]]
        for j, k in enumerate(info["val"]):
            assert FAKE["cvact"].decode_id(ds[j]["aerial"]) == k

    def test_ambiguous_assumes_one_based_and_says_so(self, pristine, tmp_path):
        root, info = _copy(pristine, "cvact", tmp_path), pristine["cvact"][1]
        path = _write_act(root, info, [2, 3, 4], [5, 6, 7], [9, 8, 2])  # neither 0 nor N = 10
        with pytest.warns(UserWarning, match=r"ACT_data\.mat.*assuming 1-based"):
            m = read_act_data(path)
        assert m["index_base"] == 1 and m["train"].tolist() == [1, 2, 3]

    def test_unreadable_mat(self, pristine, tmp_path):
        root = _copy(pristine, "cvact", tmp_path)
        path = root / "ACT_data.mat"
        path.write_bytes(path.read_bytes()[:300])
        with pytest.raises(
            DatasetFormatError, match=r"cannot read .*ACT_data\.mat with scipy\.io\.loadmat"
        ) as err:
            CVACT(root, "train")
        assert err.value.path == str(path)

    @pytest.mark.parametrize(
        ("train", "match"),
        [
            ([1, 3.5, 4], r"trainSet\.trainInd.*not an integer.*3\.5"),
            ([1, float("nan"), 4], r"trainSet\.trainInd.*not an integer.*nan"),
            ([0, 3, 10], r"both 0 and 10"),  # 0 says 0-based, N says 1-based
            ([1, 11], r"trainSet\.trainInd.*11.*outside 1\.\.10"),
            ([-1, 2], r"trainSet\.trainInd.*-1"),
        ],
        ids=["fraction", "nan", "both-bases", "too-large", "negative"],
    )
    def test_refused(self, pristine, tmp_path, train, match):
        root, info = _copy(pristine, "cvact", tmp_path), pristine["cvact"][1]
        path = _write_act(root, info, train, [2, 5, 7], [9, 8, 2])
        with pytest.raises(DatasetFormatError, match=match) as err:
            read_act_data(path)
        assert str(path) in _one_line(err) and err.value.path == str(path)


# --------------------------------------------------------------------------------------------------
# 3. malformed and duplicated split files


class TestSplitFiles:
    def test_vigor_non_numeric_offset(self, pristine, tmp_path):
        root = _copy(pristine, "vigor", tmp_path)
        path = root / "splits/NewYork/same_area_balanced_train.txt"
        lines = path.read_text().splitlines()
        cols = lines[1].split()
        cols[5] = "1O.5"  # a letter O
        lines[1] = " ".join(cols)
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(DatasetFormatError) as err:
            VIGOR(root, "train")
        msg = _one_line(err)
        assert msg.startswith(f"{path}:2: ") and "'1O.5'" in msg and "column 6" in msg
        assert (err.value.path, err.value.line) == (str(path), 2)

    def test_vigor_bad_tile_name_names_line(self, pristine, tmp_path):
        root = _copy(pristine, "vigor", tmp_path)
        path = root / "splits/Seattle/satellite_list.txt"
        path.write_text(path.read_text() + "satellite_47.6_oops.png\n")
        with pytest.raises(DatasetFormatError, match=rf"{path}:5: .*satellite_47\.6_oops\.png"):
            VIGOR(root, "train")

    def test_cvusa_duplicate_rows_warned_once(self, pristine, tmp_path):
        root = _copy(pristine, "cvusa", tmp_path)
        path = root / "splits/train-19zl.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join([*lines, lines[2], lines[0], lines[2]]) + "\n")
        with pytest.warns(UserWarning) as caught:
            ds = CVUSA(root, "train", **SIZES)
        dup = [str(w.message) for w in caught if "duplicate" in str(w.message)]
        assert len(dup) == 1
        assert str(path) in dup[0] and "3 duplicate rows" in dup[0]
        assert "line 9 repeats line 3" in dup[0]  # the first duplicate
        assert len(ds) == 8 and len(set(ds.ids)) == 8  # each pair once
        entry = prepare_cache(ds, tmp_path / "cache", progress=False)  # ids stay unique for the cache
        with pytest.warns(UserWarning, match="3 duplicate rows"):
            assert len(CVUSA(root, "train", cache=entry, **SIZES)) == 8

    def test_cvusa_conflicting_rows_refused(self, pristine, tmp_path):
        root = _copy(pristine, "cvusa", tmp_path)
        path = root / "splits/val-19zl.csv"
        path.write_text(
            path.read_text()
            + "bingmap/19/0000009.jpg,streetview/panos/0000010.jpg,streetview/annotations/0000010.png\n"
        )
        with pytest.raises(DatasetFormatError, match=rf"{path}:5: .*0000009.*line 1"):
            CVUSA(root, "val", **SIZES)

    def test_vigor_duplicates_warned(self, pristine, tmp_path):
        root = _copy(pristine, "vigor", tmp_path)
        labels = root / "splits/Chicago/same_area_balanced_train.txt"
        labels.write_text(labels.read_text() + labels.read_text().splitlines()[0] + "\n")
        tiles = root / "splits/Chicago/satellite_list.txt"
        first_tile = tiles.read_text().split()[0]
        tiles.write_text(tiles.read_text() + first_tile + "\n")
        reference = VIGOR(pristine["vigor"][0], "train", ground_size=(4, 8), aerial_size=(8, 8))
        with pytest.warns(UserWarning) as caught:
            ds = VIGOR(root, "train", ground_size=(4, 8), aerial_size=(8, 8))
        dup = [str(w.message) for w in caught if "duplicate" in str(w.message)]
        assert len(dup) == 2
        assert any(str(labels) in m and "1 duplicate row" in m and "line 3 repeats line 1" in m for m in dup)
        assert any(str(tiles) in m and first_tile in m for m in dup)
        assert ds.ids == reference.ids and ds.gallery_ids == reference.gallery_ids
        assert torch.equal(ds.positives, reference.positives)

    def test_vigor_conflicting_labels_refused(self, pristine, tmp_path):
        root = _copy(pristine, "vigor", tmp_path)
        path = root / "splits/Seattle/same_area_balanced_train.txt"
        cols = path.read_text().splitlines()[0].split()
        cols[1], cols[4] = cols[4], cols[1]  # the same panorama with another positive
        path.write_text(path.read_text() + " ".join(cols) + "\n")
        with pytest.raises(DatasetFormatError, match=rf"{path}:3: .*line 1"):
            VIGOR(root, "train")


# --------------------------------------------------------------------------------------------------
# 4. damaged prepare caches


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8).tobytes())


class TestDamagedCache:
    @pytest.mark.parametrize("how", ["truncated", "garbage"])
    def test_named_and_rebuilt_by_prepare(self, pristine, tmp_path, how):
        root = pristine["cvusa"][0]
        direct = CVUSA(root, "val", **SIZES)
        entry = prepare_cache(direct, tmp_path, chunk_size=2, progress=False)
        opened = open_cache(entry, direct, verify="meta")
        worker_copy = pickle.loads(pickle.dumps(opened))  # re-opens its arrays lazily
        bad = entry / "ground.npy"
        _damage(bad, how)

        with pytest.raises(CacheError) as err:
            CVUSA(root, "val", cache=tmp_path, **SIZES)
        msg = _one_line(err)
        assert str(bad) in msg and "run `geo-bench prepare` again to rebuild it" in msg
        with pytest.raises(CacheError, match="run `geo-bench prepare` again to rebuild it") as err:
            worker_copy.get("ground", 0)
        assert str(bad) in _one_line(err)

        # the advice holds: prepare rebuilds the damaged view (the aerial one is kept)
        aerial_mtime = (entry / "aerial.npy").stat().st_mtime_ns
        with pytest.warns(UserWarning, match=rf"{bad}.*rebuilding"):
            assert prepare_cache(CVUSA(root, "val", **SIZES), tmp_path, chunk_size=2, progress=False) == entry
        assert (entry / "aerial.npy").stat().st_mtime_ns == aerial_mtime
        cached = CVUSA(root, "val", cache=tmp_path, cache_verify="full", **SIZES)
        for i in range(len(direct)):
            assert torch.equal(cached[i]["ground"], direct[i]["ground"])
            assert torch.equal(cached[i]["aerial"], direct[i]["aerial"])

    def test_truncated_partial_file_restarted(self, pristine, tmp_path, monkeypatch):
        root = pristine["cvusa"][0]
        ds = CVUSA(root, "train", **SIZES)
        real = type(ds).load_view
        calls = {"n": 0}

        def flaky(self, view, i):
            calls["n"] += 1
            if calls["n"] == 7:
                raise KeyboardInterrupt
            return real(self, view, i)

        monkeypatch.setattr(type(ds), "load_view", flaky)
        with pytest.raises(KeyboardInterrupt):
            prepare_cache(ds, tmp_path, chunk_size=2, progress=False)
        monkeypatch.undo()
        entry = tmp_path / ds.cache_key()
        _damage(entry / "ground.npy", "truncated")
        with pytest.warns(UserWarning, match=r"ground\.npy.*starting that view again"):
            prepare_cache(ds, tmp_path, chunk_size=2, progress=False)
        cached = CVUSA(root, "train", cache=tmp_path, cache_verify="full", **SIZES)
        for i in range(len(ds)):
            assert torch.equal(cached[i]["ground"], ds[i]["ground"])


# --------------------------------------------------------------------------------------------------
# 5. damaged synthetic-world caches

WORLD = WorldConfig(n_train=8, n_test=2, ground_size=(8, 32), aerial_size=16, district_m=500.0)


@pytest.fixture(scope="module")
def world_arrays() -> dict[str, np.ndarray]:
    return leaderboard_data._render("test", WORLD.n_test, WORLD, False)


def _damage_world(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"PK\x03\x04" + b"\xff" * 200)  # looks like a zip at first
    elif how == "member":  # one array inside the zip is cut short
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        with zipfile.ZipFile(path, "w") as z:
            for n, blob in members.items():
                z.writestr(n, blob[:-7] if n == "ground.npy" else blob)
    elif how == "shape":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["ground"] = arrays["ground"][:, :, :4]
        np.savez(path, **arrays)
    else:  # "json": a text file where the arrays should be
        path.write_text(json.dumps({"ground": [1, 2, 3]}))


class TestWorldCache:
    @pytest.mark.parametrize("how", ["truncated", "garbage", "member", "shape", "json"])
    def test_corrupt_cache_rendered_again(self, tmp_path, monkeypatch, caplog, world_arrays, how):
        calls = []

        def render(split, num, cfg, progress):
            calls.append(split)
            return {k: v.copy() for k, v in world_arrays.items()}

        monkeypatch.setattr(leaderboard_data, "_render", render)
        _, first = load_world(WORLD, tmp_path, train=False)
        path = tmp_path / f"world-{WORLD.key()}" / "test.npz"
        assert calls == ["test"] and path.is_file()
        _damage_world(path, how)

        with caplog.at_level(logging.WARNING, logger="geo_bench.leaderboard.data"):
            _, again = load_world(WORLD, tmp_path, train=False)
        assert calls == ["test", "test"]
        assert any(
            str(path) in r.getMessage() and "rendering again" in r.getMessage() for r in caplog.records
        )
        assert torch.equal(again.ground, first.ground) and again.ids == first.ids
        _, third = load_world(WORLD, tmp_path, train=False)  # the rewritten cache is read
        assert calls == ["test", "test"] and torch.equal(third.aerial, first.aerial)

    def test_concurrent_writers_share_a_cache(self, tmp_path, monkeypatch, world_arrays):
        """Two runs rendering the same split into one cache at once (two leaderboards, the tuning
        script): the second writer used to find its fixed temporary name renamed away by the first
        (FileNotFoundError). Both now finish and leave one readable cache, no temporary files."""
        both_written = threading.Barrier(2, timeout=30)
        savez = np.savez

        def savez_then_wait(*args, **kwargs):
            savez(*args, **kwargs)
            both_written.wait()  # neither renames its file before both have written theirs

        def render(split, num, cfg, progress):
            return {k: v.copy() for k, v in world_arrays.items()}

        monkeypatch.setattr(leaderboard_data, "_render", render)
        monkeypatch.setattr(np, "savez", savez_then_wait)
        results: list[Any] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(load_world(WORLD, tmp_path, train=False)[1])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(results) == 2 and torch.equal(results[0].ground, results[1].ground)
        folder = tmp_path / f"world-{WORLD.key()}"
        assert sorted(p.name for p in folder.iterdir()) == ["test.npz", "world.json"]
        assert torch.equal(load_world(WORLD, tmp_path, train=False)[1].aerial, results[0].aerial)


# --------------------------------------------------------------------------------------------------
# 6. non-square aerial under polar, 7. stretched images, 8. the missing-file hint


class TestImageSizes:
    def test_non_square_aerial_under_polar(self, pristine, tmp_path):
        root = _copy(pristine, "cvusa", tmp_path)
        bad = root / "bingmap/19/0000010.jpg"
        Image.new("RGB", (16, 12), (0, 0, 0)).save(bad)
        ds = CVUSA(root, "val", ground_size=(4, 16), polar=True)
        ds[0]
        with pytest.raises(DatasetFormatError) as err:
            ds[1]
        msg = _one_line(err)
        assert str(bad) in msg and "(sample 0000010)" in msg
        assert "16x12" in msg and "square" in msg and "750x750" in msg

    def test_wrong_aspect_warned_once(self, pristine, tmp_path):
        root = _copy(pristine, "cvusa", tmp_path)
        for k in (2, 5):  # aspect 2 instead of 5.5
            Image.new("RGB", (32, 16), FAKE["cvusa"].colour(k, "ground")).save(
                root / f"streetview/panos/{k:07d}.jpg"
            )
        Image.new("RGB", (16, 8), (0, 0, 0)).save(root / "bingmap/19/0000007.jpg")  # not square
        ds = CVUSA(root, "train", **SIZES)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(len(ds)):
                ds[i]
        msgs = [str(w.message) for w in caught]
        assert len(msgs) == 2, msgs
        ground = next(m for m in msgs if "0000002.jpg" in m)
        assert "32x16" in ground and "1232x224" in ground and "stretched" in ground
        assert any("0000007.jpg" in m and "750x750" in m for m in msgs)
        assert ds.aspect_mismatches == {"ground": 2, "aerial": 1}

    def test_prepare_reports_how_many(self, pristine, tmp_path, caplog):
        root = _copy(pristine, "cvusa", tmp_path)
        for k in (9, 11, 12):
            Image.new("RGB", (32, 16), (0, 0, 0)).save(root / f"streetview/panos/{k:07d}.jpg")
        ds = CVUSA(root, "val", **SIZES)
        with pytest.warns(UserWarning, match="0000009.jpg"), caplog.at_level(logging.WARNING):
            prepare_cache(ds, tmp_path / "cache", progress=False)
        assert any("3 of the 4 ground images" in r.getMessage() for r in caplog.records)

    @pytest.mark.parametrize("size", [(40, 220), (40, 219), (224, 1232)], ids=["exact", "rounded", "real"])
    def test_right_aspect_not_warned(self, pristine, tmp_path, size):
        root = _copy(pristine, "cvusa", tmp_path)
        Image.new("RGB", size[::-1], (0, 0, 0)).save(root / "streetview/panos/0000009.jpg")
        ds = CVUSA(root, "val", **SIZES)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds[0]
        assert ds.aspect_mismatches == {}

    def test_missing_file_hint_is_accurate(self, pristine, tmp_path):
        root = _copy(pristine, "cvusa", tmp_path)
        (root / "streetview/panos/0000004.jpg").unlink()
        with pytest.raises(DatasetNotFoundError) as err:
            CVUSA(root, "train", **SIZES)
        msg = str(err.value)
        assert "on_missing='skip'" in msg and "geo-bench prepare --on-missing skip" in msg
