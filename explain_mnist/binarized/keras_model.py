"""The Keras side of the binarized network: its layers, its training, and the fold into the exact integer form.

The only module of `binarized` that imports Keras (lazily, through `layers()`).

The network (784-200-100-10 by default): input pixels binarized to bits ``x = [pixel > 0.5]`` in {0, 1}; each
hidden block is a dense layer whose weights are ``sign(w)`` (``sign(0) = +1``) of real latent weights trained
through a straight-through estimator, then BatchNormalization, then ``sign`` (``sign(0) = +1``) giving +-1; the
output layer is a dense layer with binarized weights and no bias, times one positive trainable scale (which
changes no argmax). Every hidden pre-activation is an integer sum computed exactly in float32, so the only real
arithmetic is BatchNormalization; `fold` evaluates Keras' own BatchNormalization and sign on every integer value a
neuron's sum can take, so the integer thresholds reproduce Keras' float32 decisions exactly.
"""
from __future__ import annotations

import os
import time

import numpy as np

from explain_mnist.binarized.network import BinarizedNet
from explain_mnist.errors import UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HIDDEN = (200, 100)
_LAYERS = None


def layers():
    """Return the module's Keras classes (defined and registered on first use): a namespace with the layers."""
    global _LAYERS
    if _LAYERS is not None:
        return _LAYERS
    try:
        import keras
    except ImportError:
        raise UserError("Keras is not installed; pip install -r requirements.txt") from None
    from keras import ops

    def ste_sign(x):
        """Return sign(x) in {-1, +1} (sign(0) = +1) forward, the gradient of clip(x, -1, 1) backward; exact."""
        s = ops.where(x >= 0, 1.0, -1.0)
        c = ops.clip(x, -1.0, 1.0)
        return ops.stop_gradient(s) + (c - ops.stop_gradient(c))

    @keras.saving.register_keras_serializable(package="explain_mnist_bnn")
    class BinarizeInput(keras.layers.Layer):
        """Pixels in [0, 1] -> bits in {0, 1} (pixel > 0.5)."""

        def call(self, x):
            return ops.cast(x > 0.5, "float32")

    @keras.saving.register_keras_serializable(package="explain_mnist_bnn")
    class SignActivation(keras.layers.Layer):
        """sign with a straight-through gradient: values in {-1, +1}."""

        def call(self, x):
            return ste_sign(x)

    @keras.saving.register_keras_serializable(package="explain_mnist_bnn")
    class BinaryDense(keras.layers.Layer):
        """A dense layer without bias whose weights are sign(latent weights), latent weights clipped to [-1, 1]."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = int(units)

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform",
                                          constraint=lambda w: ops.clip(w, -1.0, 1.0), name="kernel")

        def call(self, x):
            return ops.matmul(x, ste_sign(self.kernel))

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    @keras.saving.register_keras_serializable(package="explain_mnist_bnn")
    class PositiveScale(keras.layers.Layer):
        """Multiply by exp(s), one trainable scalar (a softmax temperature; no argmax changes)."""

        def build(self, input_shape):
            self.log_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(-2.0),
                                             name="log_scale")

        def call(self, x):
            return x * ops.exp(self.log_scale)

    class Namespace:
        pass
    ns = Namespace()
    ns.keras, ns.BinarizeInput, ns.SignActivation = keras, BinarizeInput, SignActivation
    ns.BinaryDense, ns.PositiveScale = BinaryDense, PositiveScale
    _LAYERS = ns
    return ns


def build_model(n_inputs: int = 784, hidden=HIDDEN, n_classes: int = 10, seed: int = 0):
    """Return the uncompiled Keras binarized network."""
    L = layers()
    keras = L.keras
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((n_inputs,))
    h = L.BinarizeInput(name="binarize")(inputs)
    for k, units in enumerate(hidden):
        h = L.BinaryDense(units, name=f"dense_{k}")(h)
        h = keras.layers.BatchNormalization(name=f"bn_{k}")(h)
        h = L.SignActivation(name=f"sign_{k}")(h)
    out = L.BinaryDense(n_classes, name="dense_out")(h)
    out = L.PositiveScale(name="scale")(out)
    return keras.Model(inputs, out)


def single_thread() -> None:
    """Make TensorFlow use one thread (call before any TensorFlow work)."""
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:      # already initialised
        pass


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int, hidden=HIDDEN, batch_size: int = 100,
          verbose: int = 2):
    """Return the Keras model trained on images ``x`` (n, 784) in [0, 1] and labels ``y``, and the seconds taken."""
    L = layers()
    single_thread()
    model = build_model(x.shape[1], hidden, int(y.max()) + 1, seed)
    model.compile(optimizer=L.keras.optimizers.Adam(1e-3),
                  loss=L.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=False)
    start = time.time()
    model.fit(x.astype(np.float32), y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    return model, time.time() - start


def save_compact(model, path) -> None:
    """Save the model with each binary layer's latent weights replaced by their signs (the same network: sign is
    all it uses), in a deflated zip: about 40 kB instead of 2 MB. The latent weights (for more training) are lost."""
    import shutil
    import tempfile
    import zipfile
    L = layers()
    fresh = L.keras.models.clone_model(model)          # uncompiled: no optimizer state in the file
    fresh.set_weights(model.get_weights())
    for layer in fresh.layers:
        if isinstance(layer, L.BinaryDense):
            kernel = np.asarray(layer.kernel.numpy())
            layer.kernel.assign(np.where(kernel >= 0, 1.0, -1.0).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.keras")
        fresh.save(raw)
        packed = os.path.join(tmp, "packed.keras")
        with zipfile.ZipFile(raw) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        shutil.move(packed, path)


def load(path):
    """Return the Keras binarized model saved at ``path`` (UserError if missing or unreadable)."""
    L = layers()
    if not os.path.isfile(path):
        raise UserError(f"Keras model {path} not found; train it with binary.py train")
    try:
        model = L.keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise UserError(f"Keras model {path} cannot be read ({type(exc).__name__}); retrain it with "
                        f"binary.py train") from None
    return model


def predict(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Return the Keras model's labels (first index of the largest output) for images ``x`` in [0, 1]."""
    return predict_generic(model, np.asarray(x).reshape(-1, 784), batch_size)


