import math

import numpy as np
import pytest
import torch

from geo_retrieval.sampling import (
    GPSNeighbourBatchSampler,
    NeighbourBatchSampler,
    SimilarityBatchSampler,
    UniqueIdBatchSampler,
    geo_neighbours,
    haversine_distance,
    rank_slice,
    similarity_neighbours,
)

# tiny models: OpenMP threads only add contention on a shared 2-core machine
pytestmark = pytest.mark.one_thread


class TestHaversine:
    def test_one_degree_of_latitude(self):
        d = haversine_distance(torch.tensor([[10.0, 20.0]]), torch.tensor([[11.0, 20.0]]))
        assert d.dtype == torch.float64
        assert abs(float(d) - 111_195.0) < 50.0  # 1 deg on the mean-radius sphere

    def test_inputs_are_degrees_not_radians(self):
        # Feeding degrees into a radian formula (Sample4Geo's bug) would give ~ 6371 km * 1 rad.
        d = float(haversine_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])))
        assert 110_000 < d < 112_000

    def test_longitude_shrinks_with_latitude(self):
        # At 60 N one degree of longitude is half a degree of latitude on the ground.
        a = torch.tensor([[60.0, 0.0]])
        d_lat = float(haversine_distance(a, torch.tensor([[60.8, 0.0]])))
        d_lon = float(haversine_distance(a, torch.tensor([[60.0, 1.2]])))
        assert d_lon < d_lat
        assert d_lon == pytest.approx(1.2 * 111_195.0 * math.cos(math.radians(60.0)), rel=1e-3)

    def test_exception(self):
        with pytest.raises(ValueError, match="latlon_a"):
            haversine_distance(torch.zeros(3), torch.zeros(1, 2))


class TestGeoNeighbours:
    def test_haversine_order_uses_radians(self):
        # Point 2 is nearer in metres (longitude offset at 60 N) although farther in raw degrees.
        latlon = torch.tensor([[60.0, 0.0], [60.8, 0.0], [60.0, 1.2], [61.5, 2.0]], dtype=torch.float64)
        nn = geo_neighbours(latlon, 2, metric="haversine")
        assert nn[0].tolist() == [2, 1]

    def test_euclidean_utm_and_self_excluded(self):
        utm = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 25.0], [100.0, 100.0]], dtype=torch.float64)
        nn = geo_neighbours(utm, 3, metric="euclidean", block=2)
        assert nn[0].tolist() == [1, 2, 3]
        assert all(i not in row for i, row in enumerate(nn.tolist()))

    def test_groups_excluded(self):
        utm = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]], dtype=torch.float64)
        nn = geo_neighbours(utm, 1, metric="euclidean", groups=["a", "a", "b"])
        assert nn[:, 0].tolist() == [2, 2, 1]

    def test_exception(self):
        with pytest.raises(ValueError, match="metric"):
            geo_neighbours(torch.zeros(3, 2), 1, metric="manhattan")


def _check_unique(batches, groups=None):
    seen = set()
    for b in batches:
        keys = [groups[i] if groups else i for i in b]
        assert len(set(keys)) == len(keys), "duplicate group inside a batch"
        assert not seen & set(b), "sample used twice in an epoch"
        seen |= set(b)


class TestUniqueIdBatchSampler:
    def test_cardinality_and_uniqueness(self):
        s = UniqueIdBatchSampler(103, 10, seed=3)
        batches = list(s)
        assert len(batches) == len(s) == 10 and all(len(b) == 10 for b in batches)
        _check_unique(batches)

    def test_deterministic_by_seed_and_epoch(self):
        a, b = UniqueIdBatchSampler(50, 5, seed=1), UniqueIdBatchSampler(50, 5, seed=1)
        assert list(a) == list(b)
        b.set_epoch(1)
        assert list(a) != list(b)
        a.set_epoch(1)
        assert list(a) == list(b)
        assert list(UniqueIdBatchSampler(50, 5, seed=2)) != list(UniqueIdBatchSampler(50, 5, seed=1))

    def test_groups_never_share_a_batch(self):
        groups = [f"g{i // 3}" for i in range(60)]  # three samples per group (VIGOR-style)
        s = UniqueIdBatchSampler(60, 8, groups=groups, seed=0)
        batches = list(s)
        _check_unique(batches, groups)
        assert len(batches) >= 5

    def test_state_dict_roundtrip(self):
        s = UniqueIdBatchSampler(40, 4, seed=7)
        s.set_epoch(3)
        t = UniqueIdBatchSampler(40, 4, seed=0)
        t.load_state_dict(s.state_dict())
        assert list(t) == list(s)

    def test_exception(self):
        with pytest.raises(ValueError, match="batch_size"):
            UniqueIdBatchSampler(4, 8)
        with pytest.raises(ValueError, match="groups"):
            UniqueIdBatchSampler(4, 2, groups=["a"])


