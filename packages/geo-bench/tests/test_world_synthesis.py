"""End to end on the synthetic world: a short CPU run of the ``toker21`` recipe (geo-synthesis) makes
the satellite-to-street synthesis measurably better on held-out pairs from a disjoint region.

This is the synthetic-world half of geo-synthesis's acceptance test (its own suite uses toy pairs,
because geo-synthesis must not depend on geo-bench).
"""

import pytest
import torch
from torch.utils.data import default_collate

pytest.importorskip("geo_synthesis")

from geo_bench.leaderboard.data import WorldConfig, load_world
from geo_retrieval.recipes import build, get_recipe
from geo_retrieval.training import Trainer
from geo_synthesis.metrics import ssim
from geo_synthesis.recipes import Toker21Config

SIZE = (32, 128)


pytestmark = pytest.mark.one_thread


def test_toker21_synthesis_improves_on_held_out_world_pairs(tmp_path):
    world = WorldConfig(n_train=48, n_test=16, ground_size=SIZE, aerial_size=64, district_m=500.0, seed=1)
    train, test = load_world(world, tmp_path / "cache")
    base = get_recipe("toker21", "small")
    recipe = base.replace(
        ground_size=SIZE,
        aerial_size=SIZE,
        backbone_kwargs={"channels": (16, 32, 64, 128), "layers": (1, 1, 1, 1), "stem_width": 16},
        toker=Toker21Config(gen_base=8, n_res=1, disc_base=8),
        batch_size=8,
        epochs=6,
        optimizer=base.optimizer.__class__("adam", lr=1e-3, betas=(0.5, 0.999)),
    )
    torch.manual_seed(0)
    trainer = Trainer(build(recipe), recipe, train, None, out_dir=tmp_path / "run", seed=0, progress=False)

    def synthesis_scores() -> tuple[float, float]:
        # held-out pairs from the test region: scores only, never used for selection
        batch = default_collate([test[i] for i in range(len(test))])
        batch = trainer.transform(batch, None, train=False)
        trainer.raw_model.eval()
        with torch.no_grad():
            fake = trainer.raw_model.synthesise(batch["aerial"])
        trainer.raw_model.train()
        l1 = float((fake - batch["ground"]).abs().mean())
        s = float(ssim((fake + 1) / 2, (batch["ground"] + 1) / 2).mean())
        return l1, s

    l1_0, ssim_0 = synthesis_scores()
    trainer.fit()
    l1_1, ssim_1 = synthesis_scores()
    print(f"held-out world pairs: L1 {l1_0:.3f} -> {l1_1:.3f}, SSIM {ssim_0:.3f} -> {ssim_1:.3f}")
    assert l1_1 < 0.8 * l1_0
    assert ssim_1 > ssim_0 + 0.05
