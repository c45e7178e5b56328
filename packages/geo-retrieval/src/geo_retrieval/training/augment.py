"""Batch preprocessing and seeded joint augmentation for cross-view pairs.

Convention:
    batches are dicts of (B, 3, H, W) float images in [0, 1] (uint8 is divided by 255):
    ``"ground"`` a north-centred panorama (column W/2 looks north, clockwise sweep; geo-transforms'
    convention) and ``"aerial"`` a north-up square image, or an already polar-transformed aerial of
    panorama shape. The pipeline, all on the batch's device:

    1. joint augmentation (training only; per sample): horizontal flip of both views (p ``hflip_p``)
       and rotation (p ``rot90_p``, k uniform in {1, 2, 3}): ``rot90(aerial, k)`` with the panorama
       rolled by ``-k*W/4`` (for a polar aerial the same roll), geo-transforms' identity
       ``polar(rot90(A, k)) == roll(polar(A), -k*W/4)``; on uint8 batches this step moves the
       stored bytes and the conversion to [0, 1] follows it (the same values, a quarter of the memory);
    2. orientation noise (``pano_shift_deg``, training; orientation-unknown recipes): a random
       circular roll of the panorama only;
    3. field of view: resize the panorama to ``ground_size`` then keep ``int(fov/360 * W)`` columns
       centred on column W/2 (geo-transforms' ``crop_fov``);
    4. aerial: polar transform to ``aerial_size`` (``polar=True``, square input) or resize;
    5. per-view photometric augmentation (training), batched: colour jitter (torchvision's
       formulas, brightness then contrast then saturation, with ``kornia.enhance``), 5x5 Gaussian
       blur (``kornia.filters.gaussian_blur2d``, replicate border), coarse dropout (rectangular
       holes set to 0); the parameters are drawn from the generator, never from the global RNG;
    6. limited field of view at an unknown heading (training, ``fov_mode`` "random" or
       "curriculum", recipes with ``fov=360`` only): per sample a FoV in [lower bound, 360] and a
       window position; geo-transforms' ``limit_fov`` keeps the window in the full-width frame
       and fills the other columns with the normalisation mean (see :class:`Augmentation`);
    7. normalisation ``(x - mean) / std`` (so the filled columns are exactly 0).

    Randomness comes only from the ``torch.Generator`` passed in (the trainer seeds one per step from
    ``(seed, step)``), so a resumed run draws the same augmentations.

    Prepared inputs: without joint augmentation (step 1) the conversion to [0, 1], the panorama
    resize and the aerial polar transform / resize (steps 3-4, less the FoV crop) depend on the
    sample alone. :meth:`BatchTransform.prepare` runs them once (the trainer keeps the results of a
    small training set in memory, :class:`~.prepared.PreparedPairs`); such a batch carries
    ``batch[PREPARED] = True`` and the transform goes on from the random panorama roll.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
)
from kornia.filters import gaussian_blur2d
from torch import Tensor

from geo_transforms import polar_transform
from geo_transforms.panorama import crop_fov, fov_width, limit_fov
from geo_transforms.panorama import joint_hflip as _gt_joint_hflip
from geo_transforms.panorama import joint_rotate as _gt_joint_rotate
from geo_transforms.polar import Center

from ..config import Augmentation, Normalisation
from ..recipes import Recipe

__all__ = [
    "PREPARED",
    "BatchTransform",
    "joint_hflip",
    "joint_rot90",
]


#: batch key of :meth:`BatchTransform.prepare`'s output: the deterministic steps are done
PREPARED = "prepared"


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
        polar_center: Center = "safa",
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
        self.ground_size: tuple[int, int] = (ground_size[0], ground_size[1])
        self.aerial_size: tuple[int, int] = (aerial_size[0], aerial_size[1])
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
    def prepares_once(self) -> bool:
        """Whether :meth:`prepare`'s steps may run once per sample: no joint augmentation (flip,
        quarter turn) comes before them in training."""
        aug = self.augmentation
        return not (aug.hflip_p > 0 or aug.rot90_p > 0)

    def prepare(self, batch: dict) -> dict:
        """The deterministic steps (see the module docstring, "Prepared inputs"): ``"ground"``
        converted to [0, 1] and resized to ``ground_size`` (no FoV crop: a random roll comes first),
        ``"aerial"`` polar-transformed or resized to ``aerial_size``; float32, other keys untouched,
        ``PREPARED`` set. Feed the result to ``__call__`` as any batch."""
        if batch.get(PREPARED) is not None:
            raise ValueError("the batch is prepared already")
        ground, aerial = batch["ground"], batch["aerial"]
        for name, x in (("ground", ground), ("aerial", aerial)):
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"batch[{name!r}] must be (B, 3, H, W), got {tuple(x.shape)}")
        out = dict(batch)
        out["ground"], out["aerial"] = self._sized(ground, aerial)
        out[PREPARED] = True
        return out

    def _sized(self, ground: Tensor, aerial: Tensor) -> tuple[Tensor, Tensor]:
        """[0, 1] floats, the panorama at ``ground_size``, the aerial polar / resized to ``aerial_size``."""
        ground = ground.float() / 255 if ground.dtype == torch.uint8 else ground.float()
        aerial = aerial.float() / 255 if aerial.dtype == torch.uint8 else aerial.float()
        ground = _resize(ground, self.ground_size)
        if self.polar and aerial.shape[-1] == aerial.shape[-2]:
            aerial = polar_transform(aerial, self.aerial_size, center=self.polar_center)
        else:
            aerial = _resize(aerial, self.aerial_size)
        return ground, aerial

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
        aug = self.augmentation
        b = ground.shape[0]
        if ((train and aug.enabled) or (orientation_noise and aug.pano_shift_deg > 0)) and generator is None:
            raise ValueError("training augmentation needs a seeded torch.Generator")
        draws = _Draws(generator, b, offset, global_batch)
        prepared = _is_prepared(batch.get(PREPARED))
        if prepared:
            if train and not self.prepares_once:
                raise ValueError("a prepared batch cannot be trained with joint flips / quarter turns")
            if tuple(ground.shape[-2:]) != self.ground_size or tuple(aerial.shape[-2:]) != self.aerial_size:
                raise ValueError(
                    f"a prepared batch must hold ground {self.ground_size} and aerial {self.aerial_size}, "
                    f"got {tuple(ground.shape[-2:])} and {tuple(aerial.shape[-2:])}"
                )
        else:
            if train and (aug.hflip_p > 0 or aug.rot90_p > 0):
                # flips, rolls and quarter turns only move pixels: on the stored bytes (uint8) they move a
                # quarter of the memory of the float images and give the same values after the conversion
                aerial, ground = self._joint(aerial, ground, draws)
            ground, aerial = self._sized(ground, aerial)
        if (train or orientation_noise) and aug.pano_shift_deg > 0:
            shifts = (draws.rand() * aug.pano_shift_deg / 360.0 * ground.shape[-1]).long().tolist()
            ground = torch.stack([g.roll(-s, dims=-1) for g, s in zip(ground, shifts)])
        if self.fov < 360:
            ground = crop_fov(ground, self.fov)
        if train:
            ground = self._photometric(ground, draws)
            aerial = self._photometric(aerial, draws)
        mean = torch.tensor(self.normalisation.mean, device=ground.device).view(1, 3, 1, 1)
        if train and aug.fov_mode != "fixed":
            ground = self._limit_fov(ground, draws, progress, fill=mean.view(3))
        std = torch.tensor(self.normalisation.std, device=ground.device).view(1, 3, 1, 1)
        out = dict(batch)
        out.pop(PREPARED, None)
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
        """Colour jitter, Gaussian blur and coarse dropout of one view, batched on ``x``'s device.

        The parameters are drawn from ``draws`` (the step's seeded generator, in a fixed order, for
        the whole global batch) and applied with kornia's functional ops, so no op reads the global
        RNG. (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1].
        """
        aug = self.augmentation
        b, dev = x.shape[0], x.device
        if aug.color_jitter_p > 0 and aug.color_jitter > 0:
            # torchvision's ColorJitter formulas (kornia.augmentation.ColorJitter's steps) in a fixed
            # order: brightness (x * f), contrast (blend with the grayscale mean), saturation (blend
            # with the grayscale); factors in [1 - s, 1 + s], exactly 1 for samples left alone
            on = (draws.rand() < aug.color_jitter_p).float()
            s = aug.color_jitter
            factors = [1.0 + on * (2 * draws.rand() - 1) * s for _ in range(3)]
            bright, contrast, sat = (f.to(dev, x.dtype).view(b, 1, 1, 1) for f in factors)
            x = adjust_brightness_accumulative(x, bright)
            x = adjust_contrast_with_mean_subtraction(x, contrast)
            x = adjust_saturation_with_gray_subtraction(x, sat)
        if aug.blur_p > 0:
            on = draws.rand() < aug.blur_p
            sigma = 0.1 + 1.4 * draws.rand()
            if on.any():
                idx = on.nonzero().flatten().to(dev)
                sigma_yx = sigma[on].to(dev, x.dtype)[:, None].expand(-1, 2)  # (n, 2), isotropic
                blurred = gaussian_blur2d(x.index_select(0, idx), (5, 5), sigma_yx, border_type="replicate")
                x = x.index_copy(0, idx, blurred)
        if aug.dropout_p > 0:
            on = draws.rand() < aug.dropout_p
            lo, hi = aug.dropout_holes
            counts = draws.randint(lo, hi + 1)
            fracs = 0.1 + 0.1 * draws.rand(hi, 2)
            positions = draws.rand(hi, 2)
            x = x * _dropout_mask((x.shape[-2], x.shape[-1]), on.to(dev), counts, fracs, positions).to(
                x.dtype
            )
        return x


def _is_prepared(flag: object) -> bool:
    """``batch[PREPARED]``: True, or a collated tensor / list of True for every sample."""
    if flag is None:
        return False
    if isinstance(flag, Tensor):
        return bool(flag.all())
    if isinstance(flag, (list, tuple)):
        return all(bool(f) for f in flag)
    return bool(flag)


def _dropout_mask(
    size: tuple[int, int], on: Tensor, counts: Tensor, fracs: Tensor, positions: Tensor
) -> Tensor:
    """Keep-mask of coarse dropout: 0 inside the holes, 1 elsewhere; no loop over samples or holes.

    Sample ``i`` (when ``on[i]``) gets its first ``counts[i]`` holes; hole ``n`` is
    ``ceil(fracs[i, n] * (H, W))`` pixels (at least 1) with its top-left corner at
    ``floor(positions[i, n] * ((H, W) - hole + 1))`` (float64 arithmetic, so the holes are those of
    the former per-hole loop). The union of the holes is a batched product of row and column
    indicators.

    Args:
        size: image (H, W).
        on: (B,) bool, samples that get holes.
        counts: (B,) int64, number of holes per sample (at most N).
        fracs, positions: (B, N, 2) floats in [0, 1), hole size fractions and positions (rows, cols).

    Returns:
        (B, 1, H, W) float32 mask on ``on``'s device (the hole geometry is computed on the CPU).
    """
    h, w = int(size[0]), int(size[1])
    device = on.device
    extent = torch.tensor([h, w], dtype=torch.float64)
    sizes = torch.ceil(fracs.cpu().double() * extent).clamp_min(1)  # (B, N, 2)
    starts = torch.floor(positions.cpu().double() * (extent - sizes + 1))  # (B, N, 2)
    sizes, starts = sizes.long().to(device), starts.long().to(device)
    holes = torch.arange(fracs.shape[1], device=device)
    active = on[:, None] & (holes[None, :] < counts.to(device)[:, None])  # (B, N)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    in_rows = (rows >= starts[..., :1]) & (rows < starts[..., :1] + sizes[..., :1])  # (B, N, H)
    in_rows &= active[..., None]  # holes beyond a sample's count, or of a sample left alone, cover nothing
    in_cols = (cols >= starts[..., 1:]) & (cols < starts[..., 1:] + sizes[..., 1:])  # (B, N, W)
    covered = torch.bmm(in_rows.float().transpose(1, 2), in_cols.float())  # (B, H, W): holes covering a pixel
    return (covered == 0).float()[:, None]
