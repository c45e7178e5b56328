"""Pose refinement of located queries (geo_bench.localize.refine, ``geo-bench locate --refine``).

The geometry is checked with a stub pose model whose heatmap peaks at a known pixel (a sign flip
on either axis moves the answer by metres); the plumbing end to end with a ccvpe small trained a
few steps on random pose samples (no accuracy is asserted: the model is untrained)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("rasterio")
pytest.importorskip("pyproj")

from geo_bench.cli import main
from geo_bench.leaderboard.config import RunConfig, get_recipe_or_raise
from geo_bench.leaderboard.data import WorldConfig
from geo_bench.leaderboard.training import train_recipe
from geo_bench.localize import (
    LoadedModel,
    Localizer,
    PoseRefiner,
    TileIndex,
    build_index,
    load_checkpoint,
    pixel_offset_m,
    pose_tile_m,
)
from geo_bench.world import RenderConfig, WorldPose, city_style
from geo_bench.world.layouts import write_map
from geo_bench.world.pose import camera_pixels
from geo_retrieval.checkpoint import save_weights
from geo_retrieval.pose import CCVPEOutput
from geo_retrieval.recipes import build, get_recipe

CRS = "EPSG:32613"
WEST, NORTH = 500_000.0, 4_400_200.0


class PeakStub(nn.Module):
    """A pose model whose heatmap peaks at ``pixel`` (or, with ``pixel=None``, at the brightest red
    pixel of the tile) with the field pointing at ``heading_deg``; records the prior it was given."""

    def __init__(self, pixel: tuple[int, int] | None, heading_deg: float) -> None:
        super().__init__()
        self.pixel, self.heading_deg = pixel, heading_deg
        self.priors: list[tuple[Tensor | None, float]] = []

    def forward(
        self,
        ground: Tensor,
        aerial: Tensor,
        heading_prior: Tensor | None = None,
        prior_range_deg: float = 180.0,
    ) -> CCVPEOutput:
        self.priors.append((heading_prior, prior_range_deg))
        b, _, s, _ = aerial.shape
        if self.pixel is None:
            logits = 10.0 * (aerial[:, :1] - aerial[:, :1].amax(dim=(2, 3), keepdim=True))
        else:
            logits = torch.zeros(b, 1, s, s)
            logits[:, :, self.pixel[0], self.pixel[1]] = 10.0
        h = math.radians(self.heading_deg)
        field = torch.tensor([math.cos(h), math.sin(h)]).view(1, 2, 1, 1).expand(b, 2, s, s)
        return CCVPEOutput(logits, field.clone(), [])


def _loaded(model: nn.Module, name: str = "ccvpe", run_info: dict | None = None) -> LoadedModel:
    return LoadedModel(
        model, get_recipe(name, "small"), "small", "digest", Path("stub.safetensors"), run_info or {}, "cpu"
    )


def _map(path: Path, size: int, res: float, marker: tuple[int, int]) -> Path:
    """A dark RGB GeoTIFF (north-west corner WEST, NORTH; ``res`` m/px) with one red pixel at ``marker``."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.full((3, size, size), 20, np.uint8)
    data[0, marker[0], marker[1]] = 250
    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=CRS,
        transform=from_origin(WEST, NORTH, res, res),
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def _index(path: Path, maps: list[Path], xy: np.ndarray, tile_m: float) -> TileIndex:
    """A TileIndex over ``maps`` with tile centres ``xy`` (no descriptors needed for refinement)."""
    from geo_bench.localize import open_maps, to_latlon

    grid = open_maps(maps, hash_files=False)
    manifest = {"maps": [m.to_dict() for m in grid.maps], "tiling": {"crs": grid.crs, "tile_m": tile_m}}
    n = len(xy)
    return TileIndex(
        path, manifest, np.zeros((n, 4), np.float32), xy, to_latlon(xy, grid.crs), np.zeros(n, np.int64)
    )


