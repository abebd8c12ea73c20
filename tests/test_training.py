"""Training is seeded and reproducible, and the model card reports the accuracy of the saved model."""
import json

import numpy as np
import pytest

pytest.importorskip("keras")

from explain_mnist import keras_io, training  # noqa: E402
from explain_mnist.models import load_network  # noqa: E402


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory, test_set):
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    x = (test_set.x.reshape(-1, 28, 28) * 255).round().astype(np.uint8)
    np.savez(path, x_train=x[:3000], y_train=test_set.y[:3000], x_test=x[3000:4000], y_test=test_set.y[3000:4000])
    return path


def test_twoclass_training_is_reproducible_and_card_is_true(small_npz, tmp_path):
    cards = [training.train("twoclass", 2, 7, tmp_path / f"run{k}.keras", str(small_npz)) for k in range(2)]
    nets = [load_network(str(tmp_path / f"run{k}.keras")) for k in range(2)]
    for a, b in zip(nets[0].affines, nets[1].affines):
        assert np.array_equal(a.dense_W(), b.dense_W()) and np.array_equal(a.b, b.b)
    card = json.loads((tmp_path / "run0.json").read_text())
    assert card == cards[0] and card["seed"] == 7 and card["epochs"] == 2 and card["keras_version"]
    test = training.twoclass_split(training.load_training_data(str(small_npz), verbose=False).test)
    assert card["test_size"] == len(test)
    model = keras_io.load_keras_model(tmp_path / "run0.keras")
    keras_accuracy = np.mean(keras_io.keras_classes(model, test.x) == test.y)
    assert card["test_accuracy"] == pytest.approx(keras_accuracy)
    assert card["test_accuracy"] > 0.9
    assert card["data_source"] == "MNIST training set (3,000 images, mnist.npz), digits 1 vs 3"   # no local path


def test_twoclass_split_relabels_digits():
    split = training.Split(np.arange(12, dtype=np.float32).reshape(6, 2), np.array([1, 3, 7, 3, 1, 0]))
    out = training.twoclass_split(split)
    assert list(out.y) == [0, 1, 1, 0] and np.array_equal(out.x[:, 0], [0, 2, 6, 8])


def test_training_help_shows_the_defaults():
    import subprocess
    import sys

    from explain_mnist.data import REPO_ROOT
    for script, epochs in (("train_twoclass.py", 5), ("train_multiclass.py", None), ("train_cnn_simple.py", None)):
        done = subprocess.run([sys.executable, script, "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
        text = " ".join(done.stdout.split())
        assert done.returncode == 0 and "(default: 0)" in text
        assert f"(default: models/{script[6:-3]}.keras)" in text
        if epochs:
            assert f"training epochs (default: {epochs})" in text


def test_unwritable_out_is_refused_before_training(tmp_path):
    import subprocess
    import sys

    from explain_mnist.data import REPO_ROOT
    (tmp_path / "plain").write_text("")
    for out, reason in (("/proc/nope/m.keras", "cannot create the folder /proc/nope"),
                        (f"{tmp_path}/plain/m.keras", "is a file, not a folder")):
        done = subprocess.run([sys.executable, "train_twoclass.py", "--out", out], cwd=REPO_ROOT, capture_output=True,
                              text=True)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr   # no "data: ..." line: nothing was loaded
        assert lines[0].startswith(f"error: --out {out}") and reason in lines[0]
