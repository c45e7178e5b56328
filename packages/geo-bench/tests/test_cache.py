"""The prepare cache: round trip equals direct loading, resume after interruption, manifest checks, CLI."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.cli import main
from geo_bench.datasets import CVACT, CVUSA, VIGOR, CacheError, open_cache, prepare_cache


def _data_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_fake_{name}", Path(__file__).parent / "data" / name / "data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def roots(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name in ("cvusa", "cvact", "vigor"):
        out[name] = tmp_path_factory.mktemp(f"cache_{name}")
        _data_module(name).write(out[name])
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


CASES = [
    ("cvusa", CVUSA, "train", {"ground_size": (4, 16), "aerial_size": (8, 8)}),
    ("cvusa", CVUSA, "val", {"ground_size": (4, 16), "polar": (4, 16)}),
    ("cvact", CVACT, "train", {"ground_size": (4, 16), "aerial_size": (8, 8)}),
    ("vigor", VIGOR, "test", {"ground_size": (4, 8), "aerial_size": (8, 8), "area": "cross"}),
]


class TestCache:
    @pytest.mark.parametrize(("name", "cls", "split", "kw"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
    def test_round_trip_equals_direct(self, roots, tmp_path, name, cls, split, kw):
        direct = cls(roots[name], split, **kw)
        entry = prepare_cache(direct, tmp_path, chunk_size=3, progress=False)
        assert entry.parent == tmp_path and (entry / "manifest.json").is_file()
        assert not (entry / "progress.json").exists()
        cached = cls(roots[name], split, cache=tmp_path, cache_verify="full", **kw)
        assert len(cached) == len(direct) and cached.ids == direct.ids
        for i in range(len(direct)):
            _assert_same(cached[i], direct[i])
        if name == "vigor":
            assert len(cached.gallery) == len(direct.gallery)
            for j in range(len(direct.gallery)):
                _assert_same(cached.gallery[j], direct.gallery[j])
        arr = np.load(entry / "ground.npy", mmap_mode="r")
        assert isinstance(arr, np.memmap) and arr.dtype == np.uint8 and arr.shape[0] == len(direct)
        m = json.loads((entry / "manifest.json").read_text())
        assert m["dataset"] == cls.name and m["count"] == len(direct)
        assert m["views"]["ground"]["ids"] == direct.ids
        assert {"geo-bench", "geo-transforms"} <= set(m["versions"])
        assert cached.protocol["cache"] == str(entry)

    def test_cvusa_test_alias_shares_entry(self, roots, tmp_path):
        kw = {"ground_size": (4, 16), "aerial_size": (8, 8)}
        prepare_cache(CVUSA(roots["cvusa"], "test", **kw), tmp_path, progress=False)
        assert len(CVUSA(roots["cvusa"], "val", cache=tmp_path, **kw)) == 4

    def test_resume_after_interruption(self, roots, tmp_path, monkeypatch):
        kw = {"ground_size": (4, 16), "aerial_size": (8, 8)}
        ds = CVUSA(roots["cvusa"], "train", **kw)
        calls = {"n": 0}
        real = type(ds).load_view

        def flaky(self, view, i):
            calls["n"] += 1
            if calls["n"] == 7:
                raise KeyboardInterrupt
            return real(self, view, i)

        monkeypatch.setattr(type(ds), "load_view", flaky)
        with pytest.raises(KeyboardInterrupt):
            prepare_cache(ds, tmp_path, chunk_size=2, progress=False)
        entry = tmp_path / ds.cache_key()
        progress = json.loads((entry / "progress.json").read_text())
        # shape probe + chunks [0,1], [2,3] of ground done, interrupted inside chunk [4,5]
        assert sorted(progress["views"]["ground"]["chunks"]) == ["0", "1"]
        with pytest.raises(CacheError, match="incomplete"):
            CVUSA(roots["cvusa"], "train", cache=tmp_path, **kw)

        calls["n"] = -1000
        prepare_cache(ds, tmp_path, chunk_size=2, progress=False)
        # resumed: ground items 4..7 (4) + aerial probe (1) + aerial items 0..7 (8)
        assert calls["n"] == -1000 + 4 + 1 + 8
        monkeypatch.undo()
        cached = CVUSA(roots["cvusa"], "train", cache=tmp_path, cache_verify="full", **kw)
        for i in range(len(ds)):
            _assert_same(cached[i], ds[i])

    def test_resume_refuses_other_settings(self, roots, tmp_path):
        ds = CVUSA(roots["cvusa"], "val", ground_size=(4, 16), aerial_size=(8, 8))
        entry = tmp_path / ds.cache_key()
        entry.mkdir()
        state = {
            "format": 1,
            "config": {**ds.cache_config(), "ground_size": [2, 2]},
            "chunk_size": 2,
            "views": {},
        }
        (entry / "progress.json").write_text(json.dumps(state))
        with pytest.raises(CacheError, match="ground_size"):
            prepare_cache(ds, tmp_path, progress=False)

    def test_manifest_mismatch(self, roots, tmp_path):
        kw = {"ground_size": (4, 16), "aerial_size": (8, 8)}
        entry = prepare_cache(CVUSA(roots["cvusa"], "val", **kw), tmp_path, chunk_size=2, progress=False)
        # another configuration pointed at this entry directly
        with pytest.raises(CacheError, match=r"ground_size: cache has \[4, 16\], dataset wants \[8, 32\]"):
            CVUSA(roots["cvusa"], "val", cache=entry, ground_size=(8, 32), aerial_size=(8, 8))
        # another configuration through the cache root: no entry, says how to make one
        with pytest.raises(FileNotFoundError, match="geo-bench prepare cvusa"):
            CVUSA(roots["cvusa"], "val", cache=tmp_path, ground_size=(8, 32), aerial_size=(8, 8))
        # edited ids
        m = json.loads((entry / "manifest.json").read_text())
        m["views"]["ground"]["ids"][0] = "9999999"
        (entry / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(CacheError, match="9999999"):
            CVUSA(roots["cvusa"], "val", cache=entry, **kw)

    def test_corruption_detected(self, roots, tmp_path):
        kw = {"ground_size": (4, 16), "aerial_size": (8, 8)}
        entry = prepare_cache(CVUSA(roots["cvusa"], "val", **kw), tmp_path, chunk_size=2, progress=False)
        arr = np.load(entry / "aerial.npy", mmap_mode="r+")
        arr[3, 0, 0, 0] ^= 0xFF
        arr.flush()
        del arr
        with pytest.raises(CacheError, match=r"checksum mismatch.*chunk 1"):
            CVUSA(roots["cvusa"], "val", cache=tmp_path, cache_verify="full", **kw)
        lazy = CVUSA(roots["cvusa"], "val", cache=tmp_path, **kw)
        lazy[0]  # chunk 0 is intact
        with pytest.raises(CacheError, match="checksum mismatch"):
            lazy[3]
        meta = CVUSA(roots["cvusa"], "val", cache=tmp_path, cache_verify="meta", **kw)
        assert meta[3]["aerial"].shape == (3, 8, 8)

    def test_skip_missing_with_cache(self, roots, tmp_path):
        import shutil

        root = tmp_path / "act"
        shutil.copytree(roots["cvact"], root)
        info = _data_module("cvact").write(tmp_path / "ref")  # same seed: same ids
        (root / "ANU_data_small/streetview" / f"{info['panoIds'][2]}_grdView.jpg").unlink()
        kw = {"ground_size": (4, 16), "aerial_size": (8, 8), "on_missing": "skip"}
        with pytest.warns(UserWarning):
            direct = CVACT(root, "train", **kw)
        prepare_cache(direct, tmp_path / "c", progress=False)
        cached = CVACT(root, "train", cache=tmp_path / "c", **kw)
        assert cached.ids == direct.ids and cached.missing == direct.missing == 1
        for i in range(len(direct)):
            _assert_same(cached[i], direct[i])

    def test_cache_needs_no_images(self, roots, tmp_path):
        import shutil

        kw = {"ground_size": (4, 16), "aerial_size": (8, 8)}
        root = tmp_path / "act"
        shutil.copytree(roots["cvact"], root)
        direct = CVACT(root, "val", **kw)
        prepare_cache(direct, tmp_path / "c", progress=False)
        expected = [direct[i] for i in range(len(direct))]
        shutil.rmtree(root / "ANU_data_small")  # only ACT_data.mat (ids, utm) is left
        cached = CVACT(root, "val", cache=tmp_path / "c", **kw)
        for i, s in enumerate(expected):
            _assert_same(cached[i], s)

    def test_entry_pickles_for_workers(self, roots, tmp_path):
        kw = {"ground_size": (4, 16), "aerial_size": (8, 8)}
        ds = CVUSA(roots["cvusa"], "val", **kw)
        prepare_cache(ds, tmp_path, progress=False)
        cached = CVUSA(roots["cvusa"], "val", cache=tmp_path, **kw)
        cached[0]
        clone = pickle.loads(pickle.dumps(cached))
        _assert_same(clone[1], ds[1])
        assert open_cache(tmp_path, ds).ids("ground") == ds.ids


class TestPrepareCLI:
    def test_prepare_then_load(self, roots, tmp_path, capsys):
        argv = [
            "prepare",
            "cvusa",
            "--root",
            str(roots["cvusa"]),
            "--out",
            str(tmp_path),
            "--split",
            "val",
            "--ground-size",
            "4",
            "16",
            "--polar",
            "4x16",
            "--no-progress",
            "--chunk-size",
            "3",
        ]
        assert main(argv) == 0
        assert "CVUSA val: N=4" in capsys.readouterr().out
        assert main(argv) == 0  # complete entry: checked, not rebuilt
        ds = CVUSA(roots["cvusa"], "val", ground_size=(4, 16), polar="4x16", cache=tmp_path)
        direct = CVUSA(roots["cvusa"], "val", ground_size=(4, 16), polar="4x16")
        _assert_same(ds[2], direct[2])

    def test_prepare_vigor_cross(self, roots, tmp_path, capsys):
        argv = [
            "prepare",
            "vigor",
            "--root",
            str(roots["vigor"]),
            "--out",
            str(tmp_path),
            "--area",
            "cross",
            "--ground-size",
            "4",
            "8",
            "--aerial-size",
            "8",
            "8",
            "--no-progress",
        ]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "VIGOR train: N=6 queries, 8 aerials" in out and "VIGOR test" in out

    def test_prepare_errors(self, tmp_path, caplog):
        # a user error: one logged message and exit status 2, like every other verb
        assert (
            main(["prepare", "cvact", "--root", str(tmp_path), "--out", str(tmp_path / "c"), "--no-progress"])
            == 2
        )
        assert "Dataset not found" in caplog.text
        with pytest.raises(SystemExit):
            main(["prepare", "kitti", "--root", "x", "--out", "y"])
