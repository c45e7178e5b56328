"""CCVPE (geo_retrieval.pose): matching, targets, loss parity with upstream, model shapes, gradients,
rotation equivariance, recipes and the trainer hooks."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geo_retrieval.pose import (
    CCVPE,
    CCVPEConfig,
    circular_width_padding,
    decode_pose,
    gaussian_position_target,
    heading_prior_mask,
    orientation_bin_weights,
    rotation_scores,
)
from geo_retrieval.pose.inference import pose_batch_targets, predict_poses, roll_headings
from geo_retrieval.pose.losses import (
    ccvpe_loss,
    orientation_field_loss,
    position_cross_entropy,
    weighted_infonce,
)
from geo_retrieval.pose.recipes import CCVPEModel, CCVPERecipe
from geo_retrieval.protocols import CrossViewEncoder, CustomStepModel, EvaluatesItself
from geo_retrieval.recipes import build, get_recipe, list_recipes
from geo_retrieval.training import Trainer

FIXTURES = Path(__file__).parent / "data" / "upstream" / "ccvpe"


def _upstream_scores(ground: torch.Tensor, aerial: torch.Tensor) -> torch.Tensor:
    """CCVPE's matching loop as its models.py writes it: roll the flat aerial descriptor by -i*c and
    take the cosine with the flat ground descriptor (a test oracle, one rotation at a time)."""
    b, cols, c = ground.shape
    g = ground.reshape(b, cols * c, 1, 1)
    out = []
    for i in range(cols):
        rolled = torch.roll(aerial, shifts=-i * c, dims=1)
        out.append((g * rolled).sum(1) / (rolled.norm(dim=1) * g.norm(dim=1)))
    return torch.stack(out, 1)


def test_rotation_scores_equal_upstream_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    ground = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    aerial = torch.randn(2, 15, 4, 3, generator=gen, dtype=torch.float64)
    ours = rotation_scores(ground, aerial)
    assert ours.shape == (2, 5, 4, 3)
    torch.testing.assert_close(ours, _upstream_scores(ground, aerial), rtol=1e-12, atol=1e-12)
    assert ours.abs().max() <= 1 + 1e-12


def test_rotation_scores_find_the_roll() -> None:
    # an aerial cell holding the ground descriptor rolled by k columns scores 1 in bin k
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(1, 8, 4, generator=gen, dtype=torch.float64)
    for k in (0, 1, 5):
        cell = torch.roll(g, shifts=k, dims=1).reshape(1, 32, 1, 1)  # a[j + k] = g[j]
        s = rotation_scores(g, cell)[0, :, 0, 0]
        assert int(s.argmax()) == k
        assert float(s[k]) == pytest.approx(1.0, abs=1e-12)


def test_rotation_scores_gradcheck() -> None:
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(1, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    a = torch.randn(1, 8, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_scores, (g, a))


def test_rotation_scores_bad_shapes() -> None:
    with pytest.raises(ValueError, match="aerial must be"):
        rotation_scores(torch.zeros(1, 4, 2), torch.zeros(1, 7, 2, 2))
    with pytest.raises(ValueError, match="ground must be"):
        rotation_scores(torch.zeros(4, 2), torch.zeros(1, 8, 2, 2))


def test_heading_prior_mask() -> None:
    m = heading_prior_mask(torch.tensor([0.0, 90.0, 351.0]), 0.0, 20)
    assert m.sum(1).tolist() == [1, 1, 2]  # 351 lies half-way between bins 19 (342) and 0 (360)
    assert bool(m[0, 0]) and bool(m[1, 5]) and bool(m[2, 19]) and bool(m[2, 0])
    wide = heading_prior_mask(torch.tensor([0.0]), 36.0, 20)
    assert wide[0].nonzero().flatten().tolist() == [0, 1, 2, 18, 19]
    assert heading_prior_mask(torch.tensor([10.0]), 180.0, 20).all()
    with pytest.raises(ValueError, match="range_deg"):
        heading_prior_mask(torch.tensor([0.0]), -1.0, 20)


# ------------------------------------------------------------------------------------------------ targets


def test_gaussian_target_peaks_at_the_camera() -> None:
    cam = torch.tensor([[3.0, 10.0], [7.5, 0.0]])
    t = gaussian_position_target(cam, (12, 16), sigma_px=2.0)
    assert t.shape == (2, 1, 12, 16)
    assert t[0, 0, 3, 10] == pytest.approx(1.0)
    assert t[0, 0, 3, 12] == pytest.approx(math.exp(-4 / 8))
    assert t[1, 0, 7, 0] == pytest.approx(t[1, 0, 8, 0])  # half-way between two rows


def test_orientation_bin_weights() -> None:
    w = orientation_bin_weights(torch.tensor([0.0, 9.0, 351.0, 720.0 + 18.0]), 20)
    assert torch.allclose(w.sum(1), torch.ones(4))
    assert w[0, 0] == 1.0
    assert w[1, 0] == pytest.approx(0.5) and w[1, 1] == pytest.approx(0.5)
    assert w[2, 19] == pytest.approx(0.5) and w[2, 0] == pytest.approx(0.5)
    assert w[3, 1] == pytest.approx(1.0)


def test_losses_equal_upstream_fixture() -> None:
    """CCVPE's own losses.py (run by make_fixtures.py, see the README beside the fixture)."""
    f = np.load(FIXTURES / "losses.npz")
    t = {k: torch.from_numpy(f[k]) for k in f.files}
    assert float(weighted_infonce(t["scores"], t["labels"])) == pytest.approx(float(t["infonce"]), rel=1e-6)
    assert float(position_cross_entropy(t["logits"], t["gt"])) == pytest.approx(float(t["ce"]), rel=1e-6)
    heading = torch.rad2deg(torch.atan2(t["gt_ori"][:, 1, 0, 0], t["gt_ori"][:, 0, 0, 0]))
    ori = orientation_field_loss(t["ori"], heading, t["gauss"])
    assert float(ori) == pytest.approx(float(t["orientation"]), rel=1e-5)


