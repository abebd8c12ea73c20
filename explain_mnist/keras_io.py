"""The Keras boundary: read a saved Keras model into a `Network`, evaluate it, and train the shipped models.

This is the only module of the package that imports Keras (lazily, inside the
functions that need it). Each supported layer type maps to a converter in
`LAYER_CONVERTERS`; a converter turns the layer into a list of `Affine` / `ReLU`
layers, given the current activation shape (channels last, no batch axis).
Flattened vectors follow Keras' row-major order of ``(height, width, channels)``,
so Flatten and Reshape are the identity on them.

A final ``softmax`` becomes the ``argmax`` decision rule on the logits and a final
single-unit ``sigmoid`` the ``sigmoid`` rule (class 1 iff logit > 0).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from explain_mnist.errors import UserError
from explain_mnist.linear_maps import conv2d_matrix, same_pads
from explain_mnist.network import Affine, Network, ReLU

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # else TensorFlow prints notices on stderr at import
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _keras():
    try:
        import keras
    except ImportError:
        raise UserError("Keras is not installed; run `make test` or `pip install -r requirements.txt`") from None
    return keras


# ----------------------------------------------------------------------------- layer converters

def _activation_layers(name: str, layer_name: str, is_last: bool) -> tuple[list, str | None]:
    """Return (layers, decision) for an activation; decision is set for a final softmax/sigmoid."""
    if name in ("linear", None):
        return [], None
    if name == "relu":
        return [ReLU()], None
    if is_last and name in ("softmax", "sigmoid"):
        return [], name
    raise UserError(f"layer {layer_name!r}: activation {name!r} is not supported; supported: relu, linear "
                    f"(and softmax or sigmoid on the last layer)")


def conv2d_keras_matrix(kernel: np.ndarray, in_shape: tuple, strides: tuple, padding: str,
                        dilation: tuple = (1, 1)) -> tuple[sp.csr_matrix, tuple]:
    """Return the sparse matrix of a Keras channels-last Conv2D (no bias) and its output shape.

    ``kernel`` has Keras' shape ``(kh, kw, c_in, c_out)``; ``padding`` is "valid" or "same".
    """
    pads = (0, 0, 0, 0) if padding == "valid" else same_pads(in_shape[:2], kernel.shape[:2], strides, dilation)
    return conv2d_matrix(np.transpose(kernel, (3, 2, 0, 1)), in_shape, strides, pads, dilation, channels_last=True)


def avgpool2d_matrix(in_shape: tuple, pool: tuple, strides: tuple, padding: str) -> tuple[sp.csr_matrix, tuple]:
    """Return the sparse matrix of channels-last 2-D average pooling and its output shape.

    With "same" padding the average is over the pixels inside the image only, as Keras does.
    """
    H, W, C = in_shape
    M, out_shape = conv2d_keras_matrix(np.ones(pool + (1, 1)), (H, W, 1), strides, padding)
    counts = np.asarray(M.sum(axis=1)).reshape(-1)
    M = sp.diags(1.0 / counts) @ M
    return sp.csr_matrix(sp.kron(M, sp.eye(C))), (out_shape[0], out_shape[1], C)


def _dense(layer, cfg, shape, is_last):
    if len(shape) != 1:
        raise UserError(f"layer {layer.name!r}: Dense on a {shape} input is not supported; add a Flatten before it")
    weights = layer.get_weights()
    kernel = weights[0]
    bias = weights[1] if cfg.get("use_bias", True) else np.zeros(kernel.shape[1])
    acts, decision = _activation_layers(cfg.get("activation"), layer.name, is_last)
    return [Affine(kernel.T, bias)] + acts, (kernel.shape[1],), decision


def _image_shape(layer, shape):
    if len(shape) != 3:
        raise UserError(f"layer {layer.name!r} needs a height x width x channels input, got {shape}")
    return shape


def _check_channels_last(layer, cfg):
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise UserError(f"layer {layer.name!r}: data_format {cfg['data_format']!r} is not supported; "
                        f"use channels_last")


def _conv2d(layer, cfg, shape, is_last):
    shape = _image_shape(layer, shape)
    _check_channels_last(layer, cfg)
    if cfg.get("groups", 1) != 1:
        raise UserError(f"layer {layer.name!r}: grouped convolution is not supported")
    weights = layer.get_weights()
    kernel = weights[0]
    bias = weights[1] if cfg.get("use_bias", True) else np.zeros(kernel.shape[3])
    M, out_shape = conv2d_keras_matrix(kernel, shape, tuple(cfg["strides"]), cfg["padding"],
                                       tuple(cfg.get("dilation_rate", (1, 1))))
    acts, decision = _activation_layers(cfg.get("activation"), layer.name, is_last)
    return [Affine(M, np.tile(bias, out_shape[0] * out_shape[1]))] + acts, out_shape, decision


def _avgpool2d(layer, cfg, shape, is_last):
    shape = _image_shape(layer, shape)
    _check_channels_last(layer, cfg)
    pool = tuple(cfg["pool_size"])
    strides = tuple(cfg.get("strides") or pool)
    M, out_shape = avgpool2d_matrix(shape, pool, strides, cfg["padding"])
    return [Affine(M, np.zeros(M.shape[0]))], out_shape, None


def _flatten(layer, cfg, shape, is_last):
    return [], (int(np.prod(shape)),), None


def _reshape(layer, cfg, shape, is_last):
    target = tuple(cfg["target_shape"])
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target = tuple(int(np.prod(shape)) // known if d == -1 else d for d in target)
    if int(np.prod(target)) != int(np.prod(shape)):
        raise UserError(f"layer {layer.name!r}: cannot reshape {shape} to {target}")
    return [], target, None


def _identity(layer, cfg, shape, is_last):
    return [], shape, None


def _batchnorm(layer, cfg, shape, is_last):
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) else axis
    if axis not in (-1, len(shape)):
        raise UserError(f"layer {layer.name!r}: BatchNormalization over axis {axis} is not supported; "
                        f"normalise the last (channel) axis")
    weights = list(layer.get_weights())
    gamma = weights.pop(0) if cfg.get("scale", True) else None
    beta = weights.pop(0) if cfg.get("center", True) else None
    mean, var = weights[0], weights[1]
    C = shape[-1]
    gamma = np.ones(C) if gamma is None else gamma
    beta = np.zeros(C) if beta is None else beta
    scale = gamma / np.sqrt(var + cfg.get("epsilon", 1e-3))
    n = int(np.prod(shape))
    reps = n // C
    return [Affine(sp.diags(np.tile(scale, reps)).tocsr(), np.tile(beta - mean * scale, reps))], shape, None


def _activation(layer, cfg, shape, is_last):
    acts, decision = _activation_layers(cfg.get("activation"), layer.name, is_last)
    return acts, shape, decision


def _relu(layer, cfg, shape, is_last):
    if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
        raise UserError(f"layer {layer.name!r}: ReLU with max_value, negative_slope or threshold is not supported")
    return [ReLU()], shape, None


def _softmax(layer, cfg, shape, is_last):
    if not is_last:
        raise UserError(f"layer {layer.name!r}: Softmax is supported only as the last layer")
    return [], shape, "softmax"


LAYER_CONVERTERS = {
    "InputLayer": _identity,
    "Dense": _dense,
    "Conv2D": _conv2d,
    "AveragePooling2D": _avgpool2d,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Dropout": _identity,
    "BatchNormalization": _batchnorm,
    "Activation": _activation,
    "ReLU": _relu,
    "Softmax": _softmax,
}


# ----------------------------------------------------------------------------- reading models

def load_keras_model(path: str | Path):
    """Return the Keras model saved at ``path``, or raise a UserError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found; train it (see README) or give another --model")
    keras = _keras()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise UserError(f"model file {path} cannot be loaded by Keras ({type(exc).__name__}: not a valid Keras "
                        f"model file); re-save it with keras.Model.save('model.keras')") from None


