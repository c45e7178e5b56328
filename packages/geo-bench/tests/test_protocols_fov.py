"""The limited-FoV protocol: fixed query files (made once, reused, refused when they do not fit),
the view geometry, and the records the evaluation and the leaderboard make from them."""

import json
from dataclasses import replace

import pytest
import torch

from geo_bench.baselines import ColourProfile
from geo_bench.cli import main
from geo_bench.leaderboard.config import TINY_WORLD
from geo_bench.leaderboard.data import RolledGround, TensorPairs, load_world_split
from geo_bench.leaderboard.evaluation import (
    ORIENTATION_SEED,
    evaluate_baseline,
    expected_protocols,
    matches_protocol,
)
from geo_bench.metrics import make_fov_queries
from geo_bench.protocols.fov import DEFAULT_FOVS, FovQueryFile, LimitedFovGround, fov_query_file
from geo_bench.store import ResultStore

pytestmark = pytest.mark.one_thread

IDS = [f"q{i}" for i in range(7)]


class TestQueryFiles:
    def test_made_once_then_reused(self, tmp_path):
        q, path = fov_query_file(tmp_path, "synthetic", "test", IDS, 90.0, width=64)
        assert path.name == "fov-synthetic-test-90deg-s2019.json" and path.is_file()
        assert q.shifts == make_fov_queries(7, 90.0, 360.0, seed=2019, width=64).shifts
        assert q.crop_width == 16
        before = path.read_bytes()
        again, _ = fov_query_file(tmp_path, "synthetic", "test", IDS, 90.0, width=64)
        assert again == q and again.sha256 == q.sha256 and path.read_bytes() == before
        assert FovQueryFile.from_dict(json.loads(before)).sha256 == q.sha256

    def test_headings_do_not_depend_on_the_fov(self, tmp_path):
        shifts = {
            fov: fov_query_file(tmp_path, "d", "s", IDS, fov, width=64)[0].shifts for fov in DEFAULT_FOVS
        }
        assert len(set(shifts.values())) == 1
        # FoV 360 with DSM's seed is the leaderboard's "orientation unknown" query set
        assert shifts[360.0] == make_fov_queries(7, 360.0, 360.0, seed=ORIENTATION_SEED, width=64).shifts

    def test_another_split_or_width_is_refused_not_overwritten(self, tmp_path):
        _, path = fov_query_file(tmp_path, "d", "s", IDS, 90.0, width=64)
        before = path.read_bytes()
        with pytest.raises(ValueError, match="ids: the file lists 7 queries"):
            fov_query_file(tmp_path, "d", "s", IDS[:-1], 90.0, width=64)
        with pytest.raises(ValueError, match="width: file has 64, expected 128"):
            fov_query_file(tmp_path, "d", "s", IDS, 90.0, width=128)
        assert path.read_bytes() == before
        path.write_text("{not json")
        with pytest.raises(ValueError, match="not valid JSON"):
            fov_query_file(tmp_path, "d", "s", IDS, 90.0, width=64)

    def test_protocol_fields(self, tmp_path):
        q, path = fov_query_file(tmp_path, "d", "s", IDS, 70.0, width=64)
        p = q.protocol(path)
        assert p["orientation_known"] is False and p["fov"] == 70.0 and p["fov_protocol"] == "fov-1"
        assert p["query_file_sha256"] == q.sha256[:16] and p["query_file"] == path.name


class TestView:
    def _pairs(self):
        g = torch.arange(7 * 3 * 2 * 64, dtype=torch.int64).remainder(251).to(torch.uint8).view(7, 3, 2, 64)
        a = torch.zeros(7, 3, 8, 8, dtype=torch.uint8)
        return TensorPairs(g, a, IDS, None, "test")

    def test_window_rolled_into_the_first_columns_rest_filled(self, tmp_path):
        pairs = self._pairs()
        q, _ = fov_query_file(tmp_path, "d", "test", IDS, 90.0, width=64)
        view = LimitedFovGround(pairs, q, fill=(0.2, 0.4, 0.6))
        for i in range(7):
            out = view[i]["ground"]
            assert out.dtype == torch.uint8 and out.shape == (3, 2, 64)
            want = torch.roll(pairs[i]["ground"], q.shifts[i], dims=-1)[..., :16]
            assert torch.equal(out[..., :16], want)
            assert out[..., 16:].unique(dim=-1).flatten().tolist() == [51, 51, 102, 102, 153, 153]

    def test_fov_360_is_the_rolled_panorama(self, tmp_path):
        pairs = self._pairs()
        q, _ = fov_query_file(tmp_path, "d", "test", IDS, 360.0, width=64)
        rolled = RolledGround(pairs, q.shifts)
        view = LimitedFovGround(pairs, q)
        assert all(torch.equal(view[i]["ground"], rolled[i]["ground"]) for i in range(7))

    def test_ids_must_match(self, tmp_path):
        q, _ = fov_query_file(tmp_path, "d", "test", [f"x{i}" for i in range(7)], 90.0, width=64)
        with pytest.raises(ValueError, match="query file expects 'x0'"):
            LimitedFovGround(self._pairs(), q)[0]


def test_matches_protocol_keeps_fov_records_apart():
    base = {"orientation_known": False}
    fov = {
        "orientation_known": False,
        "fov": 90.0,
        "fov_protocol": "fov-1",
        "query_file_sha256": "ab",
        "area": "same",
    }
    assert not matches_protocol(fov, base) and matches_protocol(
        fov, expected_protocols("synthetic", "test", ["fov"])[4]
    )
    with pytest.raises(ValueError, match="--protocols: unknown protocol"):
        expected_protocols("synthetic", "test", ["fov", "weather"])


