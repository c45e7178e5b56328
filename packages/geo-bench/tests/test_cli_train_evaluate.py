"""``geo-bench train`` / ``evaluate`` on the tiny synthetic world, and their error messages."""

import json
import logging
import os

import pytest
import torch

from geo_bench.cli import main
from geo_bench.store import ResultStore


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "safa"
    args = ["train", "safa", "--tiny", "--epochs", "3", "--out", str(run), "--no-progress", "--threads", "1"]
    assert main([*args, "--max-steps", "2"]) == 0  # stops inside epoch 2, like an interrupted run
    return run, args


def _state(run):
    from geo_retrieval.checkpoint import load_trainer_state

    return load_trainer_state(run / "last" / "trainer_state.pt")


def _errors(caplog):
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


class TestTrain:
    def test_writes_checkpoints(self, trained):
        run, _ = trained
        assert (run / "last" / "model.safetensors").is_file()
        assert (run / "best" / "model.safetensors").is_file()  # selected on the held-out slice
        info = json.loads((run / "run.json").read_text())
        assert info["recipe"] == "safa" and info["selection_split"] == "val"
        assert _state(run)["global_step"] == 2

    def test_refuses_to_overwrite_without_resume(self, trained, caplog):
        run, args = trained
        step = _state(run)["global_step"]
        assert main(args) == 2
        assert "--resume" in _errors(caplog)
        assert _state(run)["global_step"] == step  # untouched

    def test_resume_continues(self, trained):
        run, args = trained
        before = _state(run)
        assert before["epoch"] < 3
        assert main([*args, "--resume"]) == 0
        after = _state(run)
        assert after["epoch"] == 3 and after["global_step"] > before["global_step"]
        assert after["history"][: len(before["history"])] == before["history"]

    def test_resume_without_checkpoint(self, tmp_path, caplog):
        assert main(["train", "safa", "--tiny", "--out", str(tmp_path / "new"), "--resume"]) == 2
        assert "no checkpoint" in _errors(caplog)

    def test_unknown_recipe_lists_known(self, caplog):
        assert main(["train", "nosuchrecipe", "--tiny"]) == 2
        msg = _errors(caplog)
        assert "unknown recipe 'nosuchrecipe'" in msg
        for name in ("safa", "dsm", "sample4geo", "l2ltr"):
            assert name in msg

    def test_missing_data(self, tmp_path, caplog):
        assert main(["train", "safa", "--dataset", "cvusa", "--root", str(tmp_path / "nope")]) == 2
        msg = _errors(caplog)
        assert msg.startswith("Dataset not found") and "nope" in msg

    def test_real_dataset_needs_root(self, caplog):
        assert main(["train", "safa", "--dataset", "cvact"]) == 2
        assert "--root" in _errors(caplog)


class TestEvaluate:
    def test_records_every_protocol(self, trained, tmp_path):
        run, _ = trained
        store = tmp_path / "results.jsonl"
        assert (
            main(["evaluate", "--checkpoint", str(run), "--tiny", "--store", str(store), "--no-progress"])
            == 0
        )
        recs = ResultStore(store).records()
        assert sorted((r.protocol["orientation_known"], r.protocol["area"]) for r in recs) == [
            (False, "cross"),
            (False, "same"),
            (True, "cross"),
            (True, "same"),
        ]
        for r in recs:
            assert (r.recipe, r.variant, r.dataset, r.split) == ("safa", "small", "synthetic", "test")
            assert r.provenance.kind == "measured" and r.provenance.seed == 0 and r.provenance.commit
            assert (
                r.provenance.hardware and r.protocol["checkpoint"] and r.protocol["selection_split"] == "val"
            )
            assert r.n_query == r.n_reference == 20
            assert 0 <= r.metrics["R@1"] <= r.metrics["R@5"] <= r.metrics["R@10"] <= 100

    def test_mismatched_checkpoint(self, trained, tmp_path, caplog):
        run, _ = trained
        rc = main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--recipe",
                "dsm",
                "--variant",
                "small",
                "--tiny",
                "--store",
                str(tmp_path / "r.jsonl"),
            ]
        )
        assert rc == 2
        msg = _errors(caplog)
        assert "does not fit the recipe" in msg and ("missing keys" in msg or "shape mismatches" in msg)
        assert not (tmp_path / "r.jsonl").exists()

    def test_unsafe_checkpoint_is_not_unpickled(self, tmp_path, caplog):
        marker = tmp_path / "pwned"
        path = tmp_path / "model.pt"

        class Evil:
            def __reduce__(self):
                return (os.mkdir, (str(marker),))

        torch.save({"weight": Evil()}, path)
        rc = main(
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
        assert rc == 2
        assert "unsafe checkpoint refused" in _errors(caplog)
        assert not marker.exists()

    def test_missing_checkpoint(self, tmp_path, caplog):
        assert main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--tiny"]) == 2
        assert "does not exist" in _errors(caplog)

    def test_missing_data(self, trained, tmp_path, caplog):
        run, _ = trained
        rc = main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--dataset",
                "vigor",
                "--root",
                str(tmp_path / "nope"),
                "--store",
                str(tmp_path / "r.jsonl"),
            ]
        )
        assert rc == 2
        assert _errors(caplog).startswith("Dataset not found")


@pytest.mark.parametrize("verb", ["train", "evaluate", "leaderboard", "reported"])
def test_help_explains(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    import importlib

    doc = importlib.import_module(f"geo_bench.cli.{verb}").__doc__
    assert doc.splitlines()[0] in out
