"""SMDT through geo-retrieval's Trainer on seeded toy pairs: learning, checkpoint and exact resume."""

import math

import pytest
import torch

from geo_retrieval.config import ScheduleConfig
from geo_retrieval.recipes import build, get_recipe
from geo_retrieval.training import Trainer
from geo_synthesis.callbacks import SynthesisGridCallback
from geo_synthesis.metrics import ssim
from geo_synthesis.smdt import CascadeConfig, SMDTConfig
from geo_synthesis.testing import SMDTToyPairs
from geo_transforms import MixedParams

# on shared CPUs two spinning OpenMP threads ran these small ops 50-250x slower than one thread
pytestmark = pytest.mark.one_thread


SIZE = (16, 64)
MIXED = MixedParams(meters_per_pixel=0.8)  # the full geometry scaled to a 32 px aerial


def tiny_recipe(epochs=1, gan_lr=1e-3, batch_size=8, width=8):
    cascade = CascadeConfig(
        num_classes=6,
        gan_size=SIZE,
        mixed=MIXED,
        ngf=width,
        num_downs=2,
        n_blocks=1,
        max_channels=4 * width,
        ndf=width,
        d_layers=2,
        d_scales=1,
    )
    cfg = SMDTConfig(
        cascade=cascade,
        retrieval_ground_size=SIZE,
        retrieval_aerial_size=SIZE,
        gan_lr=gan_lr,
        segmenter_width=4,
        segmenter_depth=1,
    )
    return get_recipe("smdt", "small").replace(
        ground_size=SIZE,
        aerial_size=(32, 32),
        batch_size=batch_size,
        epochs=epochs,
        schedule=ScheduleConfig("constant"),
        smdt=cfg,
        # the thresholds below were measured in float32 over 6 initialisation seeds; the registered
        # small recipe's bf16 autocast is covered by test_small_recipe_trains_on_toy_pairs
        amp=False,
    )


def toy(n, seed, split="train"):
    return SMDTToyPairs(n, aerial_size=32, ground_size=SIZE, params=MIXED, seed=seed, split=split)


def synthesis_scores(model, data):
    """Held-out L1 / SSIM of I_g' against the panorama, and segmentation accuracy, in eval mode."""
    samples = [data[i] for i in range(len(data))]
    ground = torch.stack([s["ground"] for s in samples])
    aerial = torch.stack([s["aerial"] for s in samples]) * 2 - 1
    labels = model.config.grouping(torch.stack([s["ground_seg"] for s in samples]))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.cascade.synthesise(aerial)
    model.train(was_training)
    fake = (out.image + 1) / 2
    return {
        "l1": float((fake - ground).abs().mean()),
        "ssim": float(ssim(fake, ground).mean()),
        "seg_acc": float((out.seg_prob.argmax(1) == labels).float().mean()),
    }


def test_toy_pairs_are_seeded_and_consistent():
    a, b = toy(3, seed=4), toy(3, seed=4)
    s, t = a[1], b[1]
    assert torch.equal(s["ground"], t["ground"]) and torch.equal(s["aerial"], t["aerial"])
    assert s["ground"].shape == (3, *SIZE) and s["aerial"].shape == (3, 32, 32)
    assert s["ground_seg"].shape == SIZE and s["ground_seg"].dtype == torch.long
    assert (s["ground_seg"][:5] == 0).all()  # sky on top
    assert not torch.equal(toy(3, seed=5)[1]["aerial"], s["aerial"])


def test_short_training_improves_synthesis_and_retrieval_runs(tmp_path):
    train, val = toy(48, seed=0), toy(16, seed=1, split="val")
    recipe = tiny_recipe(epochs=3)
    torch.manual_seed(0)
    model = build(recipe)
    before = synthesis_scores(model, val)
    trainer = Trainer(model, recipe, train, val, out_dir=tmp_path, seed=0, device="cpu", progress=False)
    result = trainer.fit()
    after = synthesis_scores(model, val)
    assert result.global_step == 18
    # held-out synthesis: clearly better than untrained. Measured over 6 initialisation seeds after
    # these 18 steps: L1 0.29-0.30 -> 0.15-0.17, SSIM 0.03-0.04 -> 0.40-0.44, segmentation accuracy
    # +0.10 to +0.45 (0.21 -> 0.32 for seed 0, the smallest gain)
    assert after["l1"] < 0.7 * before["l1"], (before, after)
    assert after["ssim"] > before["ssim"] + 0.15, (before, after)
    assert after["seg_acc"] > before["seg_acc"] + 0.07, (before, after)
    # SynthesisGridCallback draws SMDT's synthesised panoramas
    grid = SynthesisGridCallback(1, tmp_path / "grids", val, num_samples=2).write(trainer, result.global_step)
    assert grid.exists() and grid.stat().st_size > 0
    # retrieval ran every step and was evaluated through encode_ground / encode_aerial
    last = result.history[-1]
    assert math.isfinite(last["train/loss_retrieval"]) and "val/R@1" in last
    assert 0 <= last["val/R@1"] <= 100


def test_checkpoint_and_exact_resume(tmp_path):
    train, val = toy(8, seed=0), toy(4, seed=1, split="val")
    recipe = tiny_recipe(epochs=2, batch_size=4, width=4)

    def fresh():
        torch.manual_seed(0)
        return build(recipe)

    full = Trainer(fresh(), recipe, train, val, out_dir=tmp_path / "a", seed=3, device="cpu", progress=False)
    full.fit()
    first = Trainer(
        fresh(), recipe, train, val, out_dir=tmp_path / "b", seed=3, device="cpu", progress=False, max_steps=3
    )
    first.fit()
    assert first.global_step == 3
    resumed = Trainer(
        fresh(), recipe, train, val, out_dir=tmp_path / "b", seed=3, device="cpu", progress=False, resume=True
    )
    assert resumed.global_step == 3 and resumed.epoch == 1  # mid-epoch 1 (2 steps per epoch)
    resumed.fit()
    a, b = full.raw_model.state_dict(), resumed.raw_model.state_dict()
    assert a.keys() == b.keys()
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, mismatched[:5]
    for name in ("generators", "discriminators", "retrieval"):
        sa, sb = full.optimizers[name].state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert [h["train/loss"] for h in full.history] == [h["train/loss"] for h in resumed.history]


@pytest.mark.slow
def test_small_recipe_trains_on_toy_pairs(tmp_path):
    """The registered ``small`` recipe as is (32x128, 64 px aerial), 4 epochs on toy pairs."""
    recipe = get_recipe("smdt", "small").replace(epochs=4)
    train = SMDTToyPairs(128, seed=0)
    val = SMDTToyPairs(32, seed=1, split="val")
    torch.manual_seed(0)
    model = build(recipe)
    before = synthesis_scores(model, val)
    Trainer(model, recipe, train, val, out_dir=tmp_path, seed=0, device="cpu", progress=False).fit()
    after = synthesis_scores(model, val)
    print(f"smdt small, 32 steps on toy pairs: before {before}, after {after}")  # shown with -s
    assert after["l1"] < 0.8 * before["l1"] and after["ssim"] > before["ssim"], (before, after)
