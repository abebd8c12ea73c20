"""Figures, drawn from results (never by solving again) and saved like results (`results.write_atomic`).

The format is the one the file's suffix names (`results.FIGURE_FORMATS`: PNG, PDF or SVG). Figures are
reproducible byte for byte when their content is the same: titles hold no wall-clock times (node counts instead), and the files carry
no date and no software version (fixed metadata, a fixed SVG hash salt).
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from explain_mnist.models import class_label  # noqa: E402
from explain_mnist.results import figure_format, write_atomic  # noqa: E402

# per format, the metadata that keeps the bytes free of dates and versions
METADATA = {"png": {"Software": None},
            "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}
plt.rcParams["svg.hashsalt"] = "explain-mnist"   # SVG ids from a fixed salt, not a random one


def save_figure(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib figure in the format its suffix names (`results.FIGURE_FORMATS`), then close it."""
    fmt = figure_format(path)
    try:
        write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight",
                                                 metadata=METADATA[fmt]))
    finally:
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


def work(result: dict) -> str:
    """Return how a verdict was reached, for a title: the method, and the nodes if any (no times: see above)."""
    nodes = int(result.get("nodes") or 0)
    return f"by {result['method']}" + (f", {nodes:,} nodes" if nodes else "")


def verify_figure(result: dict):
    """Return the figure of a verify.py result: the image, the counterexample (if any) and their difference."""
    x0 = np.asarray(result["image"])
    names = result.get("class_names")
    name = (lambda k: class_label(k, names))
    cex = result.get("counterexample")
    eps = result.get("epsilon")
    box = f"eps = {eps:g}" if eps is not None else "VNN-LIB box"
    if cex is None:
        fig, ax = plt.subplots(1, 1, figsize=(3.4, 3.6))
        proof = " (MIP, up to its tolerance)" if result["verdict"] == "robust" and result["method"] == "mip" else ""
        show_image(ax, x0, f"{name(result['predicted'])}: {result['verdict'].upper()}{proof}\n"
                           f"{box}, {work(result)}")
        return fig
    cex = np.asarray(cex)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    show_image(axes[0], x0, f"original: {name(result['predicted'])}")
    show_image(axes[1], cex, f"counterexample: {name(result['counterexample_class'])}\n"
                             f"(re-checked: {'yes' if result['verified'] else 'NO'})")
    delta = cex - x0
    show_difference(fig, axes[2], delta, f"difference, max |d| = {np.abs(delta).max():.3f}")
    fig.suptitle(f"NOT ROBUST for {box}: found {work(result)}", fontsize=10)
    return fig