@pytest.fixture(scope="module")
def tiny_test(tmp_path_factory):
    # 100 test cameras of the tiny world: on 20 the colour baseline is at chance and FoV comparisons are noise
    return load_world_split(replace(TINY_WORLD, n_test=100), "test", tmp_path_factory.mktemp("world"))


def test_baseline_fov_records(tiny_test, tmp_path):
    res = evaluate_baseline(ColourProfile(), "synthetic", tiny_test, protocols=["fov"], queries_dir=tmp_path)
    assert [r.protocol.get("fov") for r in res] == [360.0, 360.0, 360.0, 180.0, 90.0, 70.0]
    unknown, fov360 = res[1], res[2]
    assert fov360.protocol["fov_protocol"] == "fov-1" and "query_file_sha256" in fov360.protocol
    # the same headings and the same pixels: FoV 360 reproduces the orientation-unknown protocol
    assert fov360.metrics["R@1"] == unknown.metrics["R@1"] and fov360.metrics["R@5"] == unknown.metrics["R@5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"fov-synthetic-test-{f}deg-s2019.json" for f in ("180", "360", "70", "90")
    ]
    assert res[-1].metrics["R@1"] <= res[2].metrics["R@1"]  # 70 degrees see less than 360


def test_leaderboard_with_protocols_end_to_end(tmp_path, capsys):
    """``geo-bench leaderboard --protocols fov,corruption``: every recipe and the baseline get the
    FoV and corruption records, the tables and the heat map are written, the main table keeps only
    the base protocols, and a second run finds everything in the store."""
    out = tmp_path / "lb"
    argv = [
        "leaderboard",
        "--tiny",
        "--recipes",
        "safa",
        "--protocols",
        "fov,corruption",
        "--jobs",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    store = ResultStore(out / "results.jsonl")
    for recipe in ("safa", "colour-profile (no learning)"):
        recs = store.records(recipe=recipe)
        assert len(recs) == 2 + len(DEFAULT_FOVS) + 16 + 2, recipe  # + orientation known / unknown cross-area
        corr = [r for r in recs if r.protocol.get("corruption")]
        assert all(
            "R@1_s5" in r.metrics and "RCE" in r.metrics and r.protocol["corruption_set"] for r in corr
        )
    fov_md = (out / "leaderboard_fov.md").read_text()
    assert "R@1 @ 70" in fov_md and "safa" in fov_md
    assert "mRCE" in (out / "leaderboard_corruption.md").read_text()
    assert (out / "leaderboard_corruption.png").stat().st_size > 0
    main_md = (out / "leaderboard.md").read_text()
    assert "gaussian_noise" not in main_md and "fov-1" not in main_md
    assert sorted(p.name for p in (out / "queries").glob("fov-*")) == [
        f"fov-synthetic-test-{f}deg-s2019.json" for f in ("180", "360", "70", "90")
    ]
    # the corrupted queries were computed once (16 x 5 files) and read back by the second model
    assert len(list((out / "queries" / "corrupted").glob("synthetic-test-*.npy"))) == 80
    n = len(store.records())
    assert main(argv) == 0
    assert len(store.records()) == n  # everything was found in the store
    assert "already in the store" in capsys.readouterr().out


def test_corrupted_queries_cache_equals_on_the_fly(tmp_path):
    from geo_bench.leaderboard.evaluation import corrupted_queries

    g = torch.arange(4 * 3 * 16 * 48).remainder(253).to(torch.uint8).view(4, 3, 16, 48)
    pairs = TensorPairs(g, torch.zeros(4, 3, 8, 8, dtype=torch.uint8), IDS[:4], None, "test")
    live = corrupted_queries(pairs, "gaussian_noise", 3, None)
    cached = corrupted_queries(pairs, "gaussian_noise", 3, tmp_path, name="d-test")
    (path,) = tmp_path.glob("d-test-gaussian_noise-s3-*.npy")
    again = corrupted_queries(pairs, "gaussian_noise", 3, tmp_path, name="d-test")
    for i in range(4):
        assert torch.equal(live[i]["ground"], cached[i]["ground"]) and torch.equal(
            cached[i]["ground"], again[i]["ground"]
        )
        assert not torch.equal(live[i]["ground"], pairs[i]["ground"])
    path.write_bytes(b"damaged")  # a damaged cache file is computed again
    fixed = corrupted_queries(pairs, "gaussian_noise", 3, tmp_path, name="d-test")
    assert torch.equal(fixed[0]["ground"], live[0]["ground"])


def test_corruption_of_queries_and_references(tiny_test, tmp_path):
    """``corruption+refs`` corrupts the references as well: its records are told apart from the
    queries-only ones, and degrading both captures changes the numbers."""
    res = evaluate_baseline(
        ColourProfile(),
        "synthetic",
        tiny_test,
        protocols=["corruption", "corruption+refs"],
        queries_dir=tmp_path,
    )
    q_only = {r.protocol["corruption"]: r for r in res if r.protocol.get("corrupted_views") == "ground"}
    both = {r.protocol["corruption"]: r for r in res if r.protocol.get("corrupted_views") == "ground+aerial"}
    assert len(q_only) == len(both) == 16
    (flags,) = [
        f
        for f in expected_protocols("synthetic", "test", ["corruption+refs"])
        if f.get("corruption") == "fog"
    ]
    assert matches_protocol(both["fog"].protocol, flags) and not matches_protocol(
        q_only["fog"].protocol, flags
    )
    assert any(both[c].metrics["R@1_s5"] != q_only[c].metrics["R@1_s5"] for c in both)
