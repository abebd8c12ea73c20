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


OBJECTIVE_LABELS = {"l0": lambda v: f"{v:.0f} pixel" + ("" if v == 1 else "s"),
                    "l1": lambda v: f"sum |d| = {v:.3g}", "l2": lambda v: f"sum d\u00b2 = {v:.3g}",
                    "linf": lambda v: f"max |d| = {v:.3g}"}
NORM_NAMES = {"l0": "L0 (changed pixels)", "l1": "L1", "l2": "squared L2", "linf": "L-inf"}
PROOF_MARKS = {"optimal": "", "time_limit": " (not proved)", "error": " (error)", "infeasible": ""}


def _digit(k, names) -> str:
    """Return what class k stands for, short: "3" for a class named "3" (else the class index)."""
    return str(names[k]) if names and k is not None and 0 <= k < len(names) else str(k)


def adversarial_figure(result: dict):
    """Return the figure of a min_adv_card.py / min_adv_sum.py result (drawn from the saved JSON).

    One target: the input, the difference (a diverging map centred on 0) and the adversarial image.
    Several: the input, then one column per target: the image titled "predict k" with its objective
    (top row) and its difference (bottom row, one colour scale for the row).
    """
    x0 = np.asarray(result["image"])
    names = result.get("class_names")
    norm = result["norm"]
    rows = result["results"]

    def value(row):
        if row["objective"] is None:
            return row["status"].replace("_", " ")
        return OBJECTIVE_LABELS[norm](row["objective"]) + PROOF_MARKS[row["status"]]
    if len(rows) == 1:
        row = rows[0]
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
        show_image(axes[0], x0, f"input: {class_label(result['predicted'], names)}")
        if row["adversarial"] is None:
            for ax in axes[1:]:
                ax.axis("off")
            axes[1].set_title(f"target {class_label(row['target'], names)}: {value(row)}", fontsize=9)
            return fig
        x = np.asarray(row["adversarial"])
        changed = "changed pixels" if norm == "l0" else "difference"
        show_difference(fig, axes[1], x - x0, f"{changed}: {value(row)}")
        show_image(axes[2], x, f"result: {class_label(row['model_prediction'], names)}\n"
                               f"(re-checked by the model: {'yes' if row['verified'] else 'NO'})")
        fig.suptitle(f"smallest {NORM_NAMES[norm]} change to {class_label(row['target'], names)}: {value(row)}, "
                     f"by {row['method']}", fontsize=10)
        return fig
    n = len(rows) + 1
    fig, axes = plt.subplots(2, n, figsize=(1.55 * n + 0.8, 3.6), squeeze=False, gridspec_kw={"hspace": 0.08})
    show_image(axes[0, 0], x0, f"input: {_digit(result['predicted'], names)}")
    axes[1, 0].axis("off")
    deltas = [np.asarray(r["adversarial"]) - x0 for r in rows if r["adversarial"] is not None]
    scale = max([float(np.abs(d).max()) for d in deltas] + [1e-6])
    image = None
    for k, row in enumerate(rows, start=1):
        label = "any" if row["target"] is None else _digit(row["target"], names)
        if row["adversarial"] is None:
            for ax in axes[:, k]:
                ax.axis("off")
            axes[0, k].set_title(f"predict {label}\n{value(row)}", fontsize=8)
            continue
        x = np.asarray(row["adversarial"])
        show_image(axes[0, k], x, f"predict {_digit(row['model_prediction'], names)}\n{value(row)}")
        axes[0, k].title.set_fontsize(8)
        image = axes[1, k].imshow((x - x0).reshape(28, 28), cmap="RdBu_r", vmin=-scale, vmax=scale)
        axes[1, k].set_xticks([])
        axes[1, k].set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=list(axes[1, 1:]), fraction=0.02, pad=0.01, label="change")
    proved = all(r["status"] in ("optimal", "infeasible") for r in rows)
    fig.suptitle(f"smallest {NORM_NAMES[norm]} change per target label"
                 + ("" if proved else " (some not proved: see titles)"), fontsize=10, y=1.04)
    return fig
