"""Frozen configuration dataclasses that recipes declare: input normalisation, training augmentation,
optimiser, lr schedule, gradient clipping and batch sampling.

Convention:
    configs only: this module imports no tensor code and nothing else of geo-retrieval, so declaring a
    recipe (``geo_retrieval.recipes``, geo-synthesis' recipes) never imports training code. The code
    that uses the configs imports them from here (``geo_retrieval.training.augment.BatchTransform``
    applies :class:`Normalisation` and :class:`Augmentation`), never the reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "FOV_MODES",
    "Augmentation",
    "GradClip",
    "Normalisation",
    "OptimizerConfig",
    "SamplingConfig",
    "ScheduleConfig",
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


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimiser: ``name`` in adam / adamw / sgd (``betas[0]`` is SGD's momentum)."""

    name: str = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8


@dataclass(frozen=True)
class ScheduleConfig:
    """Per-step lr schedule: linear warm-up (``warmup_steps``, or ``warmup_epochs`` x steps per
    epoch), then ``kind`` = ``"cosine"`` (to ``min_factor`` at ``total_steps``, default the whole
    run) or ``"constant"``."""

    kind: str = "constant"
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    min_factor: float = 0.0
    total_steps: int | None = None


@dataclass(frozen=True)
class GradClip:
    """Gradient clipping: ``kind="norm"`` (global L2 norm) or ``"value"`` (element-wise)."""

    kind: str = "norm"
    value: float = 1.0


@dataclass(frozen=True)
class SamplingConfig:
    """Batch composition: ``"unique"`` (shuffled unique-ID batches), ``"gps"`` (geographic hard
    negatives) or ``"similarity"`` (GPS first, then descriptor neighbours recomputed every
    ``similarity_every`` epochs), Sample4Geo's ``n_near`` + ``n_far`` of ``neighbour_range``."""

    kind: str = "unique"
    n_near: int = 32
    n_far: int = 32
    neighbour_range: int = 128
    similarity_every: int = 4
