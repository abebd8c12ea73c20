"""Figures, drawn from results (never by solving again) and saved atomically."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from explain_mnist.results import write_atomic  # noqa: E402


def save_figure(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG through a temporary file, then close it."""
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def show_image(ax, x: np.ndarray, title: str) -> None:
    """Draw a 784-pixel image in grey on [0, 1]."""
    ax.imshow(np.asarray(x).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def show_difference(fig, ax, delta: np.ndarray, title: str) -> None:
    """Draw a 784-pixel difference with a diverging colour map centred on zero, with a colour bar."""
    delta = np.asarray(delta).reshape(28, 28)
    bound = max(float(np.abs(delta).max()), 1e-6)
    im = ax.imshow(delta, cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
