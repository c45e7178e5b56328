"""Trainer pieces: schedules, splits, augmentation, and the trainer on a tiny local model (recall: test_ranking)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geo_retrieval.config import GradClip, OptimizerConfig, SamplingConfig, ScheduleConfig
from geo_retrieval.testing import SyntheticPairs, TinyCrossView, tiny_recipe
from geo_retrieval.training import (
    Augmentation,
    BatchTransform,
    StopTraining,
    Trainer,
    WarmupCosine,
    build_optimizer,
    holdout_ids,
    joint_hflip,
    joint_rot90,
    piecewise_value,
    split_holdout,
)
from geo_transforms import polar_transform
from geo_transforms.testing import assert_close

# tiny models: OpenMP threads only add contention on a shared 2-core machine
pytestmark = pytest.mark.one_thread


def infonce(sim):
    labels = torch.arange(sim.shape[0])
    return 0.5 * (F.cross_entropy(10 * sim, labels) + F.cross_entropy(10 * sim.T, labels))


@pytest.fixture(scope="module")
def pairs():
    ds = SyntheticPairs(40, aerial_size=32, ground_size=(16, 64), seed=1)
    return split_holdout(ds, fraction=0.2, seed=0)


class TestSchedules:
    def test_warmup_then_cosine(self):
        f = WarmupCosine(warmup_steps=4, total_steps=14)
        assert f(0) == pytest.approx(0.2) and f(3) == pytest.approx(0.8) and f(4) == 1.0
        assert f(9) == pytest.approx(0.5) and f(14) == 0.0 and f(100) == 0.0
        assert WarmupCosine(warmup_steps=0, total_steps=10, kind="constant")(7) == 1.0

    def test_piecewise(self):
        assert piecewise_value(((0, 1.0), (3, 0.1)), 2) == 1.0
        assert piecewise_value(((0, 1.0), (3, 0.1)), 3) == 0.1
        with pytest.raises(ValueError, match="sorted"):
            piecewise_value(((1, 1.0),), 0)

    def test_exception(self):
        with pytest.raises(ValueError, match="kind"):
            WarmupCosine(warmup_steps=0, total_steps=1, kind="linear")


class TestSplits:
    def test_holdout_is_fixed_and_disjoint(self, pairs):
        train, val = pairs
        assert val.split == "train-holdout" and len(val) == 8 and len(train) == 32
        assert not set(train.ids) & set(val.ids)
        assert holdout_ids(train.ids + val.ids, 0.2, seed=0) == sorted(val.ids)

    def test_refuses_test_split(self):
        ds = SyntheticPairs(10, aerial_size=16, ground_size=(8, 32), split="test")
        with pytest.raises(ValueError, match="test"):
            split_holdout(ds)


class TestAugment:
    def test_rot90_roll_matches_polar(self):
        a = torch.rand(2, 3, 32, 32)
        pano = polar_transform(a, (16, 64), center="pixel")
        for k in (1, 2, 3):
            ra, rp = joint_rot90(a, pano, k)
            assert_close(polar_transform(ra, (16, 64), center="pixel"), rp, atol=1e-5, rtol=1e-5)

    def test_hflip_matches_polar(self):
        a = torch.rand(2, 3, 32, 32)
        pano = polar_transform(a, (16, 64), center="pixel")
        fa, fp = joint_hflip(a, pano)
        assert_close(polar_transform(fa, (16, 64), center="pixel"), fp, atol=1e-5, rtol=1e-5)

    def test_seeded_and_eval_deterministic(self):
        t = BatchTransform.from_recipe(tiny_recipe(fov=180.0))
        batch = {"ground": torch.rand(4, 3, 16, 64), "aerial": torch.rand(4, 3, 32, 32)}
        out1 = t(batch, torch.Generator().manual_seed(3), train=True)
        out2 = t(batch, torch.Generator().manual_seed(3), train=True)
        out3 = t(batch, torch.Generator().manual_seed(4), train=True)
        assert torch.equal(out1["ground"], out2["ground"]) and torch.equal(out1["aerial"], out2["aerial"])
        assert not torch.equal(out1["ground"], out3["ground"])
        assert out1["ground"].shape == (4, 3, 16, 32) and out1["aerial"].shape == (4, 3, 16, 64)
        e1, e2 = t(batch, None, train=False), t(batch, None, train=False)
        assert torch.equal(e1["ground"], e2["ground"])
        with pytest.raises(ValueError, match="Generator"):
            t(batch, None, train=True)

    def test_rank_slices_draw_like_one_process(self):
        aug = Augmentation(
            hflip_p=0.5,
            rot90_p=0.5,
            color_jitter=0.3,
            color_jitter_p=0.5,
            blur_p=0.5,
            dropout_p=0.5,
            dropout_holes=(1, 3),
            pano_shift_deg=90.0,
        )
        t = BatchTransform(ground_size=(16, 64), aerial_size=(16, 64), polar=True, augmentation=aug)
        batch = {"ground": torch.rand(6, 3, 16, 64), "aerial": torch.rand(6, 3, 32, 32)}
        full = t(batch, torch.Generator().manual_seed(5), train=True)
        for rank in range(2):
            part = {k: v[3 * rank : 3 * rank + 3] for k, v in batch.items()}
            out = t(part, torch.Generator().manual_seed(5), train=True, offset=3 * rank, global_batch=6)
            for key in ("ground", "aerial"):
                assert_close(out[key], full[key][3 * rank : 3 * rank + 3], atol=1e-6, rtol=1e-6)
        with pytest.raises(ValueError, match="global batch"):
            t(batch, torch.Generator(), train=True, offset=2, global_batch=6)

    def test_orientation_noise_at_evaluation(self):
        t = BatchTransform(
            ground_size=(8, 32),
            aerial_size=(8, 32),
            polar=True,
            augmentation=Augmentation(pano_shift_deg=360.0),
        )
        batch = {"ground": torch.rand(4, 3, 8, 32), "aerial": torch.rand(4, 3, 16, 16)}
        known = t(batch, None, train=False)
        a = t(batch, torch.Generator().manual_seed(1), train=False, orientation_noise=True)
        b = t(batch, torch.Generator().manual_seed(1), train=False, orientation_noise=True)
        assert torch.equal(a["ground"], b["ground"]) and not torch.equal(a["ground"], known["ground"])
        assert torch.equal(a["aerial"], known["aerial"])
        with pytest.raises(ValueError, match="Generator"):
            t(batch, None, train=False, orientation_noise=True)

    def test_normalisation_applied(self):
        t = BatchTransform(ground_size=(8, 32), aerial_size=(8, 8))
        out = t({"ground": torch.full((1, 3, 8, 32), 0.485), "aerial": torch.zeros(1, 3, 8, 8)})
        assert_close(out["ground"][:, 0], torch.zeros(1, 8, 32), atol=1e-6, rtol=0)


class TestTrainer:
    def test_refuses_test_split(self, pairs, tmp_path):
        train, _ = pairs
        assert train.utm.shape == (32, 2)  # IdSubset forwards the coordinate tables
        test_like = SyntheticPairs(10, aerial_size=32, ground_size=(16, 64), split="test")
        with pytest.raises(ValueError, match="test"):
            Trainer(TinyCrossView(), tiny_recipe(), train, test_like, out_dir=tmp_path, loss=infonce)
        _, val = pairs
        with pytest.raises(ValueError, match="test"):
            Trainer(
                TinyCrossView(), tiny_recipe(), train, val, out_dir=tmp_path, loss=infonce, val_split="test"
            )
        with pytest.raises(ValueError, match="held out"):
            Trainer(TinyCrossView(), tiny_recipe(), train, train, out_dir=tmp_path, loss=infonce)
        with pytest.raises(ValueError, match="test"):
            Trainer(TinyCrossView(), tiny_recipe(), test_like, out_dir=tmp_path, loss=infonce)
        trainer = Trainer(TinyCrossView(), tiny_recipe(), train, out_dir=tmp_path, loss=infonce)
        with pytest.raises(ValueError, match="test"):
            trainer.evaluate(test_like)

    def test_eval_start_skips_early_epochs(self, pairs, tmp_path):
        train, val = pairs

        def fitted(name, epochs, **kwargs):
            trainer = Trainer(
                TinyCrossView(),
                tiny_recipe(epochs=epochs),
                train,
                val,
                out_dir=tmp_path / name,
                loss=infonce,
                **kwargs,
            )
            trainer.fit()
            return trainer, [e["epoch"] for e in trainer.history if "val/R@1" in e]

        trainer, validated = fitted("start3", 5, eval_start=3)
        assert [e["epoch"] for e in trainer.history] == [0, 1, 2, 3, 4]
        assert validated == [3, 4] and trainer.best_epoch in (3, 4)
        # with eval_every the count starts at epoch 0; the last epoch is always validated
        assert fitted("every2", 5, eval_start=2, eval_every=2)[1] == [3, 4]
        # past the schedule: only the last epoch
        assert fitted("late", 2, eval_start=9)[1] == [1]
        with pytest.raises(ValueError, match="eval_start"):
            Trainer(
                TinyCrossView(),
                tiny_recipe(),
                train,
                val,
                out_dir=tmp_path / "bad",
                loss=infonce,
                eval_start=-1,
            )

    def test_loss_epoch_and_utm(self, pairs, tmp_path):
        train, _ = pairs

        class Recording(nn.Module):
            def __init__(self):
                super().__init__()
                self.epochs, self.utm_shapes = [], []

            def set_epoch(self, epoch):
                self.epochs.append(epoch)

            def forward(self, sim, utm=None):
                self.utm_shapes.append(None if utm is None else tuple(utm.shape))
                return infonce(sim)

        loss = Recording()
        Trainer(
            TinyCrossView(), tiny_recipe(epochs=3, geo_mask_m=25.0), train, out_dir=tmp_path, loss=loss
        ).fit()
        assert loss.epochs == [0, 1, 2]
        assert loss.utm_shapes == [(8, 2)] * 12
        # no geo mask in the recipe (L2LTR, Sample4Geo): the coordinates never reach the loss
        loss = Recording()
        Trainer(
            TinyCrossView(),
            tiny_recipe(epochs=1, geo_mask_m=None),
            train,
            out_dir=tmp_path / "nomask",
            loss=loss,
        ).fit()
        assert loss.utm_shapes == [None] * 4

    def test_geo_mask_radius_comes_from_the_recipe(self, pairs, tmp_path):
        train, _ = pairs
        recipe = tiny_recipe(loss="soft_margin_triplet", loss_kwargs={"alpha": 10.0}, geo_mask_m=40.0)
        assert Trainer(TinyCrossView(), recipe, train, out_dir=tmp_path).loss_fn.min_distance_m == 40.0
        # a loss that cannot take a geo mask is refused rather than silently trained without one
        with pytest.raises(ValueError, match="geo_mask_m"):
            Trainer(
                TinyCrossView(), tiny_recipe(loss="infonce", geo_mask_m=25.0), train, out_dir=tmp_path / "x"
            )

    def test_fit_checkpoints_and_records(self, pairs, tmp_path):
        train, val = pairs
        torch.manual_seed(0)
        trainer = Trainer(TinyCrossView(), tiny_recipe(), train, val, out_dir=tmp_path, seed=0, loss=infonce)
        res = trainer.fit()
        assert res.finished and res.global_step == 2 * (32 // 8) and res.epochs_completed == 2
        assert res.selection_split == "train-holdout" and res.best_metric is not None
        assert [h["epoch"] for h in res.history] == [0, 1] and all(
            math.isfinite(h["train/loss"]) for h in res.history
        )
        for f in (
            "last/model.safetensors",
            "last/trainer_state.pt",
            "best/model.safetensors",
            "best/info.json",
        ):
            assert (tmp_path / f).is_file(), f
        state = torch.load(tmp_path / "last/trainer_state.pt", map_location="cpu", weights_only=True)
        assert state["global_step"] == 8 and state["selection_split"] == "train-holdout"
        assert set(state["rng"]) >= {"torch", "numpy", "python"}
        assert json.loads((tmp_path / "best/info.json").read_text())["selection_split"] == "train-holdout"
        from geo_retrieval.checkpoint import read_metadata

        meta = read_metadata(tmp_path / "best/model.safetensors")
        assert (
            meta["recipe_hash"] == tiny_recipe().fingerprint() and meta["selection_split"] == "train-holdout"
        )
        # the lr followed warm-up + cosine per step: after 8 of 8 steps it is at the cosine floor
        assert trainer.optimizers["main"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    def test_lr_schedule_per_step(self, pairs, tmp_path):
        train, _ = pairs
        recipe = tiny_recipe(epochs=4, schedule=ScheduleConfig("cosine", warmup_steps=3))
        seen = []
        cb = lambda tr, logs: seen.append(tr.optimizers["main"].param_groups[0]["lr"])  # noqa: E731
        Trainer(
            TinyCrossView(), recipe, train, out_dir=tmp_path, loss=infonce, callbacks=[cb], max_steps=6
        ).fit()
        f = WarmupCosine(warmup_steps=3, total_steps=16)
        assert seen == pytest.approx([3e-3 * f(s) for s in range(1, 7)])

    @pytest.mark.parametrize("kind", ["norm", "value"])
    def test_grad_clip_bounds_the_update(self, pairs, tmp_path, kind):
        train, _ = pairs
        recipe = tiny_recipe(
            optimizer=OptimizerConfig("sgd", lr=1.0, betas=(0.0, 0.0)),
            schedule=ScheduleConfig("constant"),
            grad_clip=GradClip(kind, 1e-3),
            augmentation=Augmentation(),
        )
        model = TinyCrossView()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        Trainer(model, recipe, train, out_dir=tmp_path, loss=lambda s: 1e3 * infonce(s), max_steps=1).fit()
        delta = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
        if kind == "norm":
            assert float(delta.norm()) <= 1e-3 * (1 + 1e-4)
        else:
            assert float(delta.abs().max()) <= 1e-3 * (1 + 1e-4)
        assert float(delta.abs().max()) > 0

    def test_amp_bf16_and_channels_last(self, pairs, tmp_path):
        train, val = pairs
        tr = Trainer(
            TinyCrossView(),
            tiny_recipe(epochs=1),
            train,
            val,
            out_dir=tmp_path,
            loss=infonce,
            amp=True,
            channels_last=True,
        )
        assert tr.autocast_dtype == torch.bfloat16 and tr.scaler is None
        res = tr.fit()
        assert math.isfinite(res.history[0]["train/loss"])

    def test_fp16_grad_scaler_path(self, pairs, tmp_path):
        # the CUDA default (fp16 autocast + GradScaler, unscale before clipping), exercised on the CPU
        train, _ = pairs
        tr = Trainer(
            TinyCrossView(),
            tiny_recipe(epochs=1),
            train,
            out_dir=tmp_path,
            loss=infonce,
            amp=True,
            amp_dtype=torch.float16,
        )
        assert tr.scaler is not None and tr.autocast_dtype == torch.float16
        res = tr.fit()
        assert math.isfinite(res.history[0]["train/loss"])
        state = torch.load(tmp_path / "last/trainer_state.pt", weights_only=True)
        assert state["scaler"]["scale"] > 0

    def test_stop_callback_saves_last(self, pairs, tmp_path):
        train, _ = pairs

        def stop(tr, logs):
            if logs["step"] == 3:
                raise StopTraining

        res = Trainer(
            TinyCrossView(), tiny_recipe(), train, out_dir=tmp_path, loss=infonce, callbacks=[stop]
        ).fit()
        assert not res.finished and res.global_step == 3
        state = torch.load(tmp_path / "last/trainer_state.pt", weights_only=True)
        assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (0, 3, 3)

    def test_custom_optimizers_hook(self, pairs, tmp_path):
        train, _ = pairs

        class TwoOpt(TinyCrossView):
            calls = 0

            def configure_optimizers(self, recipe):
                return {
                    "ground": torch.optim.SGD(self.g.parameters(), lr=0.1),
                    "aerial": torch.optim.SGD(self.a.parameters(), lr=0.1),
                }

            def training_step(self, batch, trainer):
                TwoOpt.calls += 1
                g, a = self(batch["ground"], batch["aerial"])
                loss = infonce(self.similarity(g, a))
                trainer.backward(loss)
                trainer.optimizer_step("ground")
                trainer.optimizer_step("aerial")
                return {"loss": loss, "extra": 1.0}

        model = TwoOpt()
        before = [p.detach().clone() for p in model.parameters()]
        tr = Trainer(model, tiny_recipe(epochs=1), train, out_dir=tmp_path, max_steps=2)
        assert set(tr.optimizers) == {"ground", "aerial"} and set(tr.schedulers) == {"ground", "aerial"}
        res = tr.fit()
        assert TwoOpt.calls == 2 and res.global_step == 2
        assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.ndim > 1)
        state = torch.load(tmp_path / "last/trainer_state.pt", weights_only=True)
        assert set(state["optimizers"]) == {"ground", "aerial"}

    def test_staged_optimiser_keeps_its_schedule_without_warnings(self, pairs, tmp_path):
        """A custom step that skips an optimiser early on (staged training): every schedule still
        follows global_step, and torch's scheduler-order warning is not shown to the user."""
        import warnings

        train, _ = pairs

        class Staged(TinyCrossView):
            def configure_optimizers(self, recipe):
                return {
                    "ground": torch.optim.SGD(self.g.parameters(), lr=0.1),
                    "aerial": torch.optim.SGD(self.a.parameters(), lr=0.1),
                }

            def training_step(self, batch, trainer):
                g, a = self(batch["ground"], batch["aerial"])
                loss = infonce(self.similarity(g, a))
                trainer.backward(loss)
                trainer.optimizer_step("ground")
                if trainer.global_step >= 2:
                    trainer.optimizer_step("aerial")
                return {"loss": loss}

        tr = Trainer(Staged(), tiny_recipe(epochs=1), train, out_dir=tmp_path, max_steps=4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tr.fit()
        assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
        lrs = {k: opt.param_groups[0]["lr"] for k, opt in tr.optimizers.items()}
        assert lrs["ground"] == lrs["aerial"]

    def test_similarity_sampler_is_refreshed(self, pairs, tmp_path):
        train, val = pairs
        recipe = tiny_recipe(
            epochs=2,
            sampling=SamplingConfig("similarity", n_near=2, n_far=1, neighbour_range=6, similarity_every=1),
        )
        tr = Trainer(TinyCrossView(), recipe, train, val, out_dir=tmp_path, loss=infonce)
        gps_table = tr.batch_sampler.neighbours.copy()  # from the samples' utm
        tr.fit()
        assert tr.batch_sampler.neighbours.shape == (32, 6)
        assert not (tr.batch_sampler.neighbours == gps_table).all()


class TestBuildOptimizer:
    """``build_optimizer``: the recipe's optimiser, torch's default implementation."""

    @pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
    def test_adam_from_the_config(self, name, cls):
        a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
        config = OptimizerConfig(name, lr=1e-2, betas=(0.5, 0.99), weight_decay=0.05, eps=1e-6)
        opt = build_optimizer([{"params": [a]}, {"params": [b], "lr": 0.1}], config)
        assert type(opt) is cls
        assert opt.defaults["betas"] == (0.5, 0.99) and opt.defaults["eps"] == 1e-6
        assert opt.defaults["weight_decay"] == 0.05 and opt.param_groups[1]["lr"] == 0.1
        # the fused kernel changes the small recipes' trajectories: torch's default is kept
        assert not opt.defaults["fused"]

    def test_sgd_is_unchanged(self):
        p = nn.Parameter(torch.zeros(2))
        opt = build_optimizer([p], OptimizerConfig("sgd", lr=0.1, betas=(0.9, 0.999)))
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9

    @pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
    def test_an_iterator_of_parameters(self, name):
        # model.parameters() is a generator: read once, every optimiser gets all of them
        net = nn.Linear(3, 2)
        opt = build_optimizer(net.parameters(), OptimizerConfig(name))
        assert len(opt.param_groups[0]["params"]) == 2

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="unknown optimiser 'lion'"):
            build_optimizer([nn.Parameter(torch.zeros(1))], OptimizerConfig("lion"))
