import contextlib

import pytest
import torch

from geo_retrieval.recipes import build, get_recipe
from geo_synthesis.smdt import (
    CascadeConfig,
    SemanticAugment,
    SMDTConfig,
    SMDTModel,
    SMDTRecipe,
    scale_gradient,
)
from geo_transforms import MixedParams

# on shared CPUs two spinning OpenMP threads ran these small ops 50-250x slower than one thread
pytestmark = pytest.mark.one_thread


SIZE = (16, 64)


def tiny_recipe(**smdt_changes) -> SMDTRecipe:
    cascade = CascadeConfig(
        num_classes=6,
        gan_size=SIZE,
        mixed=MixedParams(meters_per_pixel=0.8),
        ngf=4,
        num_downs=2,
        n_blocks=1,
        max_channels=16,
        ndf=4,
        d_layers=2,
        d_scales=1,
    )
    cfg = SMDTConfig(
        cascade=cascade,
        retrieval_ground_size=SIZE,
        retrieval_aerial_size=SIZE,
        segmenter_width=4,
        segmenter_depth=1,
    )
    cfg = SMDTConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, **smdt_changes})
    return get_recipe("smdt", "small").replace(ground_size=SIZE, aerial_size=(32, 32), batch_size=4, smdt=cfg)


def make_model(seed=0, **smdt_changes) -> tuple[SMDTModel, SMDTRecipe]:
    recipe = tiny_recipe(**smdt_changes)
    torch.manual_seed(seed)
    return build(recipe), recipe


def make_batch(b=4, seed=0, seg=True):
    gen = torch.Generator().manual_seed(seed)
    out = {
        "ground": torch.rand(b, 3, *SIZE, generator=gen) * 2 - 1,
        "aerial": torch.rand(b, 3, 32, 32, generator=gen) * 2 - 1,
    }
    if seg:
        out["ground_seg"] = torch.randint(0, 9, (b, 8, 32), generator=gen)  # world classes, low-res
    return out


class StubTrainer:
    """The parts of geo_retrieval's Trainer a custom training_step uses; records steps and grads."""

    def __init__(self, model, recipe, epoch=0):
        self.optimizers = model.configure_optimizers(recipe)
        self.epoch, self.seed, self.global_step = epoch, 0, 0
        self.steps, self.grads = [], {}

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def optimizer_step(self, name):
        opt = self.optimizers[name]
        params = [p for g in opt.param_groups for p in g["params"]]
        self.grads[name] = [None if p.grad is None else p.grad.clone() for p in params]
        self.steps.append(name)
        opt.step()
        opt.zero_grad(set_to_none=True)


def _grad_sum(grads):
    return float(sum(g.abs().sum() for g in grads if g is not None))


