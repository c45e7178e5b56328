"""Fault injection for the ``geo-bench`` verbs: every fault a user can fix gives one logged message
naming the argument or file and exit status 2 (never a traceback); Ctrl-C gives one line and 130;
``--device`` is checked before any work; identical weights give the same checkpoint hash; the
``prepare`` cache feeds ``train`` / ``evaluate`` / ``leaderboard`` on the real-dataset layouts."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from geo_bench.cli import main
from geo_bench.cli._common import EXIT_INTERRUPTED, EXIT_USER_ERROR, check_device
from geo_bench.leaderboard import config as leaderboard_config
from geo_bench.store import ResultStore
from geo_retrieval.checkpoint import load_model_weights, save_weights

pytestmark = pytest.mark.one_thread


def _errors(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def _no_traceback(caplog) -> None:
    assert not any(r.exc_info for r in caplog.records), "a user error must not log a traceback"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("faults") / "safa"
    argv = [
        "train",
        "safa",
        "--tiny",
        "--epochs",
        "1",
        "--out",
        str(run),
        "--no-progress",
        "--max-steps",
        "2",
    ]
    assert main(argv) == 0
    return run


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a verb starts loading data (the check under test must come first)."""

    def boom(*args, **kwargs):
        raise AssertionError("data was opened before the arguments were checked")

    monkeypatch.setattr(leaderboard_config, "load_world_split", boom)
    monkeypatch.setattr(leaderboard_config, "open_real_dataset", boom)


