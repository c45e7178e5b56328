"""DSM unknown-orientation / limited-FoV protocol: query sets, cropping, orientation metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo_bench.metrics import (
    FovQuerySet,
    apply_fov,
    circular_error_deg,
    make_fov_queries,
    orientation_accuracy,
    orientation_bins,
)


def _legacy_global_draws(n, seed=2019, width=512, noise=360):
    """DSM's own code path: seed the *global* legacy RNG, then one np.random.rand() per query."""
    saved = np.random.get_state()  # noqa: NPY002 (DSM's legacy global RNG on purpose)
    try:
        np.random.seed(seed)  # noqa: NPY002 (DSM's legacy global RNG on purpose)
        return [int(np.random.rand() * width * noise / 360) for _ in range(n)]  # noqa: NPY002 (DSM's legacy global RNG on purpose)
    finally:
        np.random.set_state(saved)  # noqa: NPY002 (DSM's legacy global RNG on purpose)


class TestMakeFovQueries:
    @pytest.mark.parametrize(("noise", "seed"), [(360, 2019), (180, 2019), (360, 7)])
    def test_reproduces_legacy_global_rng(self, noise, seed):
        qs = make_fov_queries(2000, fov_deg=90, noise_deg=noise, seed=seed)
        assert list(qs.shifts) == _legacy_global_draws(2000, seed=seed, noise=noise)

    def test_does_not_touch_global_state(self):
        np.random.seed(123)  # noqa: NPY002 (DSM's legacy global RNG on purpose)
        before = np.random.get_state()[1].copy()  # noqa: NPY002 (DSM's legacy global RNG on purpose)
        make_fov_queries(10, fov_deg=180)
        np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002 (DSM's legacy global RNG on purpose)

    def test_shifts_independent_of_fov_and_known_orientation(self):
        a = make_fov_queries(50, 70)
        b = make_fov_queries(50, 360)
        assert a.shifts == b.shifts
        assert set(make_fov_queries(50, 90, noise_deg=0).shifts) == {0}
        assert all(0 <= s < 512 for s in a.shifts)

    @pytest.mark.parametrize(
        ("fov", "width"), [(360, 512), (180, 256), (120, 170), (100, 142), (90, 128), (70, 99)]
    )
    def test_crop_width(self, fov, width):
        assert make_fov_queries(1, fov).crop_width == width

    @pytest.mark.parametrize("suffix", [".json", ".npz"])
    def test_save_load_round_trip(self, tmp_path, suffix):
        qs = make_fov_queries(300, 70)
        path = qs.save(tmp_path / f"fov70{suffix}")
        again = FovQuerySet.load(path)
        assert again == qs
        np.testing.assert_array_equal(again.gt_bins(), qs.gt_bins())

    def test_exception(self, tmp_path):
        with pytest.raises(ValueError, match="fov_deg"):
            make_fov_queries(3, 0)
        with pytest.raises(ValueError, match="noise_deg"):
            make_fov_queries(3, 90, noise_deg=400)
        with pytest.raises(ValueError, match=r"\.json or \.npz"):
            make_fov_queries(3, 90).save(tmp_path / "x.txt")
        with pytest.raises(ValueError, match="format"):
            FovQuerySet.from_dict({"format": "other", "shifts": []})


class TestApplyFov:
    def test_matches_dsm_indexing(self, device):
        g = torch.Generator().manual_seed(0)
        pano = torch.randn(6, 3, 4, 512, generator=g)
        qs = make_fov_queries(6, 70)
        out = qs.apply(pano.to(device))
        assert out.shape == (6, 3, 4, 99) and out.device == torch.device(device)
        j = np.arange(512)
        for i, s in enumerate(qs.shifts):
            expected = pano[i].numpy()[:, :, ((j - s) % 512)[: qs.crop_width]]  # DSM: img[:, cols, :] in HWC
            np.testing.assert_array_equal(out[i].cpu().numpy(), expected)

    def test_full_fov_is_a_roll(self):
        pano = torch.randn(3, 2, 2, 16)
        out = apply_fov(pano, [0, 5, 15], 16)
        for i, s in enumerate([0, 5, 15]):
            torch.testing.assert_close(out[i], torch.roll(pano[i], s, dims=-1))

    def test_batch_offset(self):
        qs = make_fov_queries(10, 180, width=16)
        pano = torch.randn(4, 1, 1, 16)
        torch.testing.assert_close(qs.apply(pano, start=6), apply_fov(pano, qs.shifts[6:10], 8))

    def test_exception(self):
        qs = make_fov_queries(4, 90)
        with pytest.raises(ValueError, match="512 columns"):
            qs.apply(torch.zeros(2, 3, 4, 256))
        with pytest.raises(ValueError, match="outside"):
            qs.apply(torch.zeros(3, 3, 4, 512), start=2)
        with pytest.raises(ValueError, match="shifts"):
            apply_fov(torch.zeros(2, 1, 1, 8), [1], 4)
        with pytest.raises(ValueError, match="crop_width"):
            apply_fov(torch.zeros(1, 1, 1, 8), [1], 9)


class TestOrientation:
    def test_gt_bins_formula_and_half_to_even(self):
        shifts = np.arange(512)
        expected = np.round((512 - shifts) / 512 * 64) % 64
        np.testing.assert_array_equal(orientation_bins(shifts), expected)
        # (512 - 4) / 8 = 63.5 rounds to 64 -> 0; (512 - 12) / 8 = 62.5 rounds to 62 (half to even)
        assert orientation_bins([4, 12]).tolist() == [0, 62]
        qs = make_fov_queries(20, 90)
        np.testing.assert_array_equal(qs.gt_bins(), orientation_bins(qs.shifts))

    def test_gt_bin_undoes_the_shift(self):
        # a further roll right by gt_bin * 8 columns restores the original order to within 4 columns
        for s in (0, 3, 100, 255, 511):
            b = int(orientation_bins([s])[0])
            assert min((s + b * 8) % 512, 512 - (s + b * 8) % 512) <= 4

    def test_accuracy_exact_within_and_median(self):
        gt = np.array([0, 1, 10, 8, 32, 63])
        pred = np.array([0, 63, 10, 40, 33, 0])
        r = orientation_accuracy(pred, gt)
        # circular bin errors: 0, 2, 0, 32, 1, 1
        assert r.exact == pytest.approx(100 * 2 / 6)
        assert r.within == pytest.approx(100 * 5 / 6)
        assert r.median_error_deg == pytest.approx(5.625)
        assert r.as_dict()["orientation_within_2"] == r.within
        assert r.protocol_dict()["orientation_rule"] == "circular"

    def test_dsm_script_rule(self):
        gt = np.array([0, 1, 10, 8, 32, 63])
        pred = np.array([0, 63, 10, 40, 33, 0])
        r = orientation_accuracy(torch.tensor(pred), torch.tensor(gt), rule="dsm_script")
        # |gt - pred| < 2 without wrap: 0, 62, 0, 32, 1, 63 -> 3 of 6
        assert r.within == pytest.approx(50.0) and r.exact == pytest.approx(100 * 2 / 6)

    def test_circular_error_deg(self):
        np.testing.assert_allclose(
            circular_error_deg([359.0, 0.0, 90.0, 181.0], [1.0, 180.0, 270.0, 0.0]),
            [2.0, 180.0, 180.0, 179.0],
        )

    def test_exception(self):
        with pytest.raises(ValueError, match="lie in"):
            orientation_accuracy([64], [0])
        with pytest.raises(ValueError, match="equal"):
            orientation_accuracy([1, 2], [1])
        with pytest.raises(ValueError, match="rule"):
            orientation_accuracy([1], [1], rule="loose")
        with pytest.raises(ValueError, match="integer"):
            orientation_accuracy([1.5], [1])
