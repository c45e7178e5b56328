import pytest
import torch

from geo_synthesis.smdt import MODES, SemanticAugment, keep_classes, remove_classes, semantic_augment

# on shared CPUs two spinning OpenMP threads ran these small ops 50-250x slower than one thread
pytestmark = pytest.mark.one_thread


SKY, ROAD, VEG = 0, 1, 2


def planted(b=4):
    # rows: sky / tree / road / building, one per row of a 4 x 6 panorama
    seg = torch.tensor([SKY, VEG, ROAD, 3]).view(4, 1).expand(4, 6).expand(b, 4, 6).clone()
    image = torch.rand(b, 3, 4, 6, generator=torch.Generator().manual_seed(0)) + 0.5  # never black
    return image, seg


class TestKeepRemove:
    def test_keep_only_tree(self):
        image, seg = planted()
        out = keep_classes(image, seg, [VEG])
        assert torch.equal(out[:, :, 1], image[:, :, 1])
        assert (out[:, :, [0, 2, 3]] == 0).all()

    def test_keep_only_road(self):
        image, seg = planted()
        out = keep_classes(image, seg, [ROAD], fill=-1.0)
        assert torch.equal(out[:, :, 2], image[:, :, 2])
        assert (out[:, :, [0, 1, 3]] == -1).all()

    def test_remove_sky_black(self):
        image, seg = planted()
        out = remove_classes(image, seg, [SKY], fill=(-1.0, -2.0, -3.0))
        assert out[:, :, 0].amax(dim=(0, 2)).tolist() == [-1.0, -2.0, -3.0]
        assert torch.equal(out[:, :, 1:], image[:, :, 1:])

    def test_low_resolution_seg_is_resized(self):
        image = torch.ones(1, 1, 4, 4)
        seg = torch.tensor([[[SKY, ROAD], [ROAD, ROAD]]])
        out = remove_classes(image, seg, [SKY])
        assert out[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]

    def test_exceptions(self):
        image, seg = planted()
        with pytest.raises(ValueError):
            keep_classes(image, seg[:2], [0])
        with pytest.raises(TypeError):
            keep_classes(image, seg.float(), [0])
        with pytest.raises(ValueError):
            keep_classes(image, seg, [0], fill=(0.0, 0.0))


class TestSemanticAugment:
    def test_modes_applied_per_sample(self):
        image, seg = planted(b=64)
        cfg = SemanticAugment(
            p_keep_tree=0.25, p_keep_road=0.25, p_remove_sky=0.25, keep_fill=1.0, remove_fill=0.0
        )
        out, modes = semantic_augment(image, seg, cfg, generator=torch.Generator().manual_seed(3))
        assert set(modes.tolist()) == {0, 1, 2, 3}
        for i, m in enumerate(modes.tolist()):
            rows_kept = {"none": [0, 1, 2, 3], "keep_tree": [1], "keep_road": [2], "remove_sky": [1, 2, 3]}[
                MODES[m]
            ]
            for r in range(4):
                if r in rows_kept:
                    assert torch.equal(out[i, :, r], image[i, :, r])
                elif MODES[m] == "remove_sky":
                    assert (out[i, :, r] == 0).all()  # the removed sky goes black
                else:
                    assert (out[i, :, r] == 1).all()  # a keep mode blanks the rest to white (paper's Fig. 2)

    def test_default_fills_are_white_for_keep_and_black_for_remove(self):
        # SMDT's Fig. 2: keep_tree / keep_road show the kept class on white, remove_sky paints the sky black
        image, seg = planted(b=3)
        image = image * 0.5 + 0.25  # no pixel is already 0 or 1
        cfg = SemanticAugment(p_keep_tree=1.0)
        out, _ = semantic_augment(image, seg, cfg, generator=torch.Generator().manual_seed(0))
        assert (out[:, :, 0] == 1.0).all() and torch.equal(out[:, :, 1], image[:, :, 1])
        out, _ = semantic_augment(
            image, seg, SemanticAugment(p_remove_sky=1.0), generator=torch.Generator().manual_seed(0)
        )
        assert (out[:, :, 0] == 0.0).all() and torch.equal(out[:, :, 1:], image[:, :, 1:])

    def test_seeded_and_probabilities(self):
        image, seg = planted(b=2000)
        cfg = SemanticAugment(p_keep_tree=0.1, p_keep_road=0.2, p_remove_sky=0.3)
        _, m1 = semantic_augment(image, seg, cfg, generator=torch.Generator().manual_seed(5))
        _, m2 = semantic_augment(image, seg, cfg, generator=torch.Generator().manual_seed(5))
        assert torch.equal(m1, m2)
        freq = torch.bincount(m1, minlength=4).float() / len(m1)
        torch.testing.assert_close(freq, torch.tensor([0.4, 0.1, 0.2, 0.3]), atol=0.04, rtol=0)

    def test_disabled_is_identity(self):
        image, seg = planted()
        cfg = SemanticAugment()
        assert not cfg.enabled
        out, modes = cfg(image, seg)
        assert torch.equal(out, image) and (modes == 0).all()

    def test_exceptions(self):
        with pytest.raises(ValueError):
            SemanticAugment(p_keep_tree=0.6, p_remove_sky=0.6)
        with pytest.raises(ValueError):
            SemanticAugment(p_keep_tree=-0.1)
