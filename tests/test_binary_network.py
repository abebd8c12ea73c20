"""binarized/network and keras_model: the integer form against Keras and against +-1 arithmetic, its file checks.

- the shipped integer form gives Keras' label on all 10,000 test images;
- folding BatchNormalization with negative scales (weights flipped, thresholds mirrored) still matches Keras,
  on a small model with random weights and BN statistics;
- the forward pass equals the network computed in +-1 arithmetic with real BN thresholds (sign(W h) >= t);
- the .npz reader refuses corrupt files and shapes that do not chain.
"""
import numpy as np
import pytest

from explain_mnist.binarized import network
from explain_mnist.data import REPO_ROOT
from explain_mnist.errors import UserError

NPZ = REPO_ROOT / "models" / "binary_net.npz"
KERAS = REPO_ROOT / "models" / "binary.keras"


def test_shipped_integer_form_matches_keras_on_every_test_image(test_set):
    from explain_mnist.binarized import keras_model
    net = network.load(NPZ)
    assert net.layer_sizes() == [784, 200, 100, 10]
    assert (NPZ.parent / net.keras_file) == KERAS
    model = keras_model.load(str(KERAS))
    agree, differ = keras_model.agreement(model, net, test_set.x)
    assert agree == len(test_set) == 10000, differ[:10]
    assert np.mean(net.predict(test_set.x) == test_set.y) > 0.9


def test_fold_handles_negative_batchnorm_scales():
    from explain_mnist.binarized import keras_model
    rng = np.random.default_rng(5)
    model = keras_model.build_model(20, (9, 7), 4, seed=1)
    for layer in model.layers:
        if layer.name.startswith("bn_"):
            units = layer.gamma.shape[0]
            gamma = rng.normal(0, 1, units)
            gamma[: units // 2] = -np.abs(gamma[: units // 2])
            layer.set_weights([gamma, rng.normal(0, 2, units), rng.normal(0, 3, units),
                               rng.uniform(0.5, 9, units)])
        elif layer.name.startswith("dense"):
            layer.set_weights([rng.normal(0, 1, w.shape) for w in layer.get_weights()])
    net = keras_model.fold(model)
    assert net.meta["flipped_rows"][0] > 0 and net.meta["flipped_rows"][1] > 0
    x = rng.uniform(0, 1, (3000, 20))
    assert np.array_equal(keras_model.predict_generic(model, x), net.predict(x))


def test_forward_pass_equals_plus_minus_one_arithmetic():
    rng = np.random.default_rng(0)
    net = network.random_net([30, 12, 8, 5], rng)
    x = rng.integers(0, 2, (500, 30))
    h = x.astype(np.int64)                      # first layer: {0,1} input, z = W x; neuron on iff m >= K
    for k, (W, K) in enumerate(zip(net.weights, net.thresholds)):
        n = W.shape[1]
        z = h @ W.T.astype(np.int64)
        n_neg = (W < 0).sum(axis=1)
        m = z + n_neg if k == 0 else (z + n) // 2    # matches from the +-1 pre-activation
        h = np.where(m >= K, 1, -1)
    logits = h @ net.V.T.astype(np.int64)
    assert np.array_equal(np.argmax(logits, axis=1), net.predict_bits(x))


def test_npz_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    net = network.random_net([10, 6, 4, 3], rng)
    path = tmp_path / "net.npz"
    network.save(net, path)
    again = network.load(path)
    x = rng.integers(0, 2, (50, 10))
    assert np.array_equal(again.predict_bits(x), net.predict_bits(x))
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot be read"):
        network.load(tmp_path / "corrupt.npz")
    with pytest.raises(UserError, match="not found"):
        network.load(tmp_path / "missing.npz")
    bad = network.BinarizedNet([net.weights[0], net.weights[1][:, :5]], net.thresholds, net.V)
    with pytest.raises(UserError, match="do not chain"):
        network.check(bad)
    bad = network.BinarizedNet([net.weights[0] * 2] + net.weights[1:], net.thresholds, net.V)
    with pytest.raises(UserError, match="other than -1 and"):
        network.check(bad)
    bad = network.BinarizedNet(net.weights, [net.thresholds[0][:3], net.thresholds[1]], net.V)
    with pytest.raises(UserError, match="one per neuron"):
        network.check(bad)
