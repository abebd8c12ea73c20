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


def test_twoclass_split_relabels_digits():
    split = training.Split(np.arange(12, dtype=np.float32).reshape(6, 2), np.array([1, 3, 7, 3, 1, 0]))
    out = training.twoclass_split(split)
    assert list(out.y) == [0, 1, 1, 0] and np.array_equal(out.x[:, 0], [0, 2, 6, 8])
