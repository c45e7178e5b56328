"""Batch preprocessing and seeded joint augmentation for cross-view pairs.

Convention:
    batches are dicts of (B, 3, H, W) float images in [0, 1] (uint8 is divided by 255):
    ``"ground"`` a north-centred panorama (column W/2 looks north, clockwise sweep; geo-transforms'
    convention) and ``"aerial"`` a north-up square image, or an already polar-transformed aerial of
    panorama shape. The pipeline, all on the batch's device:

    1. joint augmentation (training only; per sample): horizontal flip of both views (p ``hflip_p``)
       and rotation (p ``rot90_p``, k uniform in {1, 2, 3}): ``rot90(aerial, k)`` with the panorama
       rolled by ``-k*W/4`` (for a polar aerial the same roll), geo-transforms' identity
       ``polar(rot90(A, k)) == roll(polar(A), -k*W/4)``;
    2. orientation noise (``pano_shift_deg``, training; orientation-unknown recipes): a random
       circular roll of the panorama only;
    3. field of view: resize the panorama to ``ground_size`` then keep ``int(fov/360 * W)`` columns
       centred on column W/2 (geo-transforms' ``crop_fov``);
    4. aerial: polar transform to ``aerial_size`` (``polar=True``, square input) or resize;
    5. per-view photometric augmentation (training): colour jitter, Gaussian blur, coarse dropout;
    6. limited field of view at an unknown heading (training, ``fov_mode`` "random" or
       "curriculum", recipes with ``fov=360`` only): per sample a FoV in [lower bound, 360] and a
       window position; geo-transforms' ``limit_fov`` keeps the window in the full-width frame
       and fills the other columns with the normalisation mean (see :class:`Augmentation`);
    7. normalisation ``(x - mean) / std`` (so the filled columns are exactly 0).

    Randomness comes only from the ``torch.Generator`` passed in (the trainer seeds one per step from
    ``(seed, step)``), so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from geo_transforms.panorama import crop_fov, fov_width, limit_fov
from geo_transforms.panorama import joint_hflip as _gt_joint_hflip
from geo_transforms.panorama import joint_rotate as _gt_joint_rotate

if TYPE_CHECKING:
    from ..recipes import Recipe

__all__ = [
    "FOV_MODES",
    "Augmentation",
    "BatchTransform",
    "Normalisation",
    "joint_hflip",
    "joint_rot90",
]


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``(x - mean) / std`` on [0, 1] RGB images.

    ``name`` records the convention: ``"imagenet"``, ``"minus_one_one"`` (mean = std = 0.5, Toker),
    ``"caffe"`` (SAFA/DSM: mean subtraction on the 0-255 scale, no std; channel order kept RGB since
    our backbones are not the TF VGG weights).
    """

    name: str = "imagenet"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def imagenet(cls) -> Normalisation:
        return cls()

    @classmethod
    def minus_one_one(cls) -> Normalisation:
        return cls("minus_one_one", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    @classmethod
    def caffe(cls) -> Normalisation:
        return cls("caffe", (123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255, 1 / 255, 1 / 255))


FOV_MODES = ("fixed", "random", "curriculum")
"""Values of :attr:`Augmentation.fov_mode`."""


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation of a recipe (all probabilities per sample; 0 disables).

    Limited field of view with unknown orientation (``fov_mode``; one model for every FoV): the
    ground input stays a full-width panorama frame; each training sample shows a window of
    ``w = int(fov / 360 * W)`` columns (DSM's rule) at a random heading and every other column holds
    the normalisation mean, i.e. 0 after normalisation (geo-transforms' ``limit_fov``; the
    evaluation convention of geo-bench's limited-FoV protocol). Per sample: ``fov = 360 - (360 -
    lower) * u`` with ``u`` uniform in [0, 1) (a FoV uniform in (lower, 360]), and a roll right by a
    shift uniform in {0, ..., W - 1} (the window's position: unknown orientation). These draws come
    last, after every other draw of the step, from the same seeded generator (resume stays exact).
    The window is cut after the photometric augmentation, so jitter / blur / dropout act on the
    whole panorama (a 5x5 blur mixes 2 hidden columns into each window edge) and the fill stays
    exactly the mean.

    - ``"fixed"`` (default): the recipe's ``fov`` as before (nothing masked, no extra draws).
    - ``"random"``: ``lower = fov_min_deg`` throughout (ConGeo's ``random_fov`` trains 70-360
      degrees, drawn per batch; here per sample).
    - ``"curriculum"``: ``lower`` falls linearly from 360 to ``fov_min_deg`` as training progress
      ``p`` (fractional epochs done / total epochs, passed by the trainer) goes from
      ``fov_curriculum_start`` to ``fov_curriculum_end`` and stays at ``fov_min_deg`` after
      (:meth:`fov_lower_deg`): easy wide views first, the narrowest last. The schedule is our
      choice: SinGeo (Chen et al., CVPR 2026, arXiv 2603.09377, abstract and Fig. 1) trains one
      model for every FoV and orientation with a curriculum, against random-FoV training that
      "implicitly assum[es] all FoVs are equally difficult", but what we could read of it (the
      abstract and introduction; its code is not released, github.com/Yangchen-nudt/SinGeo holds
      only a README) states neither the schedule nor how a narrow view is fed to the model. The
      defaults (linear over the first half of training, then the full range for the second half,
      so training ends on the distribution that is evaluated) are ours.

    Only recipes with ``fov=360`` may set ``fov_mode`` other than "fixed"; evaluation
    (``train=False``) never masks.

    Attributes:
        hflip_p: joint horizontal flip.
        rot90_p: joint rotation by k*90 degrees (panorama roll).
        pano_shift_deg: random panorama roll in [0, pano_shift_deg) degrees (orientation unknown).
        color_jitter: brightness/contrast/saturation strength s (factors in [1-s, 1+s]), per view.
        color_jitter_p: probability of the colour jitter, per view and sample.
        blur_p: probability of a 5x5 Gaussian blur (sigma in [0.1, 1.5]), per view and sample.
        dropout_p: probability of coarse dropout (``dropout_holes`` holes of 10-20% size).
        dropout_holes: (min, max) number of holes.
        fov_mode: "fixed", "random" or "curriculum" (see above).
        fov_min_deg: narrowest training FoV in degrees, in (0, 360] (70: DSM's narrowest test FoV).
        fov_curriculum_start, fov_curriculum_end: training progress in [0, 1] (start < end) over
            which the curriculum's lower bound falls from 360 to ``fov_min_deg``.
    """

    hflip_p: float = 0.0
    rot90_p: float = 0.0
    pano_shift_deg: float = 0.0
    color_jitter: float = 0.0
    color_jitter_p: float = 0.0
    blur_p: float = 0.0
    dropout_p: float = 0.0
    dropout_holes: tuple[int, int] = (10, 25)
    fov_mode: str = "fixed"
    fov_min_deg: float = 70.0
    fov_curriculum_start: float = 0.0
    fov_curriculum_end: float = 0.5

    def __post_init__(self) -> None:
        if self.fov_mode not in FOV_MODES:
            raise ValueError(f"fov_mode must be one of {FOV_MODES}, got {self.fov_mode!r}")
        if not 0 < self.fov_min_deg <= 360:
            raise ValueError(f"fov_min_deg must be in (0, 360] degrees, got {self.fov_min_deg}")
        if not 0 <= self.fov_curriculum_start < self.fov_curriculum_end <= 1:
            raise ValueError(
                "fov_curriculum_start and fov_curriculum_end must satisfy 0 <= start < end <= 1, got "
                f"start={self.fov_curriculum_start}, end={self.fov_curriculum_end}"
            )

    @property
    def enabled(self) -> bool:
        return self.fov_mode != "fixed" or any(
            p > 0
            for p in (
                self.hflip_p,
                self.rot90_p,
                self.pano_shift_deg,
                self.color_jitter_p,
                self.blur_p,
                self.dropout_p,
            )
        )

    def fov_lower_deg(self, progress: float | None = None) -> float:
        """Lower bound of the training FoV range (degrees) at training ``progress`` in [0, 1].

        ``"fixed"``: 360 (no limited-FoV draws). ``"random"``: ``fov_min_deg``. ``"curriculum"``:
        ``360 - (360 - fov_min_deg) * clamp((p - start) / (end - start), 0, 1)``; ``progress`` is
        required and clamped to [0, 1].

        Example:
            >>> aug = Augmentation(fov_mode="curriculum", fov_min_deg=70.0)
            >>> [aug.fov_lower_deg(p) for p in (0.0, 0.25, 0.5, 1.0)]
            [360.0, 215.0, 70.0, 70.0]
        """
        if self.fov_mode == "fixed":
            return 360.0
        if self.fov_mode == "random":
            return float(self.fov_min_deg)
        if progress is None or not math.isfinite(progress):
            raise ValueError(f"fov_mode='curriculum' needs the training progress in [0, 1], got {progress!r}")
        p = min(max(float(progress), 0.0), 1.0)
        start, end = self.fov_curriculum_start, self.fov_curriculum_end
        t = min(max((p - start) / (end - start), 0.0), 1.0)
        return 360.0 - (360.0 - float(self.fov_min_deg)) * t


def joint_hflip(aerial: Tensor, ground: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror both views east-west: aerial left-right, the north-centred panorama about columns 0
    and W/2 (geo-transforms' :func:`~geo_transforms.panorama.joint_hflip`). A non-square (polar)
    aerial is mirrored like the panorama. (B, C, S, S), (B, C, H, W) -> same shapes."""
    if aerial.shape[-1] != aerial.shape[-2]:
        return aerial.flip(-1).roll(1, dims=-1), ground.flip(-1).roll(1, dims=-1)
    return _gt_joint_hflip(aerial, ground)


def joint_rot90(aerial: Tensor, ground: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Rotate the aerial by ``k`` quarter turns (``torch.rot90`` on (H, W), counter-clockwise) and
    roll the panorama by ``-k*W/4`` so the pair stays consistent. A non-square aerial is taken to
    be polar and is rolled like the panorama."""
    k = int(k) % 4
    if k == 0:
        return aerial, ground
    if ground.shape[-1] % 4:
        raise ValueError(f"panorama width must be divisible by 4 for rot90, got {ground.shape[-1]}")
    if aerial.shape[-1] != aerial.shape[-2]:
        if aerial.shape[-1] % 4:
            raise ValueError(f"polar aerial width must be divisible by 4, got {aerial.shape[-1]}")
        return aerial.roll(-k * aerial.shape[-1] // 4, dims=-1), ground.roll(
            -k * ground.shape[-1] // 4, dims=-1
        )
    return _gt_joint_rotate(aerial, ground, k=k)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class _Draws:
    """Random draws for a slice of a global batch: every draw is made for all ``total`` samples of
    the global batch, in a fixed order, and this process keeps rows ``offset .. offset + b``. So
    the DDP ranks together draw exactly what one process draws for the whole batch."""

    def __init__(self, generator: torch.Generator | None, b: int, offset: int, total: int | None) -> None:
        total = b if total is None else int(total)
        if offset < 0 or offset + b > total:
            raise ValueError(f"slice [{offset}, {offset + b}) does not fit a global batch of {total}")
        self.generator, self.b, self.offset, self.total = generator, b, offset, total

    def rand(self, *shape: int) -> Tensor:
        x = torch.rand(self.total, *shape, generator=self.generator)
        return x[self.offset : self.offset + self.b]

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        x = torch.randint(low, high, (self.total, *shape), generator=self.generator)
        return x[self.offset : self.offset + self.b]


class BatchTransform:
    """The recipe's batch pipeline (see module docstring); ``__call__(batch, generator, train)``.

    Args:
        ground_size: panorama (H, W) before the FoV crop.
        aerial_size: aerial (H, W) after the polar transform / resize.
        polar: polar-transform square aerials.
        polar_center: geo-transforms ``center`` (``"safa"`` or ``"pixel"``).
        fov: ground field of view in degrees (360 = full panorama).
        normalisation: the recipe's :class:`Normalisation`.
        augmentation: the recipe's :class:`Augmentation` (used when ``train=True``).
    """

    def __init__(
        self,
        *,
        ground_size: tuple[int, int],
        aerial_size: tuple[int, int],
        polar: bool = False,
        polar_center: str = "safa",
        fov: float = 360.0,
        normalisation: Normalisation | None = None,
        augmentation: Augmentation | None = None,
    ) -> None:
        if not 0 < fov <= 360:
            raise ValueError(f"fov must lie in (0, 360], got {fov}")
        aug = augmentation or Augmentation()
        if aug.fov_mode != "fixed":
            if fov != 360:
                raise ValueError(
                    f"augmentation.fov_mode={aug.fov_mode!r} needs fov=360 (the full panorama frame that "
                    f"the limited-FoV window is cut from), got fov={fov}"
                )
            if int(aug.fov_min_deg / 360 * ground_size[1]) < 1:  # fov_width's rule
                raise ValueError(
                    f"augmentation.fov_min_deg={aug.fov_min_deg} keeps no column of a ground panorama "
                    f"{ground_size[1]} columns wide"
                )
        self.ground_size = tuple(ground_size)
        self.aerial_size = tuple(aerial_size)
        self.polar = polar
        self.polar_center = polar_center
        self.fov = float(fov)
        self.normalisation = normalisation or Normalisation()
        self.augmentation = aug

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> BatchTransform:
        return cls(
            ground_size=recipe.ground_size,
            aerial_size=recipe.aerial_size,
            polar=recipe.polar,
            polar_center=recipe.polar_center,
            fov=recipe.fov,
            normalisation=recipe.normalisation,
            augmentation=recipe.augmentation,
        )

    @property
    def ground_width(self) -> int:
        """Width of the ground input after the FoV crop (``int(fov/360 * W)``, DSM's rule)."""
        return fov_width(self.fov, self.ground_size[1])

    def __call__(
        self,
        batch: dict,
        generator: torch.Generator | None = None,
        train: bool = False,
        *,
        offset: int = 0,
        global_batch: int | None = None,
        orientation_noise: bool = False,
        progress: float | None = None,
    ) -> dict:
        """Preprocess (and with ``train=True`` augment) a batch.

        Args:
            batch: dict with ``"ground"`` (B, 3, H, W) and ``"aerial"`` (B, 3, h, w).
            generator: seeded generator for the augmentation draws (required when training).
            train: apply the random augmentation.
            offset, global_batch: this batch is rows ``offset .. offset+B`` of a global batch of
                ``global_batch`` samples (DDP); the draws then equal a single process's.
            orientation_noise: with ``train=False``, still apply the random panorama roll
                (``pano_shift_deg``) from ``generator``: unknown-orientation evaluation with
                fixed-seed shifts (DSM's validation assumed known orientation).
            progress: training progress in [0, 1] (fractional epochs done / total epochs), needed
                with ``train=True`` by ``fov_mode="curriculum"``; ignored otherwise.

        Returns:
            A new dict with transformed ``"ground"`` and ``"aerial"`` (other keys untouched).
        """
        ground, aerial = batch["ground"], batch["aerial"]
        for name, x in (("ground", ground), ("aerial", aerial)):
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"batch[{name!r}] must be (B, 3, H, W), got {tuple(x.shape)}")
        ground = ground.float() / 255 if ground.dtype == torch.uint8 else ground.float()
        aerial = aerial.float() / 255 if aerial.dtype == torch.uint8 else aerial.float()
        aug = self.augmentation
        b = ground.shape[0]
        if ((train and aug.enabled) or (orientation_noise and aug.pano_shift_deg > 0)) and generator is None:
            raise ValueError("training augmentation needs a seeded torch.Generator")
        draws = _Draws(generator, b, offset, global_batch)
        if train and (aug.hflip_p > 0 or aug.rot90_p > 0):
            aerial, ground = self._joint(aerial, ground, draws)
        ground = _resize(ground, self.ground_size)
        if (train or orientation_noise) and aug.pano_shift_deg > 0:
            shifts = (draws.rand() * aug.pano_shift_deg / 360.0 * ground.shape[-1]).long().tolist()
            ground = torch.stack([g.roll(-s, dims=-1) for g, s in zip(ground, shifts)])
        if self.fov < 360:
            ground = crop_fov(ground, self.fov)
        if self.polar and aerial.shape[-1] == aerial.shape[-2]:
            from geo_transforms import polar_transform

            aerial = polar_transform(aerial, self.aerial_size, center=self.polar_center)
        else:
            aerial = _resize(aerial, self.aerial_size)
        if train:
            ground = self._photometric(ground, draws)
            aerial = self._photometric(aerial, draws)
        mean = torch.tensor(self.normalisation.mean, device=ground.device).view(1, 3, 1, 1)
        if train and aug.fov_mode != "fixed":
            ground = self._limit_fov(ground, draws, progress, fill=mean.view(3))
        std = torch.tensor(self.normalisation.std, device=ground.device).view(1, 3, 1, 1)
        out = dict(batch)
        out["ground"] = ((ground - mean) / std).contiguous()
        out["aerial"] = ((aerial - mean) / std).contiguous()
        return out

    # -- augmentation pieces ------------------------------------------------------------------------
    def _joint(self, aerial: Tensor, ground: Tensor, draws: _Draws) -> tuple[Tensor, Tensor]:
        aug = self.augmentation
        flip = draws.rand() < aug.hflip_p
        rotate = draws.rand() < aug.rot90_p
        ks = draws.randint(1, 4) * rotate
        if flip.any():
            idx = flip.nonzero().flatten().to(ground.device)
            fa, fg = joint_hflip(aerial[idx], ground[idx])
            aerial, ground = aerial.index_copy(0, idx, fa), ground.index_copy(0, idx, fg)
        for k in (1, 2, 3):
            sel = (ks == k).nonzero().flatten()
            if len(sel):
                idx = sel.to(ground.device)
                ra, rg = joint_rot90(aerial[idx], ground[idx], k)
                aerial, ground = aerial.index_copy(0, idx, ra), ground.index_copy(0, idx, rg)
        return aerial, ground

    def _limit_fov(self, ground: Tensor, draws: _Draws, progress: float | None, fill: Tensor) -> Tensor:
        """Per-sample FoV in (lower, 360] and window position (see :class:`Augmentation`)."""
        lower = self.augmentation.fov_lower_deg(progress)
        w = ground.shape[-1]
        fov = 360.0 - (360.0 - lower) * draws.rand().to(torch.float64)
        shifts = draws.randint(0, w)
        return limit_fov(ground, fov.to(ground.device), shifts.to(ground.device), fill=fill)

    def _photometric(self, x: Tensor, draws: _Draws) -> Tensor:
        aug = self.augmentation
        b, dev = x.shape[0], x.device
        if aug.color_jitter_p > 0 and aug.color_jitter > 0:
            on = (draws.rand() < aug.color_jitter_p).float()
            s = aug.color_jitter
            factors = [1.0 + on * (2 * draws.rand() - 1) * s for _ in range(3)]
            bright, contrast, sat = (f.to(dev).view(b, 1, 1, 1) for f in factors)
            x = (x * bright).clamp(0, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean).clamp(0, 1)
            gray = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
            x = ((x - gray) * sat + gray).clamp(0, 1)
        if aug.blur_p > 0:
            on = draws.rand() < aug.blur_p
            sigma = 0.1 + 1.4 * draws.rand()
            if on.any():
                r = torch.arange(-2, 3, dtype=torch.float32)
                blurred = []
                for i in on.nonzero().flatten().tolist():
                    k1 = torch.exp(-(r**2) / (2 * float(sigma[i]) ** 2))
                    k2 = (k1[:, None] * k1[None, :] / k1.sum() ** 2).to(dev, x.dtype)
                    w = k2.expand(3, 1, 5, 5)
                    blurred.append(F.conv2d(F.pad(x[i : i + 1], (2, 2, 2, 2), mode="replicate"), w, groups=3))
                idx = on.nonzero().flatten().to(dev)
                x = x.index_copy(0, idx, torch.cat(blurred))
        if aug.dropout_p > 0:
            on = draws.rand() < aug.dropout_p
            h, w = x.shape[-2:]
            lo, hi = aug.dropout_holes
            counts = draws.randint(lo, hi + 1)
            fracs = 0.1 + 0.1 * draws.rand(hi, 2)
            positions = draws.rand(hi, 2)
            mask = torch.ones(b, 1, h, w)
            for i in on.nonzero().flatten().tolist():
                n = int(counts[i])
                for (fh, fw), (ph, pw) in zip(fracs[i, :n].tolist(), positions[i, :n].tolist()):
                    hh, ww = max(1, math.ceil(fh * h)), max(1, math.ceil(fw * w))
                    top, left = int(ph * (h - hh + 1)), int(pw * (w - ww + 1))
                    mask[i, :, top : top + hh, left : left + ww] = 0
            x = x * mask.to(dev, x.dtype)
        return x
