"""The run-folder layout (``geo_retrieval.run_folder``), loading a checkpoint into a model
(``checkpoint.load_model_weights`` / ``weights_digest``), the resume check shared by the trainer and
``geo-bench train`` (``training.trainer.check_resume``) and the command-line error handling
(``cli_errors``)."""

import logging
import pickle

import pytest
import torch
from torch import nn

from geo_retrieval.checkpoint import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_model_weights,
    save_weights,
    weights_digest,
)
from geo_retrieval.cli_errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, guarded, user_error_message
from geo_retrieval.run_folder import BEST, LAST, WEIGHTS_FILE, RunLayout, locate_weights
from geo_retrieval.training.trainer import ResumeMismatchError, check_resume


class TestRunLayout:
    def test_paths(self, tmp_path):
        layout = RunLayout(tmp_path)
        assert layout.last == tmp_path / "last" and layout.best == tmp_path / "best"
        assert layout.weights() == tmp_path / "best" / "model.safetensors"
        assert layout.weights(LAST) == tmp_path / "last" / "model.safetensors"
        assert layout.state() == tmp_path / "last" / "trainer_state.pt"
        assert layout.info() == tmp_path / "best" / "info.json"
        assert layout.run_json == tmp_path / "run.json" and layout.recipe_json == tmp_path / "recipe.json"
        assert layout.run_args_json == tmp_path / "run_args.json"
        assert layout.history_json == tmp_path / "history.json"

    def test_unknown_checkpoint_is_refused(self, tmp_path):
        with pytest.raises(ValueError, match="which must be one of"):
            RunLayout(tmp_path).weights("latest")

    def test_the_trainer_writes_this_layout(self):
        from geo_retrieval.training import trainer

        assert (trainer.WEIGHTS_FILE, trainer.STATE_FILE) == ("model.safetensors", "trainer_state.pt")


class TestLocateWeights:
    def _run(self, tmp_path, *subs):
        model = nn.Linear(2, 2)
        for sub in subs:
            save_weights(model, RunLayout(tmp_path).weights(sub))
        return tmp_path

    def test_best_first_then_last(self, tmp_path):
        run = self._run(tmp_path, BEST, LAST)
        assert locate_weights(run) == (run / BEST / WEIGHTS_FILE, run)
        (run / BEST / WEIGHTS_FILE).unlink()
        assert locate_weights(run) == (run / LAST / WEIGHTS_FILE, run)

    def test_a_checkpoint_folder_or_file(self, tmp_path):
        run = self._run(tmp_path, LAST)
        assert locate_weights(run / LAST) == (run / LAST / WEIGHTS_FILE, run)
        assert locate_weights(run / LAST / WEIGHTS_FILE) == (run / LAST / WEIGHTS_FILE, run / LAST)

    def test_nothing_there(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            locate_weights(tmp_path / "none")
        with pytest.raises(FileNotFoundError, match="no weights in"):
            locate_weights(tmp_path)


class TestLoadModelWeights:
    def test_loads_and_digests_the_contents(self, tmp_path):
        torch.manual_seed(0)
        src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
        a = save_weights(src, tmp_path / "a.safetensors", {"global_step": "1"})
        b = save_weights(
            dict(reversed(list(src.state_dict().items()))), tmp_path / "b.safetensors", {"global_step": "9"}
        )
        digest = load_model_weights(dst, a)
        assert torch.equal(dst.weight, src.weight)
        assert digest == load_model_weights(dst, b) == weights_digest(src.state_dict())
        assert len(digest) == 16

    def test_digest_follows_the_values(self):
        state = {"w": torch.zeros(3)}
        assert weights_digest(state) != weights_digest({"w": torch.ones(3)})
        assert weights_digest(state) != weights_digest({"w": torch.zeros(3, dtype=torch.float64)})

    def test_prefixes_are_stripped(self, tmp_path):
        src = nn.Linear(3, 2)
        path = save_weights(
            {f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "w.safetensors"
        )
        load_model_weights(nn.Linear(3, 2), path)

    def test_mismatch_names_keys_and_shapes(self, tmp_path):
        path = save_weights(nn.Linear(3, 2), tmp_path / "w.safetensors")
        with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: weight: checkpoint \(2, 3\)"):
            load_model_weights(nn.Linear(4, 2), path)
        with pytest.raises(
            CheckpointMismatchError, match=r"missing keys: 0.bias, 0.weight; unexpected keys: bias, weight"
        ):
            load_model_weights(nn.Sequential(nn.Linear(3, 2)), path)

    def test_non_finite_values_are_refused(self, tmp_path):
        state = nn.Linear(3, 2).state_dict()
        state["bias"][0] = float("nan")
        path = save_weights(state, tmp_path / "w.safetensors")
        model = nn.Linear(3, 2)
        before = model.bias.detach().clone()
        with pytest.raises(CheckpointMismatchError, match="NaN or infinite"):
            load_model_weights(model, path)
        assert torch.equal(model.bias, before)

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            load_model_weights(nn.Linear(3, 2), tmp_path / "none.safetensors")


class TestCheckResume:
    def test_same_settings_pass(self):
        check_resume("run", {"seed": 0, "world": {"size": (1, 2)}}, {"seed": 0, "world": {"size": [1, 2]}})

    def test_every_difference_is_listed(self):
        with pytest.raises(ResumeMismatchError) as err:
            check_resume(
                "run",
                {"seed": 0, "world": {"seed": 1}, "tiny": True},
                {"seed": 2, "world": {"seed": 3}},
                hint="choose another --out",
            )
        assert err.value.differences == [("seed", 0, 2), ("world.seed", 1, 3), ("tiny", True, None)]
        assert "choose another --out" in str(err.value)

    def test_recorded_only(self):
        check_resume("run", {"seed": 0}, {"seed": 0, "epochs": 3}, recorded_only=True)
        with pytest.raises(ResumeMismatchError):
            check_resume("run", {"seed": 0}, {"seed": 0, "epochs": 3})


class TestGuarded:
    def test_status_passes_through(self):
        assert guarded(lambda: 3) == 3

    def test_user_error_is_one_line(self):
        lines = []

        def fail():
            raise ValueError("bad value\ndetails")

        assert guarded(fail, report=lines.append) == EXIT_USER_ERROR
        assert lines == ["error: bad value"]

    def test_logged_with_the_details(self, caplog):
        def fail():
            raise FileNotFoundError("no such thing")

        with caplog.at_level(logging.ERROR):
            assert guarded(fail) == EXIT_USER_ERROR
        assert "no such thing" in caplog.text and not any(r.exc_info for r in caplog.records)

    def test_interrupt(self):
        lines = []

        def stop():
            raise KeyboardInterrupt

        assert guarded(stop, interrupted="run it again", report=lines.append) == EXIT_INTERRUPTED
        assert lines == ["interrupted: run it again"]

    def test_a_bug_keeps_its_traceback(self):
        def bug():
            raise KeyError("x")

        with pytest.raises(KeyError):
            guarded(bug)

    def test_unsafe_pickle_is_marked(self):
        assert user_error_message(UnsafeCheckpointError("x.pt", ["os.system"])).startswith(
            "unsafe checkpoint refused (not unpickled): refusing to load 'x.pt'"
        )
        assert user_error_message(pickle.UnpicklingError()) == (
            "unsafe checkpoint refused (not unpickled): UnpicklingError"
        )
