"""Limited-FoV training (Augmentation.fov_mode): "fixed" unchanged, "random" and "curriculum" windows
in the full panorama frame with the normalisation mean as fill, seeded draws, exact resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from geo_retrieval.config import OptimizerConfig, ScheduleConfig
from geo_retrieval.testing import ScaledInfoNCE, TinyCrossView, assert_same_run, tiny_pairs, tiny_recipe
from geo_retrieval.training import Augmentation, BatchTransform, Trainer
from geo_retrieval.training.augment import _Draws, _resize
from geo_transforms import crop_fov, polar_transform

# tiny models: OpenMP threads only add contention on a shared 2-core machine
pytestmark = pytest.mark.one_thread

W = 64
FULL_AUG = dict(
    hflip_p=0.5,
    rot90_p=0.5,
    pano_shift_deg=90.0,
    color_jitter=0.3,
    color_jitter_p=0.5,
    blur_p=0.5,
    dropout_p=0.5,
    dropout_holes=(1, 3),
)


def _batch(b: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "ground": torch.rand(b, 3, 16, W, generator=g),
        "aerial": torch.rand(b, 3, 32, 32, generator=g),
        "id": [str(i) for i in range(b)],
    }


def _transform(**aug) -> BatchTransform:
    return BatchTransform(
        ground_size=(16, W),
        aerial_size=(16, W),
        polar=True,
        polar_center="pixel",
        augmentation=Augmentation(**aug),
    )


def _old_call(t: BatchTransform, batch: dict, generator: torch.Generator, train: bool) -> dict:
    """A copy of BatchTransform.__call__ as it was before fov_mode existed (the training and
    evaluation path, single process), built from the same unchanged pieces."""
    ground, aerial = batch["ground"].float(), batch["aerial"].float()
    aug = t.augmentation
    draws = _Draws(generator, ground.shape[0], 0, None)
    if train and (aug.hflip_p > 0 or aug.rot90_p > 0):
        aerial, ground = t._joint(aerial, ground, draws)
    ground = _resize(ground, t.ground_size)
    if train and aug.pano_shift_deg > 0:
        shifts = (draws.rand() * aug.pano_shift_deg / 360.0 * ground.shape[-1]).long().tolist()
        ground = torch.stack([g.roll(-s, dims=-1) for g, s in zip(ground, shifts)])
    if t.fov < 360:
        ground = crop_fov(ground, t.fov)
    if t.polar and aerial.shape[-1] == aerial.shape[-2]:
        aerial = polar_transform(aerial, t.aerial_size, center=t.polar_center)
    else:
        aerial = _resize(aerial, t.aerial_size)
    if train:
        ground = t._photometric(ground, draws)
        aerial = t._photometric(aerial, draws)
    mean = torch.tensor(t.normalisation.mean).view(1, 3, 1, 1)
    std = torch.tensor(t.normalisation.std).view(1, 3, 1, 1)
    out = dict(batch)
    out["ground"] = ((ground - mean) / std).contiguous()
    out["aerial"] = ((aerial - mean) / std).contiguous()
    return out


def _expected_draws(seed: int, b: int, lower: float) -> tuple[list[int], list[int]]:
    """Window widths and shifts of a transform whose only augmentation is the FoV (first draws)."""
    g = torch.Generator().manual_seed(seed)
    fov = 360.0 - (360.0 - lower) * torch.rand(b, generator=g).double()
    shifts = torch.randint(0, W, (b,), generator=g)
    return [int(f / 360 * W) for f in fov.tolist()], shifts.tolist()


def _zero_tail(x: torch.Tensor) -> int:
    """Number of trailing columns of a (C, H, W) sample that are exactly 0 in every channel and row."""
    zero = (x == 0).flatten(0, 1).all(0)
    n = 0
    while n < zero.numel() and bool(zero[-1 - n]):
        n += 1
    return n


class TestFixedUnchanged:
    @pytest.mark.parametrize("fov", [360.0, 180.0])
    def test_bit_identical_to_the_old_path(self, fov):
        batch = _batch()
        for fields in ({}, {"fov_min_deg": 90.0, "fov_curriculum_end": 0.8}):
            t = BatchTransform(
                ground_size=(16, W),
                aerial_size=(16, W),
                polar=True,
                polar_center="pixel",
                fov=fov,
                augmentation=Augmentation(**FULL_AUG, **fields),
            )
            assert t.augmentation.fov_mode == "fixed"
            for train in (True, False):
                new = t(batch, torch.Generator().manual_seed(11), train=train, progress=0.3)
                old = _old_call(t, batch, torch.Generator().manual_seed(11), train=train)
                assert torch.equal(new["ground"], old["ground"]) and torch.equal(new["aerial"], old["aerial"])

    def test_existing_recipes_stay_fixed(self):
        from geo_retrieval.recipes import get_recipe, list_recipes

        for name in list_recipes():
            for variant in ("full", "small"):
                try:
                    recipe = get_recipe(name, variant)
                except ValueError:
                    continue
                assert recipe.augmentation.fov_mode == "fixed", (name, variant)


class TestRandomFoV:
    def test_masks_the_drawn_columns_with_the_mean(self):
        batch = _batch(8)
        t = _transform(fov_mode="random")
        out = t(batch, torch.Generator().manual_seed(3), train=True)
        plain = t(batch, None, train=False)  # no other augmentation: the same pixels before the window
        widths, shifts = _expected_draws(3, 8, lower=70.0)
        assert min(widths) >= int(70 / 360 * W) and max(widths) <= W
        for b in range(8):
            w, s = widths[b], shifts[b]
            # normalised values are exactly 0 outside the window (fill = the normalisation mean)
            assert torch.equal(out["ground"][b, :, :, w:], torch.zeros(3, 16, W - w))
            assert _zero_tail(out["ground"][b]) == W - w
            # the window: roll right by the drawn shift, keep the first w columns
            assert torch.equal(out["ground"][b, :, :, :w], plain["ground"][b].roll(s, dims=-1)[..., :w])
        assert torch.equal(out["aerial"], plain["aerial"])

    def test_draws_are_reproducible_and_come_last(self):
        batch = _batch(6)
        t = _transform(fov_mode="random", **FULL_AUG)
        fixed = _transform(**FULL_AUG)
        a = t(batch, torch.Generator().manual_seed(5), train=True)
        b = t(batch, torch.Generator().manual_seed(5), train=True)
        c = t(batch, torch.Generator().manual_seed(6), train=True)
        assert torch.equal(a["ground"], b["ground"]) and torch.equal(a["aerial"], b["aerial"])
        assert not torch.equal(a["ground"], c["ground"])
        # every other augmentation is drawn exactly as in "fixed" mode; the window is cut from it
        ref = fixed(batch, torch.Generator().manual_seed(5), train=True)
        assert torch.equal(a["aerial"], ref["aerial"])
        for i in range(6):
            w = W - _zero_tail(a["ground"][i])
            assert any(
                torch.equal(a["ground"][i, ..., :w], ref["ground"][i].roll(s, dims=-1)[..., :w])
                for s in range(W)
            ), i

    def test_rank_slices_draw_like_one_process(self):
        t = _transform(fov_mode="random", **FULL_AUG)
        batch = _batch(6)
        full = t(batch, torch.Generator().manual_seed(9), train=True)
        for rank in range(2):
            part = {k: v[3 * rank : 3 * rank + 3] for k, v in batch.items()}
            out = t(part, torch.Generator().manual_seed(9), train=True, offset=3 * rank, global_batch=6)
            for key in ("ground", "aerial"):
                torch.testing.assert_close(out[key], full[key][3 * rank : 3 * rank + 3], atol=1e-6, rtol=1e-6)

    def test_width_range(self):
        t = _transform(fov_mode="random", fov_min_deg=90.0)
        out = t(_batch(200, seed=1), torch.Generator().manual_seed(0), train=True)
        widths = [W - _zero_tail(x) for x in out["ground"]]
        assert min(widths) >= 16 and max(widths) <= W
        assert min(widths) < 24 and max(widths) > 56  # the whole range is drawn

    def test_evaluation_unchanged(self):
        batch = _batch()
        t, fixed = _transform(fov_mode="random", **FULL_AUG), _transform(**FULL_AUG)
        for noise in (False, True):
            a = t(batch, torch.Generator().manual_seed(2), train=False, orientation_noise=noise)
            b = fixed(batch, torch.Generator().manual_seed(2), train=False, orientation_noise=noise)
            assert torch.equal(a["ground"], b["ground"]) and torch.equal(a["aerial"], b["aerial"])


class TestCurriculum:
    def test_lower_bound_schedule(self):
        aug = Augmentation(fov_mode="curriculum")  # defaults: 360 -> 70 over the first half
        assert (aug.fov_curriculum_start, aug.fov_curriculum_end, aug.fov_min_deg) == (0.0, 0.5, 70.0)
        assert [aug.fov_lower_deg(p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)] == [360.0, 215.0, 70.0, 70.0, 70.0]
        aug = Augmentation(
            fov_mode="curriculum", fov_min_deg=90.0, fov_curriculum_start=0.2, fov_curriculum_end=0.6
        )
        lowers = [aug.fov_lower_deg(p) for p in (0.0, 0.2, 0.4, 0.6, 1.0)]
        assert lowers == pytest.approx([360.0, 360.0, 225.0, 90.0, 90.0], abs=1e-9)
        assert aug.fov_lower_deg(-1.0) == 360.0 and aug.fov_lower_deg(2.0) == 90.0
        assert Augmentation(fov_mode="random").fov_lower_deg(0.0) == 70.0
        assert Augmentation().fov_lower_deg() == 360.0
        with pytest.raises(ValueError, match="needs the training progress"):
            Augmentation(fov_mode="curriculum").fov_lower_deg(None)

    def test_transform_follows_progress(self):
        batch = _batch(50, seed=2)
        t = _transform(fov_mode="curriculum")
        plain = t(batch, None, train=False)
        start = t(batch, torch.Generator().manual_seed(1), train=True, progress=0.0)
        assert not torch.equal(start["ground"], plain["ground"])  # rolled (unknown heading) ...
        assert all(_zero_tail(x) == 0 for x in start["ground"])  # ... but nothing masked at 360 degrees
        for progress, lower in ((0.25, 215.0), (0.5, 70.0), (1.0, 70.0)):
            out = t(batch, torch.Generator().manual_seed(1), train=True, progress=progress)
            widths = [W - _zero_tail(x) for x in out["ground"]]
            assert widths == _expected_draws(1, 50, lower)[0]
            assert min(widths) >= int(lower / 360 * W)
        with pytest.raises(ValueError, match="needs the training progress"):
            t(batch, torch.Generator().manual_seed(1), train=True)


class TestValidation:
    def test_limited_fov_recipe_refused(self):
        with pytest.raises(ValueError, match=r"fov_mode='random' needs fov=360.*got fov=180"):
            tiny_recipe(fov=180.0, augmentation=Augmentation(fov_mode="random"))
        with pytest.raises(ValueError, match=r"fov_mode='curriculum' needs fov=360"):
            tiny_recipe(augmentation=Augmentation(fov_mode="curriculum")).replace(fov=90.0)
        with pytest.raises(ValueError, match=r"fov_mode='random' needs fov=360"):
            BatchTransform(
                ground_size=(16, W),
                aerial_size=(16, W),
                fov=90.0,
                augmentation=Augmentation(fov_mode="random"),
            )
        assert tiny_recipe(fov=180.0).augmentation.fov_mode == "fixed"  # fixed-FoV recipes as before
        assert tiny_recipe(augmentation=Augmentation(fov_mode="curriculum")).fov == 360.0

    def test_bad_fields(self):
        with pytest.raises(ValueError, match="fov_mode must be one of"):
            Augmentation(fov_mode="schedule")
        with pytest.raises(ValueError, match=r"fov_min_deg must be in \(0, 360\]"):
            Augmentation(fov_mode="random", fov_min_deg=0.0)
        with pytest.raises(ValueError, match="0 <= start < end <= 1"):
            Augmentation(fov_mode="curriculum", fov_curriculum_start=0.5, fov_curriculum_end=0.5)
        with pytest.raises(ValueError, match=r"fov_min_deg=70\.0 keeps no column"):
            BatchTransform(
                ground_size=(4, 4), aerial_size=(4, 4), augmentation=Augmentation(fov_mode="random")
            )
        assert dataclasses.replace(Augmentation(), fov_mode="random").enabled
        assert not Augmentation().enabled


# -- the trainer: progress is passed, and resume stays bit-exact ---------------------------------------

RECIPE = tiny_recipe(
    optimizer=OptimizerConfig("adamw", lr=3e-3, weight_decay=0.01),
    schedule=ScheduleConfig("cosine", warmup_steps=3),
    epochs=3,
    augmentation=Augmentation(
        hflip_p=0.5,
        rot90_p=0.5,
        color_jitter=0.2,
        color_jitter_p=0.5,
        fov_mode="curriculum",
        fov_curriculum_end=0.6,
    ),
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
    seen: list[tuple[float, int]] = []
    original = trainer.transform

    def recording(batch, generator=None, train=False, **kwargs):
        out = original(batch, generator, train, **kwargs)
        if train:
            masked = sum(_zero_tail(x) for x in out["ground"])
            seen.append((kwargs["progress"], masked))
        return out

    trainer.transform = recording
    result = trainer.fit()
    trainer.transform = original
    return trainer, result, seen


def test_trainer_passes_progress(reference):
    trainer, result, seen = reference
    assert result.finished and result.global_step == 12 == trainer.epochs * trainer.steps_per_epoch
    assert [p for p, _ in seen] == [step / 12 for step in range(12)]
    assert seen[0][1] == 0  # progress 0: the full 360-degree panorama
    assert sum(m for _, m in seen[6:]) > 0  # from 0.5 on: narrow windows, masked columns


def test_resume_with_curriculum_is_bit_exact(data, tmp_path, reference):
    ref_trainer, ref_result, _ = reference
    first = make(tmp_path, data, max_steps=5).fit()
    assert not first.finished and first.global_step == 5
    resumed = make(tmp_path, data, model_seed=123, resume=True)
    assert (resumed.epoch, resumed.batch_in_epoch, resumed.global_step) == (1, 1, 5)
    assert_same_run(resumed, resumed.fit(), (ref_trainer, ref_result))
