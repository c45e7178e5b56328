"""Exact resume: an interrupted and resumed run equals an uninterrupted one bit for bit."""

import pytest
import torch

from geo_retrieval.config import OptimizerConfig, SamplingConfig, ScheduleConfig
from geo_retrieval.testing import ScaledInfoNCE, TinyCrossView, assert_same_run, tiny_pairs, tiny_recipe
from geo_retrieval.training import Augmentation, Trainer

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


@pytest.fixture(scope="module")
def data():
    return tiny_pairs()


def make(out_dir, data, model_seed=0, **kwargs):
    torch.manual_seed(model_seed)
    train, val = data
    return Trainer(
        TinyCrossView(dropout=0.2),
        RECIPE,
        train,
        val,
        out_dir=out_dir,
        seed=7,
        loss=ScaledInfoNCE(),
        **kwargs,
    )


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    trainer = make(tmp_path_factory.mktemp("ref"), data)
    result = trainer.fit()
    return trainer, result


def test_reference_run_learns_something(reference):
    _, result = reference
    assert result.finished and result.global_step == 12 and len(result.history) == 3
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]


def test_resume_after_max_steps_mid_epoch(data, tmp_path, reference):
    first = make(tmp_path, data, max_steps=5).fit()
    assert not first.finished and first.global_step == 5
    resumed = make(tmp_path, data, model_seed=123, resume=True)
    assert (resumed.epoch, resumed.batch_in_epoch, resumed.global_step) == (1, 1, 5)
    assert_same_run(resumed, resumed.fit(), reference)


def test_resume_after_keyboard_interrupt_at_epoch_end(data, tmp_path, reference):
    def interrupt(trainer, logs):
        if logs["step"] == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, data, callbacks=[interrupt]).fit()
    resumed = make(tmp_path, data, model_seed=99, resume=True)
    assert (resumed.epoch, resumed.batch_in_epoch, resumed.global_step) == (1, 4, 8)
    assert_same_run(resumed, resumed.fit(), reference)


def test_resume_twice_with_checkpoint_every(data, tmp_path, reference):
    make(tmp_path, data, max_steps=3, checkpoint_every=2).fit()
    make(tmp_path, data, resume=True, max_steps=10).fit()
    resumed = make(tmp_path, data, resume=True)
    assert_same_run(resumed, resumed.fit(), reference)


def test_resume_needs_a_checkpoint(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="trainer_state"):
        make(tmp_path, data, resume=True)
