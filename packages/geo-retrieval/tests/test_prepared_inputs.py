"""Samples prepared once (conversion, resize, polar transform) give the batches and the training
of samples prepared every step, bit for bit."""

import pytest
import torch
from torch.utils.data import default_collate

from geo_retrieval.config import OptimizerConfig, ScheduleConfig
from geo_retrieval.testing import ScaledInfoNCE, SyntheticPairs, TinyCrossView, tiny_pairs, tiny_recipe
from geo_retrieval.training import (
    PREPARED,
    Augmentation,
    BatchTransform,
    PreparedPairs,
    Trainer,
    prepared_size,
)

pytestmark = pytest.mark.one_thread

# every random step that may follow the prepared ones: panorama roll, FoV crop, photometric
NO_JOINT = Augmentation(
    pano_shift_deg=360.0,
    color_jitter=0.2,
    color_jitter_p=0.5,
    blur_p=0.3,
    dropout_p=0.3,
    dropout_holes=(1, 3),
)


def _batch(dataset, idx):
    return default_collate([dataset[i] for i in idx])


@pytest.mark.parametrize("polar", [True, False])
@pytest.mark.parametrize("fov", [360.0, 270.0])
def test_prepared_batches_transform_exactly_like_raw_ones(polar, fov):
    recipe = tiny_recipe(
        augmentation=NO_JOINT, polar=polar, fov=fov, aerial_size=(16, 64) if polar else (24, 24)
    )
    transform = BatchTransform.from_recipe(recipe)
    raw = SyntheticPairs(10, aerial_size=32, ground_size=(24, 96), seed=3)  # resized to 16x64 on the way
    prepared = PreparedPairs(raw, transform)
    idx = [7, 2, 5, 0, 9, 4]
    assert prepared[2]["ground"].shape == (3, 16, 64) and prepared[2][PREPARED] is True
    for seed in range(3):
        for train in (True, False):
            a = transform(
                _batch(raw, idx), torch.Generator().manual_seed(seed), train=train, orientation_noise=True
            )
            b = transform(
                _batch(prepared, idx),
                torch.Generator().manual_seed(seed),
                train=train,
                orientation_noise=True,
            )
            assert PREPARED not in b
            assert torch.equal(a["ground"], b["ground"]) and torch.equal(a["aerial"], b["aerial"])
            assert a["id"] == b["id"]
    # prepared once: a second read returns the stored tensors
    assert prepared[7]["aerial"] is prepared[7]["aerial"]
    assert len(prepared) == 10 and prepared.split == raw.split


def test_prepare_errors():
    joint = BatchTransform.from_recipe(tiny_recipe())  # flips and quarter turns come first
    raw = SyntheticPairs(4, aerial_size=32, ground_size=(16, 64), seed=0)
    with pytest.raises(ValueError, match="cannot be prepared once"):
        PreparedPairs(raw, joint)
    evaluation = PreparedPairs(raw, joint, training=False)  # evaluation never flips
    batch = _batch(evaluation, [0, 1])
    assert joint(batch, train=False)["ground"].shape == (2, 3, 16, 64)
    with pytest.raises(ValueError, match="joint flips"):
        joint(batch, torch.Generator().manual_seed(0), train=True)
    with pytest.raises(ValueError, match="prepared already"):
        joint.prepare(batch)
    plain = BatchTransform.from_recipe(tiny_recipe(augmentation=NO_JOINT))
    wrong = dict(batch, ground=batch["ground"][..., :32])
    with pytest.raises(ValueError, match="must hold ground"):
        plain(wrong, train=False)


def _fit(tmp_path, recipe, data, **kwargs):
    torch.manual_seed(0)
    train, val = data
    trainer = Trainer(
        TinyCrossView(dropout=0.2),
        recipe,
        train,
        val,
        out_dir=tmp_path,
        seed=7,
        loss=ScaledInfoNCE(),
        **kwargs,
    )
    return trainer, trainer.fit()


def test_training_on_prepared_samples_equals_training_on_raw_ones(tmp_path):
    recipe = tiny_recipe(
        optimizer=OptimizerConfig("adamw", lr=3e-3, weight_decay=0.01),
        schedule=ScheduleConfig("cosine", warmup_steps=3),
        epochs=3,
        augmentation=NO_JOINT,
    )
    data = tiny_pairs()
    prepared, result = _fit(tmp_path / "prepared", recipe, data)
    plain, reference = _fit(tmp_path / "plain", recipe, data, prepare_inputs_mb=0)
    assert isinstance(prepared._train_data, PreparedPairs) and isinstance(prepared._val_data, PreparedPairs)
    assert plain._train_data is data[0] and plain._val_data is data[1]
    a, b = prepared.raw_model.state_dict(), plain.raw_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert result.history == reference.history and result.best_epoch == reference.best_epoch
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]


def test_trainer_prepares_only_what_it_may(tmp_path):
    data = tiny_pairs()
    train, val = data
    flips = Trainer(TinyCrossView(), tiny_recipe(), train, val, out_dir=tmp_path / "a", loss=ScaledInfoNCE())
    assert flips._train_data is train and isinstance(flips._val_data, PreparedPairs)  # eval never flips
    need = prepared_size(flips.transform, len(train))
    assert need == len(train) * 3 * (16 * 64 + 16 * 64) * 4
    small = Trainer(
        TinyCrossView(),
        tiny_recipe(augmentation=NO_JOINT),
        train,
        val,
        out_dir=tmp_path / "b",
        loss=ScaledInfoNCE(),
        prepare_inputs_mb=need / 2**20 - 0.001,  # the training split does not fit, the smaller val does
    )
    assert small._train_data is train and isinstance(small._val_data, PreparedPairs)
    small.device = torch.device("cuda")  # on an accelerator the batch steps run there, as before
    assert small._prepared(val, training=False) is val
    with pytest.raises(ValueError, match="prepare_inputs_mb"):
        Trainer(TinyCrossView(), tiny_recipe(), train, val, out_dir=tmp_path / "c", prepare_inputs_mb=-1)
