"""Figures: the format the suffix names, the same bytes for the same content, class names and no times in titles."""
import subprocess
import sys

import numpy as np
import pytest

from explain_mnist import plots
from explain_mnist.data import REPO_ROOT

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def robust_result(**changes):
    result = {"image": np.linspace(0, 1, 784).tolist(), "class_names": ["1", "3"], "predicted": 0,
              "counterexample": None, "counterexample_class": None, "epsilon": 0.1, "verdict": "robust",
              "method": "bab", "nodes": 1234, "seconds": 0.0123, "verified": True}
    result.update(changes)
    return result


def not_robust_result():
    x0 = np.linspace(0, 1, 784)
    return robust_result(verdict="not_robust", counterexample=np.clip(x0 + 0.05, 0, 1).tolist(),
                         counterexample_class=1, method="attack", nodes=0)


def titles(fig):
    texts = [ax.get_title() for ax in fig.axes]
    if fig._suptitle is not None:
        texts.append(fig._suptitle.get_text())
    return "\n".join(texts)


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_suffix_names_the_format(tmp_path, fmt):
    path = tmp_path / f"f.{fmt}"
    plots.save_figure(plots.verify_figure(robust_result()), path)
    assert path.read_bytes().startswith(MAGIC[fmt])


def test_unsupported_suffix_writes_nothing(tmp_path):
    from explain_mnist.errors import UserError
    with pytest.raises(UserError, match="supported"):
        plots.save_figure(plots.verify_figure(robust_result()), tmp_path / "f.jpg")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_same_content_gives_the_same_bytes_across_processes(tmp_path, fmt):
    """Two processes (different times, different SVG salts if unset) write byte-identical files, free of dates."""
    code = ("import sys; import numpy as np; from explain_mnist import plots; "
            "x = np.linspace(0, 1, 784).tolist(); "
            "r = dict(image=x, class_names=['1', '3'], predicted=0, counterexample=None, counterexample_class=None, "
            "epsilon=0.1, verdict='robust', method='bab', nodes=7, seconds=float(sys.argv[2]), verified=True); "
            "plots.save_figure(plots.verify_figure(r), sys.argv[1])")
    for k, seconds in enumerate(("0.001", "2.5")):   # the solve time differs; the figure must not
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{k}.{fmt}"), seconds], cwd=REPO_ROOT, check=True)
    first, second = [(tmp_path / f"{k}.{fmt}").read_bytes() for k in range(2)]
    assert first == second
    for word in (b"Matplotlib", b"CreationDate", b"<dc:date>"):
        assert word not in first, word


def test_titles_name_the_class_and_hold_no_times():
    for result in (robust_result(), not_robust_result()):
        fig = plots.verify_figure(result)
        text = titles(fig)
        plots.plt.close(fig)
        assert "class 0 (digit 1)" in text
        assert " ms" not in text and " s\n" not in text and not text.rstrip().endswith(" s")
    assert "1,234 nodes" in titles(plots.verify_figure(robust_result()))
    assert "class 1 (digit 3)" in titles(plots.verify_figure(not_robust_result()))


def test_titles_without_class_names_show_the_index():
    text = titles(plots.verify_figure(robust_result(class_names=None, predicted=1)))
    assert "class 1:" in text and "digit" not in text
