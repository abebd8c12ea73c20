"""The exact integer form of a binarized network, its forward pass, and its .npz file.

Semantics. The input is the bit vector ``x = [pixel > 0.5]`` in {0, 1}^n0. Hidden layer k has weights
``W_k`` in {-1, +1}^(n_k x n_{k-1}) and integer thresholds ``K_k``; its input is a bit vector ``b``
(the image bits for k = 0, the previous layer's outputs after that) and neuron i outputs the bit

    b'_i = [ m_i(b) >= K_k[i] ],   m_i(b) = #{ j : b_j = [W_k[i, j] = +1] }   (the inputs matching its weights),

a cardinality constraint over the literals ``b_j`` (weight +1) and ``not b_j`` (weight -1). A bit 1 stands for
the Keras activation +1, a bit 0 for -1. The output layer ``V`` in {-1, +1}^(classes x n_L) scores class j by
``m_j(b)`` (Keras' logit is ``2 m_j - n_L`` times a positive scale), and the label is the first class with the
largest score, as ``argmax`` picks. A label j beats c at a tie exactly when ``j < c``.

File (.npz, no pickles): ``W0, K0, W1, K1, ..., V`` (int8 weights, int64 thresholds), ``input_threshold`` (0.5),
and optional ``keras_file`` (the Keras model it was folded from, relative to the .npz's folder).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explain_mnist.errors import UserError

INPUT_THRESHOLD = 0.5


@dataclass
class BinarizedNet:
    """Hidden layers ``weights[k]`` (+-1, int8) with ``thresholds[k]`` (int64), output weights ``V`` (+-1)."""

    weights: list
    thresholds: list
    V: np.ndarray
    meta: dict = field(default_factory=dict)
    keras_file: str | None = None

    @property
    def n_inputs(self) -> int:
        return int(self.weights[0].shape[1]) if self.weights else int(self.V.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.V.shape[0])

    def layer_sizes(self) -> list[int]:
        """Return ``[inputs, hidden..., classes]``."""
        return [self.n_inputs] + [int(W.shape[0]) for W in self.weights] + [self.n_classes]

    def activations(self, bits: np.ndarray) -> list[np.ndarray]:
        """Return the bits of every hidden layer (each ``(batch, n_k)`` bool) for input bits ``(batch, n0)``."""
        b = np.atleast_2d(np.asarray(bits)).astype(np.int32)
        out = []
        for W, K in zip(self.weights, self.thresholds):
            b = (matches(b, W) >= K).astype(np.int32)
            out.append(b.astype(bool))
        return out

    def scores(self, bits: np.ndarray) -> np.ndarray:
        """Return the class scores ``m_j`` (int, ``(batch, classes)``) of input bits."""
        b = np.atleast_2d(np.asarray(bits)).astype(np.int32)
        hidden = self.activations(b)
        return matches(hidden[-1].astype(np.int32) if hidden else b, self.V)

    def predict_bits(self, bits: np.ndarray) -> np.ndarray:
        """Return the labels (first index of the largest score) of input bits ``(batch, n0)``."""
        return np.argmax(self.scores(bits), axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return the labels of images ``x`` in [0, 1] (binarized first)."""
        return self.predict_bits(binarize(x))


