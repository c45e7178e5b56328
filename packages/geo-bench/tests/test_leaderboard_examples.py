"""The retrieval-examples figure: the top-5 of fixed test queries per recipe (examples.retrieval_examples)
and its plot (plots.plot_retrieval_examples: layout, the true tile framed green)."""

import numpy as np
import pytest
import torch
from PIL import Image

from geo_bench.leaderboard.config import TINY_WORLD, RunConfig, open_datasets
from geo_bench.leaderboard.examples import EXAMPLE_K, EXAMPLE_QUERIES, retrieval_examples
from geo_bench.leaderboard.plots import plot_retrieval_examples


def _fake_test(n: int = 12) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [
        {
            "ground": torch.rand(3, 16, 64, generator=gen) * 0.5,
            "aerial": torch.rand(3, 16, 16, generator=gen) * 0.5,
            "id": f"q{i}",
        }
        for i in range(n)
    ]


def _examples(n_queries: int, *, hit: bool) -> dict:
    tops = [[q, 7, 8, 9, 10] if hit else [6, 7, 8, 9, 10] for q in range(n_queries)]
    return {
        "query_index": list(range(n_queries)),
        "query_id": [f"q{q}" for q in range(n_queries)],
        "true_index": list(range(n_queries)),
        "top_index": tops,
        "top_score": [[0.9, 0.8, 0.7, 0.6, 0.5]] * n_queries,
    }


def _green_pixels(path) -> int:
    """Pixels of the true tile's frame colour (matplotlib 'limegreen', 50/205/50)."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array([50, 205, 50])).sum(-1) < 30).sum())


class TestPlotRetrievalExamples:
    def test_true_tile_framed_green(self, tmp_path):
        test = _fake_test()
        hit = plot_retrieval_examples({"a (small)": _examples(2, hit=True)}, test, tmp_path / "hit.png")
        miss = plot_retrieval_examples({"a (small)": _examples(2, hit=False)}, test, tmp_path / "miss.png")
        assert _green_pixels(hit) > 100  # two frames
        assert _green_pixels(miss) == 0  # the true tile is not in the top 5: no green frame

    def test_layout_one_row_per_recipe_and_query(self, tmp_path):
        test = _fake_test()
        one = plot_retrieval_examples({"a": _examples(2, hit=True)}, test, tmp_path / "one.png")
        two = plot_retrieval_examples(
            {"a": _examples(2, hit=True), "b": _examples(2, hit=False)}, test, tmp_path / "two.png"
        )
        with Image.open(one) as a, Image.open(two) as b:
            (w1, h1), (w2, h2) = a.size, b.size
        assert abs(w1 - w2) < 0.1 * w1  # same columns: the panorama and 5 tiles
        assert h2 > 1.6 * h1  # twice the rows
        assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind

    def test_empty(self, tmp_path):
        with pytest.raises(ValueError, match="empty"):
            plot_retrieval_examples({}, _fake_test(), tmp_path / "x.png")


def test_retrieval_examples_of_a_model(tmp_path):
    """The first EXAMPLE_QUERIES test queries, their top-EXAMPLE_K references best first, the true
    index is the query's own; the scores are the model's cosine similarities."""
    from geo_retrieval.recipes import build, get_recipe

    cfg = RunConfig(world=TINY_WORLD)
    test = open_datasets(cfg, tmp_path / "cache", need_train=False).test
    recipe = get_recipe("safa", "small")
    torch.manual_seed(0)
    model = build(recipe)
    ex = retrieval_examples(model, recipe, test)
    assert ex["query_index"] == ex["true_index"] == list(range(EXAMPLE_QUERIES))
    assert ex["query_id"] == [str(test.ids[i]) if hasattr(test, "ids") else test[i]["id"] for i in range(4)]
    assert ex["n_reference"] == len(test) and ex["k"] == EXAMPLE_K
    for top, scores in zip(ex["top_index"], ex["top_score"]):
        assert len(top) == len(set(top)) == EXAMPLE_K and all(0 <= j < len(test) for j in top)
        assert scores == sorted(scores, reverse=True) and all(-1.001 <= s <= 1.001 for s in scores)
    # the same top-1 as a brute-force pass over single samples
    from geo_retrieval.training import BatchTransform

    transform = BatchTransform.from_recipe(recipe)
    model.eval()
    with torch.no_grad():

        def prep(i):
            s = test[i]
            return transform(
                {"ground": s["ground"][None], "aerial": s["aerial"][None], "id": [s["id"]]}, None, train=False
            )

        a = torch.cat([model.encode_aerial(prep(j)["aerial"]) for j in range(len(test))])
        g = model.encode_ground(prep(0)["ground"])
    assert int((g @ a.T).argmax()) == ex["top_index"][0][0]
