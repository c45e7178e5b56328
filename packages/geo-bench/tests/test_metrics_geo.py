"""CVACT_test protocols (geo-tolerant utm_5m, id_1to1, id_1to1_glob); great-circle distance is tested
with geo_retrieval.geodesy (packages/geo-retrieval/tests/test_geodesy.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo_bench.metrics import (
    cvact_test_recall,
    geo_tolerant_recall,
    id_1to1_glob_ids,
    retrieval_recall,
    utm_neighbours,
)

# UTM-like coordinates: a northing near 6.1e6 m needs float64
_E0, _N0 = 690_000.0, 6_090_000.0


def _planted():
    """Five places. Query 0's best reference is 1 (3 m away), query 1's best is 3 (400 m away),
    query 2's best is itself, query 3 ties exactly between a reference 4 m away and a far one."""
    utm = np.array(
        [
            [_E0, _N0],
            [_E0 + 3.0, _N0],
            [_E0 + 500.0, _N0],
            [_E0 + 500.0, _N0 + 400.0],
            [_E0 + 1000.0, _N0 + 4.0],
        ]
    )
    ref = torch.eye(5)
    ref = torch.cat([ref, ref[3:4]])  # reference 5 duplicates reference 3 but lies far away
    ref_utm = np.concatenate([utm, [[_E0 + 5000.0, _N0]]])
    q = torch.zeros(4, 5)
    q[0] = torch.tensor([0.5, 1.0, 0.0, 0.0, 0.0])  # 1 > 0 (match)
    q[1] = torch.tensor([0.0, 0.5, 0.0, 1.0, 0.0])  # 3 (and its far duplicate 5) > 1 (match)
    q[2] = torch.tensor([0.0, 0.0, 1.0, 0.2, 0.0])  # match first
    q[3] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])  # 3 and 5 tie; 3 is the match
    q_utm = utm[:4]
    return q, ref, q_utm, ref_utm


def _dense_topk_geo(q, r, q_utm, r_utm, k, radius):
    """Independent reference: any of the top-k (by a full sort) within radius."""
    qn = q.double().numpy() / np.linalg.norm(q.double().numpy(), axis=1, keepdims=True)
    rn = r.double().numpy() / np.linalg.norm(r.double().numpy(), axis=1, keepdims=True)
    sim = qn @ rn.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    dist = np.linalg.norm(q_utm[:, None, :] - r_utm[order], axis=-1)
    return 100.0 * np.mean((dist <= radius).any(1))