class TestSMDTModel:
    def test_encoders_and_similarity(self):
        model, recipe = make_model()
        model.eval()
        b = make_batch()
        g, a = model(b["ground"], b["aerial"])
        assert g.shape == a.shape == (4, recipe.head_kwargs["dim"])
        torch.testing.assert_close(g.norm(dim=1), torch.ones(4))
        assert model.similarity(g, a).shape == (4, 4)
        with torch.no_grad():
            expected = model.encode_synthesised(model.cascade(b["aerial"]))
            torch.testing.assert_close(model.encode_aerial(b["aerial"]), expected)
        assert model.cascade.mixed_params.meters_per_pixel == 0.8

    def test_configure_optimizers_partition(self):
        model, recipe = make_model()
        opts = model.configure_optimizers(recipe)
        assert set(opts) == {"generators", "discriminators", "retrieval"}
        ids = {k: {id(p) for g in o.param_groups for p in g["params"]} for k, o in opts.items()}
        assert not (ids["generators"] & ids["discriminators"]) and not (ids["generators"] & ids["retrieval"])
        everything = {id(p) for n, p in model.named_parameters() if not n.startswith("segmenter.")}
        assert ids["generators"] | ids["discriminators"] | ids["retrieval"] == everything
        for name in ("generators", "discriminators"):
            group = opts[name].param_groups[0]
            assert isinstance(opts[name], torch.optim.Adam)
            assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)
        assert opts["retrieval"].param_groups[0]["lr"] == recipe.optimizer.lr

    def test_training_step_order_and_updates(self):
        model, recipe = make_model()
        trainer = StubTrainer(model, recipe)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        logs = model.training_step(make_batch(), trainer)
        assert trainer.steps == ["discriminators", "generators", "retrieval"]
        assert {"loss", "loss_d", "loss_g", "l1_image", "l1_seg", "loss_retrieval"} <= set(logs)
        after = model.state_dict()
        for prefix in ("cascade.g1.", "cascade.g2.", "cascade.d1.", "cascade.d2.", "retrieval."):
            assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix
        assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("segmenter."))

    def test_retrieval_is_detached_from_the_gan_by_default(self):
        batch = make_batch()
        grads = {}
        for name, changes in {
            "detached": {},
            "no_retrieval": {"retrieval_start_epoch": 1},
            "flow": {"retrieval_grad_to_gan": True},
        }.items():
            model, recipe = make_model(**changes)
            trainer = StubTrainer(model, recipe)
            torch.manual_seed(1)
            model.training_step(batch, trainer)
            grads[name] = trainer.grads["generators"]
        for a, b in zip(grads["detached"], grads["no_retrieval"]):
            torch.testing.assert_close(a, b)
        diff = sum(float((a - b).abs().sum()) for a, b in zip(grads["flow"], grads["detached"]))
        assert diff > 0

    def test_retrieval_gradient_weight(self):
        x = torch.ones(3, requires_grad=True)
        scale_gradient(x, 0.25).sum().backward()
        torch.testing.assert_close(x.grad, torch.full((3,), 0.25))

    def test_gan_epochs_and_retrieval_start(self):
        model, recipe = make_model(gan_epochs=1)
        trainer = StubTrainer(model, recipe, epoch=1)
        g_before = [p.clone() for p in model.cascade.generator_parameters()]
        model.training_step(make_batch(), trainer)
        assert trainer.steps == ["retrieval"]
        assert all(torch.equal(a, b) for a, b in zip(g_before, model.cascade.generator_parameters()))
        model, recipe = make_model(retrieval_start_epoch=1)
        trainer = StubTrainer(model, recipe, epoch=0)
        logs = model.training_step(make_batch(), trainer)
        assert trainer.steps == ["discriminators", "generators"] and "loss_retrieval" not in logs

    def test_missing_labels_use_the_segmenter(self):
        model, recipe = make_model()
        batch = make_batch(seg=False)
        with pytest.raises(RuntimeError, match="ground_seg"):
            model.training_step(batch, StubTrainer(model, recipe))
        state = {k: v.clone() for k, v in model.segmenter.state_dict().items()}
        model.load_segmenter(state)
        assert bool(model.state_dict()["segmenter_ready"])
        labels = model.ground_labels(batch)
        assert torch.equal(labels, model.segmenter.predict(batch["ground"]))
        logs = model.training_step(batch, StubTrainer(model, recipe))
        assert torch.isfinite(logs["loss"])

    def test_labels_from_the_batch_are_grouped(self):
        model, _ = make_model()
        batch = make_batch()
        batch["ground_seg"] = torch.full((4, 8, 32), 7)  # tree -> vegetation
        assert (model.ground_labels(batch) == 2).all() and model.ground_labels(batch).shape == (4, *SIZE)

    def test_semantic_augmentation_reaches_the_ground_encoder(self):
        model, recipe = make_model(semantic_aug=SemanticAugment(p_remove_sky=1.0, remove_fill=-1.0))
        batch = make_batch()
        batch["ground_seg"] = torch.zeros(4, *SIZE, dtype=torch.long)
        batch["ground_seg"][:, SIZE[0] // 2 :] = 1  # sky on top, road below
        seen = []
        model.retrieval.ground_backbone.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
        model.training_step(batch, StubTrainer(model, recipe))
        x = seen[0]
        assert (x[:, :, : SIZE[0] // 2] == -1).all()
        torch.testing.assert_close(x[:, :, SIZE[0] // 2 :], batch["ground"][:, :, SIZE[0] // 2 :])

    def test_config_validation(self):
        with pytest.raises(ValueError, match="groups"):
            SMDTConfig(cascade=CascadeConfig(num_classes=4))
        with pytest.raises(ValueError):
            SMDTConfig(retrieval_grad_weight=-1.0)
