"""The README figure of the leaderboard world's city styles: aerial tiles and panoramas of the downtown and
suburb training districts and of the cross-area town, read from a rendered world cache.

Usage: python packages/geo-bench/docs/make_city_styles.py OUT/cache/world-<key> packages/geo-bench/docs/city_styles.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np


def main(cache: Path, out: Path, per_style: int = 3) -> Path:
    """Draw ``per_style`` random (aerial, panorama) pairs of each style from ``cache`` into ``out``."""
    matplotlib.use("Agg")  # before pyplot is imported
    import matplotlib.pyplot as plt  # after the backend is chosen

    train = np.load(cache / "train.npz")
    cross = np.load(cache / "cross.npz")
    east = train["utm"][:, 0] - 500_000.0  # district k spans k km east of the origin
    rows = [
        ("downtown (train)", train, np.where(east < 1000)[0]),
        ("suburb (train)", train, np.where((east > 1000) & (east < 2000))[0]),
        ("town (cross-area)", cross, np.arange(len(cross["ids"]))),
    ]
    fig, axes = plt.subplots(
        len(rows),
        2 * per_style,
        figsize=(2 * per_style * 2.6, len(rows) * 1.7),
        gridspec_kw={"width_ratios": [1, 4] * per_style},
    )
    rng = np.random.default_rng(0)
    for r, (name, arr, idx) in enumerate(rows):
        for k, i in enumerate(rng.choice(idx, per_style, replace=False)):
            a, g = axes[r, 2 * k], axes[r, 2 * k + 1]
            a.imshow(arr["aerial"][i].transpose(1, 2, 0))
            g.imshow(arr["ground"][i].transpose(1, 2, 0), aspect="auto")
            for ax in (a, g):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle("Synthetic world (seed 0): 64 m aerial tile and its panorama, per city style", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2])))
