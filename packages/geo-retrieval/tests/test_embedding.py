"""geo_retrieval.embedding: the one batched embedding loop (trainer validation, search, leaderboard)."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from geo_retrieval.embedding import embed, embed_dataset
from geo_retrieval.search import extract_descriptors
from geo_retrieval.testing import ScaledInfoNCE, SyntheticPairs, TinyCrossView, tiny_pairs, tiny_recipe
from geo_retrieval.training import Trainer
from geo_transforms.testing import BaseTester

pytestmark = pytest.mark.one_thread


@pytest.fixture(scope="module")
def pairs():
    return SyntheticPairs(11, aerial_size=16, ground_size=(8, 32), seed=3)


class TestEmbed(BaseTester):
    def test_both_views_in_dataset_order_with_ids(self, pairs):
        torch.manual_seed(0)
        model = TinyCrossView().eval()
        out, ids = embed({"ground": model.encode_ground, "aerial": model.encode_aerial}, pairs, batch_size=4)
        samples = [pairs[i] for i in range(len(pairs))]
        ground = torch.stack([s["ground"] for s in samples])
        aerial = torch.stack([s["aerial"] for s in samples])
        self.assert_close(out["ground"], model.encode_ground(ground))
        self.assert_close(out["aerial"], model.encode_aerial(aerial))
        assert ids == [str(s["id"]) for s in samples]
        assert out["ground"].dtype == torch.float32 and out["ground"].shape == (11, 16)

    def test_eval_mode_restored_and_prepare_applied(self, pairs):
        model = TinyCrossView(dropout=0.9)
        model.train()
        seen = []

        def prepare(batch):
            seen.append(sorted(k for k, v in batch.items() if isinstance(v, torch.Tensor)))
            return {**batch, "ground": batch["ground"] * 0}

        out, _ = embed({"ground": model.encode_ground}, pairs, batch_size=5, prepare=prepare)
        assert model.training  # switched to eval for the pass (dropout off) and back
        model.eval()
        self.assert_close(out["ground"], model.encode_ground(torch.zeros(11, 3, 8, 32)).expand(11, -1))
        assert len(seen) == 3 and {"aerial", "ground"} <= set(seen[0])  # prepare sees the whole batch

    def test_tensor_tuple_and_loader_inputs_agree(self):
        net = nn.Linear(4, 3)
        x = torch.rand(7, 4)
        ref = net(x).detach()
        from_tensor, ids = embed({None: net}, x, batch_size=3)
        from_tuples, _ = embed({0: net}, [(x[:4],), (x[4:],)])
        from_loader, _ = embed({"x": net}, DataLoader([{"x": xi} for xi in x], batch_size=2))
        for out in (from_tensor[None], from_tuples[0], from_loader["x"]):
            self.assert_close(out, ref)
        assert ids == []

    def test_autocast_and_out_device(self):
        net = nn.Linear(4, 3)
        out, _ = embed({None: net}, torch.rand(5, 4), autocast_dtype=torch.bfloat16, out_device="cpu")
        assert out[None].dtype == torch.float32 and out[None].device.type == "cpu"

    def test_exception(self):
        net = nn.Linear(4, 3)
        with pytest.raises(ValueError, match="batch_size"):
            embed({None: net}, torch.rand(5, 4), batch_size=0)
        with pytest.raises(ValueError, match="empty"):
            embed({None: net}, [])
        with pytest.raises(ValueError, match="at least one"):
            embed({}, torch.rand(5, 4))
        with pytest.raises(ValueError, match="key="):
            embed({None: net}, [{"x": torch.rand(2, 4)}])


class TestOneLoop:
    """Search and the trainer's validation produce the same descriptors (the leaderboard's side of the
    pin is in geo-bench's test_metrics_recall)."""

    def test_search_and_trainer_validation_agree(self, tmp_path):
        torch.manual_seed(0)
        train, val = tiny_pairs()
        model = TinyCrossView()
        trainer = Trainer(model, tiny_recipe(), train, val, out_dir=tmp_path, seed=1, loss=ScaledInfoNCE())
        g, a, ids = trainer.embed(val)
        g2, a2, ids2 = embed_dataset(
            model,
            val,
            prepare=lambda b: trainer.transform(b, None, train=False),
            batch_size=trainer.eval_batch_size,
        )
        assert torch.equal(g, g2) and torch.equal(a, a2) and ids == ids2
        # search: the same loop over the prepared images
        batches = [trainer.transform(b, None, train=False) for b in DataLoader(val, batch_size=3)]
        ground = extract_descriptors(model.encode_ground, batches, key="ground", progress=False)
        aerial = extract_descriptors(model.encode_aerial, batches, key="aerial", progress=False)
        torch.testing.assert_close(ground, g)
        torch.testing.assert_close(aerial, a)