def network_from_keras_model(model, name: str = "keras") -> Network:
    """Return the `Network` equal to a Keras model built from the supported layers."""
    in_shape = tuple(int(d) for d in model.input_shape[1:])
    shape = in_shape
    layers: list = []
    decision = None
    keras_layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    for k, layer in enumerate(keras_layers):
        kind = type(layer).__name__
        converter = LAYER_CONVERTERS.get(kind)
        if converter is None:
            raise UserError(f"layer {layer.name!r} of type {kind} is not supported; supported: "
                            f"{', '.join(sorted(LAYER_CONVERTERS))}")
        is_last = all(type(later).__name__ == "Dropout" for later in keras_layers[k + 1:])
        new_layers, shape, layer_decision = converter(layer, layer.get_config(), shape, is_last)
        layers.extend(new_layers)
        decision = layer_decision or decision
    if not any(isinstance(layer, Affine) for layer in layers):
        n = int(np.prod(in_shape))
        layers.append(Affine(np.eye(n), np.zeros(n)))
    n_out = int(np.prod(shape))
    if decision == "sigmoid" and n_out != 1:
        raise UserError(f"a final sigmoid over {n_out} outputs is not supported (only a single sigmoid output)")
    if decision == "softmax" and n_out == 1:
        raise UserError("a final softmax over a single output is constant (1.0 for every input); use a sigmoid "
                        "for one output, or a softmax over two or more")
    rule = "sigmoid" if decision == "sigmoid" or n_out == 1 else "argmax"
    return Network(layers, decision=rule, input_shape=in_shape, name=name,
                   meta={"format": "keras", "final_activation": decision or "linear"})


