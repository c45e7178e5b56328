"""Live progress: the pure ProgressBoard with a fake clock (states, ETA arithmetic, plain lines at
least every interval, failures), the trainer callbacks of the runner (progress events, the time
budget) and the GEO_BENCH_PROGRESS_S setting."""

import re
import types

import pytest

from geo_bench.leaderboard.config import RunConfig, config_hash
from geo_bench.leaderboard.progress import (
    PROGRESS_ENV,
    ProgressBoard,
    ProgressView,
    format_duration,
    progress_interval,
)
from geo_bench.leaderboard.training import ProgressCallback, TimeBudget, first_validated_epoch


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return FakeClock()


def _board(clock, jobs=2):
    board = ProgressBoard(jobs=jobs, clock=clock)
    board.update({"kind": "queued", "recipe": "safa", "variant": "small", "epochs": 4, "total_steps": 40})
    board.update({"kind": "queued", "recipe": "dsm", "variant": "small", "epochs": 2, "total_steps": 20})
    board.update(
        {
            "kind": "queued",
            "recipe": "toker21",
            "variant": "small",
            "epochs": 2,
            "total_steps": 10,
            "weight": 3.0,
        }
    )
    return board


class TestProgressBoard:
    def test_states(self, clock):
        board = _board(clock)
        assert {r.state for r in board.recipes.values()} == {"queued"}
        board.update({"kind": "start", "recipe": "safa"})
        assert board.recipes["safa"].state == "starting"
        board.update(
            {
                "kind": "step",
                "recipe": "safa",
                "epoch": 1,
                "epochs": 4,
                "step": 12,
                "loss": 0.5,
                "val_r1": 20.0,
            }
        )
        r = board.recipes["safa"]
        assert (r.state, r.epoch, r.step, r.loss, r.val_r1) == ("training", 1, 12, 0.5, 20.0)
        board.update({"kind": "evaluating", "recipe": "safa", "detail": "on test"})
        assert board.recipes["safa"].state == "evaluating"
        board.update({"kind": "done", "recipe": "safa", "r1": 33.0})
        assert board.recipes["safa"].state == "done"
        board.update({"kind": "step", "recipe": "safa", "step": 13})  # a late event from the queue
        assert board.recipes["safa"].state == "done" and board.recipes["safa"].step == 12

    def test_line_shows_epoch_loss_heldout_elapsed_eta(self, clock):
        board = _board(clock)
        board.update({"kind": "start", "recipe": "safa"})
        board.update({"kind": "step", "recipe": "safa", "epoch": 0, "epochs": 4, "step": 10, "loss": 0.75})
        clock.t += 20.0
        board.update({"kind": "step", "recipe": "safa", "epoch": 2, "step": 20, "loss": 0.25, "val_r1": 12.5})
        line = board.line("safa")
        assert line.startswith("safa (small): training epoch 3/4, step 20/40, loss 0.2500, val R@1 12.5")
        assert "20 s elapsed" in line and "ETA 40 s" in line

    def test_eta_arithmetic(self, clock):
        board = _board(clock)
        for name in ("safa", "dsm"):
            board.update({"kind": "start", "recipe": name})
            board.update({"kind": "step", "recipe": name, "step": 0})
        clock.t += 10.0
        board.update({"kind": "step", "recipe": "safa", "step": 10})  # 1 s / step, 30 steps left
        board.update({"kind": "step", "recipe": "dsm", "step": 5})  # 2 s / step, 15 steps left
        assert board.recipes["safa"].eta(clock.t) == pytest.approx(30.0)
        assert board.recipes["dsm"].eta(clock.t) == pytest.approx(30.0)
        clock.t += 5.0  # no new event: the ETA keeps counting down
        assert board.recipes["safa"].eta(clock.t) == pytest.approx(25.0)
        # toker21 queued: 10 steps x weight 3 x mean(1, 2) s per unit = 45 s on the first free slot
        assert board.overall_eta(clock.t) == pytest.approx(25.0 + 45.0)

    def test_eta_unknown_until_a_rate_and_capped_by_the_budget(self, clock):
        board = ProgressBoard(clock=clock)
        board.update({"kind": "queued", "recipe": "safa", "total_steps": 1000, "budget_s": 30.0})
        board.update({"kind": "start", "recipe": "safa"})
        assert board.overall_eta() is None and "ETA ?" in board.overall_line()
        board.update({"kind": "step", "recipe": "safa", "step": 1})
        assert board.recipes["safa"].eta(clock.t) == pytest.approx(30.0)  # budget left, no rate yet
        clock.t += 10.0
        board.update({"kind": "step", "recipe": "safa", "step": 11})
        assert board.recipes["safa"].eta(clock.t) == pytest.approx(20.0)  # 989 s of steps, 20 s of budget

    def test_plain_line_at_least_every_interval(self, clock):
        board = _board(clock)
        board.update({"kind": "start", "recipe": "safa"})
        board.update({"kind": "start", "recipe": "dsm"})
        seen: dict[str, list[float]] = {"safa": [], "dsm": []}
        for i in range(1, 400):  # 200 s of fake time, polled every 0.5 s, training steps now and then
            clock.t += 0.5
            if i % 7 == 0:
                board.update(
                    {"kind": "step", "recipe": "safa", "step": i, "epoch": 0, "epochs": 4, "loss": 1.0}
                )
            for line in board.plain_lines(30.0):
                for name in seen:
                    if line.startswith(f"{name} (small):"):
                        seen[name].append(clock.t)
        for name, times in seen.items():
            gaps = [b - a for a, b in zip([100.0, *times], times)]
            assert times and max(gaps) <= 30.5, (name, times)
            assert min(gaps[1:]) >= 30.0  # and not more often
        assert "overall: 0/3 done, 2 running, 1 queued" in board.overall_line()

    def test_waiting_for_workers_is_not_silent(self, clock):
        board = _board(clock)  # all queued: the worker processes are still starting
        assert board.plain_lines(30.0) == []
        clock.t += 30.0
        assert board.plain_lines(30.0) == ["overall: 0/3 done, 0 running, 3 queued; 30 s elapsed, ETA ?"]
        clock.t += 10.0
        assert board.plain_lines(30.0) == []

    def test_no_line_once_every_recipe_finished(self, clock):
        board = ProgressBoard(clock=clock)
        board.update({"kind": "start", "recipe": "safa"})
        board.update({"kind": "done", "recipe": "safa", "r1": 10.0})
        clock.t += 100.0
        assert board.plain_lines(30.0) == []

    def test_failed(self, clock):
        board = _board(clock)
        board.update({"kind": "start", "recipe": "dsm"})
        clock.t += 3.0
        board.update({"kind": "failed", "recipe": "dsm", "error": "FloatingPointError: nan loss"})
        r = board.recipes["dsm"]
        assert r.state == "failed" and r.eta(clock.t) == 0.0 and r.elapsed(clock.t + 50) == pytest.approx(3.0)
        assert "failed" in board.line("dsm") and "nan loss" in board.line("dsm")
        assert ", 1 failed;" in board.overall_line()

    def test_rich_table(self, clock):
        from rich.console import Console

        board = _board(clock)
        board.update({"kind": "start", "recipe": "safa"})
        board.update({"kind": "step", "recipe": "safa", "epoch": 0, "epochs": 4, "step": 3, "loss": 0.5})
        console = Console(width=160, record=True, file=open("/dev/null", "w"))
        console.print(board.rich_table())
        text = console.export_text()
        assert "training epoch 1/4" in text and "0.5000" in text and "overall: 0/3 done" in text


