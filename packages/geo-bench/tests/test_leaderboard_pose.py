"""The leaderboard's fine-grained pose table: data, baseline, training, records, table, figure, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from geo_bench.cli import main
from geo_bench.leaderboard.config import RunConfig
from geo_bench.leaderboard.data import WorldConfig
from geo_bench.leaderboard.pose import (
    POSE_BASELINE,
    pose_records_table,
    run_pose_leaderboard,
    tile_centre_predictions,
)
from geo_bench.leaderboard.reported import reported_pose_records
from geo_bench.store import ResultStore
from geo_bench.world import WorldPose, render_world_pose

WORLD = WorldConfig(
    n_train=16, n_val=4, n_test=6, ground_size=(32, 128), aerial_size=64, district_m=700.0, styles=("mixed",)
)


def test_tile_centre_baseline_is_the_offset() -> None:
    arrays = render_world_pose("test", 5, seed=0, city=None, ground_size=(16, 64), aerial_size=64)
    pred = tile_centre_predictions(WorldPose(arrays, "test"))
    p, t = pred.en_metres()
    offsets = arrays["utm"] - arrays["aerial_utm"]  # camera - tile centre
    np.testing.assert_allclose(np.linalg.norm(p - t, axis=1), np.linalg.norm(offsets, axis=1), atol=1e-6)


@pytest.mark.slow
def test_pose_leaderboard_runs_records_and_resumes(tmp_path: Path) -> None:
    cfg = RunConfig(world=WORLD, epochs=1, batch_size=4, max_steps=2)
    store = ResultStore(tmp_path / "results.jsonl")
    messages: list[str] = []
    records = run_pose_leaderboard(
        cfg, tmp_path, store=store, on_event=messages.append, figure=tmp_path / "pose.png"
    )
    names = [(r.recipe, r.protocol.get("orientation_known")) for r in records]
    assert names == [(POSE_BASELINE, None), ("ccvpe", True), ("ccvpe", False)]
    for r in records:
        assert r.protocol["task"] == "pose" and r.protocol["labels"] == "exact (rendered)"
        assert r.provenance.kind == "measured" and r.n_query == WORLD.n_test
        assert np.isfinite(r.metrics["median_m"])
    ccvpe = records[1]
    assert ccvpe.protocol["selection_split"] == "val" and ccvpe.metrics["steps"] == 2
    assert {"lateral_median_m", "longitudinal_median_m", "heading_median_deg", "R@5deg"} <= set(ccvpe.metrics)
    assert "heading_median_deg" not in records[0].metrics  # the tile centre has no heading
    assert (tmp_path / "pose.png").stat().st_size > 10_000
    (run_json,) = (tmp_path / "runs").glob("ccvpe-small-*/run.json")  # locate --refine finds the world there
    info = json.loads(run_json.read_text())
    assert info["data"]["dataset"] == "synthetic" and info["global_step"] == 2
    # the same configuration again: the trained recipe is found in the store, not retrained
    again = run_pose_leaderboard(cfg, tmp_path, store=store, on_event=messages.append)
    assert any("already in the store" in m for m in messages)
    assert [r.metrics["median_m"] for r in again[1:]] == [r.metrics["median_m"] for r in records[1:]]
    table = pose_records_table(records, reported_pose_records("vigor", "same_area"))
    assert "| ccvpe | small | world |" in table and "measured here" in table
    assert "| CCVPE | reported | vigor same-area | slicematch_corrected |" in table


def test_pose_recipes_validate_every_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retrieval leaderboard's --val-from (checked on the retrieval recipes only) does not reach
    the pose recipes: they train with val_from 0."""
    import geo_bench.leaderboard.pose as pose_module

    seen: list[float] = []

    def fake_train_recipe(recipe, train, cfg, run_dir, **kwargs):
        seen.append(cfg.val_from)
        raise RuntimeError("stop after the configuration was seen")

    monkeypatch.setattr(pose_module, "train_recipe", fake_train_recipe)
    with pytest.raises(RuntimeError, match="stop after"):
        run_pose_leaderboard(RunConfig(world=WORLD, epochs=2, batch_size=4, val_from=0.5), tmp_path)
    assert seen == [0.0]


def test_unknown_pose_recipe(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown pose recipes"):
        run_pose_leaderboard(RunConfig(world=WORLD), tmp_path, recipes=["safa"])


@pytest.mark.slow
def test_cli_pose_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "leaderboard",
            "--recipes",
            "ccvpe",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--n-train",
            "16",
            "--n-val",
            "4",
            "--n-test",
            "6",
            "--no-plots",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "Fine-grained pose" in text and "tile centre" in text
    data = json.loads((out / "leaderboard_pose.json").read_text())
    assert [r["recipe"] for r in data["measured"]] == [POSE_BASELINE, "ccvpe", "ccvpe"]
    assert all(r["provenance"]["kind"] == "reported" for r in data["reported"])
    assert not (out / "leaderboard.md").exists()  # only pose recipes named: no retrieval table


def test_vigor_labels_options_are_checked() -> None:
    with pytest.raises(ValueError, match="vigor-labels-dir"):
        RunConfig(dataset="vigor", root="x", vigor_labels="corrected")
    cfg = RunConfig(dataset="vigor", root="x", vigor_labels="corrected", vigor_labels_dir="y")
    assert cfg.data_dict()["labels"] == "corrected" and cfg.vigor_options()["labels_dir"] == "y"
    assert "labels" not in replace(cfg, vigor_labels="orig", vigor_labels_dir=None).data_dict()


@pytest.mark.slow
def test_pose_leaderboard_on_vigor(tmp_path: Path) -> None:
    """--dataset vigor: VIGORPose train (a seeded held-out slice selects) and test, the label version
    and area in every record, the reported rows of the same area beside them."""
    from geo_bench.world import CityConfig
    from geo_bench.world.dataset import RenderConfig
    from geo_bench.world.layouts import write_vigor

    root = tmp_path / "VIGOR"
    render = RenderConfig(ground_size=(32, 64), aerial_size=64, steps=16, elevation=(-90.0, 90.0))
    write_vigor(root, 24, 0, city=CityConfig(size_m=300), render=render, progress=False)
    cfg = RunConfig(
        dataset="vigor", root=str(root), variant="small", epochs=1, batch_size=8, max_steps=2, holdout=0.2
    )
    records = run_pose_leaderboard(cfg, tmp_path / "out", on_event=lambda m: None)
    assert [r.recipe for r in records] == [POSE_BASELINE, "ccvpe", "ccvpe"]
    for r in records:
        assert r.dataset == "vigor" and r.protocol["labels"] == "orig" and r.protocol["task"] == "pose"
        assert r.n_query == 48  # same-area test: the second half of every city's panoramas
        assert np.isfinite(r.metrics["median_m"])
    assert records[1].protocol["selection_split"] == "train-holdout"
    table = pose_records_table(records, reported_pose_records("vigor", "same_area"))
    assert "| ccvpe | small | vigor same-area | orig |" in table
