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


def duration(seconds: float) -> str:
    """Return a duration for a title: milliseconds below one second."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def verify_figure(result: dict):
    """Return the figure of a verify.py result: the image, the counterexample (if any) and their difference."""
    x0 = np.asarray(result["image"])
    names = result.get("class_names")
    name = (lambda k: "-" if k is None else (names[k] if names else str(k)))
    cex = result.get("counterexample")
    eps = result.get("epsilon")
    box = f"eps = {eps:g}" if eps is not None else "VNN-LIB box"
    if cex is None:
        fig, ax = plt.subplots(1, 1, figsize=(3.4, 3.6))
        proof = " (MIP, up to its tolerance)" if result["verdict"] == "robust" and result["method"] == "mip" else ""
        show_image(ax, x0, f"class {name(result['predicted'])}: {result['verdict'].upper()}{proof}\n"
                           f"{box}, by {result['method']}, {duration(result['seconds'])}")
        return fig
    cex = np.asarray(cex)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    show_image(axes[0], x0, f"original: class {name(result['predicted'])}")
    show_image(axes[1], cex, f"counterexample: class {name(result['counterexample_class'])}\n"
                             f"(re-checked: {'yes' if result['verified'] else 'NO'})")
    delta = cex - x0
    show_difference(fig, axes[2], delta, f"difference, max |d| = {np.abs(delta).max():.3f}")
    fig.suptitle(f"NOT ROBUST for {box}: found by {result['method']} in {duration(result['seconds'])}", fontsize=10)
    return fig