class TestGeoTolerantRecall:
    def test_planted_configuration(self, device):
        q, ref, q_utm, ref_utm = _planted()
        geo = geo_tolerant_recall(q.to(device), ref.to(device), q_utm, ref_utm, ks=(1, 2, 3))
        ids = retrieval_recall(q, ref, ks=(1, 2, 3))
        # query 0: reference 1 is 3 m away -> geo hit at 1, id miss at 1
        # query 1: 3 and 5 beat the match (both far) -> geo rank 2
        # query 2: hit; query 3: tie with a far duplicate, optimistic -> hit
        assert geo.recall_at == {1: 75.0, 2: 75.0, 3: 100.0}
        assert ids.recall_at == {1: 50.0, 2: 75.0, 3: 100.0}
        assert geo.protocol == "utm_5m" and geo.radius_m == 5.0 and ids.protocol == "id"

    def test_pessimistic_ties_count_only_far_references(self):
        q, ref, q_utm, ref_utm = _planted()
        pes = geo_tolerant_recall(q, ref, q_utm, ref_utm, ks=(1, 2), ties="pessimistic")
        # query 3 now loses to its far duplicate (rank 1)
        assert pes.recall_at == {1: 50.0, 2: 75.0}
        # a tie between two *near* references does not count against the query
        ref2 = torch.cat([ref, ref[2:3]])
        ref2_utm = np.concatenate([ref_utm, ref_utm[2:3] + np.array([1.0, 1.0])])
        assert geo_tolerant_recall(q, ref2, q_utm, ref2_utm, ks=(1,), ties="pessimistic").recall_at[1] == 50.0

    def test_radius_is_a_parameter(self):
        q, ref, q_utm, ref_utm = _planted()
        wide = geo_tolerant_recall(q, ref, q_utm, ref_utm, ks=(1,), radius_m=700.0)
        # query 1: reference 3 is about 638 m away -> hit at 1 as well
        assert wide.recall_at[1] == 100.0 and wide.protocol == "utm_700m"
        tight = geo_tolerant_recall(q, ref, q_utm, ref_utm, ks=(1,), radius_m=2.0)
        assert tight.recall_at[1] == retrieval_recall(q, ref, ks=(1,)).recall_at[1]

    def test_no_near_reference_is_never_a_hit(self):
        q, ref, q_utm, ref_utm = _planted()
        far = ref_utm + 10_000.0
        res = geo_tolerant_recall(q, ref, q_utm, far, ks=(1, 6))
        assert res.recall_at == {1: 0.0, 6: 0.0} and res.top1pct == 0.0

    @pytest.mark.parametrize("chunk_size", [1, 13, None])
    def test_matches_dense_topk_formulation(self, chunk_size):
        g = torch.Generator().manual_seed(0)
        n = 300
        ref = torch.randn(n, 16, generator=g)
        q = ref + 1.0 * torch.randn(n, 16, generator=g)
        rng = np.random.default_rng(0)
        utm = np.stack([_E0 + rng.uniform(0, 60, n), _N0 + rng.uniform(0, 60, n)], 1)
        q_utm = utm + rng.normal(0, 0.5, utm.shape)
        res = geo_tolerant_recall(q, ref, q_utm, utm, ks=(1, 5, 10), chunk_size=chunk_size)
        for k in (1, 5, 10):
            assert res.recall_at[k] == pytest.approx(_dense_topk_geo(q, ref, q_utm, utm, k, 5.0))
        assert res.top1pct == pytest.approx(_dense_topk_geo(q, ref, q_utm, utm, 3, 5.0))

    def test_utm_neighbours_uses_float64_metres(self):
        a = np.array([[_E0, _N0], [_E0 + 10.0, _N0]])
        b = np.array([[_E0, _N0 + 5.0], [_E0, _N0 + 5.000001], [_E0 + 10.0, _N0 - 0.3]])
        qi, ri = utm_neighbours(a, b, 5.0)
        assert list(zip(qi.tolist(), ri.tolist())) == [(0, 0), (1, 2)]

    def test_exception(self):
        q, ref, q_utm, ref_utm = _planted()
        with pytest.raises(TypeError, match="float64"):
            geo_tolerant_recall(q, ref, q_utm.astype(np.float32), ref_utm, ks=(1,))
        with pytest.raises(TypeError, match="float64"):
            geo_tolerant_recall(q, ref, torch.from_numpy(q_utm).float(), ref_utm, ks=(1,))
        with pytest.raises(ValueError, match=r"\(4, 2\)"):
            geo_tolerant_recall(q, ref, q_utm[:3], ref_utm, ks=(1,))
        with pytest.raises(ValueError, match="radius_m"):
            geo_tolerant_recall(q, ref, q_utm, ref_utm, radius_m=-1.0)
        bad = q_utm.copy()
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            geo_tolerant_recall(q, ref, bad, ref_utm)


class TestCvactTestProtocols:
    def test_protocol_names_are_recorded(self):
        q, ref, q_utm, ref_utm = _planted()
        utm = cvact_test_recall(q, ref, "utm_5m", ks=(1,), query_utm=q_utm, reference_utm=ref_utm)
        one = cvact_test_recall(q, ref, "id_1to1", ks=(1,))
        glob = cvact_test_recall(q, ref, "id_1to1_glob", ks=(1,))
        assert (utm.protocol, one.protocol, glob.protocol) == ("utm_5m", "id_1to1", "id_1to1_glob")
        assert utm.recall_at[1] == 75.0 and one.recall_at[1] == 50.0 == glob.recall_at[1]
        assert one.protocol_dict()["retrieval_protocol"] == "id_1to1"

    def test_glob_ids_are_the_sorted_intersection(self):
        street = ["zz9", "a01", "m50", "only_street"]
        sat = ["m50", "zz9", "only_sat", "a01"]
        assert id_1to1_glob_ids(street, sat) == ["a01", "m50", "zz9"]

    def test_exception(self):
        q, ref, q_utm, ref_utm = _planted()
        with pytest.raises(ValueError, match="protocol must be one of"):
            cvact_test_recall(q, ref, "utm_25m")
        with pytest.raises(ValueError, match="needs query_utm"):
            cvact_test_recall(q, ref, "utm_5m")
        with pytest.raises(ValueError, match="matches by id"):
            cvact_test_recall(q, ref, "id_1to1", query_utm=q_utm, reference_utm=ref_utm)
