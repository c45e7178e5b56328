"""SMDT's frozen-GAN image cache: the memo itself, and training with it equal to training without it."""

import dataclasses

import pytest
import torch

from geo_retrieval.recipes import build
from geo_retrieval.training import Trainer
from geo_synthesis.smdt.synthesis_cache import SynthesisCache

from .test_smdt_training import tiny_recipe, toy

pytestmark = pytest.mark.one_thread


def test_lookup_serves_a_batch_only_when_every_sample_matches():
    cache = SynthesisCache(max_bytes=1 << 20)
    inputs, images = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 4, 16)
    assert cache.lookup(["a", "b", "c"], inputs) is None  # empty
    cache.store(["a", "b", "c"], inputs, images)
    assert len(cache) == 3 and cache.nbytes == 3 * (3 * 64 + 3 * 64) * 4
    assert torch.equal(cache.lookup(["c", "a"], inputs[[2, 0]]), images[[2, 0]])
    assert cache.lookup(["c", "d"], inputs[[2, 0]]) is None  # an unseen id
    changed = inputs[[0]].clone()
    changed[0, 0, 0, 0] += 1e-6
    assert cache.lookup(["a"], changed) is None  # the same id with another input
    assert cache.lookup(["a"], inputs[[0]].double()) is None  # another dtype
    assert cache.lookup(None, inputs) is None and cache.lookup(["a", "b"], inputs) is None
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.lookup(["a"], inputs[[0]]) is None


def test_store_keeps_copies_and_respects_the_memory_bound():
    per_sample = (3 * 64 + 3 * 64) * 4
    cache = SynthesisCache(max_bytes=2 * per_sample)
    inputs, images = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 4, 16)
    cache.store(["a", "b", "c"], inputs, images)
    assert len(cache) == 2 and cache.nbytes == 2 * per_sample  # "c" did not fit
    images.zero_()  # the cache holds copies, not views of the batch
    assert cache.lookup(["a", "b"], inputs[:2]).abs().sum() > 0
    cache.store(["a"], inputs[:1], torch.ones(1, 3, 4, 16))  # replacing an entry fits in its own room
    assert cache.nbytes == 2 * per_sample and torch.equal(
        cache.lookup(["a"], inputs[:1]), torch.ones(1, 3, 4, 16)
    )
    disabled = SynthesisCache(0)
    disabled.store(["a"], inputs[:1], images[:1])
    assert len(disabled) == 0
    with pytest.raises(ValueError, match="one row per sample"):
        cache.store(["a", "b"], inputs, images)
    with pytest.raises(ValueError, match="max_bytes"):
        SynthesisCache(-1)


def _fit(recipe, train, out_dir, cache_mb):
    torch.manual_seed(0)
    model = build(recipe)
    model.synthesis_cache = SynthesisCache(int(cache_mb * 2**20))
    calls = []
    generate = model.cascade.generate

    def counting(*args, **kwargs):
        calls.append(1)
        return generate(*args, **kwargs)

    model.cascade.generate = counting
    trainer = Trainer(model, recipe, train, None, out_dir=out_dir, seed=1, device="cpu", progress=False)
    trainer.fit()
    return trainer, len(calls)


def test_frozen_gan_epochs_train_exactly_as_without_the_cache(tmp_path):
    """GANs trained in epoch 0 only: epoch 1 fills the cache, epochs 2-3 never run the cascade, and
    the weights, optimiser states and losses equal a run that synthesises every step (the batches
    are reshuffled every epoch, so a cached row was synthesised in another batch than it is used in)."""
    recipe = tiny_recipe(epochs=4, batch_size=4, width=4)
    recipe = recipe.replace(smdt=dataclasses.replace(recipe.smdt, gan_epochs=1))
    train = toy(12, seed=0)
    cached, cached_calls = _fit(recipe, train, tmp_path / "cached", cache_mb=64)
    plain, plain_calls = _fit(recipe, train, tmp_path / "plain", cache_mb=0)
    assert plain_calls == 12 and cached_calls == 6  # 3 steps per epoch; epochs 2 and 3 served from memory
    assert len(cached.raw_model.synthesis_cache) == 12
    a, b = cached.raw_model.state_dict(), plain.raw_model.state_dict()
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, mismatched[:5]
    sa, sb = (
        cached.optimizers["retrieval"].state_dict()["state"],
        plain.optimizers["retrieval"].state_dict()["state"],
    )
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert [h["train/loss"] for h in cached.history] == [h["train/loss"] for h in plain.history]
    # new weights make every stored image stale
    cached.raw_model.load_state_dict(plain.raw_model.state_dict())
    assert len(cached.raw_model.synthesis_cache) == 0


def test_gan_epochs_never_use_the_cache(tmp_path):
    recipe = tiny_recipe(epochs=2, batch_size=4, width=4)  # gan_epochs None: the GANs train every step
    _, calls = _fit(recipe, toy(8, seed=0), tmp_path, cache_mb=64)
    assert calls == 4