def _pano(path: Path, recipe_name: str = "ccvpe") -> Path:
    from PIL import Image

    h, w = get_recipe(recipe_name, "small").ground_size
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


class TestGeometry:
    def test_offset_signs(self):
        # row 10 (north of the centre), col 100 (east of it) of a 128-px tile at 0.5 m/px
        np.testing.assert_allclose(pixel_offset_m(np.array([[10.0, 100.0]]), 128, 0.5), [[18.25, 26.75]])
        np.testing.assert_allclose(pixel_offset_m(np.array([[63.5, 63.5]]), 128, 0.5), [[0.0, 0.0]])

    def test_inverse_of_the_worlds_camera_pixels(self):
        rng = np.random.default_rng(0)
        tile = rng.uniform(0, 1000, (20, 2))
        camera = tile + rng.uniform(-30, 30, (20, 2))
        px = camera_pixels(camera, tile, 128, 0.5)
        np.testing.assert_allclose(tile + pixel_offset_m(px, 128, 0.5), camera, atol=1e-9)

    def test_stub_peak_gives_known_metres(self):
        s = get_recipe("ccvpe", "small").aerial_size[0]  # the recipe's tile side (never hard-coded)
        r, col = s // 12, (25 * s) // 32  # north-east of the centre
        stub = PeakStub((r, col), 30.0)
        ref = PoseRefiner(_loaded(stub), tile_m=64.0)
        assert ref.size == s
        h, w = ref.loaded.recipe.ground_size
        ground = torch.rand(2, 3, h, w)
        tiles = torch.zeros(2, 3, s, s, dtype=torch.uint8)
        centres = np.array([[WEST, NORTH], [WEST + 100.0, NORTH - 50.0]])
        est = ref.refine(ground, tiles, centres, torch.tensor([0.0, 90.0]))
        c, gsd = (s - 1) / 2, 64.0 / s
        expected = centres + np.array([(col - c) * gsd, (c - r) * gsd])
        np.testing.assert_allclose(est.xy, expected)
        assert (est.xy[:, 0] > centres[:, 0]).all() and (est.xy[:, 1] > centres[:, 1]).all()  # north-east
        np.testing.assert_allclose(est.heading_deg, [30.0, 30.0], atol=1e-4)
        peak = math.exp(10) / (math.exp(10) + s * s - 1)
        np.testing.assert_allclose(est.confidence, [peak, peak], rtol=1e-4)  # float32 softmax
        np.testing.assert_array_equal(est.pixel, [[r, col], [r, col]])
        prior, rng = stub.priors[-1]
        assert prior is not None and prior.tolist() == [0.0, 90.0] and rng == 0.0  # orientation known
        ref.refine(ground, tiles, centres)
        assert stub.priors[-1][0] is None  # orientation unknown: no prior

    def test_batches_match_one_pass(self):
        stub = PeakStub((3, 7), 200.0)
        one = PoseRefiner(_loaded(stub), tile_m=64.0, batch_size=16)
        two = PoseRefiner(_loaded(stub), tile_m=64.0, batch_size=2)
        h, w = one.loaded.recipe.ground_size
        ground, tiles = torch.rand(5, 3, h, w), torch.zeros(5, 3, one.size, one.size)
        xy = np.arange(10.0).reshape(5, 2)
        np.testing.assert_array_equal(one.refine(ground, tiles, xy).xy, two.refine(ground, tiles, xy).xy)

    def test_reads_the_tile_centred_on_the_candidate(self, tmp_path):
        """A red pixel on the map, the stub finds it in the tile read: the refined position is that
        pixel's centre on the map (exact: the map is read at its own resolution)."""
        ref = PoseRefiner(_loaded(PeakStub(None, 0.0)), tile_m=64.0)
        res = 64.0 / ref.size
        marker = (200, 150)  # map pixel (row, col), far from the edges
        tif = _map(tmp_path / "m.tif", 4 * ref.size, res, marker)
        true = np.array([WEST + (marker[1] + 0.5) * res, NORTH - (marker[0] + 0.5) * res])
        # candidates whose tiles hold the marker off centre (north-east and south-west of their
        # centres), their edges on the map's pixel grid (so the read copies pixels, no resampling)
        q = ref.size / 128  # offsets within half a tile at any recipe size
        xy = true + (np.array([[-40.0, -40.0], [30.0, 20.0]]) * q + 0.5) * res
        index = _index(tmp_path, [tif], xy, 64.0)
        images = [_pano(tmp_path / "a.png"), _pano(tmp_path / "b.png")]
        est = ref.refine_candidates(index, np.array([0, 1]), images)
        np.testing.assert_allclose(est.xy, [true, true], atol=1e-6)
        np.testing.assert_allclose(est.tile_xy, xy)

    def test_tile_wider_than_the_index_stays_inside_the_map(self, tmp_path):
        ref = PoseRefiner(_loaded(PeakStub(None, 0.0)), tile_m=64.0)
        res = 64.0 / ref.size
        side = 4 * ref.size  # the map is 4 pose tiles wide
        tif = _map(tmp_path / "m.tif", side, res, (5, 5))
        true = np.array([WEST + 5.5 * res, NORTH - 5.5 * res])
        index = _index(tmp_path, [tif], np.array([[WEST + 16.0, NORTH - 16.0]]), 32.0)  # a 32 m corner tile
        est = ref.refine_candidates(index, np.array([0]), [_pano(tmp_path / "a.png")])
        np.testing.assert_allclose(est.tile_xy, [[WEST + 32.0, NORTH - 32.0]])  # moved inward
        np.testing.assert_allclose(est.xy, [true], atol=1e-6)


