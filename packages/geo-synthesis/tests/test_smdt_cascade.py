import pytest
import torch

from geo_synthesis.gan_losses import GANLoss
from geo_synthesis.smdt import (
    IGNORE_INDEX,
    CascadeConfig,
    SMDTCascade,
    SMDTSingleGenerator,
    UNetGenerator,
    one_hot_labels,
)
from geo_transforms import MixedParams, mixed_perspective_polar

# on shared CPUs two spinning OpenMP threads ran these small ops 50-250x slower than one thread
pytestmark = pytest.mark.one_thread


K = 4
SIZE = (16, 64)


def tiny_config(**changes):
    base = dict(
        num_classes=K,
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
    base.update(changes)
    return CascadeConfig(**base)


def batch(b=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    aerial = torch.rand(b, 3, 32, 32, generator=gen) * 2 - 1
    ground = torch.rand(b, 3, *SIZE, generator=gen) * 2 - 1
    labels = torch.randint(0, K, (b, *SIZE), generator=gen)
    return aerial, ground, labels


def grad_norm(params):
    grads = [p.grad for p in params if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


class TestGenerators:
    def test_unet_shapes(self):
        g = UNetGenerator(3, 5, ngf=4, num_downs=3, n_blocks=1, out_activation="tanh")
        y = g(torch.rand(2, 3, 16, 32))
        assert y.shape == (2, 5, 16, 32)
        assert y.abs().max() <= 1

    def test_unet_exceptions(self):
        g = UNetGenerator(3, 5, ngf=4, num_downs=3, n_blocks=1)
        with pytest.raises(ValueError, match="divisible"):
            g(torch.rand(1, 3, 12, 32))
        with pytest.raises(ValueError):
            g(torch.rand(1, 4, 16, 32))
        with pytest.raises(ValueError):
            UNetGenerator(3, 5, out_activation="sigmoid")
        with pytest.raises(ValueError):
            UNetGenerator(0, 5)

    def test_single_generator_outputs_image_and_logits(self):
        g = SMDTSingleGenerator(3, K, ngf=4, num_downs=2, n_blocks=1)
        image, logits = g(torch.rand(2, 3, *SIZE))
        assert image.shape == (2, 3, *SIZE) and logits.shape == (2, K, *SIZE)
        assert image.abs().max() <= 1
        assert g.unet.out_channels == 3 + K
        assert logits.abs().max() > 1 or logits.std() > 0  # raw logits, not squashed


class TestCascadeWiring:
    def test_mapping_is_recorded_mixed_perspective_polar(self):
        c = SMDTCascade(tiny_config())
        aerial, _, _ = batch()
        assert c.mixed_params == MixedParams(meters_per_pixel=0.8)
        expected = mixed_perspective_polar(aerial, SIZE, meters_per_pixel=0.8)
        torch.testing.assert_close(c.map_aerial(aerial), expected)

    def test_g2_consumes_g1_probabilities(self):
        c = SMDTCascade(tiny_config())
        seen = {}
        c.g2.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
        mapped = c.map_aerial(batch()[0])
        out = c.generate(mapped)
        torch.testing.assert_close(seen["x"], out.seg_prob)
        torch.testing.assert_close(out.seg_prob, out.seg_logits.softmax(1))
        assert out.seg_prob.shape == (2, K, *SIZE) and out.image.shape == (2, 3, *SIZE)

    def test_g2_seg_plus_aerial_sees_probabilities_and_the_mapped_aerial(self):
        c = SMDTCascade(tiny_config(g2_input="seg+aerial"))
        seen = {}
        c.g2.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
        mapped = c.map_aerial(batch()[0])
        out = c.generate(mapped)
        assert seen["x"].shape == (2, K + 3, *SIZE)
        torch.testing.assert_close(seen["x"][:, :K], out.seg_prob)
        torch.testing.assert_close(seen["x"][:, K:], mapped)
        # the synthesised image depends on the aerial beyond the segmentation: same P', other I_a
        with torch.no_grad():
            other = c.g2(torch.cat([out.seg_prob, mapped.flip(0)], dim=1))
        assert not torch.allclose(other, out.image)
        assert c.d2.in_channels == K + 3  # D2 still judges (P', image): conditioned on the segmentation
        with pytest.raises(ValueError, match="g2_input"):
            tiny_config(g2_input="aerial")

    @pytest.mark.parametrize("flow", [True, False])
    def test_image_loss_reaches_g1_only_when_enabled(self, flow):
        c = SMDTCascade(tiny_config(g2_grad_to_g1=flow))
        aerial, ground, _ = batch()
        out = c.synthesise(aerial)
        (out.image - ground).abs().mean().backward()
        assert grad_norm(c.g2.parameters()) > 0
        assert (grad_norm(c.g1.parameters()) > 0) is flow

    def test_discriminators_see_the_right_pairs(self):
        c = SMDTCascade(tiny_config())
        aerial, ground, labels = batch()
        calls = {"d1": [], "d2": []}
        c.d1.register_forward_hook(lambda m, inp, out: calls["d1"].append(inp))
        c.d2.register_forward_hook(lambda m, inp, out: calls["d2"].append(inp))
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        c.discriminator_loss(mapped, out, labels, ground)
        (real1, fake1), (real2, fake2) = calls["d1"], calls["d2"]
        # D1: (I_a, one-hot S_g) vs (I_a, S_g')
        assert torch.equal(real1[0], mapped) and torch.equal(fake1[0], mapped)
        assert torch.equal(real1[1], one_hot_labels(labels, K))
        assert torch.equal(fake1[1], out.seg_prob.detach())
        # D2: (S_g', I_g) vs (S_g', I_g')
        assert torch.equal(real2[0], out.seg_prob.detach()) and torch.equal(fake2[0], out.seg_prob.detach())
        assert torch.equal(real2[1], ground) and torch.equal(fake2[1], out.image.detach())
        assert c.d1.in_channels == 3 + K and c.d2.in_channels == K + 3

    def test_single_variant_conditions_on_aerial(self):
        c = SMDTCascade(tiny_config(architecture="single"))
        assert c.g1 is None and isinstance(c.generator, SMDTSingleGenerator)
        aerial, ground, labels = batch()
        calls = []
        c.d2.register_forward_hook(lambda m, inp, out: calls.append(inp))
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        c.discriminator_loss(mapped, out, labels, ground)
        assert all(torch.equal(inp[0], mapped) for inp in calls)
        assert c.d2.in_channels == 6
        loss, _ = c.generator_loss(mapped, out, labels, ground)
        loss.backward()
        assert grad_norm(c.generator.parameters()) > 0

    @pytest.mark.parametrize("architecture", ["cascade", "single"])
    def test_discriminator_loss_does_not_reach_generators(self, architecture):
        c = SMDTCascade(tiny_config(architecture=architecture))
        aerial, ground, labels = batch()
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        loss, logs = c.discriminator_loss(mapped, out, labels, ground)
        loss.backward()
        assert grad_norm(c.generator_parameters()) == 0.0
        assert grad_norm(c.discriminator_parameters()) > 0
        assert set(logs) == {"loss_d", "loss_d1", "loss_d2"}

    def test_generator_loss_with_frozen_discriminators(self):
        c = SMDTCascade(tiny_config())
        aerial, ground, labels = batch()
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        c.set_discriminators_trainable(False)
        loss, logs = c.generator_loss(mapped, out, labels, ground)
        loss.backward()
        c.set_discriminators_trainable(True)
        assert grad_norm(c.discriminator_parameters()) == 0.0
        assert grad_norm(c.g1.parameters()) > 0 and grad_norm(c.g2.parameters()) > 0
        expected = logs["loss_g_adv1"] + logs["loss_g_adv2"] + 100 * logs["l1_image"] + 100 * logs["l1_seg"]
        torch.testing.assert_close(logs["loss_g"], expected)
        assert all(p.requires_grad for p in c.discriminator_parameters())


class TestCascadeLosses:
    def test_explicit_real_label_reaches_the_loss(self):
        # PanoGAN passed 0.9 as target_is_real (a no-op); here the float target is used
        c = SMDTCascade(tiny_config(real_label=0.9))
        assert isinstance(c.gan_loss, GANLoss) and c.gan_loss.real_label == 0.9
        aerial, ground, labels = batch()
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        seen = []
        c.d1.register_forward_hook(lambda m, inp, o: seen.append(o))
        got = c.generator_loss(mapped, out, labels, ground)[1]["loss_g_adv1"]
        logits = seen[0]
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        expected = torch.stack([bce(x, torch.full_like(x, 0.9)) for x in logits]).mean()
        torch.testing.assert_close(got, expected.detach())
        assert not torch.allclose(expected, torch.stack([bce(x, torch.ones_like(x)) for x in logits]).mean())

    def test_seg_loss_l1_and_ce(self):
        aerial, ground, labels = batch()
        torch.manual_seed(0)
        c = SMDTCascade(tiny_config(seg_loss="l1"))
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        l1 = c.generator_loss(mapped, out, labels, ground)[1]["l1_seg"]
        expected = (out.seg_prob - one_hot_labels(labels, K)).abs().mean()
        torch.testing.assert_close(l1, expected.detach())
        c.config = tiny_config(seg_loss="ce")
        ce = c.generator_loss(mapped, out, labels, ground)[1]["ce_seg"]
        torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(out.seg_logits, labels).detach())

    def test_ignored_pixels_are_left_out(self):
        aerial, ground, labels = batch()
        c = SMDTCascade(tiny_config())
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        masked = labels.clone()
        masked[:, :8] = IGNORE_INDEX
        got = c.generator_loss(mapped, out, masked, ground)[1]["l1_seg"]
        expected = (out.seg_prob - one_hot_labels(labels, K)).abs().mean(1)[:, 8:].mean()
        torch.testing.assert_close(got, expected.detach())
        assert one_hot_labels(masked, K)[:, :, :8].abs().sum() == 0

    def test_shape_checks(self):
        c = SMDTCascade(tiny_config())
        aerial, ground, labels = batch()
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        with pytest.raises(ValueError, match="labels"):
            c.discriminator_loss(mapped, out, labels[:, :8], ground)
        with pytest.raises(ValueError, match="ground"):
            c.generator_loss(mapped, out, labels, ground[:, :, :8])
        with pytest.raises(ValueError, match="mapped"):
            c.generate(mapped[:, :, :8])

    def test_config_validation(self):
        with pytest.raises(ValueError, match="divisible"):
            tiny_config(gan_size=(18, 64))
        with pytest.raises(ValueError):
            tiny_config(architecture="triple")
        with pytest.raises(ValueError):
            tiny_config(seg_loss="dice")
        with pytest.raises(TypeError):
            tiny_config(mixed=MixedParams(near_fraction=torch.tensor(0.3)))


class TestStraightThroughD1:
    def test_d1_sees_one_hot_fakes_and_g1_still_gets_gradient(self):
        c = SMDTCascade(tiny_config(d1_fake_input="straight_through", lambda_image=0.0, lambda_seg=0.0))
        aerial, ground, labels = batch()
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        seen = []
        c.d1.register_forward_hook(lambda m, inp, o: seen.append(inp[1]))
        c.discriminator_loss(mapped, out, labels, ground)
        fake = seen[1]
        assert torch.equal(fake, one_hot_labels(out.seg_prob.argmax(1), K))
        c.set_discriminators_trainable(False)
        loss, _ = c.generator_loss(mapped, out, labels, ground)
        torch.testing.assert_close(seen[2], fake)  # one-hot in the forward pass of the G step too
        loss.backward()
        assert grad_norm(c.g1.parameters()) > 0  # through the adversarial terms only (lambdas 0)

    def test_default_feeds_probabilities(self):
        c = SMDTCascade(tiny_config())
        aerial, ground, labels = batch()
        mapped = c.map_aerial(aerial)
        out = c.generate(mapped)
        pairs = c.discriminator_inputs(mapped, out, labels, ground)
        torch.testing.assert_close(pairs["d1_fake"][1], out.seg_prob.detach())
        with pytest.raises(ValueError):
            tiny_config(d1_fake_input="gumbel")
