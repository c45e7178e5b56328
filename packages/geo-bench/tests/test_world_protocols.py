"""Issue 12: the leaderboard's world selects on a val region that shares nothing with test, has a
cross-area city of another style, and the city styles differ."""

from __future__ import annotations

import pytest
import torch

from geo_bench.leaderboard.config import TINY, open_datasets
from geo_bench.leaderboard.data import WorldConfig
from geo_bench.leaderboard.evaluation import expected_protocols
from geo_bench.world import CITY_STYLES, city_style
from geo_bench.world.appearance import AppearanceConfig
from geo_bench.world.city import City
from geo_bench.world.dataset import RenderConfig

TILE_M = RenderConfig().aerial_m
JITTER_M = AppearanceConfig().aerial_jitter_m


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return open_datasets(TINY, tmp_path_factory.mktemp("world"))


def _tiles_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Na, Nb) bool: whether the north-up tiles around cameras a and b (centres jittered by up to
    JITTER_M) could share a pixel."""
    d = (a[:, None, :] - b[None, :, :]).abs()
    return (d < TILE_M + 2 * JITTER_M).all(-1)


def test_selection_and_test_share_no_camera_and_no_aerial_pixel(data):
    assert data.val is not None and data.val.split == "val" and data.test.split == "test"
    assert len(data.val) == TINY.world.n_val and len(data.test) == TINY.world.n_test
    for a, b in ((data.val, data.test), (data.train, data.val), (data.train, data.test)):
        assert not set(a.ids) & set(b.ids)
        assert not _tiles_overlap(a.utm, b.utm).any(), (a.split, b.split)


def test_cross_area_city_is_elsewhere_and_unseen(data):
    assert data.cross is not None and len(data.cross) == TINY.world.n_test
    assert not set(data.cross.ids) & (set(data.train.ids) | set(data.val.ids) | set(data.test.ids))
    # its own frame, 100 km east of the training cities
    assert float(data.cross.utm[:, 0].min()) > float(data.test.utm[:, 0].max()) + 50_000
    assert not torch.equal(data.cross.ground[:4], data.test.ground[:4])


def test_world_config_validates_styles():
    with pytest.raises(ValueError, match="cross_style"):
        WorldConfig(styles=("town",), cross_style="town")
    with pytest.raises(ValueError, match="unknown"):
        WorldConfig(styles=("atlantis",))
    assert WorldConfig().key() != WorldConfig(seed=1).key() != WorldConfig(cross_style="mixed").key()


def test_synthetic_protocols_name_the_area():
    flags = expected_protocols("synthetic", "test")
    assert [f["area"] for f in flags] == ["same", "same", "cross", "cross"]
    assert all("area" not in f for f in expected_protocols("cvusa", "test"))


def test_city_styles_differ_in_layout_buildings_and_vegetation():
    assert {"downtown", "suburb", "town", "mixed"} <= set(CITY_STYLES)
    stats = {}
    for style in ("downtown", "suburb", "town"):
        city = City(city_style(style, size_m=300.0), seed=0)
        b = city.buildings
        stats[style] = {
            "height": float(b["height"].median()) if len(b["height"]) else 0.0,
            "roof_red": float((b["roof"][:, 0] - b["roof"][:, 2]).mean()) if len(b["roof"]) else 0.0,
        }
    assert stats["downtown"]["height"] > 2 * max(stats["suburb"]["height"], stats["town"]["height"])
    assert stats["town"]["roof_red"] > stats["downtown"]["roof_red"] + 0.15  # terracotta against grey
    assert city_style("town").grid_tilt_deg > 3 * city_style("downtown").grid_tilt_deg
    with pytest.raises(ValueError, match="unknown city style"):
        city_style("atlantis")
