import contextlib

import pytest
import torch
import torch.nn.functional as F

from geo_synthesis.layers import remove_spectral_norm_
from geo_synthesis.toker import Toker21Model, TokerDiscriminator, TokerGenerator, count_parameters
from geo_transforms.testing import BaseTester

TINY_BB = {"channels": (16, 32, 64, 128), "layers": (1, 1, 1, 1), "stem_width": 16}


def tiny_model(**kw) -> Toker21Model:
    torch.manual_seed(0)
    opts = {"image_size": (32, 64), "gen_base": 8, "n_res": 1, "disc_base": 8, "backbone_kwargs": TINY_BB}
    opts.update(kw)
    return Toker21Model(**opts)


class FakeTrainer:
    """The slice of geo_retrieval's Trainer that training_step uses, recording grads at each step."""

    def __init__(self, model: Toker21Model, recipe) -> None:
        self.optimizers = model.configure_optimizers(recipe)
        self.epoch = 0
        self.model = model
        self.grads_at_step: dict[str, dict[str, bool]] = {}

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def optimizer_step(self, name):
        m = self.model
        groups = {"G": [m.generator], "D": [m.discriminator], "R": [m.street, m.sa1, m.sa2]}
        self.grads_at_step[name] = {
            k: any(
                p.grad is not None and bool(p.grad.abs().sum() > 0) for mod in mods for p in mod.parameters()
            )
            for k, mods in groups.items()
        }
        opt = self.optimizers[name]
        opt.step()
        opt.zero_grad(set_to_none=True)


def _recipe(variant="full"):
    from geo_retrieval.recipes import get_recipe

    return get_recipe("toker21", variant)


