"""Fine-grained pose data from the synthetic world: off-centre tiles and the camera's exact pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo_bench.world import CityConfig, SyntheticWorld, WorldPose, camera_pixels, render_world_pose
from geo_bench.world.render_aerial import render_aerial

CITY = CityConfig(size_m=600)


def test_tile_offsets_are_bounded_and_spread() -> None:
    ds = SyntheticWorld(
        "train", num=40, seed=3, city=CITY, ground_size=(16, 64), aerial_size=32, tile_offset_m=12.0
    )
    b = ds.render_batch(list(range(40)))
    d = (b["aerial_utm"] - b["utm"]).numpy()
    assert np.abs(d).max() <= 12.0 + 1e-4
    assert np.abs(d).max() > 8.0  # spread over the square, not the appearance's 3 m jitter
    assert (d[:, 0] > 0).any() and (d[:, 0] < 0).any() and (d[:, 1] > 0).any() and (d[:, 1] < 0).any()
    # deterministic per (seed, split, index)
    again = SyntheticWorld(
        "train", num=40, seed=3, city=CITY, ground_size=(16, 64), aerial_size=32, tile_offset_m=12.0
    )
    torch.testing.assert_close(again.render_batch([5])["aerial_utm"], b["aerial_utm"][5:6])


def test_tile_offset_widens_the_split_buffers() -> None:
    # a tile may reach offset * sqrt(2) farther from its camera: no two splits' tiles overlap
    for split_a, split_b in (("train", "val"), ("val", "test")):
        kw = {
            "seed": 1,
            "city": CITY,
            "aerial_size": 32,
            "tile_offset_m": 16.0,
            "split_fractions": (0.35, 0.3, 0.35),
        }
        a = SyntheticWorld(split_a, num=30, **kw)  # type: ignore[arg-type]
        b = SyntheticWorld(split_b, num=30, **kw)  # type: ignore[arg-type]
        ea = a.render_batch(list(range(30)))["aerial_utm"][:, 0]
        eb = b.render_batch(list(range(30)))["aerial_utm"][:, 0]
        assert float(ea.max()) + 32.0 < float(eb.min()) - 32.0 + 1e-6


def test_bad_tile_offset() -> None:
    with pytest.raises(ValueError, match="tile_offset_m"):
        SyntheticWorld("train", num=2, city=CITY, tile_offset_m=-1.0)
    with pytest.raises(ValueError, match="max_offset_m"):
        render_world_pose("train", 2, city=CITY, max_offset_m=40.0)


def test_camera_pixel_is_where_the_renderer_draws_the_camera() -> None:
    """The class label at ``camera_px`` in the off-centre tile is the label at the centre of a tile
    rendered on the camera itself (the renderer's own geometry decides, not our formula)."""
    ds = SyntheticWorld(
        "train", num=60, seed=2, city=CITY, ground_size=(16, 64), aerial_size=128, tile_offset_m=16.0
    )
    b = ds.render_batch(list(range(60)))
    gsd = ds.render_config.gsd
    px = camera_pixels(b["utm"].numpy(), b["aerial_utm"].numpy(), 128, gsd)
    # the same district metres as render_batch: the camera and the tile centre
    epoch = ds._district(0).epochs[0]
    cams = ds.cameras[:60]
    centred, _ = render_aerial(epoch, cams, 129, gsd)  # odd side: pixel 64 is exactly on the camera
    off_rgb = b["aerial"]
    rows, cols = np.round(px).astype(int).T
    assert ((rows >= 0) & (rows < 128) & (cols >= 0) & (cols < 128)).all()
    # compare the raw renders (no photometric change): render the off-centre tiles again, raw
    off_raw, _ = render_aerial(epoch, cams + (b["aerial_utm"] - b["utm"]).float(), 128, gsd)
    # bilinear sample the off-centre tile at the exact (fractional) camera pixel
    grid = torch.stack(
        [torch.from_numpy(2 * px[:, 1] / 127 - 1), torch.from_numpy(2 * px[:, 0] / 127 - 1)], dim=1
    ).float()
    at_cam = torch.nn.functional.grid_sample(off_raw, grid.view(60, 1, 1, 2), align_corners=True)[:, :, 0, 0]
    err = (at_cam - centred[:, :, 64, 64]).abs().max(dim=1).values
    assert float(err.median()) < 0.02, err
    # a sign flip of either axis lands elsewhere
    flipped = np.stack([127 - px[:, 0], px[:, 1]], axis=1)
    grid_f = torch.stack(
        [torch.from_numpy(2 * flipped[:, 1] / 127 - 1), torch.from_numpy(2 * flipped[:, 0] / 127 - 1)], dim=1
    ).float()
    wrong = torch.nn.functional.grid_sample(off_raw, grid_f.view(60, 1, 1, 2), align_corners=True)[:, :, 0, 0]
    assert (
        float((wrong - centred[:, :, 64, 64]).abs().max(dim=1).values.median())
        > 5 * float(err.median()) + 0.01
    )
    assert off_rgb.shape == (60, 3, 128, 128)


def test_world_pose_samples() -> None:
    arrays = render_world_pose(
        "val", 6, seed=0, city=CITY, ground_size=(16, 64), aerial_size=64, aerial_m=32.0
    )
    ds = WorldPose(arrays, "val")
    s = ds[0]
    assert s["ground"].shape == (3, 16, 64) and s["aerial"].shape == (3, 64, 64)
    assert s["aerial_px"] == 64 and s["metres_per_px"] == pytest.approx(0.5) and s["heading"] == 0.0
    # camera_px converts back to the camera - tile offset in metres
    c = (64 - 1) / 2
    de = (s["camera_px"][1] - c) * 0.5
    dn = -(s["camera_px"][0] - c) * 0.5
    d = s["utm"] - s["aerial_utm"]
    assert float(de) == pytest.approx(float(d[0]), abs=1e-3) and float(dn) == pytest.approx(
        float(d[1]), abs=1e-3
    )
    assert max(abs(float(de)), abs(float(dn))) <= 8.0 + 1e-3  # a quarter tile
    assert ds.protocol["labels"] == "exact (rendered)" and ds.protocol["aerial_px"] == 64
    with pytest.raises(KeyError, match="camera_px"):
        WorldPose({k: v for k, v in arrays.items() if k != "camera_px"}, "val")
    assert math.isfinite(ds.protocol["max_offset_m"])
