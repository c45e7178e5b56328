"""VIGOR: positive-only recall, hit rate with semi-positives, meter-level localisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo_bench.metrics import (
    VIGOR_METERS_PER_PIXEL,
    MeterLevelCurve,
    localisation_errors,
    meter_level_accuracy,
    plot_meter_level_accuracy,
    retrieval_recall,
    vigor_offset_to_latlon,
    vigor_recall,
    vigor_thresholds,
)
from geo_retrieval.geodesy import great_circle_distance


def _dense_hit_rate(q, r, pos, semi):
    qn = q.double().numpy() / np.linalg.norm(q.double().numpy(), axis=1, keepdims=True)
    rn = r.double().numpy() / np.linalg.norm(r.double().numpy(), axis=1, keepdims=True)
    sim = qn @ rn.T
    hits = []
    for i in range(len(pos)):
        others = np.ones(sim.shape[1], dtype=bool)
        others[[int(pos[i]), *[int(s) for s in semi[i] if s >= 0]]] = False
        hits.append(not (sim[i, others] > sim[i, pos[i]]).any())
    return 100.0 * np.mean(hits), sim.argmax(1)


class TestVigorRecall:
    def test_planted(self, device):
        ref = torch.eye(6)
        q = torch.tensor(
            [
                [1.0, 0.2, 0.0, 0.0, 0.0, 0.0],  # positive 0 first -> R@1 and hit
                [0.3, 1.0, 0.0, 0.0, 0.0, 0.0],  # semi-positive 1 first -> hit, not R@1
                [0.3, 0.0, 0.0, 0.0, 1.0, 0.0],  # unrelated 4 first -> neither
                # top-1 is semi-positive 2, but unrelated 3 also beats the positive 4: a miss under
                # Sample4Geo's rule ("nothing but semi-positives above the positive")
                [0.0, 0.0, 1.0, 0.9, 0.8, 0.0],
            ]
        )
        pos = torch.tensor([0, 0, 0, 4])
        semi = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3], [2, -1, -1]])
        res = vigor_recall(q.to(device), ref.to(device), pos, semi, ks=(1, 2, 3))
        assert res.recall.recall_at == {1: 25.0, 2: 75.0, 3: 100.0}  # ranks 0, 1, 1, 2
        assert res.hit_rate == 50.0
        assert res.top1_index.tolist() == [0, 1, 4, 2]
        assert res.as_dict()["hit_rate"] == 50.0 and "R@1%" in res.as_dict()

    def test_recall_counts_only_the_positive(self):
        g = torch.Generator().manual_seed(1)
        ref = torch.randn(500, 16, generator=g)
        pos = torch.randint(0, 500, (200,), generator=g)
        q = ref[pos] + 1.2 * torch.randn(200, 16, generator=g)
        semi = torch.randint(0, 500, (200, 3), generator=g)
        res = vigor_recall(q, ref, pos, semi, chunk_size=33)
        plain = retrieval_recall(q, ref, gt_index=pos)
        assert res.recall.as_dict() == plain.as_dict()

    def test_hit_rate_matches_dense_argmax(self):
        g = torch.Generator().manual_seed(2)
        ref = torch.randn(400, 8, generator=g)
        pos = torch.randint(0, 400, (300,), generator=g)
        q = ref[pos] + 0.9 * torch.randn(300, 8, generator=g)
        # semi-positives: neighbours of the positive in descriptor space make hits likely
        semi = torch.stack([(pos + k) % 400 for k in (1, 2, 3)], 1)
        semi[::7, 2] = -1
        expected_hit, expected_top1 = _dense_hit_rate(q, ref, pos.numpy(), semi.numpy())
        res = vigor_recall(q, ref, pos, semi, chunk_size=41)
        assert res.hit_rate == pytest.approx(expected_hit)
        np.testing.assert_array_equal(res.top1_index.numpy(), expected_top1)
        assert res.hit_rate >= res.recall.recall_at[1]

    def test_official_top1pct_rule(self):
        ref = torch.eye(250)
        res = vigor_recall(ref, ref, torch.arange(250), None, top1pct_rule="int_plus_one")
        assert res.recall.top1pct_k == 3 and res.hit_rate == 100.0

    def test_exception(self):
        ref = torch.eye(4)
        with pytest.raises(ValueError, match=r"\(N_q, S\)"):
            vigor_recall(ref, ref, torch.arange(4), torch.zeros(3, 3, dtype=torch.long))
        with pytest.raises(ValueError, match="-1"):
            vigor_recall(ref, ref, torch.arange(4), torch.full((4, 3), -2))
        with pytest.raises(TypeError, match="integer"):
            vigor_recall(ref, ref, torch.arange(4), torch.zeros(4, 3))


class TestMeterLevel:
    def test_centre_prediction_error(self):
        centres = np.array([[41.88, -87.63], [41.8801, -87.63], [47.6, -122.33]])
        queries = np.array([[41.8801, -87.63], [41.8801, -87.63]])
        errors = localisation_errors(torch.tensor([0, 1]), centres, queries)
        assert errors[0] == pytest.approx(great_circle_distance(centres[0], queries[0]))
        assert errors[0] == pytest.approx(0.0001 * np.pi / 180 * 6_371_004, rel=1e-4)  # ~11.1 m
        assert errors[1] < 0.15  # float64 floor of the law of cosines

    def test_offset_follows_vigor_sign_convention(self):
        # panorama 10 m north and 5 m east of the tile centre: image row = 320 + d0 (rows grow south),
        # column = 320 - d1 as in VIGOR's visualisation -> d0 = -10 m / mpp, d1 = -5 m / mpp
        centre = np.array([[40.75, -73.98]])
        north, east = 10.0, 5.0
        lat = centre[0, 0] + np.rad2deg(north / 6_371_004)
        lon = centre[0, 1] + np.rad2deg(east / (6_371_004 * np.cos(np.deg2rad(centre[0, 0]))))
        truth = np.array([[lat, lon]])
        delta = np.array([[-north / VIGOR_METERS_PER_PIXEL, -east / VIGOR_METERS_PER_PIXEL]])
        pred = vigor_offset_to_latlon(centre, delta)
        assert great_circle_distance(pred, truth)[0] < 0.15
        err_centre = localisation_errors(np.array([0]), centre, truth)[0]
        err_offset = localisation_errors(np.array([0]), centre, truth, offset_px=delta)[0]
        assert err_centre == pytest.approx(np.hypot(north, east), rel=1e-3) and err_offset < 0.15
        # a full half-tile offset moves by 320 * 0.114 m
        moved = vigor_offset_to_latlon(centre, np.array([[320.0, 0.0]]))
        assert great_circle_distance(moved, centre)[0] == pytest.approx(320 * 0.114, abs=0.2)

    def test_thresholds(self):
        t = vigor_thresholds()
        assert t.shape == (499,)
        assert t[0] == pytest.approx(1.1**0.2) and t[-1] == pytest.approx(1.1 ** (499 / 5))
        assert np.all(np.diff(t) > 0)

    def test_accuracy_is_strictly_below(self):
        errors = np.array([0.5, 1.0, 3.0, 10.0, 10.0, 250.0])
        c = meter_level_accuracy(errors, thresholds=[1.0, 10.0, 10.0001, 1000.0])
        np.testing.assert_allclose(c.accuracy, [100 / 6, 300 / 6, 500 / 6, 100.0])
        full = meter_level_accuracy(errors)
        assert full.thresholds.shape == full.accuracy.shape == (499,)
        expected = [100.0 * np.mean(errors < t) for t in vigor_thresholds()]
        np.testing.assert_allclose(full.accuracy, expected)
        assert full.at(10.0) == pytest.approx(
            100.0 * np.mean(errors < full.thresholds[np.argmin(abs(full.thresholds - 10))])
        )

    def test_plot(self):
        from matplotlib.figure import Figure

        a = meter_level_accuracy(np.array([1.0, 5.0, 20.0]))
        b = meter_level_accuracy(np.array([2.0, 3.0, 4.0]))
        fig = plot_meter_level_accuracy({"model A": a, "model B": b})
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert len(ax.lines) == 2 and ax.get_xlim() == (1.0, 40.0)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model A", "model B"]
        assert isinstance(plot_meter_level_accuracy(a), Figure)
        assert isinstance(a, MeterLevelCurve)

    def test_exception(self):
        with pytest.raises(ValueError, match="top1_index"):
            localisation_errors(np.array([0.5]), [[0.0, 0.0]], [[0.0, 0.0]])
        with pytest.raises(ValueError, match="lie in"):
            localisation_errors(np.array([3]), [[0.0, 0.0]], [[0.0, 0.0]])
        with pytest.raises(ValueError, match="offset_px"):
            vigor_offset_to_latlon([[0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]])
        with pytest.raises(ValueError, match="errors"):
            meter_level_accuracy(np.zeros((2, 2)))
