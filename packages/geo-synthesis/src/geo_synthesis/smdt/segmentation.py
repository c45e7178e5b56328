"""Semantic segmentation of ground panoramas for SMDT (our design; SMDT's segmentation was never released).

SMDT (Tian et al., ICME'22) segments the ground panorama with "an existing method" into tree, road
and sky masks (``docs/methods.md#what-smdt-released``); which network and which classes is *unverified*. We take the
labels a dataset supplies (the geo-bench synthetic world's ``ground_seg``; CVUSA's colour
annotation PNGs through :func:`colour_to_labels`), regroup them into SMDT's groups with an explicit
table (:class:`ClassGrouping`), and train a compact U-Net (:class:`SegmentationUNet`) for data
without labels.

Convention:
    labels are (B, H, W) int64 class indices (``ignore_index`` = -100 passes through a grouping
    unchanged); logits are (B, K, H, W). The default groups are :data:`SMDT_GROUPS` =
    ``("sky", "road", "vegetation", "building", "vehicle", "other")`` and the default table
    :data:`WORLD_TO_SMDT` maps the synthetic world's classes (:data:`WORLD_CLASSES`, equal to
    ``geo_bench.world.CLASSES``):

    ========  =========  ======================================================
    group     classes    why
    ========  =========  ======================================================
    sky       sky        "remove" augmentation blacks it out
    road      road, sidewalk, parking   drivable / paved ground ("keep road")
    vegetation  tree, grass   "keep tree" (grass is vegetation, not road)
    building  building
    vehicle   car
    other     water      anything else
    ========  =========  ======================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IGNORE_INDEX",
    "SMDT_GROUPS",
    "WORLD_CLASSES",
    "WORLD_TO_SMDT",
    "ClassGrouping",
    "SegmentationUNet",
    "colour_to_labels",
    "fit_segmentation",
    "prepare_labels",
    "segmentation_accuracy",
    "world_grouping",
]

IGNORE_INDEX = -100
WORLD_CLASSES: tuple[str, ...] = (
    "sky",
    "road",
    "sidewalk",
    "grass",
    "water",
    "parking",
    "building",
    "tree",
    "car",
)
SMDT_GROUPS: tuple[str, ...] = ("sky", "road", "vegetation", "building", "vehicle", "other")
WORLD_TO_SMDT: Mapping[str, str] = {
    "sky": "sky",
    "road": "road",
    "sidewalk": "road",
    "parking": "road",
    "grass": "vegetation",
    "tree": "vegetation",
    "building": "building",
    "car": "vehicle",
    "water": "other",
}


@dataclass(frozen=True)
class ClassGrouping:
    """A table from a dataset's classes to SMDT's groups.

    Attributes:
        source_classes: the dataset's class names, in label-index order.
        groups: the group names, in output-index order (K = ``len(groups)``).
        mapping: source class name -> group name; every source class must be mapped.

    Example:
        >>> grouping = world_grouping()
        >>> grouping(torch.tensor([[0, 2, 7]])).tolist()   # sky, sidewalk, tree
        [[0, 1, 2]]
    """

    source_classes: tuple[str, ...]
    groups: tuple[str, ...]
    mapping: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_classes", tuple(self.source_classes))
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "mapping", dict(self.mapping))
        if len(set(self.source_classes)) != len(self.source_classes):
            raise ValueError(f"source_classes has duplicates: {self.source_classes}")
        if len(set(self.groups)) != len(self.groups) or len(self.groups) < 2:
            raise ValueError(f"groups must be >= 2 distinct names, got {self.groups}")
        missing = [c for c in self.source_classes if c not in self.mapping]
        if missing:
            raise ValueError(f"mapping has no group for source classes {missing}")
        unknown = sorted({g for g in self.mapping.values() if g not in self.groups})
        if unknown:
            raise ValueError(f"mapping names unknown groups {unknown}; groups are {self.groups}")
        extra = sorted(set(self.mapping) - set(self.source_classes))
        if extra:
            raise ValueError(f"mapping names unknown source classes {extra}")

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def index(self, group: str) -> int:
        """Output index of ``group``."""
        if group not in self.groups:
            raise ValueError(f"unknown group {group!r}; groups are {self.groups}")
        return self.groups.index(group)

    def lookup_table(self, device: torch.device | str | None = None) -> Tensor:
        """(n_source,) int64: group index of every source class."""
        return torch.tensor(
            [self.groups.index(self.mapping[c]) for c in self.source_classes], dtype=torch.long, device=device
        )

    def __call__(self, labels: Tensor) -> Tensor:
        """(..., H, W) int64 source labels -> same-shape group labels (``IGNORE_INDEX`` kept).

        Raises ValueError for labels outside ``[0, n_source)`` other than ``IGNORE_INDEX``.
        """
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        labels = labels.long()
        ignore = labels == IGNORE_INDEX
        valid = labels[~ignore]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= len(self.source_classes)):
            raise ValueError(
                f"labels must lie in [0, {len(self.source_classes)}) or be {IGNORE_INDEX}, "
                f"got range [{int(valid.min())}, {int(valid.max())}]"
            )
        lut = self.lookup_table(labels.device)
        return torch.where(ignore, labels, lut[labels.clamp(min=0)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_classes": list(self.source_classes),
            "groups": list(self.groups),
            "mapping": dict(self.mapping),
        }


def world_grouping() -> ClassGrouping:
    """The synthetic world's 9 classes grouped into :data:`SMDT_GROUPS` (see the module table)."""
    return ClassGrouping(WORLD_CLASSES, SMDT_GROUPS, WORLD_TO_SMDT)


