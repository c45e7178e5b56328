"""Fine-grained pose metrics: lateral / longitudinal split on hand-made cases, heading wrap, recall
boundaries, argument checks and the invariance of the split under rotations of the whole frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import geo_bench
from geo_bench.metrics import PoseErrors, PoseResult, pose_errors, pose_metrics


class TestPoseErrors:
    def test_facing_east_north_error_is_lateral(self):
        # camera faces east (bearing 90); the prediction is 2 m north of it: across the heading
        e = pose_errors([[10.0, 7.0]], [[10.0, 5.0]], [90.0])
        assert e.lateral_m.tolist() == [2.0]
        assert e.longitudinal_m.tolist() == [0.0]
        assert e.distance_m.tolist() == [2.0]
        assert e.heading_deg is None

    def test_facing_north_north_error_is_longitudinal(self):
        e = pose_errors([[10.0, 7.0]], [[10.0, 5.0]], [0.0])
        assert e.longitudinal_m.tolist() == [2.0] and e.lateral_m.tolist() == [0.0]

    def test_facing_south_and_west(self):
        # south-facing: a north error is still longitudinal; west-facing: an east error is longitudinal
        e = pose_errors([[0.0, -3.0], [4.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [180.0, 270.0])
        np.testing.assert_allclose(e.longitudinal_m, [3.0, 4.0])
        np.testing.assert_allclose(e.lateral_m, [0.0, 0.0], atol=1e-12)

    def test_diagonal_heading_all_longitudinal(self):
        e = pose_errors([[1.0, 1.0]], [[0.0, 0.0]], [45.0])
        assert e.longitudinal_m[0] == pytest.approx(np.sqrt(2.0))
        assert e.lateral_m[0] == pytest.approx(0.0, abs=1e-12)
        # the same error across a heading of 135 degrees is all lateral
        e = pose_errors([[1.0, 1.0]], [[0.0, 0.0]], [135.0])
        assert e.lateral_m[0] == pytest.approx(np.sqrt(2.0))
        assert e.longitudinal_m[0] == pytest.approx(0.0, abs=1e-12)

    def test_components_are_absolute_and_pythagorean(self):
        e = pose_errors([[3.0, -4.0]], [[0.0, 0.0]], [30.0])
        assert e.longitudinal_m[0] >= 0 and e.lateral_m[0] >= 0
        assert e.longitudinal_m[0] ** 2 + e.lateral_m[0] ** 2 == pytest.approx(25.0)
        # heading 30: forward (0.5, 0.866), right (0.866, -0.5)
        assert e.longitudinal_m[0] == pytest.approx(abs(3 * 0.5 - 4 * np.sqrt(3) / 2))
        assert e.lateral_m[0] == pytest.approx(abs(3 * np.sqrt(3) / 2 + 4 * 0.5))

    def test_uses_the_true_heading_not_the_predicted_one(self):
        a = pose_errors([[0.0, 2.0]], [[0.0, 0.0]], [90.0], [0.0])
        assert a.lateral_m.tolist() == [2.0] and a.heading_deg is not None
        assert a.heading_deg.tolist() == [90.0]

    @pytest.mark.parametrize(
        ("pred", "true", "err"),
        [
            (359.0, 1.0, 2.0),
            (1.0, 359.0, 2.0),
            (-170.0, 170.0, 20.0),
            (720.0, 0.0, 0.0),
            (10.0, 190.0, 180.0),
        ],
    )
    def test_heading_wraps(self, pred, true, err):
        e = pose_errors([[0.0, 0.0]], [[0.0, 0.0]], [true], [pred])
        assert e.heading_deg is not None and e.heading_deg[0] == pytest.approx(err)

    def test_torch_and_numpy_agree(self):
        rng = np.random.default_rng(0)
        p, t, h, g = (
            rng.normal(size=(5, 2)),
            rng.normal(size=(5, 2)),
            rng.uniform(0, 360, 5),
            rng.uniform(0, 360, 5),
        )
        a = pose_errors(p, t, h, g)
        b = pose_errors(
            torch.tensor(p), torch.tensor(t, dtype=torch.float32), torch.tensor(h), torch.tensor(g)
        )
        for name in ("distance_m", "longitudinal_m", "lateral_m", "heading_deg"):
            x, y = getattr(a, name), getattr(b, name)
            assert y.dtype == np.float64
            np.testing.assert_allclose(x, y, atol=1e-5)
        assert isinstance(a, PoseErrors) and a.n == 5

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"pred_en_m": np.zeros((3, 3))}, r"pred_en_m must be \(N, 2\) = \(3, 2\)"),
            ({"pred_en_m": np.zeros((2, 2))}, r"pred_en_m must be \(N, 2\) = \(3, 2\).*\(2, 2\)"),
            ({"true_en_m": np.zeros(6)}, r"true_en_m must be \(N, 2\).*\(6,\)"),
            ({"true_heading_deg": np.zeros((3, 1))}, r"true_heading_deg must be \(N,\) = \(3,\)"),
            ({"pred_heading_deg": np.zeros(2)}, r"pred_heading_deg must be \(N,\) = \(3,\)"),
        ],
    )
    def test_bad_shapes_name_the_argument(self, kwargs, match):
        args = {
            "pred_en_m": np.zeros((3, 2)),
            "true_en_m": np.ones((3, 2)),
            "true_heading_deg": np.zeros(3),
            "pred_heading_deg": np.zeros(3),
        }
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            pose_errors(**args)

    def test_rejects_non_finite_empty_and_non_numeric(self):
        bad = np.zeros((3, 2))
        bad[1, 0] = np.nan
        with pytest.raises(ValueError, match="pred_en_m must be finite; row 1"):
            pose_errors(bad, np.zeros((3, 2)), np.zeros(3))
        with pytest.raises(ValueError, match="true_heading_deg must be finite; row 2"):
            pose_errors(np.zeros((3, 2)), np.zeros((3, 2)), [0.0, 1.0, np.inf])
        with pytest.raises(ValueError, match="at least one"):
            pose_errors(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))
        with pytest.raises(TypeError, match="true_en_m must be a numeric array"):
            pose_errors(np.zeros((1, 2)), [["a", "b"]], [0.0])


class TestPoseMetrics:
    def test_recalls_are_inclusive_at_the_boundary(self):
        # errors exactly 1, 3 and 5 m north of north-facing cameras, and one of 5.0001 m
        true = np.zeros((4, 2))
        pred = np.array([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0], [0.0, 5.0001]])
        r = pose_metrics(pred, true, np.zeros(4), [1.0, 3.0, 5.0, 5.0001])
        d = r.as_dict()
        assert (d["R@1m"], d["R@3m"], d["R@5m"]) == (25.0, 50.0, 75.0)
        assert (d["lon_R@1m"], d["lon_R@3m"], d["lon_R@5m"]) == (25.0, 50.0, 75.0)
        assert (d["lat_R@1m"], d["lat_R@3m"], d["lat_R@5m"]) == (100.0, 100.0, 100.0)
        assert (d["R@1deg"], d["R@3deg"], d["R@5deg"]) == (25.0, 50.0, 75.0)

    def test_as_dict_keys_and_values(self):
        true = np.zeros((4, 2))
        pred = np.array([[0.0, 2.0], [2.0, 0.0], [0.0, 0.0], [6.0, 8.0]])  # heading 90: east is forward
        r = pose_metrics(pred, true, np.full(4, 90.0), [92.0, 80.0, 90.0, 270.0], thresholds_m=(1, 2.5))
        d = r.as_dict()
        assert list(d) == [
            "mean_m",
            "median_m",
            "R@1m",
            "R@2.5m",
            "lateral_mean_m",
            "lateral_median_m",
            "longitudinal_mean_m",
            "longitudinal_median_m",
            "lat_R@1m",
            "lat_R@2.5m",
            "lon_R@1m",
            "lon_R@2.5m",
            "heading_mean_deg",
            "heading_median_deg",
            "R@1deg",
            "R@3deg",
            "R@5deg",
            "n",
        ]
        assert d["mean_m"] == pytest.approx((2 + 2 + 0 + 10) / 4) and d["median_m"] == 2.0
        assert d["lateral_mean_m"] == pytest.approx((2 + 0 + 0 + 8) / 4)
        assert d["longitudinal_mean_m"] == pytest.approx((0 + 2 + 0 + 6) / 4)
        assert d["lateral_median_m"] == pytest.approx(1.0) and d["longitudinal_median_m"] == pytest.approx(
            1.0
        )
        assert d["heading_mean_deg"] == pytest.approx((2 + 10 + 0 + 180) / 4)
        assert d["heading_median_deg"] == pytest.approx(6.0)
        assert d["n"] == 4 and isinstance(r, PoseResult)

    def test_without_predicted_heading_no_heading_keys(self):
        d = pose_metrics([[0.0, 1.0]], [[0.0, 0.0]], [0.0]).as_dict()
        assert "heading_mean_deg" not in d and "R@1deg" not in d
        assert d["R@1m"] == 100.0 and d["n"] == 1

    @pytest.mark.parametrize("bad", [(), (0.0, 1.0), (1.0, 1.0), (-1.0,), (float("nan"),)])
    def test_bad_thresholds(self, bad):
        with pytest.raises(ValueError, match="thresholds_m"):
            pose_metrics([[0.0, 1.0]], [[0.0, 0.0]], [0.0], thresholds_m=bad)
        with pytest.raises(ValueError, match="thresholds_deg"):
            pose_metrics([[0.0, 1.0]], [[0.0, 0.0]], [0.0], [0.0], thresholds_deg=bad)

    def test_flat_namespace(self):
        assert geo_bench.pose_metrics is pose_metrics and geo_bench.PoseErrors is PoseErrors


def _rotate(points: np.ndarray, phi_deg: float) -> np.ndarray:
    """Rotate (east, north) points clockwise by ``phi_deg``: a bearing b becomes b + phi."""
    c, s = np.cos(np.deg2rad(phi_deg)), np.sin(np.deg2rad(phi_deg))
    return np.stack([c * points[:, 0] + s * points[:, 1], -s * points[:, 0] + c * points[:, 1]], axis=1)


class TestFrameInvariance:
    @settings(max_examples=40, deadline=None)
    @given(
        seed=st.integers(0, 2**31 - 1),
        phi=st.floats(-720.0, 720.0, allow_nan=False),
        shift=st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4)),
    )
    def test_rotating_the_world_with_the_heading_keeps_the_split(self, seed, phi, shift):
        rng = np.random.default_rng(seed)
        true = rng.normal(scale=50.0, size=(6, 2))
        pred = true + rng.normal(scale=5.0, size=(6, 2))
        heading, pred_heading = rng.uniform(-360, 720, 6), rng.uniform(0, 360, 6)
        a = pose_errors(pred, true, heading, pred_heading)
        off = np.asarray(shift)
        b = pose_errors(_rotate(pred, phi) + off, _rotate(true, phi) + off, heading + phi, pred_heading + phi)
        np.testing.assert_allclose(b.distance_m, a.distance_m, rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(b.longitudinal_m, a.longitudinal_m, rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(b.lateral_m, a.lateral_m, rtol=1e-9, atol=1e-7)
        assert a.heading_deg is not None and b.heading_deg is not None
        np.testing.assert_allclose(b.heading_deg, a.heading_deg, atol=1e-7)

    def test_rotating_the_world_but_not_the_heading_changes_the_split(self):
        # the check above is not vacuous: keep the heading fixed and a rotation by 90 swaps the parts
        true, pred = np.zeros((1, 2)), np.array([[0.0, 2.0]])
        a = pose_errors(pred, true, [0.0])
        b = pose_errors(_rotate(pred, 90.0), _rotate(true, 90.0), [0.0])
        assert a.longitudinal_m[0] == pytest.approx(2.0) and b.lateral_m[0] == pytest.approx(2.0)
