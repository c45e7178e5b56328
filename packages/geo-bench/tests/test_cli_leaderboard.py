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
        expected = {(name, known) for name in [*_recipes(), BASELINE_NAME] for known in (True, False)}
        assert {(r.recipe, r.protocol["orientation_known"]) for r in recs} == expected
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
                assert r.protocol["selection_split"] == "train-holdout" and len(r.protocol["checkpoint"]) == 16
                assert r.metrics["train_pairs_per_s"] > 0

    def test_outputs(self, tiny):
        out, _ = tiny
        md = (out / "leaderboard.md").read_text()
        assert "### Measured here" in md and "Reported by papers" not in md  # synthetic: nothing published
        assert "seed 0; commit" in md and "hardware:" in md and "synthetic world seed 0" in md
        rows = list(csv.DictReader((out / "leaderboard.csv").open()))
        assert len(rows) == 2 * (len(_recipes()) + 1) and {r["section"] for r in rows} == {"measured"}
        assert all(r["seed"] == "0" and r["commit"] and r["hardware"] and r["data"] for r in rows)
        data = json.loads((out / "leaderboard.json").read_text())
        assert len(data["measured"]["records"]) == len(rows)
        for name in ("leaderboard_recall.png", "leaderboard_bar.png"):
            blob = (out / name).read_bytes()
            assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000

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
        assert main(["leaderboard", "--dataset", "cvusa", "--root", str(tmp_path / "CVUSA"), "--out", str(tmp_path)]) == 2
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
    cmd = [sys.executable, "-m", "geo_bench", "leaderboard", "--tiny", "--out", str(tmp_path), "--jobs", "2",
           "--recipes", "safa,dsm", "--epochs", "500", "--no-baseline", "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
            time.sleep(0.5)
            workers = _workers(proc.pid)
        assert len(workers) == 2, f"the two training processes never started (exit {proc.poll()})"
        time.sleep(3)  # let them get into training
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