def test_ccvpe_loss_parts_and_bad_levels() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 64, 64, generator=gen, requires_grad=True)
    scores = [torch.rand(2, 8, s, s, generator=gen) for s in (1, 2, 4, 8, 16, 32)]
    field = F.normalize(torch.randn(2, 2, 64, 64, generator=gen), dim=1)
    out = ccvpe_loss(
        logits,
        scores,
        field,
        torch.tensor([[10.0, 20.0], [40.0, 5.5]]),
        torch.tensor([0.0, 100.0]),
        sigma_px=2.0,
    )
    total = out["ce"] + 1e4 * out["infonce"] + 10 * out["orientation"]
    assert float(out["loss"].detach()) == pytest.approx(float(total), rel=1e-5)
    out["loss"].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="does not divide"):
        ccvpe_loss(logits, [torch.rand(2, 8, 3, 3)], field, torch.zeros(2, 2), torch.zeros(2), sigma_px=2.0)


# ------------------------------------------------------------------------------------------------ model


def _tiny_config(**changes: object) -> CCVPEConfig:
    base = dataclasses.replace(get_recipe("ccvpe", "small").ccvpe, **changes)  # type: ignore[arg-type]
    return base


def _tiny_model(**changes: object) -> CCVPE:
    r = get_recipe("ccvpe", "small")
    return CCVPE(
        _tiny_config(**changes),
        ground_backbone=r.backbone,
        ground_backbone_kwargs=dict(r.backbone_kwargs),
        ground_size=(32, 128),
        aerial_size=128,
    )


def test_model_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = _tiny_model()
    g, a = torch.randn(2, 3, 32, 128), torch.randn(2, 3, 128, 128)
    out = model(g, a)
    assert out.logits.shape == (2, 1, 128, 128)
    assert out.field.shape == (2, 2, 128, 128)
    assert [tuple(s.shape) for s in out.scores] == [(2, 16, n, n) for n in (2, 4, 8, 16, 32, 64)]
    assert torch.allclose(out.field.norm(dim=1), torch.ones(2, 128, 128), atol=1e-5)
    loss = ccvpe_loss(
        out.logits,
        out.scores,
        out.field,
        torch.tensor([[60.0, 70.0], [10.0, 100.0]]),
        torch.tensor([30.0, 200.0]),
        sigma_px=2.0,
    )
    loss["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # every part of the model receives a gradient: the two encoders and both decoders
    for part in (
        "ground_encoder",
        "ground_descriptors",
        "aerial_encoder",
        "cells",
        "up",
        "conv",
        "orientation_up",
        "orientation_conv",
    ):
        grads = [
            p.grad.abs().sum()
            for n, p in model.named_parameters()
            if n.startswith(part) and p.grad is not None
        ]
        assert grads and float(sum(grads)) > 0, part


def test_model_rejects_bad_inputs() -> None:
    model = _tiny_model()
    with pytest.raises(ValueError, match="divisible by 64"):
        model(torch.randn(1, 3, 32, 128), torch.randn(1, 3, 100, 100))
    with pytest.raises(ValueError, match="6 entries"):
        _tiny_config(descriptor_channels=(4, 4))


def test_circular_padding_makes_the_ground_descriptor_rotate_with_the_panorama() -> None:
    """Rolling the panorama by one feature column (8 px at stride 8) rolls every level's ground
    descriptor by one column exactly, and the rotation scores move by one bin."""
    torch.manual_seed(0)
    model = _tiny_model().eval()
    g = torch.randn(1, 3, 32, 128)
    with torch.no_grad():
        d0 = model.encode_ground(g)
        d1 = model.encode_ground(torch.roll(g, -8, dims=-1))  # heading + 360/16
    for a, b in zip(d0, d1, strict=True):
        torch.testing.assert_close(b, torch.roll(a, -1, dims=1), rtol=1e-4, atol=1e-5)
    # without circular padding the borders break it
    plain = _tiny_model(circular=False).eval()
    with torch.no_grad():
        p0, p1 = plain.encode_ground(g)[0], plain.encode_ground(torch.roll(g, -8, dims=-1))[0]
    assert not torch.allclose(p1, torch.roll(p0, -1, dims=1), atol=1e-4)


def test_circular_width_padding_keeps_weights_and_keys() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.Conv2d(4, 4, 1))
    keys = list(net.state_dict())
    x = torch.randn(1, 3, 8, 16)
    before = net(x)
    circular_width_padding(net)
    assert list(net.state_dict()) == keys
    after = net(x)
    assert after.shape == before.shape
    # the interior (away from the left / right borders) is unchanged
    torch.testing.assert_close(after[..., 2:-2], before[..., 2:-2])


