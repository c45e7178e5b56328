import pytest
import torch

from geo_bench.baselines import ColourProfile
from geo_bench.metrics import retrieval_recall
from geo_retrieval.protocols import CrossViewEncoder, CustomStepModel


class TestColourProfile:
    def test_smoke_shapes(self):
        m = ColourProfile(sectors=8, bands=2)
        g = m.encode_ground(torch.rand(3, 3, 16, 64))
        a = m.encode_aerial(torch.rand(4, 3, 32, 32))
        assert g.shape == (3, 48) and a.shape == (4, 48)
        torch.testing.assert_close(g.norm(dim=1), torch.ones(3))
        assert m.similarity(g, a).shape == (3, 4)
        assert m.aligned_similarity(g, a).shape == (3, 4)

    def test_is_a_cross_view_encoder(self):
        m = ColourProfile()
        assert isinstance(m, CrossViewEncoder)
        assert not isinstance(m, CustomStepModel)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="sectors"):
            ColourProfile(sectors=1)
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            ColourProfile().encode_ground(torch.rand(3, 16, 64))
        with pytest.raises(TypeError):
            ColourProfile().encode_ground("image")  # type: ignore[arg-type]

    def test_gain_and_offset_cancel(self):
        m = ColourProfile(sectors=16)
        x = torch.rand(2, 3, 32, 128) * 0.5
        torch.testing.assert_close(m.encode_ground(x), m.encode_ground(x * 1.7 + 0.1), atol=1e-5, rtol=1e-5)

    def test_uint8_equals_float(self):
        m = ColourProfile()
        x = (torch.rand(2, 3, 32, 128) * 255).round().to(torch.uint8)
        torch.testing.assert_close(m.encode_ground(x), m.encode_ground(x.float() / 255))

    def test_aligned_similarity_is_rotation_invariant(self):
        m = ColourProfile(sectors=16)
        pano = torch.rand(5, 3, 32, 128)
        g = m.encode_ground(pano)
        g_rolled = m.encode_ground(pano.roll(3 * 128 // 16, dims=-1))  # a whole number of sectors
        a = g.clone()
        assert not torch.allclose(m.similarity(g_rolled, a), m.similarity(g, a))
        torch.testing.assert_close(m.aligned_similarity(g_rolled, a), m.aligned_similarity(g, a))

    def test_ground_matches_its_own_polar_view(self):
        # a panorama whose lower half is the polar image of a tile matches that tile exactly
        m = ColourProfile(sectors=16, polar_size=(16, 64))
        from geo_transforms import polar_transform

        tiles = torch.rand(6, 3, 32, 32)
        polar = polar_transform(tiles, (16, 64), center="safa")
        pano = torch.cat([torch.rand(6, 3, 16, 64), polar], dim=2)
        res = retrieval_recall(m.encode_ground(pano), m.encode_aerial(tiles), similarity=m.similarity)
        assert res.recall_at[1] == 100.0

    def test_above_chance_on_the_synthetic_world(self, tmp_path):
        from dataclasses import replace

        from geo_bench.leaderboard.config import TINY_WORLD
        from geo_bench.leaderboard.data import load_world_split

        # 100 test cameras of the tiny world's downtown and suburb districts (20 are too few to tell)
        test = load_world_split(replace(TINY_WORLD, n_test=100), "test", tmp_path)
        m = ColourProfile()
        g = m.encode_ground(test.ground)
        a = m.encode_aerial(test.aerial)
        res = retrieval_recall(g, a, similarity=m.similarity)
        chance = 100.0 / len(test)
        assert res.recall_at[1] >= 2 * chance and res.recall_at[5] >= 1.5 * 5 * chance
