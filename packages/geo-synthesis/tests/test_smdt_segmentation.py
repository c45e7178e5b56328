import pytest
import torch

from geo_synthesis.smdt import (
    IGNORE_INDEX,
    SMDT_GROUPS,
    WORLD_CLASSES,
    ClassGrouping,
    SegmentationUNet,
    colour_to_labels,
    fit_segmentation,
    prepare_labels,
    segmentation_accuracy,
    world_grouping,
)

# on shared CPUs two spinning OpenMP threads ran these small ops 50-250x slower than one thread
pytestmark = pytest.mark.one_thread


class TestClassGrouping:
    def test_world_table(self):
        g = world_grouping()
        assert g.groups == SMDT_GROUPS
        expected = {
            "sky": "sky",
            "road": "road",
            "sidewalk": "road",
            "parking": "road",
            "grass": "vegetation",
            "tree": "vegetation",
            "building": "building",
            "car": "vehicle",
            "water": "other",
        }
        labels = torch.arange(len(WORLD_CLASSES))[None, None]
        grouped = g(labels)[0, 0].tolist()
        assert {c: SMDT_GROUPS[k] for c, k in zip(WORLD_CLASSES, grouped)} == expected

    def test_ignore_index_passes_through(self):
        g = world_grouping()
        out = g(torch.tensor([[IGNORE_INDEX, 8, 4]]))
        assert out.tolist() == [[IGNORE_INDEX, SMDT_GROUPS.index("vehicle"), SMDT_GROUPS.index("other")]]

    def test_custom_table(self):
        g = ClassGrouping(("a", "b", "c"), ("x", "y"), {"a": "y", "b": "x", "c": "y"})
        assert g(torch.tensor([0, 1, 2, 2])).tolist() == [1, 0, 1, 1]
        assert g.index("y") == 1
        assert g.to_dict()["mapping"] == {"a": "y", "b": "x", "c": "y"}

    def test_exceptions(self):
        with pytest.raises(ValueError, match="no group"):
            ClassGrouping(("a", "b"), ("x", "y"), {"a": "x"})
        with pytest.raises(ValueError, match="unknown groups"):
            ClassGrouping(("a",), ("x", "y"), {"a": "z"})
        with pytest.raises(ValueError, match="unknown source"):
            ClassGrouping(("a",), ("x", "y"), {"a": "x", "q": "y"})
        g = world_grouping()
        with pytest.raises(ValueError, match="labels must lie"):
            g(torch.tensor([9]))
        with pytest.raises(TypeError):
            g(torch.tensor([0.0]))
        with pytest.raises(ValueError, match="unknown group"):
            g.index("tree")


class TestColourToLabels:
    def test_nearest_palette_colour(self):
        palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
        pixels = [(10, 5, 0), (250, 3, 2), (5, 240, 9)]  # near black, red, green
        img = torch.tensor(pixels, dtype=torch.uint8).T.reshape(3, 1, 3)
        assert colour_to_labels(img, palette).tolist() == [[0, 1, 2]]
        # float [0, 1] input and a batch
        out = colour_to_labels(img[None].float() / 255, palette)
        assert out.shape == (1, 1, 3) and out.tolist() == [[[0, 1, 2]]]

    def test_exceptions(self):
        with pytest.raises(ValueError):
            colour_to_labels(torch.zeros(1, 4, 2, 2), [(0, 0, 0)])
        with pytest.raises(ValueError):
            colour_to_labels(torch.zeros(3, 2, 2), [(0, 0)])


class TestSegmentationUNet:
    def test_smoke_shapes(self):
        net = SegmentationUNet(6, width=4, depth=2)
        assert net(torch.rand(2, 3, 20, 36)).shape == (2, 6, 20, 36)  # odd pooled sizes too
        assert net.predict(torch.rand(2, 3, 16, 32)).shape == (2, 16, 32)

    def test_exceptions(self):
        with pytest.raises(ValueError):
            SegmentationUNet(1)
        with pytest.raises(ValueError, match="groups"):
            SegmentationUNet(5, grouping=world_grouping())
        with pytest.raises(ValueError):
            SegmentationUNet(6)(torch.rand(1, 1, 8, 8))

    def test_prepare_labels_resizes_nearest_and_groups(self):
        labels = torch.tensor([[[0, 7], [1, 8]]])
        out = prepare_labels(labels, (4, 4), world_grouping())
        assert out.shape == (1, 4, 4)
        assert out[0, :2, :2].unique().tolist() == [SMDT_GROUPS.index("sky")]
        assert out[0, 2:, 2:].unique().tolist() == [SMDT_GROUPS.index("vehicle")]

    def test_learns_planted_segmentation(self):
        # class = which of three planted colours a pixel has, with noise; labels in world classes
        gen = torch.Generator().manual_seed(0)
        n, h, w = 16, 16, 32
        world = torch.tensor([0, 1, 7])  # sky, road, tree
        which = (
            torch.randint(0, 3, (n, h // 4, w // 4), generator=gen)
            .repeat_interleave(4, 1)
            .repeat_interleave(4, 2)
        )
        colours = torch.tensor([[0.6, 0.8, 1.0], [0.3, 0.3, 0.3], [0.1, 0.5, 0.1]])
        images = colours[which].permute(0, 3, 1, 2) + 0.05 * torch.randn(n, 3, h, w, generator=gen)
        labels = world[which]
        torch.manual_seed(0)
        net = SegmentationUNet(6, width=8, depth=1, grouping=world_grouping())
        target = world_grouping()(labels)
        before = segmentation_accuracy(net.predict(images), target)
        losses = fit_segmentation(net, images, labels, steps=40, batch_size=8, lr=3e-3)
        after = segmentation_accuracy(net.predict(images), target)
        assert losses[-1] < 0.5 * losses[0]
        assert before < 0.6 and after > 0.9

    def test_training_step_needs_labels(self):
        net = SegmentationUNet(6, width=4, depth=1, grouping=world_grouping())
        batch = {"ground": torch.rand(2, 3, 8, 16), "ground_seg": torch.randint(0, 9, (2, 4, 8))}
        out = net.training_step(batch)
        assert out["loss"].ndim == 0 and out["loss"].requires_grad
        with pytest.raises(KeyError):
            net.training_step({"ground": batch["ground"]})


def test_trains_through_the_trainer(tmp_path):
    from geo_retrieval.recipes import get_recipe
    from geo_retrieval.training import Trainer
    from geo_synthesis.testing import SMDTToyPairs

    recipe = get_recipe("smdt", "small").replace(batch_size=4, epochs=1)
    torch.manual_seed(0)
    net = SegmentationUNet(6, width=4, depth=1, grouping=world_grouping())
    before = [p.detach().clone() for p in net.parameters()]
    trainer = Trainer(net, recipe, SMDTToyPairs(8, seed=0), out_dir=tmp_path, device="cpu", progress=False)
    assert set(trainer.optimizers) == {"main"}
    result = trainer.fit()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.history[-1]["train/loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert (tmp_path / "last" / "model.safetensors").exists()