def test_decode_pose_reads_argmax_and_field() -> None:
    logits = torch.full((1, 1, 8, 8), -10.0)
    logits[0, 0, 2, 5] = 10.0
    field = torch.zeros(1, 2, 8, 8)
    field[0, 0, 2, 5], field[0, 1, 2, 5] = 0.0, 1.0  # (cos, sin) of 90 degrees
    from geo_retrieval.pose import CCVPEOutput

    px, heading, prob = decode_pose(CCVPEOutput(logits, field, []))
    assert px.tolist() == [[2.0, 5.0]]
    assert float(heading[0]) == pytest.approx(90.0)
    assert float(prob.sum()) == pytest.approx(1.0)


def test_roll_headings_convention() -> None:
    pano = torch.arange(16.0).view(1, 1, 1, 16)
    rolled, heading = roll_headings(pano, torch.tensor([350.0]), torch.tensor([4]))
    # the centre column (8) now shows what was 4 columns clockwise (column 12): heading + 90
    assert float(rolled[0, 0, 0, 8]) == 12.0
    assert float(heading[0]) == pytest.approx(80.0)


def test_pose_batch_targets_scale_about_the_pixel_edge() -> None:
    batch = {
        "camera_px": torch.tensor([[-0.5, 63.5]]),
        "aerial_px": torch.tensor([64]),
        "heading": torch.tensor([5.0]),
    }
    cam, heading = pose_batch_targets(batch, 128)
    assert cam.tolist() == [[-0.5, 127.5]]  # the image edges map to the image edges
    assert float(heading[0]) == 5.0
    with pytest.raises(KeyError, match="aerial_px"):
        pose_batch_targets({"camera_px": torch.zeros(1, 2), "heading": torch.zeros(1)}, 128)


# ------------------------------------------------------------------------------------------------ recipes


def test_recipes_registered_apart_from_retrieval() -> None:
    assert "ccvpe" not in list_recipes()
    assert list_recipes(task="pose") == ["ccvpe"]
    assert "ccvpe" in list_recipes("small", task=None)
    for variant in ("full", "small"):
        r = get_recipe("ccvpe", variant)
        assert isinstance(r, CCVPERecipe) and r.task == "pose"
    with pytest.raises(ValueError, match="roll panoramas themselves"):
        get_recipe("ccvpe", "small").replace(
            augmentation=dataclasses.replace(get_recipe("ccvpe", "small").augmentation, hflip_p=0.5)
        )
    with pytest.raises(ValueError, match="polar"):
        get_recipe("ccvpe", "small").replace(polar=True)


def test_full_recipe_matches_upstream_part_by_part() -> None:
    """The full model has upstream CVM_VIGOR's parameter count in every part (param_counts.json, made
    by upstream's models.py; README beside it) and its output sizes at the paper's input sizes."""
    m = build(get_recipe("ccvpe", "full"))
    assert isinstance(m, CCVPEModel)
    assert m.bins == 20  # 640 px / 32 = 20 columns: 18-degree bins as upstream
    assert [m.bins * c for c in m.config.descriptor_channels] == [1280, 640, 320, 160, 80, 40]
    counts: dict[str, int] = {}
    for name, p in m.named_parameters():
        part = name.split(".")[0]
        counts[part] = counts.get(part, 0) + p.numel()
    upstream = json.loads((FIXTURES / "param_counts.json").read_text())
    assert counts == upstream
    with torch.no_grad():
        out = m.eval()(torch.randn(1, 3, 320, 640), torch.randn(1, 3, 512, 512))
    assert out.logits.shape == (1, 1, 512, 512) and out.field.shape == (1, 2, 512, 512)
    assert [s.shape[-1] for s in out.scores] == [8, 16, 32, 64, 128, 256]