def _batch(b=4, size=(32, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "ground": torch.rand(b, 3, *size, generator=g) * 2 - 1,
        "aerial": torch.rand(b, 3, *size, generator=g) * 2 - 1,
    }


class TestTokerGenerator(BaseTester):
    def test_paper_parameter_count(self):
        assert round(count_parameters(TokerGenerator()) / 1e6, 2) == 9.51
        assert round(count_parameters(TokerDiscriminator()) / 1e6, 2) == 2.79

    @pytest.mark.parametrize("size", [(16, 64), (32, 128), (40, 96), (24, 200)])
    def test_cardinality(self, size, device, dtype):
        g = TokerGenerator(base=8, n_res=2).to(device, dtype)
        fake, resb6 = g(torch.randn(2, 3, *size, device=device, dtype=dtype))
        assert fake.shape == (2, 3, *size) and fake.dtype == dtype
        assert resb6.shape == (2, 64, size[0] // 8, size[1] // 8)
        assert float(fake.abs().max()) <= 1.0

    def test_exception(self):
        g = TokerGenerator(base=8)
        with pytest.raises(ValueError, match="divisible by 8"):
            g(torch.zeros(1, 3, 30, 64))
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            g(torch.zeros(1, 4, 32, 64))
        with pytest.raises(ValueError):
            TokerGenerator(n_res=0)

    def test_spectral_norm_everywhere_but_last_conv(self):
        g = TokerGenerator(base=8, n_res=1)
        convs = {n: m for n, m in g.named_modules() if isinstance(m, torch.nn.Conv2d)}
        assert not hasattr(convs.pop("conv_end.0"), "parametrizations")
        assert convs and all(hasattr(m, "parametrizations") for m in convs.values())
        norms = [m for m in g.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
        assert norms and all(m.affine for m in norms)

    def test_toker_key_layout(self):
        g = remove_spectral_norm_(TokerGenerator(base=8))
        keys = set(g.state_dict())
        assert keys == set(TokerGenerator(base=8, spectral_norm=False).state_dict())
        for k in (
            "begin_conv.weight",
            "begini_e.weight",
            "conv1.conv_r1.conv2d.weight",
            "conv3.conv_l.conv2d.bias",
            "res6.in2.weight",
            "attention2.gamma",
            "attention2.theta.weight",
            "deconv3.norm_r1.weight",
            "in1_d.bias",
            "conv_end.0.weight",
        ):
            assert k in keys, k

    def test_attention_is_in_decoder_at_quarter_size(self):
        g = TokerGenerator(base=8)
        seen = []
        g.attention2.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
        g(torch.zeros(1, 3, 32, 64))
        assert seen == [(1, 64, 8, 16)]


class TestToker21Model(BaseTester):
    def test_paper_retrieval_size(self):
        m = Toker21Model()
        r = sum(count_parameters(x) for x in m.retrieval_modules)
        assert round(r / 1e6, 2) == 26.79
        assert m.sa1.flatten == "channel_major" and m.sa1.pool == "max" and m.sa1.num_heads == 8
        assert float(m.sa1.b1[0, 0]) == pytest.approx(0.1)
        assert float(m.sa1.w1.std()) == pytest.approx(0.005 * 0.88, rel=0.1)  # truncated at 2 std
        assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.street.modules())

    def test_descriptors(self):
        m = tiny_model().eval()
        b = _batch()
        g, a = m(b["ground"], b["aerial"])
        assert g.shape == a.shape == (4, 8 * 64)
        self.assert_close(g.norm(dim=1), torch.ones(4))
        sim = m.similarity(g, a)
        self.assert_close(sim, g @ a.T)

    def test_encode_aerial_skips_decoder(self):
        m = tiny_model().eval()
        calls = []
        m.generator.conv_end.register_forward_hook(lambda *a: calls.append(1))
        m.encode_aerial(_batch()["aerial"])
        assert not calls

    def test_street_channel_mismatch_is_refused(self):
        with pytest.raises(ValueError, match="same size"):
            tiny_model(gen_base=4)

    def test_loss_formulas(self):
        m = tiny_model(real_label=0.9)
        b = _batch()
        torch.manual_seed(1)
        out = m.losses(b["ground"], b["aerial"])
        self.assert_close(out["G"], out["G_gan"] + 100 * out["G_l1"] + 1000 * out["G_triplet"])
        m.eval()  # deterministic re-evaluation (no power iteration / BN update)
        fake, _ = m.generator(b["aerial"])
        self.assert_close(F.l1_loss(fake, b["ground"]), (fake - b["ground"]).abs().mean())
        w = tiny_model(gan_weight=0.5, l1_weight=10.0, triplet_weight=2.0).losses(b["ground"], b["aerial"])
        self.assert_close(w["G"], 0.5 * w["G_gan"] + 10 * w["G_l1"] + 2 * w["G_triplet"])

    def test_real_label_option_has_effect(self):
        b = _batch()
        d09 = tiny_model(real_label=0.9).eval().losses(b["ground"], b["aerial"])["D"]
        d10 = tiny_model(real_label=1.0).eval().losses(b["ground"], b["aerial"])["D"]
        assert abs(float(d09) - float(d10)) > 1e-4
        assert tiny_model(gan_kind="hinge", real_label=1.0).gan_loss.kind == "hinge"

    def test_triplet_alone_reaches_generator_encoder(self):
        m = tiny_model()
        b = _batch()
        out = m.losses(b["ground"], b["aerial"])
        (1000 * out["G_triplet"]).backward()
        enc = m.generator.conv1.conv_r1.conv2d.parametrizations.weight.original
        assert enc.grad is not None and float(enc.grad.abs().sum()) > 0
        assert m.generator.begin_conv.parametrizations.weight.original.grad.abs().sum() > 0
        # the decoder does not influence resb6
        dec = m.generator.conv_end[0].weight
        assert dec.grad is None or float(dec.grad.abs().sum()) == 0
        # the street branch is detached in the G terms
        assert all(p.grad is None for p in m.street.parameters())

    def test_d_and_r_losses_do_not_reach_generator(self):
        m = tiny_model()
        b = _batch()
        out = m.losses(b["ground"], b["aerial"])
        (out["D"] + out["R"]).backward()
        assert all(p.grad is None for p in m.generator.parameters())
        assert any(p.grad is not None for p in m.discriminator.parameters())
        assert any(p.grad is not None for p in m.street.parameters())
        assert m.sa1.w1.grad is not None and m.sa2.w1.grad is not None

    def test_configure_optimizers(self):
        m = tiny_model()
        opts = m.configure_optimizers(_recipe("full"))
        assert set(opts) == {"G", "D", "R"}
        seen = []
        for opt in opts.values():
            assert isinstance(opt, torch.optim.Adam)
            g = opt.param_groups[0]
            assert g["lr"] == 1e-4 and tuple(g["betas"]) == (0.5, 0.999) and g["weight_decay"] == 0
            seen += [id(p) for grp in opt.param_groups for p in grp["params"]]
        assert len(seen) == len(set(seen)) == len(list(m.parameters()))

    def test_training_step_order_and_isolation(self):
        m = tiny_model()
        trainer = FakeTrainer(m, _recipe("full"))
        street_calls, d_inputs = [], []
        m.street.register_forward_hook(lambda *a: street_calls.append(1))
        m.discriminator.register_forward_hook(lambda mod, i, o: d_inputs.append(i[1].requires_grad))
        b = _batch()
        before = {k: v.clone() for k, v in m.generator.state_dict().items()}
        logs = m.training_step(b, trainer)
        assert len(street_calls) == 1  # the street branch runs once per step
        assert d_inputs == [False, True]  # D step on detached fakes; G step through D
        assert list(trainer.grads_at_step) == ["D", "R", "G"]
        assert trainer.grads_at_step["D"] == {"G": False, "D": True, "R": False}
        assert trainer.grads_at_step["R"] == {"G": False, "D": False, "R": True}
        assert trainer.grads_at_step["G"] == {"G": True, "D": False, "R": False}
        assert all(p.requires_grad for p in m.parameters())  # unfrozen afterwards
        assert set(logs) == {"loss_D", "loss_R", "loss_G", "G_gan", "G_l1", "G_triplet"}
        after = m.generator.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)

    def test_training_step_sets_mining_epoch(self):
        m = tiny_model()
        trainer = FakeTrainer(m, _recipe("full"))
        trainer.epoch = 45
        m.training_step(_batch(), trainer)
        assert m.triplet.hard_negative_ratio == 0.05

    def test_synthesis_samples_limit_gan_and_l1_terms(self):
        """With synthesis_samples=n, D, the GAN and the L1 terms see the first n samples only (their
        values equal a step on that n-sample batch), while the triplets use the whole batch."""
        b = _batch(b=6)
        m_sub = tiny_model(synthesis_samples=2)
        m_full = tiny_model()
        m_full.load_state_dict(m_sub.state_dict())
        d_batches = []
        m_sub.discriminator.register_forward_hook(lambda mod, i, o: d_batches.append(i[0].shape[0]))
        logs = m_sub.training_step(b, FakeTrainer(m_sub, _recipe("full")))
        assert d_batches == [4, 2]  # real + fake of 2 samples in the D step, 2 fakes in the G step
        head = {k: v[:2] for k, v in b.items()}
        ref = m_full.training_step(head, FakeTrainer(m_full, _recipe("full")))
        for key in ("loss_D", "G_gan", "G_l1"):
            torch.testing.assert_close(logs[key], ref[key], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(logs["loss_R"], ref["loss_R"])  # the triplet saw all 6
        # losses() builds the same terms as the step: D / GAN / L1 of the first 2 samples
        m_sub.load_state_dict(m_full.state_dict())  # both at the weights after one full step
        head_losses, sub_losses = (
            m_full.losses(head["ground"], head["aerial"]),
            m_sub.losses(b["ground"], b["aerial"]),
        )
        for key in ("D", "G_gan", "G_l1"):
            torch.testing.assert_close(sub_losses[key], head_losses[key], rtol=1e-5, atol=1e-6)

    def test_synthesis_samples_none_is_the_paper_step(self):
        m_none, m_big = tiny_model(), tiny_model(synthesis_samples=99)  # n >= B: every sample
        m_big.load_state_dict(m_none.state_dict())
        a = m_none.training_step(_batch(), FakeTrainer(m_none, _recipe("full")))
        c = m_big.training_step(_batch(), FakeTrainer(m_big, _recipe("full")))
        for key in a:
            torch.testing.assert_close(a[key], c[key], rtol=0, atol=0)
        with pytest.raises(ValueError, match="synthesis_samples"):
            tiny_model(synthesis_samples=0)

    def test_training_step_shape_check(self):
        m = tiny_model()
        b = _batch()
        b["aerial"] = torch.zeros(4, 3, 32, 128)
        with pytest.raises(ValueError, match="must match"):
            m.training_step(b, FakeTrainer(m, _recipe("full")))


class TestRecipes:
    def test_full_recipe(self):
        r = _recipe("full")
        assert r.ground_size == r.aerial_size == (112, 616) and r.polar and r.batch_size == 32
        assert r.epochs == 200 and r.optimizer.lr == 1e-4 and r.optimizer.betas == (0.5, 0.999)
        assert r.loss_kwargs["schedule"] == [(0, None), (21, 0.1), (41, 0.05), (61, 0.01)]
        assert (
            r.augmentation.hflip_p == 0.5
            and r.augmentation.rot90_p == 0
            and r.augmentation.color_jitter_p == 0
        )
        assert r.normalisation.name == "minus_one_one"
        assert r.toker.real_label == 0.9 and r.toker.l1_weight == 100 and r.toker.triplet_weight == 1000

    def test_small_builds(self):
        from geo_retrieval.recipes import build, get_recipe

        r = get_recipe("toker21", "small")
        assert "CPU" in r.note
        m = build(r)
        assert isinstance(m, Toker21Model) and m.image_size == tuple(r.ground_size)
        assert m.synthesis_samples == r.toker.synthesis_samples == 2  # 2 of the batch's 16 (issue 15)
        assert get_recipe("toker21", "full").toker.synthesis_samples is None  # the paper: all
        with torch.no_grad():
            g, a = m.eval()(torch.zeros(2, 3, *r.ground_size), torch.zeros(2, 3, *r.aerial_size))
        assert g.shape == a.shape

    def test_builder_validation(self):
        from geo_retrieval.recipes import build

        r = _recipe("small")
        with pytest.raises(ValueError, match="ground_size == aerial_size"):
            build(r.replace(aerial_size=(64, 256)))
        with pytest.raises(ValueError, match="polar"):
            build(r.replace(polar=False))

    def test_entry_point_registered(self):
        from importlib.metadata import entry_points

        names = [ep.value for ep in entry_points(group="geo_retrieval.recipes")]
        assert "geo_synthesis.recipes:register_all" in names


class TestToker21GeoMask:
    """Toker's CVACT training masks negatives closer than 25 m in both the R and the G triplet."""

    def _batch(self):
        g = torch.Generator().manual_seed(1)
        ground = torch.rand(4, 3, 32, 64, generator=g) * 2 - 1
        aerial = torch.rand(4, 3, 32, 64, generator=g) * 2 - 1
        # samples 0 and 1 stand 10 m apart, the others far away
        utm = torch.tensor([[0.0, 0.0], [10.0, 0.0], [500.0, 0.0], [0.0, 900.0]], dtype=torch.float64)
        return ground, aerial, utm

    def test_recipe_sets_25_m(self):
        from geo_retrieval.recipes import get_recipe

        assert get_recipe("toker21", "full").geo_mask_m == 25.0
        assert get_recipe("toker21", "small").geo_mask_m == 25.0

    def test_mask_changes_r_and_g_triplet_terms(self):
        ground, aerial, utm = self._batch()
        # eval mode: no BatchNorm statistics or spectral-norm power iteration change between the calls
        masked = tiny_model(geo_mask_m=25.0).eval()
        plain = tiny_model().eval()
        with torch.no_grad():
            a = masked.losses(ground, aerial, utm)
            b = masked.losses(ground, aerial)  # no coordinates: no mask
            c = plain.losses(ground, aerial, utm)  # no radius: coordinates ignored
        assert not torch.allclose(a["R"], b["R"]) and not torch.allclose(a["G_triplet"], b["G_triplet"])
        torch.testing.assert_close(b["R"], c["R"])
        torch.testing.assert_close(b["G_triplet"], c["G_triplet"])

    def test_training_step_passes_utm_to_both_triplets(self, monkeypatch):
        ground, aerial, utm = self._batch()
        model = tiny_model(geo_mask_m=25.0)
        seen = []
        original = model.triplet.forward

        def spy(similarity, utm=None):
            seen.append(utm)
            return original(similarity, utm=utm)

        monkeypatch.setattr(model.triplet, "forward", spy)
        from geo_retrieval.recipes import get_recipe

        trainer = FakeTrainer(model, get_recipe("toker21", "small"))
        model.training_step({"ground": ground, "aerial": aerial, "utm": utm}, trainer)
        assert len(seen) == 2 and all(u is not None and torch.equal(u, utm) for u in seen)
