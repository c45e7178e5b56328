"""A dead model must not score 100 %: tie statistics of the true match (hand-checked), the
:class:`DegenerateDescriptorsError` of the evaluation path, and the no-learning baseline on the same path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from geo_bench.baselines import ColourProfile
from geo_bench.leaderboard.config import TINY_WORLD, get_recipe_or_raise
from geo_bench.leaderboard.data import load_world_split
from geo_bench.leaderboard.evaluation import evaluate_baseline, evaluate_model, expected_protocols
from geo_bench.metrics import (
    DEGENERATE_TIE_SHARE,
    DegenerateDescriptorsError,
    check_descriptors,
    geo_tolerant_recall,
    ranks,
    ranks_with_ties,
    retrieval_recall,
    tie_statistics,
    vigor_recall,
)


def _hand_made() -> tuple[Tensor, Tensor]:
    """10 one-hot references where reference 7 duplicates reference 3; query i is reference i, except
    query 0, which looks like reference 1.

    Expected: queries 3 and 7 rank their match first but tie with the duplicate; query 0's match
    (score 0) ranks second (behind reference 1) and ties with the 8 other zero-score references.
    So tie share 3/10 = 30 %, R@1 9/10 = 90 %, R@1 with ties against the query 7/10 = 70 %.
    """
    ref = torch.eye(10)
    ref[7] = ref[3]
    query = ref.clone()
    query[0] = torch.eye(10)[1]
    return query, ref


class TestTieStatistics:
    @pytest.mark.parametrize("chunk_size", [1, 3, None])
    def test_hand_made(self, chunk_size):
        query, ref = _hand_made()
        opt, pess = ranks_with_ties(query, ref, chunk_size=chunk_size)
        assert opt.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        assert pess.tolist() == [9, 0, 0, 1, 0, 0, 0, 1, 0, 0]
        assert torch.equal(opt, ranks(query, ref)) and torch.equal(
            pess, ranks(query, ref, ties="pessimistic")
        )
        stats = tie_statistics(opt, pess)
        assert stats.as_dict() == {"tie_share": 30.0, "R@1_pessimistic": 70.0}
        res = retrieval_recall(query, ref, tie_stats=True, chunk_size=chunk_size)
        assert res.recall_at[1] == 90.0 and res.tie_stats == stats
        assert res.as_dict()["tie_share"] == 30.0 and res.as_dict()["R@1_pessimistic"] == 70.0

    def test_two_duplicate_references_among_ten(self):
        ref = torch.randn(10, 16, generator=torch.Generator().manual_seed(0))
        ref[9] = ref[2]
        res = retrieval_recall(ref.clone(), ref, tie_stats=True)
        assert res.recall_at[1] == 100.0
        assert res.tie_stats is not None
        assert res.tie_stats.tie_share == 20.0 and res.tie_stats.r1_pessimistic == 80.0
        check_descriptors(ref.clone(), ref, tie_share=res.tie_stats.tie_share)  # legit duplicates: no error

    def test_off_by_default(self):
        query, ref = _hand_made()
        res = retrieval_recall(query, ref)
        assert res.tie_stats is None and "tie_share" not in res.as_dict()
        with pytest.raises(ValueError, match="faiss"):
            retrieval_recall(query, ref, backend="faiss", tie_stats=True)

    def test_custom_similarity(self):
        query, ref = _hand_made()
        res = retrieval_recall(query, ref, tie_stats=True, similarity=lambda q, r: q @ r.T)
        assert res.tie_stats is not None and res.tie_stats.as_dict() == {
            "tie_share": 30.0,
            "R@1_pessimistic": 70.0,
        }

    def test_vigor(self):
        query, ref = _hand_made()
        res = vigor_recall(query, ref, torch.arange(10), tie_stats=True)
        assert res.recall.tie_stats is not None
        assert res.as_dict()["tie_share"] == 30.0 and res.as_dict()["R@1_pessimistic"] == 70.0

    def test_geo_tolerant_ties_with_a_near_reference_do_not_count(self):
        query, ref = _hand_made()
        utm = np.stack([np.arange(10) * 100.0, np.zeros(10)], axis=1)
        res = geo_tolerant_recall(query, ref, utm, utm, tie_stats=True)
        assert res.tie_stats is not None and res.tie_stats.as_dict() == {
            "tie_share": 30.0,
            "R@1_pessimistic": 70.0,
        }
        near = utm.copy()
        near[7] = near[3] + 1.0  # the duplicate of 3 now lies within 5 m of query 3 (and 3 of query 7)
        res = geo_tolerant_recall(query, ref, near, near, tie_stats=True)
        assert res.tie_stats is not None and res.tie_stats.as_dict() == {
            "tie_share": 10.0,
            "R@1_pessimistic": 90.0,
        }


class TestCheckDescriptors:
    def test_zero_norms(self):
        good = torch.randn(200, 8, generator=torch.Generator().manual_seed(1))
        with pytest.raises(DegenerateDescriptorsError, match=r"aerial descriptors.*zero"):
            check_descriptors(good, torch.zeros(200, 8))
        almost = torch.zeros(200, 8)
        almost[0] = 1.0  # 99.5 % zero
        with pytest.raises(DegenerateDescriptorsError, match="ground descriptors"):
            check_descriptors(almost, good)
        some = good.clone()
        some[:10] = 0.0  # 5 % zero: a few blank images, not a collapse
        check_descriptors(some, good)

    def test_tie_share_threshold(self):
        d = torch.randn(10, 8, generator=torch.Generator().manual_seed(2))
        check_descriptors(d, d, tie_share=DEGENERATE_TIE_SHARE - 1)
        with pytest.raises(DegenerateDescriptorsError, match=r"tie share 100 %.*ties count for the query"):
            check_descriptors(d, d, tie_share=100.0, name="safa (small)")
        with pytest.raises(DegenerateDescriptorsError, match=r"safa \(small\)"):
            check_descriptors(d, d, tie_share=100.0, name="safa (small)")

    def test_is_a_value_error(self):
        assert issubclass(DegenerateDescriptorsError, ValueError)


@pytest.fixture(scope="module")
def world_test(tmp_path_factory):
    # 100 test cameras: on 20 the colour baseline's R@1 cannot be told from chance
    return load_world_split(replace(TINY_WORLD, n_test=100), "test", tmp_path_factory.mktemp("world"))


def _zeroed(name: str) -> tuple[nn.Module, Any]:
    from geo_retrieval.recipes import build

    recipe = get_recipe_or_raise(name, "small")
    torch.manual_seed(0)
    model = build(recipe)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model, recipe


class _Constant(nn.Module):
    """Every image gets the same non-zero descriptor: collapsed, but no zero norms."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(1.0, 2.0, 8))

    def encode_ground(self, x: Tensor) -> Tensor:
        return self.w.expand(x.shape[0], -1)

    def encode_aerial(self, x: Tensor) -> Tensor:
        return self.w.expand(x.shape[0], -1)