def test_format_duration():
    assert [format_duration(s) for s in (None, 4.4, 65, 3725)] == ["?", "4 s", "1 min 05 s", "1 h 02 min"]


def test_progress_interval(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv(PROGRESS_ENV, "0.5")
    assert progress_interval() == 0.5
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv(PROGRESS_ENV, bad)
        with pytest.raises(ValueError, match=PROGRESS_ENV):
            progress_interval()


def test_view_emits_plain_lines_from_its_thread():
    import time

    lines: list[str] = []
    board = ProgressBoard()
    with ProgressView(board, emit=lines.append, interval_s=0.05) as view:
        view.update({"kind": "start", "recipe": "safa"})
        view.update({"kind": "step", "recipe": "safa", "step": 1, "epoch": 0, "epochs": 1, "loss": 0.3})
        deadline = time.monotonic() + 5
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(lines) >= 2 and all(line.startswith("safa: ") for line in lines)


def _trainer(step, epoch=0, history=()):
    return types.SimpleNamespace(
        epochs=2,
        steps_per_epoch=5,
        global_step=step,
        epoch=epoch,
        max_steps=None,
        history=list(history),
        train_seconds=0.0,
    )


def test_progress_callback_events_and_throttle(clock):
    events: list[dict] = []
    cb = ProgressCallback("safa", events.append, min_interval_s=1.0, clock=clock)
    cb(_trainer(1), {"loss": 0.9})
    cb(_trainer(2), {"loss": 0.8})  # same epoch, within a second: dropped
    clock.t += 1.0
    cb(_trainer(3), {"loss": 0.7})
    cb(_trainer(6, epoch=1, history=[{"epoch": 0, "val/R@1": 25.0}]), {"loss_ret": 0.6})  # new epoch: sent
    cb(_trainer(10, epoch=1), {"loss": 0.5})  # the last step: sent
    assert [e["step"] for e in events] == [1, 3, 6, 10]
    assert events[0] == {
        "kind": "step",
        "recipe": "safa",
        "epoch": 0,
        "epochs": 2,
        "step": 1,
        "total_steps": 10,
        "loss": 0.9,
        "val_r1": None,
    }
    assert events[2]["val_r1"] == 25.0 and events[2]["loss"] == 0.6


def test_time_budget_callback(clock):
    from geo_retrieval.training import StopTraining

    budget = TimeBudget(10.0, clock=clock)
    budget.begin(already_s=4.0)  # a resumed run that already trained 4 s
    clock.t += 5.9
    budget(_trainer(1), {})
    assert not budget.stopped
    clock.t += 0.1
    with pytest.raises(StopTraining):
        budget(_trainer(2), {})
    assert budget.stopped
    with pytest.raises(ValueError):
        TimeBudget(0.0)


def test_time_budget_config():
    base = RunConfig()
    assert config_hash({"r": 1}, base) == config_hash({"r": 1}, RunConfig(time_budget_s=None))
    assert config_hash({"r": 1}, RunConfig(time_budget_s=30)) != config_hash({"r": 1}, base)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--time-budget"):
            RunConfig(time_budget_s=bad)


def test_val_from_config():
    base = RunConfig()
    assert base.val_from == 0.0
    assert config_hash({"r": 1}, base) == config_hash({"r": 1}, RunConfig(val_from=0))
    assert config_hash({"r": 1}, RunConfig(val_from=0.5)) != config_hash({"r": 1}, base)
    # epochs before floor(val_from * epochs) are not validated; the last epoch always is
    assert [first_validated_epoch(RunConfig(val_from=0.5), n) for n in (1, 2, 10, 15, 32)] == [0, 1, 5, 7, 16]
    assert first_validated_epoch(RunConfig(val_from=0.95), 4) == 3
    assert first_validated_epoch(base, 15) == 0
    for bad in (-0.1, 1.0, 2.0, float("nan")):
        with pytest.raises(ValueError, match="--val-from must be a fraction"):
            RunConfig(val_from=bad)
    with pytest.raises(ValueError, match=r"--val-from 0\.5 needs the whole schedule"):
        RunConfig(val_from=0.5, time_budget_s=60)
    with pytest.raises(ValueError, match=r"--val-from 0\.5 needs the whole schedule"):
        RunConfig(val_from=0.5, max_steps=10)


def test_train_and_evaluate_print_progress_without_a_terminal(tmp_path, capsys, monkeypatch):
    """`geo-bench train` / `evaluate` with output to a log: plain progress lines (epoch, step, loss;
    then the evaluation) at the GEO_BENCH_PROGRESS_S interval."""
    from geo_bench.cli import main

    monkeypatch.setenv(PROGRESS_ENV, "0.05")
    run = tmp_path / "run"
    assert main(["train", "safa", "--tiny", "--epochs", "2", "--out", str(run), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\] safa \(small\): training epoch [12]/2, step \d+/\d+, loss \d", printed), printed
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--tiny",
                "--store",
                str(tmp_path / "r.jsonl"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert re.search(r"\] safa \(small\): (starting|evaluating on test)", printed), printed
