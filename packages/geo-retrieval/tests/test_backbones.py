import functools

import pytest
import timm
import torch
from safetensors.torch import save_file

from geo_retrieval.backbones import Backbone, create_backbone, list_backbones
from geo_transforms.testing import BaseTester

# ViTs are built with depth=2 (a timm keyword passed through) to keep the CPU tests fast.
CASES = [
    # name, kwargs, input size
    ("vgg16", (), (32, 64)),
    ("vgg16", (("out_index", 3), ("ceil_mode", True), ("frozen_stages", 3)), (32, 64)),  # DSM's cut
    ("resnet34_layer3", (), (32, 64)),
    ("convnext_atto", (("pool", False),), (64, 64)),
    ("vit_tiny_patch16_224", (("img_size", (32, 64)), ("depth", 2)), (32, 64)),
    ("r50_vit_tiny", (("img_size", (64, 128)), ("depth", 2)), (64, 128)),
    ("timm:resnet18", (("out_index", 2),), (32, 32)),
]


@functools.cache
def _cached(name, kwargs=()):
    """Backbones shared by read-only tests (VGG-16 alone takes seconds to build on a busy CPU)."""
    return create_backbone(name, **dict(kwargs)).eval()


class TestBackbones(BaseTester):
    @pytest.mark.parametrize(
        ("name", "kwargs", "size"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
    )
    def test_shape_channels_reduction(self, name, kwargs, size):
        bb = _cached(name, kwargs)
        assert isinstance(bb, Backbone)
        out = bb(torch.rand(2, 3, *size))
        assert out.shape == (2, bb.out_channels, size[0] // bb.reduction, size[1] // bb.reduction)

    def test_channels_come_from_feature_info(self):
        for name, idx, kw in [
            ("convnext_atto", -1, (("pool", False),)),
            ("timm:resnet18", 2, (("out_index", 2),)),
        ]:
            ref = timm.create_model(name.removeprefix("timm:"), features_only=True, out_indices=(idx,))
            bb = _cached(name, kw)
            assert bb.out_channels == ref.feature_info.channels()[-1]
            assert bb.reduction == ref.feature_info.reduction()[-1]
        # VGG-16: ecosystem.md's table (conv4_3 and the pool5 map, both 512 channels)
        assert (_cached(*CASES[1][:2]).reduction, _cached("vgg16").reduction) == (8, 32)
        assert _cached("vgg16").out_channels == 512

    def test_resnet34_layer3_is_toker(self):
        bb = _cached("resnet34_layer3")
        assert (bb.out_channels, bb.reduction) == (256, 8)
        assert isinstance(bb.model.maxpool, torch.nn.Identity)
        assert len(bb.model.layer4) == 0  # pruned
        # Toker's street branch: 112x616 -> 256x14x77 (checked at a 1/7 scale to stay fast)
        assert bb(torch.rand(1, 3, 16, 88)).shape == (1, 256, 2, 11)
        # layer names are torchvision's, so its ResNet-34 weights load strictly
        import torchvision

        with torch.device("meta"):
            tv = torchvision.models.resnet34().state_dict()
        ours = bb.model.state_dict()
        assert set(ours) <= set(tv)

    def test_vgg_ceil_mode_gives_safa_sizes(self):
        # TF "SAME" pooling rounds up: widths 308 -> 154 -> 77 -> 39 (ceil) vs 38 (floor); at
        # pool5 this gives SAFA's 112x616 -> 4x20 map.
        bb = _cached(*CASES[1][:2])
        x = torch.rand(1, 3, 56, 308)
        assert bb(x).shape[-2:] == (7, 39)
        assert _cached("vgg16")(x).shape[-2:] == (1, 9)  # floor everywhere: 56 -> 1, 308 -> 9

    def test_frozen_stages(self):
        bb = _cached(*CASES[1][:2])  # DSM: conv1-3 frozen, conv4 trainable
        frozen = [n for n, p in bb.named_parameters() if not p.requires_grad]
        trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
        assert len(frozen) == 14 and len(trainable) == 6  # 7 and 3 convs (weight + bias)
        assert all(int(n.split(".")[2]) < 17 for n in frozen)

    def test_convnext_pooled_is_timm_embedding(self):
        bb = create_backbone("convnext_atto").eval()
        ref = timm.create_model("convnext_atto", num_classes=0).eval()
        ref.load_state_dict(bb.model.state_dict())
        x = torch.rand(2, 3, 64, 64)
        out = bb(x)
        assert out.shape == (2, bb.out_channels, 1, 1) and bb.kind == "pooled"
        self.assert_close(out.flatten(1), ref(x))

    def test_vit_tokens(self):
        bb = _cached("vit_tiny_patch16_224", (("img_size", (32, 64)), ("depth", 2)))
        x = torch.rand(2, 3, 32, 64)
        cls, tokens, (h, w) = bb.forward_tokens(x)
        assert (h, w) == (2, 4) and cls.shape == (2, 192) and tokens.shape == (2, 8, 192)
        full = bb.model.forward_features(x)
        self.assert_close(cls, full[:, 0])
        fmap = bb(x)
        self.assert_close(fmap[:, :, 1, 2], tokens[:, 1 * 4 + 2])  # row-major
        with pytest.raises(TypeError, match="ViT"):
            _cached("resnet34_layer3").forward_tokens(x)

    def test_gradients(self):
        bb = create_backbone("resnet34_layer3")
        x = torch.rand(2, 3, 16, 16, requires_grad=True)
        bb(x).sum().backward()
        assert x.grad.abs().sum() > 0
        assert all(p.grad is not None for p in bb.parameters())

    def test_circular_w(self):
        bb = create_backbone("resnet34_layer3", circular_w=True).eval()
        x = torch.rand(1, 3, 16, 64)
        self.assert_close(bb(torch.roll(x, 16, dims=-1)), torch.roll(bb(x), 2, dims=-1), rtol=1e-4, atol=1e-4)

    def test_exception(self):
        with pytest.raises(ValueError, match="unknown backbone 'nope'"):
            create_backbone("nope")
        with pytest.raises(ValueError, match="cut"):
            create_backbone("timm:resnet18", cut="layer9")
        with pytest.raises(ValueError, match="out_index"):
            create_backbone("timm:resnet18", out_index=10)
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            _cached("resnet34_layer3")(torch.rand(3, 8, 8))
        assert {"vgg16", "resnet34_layer3", "convnext_*", "vit_*", "r50_vit"} <= set(list_backbones())


class TestLocalWeights(BaseTester):
    def test_pth_with_prefixes_and_safetensors(self, tmp_path):
        src = timm.create_model("resnet18", num_classes=0)
        with torch.no_grad():
            for p in src.parameters():
                p.normal_()
        sd = src.state_dict()
        torch.save({"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
        save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
        for fname in ("w.pth", "w.safetensors"):
            bb = create_backbone("timm:resnet18", cut="layer3", weights=tmp_path / fname)
            for k, v in bb.model.state_dict().items():
                self.assert_close(v, sd[k])

    def test_strict_missing(self, tmp_path):
        sd = timm.create_model("resnet18", num_classes=0).state_dict()
        sd.pop("layer2.0.conv1.weight")
        save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
        with pytest.raises(ValueError, match=r"lacks 1 tensors.*layer2\.0\.conv1\.weight"):
            create_backbone("timm:resnet18", weights=tmp_path / "w.safetensors")

    def test_vit_position_embedding_resampled(self, tmp_path):
        src = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2)  # 14x14 grid
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "vit.safetensors")
        bb = create_backbone(
            "vit_tiny_patch16_224", img_size=(32, 64), depth=2, weights=tmp_path / "vit.safetensors"
        )
        assert bb.model.pos_embed.shape == (1, 1 + 2 * 4, 192)
        self.assert_close(bb.model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
