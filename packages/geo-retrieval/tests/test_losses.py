import math

import pytest
import torch
import torch.nn.functional as F

from geo_retrieval.losses import (
    InfoNCELoss,
    SoftMarginTripletLoss,
    cosine_similarity_matrix,
    create_loss,
    list_losses,
)
from geo_transforms.testing import BaseTester


def _reference_triplet(sim, alpha=10.0, utm=None, min_d=25.0, ratio=None):
    """Direct per-pair Python formula of docs/methods.md#soft-margin-triplet with our masking rules."""
    b = sim.shape[0]
    d = [[2 - 2 * float(sim[i, j]) for j in range(b)] for i in range(b)]

    def valid(i, j):
        if i == j:
            return False
        if utm is not None:
            dx = float(utm[i, 0] - utm[j, 0])
            dy = float(utm[i, 1] - utm[j, 1])
            return math.sqrt(dx * dx + dy * dy) >= min_d
        return True

    g2s = [
        math.log1p(math.exp(alpha * (d[i][i] - d[i][j]))) for i in range(b) for j in range(b) if valid(i, j)
    ]
    s2g = [
        math.log1p(math.exp(alpha * (d[j][j] - d[i][j]))) for i in range(b) for j in range(b) if valid(i, j)
    ]

    def reduce(terms):
        if ratio is not None:
            k = math.ceil(ratio * len(terms))
            terms = sorted(terms, reverse=True)[:k]
        return sum(terms) / len(terms)

    return 0.5 * (reduce(g2s) + reduce(s2g))


def _sim(b, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, 8, generator=g, dtype=dtype), dim=1)
    r = F.normalize(q + 0.7 * torch.randn(b, 8, generator=g, dtype=dtype), dim=1)
    return cosine_similarity_matrix(q, r)


class TestSoftMarginTriplet(BaseTester):
    def test_smoke(self, device, dtype):
        loss = create_loss("soft_margin_triplet")
        out = loss(_sim(5).to(device, dtype))
        assert out.shape == () and torch.isfinite(out)

    @pytest.mark.parametrize("b", [2, 3, 6])
    def test_matches_per_pair_formula(self, b):
        sim = _sim(b, seed=b)
        expected = _reference_triplet(sim)
        self.assert_close(SoftMarginTripletLoss()(sim), torch.tensor(expected, dtype=torch.float64))

    def test_matches_formula_with_geo_mask(self):
        sim = _sim(6, seed=3)
        # pairs (0,1) 10 m apart, (2,3) exactly 25 m (kept: strict <), (4,5) 24.9 m
        utm = torch.tensor(
            [[0.0, 0.0], [10.0, 0.0], [500.0, 0.0], [525.0, 0.0], [1000.0, 0.0], [1000.0, 24.9]],
            dtype=torch.float64,
        )
        loss = SoftMarginTripletLoss()
        expected = _reference_triplet(sim, utm=utm)
        self.assert_close(loss(sim, utm=utm), torch.tensor(expected, dtype=torch.float64))
        assert not math.isclose(expected, _reference_triplet(sim))
        mask = loss.valid_mask(6, sim.device, utm)
        assert not mask[0, 1] and not mask[1, 0] and mask[2, 3] and not mask[4, 5]
        assert int(mask.sum()) == 30 - 4

    @pytest.mark.parametrize("ratio", [0.1, 0.3, 1.0])
    def test_matches_formula_with_hard_negatives(self, ratio):
        sim = _sim(7, seed=11)
        utm = torch.arange(14, dtype=torch.float64).reshape(7, 2) * 11.0
        loss = SoftMarginTripletLoss(hard_negative_ratio=ratio)
        expected = _reference_triplet(sim, utm=utm, ratio=ratio)
        self.assert_close(loss(sim, utm=utm), torch.tensor(expected, dtype=torch.float64))

    def test_hard_negative_ratio_changes_loss(self):
        sim = _sim(8, seed=5)
        assert SoftMarginTripletLoss(hard_negative_ratio=0.1)(sim) > SoftMarginTripletLoss()(sim)

    def test_schedule(self):
        loss = create_loss("soft_margin_triplet", schedule=[(0, None), (21, 0.1), (41, 0.05), (61, 0.01)])
        sim = _sim(6, seed=2)
        assert loss.hard_negative_ratio is None
        full = loss(sim)
        for epoch, ratio in [
            (20, None),
            (21, 0.1),
            (40, 0.1),
            (41, 0.05),
            (60, 0.05),
            (61, 0.01),
            (500, 0.01),
        ]:
            loss.set_epoch(epoch)
            assert loss.hard_negative_ratio == ratio
        loss.set_epoch(25)
        self.assert_close(loss(sim), torch.tensor(_reference_triplet(sim, ratio=0.1), dtype=torch.float64))
        assert loss(sim) > full

    def test_exception(self):
        loss = SoftMarginTripletLoss()
        with pytest.raises(ValueError, match="B = 1"):
            loss(torch.ones(1, 1))
        with pytest.raises(ValueError, match=r"\(B, B\)"):
            loss(torch.ones(2, 3))
        with pytest.raises(ValueError, match="utm"):
            loss(torch.eye(3), utm=torch.zeros(2, 2))
        with pytest.raises(ValueError, match="ratio"):
            SoftMarginTripletLoss(hard_negative_ratio=0.0)
        with pytest.raises(ValueError, match="increasing"):
            SoftMarginTripletLoss(schedule=[(10, 0.1), (0, None)])
        with pytest.raises(ValueError, match="either"):
            SoftMarginTripletLoss(hard_negative_ratio=0.5, schedule=[(0, None)])
        with pytest.raises(ValueError, match="unknown loss"):
            create_loss("nope")

    def test_all_pairs_masked_is_zero_not_nan(self):
        sim = _sim(3).requires_grad_(True)
        out = SoftMarginTripletLoss()(sim, utm=torch.zeros(3, 2, dtype=torch.float64))
        out.backward()
        assert out.item() == 0.0 and torch.isfinite(sim.grad).all()

    def test_b2_is_finite(self):
        sim = _sim(2).requires_grad_(True)
        out = SoftMarginTripletLoss()(sim)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(sim.grad).all()

    def test_gradcheck(self):
        sim = _sim(4).requires_grad_(True)
        utm = torch.tensor([[0.0, 0.0], [5.0, 0.0], [100.0, 0.0], [300.0, 0.0]], dtype=torch.float64)
        assert self.gradcheck(lambda s: SoftMarginTripletLoss(hard_negative_ratio=0.5)(s, utm=utm), (sim,))


