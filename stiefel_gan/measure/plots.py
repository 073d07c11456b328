"""Plots a run makes while it trains: 2-D samples as a scatter over the mixture's modes (the report
uses the same figure, so a sample during training and in the report look alike).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from ..data.mixtures import MIXTURES, mixture_centers, mixture_std
from ..metrics.toy import HIGH_QUALITY_STDS


def scatter_png(points: np.ndarray, path: Path, mixture: str | None = None) -> None:
    """2-D samples as a scatter plot; with ``mixture`` (a name of :data:`~stiefel_gan.data.MIXTURES`), over
    the real mixture's modes on fixed axes.

    Each mode is drawn as its centre and the circle of radius ``3 std`` within which a sample counts as
    high quality (:mod:`stiefel_gan.metrics.toy`); the axes span the modes plus a margin of half the
    largest centre coordinate, the same at every step and for every run, so plots compare at a glance.
    Points outside the axes are counted in the title.
    """
    fig = scatter_figure(points, mixture)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def scatter_figure(points: np.ndarray, mixture: str | None = None):
    """The figure :func:`scatter_png` saves."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, color="tab:blue", zorder=2)
    if mixture is not None:
        if mixture not in MIXTURES:
            raise ValueError(f"mixture={mixture!r} is not allowed: use one of {', '.join(MIXTURES)} or None")
        centers, std = mixture_centers(mixture).numpy(), mixture_std(mixture)
        limit = 1.5 * float(np.abs(centers).max())
        for center in centers:
            ax.add_patch(plt.Circle(center, HIGH_QUALITY_STDS * std, fill=False, color="tab:red", linewidth=1,
                                    zorder=3))
        ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=20, color="tab:red", zorder=3)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        outside = int(np.sum(np.any(np.abs(points) > limit, axis=1)))
        ax.set_title(f"{mixture}: {len(points)} samples" + (f", {outside} outside the axes" if outside else ""),
                     fontsize=9)
    ax.set_aspect("equal")
    return fig
