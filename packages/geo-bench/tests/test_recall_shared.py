"""One recall and one embedding loop: geo_bench.metrics.recall re-exports geo_retrieval.ranking, and the
trainer's validation, the leaderboard and search give the same descriptors and the same numbers."""

from __future__ import annotations

import torch

import geo_bench.metrics as metrics
from geo_bench.leaderboard.evaluation import _embed, _recall
from geo_bench.metrics import retrieval_recall, top1pct_k
from geo_retrieval import ranking
from geo_retrieval.ranking import model_similarity
from geo_retrieval.testing import ScaledInfoNCE, TinyCrossView, tiny_pairs, tiny_recipe
from geo_retrieval.training import BatchTransform, Trainer


class TestOneImplementation:
    """geo_bench.metrics.recall re-exports geo_retrieval.ranking; the trainer's validation, the leaderboard
    and search share one recall and one embedding loop (geo_retrieval.embedding)."""

    def test_reexports_the_core(self):
        for name in (
            "RecallResult",
            "TieStats",
            "ranks",
            "ranks_with_ties",
            "recall_curve",
            "recall_from_ranks",
            "score_blocks",
            "tie_statistics",
            "top1pct_k",
            "chunk_size_for",
        ):
            assert getattr(metrics, name) is getattr(ranking, name), name
        assert (top1pct_k(8884), top1pct_k(8884, "int_plus_one")) == (88, 89)
        assert (top1pct_k(10_000), top1pct_k(10_000, "int_plus_one")) == (100, 101)

    def test_trainer_validation_equals_geo_bench_recall(self, tmp_path):
        torch.manual_seed(0)
        train, val = tiny_pairs()
        model = TinyCrossView()
        recipe = tiny_recipe()
        trainer = Trainer(model, recipe, train, val, out_dir=tmp_path, seed=1, loss=ScaledInfoNCE())
        validation = trainer.evaluate()
        g, a, _ = trainer.embed(val)
        # the same numbers from geo-bench on the same descriptors
        res = retrieval_recall(g, a, ties="pessimistic")
        assert {k: validation[k] for k in res.as_dict()} == res.as_dict()
        assert validation["ties"] == res.ties == "pessimistic"
        # the leaderboard embeds with the same loop and scores with the same rule
        transform = BatchTransform.from_recipe(recipe)
        prepare = lambda b: transform(b, None, train=False)  # noqa: E731
        n = trainer.eval_batch_size
        lb_g = _embed(model.encode_ground, val, "ground", prepare, n, torch.device("cpu"), False, "ground")
        lb_a = _embed(model.encode_aerial, val, "aerial", prepare, n, torch.device("cpu"), False, "aerial")
        assert torch.equal(lb_g, g) and torch.equal(lb_a, a)
        lb, proto, _ = _recall(lb_g, lb_a, model_similarity(model))
        assert lb["R@1_pessimistic"] == validation["R@1"]
        assert lb["K_1pct"] == validation["K_1pct"] and proto["top1pct_rule"] == validation["top1pct_rule"]
