"""End to end localisation: synth map layout -> train -> ``geo-bench index`` -> ``geo-bench locate``.

The model is safa small trained on the tiny world's training stripe (2,000 cameras, 10 epochs, 630
steps; about 90 s on one idle core). The queries are panoramas of the district's test stripe,
which training never saw: the test checks the chain (georeferencing, tiling, preprocessing, search,
coordinates), where any flip, offset or CRS slip sends the error to the random-tile level, and that
held-out panoramas are located far better than by a random tile. The settings were measured on this
map (median error 105 m against 262 m for a random tile, R@10<100 m 90 %); 1,000 cameras for 8
epochs or 2,000 for 4 stayed near the random level."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("rasterio")
pytest.importorskip("pyproj")

from geo_bench.cli import main
from geo_bench.leaderboard.config import TINY_WORLD
from geo_bench.localize import Localizer, TileIndex, build_index, load_checkpoint
from geo_bench.world import RenderConfig, city_style
from geo_bench.world.layouts import write_map
from geo_retrieval.geodesy import equirectangular_to_latlon, great_circle_distance

N_QUERIES = 20
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
#: headless, and nothing that reaches for the network (this machine's network is closed)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STRIDE = "8"
N_SIDE = 55  # (500 - 64) // 8 + 1 tiles per side


def _errors(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


@pytest.fixture(scope="module")
def world_map(tmp_path_factory):
    """A 500 m x 500 m orthophoto of the tiny world's district 0 (its style, ``mixed``, 1 m/px) and 20
    panoramas of its test stripe (held out from training)."""
    out = tmp_path_factory.mktemp("map")
    district_m = TINY_WORLD.district_m
    write_map(
        out,
        N_QUERIES,
        0,
        render=RenderConfig(ground_size=(32, 128), aerial_size=64),
        city=city_style(TINY_WORLD.styles[0], size_m=district_m),
        map_m=district_m,
        split="test",
        split_fractions=TINY_WORLD.split_fractions,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def world_map_yaw90(tmp_path_factory):
    """The same map and cameras as ``world_map``, the panoramas rendered with heading 90 degrees
    (their centre column looks east)."""
    out = tmp_path_factory.mktemp("map90")
    write_map(
        out,
        N_QUERIES,
        0,
        render=RenderConfig(ground_size=(32, 128), aerial_size=64),
        city=city_style(TINY_WORLD.styles[0], size_m=TINY_WORLD.district_m),
        map_m=TINY_WORLD.district_m,
        split="test",
        split_fractions=TINY_WORLD.split_fractions,
        yaw=90.0,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``safa`` small on the tiny world with 2,000 training cameras, 10 epochs (630 steps); two torch
    threads, since the tests run one at a time (100 s against 135 s with one on the 2-core machine)."""
    run = tmp_path_factory.mktemp("train") / "safa"
    assert (
        main(
            [
                "train",
                "safa",
                "--tiny",
                "--n-train",
                "2000",
                "--epochs",
                "10",
                "--out",
                str(run),
                "--no-progress",
                "--threads",
                "2",
            ]
        )
        == 0
    )
    return run


