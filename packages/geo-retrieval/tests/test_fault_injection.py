"""Faults injected into training runs: a kill between or during checkpoint writes, a resume with
other settings, a collapsed model at selection time and non-finite weights.

Kills are real: a forked child trains and ``os._exit``s at the chosen point, so nothing is cleaned
up, exactly as after ``kill -9`` or a power cut. Runs use the tiny model and recipe of
``test_resume.py`` (4 steps per epoch, 3 epochs) and compare resumed runs with an uninterrupted
reference bit for bit.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from geo_retrieval.checkpoint import (
    InconsistentCheckpointError,
    load_trainer_state,
    load_weights,
    read_metadata,
    save_trainer_state,
    save_weights,
)
from geo_retrieval.config import OptimizerConfig, SamplingConfig, ScheduleConfig
from geo_retrieval.testing import ScaledInfoNCE, TinyCrossView, assert_same_run, tiny_pairs, tiny_recipe
from geo_retrieval.training import Augmentation, Trainer
from geo_retrieval.training import trainer as trainer_module
from geo_retrieval.training.trainer import ResumeMismatchError

# tiny models: OpenMP threads only add contention on a shared 2-core machine
pytestmark = pytest.mark.one_thread

RECIPE = tiny_recipe(
    optimizer=OptimizerConfig("adamw", lr=3e-3, weight_decay=0.01),
    schedule=ScheduleConfig("cosine", warmup_steps=3),
    epochs=3,
    augmentation=Augmentation(
        hflip_p=0.5, rot90_p=0.5, color_jitter=0.2, color_jitter_p=0.5, dropout_p=0.3, dropout_holes=(1, 3)
    ),
    sampling=SamplingConfig("similarity", n_near=2, n_far=2, neighbour_range=8, similarity_every=1),
)
KILLED = 17  # exit status of a forked child killed at the injection point
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills are simulated in a forked child")


@pytest.fixture(scope="module")
def data():
    return tiny_pairs()


def make(out_dir, data, model_seed=0, *, model=None, recipe=RECIPE, seed=7, **kwargs):
    torch.manual_seed(model_seed)
    train, val = data
    model = model if model is not None else TinyCrossView(dropout=0.2)
    return Trainer(model, recipe, train, val, out_dir=out_dir, seed=seed, loss=ScaledInfoNCE(), **kwargs)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    trainer = make(tmp_path_factory.mktemp("ref"), data)
    return trainer, trainer.fit()


def weights_step(directory: Path) -> int:
    return int(read_metadata(directory / "model.safetensors")["global_step"])


def state_step(directory: Path) -> int:
    return int(load_trainer_state(directory / "trainer_state.pt")["global_step"])


def run_killed_child(train) -> int:
    """Run ``train()`` in a forked child and return its exit status (``KILLED`` when an injected
    ``os._exit(KILLED)`` fired, 0 when training ended normally, 1 on an exception)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            train()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# ------------------------------------------------------------------------------------------------
# 1. weights and trainer state are committed together and checked at resume


def test_weights_newer_than_state_are_refused(data, tmp_path):
    # what a kill between the two writes of the old save_checkpoint left behind: last/ with the
    # weights of step 6 beside the trainer state of step 4
    make(tmp_path / "run", data, max_steps=4).fit()
    make(tmp_path / "later", data, max_steps=6).fit()
    last = tmp_path / "run" / "last"
    shutil.copyfile(tmp_path / "later" / "last" / "model.safetensors", last / "model.safetensors")
    with pytest.raises(InconsistentCheckpointError) as err:
        make(tmp_path / "run", data, resume=True)
    msg = str(err.value)
    assert "last/model.safetensors is from step 6" in msg and "last/trainer_state.pt from step 4" in msg
    assert "\n" not in msg


def test_weights_of_another_run_at_the_same_step_are_refused(data, tmp_path):
    make(tmp_path / "a", data, max_steps=4).fit()
    make(tmp_path / "b", data, model_seed=1, max_steps=4).fit()
    shutil.copyfile(
        tmp_path / "b" / "last" / "model.safetensors", tmp_path / "a" / "last" / "model.safetensors"
    )
    with pytest.raises(InconsistentCheckpointError, match="not written together"):
        make(tmp_path / "a", data, resume=True)


