"""SyntheticWorld: sample dict, splits from disjoint regions, options (polar, yaw, fov)."""

from __future__ import annotations

import pytest
import torch

from geo_bench.world import CityConfig, SyntheticWorld
from geo_bench.world.dataset import RenderConfig

CITY = CityConfig(size_m=400)
FRACTIONS = (0.4, 0.3, 0.3)
SMALL = RenderConfig(ground_size=(16, 64), aerial_size=32, steps=32)


def _world(split: str = "train", num: int = 4, **kw) -> SyntheticWorld:
    return SyntheticWorld(split, num, 0, city=CITY, render=SMALL, split_fractions=FRACTIONS, **kw)


def test_sample_dict() -> None:
    s = _world()[1]
    assert s["ground"].shape == (3, 16, 64) and s["aerial"].shape == (3, 32, 32)
    assert s["ground_seg"].shape == (16, 64) and s["ground_seg"].dtype == torch.long
    assert s["aerial_seg"].shape == (32, 32) and s["ground_depth"].shape == (16, 64)
    assert s["utm"].dtype == torch.float64 and s["latlon"].dtype == torch.float64
    assert isinstance(s["id"], str) and float(s["yaw"]) == 0.0 and float(s["fov"]) == 360.0
    assert 0 <= float(s["ground"].min()) and float(s["ground"].max()) <= 1
    # the aerial centre is jittered by at most aerial_jitter_m
    assert float((s["aerial_utm"] - s["utm"]).norm()) <= 3.0 + 1e-6


def test_splits_are_disjoint_regions() -> None:
    east = {}
    for split in ("train", "val", "test"):
        ds = _world(split, 6)
        east[split] = (float(ds.utm[:, 0].min()), float(ds.utm[:, 0].max()))
    assert east["train"][1] < east["val"][0] and east["val"][1] < east["test"][0]
    # aerial tiles (64 m) of different splits do not overlap
    assert east["val"][0] - east["train"][1] > 64 and east["test"][0] - east["val"][1] > 64


def test_neighbouring_cameras_overlap() -> None:
    ds = _world("all", 40)
    d = torch.cdist(ds.utm, ds.utm) + 1e9 * torch.eye(40, dtype=torch.float64)
    assert float(d.min(1).values.median()) < 32  # neighbours share most of their aerial tile


def test_options_polar_yaw_fov() -> None:
    s = _world(polar=True)[0]
    assert s["aerial"].shape == (3, 16, 64) and s["aerial_seg"].shape == (16, 64)
    ds = _world(yaw="random")
    yaws = torch.stack([ds[i]["yaw"] for i in range(3)])
    assert yaws.unique().numel() == 3 and float(yaws.max()) < 360
    north = _world()[0]["ground"]
    turned = _world(yaw=90.0)[0]["ground"]
    assert torch.allclose(turned, north.roll(-16, dims=-1), atol=0.2)  # roughly: same scene rolled
    limited = _world(fov=90.0)[0]
    assert limited["ground"].shape == (3, 16, 16) and float(limited["fov"]) == 90.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        _world("holdout")
    with pytest.raises(ValueError, match="num"):
        _world(num=0)
    with pytest.raises(ValueError, match="fov"):
        _world(fov=0)
    with pytest.raises(TypeError, match="yaw"):
        _world(yaw="north")
    with pytest.raises(ValueError, match="cameras"):
        SyntheticWorld("val", 3, 0, city=CITY, render=SMALL)  # default fractions leave no val stripe at 400 m
    with pytest.raises(IndexError):
        _world()[10]