class _Pooled(nn.Module):
    """A no-parameter descriptor: 2 x 4 average-pooled colours; distinct images give distinct descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode_ground(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, (2, 4)).flatten(1)

    def encode_aerial(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, (2, 4)).flatten(1)


class _DuplicateAerial(Dataset):
    """``dataset`` with sample 1's aerial replaced by sample 0's (an exact duplicate reference, as in CVUSA)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.dataset[i])
        if i == 1:
            sample["aerial"] = self.dataset[0]["aerial"]
        return sample


class TestEvaluationRefusesCollapsedModels:
    @pytest.mark.parametrize("name", ["safa", "dsm"])
    def test_zero_weights(self, world_test, name):
        model, recipe = _zeroed(name)
        with pytest.raises(DegenerateDescriptorsError, match=rf"{name} \(small\)") as err:
            evaluate_model(model, recipe, "synthetic", world_test)
        msg = str(err.value)
        assert "aerial descriptors" in msg and "collapsed or untrained" in msg

    def test_constant_descriptors(self, world_test):
        recipe = get_recipe_or_raise("safa", "small")
        with pytest.raises(
            DegenerateDescriptorsError, match=r"aerial descriptors are all identical \(tie share 100 %"
        ):
            evaluate_model(_Constant(), recipe, "synthetic", world_test)

    def test_a_duplicate_reference_is_reported_not_refused(self, world_test):
        recipe = get_recipe_or_raise("safa", "small")
        results = evaluate_model(_Pooled(), recipe, "synthetic", _DuplicateAerial(world_test))
        n = len(world_test)
        same = [
            f for f in expected_protocols("synthetic", "test") if f["area"] == "same"
        ]  # a test split alone
        assert [{k: r.protocol[k] for k in flags} for r, flags in zip(results, same, strict=True)] == same
        for r in results:
            # queries 0 and 1 tie with the duplicate; nothing else ties
            assert r.metrics["tie_share"] == pytest.approx(100.0 * 2 / n)
            assert r.metrics["R@1_pessimistic"] <= r.metrics["R@1"]


def test_the_colour_baseline_goes_through_the_same_path(world_test):
    results = evaluate_baseline(ColourProfile(), "synthetic", world_test)
    flags = [f for f in expected_protocols("synthetic", "test") if f["area"] == "same"]  # a test split alone
    assert [r.protocol["orientation_known"] for r in results] == [f["orientation_known"] for f in flags]
    for r in results:
        assert 0.0 <= r.metrics["tie_share"] < DEGENERATE_TIE_SHARE
        assert r.metrics["R@1_pessimistic"] <= r.metrics["R@1"] and r.metrics["R@1"] > 100.0 / len(world_test)