def test_weights_changed_after_the_save_are_refused(data, tmp_path):
    make(tmp_path, data, max_steps=4).fit()
    path = tmp_path / "last" / "model.safetensors"
    weights = load_weights(path)
    weights["g.0.bias"] = weights["g.0.bias"] + 1.0
    save_weights(weights, path, read_metadata(path))  # same step and checkpoint id, other bytes
    with pytest.raises(InconsistentCheckpointError, match="sha256"):
        make(tmp_path, data, resume=True)


def _strip_checkpoint_ids(last: Path) -> None:
    """Rewrite ``last/`` as the trainer wrote it before checkpoints carried an id."""
    path = last / "model.safetensors"
    meta = {k: v for k, v in read_metadata(path).items() if k != "checkpoint_id"}
    save_weights(load_weights(path), path, meta)
    state = load_trainer_state(last / "trainer_state.pt")
    for key in ("checkpoint_id", "weights_sha256", "run"):
        state.pop(key, None)
    save_trainer_state(state, last / "trainer_state.pt")


def test_checkpoint_without_id_still_resumes(data, tmp_path, reference):
    make(tmp_path, data, max_steps=5).fit()
    _strip_checkpoint_ids(tmp_path / "last")
    resumed = make(tmp_path, data, model_seed=3, resume=True)
    assert resumed.global_step == 5
    assert_same_run(resumed, resumed.fit(), reference)


def test_checkpoint_without_id_is_checked_by_step(data, tmp_path):
    make(tmp_path / "run", data, max_steps=4).fit()
    make(tmp_path / "later", data, max_steps=6).fit()
    shutil.copyfile(
        tmp_path / "later" / "last" / "model.safetensors", tmp_path / "run" / "last" / "model.safetensors"
    )
    _strip_checkpoint_ids(tmp_path / "run" / "last")
    with pytest.raises(InconsistentCheckpointError, match=r"from step 6 but .* from step 4"):
        make(tmp_path / "run", data, resume=True)


@needs_fork
def test_kill_between_the_two_writes_keeps_the_previous_pair(data, tmp_path, reference):
    real_save_state = trainer_module.save_trainer_state

    def train():
        def killed_at_step_6(state, path):
            if state["global_step"] == 6:  # the weights of step 6 are already written
                os._exit(KILLED)
            return real_save_state(state, path)

        trainer_module.save_trainer_state = killed_at_step_6
        make(tmp_path, data, checkpoint_every=2).fit()

    assert run_killed_child(train) == KILLED
    last = tmp_path / "last"
    assert weights_step(last) == state_step(last) == 4
    resumed = make(tmp_path, data, model_seed=5, resume=True)
    assert (resumed.epoch, resumed.batch_in_epoch, resumed.global_step) == (1, 0, 4)
    assert_same_run(resumed, resumed.fit(), reference)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("last")) == ["last"]


@needs_fork
@pytest.mark.parametrize("new_complete", [True, False], ids=["new-folder-complete", "new-folder-damaged"])
def test_kill_during_the_folder_switch_recovers(data, tmp_path, reference, caplog, new_complete):
    """The switch renames last/ away, then the new folder into place; a kill between the two leaves
    no last/ at all. Resume puts back the newest complete, consistent folder."""
    real_rename = os.rename

    def train():
        def killed_at_step_6(src, dst, *args, **kwargs):
            src, dst = Path(src), Path(dst)
            if dst.name == "last" and (src / "model.safetensors").is_file() and weights_step(src) == 6:
                os._exit(KILLED)
            return real_rename(src, dst, *args, **kwargs)

        os.rename = killed_at_step_6
        make(tmp_path, data, checkpoint_every=2).fit()

    assert run_killed_child(train) == KILLED
    assert not (tmp_path / "last").exists()
    pending = [p for p in tmp_path.iterdir() if p.name.startswith("last.tmp-")]
    assert len(pending) == 1 and weights_step(pending[0]) == 6
    if not new_complete:
        (pending[0] / "trainer_state.pt").unlink()
    resumed = make(tmp_path, data, model_seed=5, resume=True)
    assert resumed.global_step == (6 if new_complete else 4)
    assert "recovered" in caplog.text
    assert_same_run(resumed, resumed.fit(), reference)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("last")) == ["last"]