class _PoseSet(torch.utils.data.Dataset):
    """Random pose samples; the camera sits where the aerial has a bright square (learnable)."""

    def __init__(self, n: int, split: str, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.split = split
        self.cam = torch.randint(16, 48, (n, 2), generator=gen).double()
        self.ground = torch.rand(n, 3, 32, 128, generator=gen)
        self.aerial = torch.rand(n, 3, 64, 64, generator=gen) * 0.2
        for i in range(n):
            r, c = self.cam[i].long().tolist()
            self.aerial[i, :, r - 2 : r + 3, c - 2 : c + 3] = 1.0

    def __len__(self) -> int:
        return len(self.cam)

    def __getitem__(self, i: int) -> dict:
        return {
            "ground": self.ground[i],
            "aerial": self.aerial[i],
            "id": f"{self.split}{i}",
            "camera_px": self.cam[i],
            "aerial_px": 64,
            "heading": 0.0,
            "metres_per_px": 0.5,
        }


def test_trainer_drives_ccvpe_and_selects_on_median_error(tmp_path: Path) -> None:
    recipe = get_recipe("ccvpe", "small").replace(batch_size=4, epochs=2)
    model = build(recipe)
    assert isinstance(model, CustomStepModel) and isinstance(model, EvaluatesItself)
    assert not isinstance(model, CrossViewEncoder)
    trainer = Trainer(
        model, recipe, _PoseSet(8, "train", 0), _PoseSet(4, "val", 1), out_dir=tmp_path, progress=False
    )
    assert trainer.selection_metric == "median_m" and trainer.selection_mode == "min"
    result = trainer.fit()
    vals = [h["val/median_m"] for h in trainer.history]
    assert len(vals) == 2 and all(np.isfinite(vals))
    assert result.best_metric == min(vals)
    assert (tmp_path / "best" / "model.safetensors").exists()
    assert "val/median_m_known" in trainer.history[-1]


def test_predict_poses_maps_back_to_the_dataset_frame() -> None:
    class Oracle(nn.Module):
        aerial_size = 128

        def forward(self, ground, aerial, heading_prior=None, prior_range_deg=180.0):
            from geo_retrieval.pose import CCVPEOutput

            b = ground.shape[0]
            logits = torch.full((b, 1, 128, 128), -20.0)
            logits[:, 0, 20, 100] = 20.0  # always (20, 100) at 128 px
            field = torch.zeros(b, 2, 128, 128)
            field[:, 0] = 1.0
            return CCVPEOutput(logits, field, [])

    ds = _PoseSet(3, "val", 2)
    pred = predict_poses(
        Oracle(),
        ds,
        prepare=lambda b: {**b, "aerial": F.interpolate(b["aerial"], size=(128, 128))},
        orientation="known",
        batch_size=2,
    )
    assert pred.pred_px.tolist() == [[9.75, 49.75]] * 3  # (20.5 / 2 - 0.5, 100.5 / 2 - 0.5) at 64 px
    assert pred.true_px.tolist() == ds.cam.tolist()
    expected = np.linalg.norm((pred.pred_px - pred.true_px) * 0.5, axis=1)
    np.testing.assert_allclose(pred.errors_m(), expected)
    with pytest.raises(ValueError, match="orientation"):
        predict_poses(Oracle(), ds, prepare=lambda b: b, orientation="maybe")


def test_decode_pose_heading_from_the_scores() -> None:
    from geo_retrieval.pose import CCVPEOutput

    logits = torch.full((1, 1, 8, 8), -10.0)
    logits[0, 0, 6, 1] = 10.0  # the cell (1, 0) of a 4x4 finest level
    fine = torch.zeros(1, 16, 4, 4)
    fine[0, 4, 3, 0] = 1.0  # bin 4 = 90 degrees, at the cell holding pixel (6, 1)
    fine[0, 12, 0, 0] = 1.0  # elsewhere: ignored
    out = CCVPEOutput(logits, torch.zeros(1, 2, 8, 8), [fine])
    _, heading, _ = decode_pose(out, heading_from="scores", temperature=0.01)
    assert float(heading[0]) == pytest.approx(90.0, abs=1e-3)
    fine[0, 5, 3, 0] = 1.0  # two equal neighbouring bins: half-way
    _, heading, _ = decode_pose(out, heading_from="scores", temperature=0.01)
    assert float(heading[0]) == pytest.approx(101.25, abs=1e-3)
    with pytest.raises(ValueError, match="heading_from"):
        decode_pose(out, heading_from="compass")