def colour_to_labels(annotation: Tensor, palette: Sequence[Sequence[float]] | Tensor) -> Tensor:
    """Colour annotations (e.g. CVUSA's ``streetview/annotations/*.png``) -> class indices.

    Every pixel takes the index of the nearest palette colour (squared RGB distance). CVUSA's
    palette is not documented by its authors, so it is an argument, not a constant here.

    Args:
        annotation: (B, 3, H, W) or (3, H, W); uint8 (0-255) or float in [0, 1].
        palette: (n_classes, 3) RGB colours on the 0-255 scale, in label-index order.

    Returns:
        (B, H, W) or (H, W) int64 labels.

    Example:
        >>> colour_to_labels(torch.tensor([[[255, 0]], [[0, 0]], [[0, 250]]], dtype=torch.uint8),
        ...                  [(255, 0, 0), (0, 0, 255)]).tolist()
        [[0, 1]]
    """
    squeeze = annotation.ndim == 3
    x = annotation[None] if squeeze else annotation
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"annotation must be (B, 3, H, W) or (3, H, W), got {tuple(annotation.shape)}")
    pal = torch.as_tensor(palette, dtype=torch.float32, device=x.device)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"palette must be (n_classes, 3), got {tuple(pal.shape)}")
    rgb = x.float() if x.dtype == torch.uint8 else x.float() * 255.0
    dist = ((rgb[:, None] - pal[None, :, :, None, None]) ** 2).sum(dim=2)  # (B, n, H, W)
    labels = dist.argmin(dim=1)
    return labels[0] if squeeze else labels


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegmentationUNet(nn.Module):
    """A compact U-Net for panorama segmentation: (B, 3, H, W) -> (B, K, H, W) logits.

    Two 3x3 conv-BN-ReLU per level, max-pool down, bilinear up, U-Net concatenation; channels
    ``width * 2**level`` (``depth`` levels). Any H, W (skips are resized when odd sizes round).

    It is also a trainer model: :meth:`training_step` computes the cross-entropy of the batch's
    ``"ground"`` against its ``"ground_seg"`` (grouped with ``grouping`` when given, resized with
    nearest-neighbour to the image), so ``Trainer(SegmentationUNet(...), recipe, ...)`` trains it
    with the recipe's optimiser (no validation: it has no retrieval descriptors).

    Args:
        num_classes: K (e.g. 6 for :data:`SMDT_GROUPS`).
        width: channels of the first level.
        depth: number of down-sampling levels.
        in_channels: input channels.
        grouping: applied to ``batch["ground_seg"]`` in :meth:`training_step` (labels already in
            group indices when None).

    Example:
        >>> net = SegmentationUNet(6, width=8, depth=2)
        >>> net(torch.rand(2, 3, 32, 128)).shape
        torch.Size([2, 6, 32, 128])
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 32,
        depth: int = 3,
        in_channels: int = 3,
        grouping: ClassGrouping | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if width < 1 or depth < 0:
            raise ValueError(f"width must be >= 1 and depth >= 0, got width={width}, depth={depth}")
        if grouping is not None and grouping.num_groups != num_classes:
            raise ValueError(f"grouping has {grouping.num_groups} groups but num_classes={num_classes}")
        self.num_classes, self.in_channels, self.grouping = num_classes, in_channels, grouping
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = _double_conv(in_channels, chans[0])
        self.down = nn.ModuleList(_double_conv(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            _double_conv(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) images -> (B, K, H, W) logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h = self.inc(x)
        skips = [h]
        for level in self.down:
            h = level(F.max_pool2d(h, 2, ceil_mode=True))
            skips.append(h)
        skips.pop()
        for level in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = level(torch.cat([h, skip], dim=1))
        return self.head(h)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, H, W) int64 group labels (argmax), in eval mode, no gradient."""
        was_training = self.training
        self.eval()
        try:
            return self(x).argmax(dim=1)
        finally:
            self.train(was_training)

    def loss(self, images: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of (B, 3, H, W) images against (B, H', W') labels (source classes when
        ``grouping`` is set), resized nearest to (H, W); ``IGNORE_INDEX`` pixels are skipped."""
        labels = prepare_labels(labels, images.shape[-2:], self.grouping)
        return F.cross_entropy(self(images).float(), labels, ignore_index=IGNORE_INDEX)

    def training_step(self, batch: Mapping[str, Any], trainer: Any = None) -> dict[str, Tensor]:
        """Trainer hook: ``{"loss": cross-entropy}`` on ``batch["ground"]`` / ``batch["ground_seg"]``."""
        if "ground_seg" not in batch:
            raise KeyError("segmentation training needs batch['ground_seg'] (H, W) int64 labels")
        if trainer is not None:
            with trainer.autocast():
                return {"loss": self.loss(batch["ground"], batch["ground_seg"])}
        return {"loss": self.loss(batch["ground"], batch["ground_seg"])}


def prepare_labels(labels: Tensor, size: Iterable[int], grouping: ClassGrouping | None = None) -> Tensor:
    """(B, H', W') labels -> (B, H, W) int64 (grouped when ``grouping``; nearest resize)."""
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    labels = grouping(labels) if grouping is not None else labels.long()
    size = tuple(int(s) for s in size)
    if tuple(labels.shape[-2:]) != size:
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
    return labels


def segmentation_accuracy(logits_or_labels: Tensor, target: Tensor) -> float:
    """Pixel accuracy of (B, K, H, W) logits or (B, H, W) predictions against (B, H, W) labels
    (``IGNORE_INDEX`` pixels skipped)."""
    pred = logits_or_labels.argmax(dim=1) if logits_or_labels.ndim == 4 else logits_or_labels
    valid = target != IGNORE_INDEX
    return float((pred[valid] == target[valid]).float().mean())


def fit_segmentation(
    net: SegmentationUNet,
    images: Tensor,
    labels: Tensor,
    *,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Train ``net`` with Adam on in-memory (N, 3, H, W) images and (N, H', W') labels.

    A minimal loop for small data (tests, a quick segmenter for SMDT on data whose labels exist
    only for a subset); use the :class:`~geo_retrieval.training.Trainer` with
    :meth:`SegmentationUNet.training_step` for datasets. Batches are drawn with a generator seeded
    by ``seed``. Returns the per-step losses.
    """
    if images.ndim != 4 or labels.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images must be (N, 3, H, W) and labels (N, H, W) with the same N, got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    losses = []
    n = images.shape[0]
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[: min(batch_size, n)].to(images.device)
        loss = net.loss(images[idx], labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
