"""geo_retrieval.ranking: the one rank / recall / top-1% implementation (geo_bench.metrics re-exports it)."""

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F

from geo_retrieval.ranking import (
    TIE_RULES,
    TOP1PCT_RULES,
    _duplicate_columns,
    model_similarity,
    ranks,
    recall_from_ranks,
    retrieval_recall,
    top1pct_k,
)
from geo_retrieval.testing import ScaledInfoNCE, TinyCrossView, tiny_pairs, tiny_recipe
from geo_retrieval.training import Trainer

# tiny models: OpenMP threads only add contention on a shared 2-core machine
pytestmark = pytest.mark.one_thread


def _dot(q, r):
    return q @ r.T


class TestRanks:
    def test_matches_bruteforce(self):
        g = torch.Generator().manual_seed(0)
        q, r = torch.randn(57, 6, generator=g), torch.randn(57, 6, generator=g)
        sim = q @ r.T
        bruteforce = (sim > sim.diagonal()[:, None]).sum(1)
        # the dot product of the raw vectors through ``similarity`` (the default is the cosine)
        assert torch.equal(ranks(q, r, similarity=_dot, chunk_size=10), bruteforce)
        res = retrieval_recall(q, r, similarity=_dot, chunk_size=8)
        assert res.recall_at[1] == pytest.approx(100 * float((bruteforce < 1).double().mean()))
        assert res.recall_at[5] == pytest.approx(100 * float((bruteforce < 5).double().mean()))
        assert res.top1pct_k == 1 and res.n_query == 57

    def test_default_is_cosine(self):
        g = torch.Generator().manual_seed(1)
        q, r = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g)
        cos = F.normalize(q, dim=1) @ F.normalize(r, dim=1).T
        bruteforce = (cos > cos.diagonal()[:, None]).sum(1)
        assert torch.equal(ranks(q, r, chunk_size=7), bruteforce)

    def test_ties_and_gt_index(self):
        q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        r = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # query 0's match (index 1) is tied with 2
        gt = torch.tensor([1, 0])
        assert ranks(q, r, gt_index=gt).tolist() == [0, 0]
        assert ranks(q, r, gt_index=gt, ties="pessimistic").tolist() == [1, 0]
        assert TIE_RULES == ("optimistic", "pessimistic")


def _duplicates_by_brute_force(x: torch.Tensor) -> list[tuple[int, int]]:
    """(member, first copy) pairs from ``torch.unique(dim=0)``: every row equal to an earlier one."""
    _, inverse = torch.unique(x.reshape(len(x), -1), dim=0, return_inverse=True)
    first: dict[int, int] = {}
    pairs = []
    for i, k in enumerate(inverse.tolist()):
        if k in first:
            pairs.append((i, first[k]))
        else:
            first[k] = i
    return sorted(pairs)


class TestDuplicateColumns:
    """The two-stage hash (a few columns first, then the full rows that collide there) finds exactly
    the rows that equal an earlier row, also when many rows agree on the pre-hashed columns."""

    @pytest.mark.parametrize("case", ["random", "copies", "prefix_equal", "sparse", "eye", "float64"])
    def test_matches_brute_force(self, case):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(600, 256, generator=g)
        if case == "copies":
            x[100], x[200], x[599] = x[5], x[5], x[7]
        elif case == "prefix_equal":
            x[:, :: 256 // 32] = 0.0  # every row equal on the sampled columns ...
            x[300] = x[120]  # ... and one true copy
        elif case == "sparse":
            x = torch.zeros(400, 64)
            x[:, 0] = 1.0
            x[::2, 63] = 2.0  # half the rows are copies of row 0, half of row 1 ...
            x[1, 5] = 1.0  # ... except row 1 itself
        elif case == "eye":
            x = torch.eye(300)
        elif case == "float64":
            x = x.double()
            x[10] = x[3]
        members, sources = _duplicate_columns(x)
        got = [] if members is None else sorted(zip(members.tolist(), sources.tolist()))
        assert got == _duplicates_by_brute_force(x)
        if case in ("random", "eye"):
            assert members is None

    def test_negative_zero_is_not_a_copy(self):
        x = torch.tensor([[0.0, 1.0], [-0.0, 1.0]])  # equal values, different bits: scores may differ
        assert _duplicate_columns(x) == (None, None)


class TestTop1pctK:
    def test_rule_names(self):
        assert TOP1PCT_RULES == ("floor", "int_plus_one")
        q = torch.randn(4, 3)
        with pytest.raises(ValueError, match="top1pct_rule"):
            retrieval_recall(q, q, top1pct_rule="ceil")  # dropped: int_plus_one is the rounding-up rule

    def test_top1pct_rules(self):
        q = torch.randn(250, 4)
        assert retrieval_recall(q, q).top1pct_k == 2
        # the trainer's former "ceil" (ceil(N/100) = 3 at N = 250) is "int_plus_one" (int(2.5) + 1 = 3)
        assert retrieval_recall(q, q, top1pct_rule="int_plus_one").top1pct_k == 3

    @pytest.mark.parametrize(("n", "floor_k", "plus_one_k"), [(8884, 88, 89), (10_000, 100, 101)])
    def test_pinned_gallery_sizes(self, n, floor_k, plus_one_k):
        # ceil(N/100) would give 89 at 8,884 but 100 (not 101) at 10,000: int_plus_one differs from it
        assert (top1pct_k(n), top1pct_k(n, "int_plus_one")) == (floor_k, plus_one_k)
        r = torch.full(
            (n,), floor_k, dtype=torch.long
        )  # every match at rank floor_k: a hit only for K > floor_k
        assert recall_from_ranks(r, n).as_dict()["R@1%"] == 0.0
        res = recall_from_ranks(r, n, top1pct_rule="int_plus_one")
        assert (res.top1pct_k, res.top1pct_rule) == (plus_one_k, "int_plus_one")
        assert res.top1pct == pytest.approx(100.0)


class _Dsm:
    similarity_kind = "dsm"

    def similarity(self, g, a):
        return g @ a.T


class TestModelSimilarity:
    def test_cosine_models_use_the_builtin_cosine(self):
        assert model_similarity(TinyCrossView()) is None  # no similarity_kind: cosine

    def test_dsm_models_use_their_own(self):
        m = _Dsm()
        assert model_similarity(m) == m.similarity


class TestTrainerValidation:
    def test_evaluate_is_retrieval_recall_of_its_descriptors(self, tmp_path):
        torch.manual_seed(0)
        train, val = tiny_pairs()
        trainer = Trainer(
            TinyCrossView(), tiny_recipe(), train, val, out_dir=tmp_path, seed=1, loss=ScaledInfoNCE()
        )
        metrics = trainer.evaluate()
        g, a, ids = trainer.embed(val)
        assert len(ids) == len(val) == g.shape[0] == a.shape[0]
        expected = retrieval_recall(g, a, ties="pessimistic").summary()
        assert metrics == expected
        assert list(metrics) == [
            "R@1",
            "R@5",
            "R@10",
            "R@1%",
            "K_1pct",
            "top1pct_rule",
            "n_query",
            "n_reference",
            "ties",
        ]
        assert (metrics["ties"], metrics["top1pct_rule"], metrics["K_1pct"]) == ("pessimistic", "floor", 1)


@pytest.mark.parametrize("module", ["ranking", "embedding"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"geo_retrieval.{module}")
    result = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
