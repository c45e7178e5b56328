import sys

import pytest
import torch
import torch.nn.functional as F

from geo_retrieval.heads import dsm_similarity
from geo_retrieval.search import (
    FaissIndex,
    MissingDependencyError,
    dsm_orientations,
    extract_descriptors,
    topk_search,
)
from geo_transforms.testing import BaseTester


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


class TestTopkSearch(BaseTester):
    @pytest.mark.parametrize(("chunk", "ref_chunk", "k"), [(7, 5, 1), (3, 11, 4), (64, None, 10), (1, 1, 3)])
    def test_equals_dense_topk(self, chunk, ref_chunk, k):
        q, r = _unit(23, 8, 0), _unit(37, 8, 1)
        scores, idx = topk_search(q, r, k, chunk_size=chunk, reference_chunk_size=ref_chunk)
        ref_s, ref_i = (q @ r.T).topk(k, dim=1)
        assert torch.equal(idx, ref_i)
        self.assert_close(scores, ref_s)

    def test_custom_similarity_dsm(self):
        torch.manual_seed(0)
        g = torch.randn(5, 3, 2, 6)
        a = torch.randn(9, 3, 2, 12)
        sim = lambda x, y: dsm_similarity(x, y).similarity  # noqa: E731
        scores, idx = topk_search(g, a, 3, chunk_size=2, reference_chunk_size=4, similarity=sim)
        ref_s, ref_i = dsm_similarity(g, a).similarity.topk(3, dim=1)
        assert torch.equal(idx, ref_i)
        self.assert_close(scores, ref_s)

    def test_exception(self):
        q = _unit(3, 4, 0)
        with pytest.raises(ValueError, match="k must be"):
            topk_search(q, q, 4)
        with pytest.raises(ValueError, match="Nq, D"):
            topk_search(q, _unit(3, 5, 0), 1)
        with pytest.raises(ValueError, match="expected"):
            topk_search(q, q, 1, similarity=lambda x, y: x @ y.T[:, :1])


class TestDSMOrientations:
    def test_matches_pairwise_shift(self):
        torch.manual_seed(0)
        g = torch.randn(6, 3, 2, 5)
        a = torch.randn(8, 3, 2, 16)
        match = dsm_similarity(g, a)
        _, idx = match.similarity.topk(3, dim=1)
        shifts = dsm_orientations(g, a, idx, chunk_size=4)
        assert torch.equal(shifts, match.shift.gather(1, idx))
        deg = dsm_orientations(g, a, idx, degrees=True)
        assert torch.allclose(deg, shifts.double() * 22.5)


class TestExtractDescriptors(BaseTester):
    def test_tensor_and_loader_agree(self):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Dropout(0.5))
        x = torch.rand(10, 3, 2, 2)
        model.train()
        out = extract_descriptors(model, x, batch_size=3, progress=False)
        assert model.training  # restored
        model.eval()
        self.assert_close(out, model(x))
        loader = torch.utils.data.DataLoader(
            [{"ground": xi, "id": str(i)} for i, xi in enumerate(x)], batch_size=4
        )
        out2 = extract_descriptors(model, loader, key="ground", progress=False)
        self.assert_close(out2, out)
        assert out2.device.type == "cpu" and out2.dtype == torch.float32
        with pytest.raises(ValueError, match="key="):
            extract_descriptors(model, loader, progress=False)

    def test_bound_method_and_amp(self):
        model = torch.nn.Linear(4, 3)
        out = extract_descriptors(model.forward, torch.rand(5, 4), batch_size=2, amp=True, progress=False)
        assert out.shape == (5, 3) and out.dtype == torch.float32


class TestFaiss(BaseTester):
    def test_equals_exact_on_tie_free_data(self):
        pytest.importorskip("faiss")
        q, r = _unit(17, 16, 2), _unit(50, 16, 3)
        index = FaissIndex(16)
        index.add(r[:20])
        index.add(r[20:])
        assert index.ntotal == 50
        scores, idx = index.search(q, 5)
        ref_s, ref_i = topk_search(q, r, 5, chunk_size=4)
        assert torch.equal(idx, ref_i)
        self.assert_close(scores, ref_s)

    def test_normalize_option(self):
        pytest.importorskip("faiss")
        r = _unit(10, 4, 0)
        index = FaissIndex(4, normalize=True)
        raw = r * 5
        index.add(raw)
        assert torch.allclose(raw, r * 5)  # input untouched
        scores, _ = index.search(r[:2] * 3, 1)
        self.assert_close(scores[:, 0], torch.ones(2))
        with pytest.raises(ValueError, match=r"\(N, 4\)"):
            index.add(torch.rand(2, 3))

    def test_missing_faiss(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "faiss", None)
        with pytest.raises(MissingDependencyError, match=r"geo-retrieval\[faiss\]"):
            FaissIndex(4)