class TestNeighbourSamplers:
    def test_near_neighbours_share_the_anchor_batch(self):
        n, b = 64, 8
        # sample i's neighbours are i+1..i+7 (mod n): with n_near = 7 each anchor fills its batch
        table = torch.stack([(torch.arange(1, 16) + i) % n for i in range(n)])
        s = NeighbourBatchSampler(n, b, neighbours=table, n_near=7, n_far=0, neighbour_range=15, seed=0)
        batches = list(s)
        _check_unique(batches)
        anchor = batches[0][0]
        assert batches[0][1:] == [(anchor + k) % n for k in range(1, 8)]

    def test_far_neighbours_are_random_but_seeded(self):
        n = 200
        table = torch.stack([torch.randperm(n)[:50] for _ in range(n)])
        table = torch.where(table == torch.arange(n)[:, None], (table + 1) % n, table)

        def mk(seed):
            return NeighbourBatchSampler(
                n, 20, neighbours=table, n_near=4, n_far=8, neighbour_range=50, seed=seed
            )

        assert list(mk(0)) == list(mk(0))
        assert list(mk(0)) != list(mk(1))
        _check_unique(list(mk(0)))

    def test_gps_batches_are_geographically_tight(self):
        g = torch.Generator().manual_seed(0)
        utm = torch.rand(400, 2, generator=g, dtype=torch.float64) * 10_000
        gps = GPSNeighbourBatchSampler(16, utm=utm, n_near=8, n_far=4, neighbour_range=32, seed=0)
        rnd = UniqueIdBatchSampler(400, 16, seed=0)

        def spread(batches):  # mean distance to the nearest other batch member
            d = [torch.cdist(utm[b], utm[b]).fill_diagonal_(math.inf).min(1).values.mean() for b in batches]
            return float(np.mean(d))

        _check_unique(list(gps))
        assert spread(list(gps)) < 0.5 * spread(list(rnd))

    def test_gps_needs_one_coordinate_kind(self):
        with pytest.raises(ValueError, match="exactly one"):
            GPSNeighbourBatchSampler(4, latlon=None, utm=None)

    def test_similarity_neighbours_exclude_the_match(self):
        q = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
        r = q.clone()  # each query's most similar reference is its own match
        nn = similarity_neighbours(q, r, 5, block=7)
        assert all(i not in row for i, row in enumerate(nn.tolist()))
        sim = q @ r.T
        sim.fill_diagonal_(-math.inf)
        assert nn[:, 0].tolist() == sim.argmax(1).tolist()

    def test_similarity_sampler_update_and_state(self):
        s = SimilarityBatchSampler(32, 4, n_near=2, n_far=1, neighbour_range=6, seed=0)
        before = list(s)
        q = torch.randn(32, 8)
        s.update(q, q + 0.01 * torch.randn(32, 8))
        assert s.neighbours is not None and s.neighbours.shape == (32, 6)
        after = list(s)
        assert after != before
        t = SimilarityBatchSampler(32, 4, n_near=2, n_far=1, neighbour_range=6, seed=5)
        t.load_state_dict(s.state_dict())
        assert list(t) == after


def test_rank_slice():
    assert rank_slice([0, 1, 2, 3, 4, 5], 1, 2) == [3, 4, 5]
    with pytest.raises(ValueError, match="split"):
        rank_slice([0, 1, 2], 0, 2)
