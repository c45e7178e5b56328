"""``geo-bench train --resume`` refuses other arguments than the run was started with; ``--list``;
arguments refused before any work; a run folder that a crash left without ``last/`` is recovered."""

import json
import logging
import shutil

import pytest

from geo_bench.cli import main


def _options(run):
    return {"--epochs": "2", "--out": str(run), "--threads": "1"}


def _argv(options, flags=("--tiny", "--no-progress")):
    argv = ["train", "safa", *flags]
    for key, value in options.items():
        argv += [key, value]
    return argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "safa"
    assert main(_argv({**_options(run), "--max-steps": "1"})) == 0  # an interrupted run
    return run


def _state_bytes(run):
    return (run / "last" / "trainer_state.pt").read_bytes()


def _errors(caplog):
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_data_arguments_are_recorded_at_the_start(trained):
    recorded = json.loads((trained / "run_args.json").read_text())
    assert (recorded["recipe"], recorded["variant"], recorded["seed"], recorded["epochs"]) == (
        "safa",
        "small",
        0,
        2,
    )
    assert recorded["dataset"] == "synthetic" and recorded["tiny"] is True
    assert recorded["world"]["seed"] == 0 and recorded["world"]["n_train"] == 72


@pytest.mark.parametrize(
    ("changes", "flags", "expected"),
    [
        ({"--seed": "1"}, None, ["seed: run has 0, now 1"]),
        ({"--epochs": "3"}, None, ["epochs: run has 2, now 3"]),
        ({"--batch-size": "8"}, None, ["batch_size: run has ", ", now 8"]),
        ({"--variant": "full"}, None, ["variant: run has small, now full"]),
        ({"--world-seed": "1"}, None, ["world.seed: run has 0, now 1"]),
        ({"--n-train": "80"}, None, ["world.n_train: run has 72, now 80"]),
        ({}, ("--no-progress",), ["tiny: run has true, now false", "world.n_train: run has 72, now "]),
        ({"--dataset": "vigor", "--root": "somewhere"}, None, ["dataset: run has synthetic, now vigor"]),
        (
            {"--seed": "2", "--world-seed": "3"},
            None,
            ["seed: run has 0, now 2", "world.seed: run has 0, now 3"],
        ),
    ],
    ids=[
        "seed",
        "epochs",
        "batch-size",
        "variant",
        "world-seed",
        "n-train",
        "not-tiny",
        "dataset",
        "several",
    ],
)
def test_resume_with_other_arguments_is_refused(trained, caplog, changes, flags, expected):
    before = _state_bytes(trained)
    argv = _argv({**_options(trained), **changes}, *([flags] if flags else []))
    assert main([*argv, "--resume"]) == 2
    msg = _errors(caplog)
    for part in expected:
        assert part in msg
    assert "--out" in msg and "\n" not in msg
    assert _state_bytes(trained) == before


def test_resume_of_a_run_without_recorded_arguments_records_them(trained, tmp_path, caplog):
    run = tmp_path / "old"
    shutil.copytree(trained, run)
    (run / "run_args.json").unlink()  # a run started before the arguments were recorded
    with caplog.at_level(logging.WARNING):
        assert main([*_argv({**_options(run), "--max-steps": "2"}), "--resume"]) == 0
    assert "run_args.json" in caplog.text
    assert json.loads((run / "run_args.json").read_text()) == json.loads(
        (trained / "run_args.json").read_text()
    )


def test_resume_recovers_a_folder_left_missing_by_a_crash(trained, tmp_path, caplog):
    run = tmp_path / "crashed"
    shutil.copytree(trained, run)
    (run / "last").rename(run / "last.old-0123abcd")  # killed between the two renames of a commit
    with caplog.at_level(logging.WARNING):
        assert main([*_argv({**_options(run), "--max-steps": "2"}), "--resume"]) == 0
    assert "recovered" in caplog.text
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("last")) == ["last"]


def test_list_shows_recipes_and_variants(capsys):
    assert main(["train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("safa", "dsm", "sample4geo", "l2ltr"):
        row = next(line for line in lines if line.split() and line.split()[0] == name)
        assert "small" in row and "full" in row


def test_recipe_is_required_without_list(tmp_path, caplog):
    assert main(["train", "--tiny", "--out", str(tmp_path / "run")]) == 2
    assert "RECIPE" in _errors(caplog)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--epochs", "0", "--epochs must be a positive integer, got 0"),
        ("--epochs", "-2", "--epochs must be a positive integer, got -2"),
        ("--batch-size", "0", "--batch-size must be at least 2"),
        ("--batch-size", "1", "--batch-size must be at least 2"),
        ("--max-steps", "0", "--max-steps must be a positive integer, got 0"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(tmp_path, caplog, option, value, expected):
    assert main(["train", "safa", "--tiny", "--out", str(tmp_path / "run"), option, value]) == 2
    msg = _errors(caplog)
    assert expected in msg and "\n" not in msg
    assert not (tmp_path / "run").exists()


def test_a_run_that_cannot_read_its_data_records_nothing(tmp_path):
    run = tmp_path / "run"
    assert (
        main(["train", "safa", "--dataset", "cvusa", "--root", str(tmp_path / "nope"), "--out", str(run)])
        == 2
    )
    assert not (run / "run_args.json").exists()
