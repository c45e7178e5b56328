"""No-learning baselines: what a matcher without training gets on a dataset (the leaderboard's floor).

Convention:
    :class:`ColourProfile` compares **per-bearing colour profiles**. The panorama's lower half
    (below the horizon: the ground and the bottom of the facades around the camera) and the polar
    transform of the aerial tile (``geo_transforms.polar_transform``, SAFA geometry, column W/2 looks
    north in both views, the sweep clockwise) are both cut into ``sectors`` equal bearing sectors;
    the mean RGB of each sector (optionally in ``bands`` distance bands) is standardised per channel
    across the sectors (zero mean, unit variance: gains and offsets of the colour calibration
    cancel) and the profile is L2-normalised. Known orientation: cosine similarity of the profiles.
    Unknown orientation: :meth:`ColourProfile.aligned_similarity` takes the best of the ``sectors``
    circular shifts (the orientation-aware variant). Inputs are float images in [0, 1] (uint8 is
    divided by 255).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geo_transforms import polar_transform

__all__ = ["BASELINE_NAME", "ColourProfile"]

BASELINE_NAME = "colour-profile (no learning)"


def _as_float(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be (B, 3, H, W), got {tuple(x.shape)}")
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


class ColourProfile:
    """Per-bearing colour-profile matcher (see the module Convention); no parameters, no training.

    A :class:`geo_retrieval.protocols.CrossViewEncoder` (``encode_ground`` / ``encode_aerial`` /
    ``similarity``), so the leaderboard evaluates it like a trained model.

    Args:
        sectors: bearing sectors per full turn.
        bands: distance bands per sector (1: the whole lower half / whole polar image).
        polar_size: (H, W) of the polar aerial the profile is read from.

    Example:
        >>> m = ColourProfile(sectors=8)
        >>> g = m.encode_ground(torch.rand(2, 3, 32, 128))
        >>> a = m.encode_aerial(torch.rand(2, 3, 64, 64))
        >>> m.similarity(g, a).shape, g.shape
        (torch.Size([2, 2]), torch.Size([2, 24]))
    """

    def __init__(self, sectors: int = 16, bands: int = 1, polar_size: tuple[int, int] = (32, 128)) -> None:
        if sectors < 2:
            raise ValueError(f"sectors must be >= 2, got {sectors}")
        if bands < 1:
            raise ValueError(f"bands must be >= 1, got {bands}")
        self.sectors, self.bands, self.polar_size = int(sectors), int(bands), (polar_size[0], polar_size[1])

    def config(self) -> dict[str, object]:
        """The options, for the results record."""
        return {"sectors": self.sectors, "bands": self.bands, "polar_size": list(self.polar_size)}

    def _profile(self, x: Tensor) -> Tensor:
        # x: (B, 3, H, W) with H running far -> near; pool to (B, 3, bands, sectors)
        p = F.adaptive_avg_pool2d(x, (self.bands, self.sectors))
        p = p - p.mean(dim=-1, keepdim=True)
        p = p / p.std(dim=-1, keepdim=True).clamp_min(1e-4)
        return F.normalize(p.flatten(1), dim=1)

    def encode_ground(self, ground: Tensor) -> Tensor:
        """(B, 3, H, W) north-centred panoramas -> (B, 3 * bands * sectors) unit profiles."""
        ground = _as_float(ground, "ground")
        return self._profile(ground[:, :, ground.shape[2] // 2 :])

    def encode_aerial(self, aerial: Tensor) -> Tensor:
        """(B, 3, S, S) north-up aerial tiles (or already polar (B, 3, H, W)) -> unit profiles."""
        aerial = _as_float(aerial, "aerial")
        if aerial.shape[-1] == aerial.shape[-2]:
            aerial = polar_transform(aerial, self.polar_size, center="safa")
        return self._profile(aerial)

    def similarity(self, ground_desc: Tensor, aerial_desc: Tensor) -> Tensor:
        """(Bg, D), (Ba, D) -> (Bg, Ba) cosine similarity (orientation known)."""
        return ground_desc.float() @ aerial_desc.float().T

    def aligned_similarity(self, ground_desc: Tensor, aerial_desc: Tensor) -> Tensor:
        """(Bg, D), (Ba, D) -> (Bg, Ba): the best cosine over the ``sectors`` circular bearing shifts."""
        g = ground_desc.float().reshape(ground_desc.shape[0], -1, self.sectors)
        a = aerial_desc.float().reshape(aerial_desc.shape[0], -1, self.sectors)
        best = None
        for s in range(self.sectors):
            sim = g.roll(s, dims=-1).flatten(1) @ a.flatten(1).T
            best = sim if best is None else torch.maximum(best, sim)
        assert best is not None
        return best
