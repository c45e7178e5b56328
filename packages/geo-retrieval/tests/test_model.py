import pytest
import torch

from geo_retrieval import (
    CrossViewModel,
    build_model,
    create_loss,
    load_weights,
    save_weights,
)
from geo_retrieval.heads import SAFAHead
from geo_transforms.testing import BaseTester


class TestBuildModel(BaseTester):
    def test_heads_sized_from_feature_map(self):
        model = build_model(
            backbone="resnet34_layer3",
            head="safa",
            ground_size=(16, 88),
            aerial_size=(16, 48),
            num_heads=4,
            flatten="channel_major",
        )
        assert isinstance(model.ground_head, SAFAHead)
        assert model.ground_head.feature_size == (2, 11) and model.aerial_head.feature_size == (2, 6)
        assert model.ground_head.in_channels == model.ground_backbone.out_channels == 256
        assert model.ground_head.flatten == "channel_major"
        g, a = model(torch.rand(3, 3, 16, 88), torch.rand(3, 3, 16, 48))
        assert g.shape == a.shape == (3, 4 * 256)
        sim = model.similarity(g, a)
        assert sim.shape == (3, 3)
        loss = create_loss("soft_margin_triplet")(sim)
        loss.backward()
        for branch in (model.ground_backbone, model.aerial_backbone, model.ground_head, model.aerial_head):
            assert all(p.grad is not None for p in branch.parameters())

    def test_shared_backbone(self, tmp_path):
        model = build_model(
            backbone="convnext_atto", head="avg", shared=True, ground_size=(32, 64), aerial_size=(32, 32)
        )
        assert model.shared_backbone and model.aerial_backbone is None
        assert not any(k.startswith("aerial_backbone") for k in model.state_dict())
        x = torch.rand(2, 3, 32, 32)
        model.eval()
        self.assert_close(model.encode_aerial(x), model.aerial_head(model.ground_backbone(x)))
        # save / strict load round trip of the whole model
        path = save_weights(model, tmp_path / "m.safetensors", {"recipe": "test"})
        other = build_model(
            backbone="convnext_atto", head="avg", shared=True, ground_size=(32, 64), aerial_size=(32, 32)
        )
        other.load_state_dict(load_weights(path), strict=True)
        other.eval()
        self.assert_close(
            other.encode_ground(torch.rand(1, 3, 32, 64).fill_(0.5)),
            model.encode_ground(torch.full((1, 3, 32, 64), 0.5)),
        )

    def test_dsm_model(self):
        model = build_model(
            backbone="timm:resnet18",
            head="dsm",
            ground_size=(32, 32),
            aerial_size=(32, 64),
            backbone_kwargs={"cut": "layer2"},
            channels=(16, 8, 4),
        )
        assert model.similarity_kind == "dsm"
        assert model.aerial_head.circular and not model.ground_head.circular
        assert any(getattr(m, "_circular_w", None) for m in model.aerial_backbone.modules())
        assert not any(getattr(m, "_circular_w", None) for m in model.ground_backbone.modules())
        g, a = model(torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 64))
        assert g.shape == (2, 4, 1, 4) and a.shape == (3, 4, 1, 8)
        sim, shift = model.match(g, a)
        assert sim.shape == shift.shape == (2, 3) and shift.dtype == torch.long
        create_loss("soft_margin_triplet")(model.similarity(g, a[:2])).backward()

    def test_vit_gets_img_size(self):
        model = build_model(
            backbone="vit_tiny_patch16_224",
            head="transformer",
            ground_size=(32, 64),
            aerial_size=(32, 32),
            backbone_kwargs={"depth": 1},
            depth=1,
            num_heads=2,
        )
        assert model.ground_head.feature_size == (2, 4) and model.aerial_head.feature_size == (2, 2)
        g, a = model(torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 32))
        assert g.shape == a.shape == (2, 192)

    def test_exception(self):
        with pytest.raises(ValueError, match="similarity"):
            CrossViewModel(torch.nn.Identity(), None, torch.nn.Identity(), similarity="l2")
        with pytest.raises(ValueError, match="shared"):
            build_model(backbone="resnet34_layer3", aerial_backbone="vgg16", head="gem", shared=True)
