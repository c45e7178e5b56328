"""Training through geo-retrieval's Trainer: exact resume, grids callback, CLI sample, learning."""

import torch
from PIL import Image

from geo_retrieval.recipes import build, get_recipe
from geo_retrieval.testing import SyntheticPairs
from geo_retrieval.training import Trainer
from geo_synthesis.callbacks import SynthesisGridCallback
from geo_synthesis.cli import main as cli_main
from geo_synthesis.metrics import ssim
from geo_synthesis.recipes import Toker21Config

SIZE = (32, 64)


def tiny_recipe(**changes):
    r = get_recipe("toker21", "small")
    return r.replace(
        ground_size=SIZE,
        aerial_size=SIZE,
        backbone_kwargs={"channels": (16, 32, 64, 128), "layers": (1, 1, 1, 1), "stem_width": 16},
        toker=Toker21Config(gen_base=8, n_res=1, disc_base=8),
        batch_size=8,
        **changes,
    )


def pairs(n, seed, split="train", offset=0):
    return SyntheticPairs(
        n,
        aerial_size=48,
        ground_size=SIZE,
        seed=seed,
        split=split,
        id_offset=offset,
        noise=0.01,
        sky_fraction=0.0,
    )


def _fit(recipe, train, out, **kw):
    torch.manual_seed(0)
    model = build(recipe)
    trainer = Trainer(model, recipe, train, None, out_dir=out, seed=3, progress=False, **kw)
    trainer.fit()
    return trainer


def test_exact_resume_and_grid_callback(tmp_path):
    recipe = tiny_recipe(epochs=2, optimizer=get_recipe("toker21", "small").optimizer)
    train = pairs(16, seed=0)
    full = _fit(recipe, train, tmp_path / "full")
    grids = SynthesisGridCallback(2, tmp_path / "grids", train, num_samples=3)
    _fit(recipe, train, tmp_path / "split", max_steps=3, callbacks=[grids])
    resumed = _fit(recipe, train, tmp_path / "split", resume=True, callbacks=[grids])
    assert resumed.global_step == full.global_step == 4
    a, b = full.raw_model.state_dict(), resumed.raw_model.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    for name in ("G", "D", "R"):
        sa, sb = full.optimizers[name].state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    # the callback wrote grids at steps 2 and 4 (3 rows: aerial | synthesised | real) without disturbing the run
    assert [p.name for p in grids.written] == ["step_0000002.png", "step_0000004.png"]
    with Image.open(grids.written[0]) as im:
        assert im.size == (3 * SIZE[1] + 4 * 2, 12 + 2 + 3 * SIZE[0] + 4 * 2)

    # geo-synthesis sample on image files (square aerials: polar-transformed by the recipe's preprocessing)
    files = []
    for i in range(3):
        a, g = tmp_path / f"a{i}.png", tmp_path / f"g{i}.png"
        Image.fromarray((train.aerial[i].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(a)
        Image.fromarray((train.ground[i].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(g)
        files.append((a, g))
    out = tmp_path / "grid.png"
    rc = cli_main(
        [
            "sample",
            "--checkpoint",
            str(tmp_path / "split" / "last"),
            "--aerial",
            *[str(a) for a, _ in files],
            "--ground",
            *[str(g) for _, g in files],
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (3 * SIZE[1] + 4 * 2, 12 + 2 + 3 * SIZE[0] + 4 * 2)
    assert (
        cli_main(
            [
                "sample",
                "--checkpoint",
                str(tmp_path / "nope"),
                "--aerial",
                str(files[0][0]),
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_learns_synthesis_and_retrieval(tmp_path):
    torch.manual_seed(0)
    recipe = tiny_recipe(
        epochs=8,
        loss_kwargs={"alpha": 10.0, "schedule": [(0, None)]},
        optimizer=get_recipe("toker21", "small").optimizer.__class__("adam", lr=1e-3, betas=(0.5, 0.999)),
    )
    train, val = pairs(32, seed=0), pairs(24, seed=1, split="val", offset=1000)
    model = build(recipe)
    trainer = Trainer(model, recipe, train, val, out_dir=tmp_path / "run", seed=0, progress=False)

    def synthesis_scores():
        batch = trainer.transform({"ground": val.ground, "aerial": val.aerial}, None, train=False)
        trainer.raw_model.eval()
        with torch.no_grad():
            fake = trainer.raw_model.synthesise(batch["aerial"])
        trainer.raw_model.train()
        l1 = float((fake - batch["ground"]).abs().mean())
        s = float(ssim((fake + 1) / 2, (batch["ground"] + 1) / 2).mean())
        return l1, s

    l1_0, ssim_0 = synthesis_scores()
    result = trainer.fit()
    l1_1, ssim_1 = synthesis_scores()
    metrics = trainer.evaluate()
    print(f"L1 {l1_0:.3f} -> {l1_1:.3f}, SSIM {ssim_0:.3f} -> {ssim_1:.3f}, val {metrics}")
    assert l1_1 < 0.8 * l1_0
    assert ssim_1 > ssim_0 + 0.05
    # 24 held-out pairs: chance R@5 = 5/24 = 20.8 %
    assert metrics["R@5"] > 40.0 and metrics["R@1"] > 100 / 24
    assert result.best_metric is not None
