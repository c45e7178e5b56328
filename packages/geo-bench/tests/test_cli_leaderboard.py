"""The CI smoke test: ``geo-bench leaderboard --tiny`` end to end (every registered recipe, one epoch
on a tiny synthetic world, plus the no-learning baseline), its outputs, and resuming from the store."""

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geo_bench.baselines import BASELINE_NAME
from geo_bench.cli import main
from geo_bench.store import ResultStore


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("leaderboard")
    rc = main(["leaderboard", "--tiny", "--out", str(out), "--no-progress", "--threads", "1"])
    return out, rc


def _recipes():
    from geo_retrieval.recipes import list_recipes

    return list_recipes("small")


class TestTinyLeaderboard:
    def test_runs(self, tiny):
        _, rc = tiny
        assert rc == 0

    def test_every_recipe_and_the_baseline_under_both_protocols(self, tiny):
        out, _ = tiny
        recs = ResultStore(out / "results.jsonl").records()
        expected = {
            (name, known, area)
            for name in [*_recipes(), BASELINE_NAME]
            for known in (True, False)
            for area in ("same", "cross")
        }
        assert {(r.recipe, r.protocol["orientation_known"], r.protocol["area"]) for r in recs} == expected
        assert len(recs) == len(expected)

    def test_measured_provenance(self, tiny):
        out, _ = tiny
        for r in ResultStore(out / "results.jsonl").records():
            p = r.provenance
            assert p.kind == "measured" and p.seed == 0 and p.commit and p.hardware["cores"] >= 1
            assert p.eval_seconds > 0 and r.split == "test" and r.dataset == "synthetic"
            assert r.protocol["world"]["n_test"] == r.n_query == r.n_reference
            if r.recipe != BASELINE_NAME:
                assert p.train_seconds > 0 and r.variant == "small"
                assert r.protocol["selection_split"] == "val" and len(r.protocol["checkpoint"]) == 16
                assert r.protocol["world_seed"] == 0 and "geo_mask_m" in r.protocol
                assert r.metrics["train_pairs_per_s"] > 0

    def test_outputs(self, tiny):
        out, _ = tiny
        md = (out / "leaderboard.md").read_text()
        assert "### Measured here" in md and "Reported by papers" not in md  # synthetic: nothing published
        assert "seed 0; commit" in md and "hardware:" in md and "synthetic world seed 0" in md
        rows = list(csv.DictReader((out / "leaderboard.csv").open()))
        # orientation known / unknown x same-area / cross-area
        assert len(rows) == 4 * (len(_recipes()) + 1) and {r["section"] for r in rows} == {"measured"}
        assert all(r["seed"] == "0" and r["commit"] and r["hardware"] and r["data"] for r in rows)
        data = json.loads((out / "leaderboard.json").read_text())
        assert len(data["measured"]["records"]) == len(rows)
        for name in ("leaderboard_recall.png", "leaderboard_bar.png"):
            blob = (out / name).read_bytes()
            assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000

    def test_compute_in_every_format(self, tiny):
        """Every row shows training time, optimiser steps and pairs seen (steps x batch size)."""
        out, _ = tiny
        header = next(
            line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("| method")
        )
        assert "| train s | steps | pairs seen |" in header
        rows = list(csv.DictReader((out / "leaderboard.csv").open()))
        json_rows = json.loads((out / "leaderboard.json").read_text())["measured"]["rows"]
        for row in [*rows, *json_rows]:
            if row["method"] == BASELINE_NAME:
                continue
            steps, seen = float(row["train_steps"]), float(row["pairs_seen"])
            assert steps >= 1 and seen == steps * 16  # --tiny: batch size 16
            assert float(row["train_s"]) > 0
        for r in ResultStore(out / "results.jsonl").records():
            if r.recipe != BASELINE_NAME:
                assert r.metrics["pairs_seen"] == r.metrics["train_steps"] * 16

    def test_retrieval_examples_figure(self, tiny):
        out, _ = tiny
        blob = (out / "leaderboard_examples.png").read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n"
        found = sorted((out / "runs").glob("*/examples.json"))
        assert len(found) == len(_recipes())
        for path in found:
            ex = json.loads(path.read_text())
            assert ex["query_index"] == ex["true_index"] == [0, 1, 2, 3]
            assert all(len(top) == 5 and len(set(top)) == 5 for top in ex["top_index"])
            assert all(s == sorted(s, reverse=True) for s in ex["top_score"])
        from PIL import Image

        with Image.open(out / "leaderboard_examples.png") as im:  # one row per recipe and query
            width, height = im.size
        assert height > len(_recipes()) * 4 * 60 and width > 500

    def test_rerun_skips_what_is_in_the_store(self, tiny, capsys):
        out, _ = tiny
        before = (out / "results.jsonl").read_text()
        assert main(["leaderboard", "--tiny", "--out", str(out), "--no-progress", "--no-plots"]) == 0
        printed = capsys.readouterr().out
        assert (out / "results.jsonl").read_text() == before
        assert printed.count("already in the store") == len(_recipes()) + 1

    def test_unknown_recipe(self, tmp_path, caplog):
        assert main(["leaderboard", "--tiny", "--recipes", "safa,nosuch", "--out", str(tmp_path)]) == 2
        msg = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
        assert "unknown recipe 'nosuch'" in msg and "sample4geo" in msg

    def test_missing_data(self, tmp_path, caplog):
        assert (
            main(
                [
                    "leaderboard",
                    "--dataset",
                    "cvusa",
                    "--root",
                    str(tmp_path / "CVUSA"),
                    "--out",
                    str(tmp_path),
                ]
            )
            == 2
        )
        msg = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
        assert msg.startswith("Dataset not found")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _workers(pid: int) -> list[int]:
    """Live multiprocessing-spawned children of ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _proc_stat(int(entry.name))
        if stat is None or stat[0] == "Z" or int(stat[1]) != pid:
            continue
        try:
            if b"spawn_main" in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_the_leaderboard_stops_the_training_processes(tmp_path, sig):
    """`kill` (SIGTERM: the handler stops them; SIGKILL: they notice their parent is gone) of a
    parallel leaderboard run must not leave its training processes behind."""
    cmd = [
        sys.executable,
        "-m",
        "geo_bench",
        "leaderboard",
        "--tiny",
        "--out",
        str(tmp_path),
        "--jobs",
        "2",
        "--recipes",
        "safa,dsm",
        "--epochs",
        "500",
        "--no-baseline",
        "--no-progress",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
            time.sleep(0.5)
            workers = _workers(proc.pid)
        assert len(workers) == 2, f"the two training processes never started (exit {proc.poll()})"
        # wait until both are training (the trainer writes recipe.json when fit() starts): a worker
        # still importing torch under load has not started its parent watch yet, and a fixed sleep
        # made this test fail on a busy machine for that reason alone
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and len(list(tmp_path.glob("runs/*/recipe.json"))) < 2
        ):
            time.sleep(0.5)
        assert len(list(tmp_path.glob("runs/*/recipe.json"))) == 2, "the two recipes never started training"
        time.sleep(1)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        alive = [p for p in workers if _alive(p)]
        assert not alive, f"training processes {alive} outlived the killed leaderboard"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _record(recipe, seed, r1, known=True):
    from geo_bench.records import PROTOCOL_KEYS, ResultRecord, collect_provenance

    proto = {k: None for k in PROTOCOL_KEYS} | {
        "orientation_known": known,
        "polar": False,
        "backbone": "b",
        "synthesis": False,
        "world": {"seed": 0, "n_train": 10, "n_test": 5, "holdout": 0.2},
    }
    metrics = {"R@1": r1, "R@5": r1 + 10.0, "R@10": r1 + 20.0}
    return ResultRecord(
        recipe,
        "small",
        "synthetic",
        "test",
        proto,
        5,
        5,
        metrics,
        collect_provenance(seed=seed, train_seconds=1.0, eval_seconds=1.0),
    )


def test_seed_summary_mean_and_sample_std():
    from geo_bench.leaderboard.seeds import mean_std_text, seed_summary, seeds_markdown

    recs = [
        _record("a", 1, 12.0),
        _record("a", 0, 21.6),
        _record("b", 0, 30.0),
        _record("a", 0, 2.0, known=False),
    ]
    rows = seed_summary(recs)
    assert [(r["method"], r["orientation_known"]) for r in rows] == [("b", True), ("a", True), ("a", False)]
    a = rows[1]
    assert a["seeds"] == [0, 1] and a["R@1_values"] == [21.6, 12.0] and a["n_seeds"] == 2
    assert a["R@1_mean"] == pytest.approx(16.8) and a["R@1_std"] == pytest.approx(
        6.788225, rel=1e-6
    )  # ddof=1
    assert a["R@5_mean"] == pytest.approx(26.8)
    assert rows[0]["R@1_std"] is None and mean_std_text(rows[0], "R@1") == "30.0"
    assert mean_std_text(a, "R@1") == "16.8 ± 6.8"
    md = seeds_markdown(rows)
    assert (
        "| a | small | orientation known | 0, 1 | 16.8 ± 6.8 | 26.8 ± 6.8 | 36.8 ± 6.8 | 21.6, 12.0 |" in md
    )
    with pytest.raises(ValueError, match="more than one record for a seed"):
        seed_summary([_record("a", 0, 1.0), _record("a", 0, 2.0)])


def test_leaderboard_seeds_writes_the_summary(tmp_path):
    rc = main(
        [
            "leaderboard",
            "--tiny",
            "--recipes",
            "safa",
            "--no-baseline",
            "--seeds",
            "0,1",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-plots",
            "--threads",
            "1",
            "--jobs",
            "1",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "leaderboard_seeds.json").read_text())
    assert {(r["method"], tuple(r["seeds"])) for r in summary} == {("safa", (0, 1))}
    assert len(summary) == 4  # orientation known and unknown, same- and cross-area
    stored = ResultStore(tmp_path / "results.jsonl").records()
    for row in summary:
        area = "cross" if "cross-area" in row["protocol"] else "same"
        vals = sorted(
            r.metrics["R@1"]
            for r in stored
            if r.protocol["orientation_known"] == row["orientation_known"] and r.protocol["area"] == area
        )
        assert sorted(row["R@1_values"]) == vals
    assert "safa" in (tmp_path / "leaderboard_seeds.md").read_text()


def test_leaderboard_world_seeds_writes_the_summary(tmp_path):
    """--world-seeds: one run per synthetic world, and mean ± std over the worlds per method."""
    rc = main(
        [
            "leaderboard",
            "--tiny",
            "--recipes",
            "safa",
            "--no-baseline",
            "--world-seeds",
            "0,1",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-plots",
            "--threads",
            "1",
            "--jobs",
            "1",
        ]
    )
    assert rc == 0
    stored = ResultStore(tmp_path / "results.jsonl").records()
    assert sorted({r.protocol["world"]["seed"] for r in stored}) == [0, 1]
    assert {r.protocol["world_seed"] for r in stored} == {0, 1} and {r.provenance.seed for r in stored} == {0}
    summary = json.loads((tmp_path / "leaderboard_worlds.json").read_text())
    assert len(summary) == 4 and all(tuple(row["seeds"]) == (0, 1) for row in summary)
    for row in summary:
        area = "cross" if "cross-area" in row["protocol"] else "same"
        by_world = sorted(
            (r.protocol["world"]["seed"], r.metrics["R@1"])
            for r in stored
            if r.protocol["orientation_known"] == row["orientation_known"] and r.protocol["area"] == area
        )
        assert row["R@1_values"] == [v for _, v in by_world]
    assert "world seeds" in (tmp_path / "leaderboard_worlds.md").read_text()


def test_leaderboard_seeds_bad_value(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["leaderboard", "--tiny", "--seeds", "0,x", "--out", str(tmp_path)]) == 2
    assert "--seeds" in caplog.text


def test_parallel_progress_lines_without_a_terminal(tmp_path):
    """With stdout not a terminal, the parent prints per-recipe progress (epoch, step, loss, ETA)
    from the worker processes at the GEO_BENCH_PROGRESS_S interval, and an overall line."""
    import re

    # 12 epochs of 4 steps: training lasts seconds, many progress intervals, also on an idle machine
    # (with 1 epoch the tiny run could finish between two 0.5 s lines)
    cmd = [
        sys.executable,
        "-m",
        "geo_bench",
        "leaderboard",
        "--tiny",
        "--recipes",
        "safa,dsm",
        "--jobs",
        "2",
        "--epochs",
        "12",
        "--out",
        str(tmp_path),
        "--no-baseline",
        "--no-plots",
        "--threads",
        "1",
    ]
    env = {**os.environ, "GEO_BENCH_PROGRESS_S": "0.2"}
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    for name in ("safa", "dsm"):
        assert re.search(
            rf"\] {name} \(small\): training epoch \d+/12, step \d+/48, loss \d+\.\d+, .*ETA", proc.stdout
        ), proc.stdout[-3000:]
    assert re.search(r"overall: \d/2 done, \d running, \d queued; .* elapsed, ETA", proc.stdout)


def test_time_budget_stops_training_early(tmp_path, capsys, monkeypatch):
    """--time-budget: a budget shorter than one step trains 1 of the 4 steps, says so in the
    record (protocol time_budget_s, stopped_by_time_budget, train_steps) and changes the config;
    in process (--jobs 1) the progress lines come from the trainer callback too."""
    import re

    monkeypatch.setenv("GEO_BENCH_PROGRESS_S", "0.1")
    common = [
        "leaderboard",
        "--tiny",
        "--recipes",
        "safa",
        "--no-baseline",
        "--no-plots",
        "--threads",
        "1",
        "--jobs",
        "1",
    ]
    assert main([*common, "--out", str(tmp_path / "full")]) == 0
    assert main([*common, "--out", str(tmp_path / "budget"), "--time-budget", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"safa \(small\): training epoch 1/1, step \d/4, loss \d", printed), printed
    full = ResultStore(tmp_path / "full" / "results.jsonl").records()
    budget = ResultStore(tmp_path / "budget" / "results.jsonl").records()
    assert {r.metrics["train_steps"] for r in full} == {4.0}  # 72 train pairs, batch 16
    assert {r.metrics["train_steps"] for r in budget} == {1.0}
    assert all(r.protocol["time_budget_s"] == 0.01 and r.protocol["stopped_by_time_budget"] for r in budget)
    assert all("time_budget_s" not in r.protocol for r in full)
    assert {r.protocol["config"] for r in budget}.isdisjoint({r.protocol["config"] for r in full})
    assert "time budget 0.01 s" in (tmp_path / "budget" / "leaderboard.md").read_text()


def test_validation_starts_half_way_by_default(tmp_path):
    """The leaderboard validates the last half of each schedule (--val-from 0.5): the first of two
    epochs is trained, not validated, and shown as "-" in the selection table; the protocol and the
    config hash record it; --val-from with --time-budget is refused."""
    args = ["leaderboard", "--tiny", "--recipes", "safa", "--epochs", "2", "--no-baseline", "--no-plots"]
    assert main([*args, "--threads", "1", "--jobs", "1", "--no-progress", "--out", str(tmp_path)]) == 0
    records = ResultStore(tmp_path / "results.jsonl").records()
    assert records and all(r.protocol["val_from"] == 0.5 for r in records)
    (row,) = json.loads((tmp_path / "leaderboard_selection.json").read_text())
    assert row["epochs"] == 2 and row["first_validated"] == 2 and row["curve"][0] is None
    assert row["best_epoch"] == 2
    assert "| 2 | 2 | " in (tmp_path / "leaderboard_selection.md").read_text()
    history = json.loads(next((tmp_path / "runs").glob("*/history.json")).read_text())
    assert ["val/R@1" in e for e in history] == [False, True]
    assert main([*args, "--time-budget", "5", "--val-from", "0.5", "--out", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_time_budget_must_be_positive(tmp_path, caplog, value):
    with caplog.at_level(logging.ERROR):
        assert main(["leaderboard", "--tiny", "--time-budget", value, "--out", str(tmp_path)]) == 2
    assert "--time-budget must be a positive number" in caplog.text
    assert not (tmp_path / "cache").exists()  # refused before any work
