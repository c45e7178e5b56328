"""A preview figure of the synthetic world: district map, aerial tiles, panoramas and their labels.

Convention: every row is one sample: aerial tile (north up, the camera at the centre, a red dot),
its label map, then the panorama (north at the centre column, east at 3W/4, marked on top) and
its label map, and the panorama's depth. The first row is an overview of the district with the
cameras of the samples.
"""

from __future__ import annotations

from pathlib import Path

from .city import CLASSES, PALETTE
from .dataset import SyntheticWorld

__all__ = ["write_preview"]


def write_preview(path: str | Path, world: SyntheticWorld, rows: int = 3, dpi: int = 80) -> Path:
    """Render ``rows`` samples of ``world`` and save a preview PNG to ``path``.

    Args:
        path: output PNG.
        world: the dataset to show (its first ``rows`` samples).
        rows: number of samples.
        dpi: figure resolution.

    Returns:
        The written path.
    """
    import matplotlib  # lazy: heavy, and the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = min(rows, len(world))
    batch = world.render_batch(list(range(rows)))
    dist = world._district(int(world.district_index[0]))
    city = dist.city
    aerial_epoch, _ = dist.epochs
    fig = plt.figure(figsize=(20, 1.6 * rows + 5.0), dpi=dpi)
    gs = fig.add_gridspec(
        rows + 2, 5, width_ratios=[1, 1, 4, 4, 4], height_ratios=[4.2] + [1.45] * rows + [0.35]
    )
    ax = fig.add_subplot(gs[0, 0:3])
    ax.imshow(aerial_epoch.top.permute(1, 2, 0).numpy()[::2, ::2], extent=(0, city.size, 0, city.size))
    cams = world.cameras[:rows][world.district_index[:rows] == world.district_index[0]]
    ax.plot(cams[:, 0], cams[:, 1], "r.", ms=8)
    ax.set_title(f"district {int(world.district_index[0])}: {city.size:.0f} m, aerial capture", fontsize=9)
    ax.set_xlabel("east (m)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(gs[0, 3:])
    ax.imshow(PALETTE[aerial_epoch.cls.long()].numpy()[::2, ::2], extent=(0, city.size, 0, city.size))
    ax.set_title("semantic map (class raster)", fontsize=9)
    ax.tick_params(labelsize=7)
    h, w = batch["ground"].shape[-2:]
    for r in range(rows):
        s = batch["aerial"].shape[-1]
        views = [
            (batch["aerial"][r].permute(1, 2, 0).numpy(), f"aerial {batch['id'][r]}"),
            (PALETTE[batch["aerial_seg"][r]].numpy(), "aerial labels"),
            (batch["ground"][r].permute(1, 2, 0).numpy(), f"panorama (yaw {float(batch['yaw'][r]):.0f} deg)"),
            (PALETTE[batch["ground_seg"][r]].numpy(), "panorama labels"),
            (batch["ground_depth"][r].clamp(max=150).numpy(), "depth (m, sky = 0)"),
        ]
        for c, (img, title) in enumerate(views):
            ax = fig.add_subplot(gs[r + 1, c])
            ax.imshow(img, cmap="magma" if c == 4 else None)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.plot([(s - 1) / 2], [(s - 1) / 2], "r.", ms=5)
            if c >= 2 and w > 8 and world.fov == 360:
                ax.set_xticks([0, w / 4, w / 2, 3 * w / 4])
                ax.set_xticklabels(["S", "W", "N", "E"], fontsize=7)
                ax.axhline(h / 2 - 0.5, color="w", lw=0.4, ls=":")
    ax = fig.add_subplot(gs[rows + 1, :])
    ax.axis("off")
    handles = [
        Patch(color=tuple((PALETTE[i].numpy() / 255).tolist()), label=name) for i, name in enumerate(CLASSES)
    ]
    ax.legend(handles=handles, ncol=len(CLASSES), loc="center", fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