@pytest.fixture(scope="module")
def built(trained, world_map, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "index"
    assert (
        main(
            [
                "index",
                "--checkpoint",
                str(trained),
                "--map",
                str(world_map / "map.tif"),
                "--out",
                str(out),
                "--stride-m",
                STRIDE,
                "--no-progress",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def located(built, world_map, tmp_path_factory):
    out = tmp_path_factory.mktemp("loc")
    images = sorted(str(p) for p in (world_map / "queries").glob("*.jpg"))
    assert (
        main(
            [
                "locate",
                "--index",
                str(built),
                *images,
                "--truth",
                str(world_map / "truth.csv"),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return out


class TestMapLayout:
    def test_geotiff_and_truth(self, world_map):
        import rasterio

        with rasterio.open(world_map / "map.tif") as src:
            assert src.crs.to_epsg() == 32613  # Denver's UTM zone (the world's origin_latlon)
            assert src.res == (1.0, 1.0) and src.shape == (500, 500)
            west, south, east, north = src.bounds
        rows = list(csv.DictReader(open(world_map / "truth.csv")))
        assert len(rows) == N_QUERIES
        assert set(rows[0]) == {"id", "file", "lat", "lon", "utm_e", "utm_n", "heading"}
        utm = np.array([[float(r["utm_e"]), float(r["utm_n"])] for r in rows])
        assert (utm[:, 0] > west + 32).all() and (utm[:, 0] < east - 32).all()
        assert (utm[:, 1] > south + 32).all() and (utm[:, 1] < north - 32).all()
        assert all((world_map / r["file"]).is_file() for r in rows)

    def test_latlon_agree_with_world_and_pyproj(self, world_map):
        from pyproj import Transformer

        info = json.loads((world_map / "map.json").read_text())
        rows = list(csv.DictReader(open(world_map / "truth.csv")))
        utm = np.array([[float(r["utm_e"]), float(r["utm_n"])] for r in rows])
        ll = np.array([[float(r["lat"]), float(r["lon"])] for r in rows])
        lon, lat = Transformer.from_crs("EPSG:32613", "EPSG:4326", always_xy=True).transform(
            utm[:, 0], utm[:, 1]
        )
        np.testing.assert_allclose(ll, np.stack([lat, lon], 1), atol=1e-8)
        # the world's own local equirectangular lat/lon (a sphere) stay within 0.3 % of the distance
        # from its origin of the ellipsoid's (about 1.1 m for the test stripe, 450 m east)
        world = equirectangular_to_latlon(
            torch.from_numpy(utm), tuple(info["origin_utm"]), tuple(info["origin_latlon"])
        ).numpy()
        from_origin = np.hypot(*(utm - np.asarray(info["origin_utm"], dtype=np.float64)).T)
        gap = great_circle_distance(ll, world)
        assert (gap < 0.003 * from_origin + 0.05).all(), (gap, from_origin)

    def test_cli(self, tmp_path, caplog):
        out = tmp_path / "m"
        args = [
            "synth",
            "--layout",
            "map",
            "--out",
            str(out),
            "--num",
            "3",
            "--district-m",
            "500",
            "--aerial-size",
            "64",
            "--ground-size",
            "32",
            "128",
            "--map-m",
            "200",
            "--no-progress",
        ]
        assert main(args) == 0
        assert (out / "map.tif").is_file() and len(list((out / "queries").glob("*.jpg"))) == 3
        assert main([*args[:5], "--num", "500", *args[7:]]) == 2
        assert "cameras lie inside a 200 m map" in _errors(caplog)
        # another stripe, another heading; the truth records the heading
        whole = [a if a != "200" else "500" for a in args]  # the map spans the district's stripes
        turned = [*whole[:4], str(tmp_path / "t"), *whole[5:], "--split", "train", "--yaw", "90"]
        assert main(turned) == 0
        rows = list(csv.DictReader(open(tmp_path / "t" / "truth.csv")))
        assert [float(r["heading"]) for r in rows] == [90.0] * 3
        assert main([*turned[:-1], "east"]) == 2
        assert "--yaw must be degrees or 'random'" in _errors(caplog)
        assert main(["synth", "--layout", "cvusa", "--out", str(tmp_path / "c"), "--yaw", "90"]) == 2
        assert "apply to --layout map only" in _errors(caplog)


class TestIndexAndLocate:
    def test_manifest(self, built, trained, world_map):
        idx = TileIndex.load(built)
        m = idx.manifest
        assert (
            m["model"]["recipe"] == "safa"
            and m["model"]["variant"] == "small"
            and m["model"]["weights_digest"]
        )
        assert m["maps"][0]["sha256"] and m["maps"][0]["crs"] == "EPSG:32613"
        assert m["tiling"] == {
            "crs": "EPSG:32613",
            "warped": False,
            "tile_m": 64.0,
            "stride_m": 8.0,
            "px": 64,
            "resampling": "gdal-bilinear",
        }
        assert len(idx) == N_SIDE**2
        assert idx.descriptors.dtype == np.float32 and idx.latlon.shape == (N_SIDE**2, 2)
        np.testing.assert_allclose(np.linalg.norm(idx.descriptors, axis=1), 1.0, atol=1e-4)
        assert not list((built / "chunks").glob("*.npy"))

    def test_beats_random_tiles(self, located, built):
        res = json.loads((located / "locate.json").read_text())
        tiles = np.load(built / "tiles_latlon.npy")
        truth = np.array([[q["truth"]["lat"], q["truth"]["lon"]] for q in res["queries"]])
        # expected error of a tile drawn at random, per query; its median over the queries
        random_median = float(np.median(great_circle_distance(truth[:, None, :], tiles[None]).mean(1)))
        metrics = res["metrics"]
        for key in (
            "R@1<25m",
            "R@5<50m",
            "R@10<100m",
            "median_error_m",
            "p90_error_m",
            "refined_median_error_m",
        ):
            assert key in metrics
        # held-out panoramas: far better than a random tile, and the right area among the first ten
        assert metrics["median_error_m"] < 0.6 * random_median, (metrics, random_median)
        assert metrics["R@10<100m"] >= 50.0, metrics
        # the errors stored per query are the metric's inputs
        errs = np.array([q["error_m"] for q in res["queries"]])
        assert metrics["median_error_m"] == pytest.approx(float(np.median(errs)))

    def test_outputs(self, located, built):
        res = json.loads((located / "locate.json").read_text())
        assert len(res["queries"]) == N_QUERIES and len(res["queries"][0]["candidates"]) == 10
        c = res["queries"][0]["candidates"]
        assert [x["rank"] for x in c] == list(range(10))
        assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(c))
        assert c[0]["heading_deg"] is None  # safa is not orientation-aware
        geo = json.loads((located / "locate.geojson").read_text())
        assert geo["type"] == "FeatureCollection"
        kinds = {f["properties"]["kind"] for f in geo["features"]}
        assert kinds == {"refined", "candidate", "truth"}
        lon, lat = geo["features"][0]["geometry"]["coordinates"]
        assert -106 < lon < -104 and 39 < lat < 40.5  # RFC 7946 order: [lon, lat]
        rows = list(csv.reader(open(located / "locate.csv")))
        assert len(rows) == 1 + N_QUERIES * 10 and rows[0][:5] == ["id", "file", "rank", "tile", "score"]

    def test_html_report(self, built, world_map, tmp_path):
        import base64
        import re

        images = sorted((world_map / "queries").glob("*.jpg"))[:2]
        assert (
            main(
                [
                    "locate",
                    "--index",
                    str(built),
                    *map(str, images),
                    "--truth",
                    str(world_map / "truth.csv"),
                    "--top-k",
                    "3",
                    "--html",
                    "--out",
                    str(tmp_path),
                    "--no-progress",
                ]
            )
            == 0
        )
        page = (tmp_path / "report.html").read_text()
        assert "http://" not in page and "https://" not in page  # offline: nothing to fetch
        pngs = re.findall(r"src='data:image/png;base64,([^']+)'", page)
        assert len(pngs) == 2 * (1 + 3 + 1)  # per query: the query, 3 tiles, the heat map
        assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    def test_html_report_in_headless_chromium(self, built, world_map, tmp_path):
        """The report opens in a real browser with no console error, no network request, every image
        decoded and the candidates shown. Skipped without playwright or Chromium, unless
        GEO_BENCH_REQUIRE_BROWSER=1 (set by .ci/run, which installs Debian's chromium)."""
        exe = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            sync_playwright = None
        if exe is None or sync_playwright is None:
            why = (
                "Chromium (apt-get install chromium)"
                if exe is None
                else "playwright (pip install playwright)"
            )
            if os.environ.get("GEO_BENCH_REQUIRE_BROWSER") == "1":
                pytest.fail(f"GEO_BENCH_REQUIRE_BROWSER=1 but {why} is missing")
            pytest.skip(f"needs {why}")
        images = sorted((world_map / "queries").glob("*.jpg"))[:2]
        args = ["locate", "--index", str(built), *map(str, images), "--truth", str(world_map / "truth.csv")]
        assert main([*args, "--top-k", "3", "--html", "--out", str(tmp_path), "--no-progress"]) == 0
        errors: list[str] = []
        remote: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on(
                    "request",
                    lambda r: None if r.url.startswith(("data:", "file:")) else remote.append(r.url),
                )
                page.goto((tmp_path / "report.html").as_uri(), wait_until="load")
                assert page.title() == "geo-bench locate"
                assert page.locator("section h2").all_inner_texts() == [p.stem for p in images]
                assert page.locator("img[alt='query']").count() == 2
                assert page.locator("img[alt='tile']").count() == 2 * 3
                assert page.locator("img[alt='heat map']").count() == 2
                decoded = page.evaluate(
                    "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
                )
                assert decoded and all(decoded), decoded
                caption = page.locator("img[alt='tile'] + figcaption").first.inner_text()
                assert caption.startswith("#1 ")  # rank and score under the best tile
                assert page.locator("img[alt='heat map']").first.is_visible()
            finally:
                browser.close()
        assert errors == [], errors
        assert remote == [], remote

    def test_refined_within_a_tile_of_best(self, located):
        res = json.loads((located / "locate.json").read_text())
        for q in res["queries"]:
            best = q["candidates"][0]
            d = np.hypot(q["refined"]["x"] - best["x"], q["refined"]["y"] - best["y"])
            assert d <= 64.0

    def test_tile_folder_matches_map(self, trained, built, tmp_path):
        """Tiles cut from the map, saved as PNG with a CSV of centres, index to the same descriptors."""
        from PIL import Image

        from geo_bench.localize import open_maps, read_tiles

        idx = TileIndex.load(built)
        grid = open_maps([m["path"] for m in idx.manifest["maps"]], hash_files=False)
        pick = np.arange(0, len(idx), 97)[:24]
        tiles = read_tiles(grid, idx.xy[pick], idx.map_index[pick], 64.0, 64)
        rows = ["file,lat,lon"]
        for j, (t, (lat, lon)) in enumerate(zip(tiles, idx.latlon[pick])):
            Image.fromarray(t.transpose(1, 2, 0)).save(tmp_path / f"t{j}.png")
            rows.append(f"t{j}.png,{lat:.10f},{lon:.10f}")
        (tmp_path / "tiles.csv").write_text("\n".join(rows) + "\n")
        out = tmp_path / "folder-index"
        assert (
            main(
                [
                    "index",
                    "--checkpoint",
                    str(trained),
                    "--tiles",
                    str(tmp_path / "tiles.csv"),
                    "--out",
                    str(out),
                    "--px",
                    "64",
                    "--no-progress",
                ]
            )
            == 0
        )
        got = TileIndex.load(out)
        assert got.manifest["maps"] == [] and got.manifest["tiling"]["crs"] == "EPSG:32613"
        np.testing.assert_allclose(got.descriptors, idx.descriptors[pick], atol=1e-5)
        np.testing.assert_allclose(got.xy, idx.xy[pick], atol=1e-3)  # projected back to the same UTM metres

    def test_exact_and_faiss_agree(self, built, world_map):
        loc = Localizer(built)
        images = sorted((world_map / "queries").glob("*.jpg"))
        exact = loc.locate(images, top_k=5, backend="exact")
        fast = loc.locate(images, top_k=5, backend="faiss")
        for a, b in zip(exact.queries, fast.queries):
            assert [c.tile for c in a.candidates][:1] == [c.tile for c in b.candidates][:1]
            np.testing.assert_allclose(
                [c.score for c in a.candidates], [c.score for c in b.candidates], atol=1e-4
            )

    def test_ivfpq_index(self, trained, world_map, tmp_path):
        out = tmp_path / "ivf"
        assert (
            main(
                [
                    "index",
                    "--checkpoint",
                    str(trained),
                    "--map",
                    str(world_map / "map.tif"),
                    "--out",
                    str(out),
                    "--stride-m",
                    STRIDE,
                    "--flat-max",
                    "1000",
                    "--nprobe",
                    "8",
                    "--no-progress",
                ]
            )
            == 0
        )
        idx = TileIndex.load(out)
        assert idx.manifest["faiss"]["kind"] == "ivfpq" and len(idx) == N_SIDE**2
        loc = Localizer(idx)
        images = sorted((world_map / "queries").glob("*.jpg"))
        exact = loc.locate(images, top_k=10, backend="exact")
        approx = loc.locate(images, top_k=10, backend="faiss")
        overlap = np.mean(
            [
                len({c.tile for c in a.candidates} & {c.tile for c in b.candidates}) / 10
                for a, b in zip(exact.queries, approx.queries)
            ]
        )
        assert overlap >= 0.3, overlap  # approximate, but finds the same neighbourhood

    def test_fov_query(self, built, world_map, tmp_path):
        from PIL import Image

        pano = Image.open(sorted((world_map / "queries").glob("*.jpg"))[0])
        crop = pano.crop((0, 0, pano.width // 4, pano.height))  # a 90-degree view
        crop.save(tmp_path / "view.png")
        loc = Localizer(built)
        res = loc.locate([tmp_path / "view.png"], top_k=3, fov=90.0, orientation="unknown")
        assert res.fov_deg == 90.0 and len(res.queries[0].candidates) == 3
        q = loc._load_query(tmp_path / "view.png", 90.0)
        mean = torch.tensor(loc.model.recipe.normalisation.mean).view(3, 1)
        assert torch.allclose(q[:, :, 32:].reshape(3, -1), mean.expand(3, q[:, :, 32:].numel() // 3))


class TestHeading:
    def test_roll_convention_matches_the_world_yaw(self, built, world_map, world_map_yaw90):
        """A panorama rendered with heading 90 degrees, rolled by +W/4 columns, encodes like the
        north-centred panorama of the same camera; rolled the other way it does not."""
        loc = Localizer(built)
        w = int(loc.model.recipe.ground_size[1])
        north = sorted((world_map / "queries").glob("*.jpg"))
        east = sorted((world_map_yaw90 / "queries").glob("*.jpg"))
        d_north = loc.embed_queries(north)
        rolled = loc.embed_queries_rolled(east, [w // 4, 3 * w // 4])
        right = torch.nn.functional.cosine_similarity(d_north, rolled[0], dim=1)
        wrong = torch.nn.functional.cosine_similarity(d_north, rolled[1], dim=1)
        assert right.min() > 0.95, right
        assert (right > wrong + 0.2).all(), (right, wrong)

    def test_unknown_orientation_searches_headings(self, built, world_map, world_map_yaw90):
        loc = Localizer(built)
        north = sorted((world_map / "queries").glob("*.jpg"))
        east = sorted((world_map_yaw90 / "queries").glob("*.jpg"))
        known = loc.locate(north, top_k=5)
        res = loc.locate(east, top_k=5, orientation="unknown", truth=world_map_yaw90 / "truth.csv")
        assert res.headings_searched == 16 and res.to_dict()["headings_searched"] == 16
        assert known.headings_searched is None
        for a, b in zip(known.queries, res.queries):
            # 90 degrees is among the 16 headings: the best over headings is at least that heading's
            heads = [c.heading_deg for c in b.candidates]
            assert all(h is not None and h % 22.5 == 0 for h in heads)
            assert b.candidates[0].score >= a.candidates[0].score - 0.02
            assert len({c.tile for c in b.candidates}) == 5  # each tile once
        assert {"median_heading_error_deg", "p90_heading_error_deg"} <= set(res.metrics)
        errs = [
            min(abs(q.candidates[0].heading_deg - 90.0), 360 - abs(q.candidates[0].heading_deg - 90.0))
            for q in res.queries
        ]
        assert res.metrics["median_heading_error_deg"] == pytest.approx(float(np.median(errs)))

    def test_heading_merge_is_exact(self, built, world_map_yaw90):
        """The merged top-k equals a brute-force max over headings of every tile's score."""
        loc = Localizer(built)
        east = sorted((world_map_yaw90 / "queries").glob("*.jpg"))[:6]
        res = loc.locate(east, top_k=4, orientation="unknown", headings_n=8)
        w = int(loc.model.recipe.ground_size[1])
        q = loc.embed_queries_rolled(east, [round(r * w / 8) for r in range(8)])  # (8, N, D)
        ref = torch.from_numpy(np.asarray(loc.tiles.descriptors))
        full = torch.einsum("rnd,td->rnt", q, ref)  # (8, N, T)
        best, rot = full.max(0)
        top = best.topk(4, dim=1)
        for i, qr in enumerate(res.queries):
            assert [c.tile for c in qr.candidates] == top.indices[i].tolist()
            np.testing.assert_allclose([c.score for c in qr.candidates], top.values[i].numpy(), atol=1e-5)
            assert [c.heading_deg for c in qr.candidates] == [45.0 * int(rot[i, t]) for t in top.indices[i]]


@pytest.fixture(scope="module")
def dsm_index(world_map, tmp_path_factory):
    """``dsm`` small on the tiny world (300 cameras, 64 steps, about 30 s), indexed at a 32 m stride."""
    root = tmp_path_factory.mktemp("dsm")
    args = ["--tiny", "--n-train", "300", "--epochs", "40", "--max-steps", "64", "--threads", "1"]
    assert main(["train", "dsm", *args, "--out", str(root / "run"), "--no-progress"]) == 0
    assert (
        main(
            [
                "index",
                "--checkpoint",
                str(root / "run"),
                "--map",
                str(world_map / "map.tif"),
                "--out",
                str(root / "index"),
                "--stride-m",
                "32",
                "--no-progress",
            ]
        )
        == 0
    )
    return root / "index"


class TestResume:
    def test_interrupted_build_continues(self, trained, world_map, built, tmp_path):
        out = tmp_path / "partial"
        loaded = load_checkpoint(trained)
        with pytest.raises(KeyboardInterrupt):
            build_index(
                loaded, [world_map / "map.tif"], out, stride_m=8.0, chunk_tiles=1000, stop_after_chunks=2
            )
        assert sorted(p.name for p in (out / "chunks").glob("*.npy")) == ["000000.npy", "000001.npy"]
        first = np.load(out / "chunks" / "000000.npy")
        with pytest.raises(ValueError, match="incomplete"):
            TileIndex.load(out)
        build_index(loaded, [world_map / "map.tif"], out, stride_m=8.0, chunk_tiles=1000)
        idx = TileIndex.load(out)
        np.testing.assert_array_equal(idx.descriptors[:1000], first)  # the kept chunk was reused
        np.testing.assert_allclose(idx.descriptors, TileIndex.load(built).descriptors, atol=1e-5)

    def test_cli_interrupted_message(self, trained, world_map, tmp_path, caplog, monkeypatch):
        import geo_bench.localize.index as index_mod

        real = index_mod.embed_tiles
        calls = {"n": 0}

        def flaky(loaded, tiles):
            calls["n"] += 1
            if calls["n"] > 1:
                raise KeyboardInterrupt
            return real(loaded, tiles)

        monkeypatch.setattr(index_mod, "embed_tiles", flaky)
        out = tmp_path / "cut"
        args = [
            "index",
            "--checkpoint",
            str(trained),
            "--map",
            str(world_map / "map.tif"),
            "--out",
            str(out),
            "--stride-m",
            STRIDE,
            "--chunk",
            "64",
            "--batch-size",
            "64",
            "--no-progress",
        ]
        assert main(args) == 130
        assert "run the same command again" in _errors(caplog)
        assert (out / "chunks" / "000000.npy").is_file()
        monkeypatch.setattr(index_mod, "embed_tiles", real)
        assert main(args) == 0
        assert len(TileIndex.load(out)) == N_SIDE**2


class TestBadInput:
    def test_raster_without_crs(self, trained, tmp_path, caplog):
        import rasterio

        bad = tmp_path / "nocrs.tif"
        with rasterio.open(bad, "w", driver="GTiff", width=100, height=100, count=3, dtype="uint8") as dst:
            dst.write(np.zeros((3, 100, 100), np.uint8))
        assert (
            main(["index", "--checkpoint", str(trained), "--map", str(bad), "--out", str(tmp_path / "i")])
            == 2
        )
        msg = _errors(caplog)
        assert "nocrs.tif" in msg and "no CRS" in msg and len(msg.splitlines()) == 1

    def test_maps_in_two_crs(self, trained, world_map, tmp_path, caplog):
        import rasterio

        other = tmp_path / "zone14.tif"
        with rasterio.open(world_map / "map.tif") as src:
            profile = src.profile
            data = src.read()
        profile.update(crs="EPSG:32614")
        with rasterio.open(other, "w", **profile) as dst:
            dst.write(data)
        assert (
            main(
                [
                    "index",
                    "--checkpoint",
                    str(trained),
                    "--map",
                    str(world_map / "map.tif"),
                    "--map",
                    str(other),
                    "--out",
                    str(tmp_path / "i"),
                ]
            )
            == 2
        )
        msg = _errors(caplog)
        assert "zone14.tif" in msg and "different CRSs" in msg and "EPSG:32614" in msg

    def test_wrong_aspect_without_fov(self, built, tmp_path, caplog):
        from PIL import Image

        img = tmp_path / "square.png"
        Image.new("RGB", (64, 64), (100, 120, 140)).save(img)
        assert main(["locate", "--index", str(built), str(img), "--out", str(tmp_path / "o")]) == 2
        msg = _errors(caplog)
        assert "square.png" in msg and "--fov" in msg

    def test_index_of_another_model(self, built, trained, world_map, tmp_path, caplog):
        from safetensors.torch import load_file, save_file

        other = tmp_path / "other"
        shutil.copytree(trained, other)
        for sub in ("best", "last"):
            f = other / sub / "model.safetensors"
            state = load_file(f)
            key = next(k for k, v in state.items() if v.is_floating_point())
            state[key] = state[key] + 0.01
            save_file(state, f, metadata={"recipe": "safa", "variant": "small"})
        assert (
            main(
                [
                    "locate",
                    "--index",
                    str(built),
                    str(next((world_map / "queries").glob("*.jpg"))),
                    "--checkpoint",
                    str(other),
                    "--out",
                    str(tmp_path / "o"),
                ]
            )
            == 2
        )
        assert "another model" in _errors(caplog)
        caplog.clear()
        copy = tmp_path / "idx"
        shutil.copytree(built, copy)
        assert (
            main(
                [
                    "index",
                    "--checkpoint",
                    str(other),
                    "--map",
                    str(world_map / "map.tif"),
                    "--out",
                    str(copy),
                    "--stride-m",
                    STRIDE,
                    "--no-progress",
                ]
            )
            == 2
        )
        assert "another model" in _errors(caplog) and str(copy) in _errors(caplog)

    def test_missing_files(self, built, trained, tmp_path, caplog):
        assert (
            main(["locate", "--index", str(built), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")])
            == 2
        )
        assert "nope.jpg" in _errors(caplog)
        caplog.clear()
        assert (
            main(
                [
                    "index",
                    "--checkpoint",
                    str(trained),
                    "--map",
                    str(tmp_path / "gone.tif"),
                    "--out",
                    str(tmp_path / "i"),
                ]
            )
            == 2
        )
        assert "gone.tif" in _errors(caplog)
        caplog.clear()
        assert main(["locate", "--index", str(tmp_path / "noindex"), str(tmp_path / "x.jpg")]) == 2
        assert "noindex" in _errors(caplog)
        caplog.clear()
        (tmp_path / "tiles.csv").write_text("file,lat,lon\nlost.png,39.7,-105.0\n")
        assert (
            main(
                [
                    "index",
                    "--checkpoint",
                    str(trained),
                    "--tiles",
                    str(tmp_path / "tiles.csv"),
                    "--out",
                    str(tmp_path / "i"),
                ]
            )
            == 2
        )
        assert "lost.png" in _errors(caplog)


class TestOrientationAware:
    def test_dsm_reports_heading(self, world_map, tmp_path):
        """DSM (untrained weights: the plumbing only): map descriptors, aligned search, a heading per candidate."""
        from geo_bench.localize import LoadedModel
        from geo_retrieval.checkpoint import weights_digest
        from geo_retrieval.recipes import build, get_recipe

        recipe = get_recipe("dsm", "small")
        torch.manual_seed(0)
        model = build(recipe).eval()
        loaded = LoadedModel(
            model, recipe, "small", weights_digest(model.state_dict()), tmp_path / "untrained", {}, "cpu"
        )
        out = build_index(loaded, [world_map / "map.tif"], tmp_path / "dsm", stride_m=64.0, px=64)
        idx = TileIndex.load(out)
        assert idx.descriptors.ndim == 4 and idx.manifest["faiss"] is None  # maps, no faiss
        loc = Localizer(idx, model=loaded)
        images = sorted((world_map / "queries").glob("*.jpg"))[:3]
        res = loc.locate(images, top_k=3, orientation="unknown")
        heads = [c.heading_deg for q in res.queries for c in q.candidates]
        assert all(h is not None and 0.0 <= h < 360.0 for h in heads)
        with pytest.raises(ValueError, match=r"no faiss\.index"):
            loc.locate(images, top_k=3, backend="faiss")

    def test_dsm_heading_follows_the_world_yaw(self, dsm_index, world_map, world_map_yaw90):
        """DSM's heading (its alignment shift) of a camera rendered with heading 90 degrees is the
        north-centred panorama's heading plus 90 degrees against the same tiles: the sign of the shift
        agrees with the world's yaw (a flipped sign gives 180 degrees off)."""
        from geo_bench.localize.index import _as_tensor, search
        from geo_bench.metrics.orientation import circular_error_deg
        from geo_retrieval.search import dsm_orientations

        loc = Localizer(dsm_index)
        north = loc.embed_queries(sorted((world_map / "queries").glob("*.jpg")))
        east = loc.embed_queries(sorted((world_map_yaw90 / "queries").glob("*.jpg")))
        assert north.ndim == 4  # DSM keeps feature maps
        ref = _as_tensor(loc.tiles.descriptors)
        _, idx = search(loc.tiles, north, 3, similarity=loc.model.encoder.similarity)
        h_north = dsm_orientations(north, ref, idx, degrees=True).numpy()
        h_east = dsm_orientations(east, ref, idx, degrees=True).numpy()
        step = 360.0 / north.shape[-1]
        err = circular_error_deg(h_east - h_north, 90.0)
        assert np.mean(err <= step + 1e-6) >= 0.75, err
        assert np.median(err) <= step, err
        # locate reports the same heading for its candidates
        res = loc.locate(sorted((world_map_yaw90 / "queries").glob("*.jpg")), top_k=3)
        _, idx_east = search(loc.tiles, east, 3, similarity=loc.model.encoder.similarity)
        expect = dsm_orientations(east, ref, idx_east, degrees=True).numpy()
        got = np.array([[c.heading_deg for c in q.candidates] for q in res.queries])
        np.testing.assert_allclose(got, expect)
        assert res.headings_searched is None  # DSM aligns itself; nothing is searched