def predict_generic(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Return the Keras model's labels for inputs ``x`` of shape (n, inputs)."""
    single_thread()
    out = model.predict(np.asarray(x, dtype=np.float32), batch_size=batch_size, verbose=0)
    return np.argmax(out, axis=1)


def _dense_blocks(model):
    """Return [(BinaryDense, BatchNormalization)] of the hidden blocks and the output BinaryDense."""
    L = layers()
    blocks, pending, out = [], None, None
    for layer in model.layers:
        if isinstance(layer, L.BinaryDense):
            pending = out = layer
        elif isinstance(layer, L.keras.layers.BatchNormalization):
            if pending is None:
                raise UserError(f"layer {layer.name}: BatchNormalization without a binary dense layer before it")
            blocks.append((pending, layer))
            pending = None
    if out is None or pending is not out:
        raise UserError("the model does not end in a binary dense layer; not a binarized network of binary.py")
    return blocks, out


def fold(model) -> BinarizedNet:
    """Return the exact integer form of a Keras binarized network (see the module docstring and `BinarizedNet`).

    For each hidden neuron, its sum over ``n`` inputs is an integer determined by ``m``, the number of inputs
    that match its weight's sign; ``z = m - n_neg`` on the {0, 1} first input, ``z = 2 m - n`` on a +-1 input.
    Keras' BatchNormalization and sign are evaluated on every ``m`` in 0..n; the output must be monotone in m:
    non-decreasing (BN scale > 0) gives ``[m >= K]``, non-increasing (scale < 0) flips the neuron's weights
    (m -> n - m) and gives ``[m' >= K]``; a constant gives K = 0 (always +1) or K = n + 1 (never).
    """
    import tensorflow as tf
    blocks, out = _dense_blocks(model)
    weights, thresholds, flipped = [], [], []
    for k, (dense, bn) in enumerate(blocks):
        kernel = np.asarray(dense.kernel.numpy())
        W = np.where(kernel >= 0, 1, -1).astype(np.int8).T          # (units, inputs)
        units, n = W.shape
        m = np.arange(n + 1, dtype=np.float64)[:, None]
        if k == 0:
            z = m - np.count_nonzero(W < 0, axis=1)[None, :]
        else:
            z = 2 * m - n + np.zeros((1, units))
        y = np.asarray(bn(tf.constant(z.astype(np.float32)), training=False))
        s = y >= 0                                                     # SignActivation: +1 iff y >= 0
        K = np.zeros(units, dtype=np.int64)
        flip = np.zeros(units, dtype=bool)
        for i in range(units):
            col = s[:, i]
            up, down = np.all(col[1:] >= col[:-1]), np.all(col[1:] <= col[:-1])
            if col.all():
                K[i] = 0
            elif not col.any():
                K[i] = n + 1
            elif up:
                K[i] = int(np.argmax(col))
            elif down:
                flip[i] = True
                K[i] = n - int(np.flatnonzero(col)[-1])
            else:
                raise UserError(f"layer {k} neuron {i}: BatchNormalization + sign is not monotone in the integer "
                                f"sum; cannot fold it into a threshold")
        W[flip] = -W[flip]
        weights.append(W)
        thresholds.append(K)
        flipped.append(int(flip.sum()))
    V = np.where(np.asarray(out.kernel.numpy()) >= 0, 1, -1).astype(np.int8).T
    return BinarizedNet(weights, thresholds, V, meta={"flipped_rows": flipped})


def agreement(model, net: BinarizedNet, x: np.ndarray) -> tuple[int, np.ndarray]:
    """Return (images where Keras and the integer forward pass give the same label, indices where they differ)."""
    keras_labels = predict(model, x)
    ours = net.predict(x)
    differ = np.flatnonzero(keras_labels != ours)
    return int(len(x) - len(differ)), differ


def train_and_save(epochs: int, seed: int, data_path, keras_out, npz_out, hidden=HIDDEN) -> dict:
    """Train, fold and save the Keras model and its integer form; return the card (accuracies, agreement)."""
    from pathlib import Path

    from explain_mnist.binarized import network
    from explain_mnist.data import load_training_data, log
    data = load_training_data(data_path)
    model, seconds = train(data.train.x, data.train.y, epochs, seed, hidden)
    keras_out, npz_out = Path(keras_out), Path(npz_out)
    keras_out.parent.mkdir(parents=True, exist_ok=True)
    save_compact(model, keras_out)
    model = load(str(keras_out))            # fold what was saved, as any later run will read it
    net = fold(model)
    net.keras_file = keras_out.name if keras_out.parent.resolve() == npz_out.parent.resolve() else str(keras_out)
    network.save(net, npz_out)
    agree, differ = agreement(model, net, data.test.x)
    accuracy = float(np.mean(net.predict(data.test.x) == data.test.y))
    keras_accuracy = float(np.mean(predict(model, data.test.x) == data.test.y))
    log(f"binary: test accuracy {accuracy:.4f} (integer form), {keras_accuracy:.4f} (Keras); labels agree on "
        f"{agree} of {len(data.test)} test images")
    return {"model": "binary", "layer_sizes": net.layer_sizes(), "data_source": data.description,
            "train_size": len(data.train), "test_size": len(data.test), "epochs": epochs, "seed": seed,
            "test_accuracy": accuracy, "keras_test_accuracy": keras_accuracy, "agree": agree,
            "disagree_indices": differ.tolist(), "flipped_rows": net.meta.get("flipped_rows"),
            "training_seconds": round(seconds, 1), "keras_file": str(keras_out), "npz_file": str(npz_out)}