def read_keras(path: str | Path) -> Network:
    """Return the `Network` of the Keras model file at ``path``."""
    path = Path(path)
    net = network_from_keras_model(load_keras_model(path), name=path.stem)
    net.meta["path"] = str(path)
    return net


def logit_model(model):
    """Return a Keras model computing ``model``'s outputs before a final softmax or sigmoid."""
    keras = _keras()
    position = max(k for k, layer in enumerate(model.layers) if type(layer).__name__ != "Dropout")
    last = model.layers[position]
    if type(last).__name__ == "Softmax":
        return keras.Model(model.inputs, last.input)
    if getattr(getattr(last, "activation", None), "__name__", "") not in ("softmax", "sigmoid"):
        return model
    cloned = keras.models.clone_model(model)
    cloned.set_weights(model.get_weights())
    cloned.layers[position].activation = keras.activations.linear
    return cloned


def keras_logits(model, X: np.ndarray) -> np.ndarray:
    """Return the pre-softmax/sigmoid outputs of a Keras model on flattened inputs ``X`` (B, n)."""
    return _predict(logit_model(model), X)


PREDICT_ROWS = 1024


def _predict(model, X: np.ndarray) -> np.ndarray:
    """Return the model's outputs on ``X``, `PREDICT_ROWS` rows per call of ``predict_on_batch`` (``predict`` costs
    about 70 ms a call in set-up, which a batch of explanations pays once per image)."""
    X = np.asarray(X, dtype=np.float32).reshape((-1,) + tuple(model.input_shape[1:]))
    parts = [np.asarray(model.predict_on_batch(X[i:i + PREDICT_ROWS]), dtype=np.float64)
             for i in range(0, len(X), PREDICT_ROWS)]
    return np.concatenate(parts) if parts else np.zeros((0,) + tuple(model.output_shape[1:]))


def keras_classes(model, X: np.ndarray) -> np.ndarray:
    """Return the classes a Keras model gives to flattened inputs ``X`` (argmax, or sigmoid > 0.5)."""
    out = _predict(model, X)
    if out.shape[-1] == 1:
        return (out[:, 0] > 0.5).astype(np.int64)
    return np.argmax(out, axis=-1).astype(np.int64)


# ----------------------------------------------------------------------------- MNIST download

def keras_mnist():
    """Return ``keras.datasets.mnist.load_data()`` (cache or download), or None where it is unavailable."""
    try:
        keras = _keras()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.datasets.mnist.load_data()
    except Exception:
        return None


_LOADED: dict = {}


def reference_logits(path: str | Path, X: np.ndarray) -> np.ndarray:
    """Return the logits Keras itself computes for the model file at ``path`` (model cached per path)."""
    key = str(Path(path).resolve())
    if key not in _LOADED:
        _LOADED[key] = logit_model(load_keras_model(path))
    return _predict(_LOADED[key], X)


# ----------------------------------------------------------------------------- training the shipped models

def _twoclass_layers(layers):
    return [layers.Input((784,)), layers.Dense(20, activation="relu"), layers.Dense(1, activation="sigmoid")]


def _multiclass_layers(layers):
    return [layers.Input((784,)), layers.Dense(10, activation="relu"), layers.Dense(10, activation="relu"),
            layers.Dense(10, activation="softmax")]


def _cnn_simple_layers(layers):
    return [layers.Input((28, 28, 1)), layers.Conv2D(10, (3, 3), activation="linear"),
            layers.AveragePooling2D((6, 6)), layers.ReLU(), layers.Flatten(), layers.Dense(10, activation="softmax")]


ARCHITECTURES = {"twoclass": _twoclass_layers, "multiclass": _multiclass_layers, "cnn_simple": _cnn_simple_layers}


def train_keras_model(kind: str, x_train, y_train, validation, epochs: int, seed: int, out: Path,
                      batch_size: int = 128) -> dict:
    """Build, fit and save (atomically) one of `ARCHITECTURES`; return the Keras and TensorFlow versions."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(ARCHITECTURES[kind](keras.layers), name=kind)
    binary = kind == "twoclass"
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    shape = (-1,) + tuple(model.input_shape[1:])
    val = None if validation is None else (validation[0].reshape(shape), validation[1])
    model.fit(x_train.reshape(shape), y_train, epochs=epochs, batch_size=batch_size, validation_data=val,
              verbose=2 if os.environ.get("CI") else 1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
    import tensorflow
    return {"keras_version": keras.__version__, "tensorflow_version": tensorflow.__version__}