def test_best_folder_info_matches_its_weights(data, tmp_path):
    make(tmp_path, data, max_steps=8).fit()
    best = tmp_path / "best"
    info = json.loads((best / "info.json").read_text())
    meta = read_metadata(best / "model.safetensors")
    assert info["step"] == int(meta["global_step"]) and info["checkpoint_id"] == meta["checkpoint_id"]


# ------------------------------------------------------------------------------------------------
# 2. a resume must use the settings the run was started with


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"seed": 8}, ["seed: run has 7, now 8"]),
        ({"batch_size": 4}, ["batch_size: run has 8, now 4"]),
        ({"epochs": 4}, ["epochs: run has 3, now 4"]),
        ({"recipe": RECIPE.replace(variant="full")}, ["variant: run has small, now full"]),
        ({"recipe": RECIPE.replace(name="tiny2")}, ["recipe: run has tiny, now tiny2"]),
        (
            {"recipe": RECIPE.replace(optimizer=OptimizerConfig("adamw", lr=1e-3, weight_decay=0.01))},
            ["recipe settings: run has "],
        ),
        ({"seed": 9, "epochs": 5}, ["seed: run has 7, now 9", "epochs: run has 3, now 5"]),
    ],
    ids=["seed", "batch_size", "epochs", "variant", "recipe", "recipe-settings", "several"],
)
def test_resume_with_other_settings_is_refused(data, tmp_path, changes, expected):
    make(tmp_path, data, max_steps=3).fit()
    before = (tmp_path / "last" / "trainer_state.pt").read_bytes()
    with pytest.raises(ResumeMismatchError) as err:
        make(tmp_path, data, resume=True, **changes)
    msg = str(err.value)
    for line in expected:
        assert line in msg
    assert len(err.value.differences) == len(expected)
    assert "\n" not in msg
    assert (tmp_path / "last" / "trainer_state.pt").read_bytes() == before


def test_resume_with_another_max_steps_is_accepted(data, tmp_path):
    make(tmp_path, data, max_steps=3).fit()
    assert make(tmp_path, data, resume=True, max_steps=6).fit().global_step == 6


# ------------------------------------------------------------------------------------------------
# 3. selection counts ties against the query


class Collapsed(TinyCrossView):
    """Every descriptor is the same unit vector (a collapsed model)."""

    def encode_ground(self, x):
        return F.normalize(torch.ones(x.shape[0], 16, device=x.device), dim=-1)

    def encode_aerial(self, x):
        return F.normalize(torch.ones(x.shape[0], 16, device=x.device), dim=-1)


def test_collapsed_model_scores_zero_at_selection(data, tmp_path):
    trainer = make(tmp_path, data, model=Collapsed())
    metrics = trainer.evaluate()
    assert metrics["R@1"] == 0.0 and metrics["ties"] == "pessimistic"


def test_selection_metrics_record_the_tie_rule(data, tmp_path):
    result = make(tmp_path, data, model=Collapsed(), epochs=1).fit()
    assert result.history[0]["val/ties"] == "pessimistic"
    assert result.best_metric == 0.0


# ------------------------------------------------------------------------------------------------
# non-finite weights are never checkpointed


def _all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_weights(path).values())


@pytest.mark.parametrize(("nan_at", "max_steps"), [(8, None), (5, 5)], ids=["epoch-end", "max-steps"])
def test_non_finite_weights_are_not_saved(data, tmp_path, nan_at, max_steps):
    def poison(trainer, logs):
        if logs["step"] == nan_at:
            with torch.no_grad():
                trainer.raw_model.g[0].weight[0, 0, 0, 0] = float("nan")

    with pytest.raises(FloatingPointError, match="non-finite"):
        make(tmp_path, data, callbacks=[poison], max_steps=max_steps).fit()
    assert state_step(tmp_path / "last") == weights_step(tmp_path / "last") == 4
    assert _all_finite(tmp_path / "last" / "model.safetensors")
    assert _all_finite(tmp_path / "best" / "model.safetensors")
    assert json.loads((tmp_path / "best" / "info.json").read_text())["step"] <= 4
