"""Regenerate the figures of the geo-transforms README.

    python packages/geo-transforms/docs/make_figures.py

Needs matplotlib and Pillow (docs-only; neither is a geo-transforms dependency). Writes, next to
this script:

- ``mixed_geometry.png``: the mixed perspective-polar mapping on the synthetic test pattern
  (aerial with the near-field disc, polar, mixed) and its radius profile / horizontal stretch;
- ``preview_demo.png``: the output of ``python -m geo_transforms.preview --demo``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from geo_transforms import MixedParams, mixed_perspective_polar, mixed_radius_profile, polar_transform
from geo_transforms.cli import main
from geo_transforms.patterns import demo_aerial

HERE = Path(__file__).resolve().parent


def _show(ax, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def mixed_geometry(path: Path) -> None:
    size, (height, width) = 512, (256, 1024)
    params = MixedParams(
        near_fraction=0.4, camera_height=2.5, meters_per_pixel=0.1, blend=0.25, center="safa"
    )
    aerial = demo_aerial(size)
    polar = polar_transform(aerial[None], (height, width))[0]
    mixed = mixed_perspective_polar(
        aerial[None], (height, width), **{k: v for k, v in params.to_dict().items()}
    )[0]
    boundary = (height - 1) * (1 - params.near_fraction)
    r_b = (size / 2) * (height - 1 - boundary) / height

    fig = plt.figure(figsize=(11, 7.2), dpi=100)
    grid = fig.add_gridspec(
        3, 3, width_ratios=[1.0, 2.2, 2.2], height_ratios=[1, 1, 1.1], hspace=0.35, wspace=0.25
    )
    ax = fig.add_subplot(grid[0:2, 0])
    _show(ax, aerial, "aerial (north up), test pattern")
    c = size / 2
    ax.add_patch(plt.Circle((c, c), r_b, fill=False, color="magenta", lw=1.2))
    for bearing, label in ((0, "W/2"), (90, "3W/4"), (180, "0"), (270, "W/4")):
        b = math.radians(bearing)
        ax.annotate(
            "",
            xy=(c + 0.45 * size * math.sin(b), c - 0.45 * size * math.cos(b)),
            xytext=(c, c),
            arrowprops={"arrowstyle": "->", "color": "white", "lw": 0.8},
        )
        ax.text(
            c + 0.3 * size * math.sin(b) + 0.06 * size,
            c - 0.3 * size * math.cos(b) - 0.04 * size,
            f"col {label}",
            color="black",
            fontsize=6,
            bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "lw": 0},
        )
    ax.set_xlabel("magenta: near-field disc (r < r_b)\narrows: output column of each bearing", fontsize=8)

    ax = fig.add_subplot(grid[0, 1:])
    _show(ax, polar, f"polar_transform {height}x{width} (SAFA): radius linear in the row")
    ax.axhline(boundary, color="magenta", lw=0.8, ls="--")
    ax = fig.add_subplot(grid[1, 1:])
    _show(
        ax,
        mixed,
        f"mixed_perspective_polar: near_fraction={params.near_fraction}, camera {params.camera_height} m at "
        f"{params.meters_per_pixel} m/px, blend={params.blend}",
    )
    ax.axhline(boundary, color="magenta", lw=0.8, ls="--")
    ax.text(
        width - 4,
        boundary - 6,
        "polar above / ground-plane rays below",
        fontsize=7,
        ha="right",
        bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "lw": 0},
    )

    rows = torch.arange(height)
    ax = fig.add_subplot(grid[2, 0:2])
    _, polar_r = mixed_radius_profile(size, height, params)
    ax.plot(rows, polar_r[0], color="black", lw=1.5, label="polar: r = (S/2)(H-1-i)/H")
    for h_px in (10, 25, 60):
        p = MixedParams(near_fraction=0.4, camera_height=h_px * 0.1, meters_per_pixel=0.1, blend=0.25)
        r, _ = mixed_radius_profile(size, height, p)
        ax.plot(rows, r[0], lw=1.2, label=f"mixed, camera {h_px} px above ground")
    hard = MixedParams(near_fraction=0.4, camera_height=2.5, meters_per_pixel=0.1, blend=0.0)
    ax.plot(
        rows,
        mixed_radius_profile(size, height, hard)[0][0],
        lw=0.8,
        ls=":",
        color="gray",
        label="25 px, blend=0 (kink)",
    )
    ax.axvline(boundary, color="magenta", lw=0.8, ls="--")
    ax.set_xlabel("output row i (0 = top = far)")
    ax.set_ylabel("sampled radius r(i), aerial px")
    ax.legend(fontsize=7)
    ax.set_title(
        "radius profile: r_persp = h / tan(alpha), alpha linear in the row down to the nadir", fontsize=9
    )

    ax = fig.add_subplot(grid[2, 2])
    r, polar_r = mixed_radius_profile(size, height, params)
    band = rows[int(boundary) : height - 1]
    ax.plot(band, (polar_r[0] / r[0])[band], color="tab:orange")
    ax.set_xlabel("output row i")
    ax.set_title("horizontal stretch r_polar / r (25 px)", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main_figures() -> None:
    mixed_geometry(HERE / "mixed_geometry.png")
    main(["--demo", "--demo-size", "512", "--polar-size", "128", "512", "-o", str(HERE / "preview_demo.png")])
    for name in ("mixed_geometry.png", "preview_demo.png"):
        kib = (HERE / name).stat().st_size / 1024
        print(f"{name}: {kib:.0f} KiB")


if __name__ == "__main__":
    main_figures()