def matches(b: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Return ``m[s, i] = #{j : b[s, j] == [W[i, j] = +1]}`` for bits ``b`` (batch, n) and +-1 weights ``W``."""
    b = np.asarray(b, dtype=np.float64)      # BLAS; every sum is an integer below 2^53, so exact
    pos = (np.asarray(W) > 0).astype(np.float64)
    return np.rint(b @ pos.T + (1 - b) @ (1 - pos).T).astype(np.int64)


def binarize(x: np.ndarray) -> np.ndarray:
    """Return the input bits ``x > 0.5`` (uint8) of images in [0, 1]."""
    return (np.asarray(x) > INPUT_THRESHOLD).astype(np.uint8)


def beats(j: int, c: int, score_j, score_c) -> bool:
    """Return whether label j wins over c with these scores (ties go to the smaller index)."""
    return score_j > score_c or (score_j == score_c and j < c)


def save(net: BinarizedNet, path) -> None:
    """Write the .npz file of ``net`` (atomically)."""
    from explain_mnist.results import write_atomic
    arrays = {"V": net.V.astype(np.int8), "input_threshold": np.float64(INPUT_THRESHOLD)}
    for k, (W, K) in enumerate(zip(net.weights, net.thresholds)):
        arrays[f"W{k}"] = W.astype(np.int8)
        arrays[f"K{k}"] = K.astype(np.int64)
    if net.keras_file:
        arrays["keras_file"] = np.array(net.keras_file)
    write_atomic(path, lambda f: np.savez_compressed(f, **arrays))


def load(path) -> BinarizedNet:
    """Return the network stored in a .npz file, checked (UserError naming the problem otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"binarized network {path} not found; train it with binary.py train (or pass --model)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"binarized network {path} cannot be read as .npz ({type(exc).__name__}); "
                        f"replace it or retrain with binary.py train") from None
    if "V" not in arrays:
        raise UserError(f"{path} has no output weights V; not a binarized network of binary.py")
    weights, thresholds = [], []
    k = 0
    while f"W{k}" in arrays:
        if f"K{k}" not in arrays:
            raise UserError(f"{path}: layer {k} has weights W{k} but no thresholds K{k}")
        weights.append(arrays[f"W{k}"])
        thresholds.append(arrays[f"K{k}"])
        k += 1
    net = BinarizedNet(weights, thresholds, arrays["V"],
                       keras_file=str(arrays["keras_file"]) if "keras_file" in arrays else None)
    check(net, str(path))
    net.weights = [np.asarray(W, dtype=np.int8) for W in net.weights]
    net.thresholds = [np.asarray(K, dtype=np.int64) for K in net.thresholds]
    net.V = np.asarray(net.V, dtype=np.int8)
    return net


def check(net: BinarizedNet, where: str = "network") -> None:
    """Raise UserError unless the layers chain, weights are +-1 and thresholds integers (one per neuron)."""
    width = None
    for name, W in [(f"W{k}", W) for k, W in enumerate(net.weights)] + [("V", net.V)]:
        W = np.asarray(W)
        if W.ndim != 2 or W.size == 0:
            raise UserError(f"{where}: {name} has shape {W.shape}; expected a non-empty (outputs, inputs) matrix")
        if width is not None and W.shape[1] != width:
            raise UserError(f"{where}: {name} takes {W.shape[1]} inputs but the layer before gives {width}; "
                            f"the shapes do not chain")
        if not np.issubdtype(W.dtype, np.number) or not np.all(np.isin(W, (-1, 1))):
            raise UserError(f"{where}: {name} has weights other than -1 and +1")
        width = W.shape[0]
    for k, (W, K) in enumerate(zip(net.weights, net.thresholds)):
        K = np.asarray(K)
        if K.shape != (W.shape[0],):
            raise UserError(f"{where}: K{k} has shape {K.shape}; expected ({W.shape[0]},), one per neuron of W{k}")
        if not (np.issubdtype(K.dtype, np.integer) or (np.issubdtype(K.dtype, np.floating) and
                                                       np.all(np.isfinite(K)) and np.all(K == np.round(K)))):
            raise UserError(f"{where}: K{k} holds non-integer thresholds")


def random_net(sizes, rng, spread: float = 0.3) -> BinarizedNet:
    """Return a random binarized network with layer ``sizes`` [inputs, hidden..., classes] (for tests)."""
    weights, thresholds = [], []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        weights.append(rng.choice(np.array([-1, 1], dtype=np.int8), size=(n_out, n_in)))
        centre = n_in / 2
        thresholds.append(np.round(centre + rng.normal(0, spread * n_in / 2 + 0.5, n_out)).astype(np.int64))
    V = rng.choice(np.array([-1, 1], dtype=np.int8), size=(sizes[-1], sizes[-2]))
    return BinarizedNet(weights, thresholds, V)
