"""Radius recall and top-1 metre errors (geo_bench.metrics.localisation) against hand cases and a
dense numpy reference."""

import numpy as np
import pytest
import torch

from geo_bench.metrics import (
    localisation_metrics,
    position_distances,
    radius_recall,
    topk_references,
)
from geo_retrieval.geodesy import great_circle_distance


def _dense_reference(q, r, qpos, rpos, ks, radii):
    """Brute force: full score matrix, argsort, Euclidean distances."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    order = np.argsort(-(qn @ rn.T), axis=1, kind="stable")
    dist = np.linalg.norm(rpos[order] - qpos[:, None, :], axis=-1)
    out = {}
    for rad in radii:
        for k in ks:
            out[f"R@{k}<{rad:g}m"] = 100.0 * np.mean((dist[:, :k] < rad).any(axis=1))
    return out, dist[:, 0]


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_matches_a_dense_reference(chunk):
    g = np.random.default_rng(3)
    r = g.normal(size=(60, 16))
    q = r + 0.8 * g.normal(size=r.shape)  # noisy copies: some retrieved right, some wrong
    rpos = g.uniform(0, 500, size=(60, 2))
    qpos = rpos + g.normal(scale=10, size=rpos.shape)
    ks, radii = (1, 5, 10), (25.0, 50.0, 100.0)
    res = localisation_metrics(
        torch.tensor(q, dtype=torch.float32),
        torch.tensor(r, dtype=torch.float32),
        qpos,
        rpos,
        ks=ks,
        radii_m=radii,
        chunk_size=chunk,
    )
    want, err = _dense_reference(q.astype(np.float32), r.astype(np.float32), qpos, rpos, ks, radii)
    for key, value in want.items():
        assert res.recall[key] == pytest.approx(value), key
    np.testing.assert_allclose(res.errors_m, err)
    d = res.as_dict()
    assert d["median_error_m"] == pytest.approx(np.percentile(err, 50))
    assert d["p90_error_m"] == pytest.approx(np.percentile(err, 90))
    # more candidates or a larger radius never lowers the recall
    assert d["R@1<25m"] <= d["R@5<25m"] <= d["R@10<25m"] and d["R@1<25m"] <= d["R@1<50m"] <= d["R@1<100m"]
    assert 0 < d["R@1<25m"] < 100  # the case is not trivial


def test_hand_case_counts_any_close_reference_not_the_true_one():
    # query 0's true tile is 0 but it retrieves tile 1 first (30 m away: a hit within 50 m, not
    # within 25 m) and tile 0 second; the scores are all distinct, so the order is defined
    d = torch.eye(3)
    q = torch.tensor([[0.5, 1.0, 0.1], [1.0, 0.5, 0.1], [1.0, 0.1, 0.5]])
    pos = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 400.0]])
    res = localisation_metrics(q, d, pos, pos, ks=(1, 2), radii_m=(25.0, 50.0))
    assert res.errors_m.tolist() == [30.0, 30.0, 400.0]
    assert res.recall == {
        "R@1<25m": 0.0,
        "R@2<25m": 100.0,
        "R@1<50m": pytest.approx(200 / 3),
        "R@2<50m": 100.0,
    }


def test_strictly_closer_than_the_radius():
    assert radius_recall(np.array([[50.0], [49.999]]), ks=(1,), radii_m=(50.0,)) == {"R@1<50m": 50.0}


def test_latlon_uses_the_great_circle():
    q = np.array([[48.0, 11.0]])
    r = np.array([[48.0, 11.0], [48.001, 11.0]])
    dist = position_distances(q, r, np.array([[1, 0]]), coordinates="latlon")
    np.testing.assert_allclose(dist[0], [great_circle_distance(q, r[1:])[0], 0.0])
    assert 110 < dist[0, 0] < 112  # a thousandth of a degree of latitude is about 111 m


def test_topk_is_best_first_and_clipped():
    d = torch.eye(4)
    q = torch.tensor([[0.9, 0.5, 0.1, 0.0]])
    assert topk_references(q, d, 3).tolist() == [[0, 1, 2]]
    assert topk_references(q, d, 10).shape == (1, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coordinates": "xyz"}, "coordinates"),
        ({"ks": (0,)}, "positive"),
        ({"radii_m": (-1.0,)}, "radii"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    d = torch.eye(3)
    pos = np.zeros((3, 2))
    with pytest.raises(ValueError, match=match):
        localisation_metrics(d, d, pos, pos, **kwargs)


def test_bad_positions_are_named():
    d = torch.eye(3)
    with pytest.raises(ValueError, match="query_pos must be"):
        localisation_metrics(d, d, np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        localisation_metrics(d, d, np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_world_records_carry_radius_metrics(tmp_path):
    """Every world protocol stores R@k<r m and the top-1 errors; a retrieved true match is 0 m away,
    so R@1<r m is at least R@1, and it grows with r."""
    from geo_bench.baselines import ColourProfile
    from geo_bench.leaderboard.config import TINY_WORLD
    from geo_bench.leaderboard.data import load_world
    from geo_bench.leaderboard.evaluation import evaluate_baseline

    _, test = load_world(TINY_WORLD, tmp_path, train=False)
    for res in evaluate_baseline(ColourProfile(), "synthetic", test):
        m = res.metrics
        assert m["R@1<25m"] >= m["R@1"] and m["R@1<25m"] <= m["R@1<50m"] <= m["R@1<100m"]
        assert m["median_error_m"] <= m["p90_error_m"]
        assert m["R@1<25m"] < 100  # not trivial on this world