class TestErrors:
    def test_non_pose_recipe_refused(self):
        with pytest.raises(
            ValueError, match=r"'safa' \(small\), a retrieval recipe.*pose recipe such as ccvpe"
        ):
            PoseRefiner(_loaded(nn.Identity(), "safa"), tile_m=64.0)

    def test_tile_width_default_and_missing(self):
        stub = PeakStub((0, 0), 0.0)
        world = {"data": {"dataset": "synthetic", "world": WorldConfig().to_dict()}}
        assert pose_tile_m(_loaded(stub, run_info=world)) == 64.0
        assert (
            PoseRefiner(_loaded(stub, run_info=world)).gsd
            == 64.0 / get_recipe("ccvpe", "small").aerial_size[0]
        )
        assert pose_tile_m(_loaded(stub), 70.0) == 70.0
        with pytest.raises(ValueError, match=r"pass --refine-tile-m M"):
            PoseRefiner(_loaded(stub))
        with pytest.raises(ValueError, match=r"pass --refine-tile-m M"):
            PoseRefiner(_loaded(stub, run_info={"data": {"dataset": "vigor", "root": "x"}}))
        with pytest.raises(ValueError, match="must be positive"):
            PoseRefiner(_loaded(stub), tile_m=0.0)

    def test_pre_cut_tiles_of_another_width(self, tmp_path):
        from PIL import Image

        ref = PoseRefiner(_loaded(PeakStub(None, 0.0)), tile_m=64.0)
        Image.new("RGB", (40, 40), (20, 20, 20)).save(tmp_path / "t.png")
        (tmp_path / "tiles.csv").write_text("file,lat,lon\nt.png,39.7,-105.0\n")
        manifest = {
            "maps": [],
            "tiles": {"csv": str(tmp_path / "tiles.csv")},
            "tiling": {"crs": CRS, "tile_m": 40.0},
        }
        index = TileIndex(
            tmp_path,
            manifest,
            np.zeros((1, 4), np.float32),
            np.zeros((1, 2)),
            np.zeros((1, 2)),
            np.full(1, -1),
        )
        with pytest.raises(ValueError, match="pre-cut 40 m tiles"):
            ref.read_tiles(index, np.array([0]))
        index.manifest["tiling"]["tile_m"] = 64.0
        tiles, _ = ref.read_tiles(index, np.array([0]))
        assert tiles.shape == (1, 3, ref.size, ref.size) and (tiles == 20).all()


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 200 m synthetic map with 3 query panoramas, an index of 9 tiles by an untrained safa small,
    and a ccvpe small run trained 2 steps on random pose samples (run.json: the synthetic world)."""
    root = tmp_path_factory.mktemp("refine")
    safa = get_recipe("safa", "small")
    write_map(
        root / "map",
        3,
        0,
        render=RenderConfig(ground_size=tuple(safa.ground_size), aerial_size=64),
        city=city_style("mixed", size_m=500.0),
        map_m=200.0,
        split="test",
        split_fractions=(0.55, 0.2, 0.25),
        progress=False,
    )
    torch.manual_seed(0)
    weights = save_weights(
        build(safa), root / "safa" / "model.safetensors", {"recipe": "safa", "variant": "small"}
    )
    index = build_index(load_checkpoint(weights), [root / "map" / "map.tif"], root / "idx", stride_m=64.0)
    recipe = get_recipe_or_raise("ccvpe", "small", epochs=1, batch_size=4)
    s, (h, w) = recipe.aerial_size[0], recipe.ground_size
    rng = np.random.default_rng(0)

    def pose(split: str, n: int) -> WorldPose:
        cam = rng.uniform(s / 4, 3 * s / 4, (n, 2))
        arrays = {
            "ground": rng.integers(0, 255, (n, 3, h, w), dtype=np.uint8),
            "aerial": rng.integers(0, 255, (n, 3, s, s), dtype=np.uint8),
            "ids": np.array([f"{split}{i}" for i in range(n)]),
            "utm": np.zeros((n, 2)),
            "aerial_utm": np.zeros((n, 2)),
            "camera_px": cam,
            "heading": rng.uniform(0, 360, n).astype(np.float32),
            "gsd": np.array(64.0 / s),
        }
        return WorldPose(arrays, split)

    cfg = RunConfig(world=WorldConfig(n_train=8, n_val=4, n_test=2), epochs=1, batch_size=4, max_steps=2)
    run = root / "ccvpe-run"
    train_recipe(recipe, pose("train", 8), cfg, run, val=pose("val", 4))
    (run / "run.json").write_text(
        json.dumps({"recipe": "ccvpe", "variant": "small", "data": cfg.data_dict()})
    )
    return {"root": root, "map": root / "map", "index": index, "safa": weights, "run": run}


@pytest.fixture(scope="module")
def located(setup):
    out = setup["root"] / "located"
    m = setup["map"]
    images = sorted(str(p) for p in (m / "queries").glob("*.jpg"))
    args = ["locate", "--index", str(setup["index"]), *images, "--truth", str(m / "truth.csv")]
    assert (
        main(
            [
                *args,
                "--top-k",
                "3",
                "--refine",
                str(setup["run"]),
                "--html",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return out


class TestEndToEnd:
    def test_json(self, located, setup):
        res = json.loads((located / "locate.json").read_text())
        s = get_recipe("ccvpe", "small").aerial_size[0]
        assert (
            res["refine"]["recipe"] == "ccvpe"
            and res["refine"]["tile_m"] == 64.0
            and res["refine"]["px"] == s
        )
        assert res["refine"]["orientation"].startswith("known")
        for q in res["queries"]:
            p, best = q["pose"], q["candidates"][0]
            vals = [p["lat"], p["lon"], p["x"], p["y"], p["heading_deg"], p["confidence"], q["pose_error_m"]]
            assert all(math.isfinite(v) for v in vals), q
            assert 0 <= p["heading_deg"] < 360 and 0 < p["confidence"] <= 1
            # the tile the pose model saw is the best candidate's, and the answer lies inside it
            assert (p["tile_x"], p["tile_y"]) == (best["x"], best["y"])
            assert abs(p["x"] - best["x"]) <= 32 and abs(p["y"] - best["y"]) <= 32
            assert math.isfinite(q["pose_heading_error_deg"])
        m = res["metrics"]
        for key in (
            "pose_median_error_m",
            "pose_p90_error_m",
            "pose_mean_error_m",
            "pose_median_heading_error_deg",
        ):
            assert math.isfinite(m[key]), key
        assert m["pose_median_error_m"] == pytest.approx(
            float(np.median([q["pose_error_m"] for q in res["queries"]]))
        )
        assert {"median_error_m", "refined_median_error_m"} <= set(m)

    def test_geojson_csv_html(self, located):
        res = json.loads((located / "locate.json").read_text())
        geo = json.loads((located / "locate.geojson").read_text())
        poses = [f for f in geo["features"] if f["properties"]["kind"] == "pose"]
        assert len(poses) == len(res["queries"])
        for f, q in zip(poses, res["queries"]):
            assert f["geometry"]["coordinates"] == [q["pose"]["lon"], q["pose"]["lat"]]  # [lon, lat]
            assert (
                f["properties"]["id"] == q["id"]
                and f["properties"]["heading_deg"] == q["pose"]["heading_deg"]
            )
        rows = list(csv.DictReader(open(located / "locate.csv")))
        assert len(rows) == 3 * len(res["queries"])
        for r in rows:
            assert all(
                r[k]
                for k in (
                    "pose_lat",
                    "pose_lon",
                    "pose_x",
                    "pose_y",
                    "pose_heading_deg",
                    "pose_confidence",
                    "pose_error_m",
                )
            )
        page = (located / "report.html").read_text()
        assert "pose refinement ccvpe (small)" in page
        assert len(re.findall(r"<br>pose [-\d.]+, [-\d.]+, heading \d+ deg, confidence", page)) == len(
            res["queries"]
        )
        assert "http://" not in page and "https://" not in page

    def test_api_orientation_unknown(self, setup):
        images = sorted((setup["map"] / "queries").glob("*.jpg"))[:2]
        refiner = PoseRefiner.load(setup["run"])
        assert refiner.tile_m == 64.0  # from run.json: trained on the synthetic world
        res = Localizer(setup["index"]).locate(
            images, top_k=2, orientation="unknown", headings_n=2, refine=refiner
        )
        assert res.refine is not None and res.refine["orientation"].startswith("unknown")
        assert all(q.pose_xy is not None and np.isfinite(q.pose_xy).all() for q in res.queries)
        plain = Localizer(setup["index"]).locate(images, top_k=2)
        assert plain.refine is None and plain.queries[0].pose_xy is None
        assert plain.csv_rows()[1][-7:] == [""] * 7 and plain.to_dict()["queries"][0]["pose"] is None

    def test_cli_faults(self, setup, tmp_path, caplog):
        image = str(sorted((setup["map"] / "queries").glob("*.jpg"))[0])
        base = [
            "locate",
            "--index",
            str(setup["index"]),
            image,
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
        assert main([*base, "--refine", str(setup["safa"])]) == 2
        assert "pose recipe such as ccvpe" in caplog.text and "'safa'" in caplog.text
        caplog.clear()
        bare = tmp_path / "bare"  # the weights without their run folder: no run.json
        bare.mkdir()
        (bare / "model.safetensors").write_bytes((setup["run"] / "best" / "model.safetensors").read_bytes())
        assert main([*base, "--refine", str(bare / "model.safetensors")]) == 2
        assert "--refine-tile-m" in caplog.text
        assert main([*base, "--refine", str(bare / "model.safetensors"), "--refine-tile-m", "64"]) == 0
        caplog.clear()
        assert main([*base, "--refine-tile-m", "64"]) == 2
        assert "applies to --refine" in caplog.text
