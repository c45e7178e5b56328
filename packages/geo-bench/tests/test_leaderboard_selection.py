"""The val evidence table: each run's val R@1 per epoch and the epoch selected into best/."""

from __future__ import annotations

import json

from geo_bench.leaderboard.selection import selection_markdown, selection_rows, write_selection
from geo_bench.records import PROTOCOL_KEYS, Provenance, ResultRecord


def _record(run_dir, recipe="safa", known=True):
    proto = {k: None for k in PROTOCOL_KEYS} | {
        "orientation_known": known,
        "selection_split": "val",
        "world": {"seed": 2, "n_train": 10, "n_val": 4, "n_test": 5},
    }
    prov = Provenance(
        "measured", seed=1, source=str(run_dir), commit="abc", hardware={"cpu": "x", "cores": 2}
    )
    return ResultRecord(recipe, "small", "synthetic", "test", proto, 5, 5, {"R@1": 50.0}, prov)


def test_selected_epoch_is_the_first_best(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    curve = [10.0, 30.0, 30.0, 20.0]
    (run / "history.json").write_text(json.dumps([{"epoch": i, "val/R@1": v} for i, v in enumerate(curve)]))
    rows = selection_rows([_record(run), _record(run, known=False)])  # one row per run folder
    assert len(rows) == 1
    row = rows[0]
    assert row["best_epoch"] == 2 and row["best_val_R@1"] == 30.0 and row["last_val_R@1"] == 20.0
    assert row["epochs"] == 4 and row["world_seed"] == 2 and row["selection_split"] == "val"
    md = selection_markdown(rows)
    assert "| safa | small | 2 | 1 | val | 4 | 2 | 30.0 | 20.0 | 10 30 30 20 |" in md
    paths = write_selection([_record(run)], tmp_path / "out")
    assert json.loads(paths["selection_json"].read_text())[0]["curve"] == curve


def test_epochs_not_validated_are_shown_and_never_selected(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    history = [{"epoch": 0, "train/loss": 1.0}, {"epoch": 1, "train/loss": 0.9}]
    history += [{"epoch": 2, "val/R@1": 40.0}, {"epoch": 3, "val/R@1": 42.5}]
    (run / "history.json").write_text(json.dumps(history))
    (row,) = selection_rows([_record(run)])
    assert row["epochs"] == 4 and row["first_validated"] == 3
    assert row["best_epoch"] == 4 and row["best_val_R@1"] == 42.5 and row["last_val_R@1"] == 42.5
    assert row["curve"] == [None, None, 40.0, 42.5]
    assert "| safa | small | 2 | 1 | val | 4 | 4 | 42.5 | 42.5 | - - 40 42 |" in selection_markdown([row])
    # a run that never validated has no selection row
    (run / "history.json").write_text(json.dumps(history[:2]))
    assert selection_rows([_record(run)]) == []


def test_runs_without_history_are_left_out(tmp_path):
    assert selection_rows([_record(tmp_path / "missing")]) == []
    assert write_selection([_record(tmp_path / "missing")], tmp_path / "out") == {}
