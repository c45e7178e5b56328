"""Run a pose model over a dataset: predicted camera pixels and headings, in the dataset's frame.

Convention:
    A pose dataset returns the usual sample dict plus ``camera_px`` (2,) float (row, col) of the
    camera in pixels of the aerial image *as the dataset returns it* (pixel centres at integers),
    ``aerial_px`` (int, that image's side), ``heading`` (float degrees clockwise from north of the
    panorama's centre column) and ``metres_per_px`` (at ``aerial_px``). The model sees the tile
    resized to its own input size; predictions are mapped back to the dataset's pixels.

    Orientation settings (CCVPE's protocols, recorded by callers):
    - ``"known"``: the panorama as the dataset returns it, the true heading given as a prior with
      zero range (CCVPE ``--ori_noise 0``);
    - ``"unknown"``: every panorama rolled by a random whole number of columns drawn from a
      generator seeded with ``seed`` (the same rolls at every call), no prior.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .ccvpe import CCVPEOutput, decode_pose

__all__ = ["PosePredictions", "decode_model_pose", "pose_batch_targets", "predict_poses", "roll_headings"]


def roll_headings(ground: Tensor, heading_deg: Tensor, shifts: Tensor) -> tuple[Tensor, Tensor]:
    """Roll each panorama left by ``shifts`` columns and update its heading.

    A panorama at heading ``h`` rolled by ``torch.roll(x, -s)`` shows at its centre column what was
    ``s`` columns to the right (clockwise), so its heading becomes ``h + s * 360 / W``.

    Args:
        ground: (B, C, H, W); heading_deg: (B,); shifts: (B,) integer columns.
    """
    b, _, _, w = ground.shape
    cols = (
        torch.arange(w, device=ground.device).view(1, -1) + shifts.to(ground.device).long().view(-1, 1)
    ) % w
    rolled = ground.gather(3, cols.view(b, 1, 1, w).expand(-1, ground.shape[1], ground.shape[2], -1))
    return rolled, (heading_deg.float() + shifts.float().to(heading_deg.device) * (360.0 / w)).remainder(
        360.0
    )


def pose_batch_targets(batch: Mapping[str, Any], size: int) -> tuple[Tensor, Tensor]:
    """(camera_px at the model's ``size`` (B, 2), heading (B,)) from a collated pose batch.

    Raises:
        KeyError: naming the pose keys a batch lacks.
    """
    missing = [k for k in ("camera_px", "aerial_px", "heading") if k not in batch]
    if missing:
        raise KeyError(
            f"a pose batch needs {missing}: samples must carry camera_px (row, col), aerial_px (the tile side "
            "camera_px refers to) and heading (degrees); see geo_retrieval.pose.inference"
        )
    scale = size / torch.as_tensor(batch["aerial_px"], dtype=torch.float64).view(-1, 1)
    cam = torch.as_tensor(batch["camera_px"], dtype=torch.float64)
    # continuous pixel coordinates (centres at integers) scale about the -0.5 image edge
    cam = (cam + 0.5) * scale - 0.5
    return cam.float(), torch.as_tensor(batch["heading"], dtype=torch.float32)


def decode_model_pose(model: torch.nn.Module, out: CCVPEOutput) -> tuple[Tensor, Tensor, Tensor]:
    """``model.decode(out)`` when the model has its own decoding settings, else :func:`decode_pose`."""
    decode = getattr(model, "decode", None)
    return decode(out) if callable(decode) else decode_pose(out)


@dataclass(frozen=True)
class PosePredictions:
    """Per-query predictions and truth in the dataset's pixel frame (numpy, float64)."""

    ids: list[str]
    pred_px: np.ndarray  # (N, 2) row, col
    true_px: np.ndarray  # (N, 2)
    pred_heading: np.ndarray  # (N,)
    true_heading: np.ndarray  # (N,)
    metres_per_px: np.ndarray  # (N,)
    peak_probability: np.ndarray  # (N,)
    orientation: str

    def en_metres(self) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, true) positions as (east, north) metres relative to the tile's top-left pixel."""
        m = self.metres_per_px[:, None]
        flip = np.array([1.0, -1.0])
        return self.pred_px[:, ::-1] * m * flip, self.true_px[:, ::-1] * m * flip

    def errors_m(self) -> np.ndarray:
        """(N,) position errors in metres."""
        p, t = self.en_metres()
        return np.linalg.norm(p - t, axis=1)


@torch.no_grad()
def predict_poses(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    prepare: Callable[[dict], dict],
    orientation: str = "unknown",
    seed: int = 20_230_522,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> PosePredictions:
    """Predict every sample's camera pixel and heading (see the module docstring).

    Args:
        model: a pose model returning :class:`~geo_retrieval.pose.ccvpe.CCVPEOutput` from
            ``model(ground, aerial, heading_prior, prior_range_deg)``; ``model.aerial_size`` is its input.
        dataset: a pose dataset (module docstring).
        prepare: evaluation preprocessing of a collated batch (normalise, resize; no augmentation).
        orientation: ``"known"`` or ``"unknown"``.
        seed: seed of the unknown-orientation rolls.
    """
    if orientation not in ("known", "unknown"):
        raise ValueError(f"orientation must be 'known' or 'unknown', got {orientation!r}")
    was = model.training
    model.eval()
    size = int(cast(Any, model).aerial_size)
    gen = torch.Generator().manual_seed(seed)
    ids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("pred", "true", "ph", "th", "mpp", "peak")}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        for raw in tqdm(loader, desc=f"pose ({orientation} orientation)", disable=not progress, leave=False):
            _, heading = pose_batch_targets(raw, size)
            batch = prepare(dict(raw))
            ground = batch["ground"].to(device)
            aerial = batch["aerial"].to(device)
            if aerial.shape[-1] != size or aerial.shape[-2] != size:
                raise ValueError(f"prepare must give {size}x{size} aerials, got {tuple(aerial.shape[-2:])}")
            if orientation == "unknown":
                shifts = torch.randint(0, ground.shape[-1], (ground.shape[0],), generator=gen)
                ground, heading = roll_headings(ground, heading.to(device), shifts)
                out: CCVPEOutput = model(ground, aerial)
            else:
                out = model(ground, aerial, heading.to(device), 0.0)
            pred, pred_heading, prob = decode_model_pose(model, out)
            aerial_px = torch.as_tensor(raw["aerial_px"], dtype=torch.float64).view(-1, 1)
            back = aerial_px / size
            parts["pred"].append(((pred.double().cpu() + 0.5) * back - 0.5).numpy())
            parts["true"].append(torch.as_tensor(raw["camera_px"], dtype=torch.float64).numpy())
            parts["ph"].append(pred_heading.double().cpu().numpy())
            parts["th"].append(heading.double().cpu().numpy())
            parts["mpp"].append(torch.as_tensor(raw["metres_per_px"], dtype=torch.float64).view(-1).numpy())
            parts["peak"].append(prob.flatten(1).amax(dim=1).double().cpu().numpy())
            ids.extend(str(i) for i in raw["id"])
    finally:
        model.train(was)
    cat = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
    return PosePredictions(
        ids=ids,
        pred_px=cat["pred"].reshape(-1, 2),
        true_px=cat["true"].reshape(-1, 2),
        pred_heading=cat["ph"],
        true_heading=cat["th"],
        metres_per_px=cat["mpp"],
        peak_probability=cat["peak"],
        orientation=orientation,
    )