class TestDevice:
    @pytest.mark.parametrize("verb", [["train", "safa"], ["evaluate", "--checkpoint", "x"], ["leaderboard"]])
    def test_not_a_device_is_refused_before_any_work(self, verb, no_work, caplog, tmp_path):
        rc = main(
            [
                *verb,
                "--tiny",
                "--device",
                "gpu",
                "--out" if verb[0] != "evaluate" else "--store",
                str(tmp_path / "o"),
            ]
        )
        assert rc == EXIT_USER_ERROR
        assert "--device 'gpu' is not a device name" in _errors(caplog)
        _no_traceback(caplog)

    @pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
    def test_cuda_without_cuda_is_refused_before_any_work(self, no_work, caplog, tmp_path):
        assert main(["train", "safa", "--tiny", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
        assert "CUDA is not available" in _errors(caplog) and "--device cpu" in _errors(caplog)
        assert not (tmp_path / "o").exists()

    def test_check_device(self):
        assert check_device("cpu") == "cpu"
        assert check_device(None) in ("cpu", "cuda")
        with pytest.raises(ValueError, match=r"--device 'meta'.*not supported"):
            check_device("meta")
        with pytest.raises(ValueError, match="not a device name"):
            check_device("cuda:x")


class TestArguments:
    def test_bogus_split_on_the_world(self, trained, tmp_path, caplog):
        store = tmp_path / "r.jsonl"
        rc = main(
            ["evaluate", "--checkpoint", str(trained), "--tiny", "--split", "bogus", "--store", str(store)]
        )
        assert rc == 2
        assert "--split 'bogus'" in _errors(caplog) and "'test'" in _errors(caplog)
        assert not store.exists()  # nothing stored under a label that was not measured

    @pytest.mark.parametrize("option", ["--epochs", "--batch-size"])
    def test_zero_epochs_or_batch(self, option, no_work, caplog, tmp_path):
        assert main(["leaderboard", "--tiny", option, "0", "--out", str(tmp_path / "o")]) == 2
        assert f"{option} must be a positive integer, got 0" in _errors(caplog)

    def test_threads_must_be_positive(self, no_work, caplog, tmp_path):
        assert main(["leaderboard", "--tiny", "--threads", "0", "--out", str(tmp_path / "o")]) == 2
        assert "--threads must be a positive integer" in _errors(caplog)


class TestCheckpointFiles:
    def _evaluate(self, path, tmp_path):
        return main(
            [
                "evaluate",
                "--checkpoint",
                str(path),
                "--recipe",
                "safa",
                "--variant",
                "small",
                "--tiny",
                "--store",
                str(tmp_path / "r.jsonl"),
            ]
        )

    @pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
    def test_damaged_safetensors_is_named(self, damage, trained, tmp_path, caplog):
        data = (trained / "last" / "model.safetensors").read_bytes()
        bad = tmp_path / "model.safetensors"
        bad.write_bytes(
            {"truncated": data[: len(data) // 2], "garbage": b"\x00not safetensors" * 64, "empty": b""}[
                damage
            ]
        )
        assert self._evaluate(bad, tmp_path) == 2
        msg = _errors(caplog)
        assert str(bad) in msg and "safetensors" in msg
        _no_traceback(caplog)
        assert not (tmp_path / "r.jsonl").exists()

    @pytest.mark.parametrize("damage", ["truncated", "garbage"])
    def test_damaged_pickle_is_named_not_called_unsafe(self, damage, trained, tmp_path, caplog):
        good = tmp_path / "good.pt"
        torch.save({"a": torch.ones(3)}, good)
        data = good.read_bytes()
        bad = tmp_path / "model.pt"
        bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a pickle at all" * 8)
        assert self._evaluate(bad, tmp_path) == 2
        msg = _errors(caplog)
        assert str(bad) in msg and "unsafe" not in msg
        _no_traceback(caplog)

    def test_nan_weights_are_refused(self, trained, tmp_path, caplog):
        from safetensors.torch import load_file

        state = load_file(trained / "last" / "model.safetensors")
        key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[key][0] = float("nan")
        bad = save_weights(state, tmp_path / "nan.safetensors")
        assert self._evaluate(bad, tmp_path) == 2
        msg = _errors(caplog)
        assert str(bad) in msg and "NaN" in msg and key in msg
        assert not (tmp_path / "r.jsonl").exists()

    def test_dead_model_is_not_a_success(self, trained, tmp_path, caplog):
        """All-zero weights give identical descriptors: under the literature's tie rule R@1 would be
        100 %; evaluate refuses them (exit 2) and stores nothing."""
        state = {k: torch.zeros_like(v) for k, v in _load(trained / "last" / "model.safetensors").items()}
        dead = save_weights(state, tmp_path / "dead.safetensors")
        assert self._evaluate(dead, tmp_path) == 2
        msg = _errors(caplog)
        assert "collapsed or untrained" in msg and "safa" in msg
        assert not (tmp_path / "r.jsonl").exists()

    def test_corrupt_recipe_json_is_named(self, trained, tmp_path, caplog):
        import shutil

        run = tmp_path / "run"
        shutil.copytree(trained, run)
        (run / "recipe.json").write_text('{"name": "safa", "vari')
        assert (
            main(["evaluate", "--checkpoint", str(run), "--tiny", "--store", str(tmp_path / "r.jsonl")]) == 2
        )
        msg = _errors(caplog)
        assert str(run / "recipe.json") in msg and "not valid JSON" in msg
        _no_traceback(caplog)

    def test_identical_weights_hash_alike_whatever_the_metadata(self, trained, tmp_path):
        from geo_retrieval.recipes import build, get_recipe

        model = build(get_recipe("safa", "small"))
        src = trained / "last" / "model.safetensors"
        a = save_weights(_load(src), tmp_path / "a.safetensors", {"epoch": "1", "global_step": "7"})
        b = save_weights(
            dict(reversed(list(_load(src).items()))),
            tmp_path / "b.safetensors",
            {"time": "later", "global_step": "9", "epoch": "2", "seed": "0"},
        )
        assert a.read_bytes() != b.read_bytes()
        assert load_model_weights(model, a) == load_model_weights(model, b)
        state = _load(src)
        next(v for v in state.values() if v.is_floating_point()).add_(1e-3)
        c = save_weights(state, tmp_path / "c.safetensors", {"epoch": "1", "global_step": "7"})
        assert load_model_weights(model, c) != load_model_weights(model, a)


def _load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


class TestInterrupt:
    @pytest.mark.parametrize(
        ("verb", "hint"),
        [
            (["train", "safa"], "--resume"),
            (["evaluate", "--checkpoint", "RUN"], "nothing was added to the store"),
            (["leaderboard"], "finished recipes are in the store"),
        ],
    )
    def test_ctrl_c_is_one_line_and_130(self, verb, hint, trained, monkeypatch, caplog, tmp_path):
        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(leaderboard_config, "load_world_split", interrupt)
        argv = [str(trained) if a == "RUN" else a for a in verb]
        out = (
            ["--store", str(tmp_path / "r.jsonl")]
            if verb[0] == "evaluate"
            else ["--out", str(tmp_path / "o")]
        )
        assert main([*argv, "--tiny", *out]) == EXIT_INTERRUPTED
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("interrupted: ") and hint in errors[0]

    def test_sigint_to_a_real_leaderboard(self, tmp_path):
        """A real Ctrl-C (SIGINT) to ``geo-bench leaderboard --tiny`` while it trains in two worker
        processes: one error line, exit status 130, no traceback, and the run ends within 60 s."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
        # Python keeps SIGINT ignored when it starts with it ignored, as every process started in the
        # background by a non-interactive shell does (`cmd &`: a CI runner, nohup jobs); a terminal's
        # Ctrl-C reaches a process with the default handler, so the child gets that one back first
        main_with_ctrl_c = (
            "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv[0] = 'geo-bench'; runpy.run_module('geo_bench', run_name='__main__')"
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                main_with_ctrl_c,
                "leaderboard",
                "--tiny",
                "--jobs",
                "2",
                "--recipes",
                "safa,dsm",
                "--epochs",
                "1000",  # still training when the signal comes, however fast the machine
                "--no-baseline",
                "--no-plots",
                "--out",
                str(tmp_path / "lb"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one pipe, read to the end: the child never blocks on a full one
            text=True,
            env=env,
        )
        # read the merged output in a thread (the child never blocks on a full pipe); the signal comes
        # 1 s after the "... in 2 processes" line, when the workers train (1000 tiny epochs): never
        # blindly while the interpreter still imports (a loaded machine can take a minute to get there)
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "processes" in line:
                    ready.set()
            ready.set()  # end of output: the run ended before training (the check below says so)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if not ready.wait(timeout=300) or not any("processes" in line for line in lines):
            proc.kill()
            reader.join(timeout=10)
            pytest.fail("no '... processes' line (within 300 s); the run's output:\n" + "".join(lines))
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            reader.join(timeout=10)
            pytest.fail("the leaderboard did not exit within 60 s of SIGINT; its output:\n" + "".join(lines))
        reader.join(timeout=10)
        err = "".join(lines)
        assert proc.returncode == EXIT_INTERRUPTED, err
        assert "Traceback" not in err
        assert "interrupted: finished recipes are in the store" in err


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A CVUSA-layout folder prepared into a cache, then stripped of its images."""
    root = tmp_path_factory.mktemp("cvusa")
    assert (
        main(
            [
                "synth",
                "--layout",
                "cvusa",
                "--out",
                str(root),
                "--num",
                "50",
                "--district-m",
                "400",
                "--no-progress",
            ]
        )
        == 0
    )
    cache = root.parent / f"{root.name}-cache"
    assert (
        main(
            [
                "prepare",
                "cvusa",
                "--root",
                str(root),
                "--out",
                str(cache),
                "--split",
                "train",
                "val",
                "--no-progress",
            ]
        )
        == 0
    )
    for folder in ("streetview", "bingmap", "polarmap"):
        for f in (root / folder).rglob("*.*"):
            f.unlink()
    return root, cache


class TestPreparedCache:
    """``--cache`` reads a ``geo-bench prepare`` cache on the real layouts: with the images deleted
    after preparing, train / evaluate / leaderboard still run from the cache, and without
    ``--cache`` they report the missing images."""

    def test_train_evaluate_leaderboard_from_the_cache(self, prepared, tmp_path, caplog):
        root, cache = prepared
        data = ["--dataset", "cvusa", "--root", str(root), "--variant", "small"]
        run = tmp_path / "run"
        assert (
            main(
                [
                    "train",
                    "safa",
                    *data,
                    "--out",
                    str(run),
                    "--batch-size",
                    "8",
                    "--epochs",
                    "1",
                    "--max-steps",
                    "2",
                    "--no-progress",
                ]
            )
            == 2
        )  # the images are gone
        assert "Dataset not found" in _errors(caplog)
        assert (
            main(
                [
                    "train",
                    "safa",
                    *data,
                    "--cache",
                    str(cache),
                    "--out",
                    str(run),
                    "--batch-size",
                    "8",
                    "--epochs",
                    "1",
                    "--max-steps",
                    "2",
                    "--no-progress",
                ]
            )
            == 0
        )
        store = tmp_path / "r.jsonl"
        assert (
            main(
                [
                    "evaluate",
                    "--checkpoint",
                    str(run),
                    *data,
                    "--cache",
                    str(cache),
                    "--store",
                    str(store),
                    "--no-progress",
                ]
            )
            == 0
        )
        recs = ResultStore(store).records()
        assert [(r.dataset, r.split, r.n_query) for r in recs] == [("cvusa", "test", 10)]
        lb = tmp_path / "lb"
        assert (
            main(
                [
                    "leaderboard",
                    *data,
                    "--cache",
                    str(cache),
                    "--recipes",
                    "safa",
                    "--no-baseline",
                    "--no-plots",
                    "--batch-size",
                    "8",
                    "--epochs",
                    "1",
                    "--jobs",
                    "1",
                    "--out",
                    str(lb),
                ]
            )
            == 0
        )
        assert json.loads((lb / "leaderboard.json").read_text())