def _reference_infonce(sim, scale, eps):
    b = sim.shape[0]

    def ce(logits):
        total = 0.0
        for i in range(b):
            logp = torch.log_softmax(logits[i], dim=0)
            target = torch.full((b,), eps / b, dtype=logits.dtype)
            target[i] += 1 - eps
            total += float(-(target * logp).sum())
        return total / b

    logits = scale * sim
    return 0.5 * (ce(logits) + ce(logits.T))


class TestInfoNCE(BaseTester):
    def test_init(self):
        loss = create_loss("infonce")
        assert isinstance(loss.logit_scale, torch.nn.Parameter)
        assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
        assert loss.label_smoothing == 0.1
        assert "infonce" in list_losses() and "soft_margin_triplet" in list_losses()

    def test_matches_manual_cross_entropy(self):
        sim = _sim(5, seed=1)
        loss = InfoNCELoss().double()
        expected = _reference_infonce(sim, math.exp(loss.logit_scale.item()), 0.1)
        self.assert_close(loss(sim), torch.tensor(expected, dtype=torch.float64))
        no_smooth = InfoNCELoss(label_smoothing=0.0).double()
        assert abs(no_smooth(sim).item() - loss(sim).item()) > 1e-3

    def test_logit_scale_learns(self):
        sim = _sim(4)
        loss = InfoNCELoss().double()
        loss(sim).backward()
        assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0

    def test_descriptors_are_normalised(self):
        q = torch.randn(4, 6, dtype=torch.float64)
        r = torch.randn(4, 6, dtype=torch.float64)
        self.assert_close(cosine_similarity_matrix(3 * q, 0.5 * r), cosine_similarity_matrix(q, r))
        with pytest.raises(ValueError, match="Nq, D"):
            cosine_similarity_matrix(q, r[:, :3])

    def test_exception(self):
        with pytest.raises(ValueError, match="B = 1"):
            InfoNCELoss()(torch.ones(1, 1))

    def test_gradcheck(self):
        sim = _sim(3).requires_grad_(True)
        assert self.gradcheck(lambda s: InfoNCELoss().double()(s), (sim,))
