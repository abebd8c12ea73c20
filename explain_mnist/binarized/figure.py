"""The figure of binary.py minflips and verify, drawn from its saved JSON result (matplotlib only here)."""
from __future__ import annotations

import numpy as np


def flips_figure(result: dict):
    """Return a figure: the binarized image, the counterexample (minflips: the fewest flips; verify: within its
    budget of flips), and the flipped pixels marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from explain_mnist.plots import show_image
    x = np.asarray(result["image_bits"], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.1))
    truth = f" (true {result['true_label']})" if result.get("true_label") is not None else ""
    show_image(axes[0], x, f"test image {result['index']}, binarized\npredicted {result['predicted']}{truth}")
    cex = result.get("counterexample")
    budget = result.get("flips")          # verify's question; minflips has none
    if cex is None:
        for ax in axes[1:]:
            ax.axis("off")
        robust = budget is not None and "robust" in result.get("answers", {}).values()
        plural = "s" if budget != 1 else ""
        proved = (f"label {result['target']} unreachable with {budget} flip{plural} (proved)"
                  if result.get("target") is not None else f"robust to {budget} flip{plural} (proved)")
        axes[1].set_title(proved if robust else "no counterexample found", fontsize=9)
        return fig
    cex = np.asarray(cex, dtype=float)
    k = int(np.count_nonzero(cex != x))
    if budget is not None:
        status = f"at most {budget}"
    else:
        status = "minimal" if result.get("min_flips") is not None else "not proved minimal"
    show_image(axes[1], cex, f"{k} flipped pixel{'s' if k != 1 else ''} ({status})\n"
               f"predicted {result['counterexample_label']}")
    marks = np.where(cex > x, 2, np.where(cex < x, 0, 1)).reshape(28, 28)
    base = np.where(x.reshape(28, 28) > 0, 0.75, 0.95)
    axes[2].imshow(base, cmap="gray", vmin=0, vmax=1)
    overlay = np.ma.masked_where(marks == 1, marks)
    axes[2].imshow(overlay, cmap=ListedColormap(["tab:blue", "white", "tab:red"]), vmin=0, vmax=2)
    axes[2].set_title("flipped pixels\nred: 0 -> 1, blue: 1 -> 0", fontsize=9)
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    question = "fewest pixel flips" if budget is None else f"at most {budget} pixel flips"
    fig.suptitle(f"Binarized 784-200-100-10 network: {question} that change the label "
                 f"({result['predicted']} -> {result['counterexample_label']})", fontsize=10)
    return fig
