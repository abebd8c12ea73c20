"""The numpy network read from a Keras model equals Keras itself, for the shipped models and every supported layer."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from explain_mnist import keras_io  # noqa: E402
from explain_mnist.errors import UserError  # noqa: E402
from explain_mnist.models import reference_logits  # noqa: E402

L = keras.layers


def assert_matches_keras(model, X, tol=1e-4):
    net = keras_io.network_from_keras_model(model)
    ours = net.forward(X)
    theirs = keras_io.keras_logits(model, X)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < tol
    assert np.array_equal(net.predict(X), keras_io.keras_classes(model, X))
    return net


@pytest.mark.parametrize("name", ["twoclass", "multiclass", "cnn_simple"])
def test_shipped_models_match_keras(name, shipped_nets, test_set):
    net = shipped_nets[name]
    X = test_set.x[:300].astype(np.float64)
    theirs = reference_logits(net, X)
    assert np.abs(net.forward(X) - theirs).max() < 1e-4
    keras_model = keras_io.load_keras_model(net.meta["path"])
    assert np.array_equal(net.predict(X), keras_io.keras_classes(keras_model, X))


def test_cnn_folds_into_one_affine_map(cnn_net):
    assert cnn_net.layer_sizes() == [784, 160, 10]
    assert len(cnn_net.hidden) == 1


def randomise_batchnorm(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])


CONV_CASES = [
    dict(padding="valid", strides=1, filters=3, kernel=3, dilation=1),
    dict(padding="same", strides=1, filters=2, kernel=3, dilation=1),
    dict(padding="same", strides=2, filters=4, kernel=3, dilation=1),
    dict(padding="valid", strides=2, filters=2, kernel=(2, 3), dilation=1),
    dict(padding="same", strides=1, filters=2, kernel=3, dilation=2),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_options_match_keras(case, rng=np.random.default_rng(0)):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        L.Input((9, 8, 2)),
        L.Conv2D(case["filters"], case["kernel"], strides=case["strides"], padding=case["padding"],
                 dilation_rate=case["dilation"], activation="relu"),
        L.Conv2D(2, 2, padding="same", use_bias=False),
        L.Flatten(),
        L.Dense(4, activation="softmax"),
    ])
    assert_matches_keras(model, rng.uniform(0, 1, (64, 9 * 8 * 2)))


def test_every_layer_type_matches_keras():
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        L.Input((28, 28, 1)),
        L.Conv2D(4, 3, strides=2, padding="same"),
        L.BatchNormalization(),
        L.AveragePooling2D(3, padding="same"),
        L.ReLU(),
        L.Conv2D(3, 2, activation="relu"),
        L.AveragePooling2D((2, 2), strides=1),
        L.Dropout(0.3),
        L.Flatten(),
        L.Dense(12),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.Reshape((3, 4)),
        L.Reshape((-1,)),
        L.Dense(7, activation="relu", use_bias=False),
        L.Dense(10),
        L.Softmax(),
    ])
    randomise_batchnorm(model, rng)
    net = assert_matches_keras(model, rng.uniform(0, 1, (200, 784)))
    assert net.decision == "argmax"


def test_flat_input_sigmoid_model_matches_keras():
    rng = np.random.default_rng(2)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([L.Input((784,)), L.Dense(6, activation="relu"), L.Dropout(0.5),
                              L.Dense(5, activation="linear"), L.Activation("relu"), L.Dense(1, activation="sigmoid")])
    net = assert_matches_keras(model, rng.uniform(0, 1, (200, 784)))
    assert net.decision == "sigmoid"


@pytest.mark.parametrize("bad_layer, name", [
    (lambda: L.LSTM(4, name="my_lstm"), "my_lstm"),
    (lambda: L.MaxPooling2D(2, name="my_pool"), "my_pool"),
    (lambda: L.Activation("tanh", name="my_tanh"), "my_tanh"),
])
def test_unsupported_layer_is_named(bad_layer, name):
    shape = (28, 28) if name == "my_lstm" else (28, 28, 1)
    model = keras.Sequential([L.Input(shape), bad_layer(), L.Flatten(), L.Dense(2)])
    with pytest.raises(UserError, match=name) as info:
        keras_io.network_from_keras_model(model)
    assert "supported" in str(info.value)
    assert "\n" not in str(info.value)


def test_single_softmax_output_is_refused():
    # Keras answers 1.0 for every input: a constant, not a classifier
    model = keras.Sequential([L.Input((4,)), L.Dense(3, activation="relu"), L.Dense(1, activation="softmax")])
    assert np.all(model.predict(np.random.default_rng(0).normal(size=(5, 4)), verbose=0) == 1.0)
    with pytest.raises(UserError, match="softmax over a single output is constant") as info:
        keras_io.network_from_keras_model(model)
    assert "\n" not in str(info.value)


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        keras_io.read_keras(tmp_path / "absent.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a keras archive")
    with pytest.raises(UserError, match="cannot be loaded") as info:
        keras_io.read_keras(bad)
    assert "\n" not in str(info.value)


def test_reference_logits_strip_a_sigmoid_before_trailing_dropout():
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(5)
    model = keras.Sequential([L.Input((784,)), L.Dense(5, activation="relu"), L.Dense(1, activation="sigmoid"),
                              L.Dropout(0.2)])
    X = rng.uniform(0, 1, (100, 784))
    net = keras_io.network_from_keras_model(model)
    logits = keras_io.keras_logits(model, X)
    assert np.abs(net.forward(X) - logits).max() < 1e-4
    assert np.array_equal(net.classify_logits(logits), keras_io.keras_classes(model, X))
