"""TransGeo's attention-guided crop (:mod:`geo_retrieval.token_crop`) and the ``select_tokens`` backbone.

Parity with upstream's ``forward_features_crop`` is in ``test_convert_transgeo.py`` (``TestTransGeoStage2``).
"""

import pytest
import torch

from geo_retrieval.backbones import create_backbone
from geo_retrieval.token_crop import (
    KEEP_RATE,
    attention_keep_order,
    forward_kept_tokens,
    keep_order_channel,
    order_from_channel,
)


def _deit(select: bool = True):
    torch.manual_seed(0)
    return create_backbone(
        "deit_small_distilled_patch16_224",
        img_size=(64, 64),
        num_classes=8,
        depth=1,
        embed_dim=32,
        num_heads=2,
        select_tokens=select,
    ).eval()


class TestKeepOrder:
    def test_highest_attention_last_and_kept_count(self):
        att = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(2, 3, 1, 1)
        att[1] = att[1].flip(-1)
        order = attention_keep_order(att, (4, 4))
        assert order.shape == (2, int(KEEP_RATE * 16)) == (2, 10)
        assert order[0].tolist() == list(range(6, 16))  # ascending sort, the last 10
        assert order[1, -1].item() == 12  # the flipped map's maximum sits at row 3, column 0
        # upstream interpolates to the patch grid (bilinear, half-pixel): a 2x2 map onto 4x4
        small = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
        assert attention_keep_order(small, (4, 4), keep_rate=0.25)[0, -1].item() == 15
        assert attention_keep_order(att, (20, 20)).shape == (2, 256)  # stage-2 CVUSA: 320 px

    def test_channel_round_trip(self):
        order = torch.tensor([[5, 0, 9], [1, 2, 3]])
        ch = keep_order_channel(order, (3, 4), 2)
        assert ch.shape == (2, 1, 6, 8) and ch.dtype == torch.float32
        assert (
            ch[0, 0, 2, 2].item() == 1.0
            and ch[0, 0, 0, 0].item() == 2.0
            and ch[0, 0, 5, 3].item() == 3.0
            and ch[0, 0, 5, 7].item() == 0
        )
        assert torch.equal(order_from_channel(ch, 2), order)

    def test_faults(self):
        with pytest.raises(ValueError, match=r"attention must be \(B, C, h, w\)"):
            attention_keep_order(torch.rand(3, 4, 4), (2, 2))
        with pytest.raises(TypeError, match="floating"):
            attention_keep_order(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), (2, 2))
        with pytest.raises(ValueError, match="keep_rate"):
            attention_keep_order(torch.rand(1, 1, 4, 4), (2, 2), keep_rate=0.1)
        with pytest.raises(ValueError, match="repeats"):
            keep_order_channel(torch.tensor([[1, 1]]), (2, 2), 1)
        ch = keep_order_channel(torch.tensor([[0, 1], [2, 3]]), (2, 2), 1)
        ch[1, 0, 1, 0] = 0.0  # the second image keeps one patch fewer
        with pytest.raises(ValueError, match="same number"):
            order_from_channel(ch, 1)
        with pytest.raises(ValueError, match=r"ranks 1 \.\.\. k"):
            order_from_channel(keep_order_channel(torch.tensor([[0, 1]]), (2, 2), 1) * 2, 1)


class TestKeptTokens:
    def test_every_patch_equals_the_full_forward(self):
        """All patches, in any order: the classifier output of timm's own forward (attention is
        permutation-equivariant; the prefix tokens carry the output)."""
        bb = _deit()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            full = bb(x)[:, :, 0, 0]
            same = forward_kept_tokens(bb.model, x, torch.arange(16).expand(2, 16))
            shuffled = forward_kept_tokens(bb.model, x, torch.stack([torch.randperm(16) for _ in range(2)]))
        torch.testing.assert_close(same, full, rtol=0, atol=1e-6)
        torch.testing.assert_close(shuffled, full, rtol=0, atol=1e-5)

    def test_backbone_reads_the_channel(self):
        bb = _deit()
        x = torch.randn(2, 3, 64, 64)
        order = torch.stack([torch.randperm(16)[:10] for _ in range(2)])
        with torch.no_grad():
            direct = forward_kept_tokens(bb.model, x, order)
            via = bb(torch.cat([x, keep_order_channel(order, (4, 4), 16)], dim=1))
            full = bb(x)
        assert via.shape == (2, 8, 1, 1)
        torch.testing.assert_close(via[:, :, 0, 0], direct, rtol=0, atol=0)
        assert (via - full).abs().max() > 1e-4

    def test_select_tokens_needs_logits(self):
        with pytest.raises(ValueError, match="select_tokens needs num_classes > 0"):
            create_backbone(
                "deit_small_distilled_patch16_224",
                img_size=(32, 32),
                depth=1,
                embed_dim=32,
                num_heads=2,
                select_tokens=True,
            )
        bb = _deit(select=False)
        with pytest.raises(RuntimeError, match="3 channels"):  # no keep-order channel without selection
            bb(torch.randn(1, 4, 64, 64))
