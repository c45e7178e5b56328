"""Synthetic world: determinism, geometry (bearing conventions), labels vs colours, matcher figures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from geo_bench.world import (
    AppearanceConfig,
    Capture,
    City,
    CityConfig,
    SyntheticWorld,
    render_aerial,
    render_panorama,
)
from geo_bench.world.appearance import KIND_BUILDING, photometric
from geo_bench.world.city import BUILDING, GRASS, ROAD, SKY, TREE, WATER
from geo_bench.world.dataset import RenderConfig
from geo_transforms import polar_transform

SMALL = RenderConfig(ground_size=(32, 128), aerial_size=64, steps=64)
CITY = CityConfig(size_m=400)


def _empty_epoch(n: int = 400, res: float = 0.5) -> SimpleNamespace:
    """A flat grass world (no roads) with nothing on it; tests stamp objects into it."""
    return SimpleNamespace(
        n=n,
        res=res,
        size=n * res,
        capture=Capture(),
        height=torch.zeros(n, n, dtype=torch.float16),
        cls=torch.full((n, n), GRASS, dtype=torch.uint8),
        kind=torch.zeros(n, n, dtype=torch.uint8),
        top=torch.full((3, n, n), 90, dtype=torch.uint8),
        facade=torch.full((3, n, n), 200, dtype=torch.uint8),
        normal=torch.zeros(n, n, dtype=torch.float16),
        base=torch.zeros(n, n, dtype=torch.float16),
    )


def _stamp_tower(ep: SimpleNamespace, x: float, y: float, half: float = 4.0, height: float = 40.0) -> None:
    c0, c1 = round((x - half) / ep.res), round((x + half) / ep.res)
    r0, r1 = round((ep.size - y - half) / ep.res), round((ep.size - y + half) / ep.res)
    ep.height[r0:r1, c0:c1] = height
    ep.cls[r0:r1, c0:c1] = BUILDING
    ep.kind[r0:r1, c0:c1] = KIND_BUILDING
    ep.top[:, r0:r1, c0:c1] = 50


def _building_column(seg: torch.Tensor) -> float:
    """Circular mean column (in [0, W)) of building pixels of a (H, W) label map."""
    w = seg.shape[-1]
    counts = (seg == BUILDING).sum(0).float()
    ang = 2 * math.pi * torch.arange(w) / w
    mean = math.atan2(float((counts * torch.sin(ang)).sum()), float((counts * torch.cos(ang)).sum()))
    return (mean % (2 * math.pi)) / (2 * math.pi) * w


class TestGeometry:
    @pytest.mark.parametrize(
        ("dx", "dy", "column"), [(20.0, 0.0, 0.75), (0.0, 20.0, 0.5), (-20.0, 0.0, 0.25), (0.0, -20.0, 0.0)]
    )
    def test_tower_bearing(self, dx: float, dy: float, column: float) -> None:
        ep = _empty_epoch()
        cam = torch.tensor([[100.0, 100.0]])
        _stamp_tower(ep, 100 + dx, 100 + dy)
        _, seg, depth = render_panorama(
            ep, cam, torch.tensor([2.0]), torch.tensor([0.0]), (64, 256), steps=96
        )
        col = _building_column(seg[0])
        err = min(abs(col - column * 256), 256 - abs(col - column * 256))
        assert err < 3, (col, column * 256)
        # the tower face is ~16 m away (20 m minus half its width)
        assert 14 < float(depth[0][seg[0] == BUILDING].median()) < 19
        # aerial: the tower lies on the same side of the tile centre
        _, a_seg = render_aerial(ep, cam, 128, 0.5)
        rows, cols = (a_seg[0] == BUILDING).nonzero(as_tuple=True)
        centre = (128 - 1) / 2
        east, north = float(cols.float().mean() - centre) * 0.5, float(centre - rows.float().mean()) * 0.5
        assert abs(east - dx) < 1.0 and abs(north - dy) < 1.0

    def test_yaw_rotates_columns(self) -> None:
        ep = _empty_epoch()
        _stamp_tower(ep, 120.0, 100.0)  # due east
        _, seg, _ = render_panorama(
            ep, torch.tensor([[100.0, 100.0]]), torch.tensor([2.0]), torch.tensor([90.0]), (32, 128)
        )
        assert abs(_building_column(seg[0]) - 64) < 3  # facing east: the tower is in the centre column

    def test_horizon_sky_and_ground(self) -> None:
        ep = _empty_epoch()
        _, seg, depth = render_panorama(
            ep, torch.tensor([[100.0, 100.0]]), torch.tensor([2.0]), torch.tensor([0.0]), (32, 128)
        )
        assert (seg[0, :16] == SKY).all() and (seg[0, 16:] == GRASS).all()
        assert (depth[0, :16] == 0).all()
        # ground depth grows towards the horizon: d = h / tan(-elevation)
        elev = math.radians(45 - 90 * (31 + 0.5) / 32)
        assert float(depth[0, 31, 0]) == pytest.approx(2.0 / math.tan(-elev), rel=0.15)

    def test_occlusion(self) -> None:
        ep = _empty_epoch()
        _stamp_tower(ep, 115.0, 100.0, half=2.0, height=10.0)  # small building in front
        _stamp_tower(ep, 160.0, 100.0, half=6.0, height=60.0)  # tall one behind
        _, seg, depth = render_panorama(
            ep, torch.tensor([[100.0, 100.0]]), torch.tensor([2.0]), torch.tensor([0.0]), (64, 256)
        )
        east = seg[0, :, 192]
        d = depth[0, :, 192]
        near = (east == BUILDING) & (d < 20)
        far = (east == BUILDING) & (d > 40)
        assert near.any() and far.any()
        # the near building hides the lower part of the far one: far pixels lie above near ones
        assert near.nonzero().min() > far.nonzero().max() - 1

    def test_bad_arguments(self) -> None:
        ep = _empty_epoch(40)
        with pytest.raises(ValueError, match="cams"):
            render_panorama(ep, torch.zeros(2), torch.ones(1), torch.zeros(1), (8, 32))
        with pytest.raises(ValueError, match="elevation"):
            render_panorama(
                ep, torch.zeros(1, 2), torch.ones(1), torch.zeros(1), (8, 32), elevation=(10, -10)
            )
        with pytest.raises(ValueError, match="centres"):
            render_aerial(ep, torch.zeros(3), 8, 0.5)
        with pytest.raises(ValueError, match="img"):
            photometric(torch.zeros(1, 4, 4), torch.Generator(), 0.1, 0.0)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld("all", 48, seed=3, city=CityConfig(size_m=500), render=SMALL)


class TestDeterminism:
    def test_city_same_seed_identical(self) -> None:
        a, b = City(CityConfig(size_m=200), seed=5), City(CityConfig(size_m=200), seed=5)
        for name in ("ground_cls", "ground_rgb", "building_id", "tree_id", "car_id"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        c = City(CityConfig(size_m=200), seed=6)
        assert not torch.equal(a.ground_cls, c.ground_cls)

    def test_samples_same_seed_identical(self, world: SyntheticWorld) -> None:
        from geo_bench.world.dataset import district

        one = world.render_batch([0, 5, 7])
        district.cache_clear()  # regenerate the city from scratch
        again = SyntheticWorld("all", 48, seed=3, city=CityConfig(size_m=500), render=SMALL)
        two = again.render_batch([0, 5, 7])
        for key in ("ground", "aerial", "ground_seg", "aerial_seg", "ground_depth", "utm"):
            assert torch.equal(one[key], two[key]), key
        # batch composition does not matter
        single = again[5]
        assert torch.equal(single["ground"], one["ground"][1])
        assert torch.equal(single["aerial"], one["aerial"][1])

    def test_different_seed_differs(self, world: SyntheticWorld) -> None:
        other = SyntheticWorld("all", 4, seed=4, city=CityConfig(size_m=500), render=SMALL)
        assert not torch.equal(world.render_batch([0])["ground"], other.render_batch([0])["ground"])
        assert not torch.allclose(world.utm[:4], other.utm[:4])


class TestConsistency:
    def test_polar_aerial_matches_panorama_ground_per_bearing(self, world: SyntheticWorld) -> None:
        """Per-column class profiles of the polar aerial agree with the panorama's ground half
        better than with the panorama turned by 180 degrees."""
        b = world.render_batch(range(24))
        h, w = b["ground_seg"].shape[-2:]
        from geo_bench.world.dataset import polar_views

        _, pseg = polar_views(b["aerial"], b["aerial_seg"], (h, w))
        classes = (ROAD, BUILDING, TREE, GRASS)
        g = torch.stack(
            [(b["ground_seg"][:, h // 2 :] == c).float().mean(1) for c in classes], 1
        )  # (B, C, W)
        a = torch.stack([(pseg == c).float().mean(1) for c in classes], 1)

        def corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x = x - x.mean(-1, keepdim=True)
            y = y - y.mean(-1, keepdim=True)
            return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1) + 1e-6)

        matched = corr(g, a).mean()
        turned = corr(g.roll(w // 2, dims=-1), a).mean()
        assert matched > turned + 0.2, (float(matched), float(turned))
        # colour profiles agree too
        gc = b["ground"][..., h // 2 :, :].mean(2)
        ac = polar_transform(b["aerial"], (h, w)).mean(2)
        assert corr(gc, ac).mean() > corr(gc.roll(w // 2, dims=-1), ac).mean()

    def test_labels_align_with_colours(self, world: SyntheticWorld) -> None:
        b = world.render_batch(range(16))
        a, aseg = b["aerial"].permute(1, 0, 2, 3), b["aerial_seg"]
        g, gseg = b["ground"].permute(1, 0, 2, 3), b["ground_seg"]
        tree = a[:, aseg == TREE].mean(1)
        road = a[:, aseg == ROAD].mean(1)
        assert tree[1] > tree[2] and tree[1] > road[1] - 0.05  # crowns are green
        assert (road.max() - road.min()) < 0.12  # asphalt is grey
        sky = g[:, gseg == SKY].mean(1)
        assert sky[2] > sky[0]  # blue sky
        assert (gseg == SKY).float().mean() > 0.1
        # sky only above, ground classes only below the horizon
        h = gseg.shape[1]
        assert not (gseg[:, h // 2 :] == SKY).any()
        assert not (gseg[:, : h // 2] == ROAD).any()
        assert not (aseg == SKY).any()
        assert (gseg != WATER).any()


def _sector_descriptor(img: torch.Tensor, sectors: int = 16) -> torch.Tensor:
    b, c, h, w = img.shape
    m = img.reshape(b, c, h, sectors, w // sectors).mean(dim=(2, 4))
    m = (m - m.mean(-1, keepdim=True)) / (m.std(-1, keepdim=True) + 1e-6)
    d = m.flatten(1)
    return d / d.norm(dim=1, keepdim=True)


def _histogram_descriptor(img: torch.Tensor, bins: int = 4) -> torch.Tensor:
    q = (img.clamp(0, 1 - 1e-6) * bins).long()
    code = (q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2]).flatten(1)
    h = torch.zeros(img.shape[0], bins**3).scatter_add_(1, code, torch.ones(code.shape)).sqrt()
    return h / h.norm(dim=1, keepdim=True)


def test_colour_matchers_above_chance_far_from_perfect(world: SyntheticWorld) -> None:
    """No-learning matchers (polar aerial vs panorama lower half) on default appearance: above
    chance, far from solved. Figures at 1 km / 200 test pairs are in the README."""
    b = world.render_batch(range(48))
    h, w = b["ground"].shape[-2:]
    ground = b["ground"][..., h // 2 :, :]
    polar = polar_transform(b["aerial"], (h, w))
    chance = 1 / 48
    r1 = {}
    for name, fn in (("sector", _sector_descriptor), ("histogram", _histogram_descriptor)):
        sim = fn(ground) @ fn(polar).T
        rank = (sim > sim.diag()[:, None]).sum(1)
        r1[name] = float((rank < 1).float().mean())
        recall5 = float((rank < 5).float().mean())
        assert recall5 < 0.9, (name, recall5)
    assert r1["sector"] >= 2 * chance, r1
    assert r1["sector"] < 0.6 and r1["histogram"] < 0.6, r1


def test_gap_zero_aerial_matches_ground_conditions() -> None:
    app = AppearanceConfig(gap=0.0)
    aerial, ground = app.captures()
    assert aerial == ground
    with pytest.raises(ValueError, match="gap"):
        AppearanceConfig(gap=2.0)
