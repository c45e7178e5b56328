"""Exact chunked ranks / recall against independent references (dense numpy, torchmetrics)."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.retrieval import RetrievalRecall

from geo_bench.metrics import (
    RecallResult,
    bidirectional_recall,
    chunk_size_for,
    ranks,
    ranks_with_ties,
    recall_curve,
    recall_from_ranks,
    retrieval_recall,
    score_blocks,
    tie_statistics,
    top1pct_k,
)


def _planted(n_q: int = 120, n_extra: int = 60, d: int = 24, seed: int = 0, noise: float = 0.8):
    """Random descriptors; the gallery holds every match plus ``n_extra`` exact duplicates of matches.

    Returns ground (N_q, D), aerial (N_ref, D) float32 and the indices of the duplicated matches.
    """
    g = torch.Generator().manual_seed(seed)
    aerial = torch.randn(n_q, d, generator=g)
    ground = aerial + noise * torch.randn(n_q, d, generator=g)
    dup_of = torch.randperm(n_q, generator=g)[:n_extra]
    aerial = torch.cat([aerial, aerial[dup_of]])  # exact ties with the match for these queries
    return ground, aerial, dup_of


def _numpy_ranks(query: torch.Tensor, reference: torch.Tensor, gt: np.ndarray, ties: str) -> np.ndarray:
    """Dense float64 reference: cosine by explicit row-wise products, then strict/loose counts."""
    q = query.double().numpy()
    r = reference.double().numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    sim = (q[:, None, :] * r[None, :, :]).sum(-1)  # identical rows give bit-identical scores
    pos = sim[np.arange(len(gt)), gt][:, None]
    if ties == "optimistic":
        return (sim > pos).sum(1)
    return (sim >= pos).sum(1) - 1


def _torchmetrics_recall(query, reference, gt, k, ties):
    """The torchmetrics oracle, scores mapped to (0, 2] as 1 + cos. Ties are broken by a nudge of the match
    far smaller than any real score gap: up for optimistic, down for pessimistic."""
    q = torch.nn.functional.normalize(query.double(), dim=1)
    r = torch.nn.functional.normalize(reference.double(), dim=1)
    sim = (q[:, None, :] * r[None, :, :]).sum(-1)
    diffs = (sim - sim.gather(1, gt[:, None])).abs()
    min_gap = diffs[diffs > 0].min().item()
    eps = min_gap / 4
    assert eps > 1e-12
    preds = 1.0 + sim
    target = torch.zeros_like(sim, dtype=torch.bool)
    target[torch.arange(len(gt)), gt] = True
    preds = preds + torch.where(target, eps if ties == "optimistic" else -eps, 0.0)
    assert preds.min() > 0
    indexes = torch.arange(len(gt))[:, None].expand_as(sim)
    metric = RetrievalRecall(top_k=k)
    metric.update(preds.flatten(), target.flatten(), indexes=indexes.flatten())
    return 100.0 * metric.compute().item()


class TestRanks:
    def test_smoke(self, device):
        ground, aerial, _ = _planted()
        r = ranks(ground.to(device), aerial.to(device))
        assert r.shape == (ground.shape[0],) and r.dtype == torch.long and r.device == torch.device(device)

    @pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
    def test_matches_dense_numpy_with_planted_ties(self, device, ties):
        ground, aerial, _ = _planted()
        gt = np.arange(ground.shape[0])
        expected = _numpy_ranks(ground, aerial, gt, ties)
        actual = ranks(ground.to(device), aerial.to(device), ties=ties, chunk_size=17)
        np.testing.assert_array_equal(actual.cpu().numpy(), expected)

    def test_ties_differ_exactly_by_duplicate_count(self):
        # near-perfect matches: optimistic rank 0 everywhere; each duplicate of a match costs one place
        ground, aerial, dup_of = _planted(noise=0.01)
        opt = ranks(ground, aerial)
        pes = ranks(ground, aerial, ties="pessimistic")
        assert (opt == 0).all()
        n_dups = torch.bincount(dup_of, minlength=ground.shape[0])
        torch.testing.assert_close(pes, opt + n_dups)
        r1_opt = retrieval_recall(ground, aerial, ks=(1,)).recall_at[1]
        r1_pes = retrieval_recall(ground, aerial, ks=(1,), ties="pessimistic").recall_at[1]
        assert r1_opt == 100.0
        assert r1_pes == pytest.approx(100.0 * (1 - (n_dups > 0).float().mean().item()))

    def test_shuffled_gallery_with_gt_index(self, device):
        ground, aerial, _ = _planted(seed=3)
        base = ranks(ground.to(device), aerial.to(device), ties="pessimistic")
        perm = torch.randperm(aerial.shape[0], generator=torch.Generator().manual_seed(1))
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel())
        shuffled = aerial[perm]  # new position of old reference j is inv[j]
        gt = inv[: ground.shape[0]]
        again = ranks(ground.to(device), shuffled.to(device), gt_index=gt, ties="pessimistic")
        torch.testing.assert_close(again, base)
        a = retrieval_recall(ground, aerial).as_dict()
        b = retrieval_recall(ground, shuffled, gt_index=gt).as_dict()
        assert a == b

    @pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
    def test_chunk_size_does_not_change_results(self, chunk_size):
        ground, aerial, _ = _planted(seed=5)
        expected = ranks(ground, aerial, chunk_size=ground.shape[0])
        torch.testing.assert_close(ranks(ground, aerial, chunk_size=chunk_size), expected)

    def test_memory_budget_picks_the_chunk(self):
        ground, aerial, _ = _planted(seed=5)
        assert chunk_size_for(aerial.shape[0], 9 * aerial.shape[0] * 10) == 10
        blocks = list(score_blocks(ground, aerial, memory_budget=9 * aerial.shape[0] * 10))
        assert [b.shape[0] for _, _, b in blocks][:2] == [10, 10]
        torch.testing.assert_close(
            ranks(ground, aerial, memory_budget=9 * aerial.shape[0] * 10), ranks(ground, aerial)
        )

    @settings(max_examples=25, deadline=None)
    @given(
        n_q=st.integers(1, 40),
        n_extra=st.integers(0, 40),
        d=st.integers(1, 12),
        chunk=st.integers(1, 50),
        seed=st.integers(0, 2**16),
        ties=st.sampled_from(["optimistic", "pessimistic"]),
    )
    def test_property_matches_numpy_for_any_shape_and_chunk(self, n_q, n_extra, d, chunk, seed, ties):
        g = torch.Generator().manual_seed(seed)
        aerial = torch.randn(n_q + n_extra, d, generator=g)
        aerial[n_q:] = aerial[torch.randint(0, n_q, (n_extra,), generator=g)]  # exact duplicates
        gt = torch.randperm(n_q + n_extra, generator=g)[:n_q]
        ground = aerial[gt] + 0.5 * torch.randn(n_q, d, generator=g)
        expected = _numpy_ranks(ground, aerial, gt.numpy(), ties)
        actual = ranks(ground, aerial, gt_index=gt, ties=ties, chunk_size=chunk)
        np.testing.assert_array_equal(actual.numpy(), expected)

    def test_duplicates_tie_exactly_whatever_the_kernel(self):
        # one query row takes the gemv path, whose tails can score identical rows 1 ulp apart
        g = torch.Generator().manual_seed(0)
        row = torch.randn(1, 10, generator=g)
        aerial = torch.cat([row.expand(29, 10), torch.randn(5, 10, generator=g)])
        ground = row + 0.1 * torch.randn(1, 10, generator=g)
        assert ranks(ground, aerial, ties="pessimistic").item() == 28
        assert ranks(ground, aerial, gt_index=torch.tensor([17])).item() == 0
        blocks = list(score_blocks(ground, aerial))
        assert (blocks[0][2][0, :29] == blocks[0][2][0, 0]).all()

    def test_float_and_bool_counting_paths_agree(self):
        from geo_bench.metrics.recall import _Counter

        block = torch.randint(0, 5, (37, 300)).float()
        t = block[:, :1]
        for strict in (True, False):
            fast = _Counter()(block, t, strict)
            slow = _Counter(float_limit=0)(block, t, strict)
            torch.testing.assert_close(fast, slow)
            torch.testing.assert_close(fast, ((block > t) if strict else (block >= t)).sum(1))

    def test_scale_invariance_normalises_inputs(self):
        ground, aerial, _ = _planted(seed=2, n_extra=0)  # per-row scales would perturb planted ties
        scale = torch.rand(aerial.shape[0], 1) * 10 + 0.1
        torch.testing.assert_close(ranks(ground * 3.0, aerial * scale), ranks(ground, aerial))

    def test_half_precision_input(self):
        ground, aerial, _ = _planted(seed=2)
        r = ranks(ground.half(), aerial.half())
        expected = ranks(ground.half().float(), aerial.half().float())
        torch.testing.assert_close(r, expected)

    def test_custom_similarity_non_flat_descriptors(self):
        # DSM-style: (N, C, W) feature maps, score = max over circular shifts of the gallery
        g = torch.Generator().manual_seed(0)
        aerial = torch.randn(40, 3, 8, generator=g)
        shifts = torch.randint(0, 8, (40,), generator=g)
        ground = torch.stack([torch.roll(a, int(s), dims=-1) for a, s in zip(aerial, shifts)])
        ground = ground + 0.3 * torch.randn(ground.shape, generator=g)

        def aligned(qb: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            rolled = torch.stack([torch.roll(ref, k, dims=-1) for k in range(ref.shape[-1])], 1)
            return torch.einsum("bcw,mscw->bms", qb, rolled).amax(-1)

        r = ranks(ground, aerial, similarity=aligned, chunk_size=9)
        q = ground.double().numpy()
        a = aerial.double().numpy()
        dense = np.stack(
            [np.array([[np.sum(qi * np.roll(aj, k, -1)) for k in range(8)] for aj in a]).max(1) for qi in q]
        )
        expected = (dense > dense[np.arange(40), np.arange(40)][:, None]).sum(1)
        np.testing.assert_array_equal(r.numpy(), expected)

    def test_exception(self):
        ground, aerial, _ = _planted()
        with pytest.raises(TypeError, match="query"):
            ranks(ground.numpy(), aerial)
        with pytest.raises(ValueError, match="share D"):
            ranks(ground[:, :5], aerial)
        with pytest.raises(ValueError, match=r"\(N, D\)"):
            ranks(ground[:, None], aerial)
        with pytest.raises(ValueError, match="ties"):
            ranks(ground, aerial, ties="random")
        with pytest.raises(ValueError, match="gt_index"):
            ranks(ground, aerial, gt_index=torch.arange(3))
        with pytest.raises(ValueError, match="gt_index must lie"):
            ranks(ground, aerial, gt_index=torch.full((ground.shape[0],), aerial.shape[0]))
        with pytest.raises(TypeError, match="integer"):
            ranks(ground, aerial, gt_index=torch.zeros(ground.shape[0]))
        with pytest.raises(ValueError, match="chunk_size"):
            ranks(ground, aerial, chunk_size=0)
        bad = aerial.clone()
        bad[3, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            ranks(ground, bad)
        with pytest.raises(ValueError, match="NaN"):
            ranks(bad, aerial)
        with pytest.raises(ValueError, match="similarity must return"):
            ranks(ground, aerial, similarity=lambda q, r: q @ r.T[:, :3])
        with pytest.raises(ValueError, match="N_q"):
            ranks(aerial, ground)  # more queries than references without gt_index


class TestRetrievalRecall:
    @pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
    def test_matches_torchmetrics_oracle(self, ties):
        ground, aerial, _ = _planted(n_q=100, n_extra=50, seed=7)
        gt = torch.arange(ground.shape[0])
        res = retrieval_recall(ground, aerial, ks=(1, 5, 10), ties=ties)
        assert res.top1pct_k == 1  # floor(150 / 100)
        for k in (1, 5, 10):
            assert res.recall_at[k] == pytest.approx(
                _torchmetrics_recall(ground, aerial, gt, k, ties), abs=1e-4
            )

    def test_result_fields_and_as_dict(self):
        ground, aerial, _ = _planted(n_q=300, n_extra=0)
        res = retrieval_recall(ground, aerial)
        assert isinstance(res, RecallResult)
        d = res.as_dict()
        assert list(d) == ["R@1", "R@5", "R@10", "R@1%", "K_1pct"]
        assert d["K_1pct"] == 3 and res.top1pct == res.recall_at.get(3, d["R@1%"])
        assert (res.n_query, res.n_reference, res.direction, res.ties, res.top1pct_rule) == (
            300,
            300,
            "g2a",
            "optimistic",
            "floor",
        )
        assert 0 <= d["R@1"] <= d["R@5"] <= d["R@10"] <= 100
        assert res.protocol_dict()["tie_rule"] == "optimistic"

    def test_values_from_numpy_ranks(self, device):
        ground, aerial, _ = _planted(seed=11)
        expected_ranks = _numpy_ranks(ground, aerial, np.arange(ground.shape[0]), "optimistic")
        res = retrieval_recall(ground.to(device), aerial.to(device), ks=(1, 3, 7))
        for k in (1, 3, 7):
            assert res.recall_at[k] == pytest.approx(100.0 * np.mean(expected_ranks < k))
        assert res.top1pct == pytest.approx(100.0 * np.mean(expected_ranks < 1))

    @pytest.mark.parametrize(
        ("n", "floor_k", "plus_one_k"),
        [(8884, 88, 89), (10_000, 100, 101), (92_802, 928, 929), (50, 1, 1), (150, 1, 2)],
    )
    def test_top1pct_rules(self, n, floor_k, plus_one_k):
        assert top1pct_k(n) == floor_k
        assert top1pct_k(n, "int_plus_one") == plus_one_k

    def test_top1pct_rules_change_the_value_at_the_boundary(self):
        # ranks 87 and 88 in a gallery of 8,884: floor K=88 keeps only the first, int+1 K=89 both
        r = torch.tensor([87, 88, 88, 200])
        floor = recall_from_ranks(r, 8884)
        plus_one = recall_from_ranks(r, 8884, top1pct_rule="int_plus_one")
        assert (floor.top1pct_k, floor.top1pct) == (88, 25.0)
        assert (plus_one.top1pct_k, plus_one.top1pct) == (89, 75.0)
        assert floor.as_dict()["K_1pct"] == 88 and plus_one.as_dict()["K_1pct"] == 89

    def test_top1pct_through_a_real_gallery(self):
        g = torch.Generator().manual_seed(0)
        aerial = torch.randn(8884, 8, generator=g)
        ground = aerial[:64] + 2.0 * torch.randn(64, 8, generator=g)
        a = retrieval_recall(ground, aerial)
        b = retrieval_recall(ground, aerial, top1pct_rule="int_plus_one")
        r = ranks(ground, aerial)
        assert (a.top1pct_k, b.top1pct_k) == (88, 89)
        assert a.top1pct == pytest.approx(100.0 * (r < 88).float().mean().item())
        assert b.top1pct == pytest.approx(100.0 * (r < 89).float().mean().item())

    def test_other_top_percent(self):
        r = torch.tensor([0, 4, 9, 50])
        res = recall_from_ranks(r, 1000, top_percent=0.5)
        assert res.top1pct_k == 5 and res.top1pct == 50.0
        assert "R@0.5%" in res.as_dict() and res.as_dict()["K_0.5pct"] == 5

    def test_k_larger_than_gallery_is_clipped(self):
        ground, aerial, _ = _planted(n_q=4, n_extra=0, d=8)
        res = retrieval_recall(ground, aerial, ks=(1, 10))
        assert res.recall_at[10] == 100.0

    def test_exception(self):
        ground, aerial, _ = _planted()
        with pytest.raises(ValueError, match="backend"):
            retrieval_recall(ground, aerial, backend="annoy")
        with pytest.raises(ValueError, match="ks"):
            retrieval_recall(ground, aerial, ks=(0, 1))
        with pytest.raises(ValueError, match="top1pct_rule"):
            retrieval_recall(ground, aerial, top1pct_rule="ceil")
        with pytest.raises(ValueError, match="top_percent"):
            retrieval_recall(ground, aerial, top_percent=0)
        with pytest.raises(ValueError, match="direction"):
            retrieval_recall(ground, aerial, direction="up")


class TestRecallCurve:
    def test_matches_brute_force(self):
        r = torch.randint(0, 50, (300,), generator=torch.Generator().manual_seed(0))
        ks = [1, 2, 5, 10, 25, 49, 50, 60, 3]
        curve = recall_curve(r, ks)
        expected = torch.tensor([100.0 * (r < k).double().mean().item() for k in ks], dtype=torch.float64)
        torch.testing.assert_close(curve, expected)

    def test_exception(self):
        with pytest.raises(ValueError, match="ranks"):
            recall_curve(torch.zeros(3), [1])
        with pytest.raises(ValueError, match="ks"):
            recall_curve(torch.zeros(3, dtype=torch.long), [])


class TestBidirectional:
    def test_both_directions(self):
        ground, aerial, _ = _planted(n_q=80, n_extra=0, seed=9)
        perm = torch.randperm(80, generator=torch.Generator().manual_seed(2))
        gt = torch.empty_like(perm)
        gt[perm] = torch.arange(80)  # ground i matches aerial gt[i] in the shuffled gallery
        shuffled = aerial[perm]
        out = bidirectional_recall(ground, shuffled, gt_index=gt, ties="pessimistic")
        assert set(out) == {"g2a", "a2g"}
        assert out["g2a"].direction == "g2a" and out["a2g"].direction == "a2g"
        assert out["g2a"].as_dict() == retrieval_recall(ground, aerial, ties="pessimistic").as_dict()
        assert out["a2g"].as_dict() == retrieval_recall(aerial, ground, ties="pessimistic").as_dict()

    def test_a2g_needs_a_permutation(self):
        ground, aerial, _ = _planted(n_q=10, n_extra=5)
        with pytest.raises(ValueError, match="one-to-one"):
            bidirectional_recall(ground, aerial)


class TestTieStatistics:
    @pytest.mark.parametrize("chunk_size", [7, None])
    def test_one_pass_matches_the_dense_reference(self, chunk_size):
        ground, aerial, dup_of = _planted()
        gt = np.arange(ground.shape[0])
        opt, pess = ranks_with_ties(ground, aerial, chunk_size=chunk_size)
        np.testing.assert_array_equal(opt.numpy(), _numpy_ranks(ground, aerial, gt, "optimistic"))
        np.testing.assert_array_equal(pess.numpy(), _numpy_ranks(ground, aerial, gt, "pessimistic"))
        stats = tie_statistics(opt, pess)
        # exactly the queries whose match was duplicated tie
        assert stats.n_tied == dup_of.numel() and stats.tie_share == 100.0 * dup_of.numel() / ground.shape[0]
        assert stats.r1_pessimistic == 100.0 * float((pess == 0).double().mean())

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="never be below"):
            tie_statistics(torch.tensor([1, 0]), torch.tensor([0, 0]))
        with pytest.raises(ValueError, match="shape"):
            tie_statistics(torch.tensor([0, 0]), torch.tensor([0, 0, 0]))
        with pytest.raises(ValueError, match="integer"):
            tie_statistics(torch.tensor([0.0]), torch.tensor([0.0]))


class TestFaissBackend:
    def test_matches_exact_path_without_ties(self):
        pytest.importorskip("faiss")
        ground, aerial, _ = _planted(n_q=400, n_extra=0, d=32, seed=4, noise=1.5)
        g = torch.Generator().manual_seed(5)
        aerial = torch.cat([aerial, torch.randn(600, 32, generator=g)])  # distractors, no duplicates
        for rule in ("floor", "int_plus_one"):
            exact = retrieval_recall(ground, aerial, top1pct_rule=rule)
            fast = retrieval_recall(ground, aerial, top1pct_rule=rule, backend="faiss", chunk_size=97)
            assert fast.backend == "faiss" and exact.backend == "torch"
            assert fast.as_dict() == pytest.approx(exact.as_dict())

    def test_faiss_with_gt_index(self):
        pytest.importorskip("faiss")
        ground, aerial, _ = _planted(n_q=200, n_extra=0, seed=8, noise=1.2)
        perm = torch.randperm(200, generator=torch.Generator().manual_seed(3))
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(200)
        a = retrieval_recall(ground, aerial[perm], gt_index=inv, backend="faiss")
        b = retrieval_recall(ground, aerial)
        assert a.as_dict() == pytest.approx(b.as_dict())

    def test_faiss_refuses_what_it_cannot_do(self):
        ground, aerial, _ = _planted(n_q=20, n_extra=0)
        with pytest.raises(ValueError, match="pessimistic"):
            retrieval_recall(ground, aerial, backend="faiss", ties="pessimistic")
        with pytest.raises(ValueError, match="similarity"):
            retrieval_recall(ground, aerial, backend="faiss", similarity=lambda q, r: q @ r.T)

    def test_missing_faiss_gives_a_clear_error(self, monkeypatch):
        import sys

        from geo_bench.metrics import MissingDependencyError

        monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
        ground, aerial, _ = _planted(n_q=20, n_extra=0)
        with pytest.raises(MissingDependencyError, match=r"geo-bench\[faiss\]"):
            retrieval_recall(ground, aerial, backend="faiss")


@pytest.mark.parametrize(
    "module",
    ["recall", "geo", "cvact", "orientation", "vigor", "degenerate", "localisation"],
)
def test_docstring_examples(module):
    mod = importlib.import_module(f"geo_bench.metrics.{module}")
    result = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
