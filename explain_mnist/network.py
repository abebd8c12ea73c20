"""The framework-free network: the only model the core knows.

A `Network` is an alternating list ``Affine, ReLU, Affine, ReLU, ..., Affine``:
every hidden layer is one affine map ``z = W x + b`` followed by a ReLU, and the
last affine map gives the logits. Consecutive affine operations of the source
model (a linear convolution, a pooling, a flatten, a folded batch norm) are
already composed into one map, so ``len(net.hidden)`` is the number of ReLU
layers.

Weights are stored as ``W`` with shape ``(n_out, n_in)`` (dense numpy, or
scipy.sparse CSR where most entries are zero) and ``b`` with shape ``(n_out,)``.
Inputs are flattened in the source framework's order (Keras: row-major
``(28, 28, 1)``), as float64 rows of a batch ``X`` with shape ``(B, n_in)``.

Decision rules (`Network.decision`):

- ``"argmax"``: one logit per class; the class is ``argmax(logits)``.
- ``"sigmoid"``: a single logit ``z``; the class is 1 iff ``z > 0``, else 0.

Robustness specifications are phrased through `Network.spec_matrix`: for a class
``c`` it returns ``C`` with ``C @ logits > 0`` (every row) exactly when the input
keeps class ``c``, ties counting as a change. For argmax the rows are
``e_c - e_j`` for every ``j != c``; for sigmoid, ``[+1]`` for class 1 and ``[-1]``
for class 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

DECISION_RULES = ("argmax", "sigmoid")


@dataclass
class Affine:
    """An affine map ``x -> W x + b`` with ``W`` of shape ``(n_out, n_in)``."""

    W: np.ndarray | sp.csr_matrix
    b: np.ndarray

    def __post_init__(self):
        if sp.issparse(self.W):
            self.W = sp.csr_matrix(self.W, dtype=np.float64)
        else:
            self.W = np.asarray(self.W, dtype=np.float64)
        self.b = np.asarray(self.b, dtype=np.float64).reshape(-1)
        if self.W.shape[0] != self.b.shape[0]:
            raise ValueError(f"affine map has {self.W.shape[0]} rows but {self.b.shape[0]} biases")
        values = self.W.data if sp.issparse(self.W) else self.W
        if not (np.all(np.isfinite(values)) and np.all(np.isfinite(self.b))):
            raise ValueError("the network has a weight or bias that is NaN or infinite")

    @property
    def n_in(self) -> int:
        return self.W.shape[1]

    @property
    def n_out(self) -> int:
        return self.W.shape[0]

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Return ``X @ W.T + b`` for a batch ``X`` of shape ``(B, n_in)``."""
        if sp.issparse(self.W):
            return np.asarray((self.W @ X.T).T) + self.b
        return X @ self.W.T + self.b

    def then(self, other: "Affine") -> "Affine":
        """Return the composition ``other(self(x))`` as one affine map."""
        W = other.W @ self.W
        if sp.issparse(W):
            W = sp.csr_matrix(W)
            if W.nnz > 0.25 * W.shape[0] * W.shape[1]:
                W = W.toarray()
        return Affine(np.asarray(W) if not sp.issparse(W) else W, other.W @ self.b + other.b)

    def dense_W(self) -> np.ndarray:
        """Return ``W`` as a dense array."""
        return self.W.toarray() if sp.issparse(self.W) else self.W


@dataclass
class ReLU:
    """The elementwise ``max(0, x)``."""


@dataclass
class Network:
    """An affine/ReLU network with a decision rule; see the module docstring."""

    layers: list
    decision: str = "argmax"
    input_shape: tuple = (784,)
    name: str = "network"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.decision not in DECISION_RULES:
            raise ValueError(f"unknown decision rule {self.decision!r}; supported: {', '.join(DECISION_RULES)}")
        self.layers = normalise_layers(self.layers)
        self._affines = tuple(layer for layer in self.layers if isinstance(layer, Affine))
        if self.decision == "sigmoid" and self.n_outputs != 1:
            raise ValueError("the sigmoid decision rule needs exactly one output logit")
        if self.decision == "argmax" and self.n_outputs < 2:
            raise ValueError("the argmax decision rule needs two or more output logits (one logit: use sigmoid)")

    @property
    def affines(self) -> list[Affine]:
        """Return the affine maps, in order (a ReLU sits between each pair)."""
        return list(self._affines)

    @property
    def hidden(self) -> list[Affine]:
        """Return the affine maps that feed a ReLU (all but the last)."""
        return self.affines[:-1]

    @property
    def n_inputs(self) -> int:
        return self._affines[0].n_in

    @property
    def n_outputs(self) -> int:
        return self._affines[-1].n_out

    @property
    def n_classes(self) -> int:
        return 2 if self.decision == "sigmoid" else self.n_outputs

    def layer_sizes(self) -> list[int]:
        """Return ``[n_inputs, hidden sizes..., n_outputs]``."""
        return [self.n_inputs] + [a.n_out for a in self.affines]

    def forward(self, X: np.ndarray, return_preactivations: bool = False):
        """Return the logits of a batch (``(B, n_outputs)``; a single input gives ``(n_outputs,)``).

        With ``return_preactivations`` also return the list of pre-activation
        arrays of every hidden layer.
        """
        X = np.asarray(X, dtype=np.float64)
        single = X.ndim == 1
        H = X.reshape(1, -1) if single else X.reshape(X.shape[0], -1)
        if H.shape[1] != self.n_inputs:
            raise ValueError(f"input has {H.shape[1]} values, the network expects {self.n_inputs}")
        pre = []
        for affine in self._affines[:-1]:
            Z = affine.apply(H)
            pre.append(Z)
            H = np.maximum(Z, 0.0)
        out = self._affines[-1].apply(H)
        if single:
            out = out[0]
            pre = [z[0] for z in pre]
        return (out, pre) if return_preactivations else out

    def logits_from_first(self, Z: np.ndarray) -> np.ndarray:
        """Return the logits of inputs whose first affine map gives ``Z`` (``(B, n_1)``): the rest of `forward`."""
        H = Z
        for affine in self._affines[1:]:
            H = affine.apply(np.maximum(H, 0.0))
        return H

    def classify_logits(self, logits: np.ndarray) -> np.ndarray:
        """Return the class of each row of logits under the decision rule."""
        logits = np.asarray(logits)
        if self.decision == "sigmoid":
            return (logits[..., 0] > 0).astype(np.int64)
        return np.argmax(logits, axis=-1).astype(np.int64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Return the predicted class of each input (an int for a single input)."""
        out = self.classify_logits(self.forward(X))
        return int(out) if np.ndim(out) == 0 else out

    def spec_matrix(self, c: int) -> np.ndarray:
        """Return ``C`` such that the input keeps class ``c`` iff every entry of ``C @ logits`` is > 0."""
        if not 0 <= c < self.n_classes:
            raise ValueError(f"class {c} out of range 0..{self.n_classes - 1}")
        if self.decision == "sigmoid":
            return np.array([[1.0 if c == 1 else -1.0]])
        others = [j for j in range(self.n_outputs) if j != c]
        C = -np.eye(self.n_outputs)[others]
        C[:, c] = 1.0
        return C

    def spec_classes(self, c: int) -> list[int]:
        """Return the competing class named by each row of `spec_matrix(c)`."""
        if self.decision == "sigmoid":
            return [1 - c]
        return [j for j in range(self.n_outputs) if j != c]

    def power_of_two_scaled(self) -> tuple["Network", float]:
        """Return ``(net, s)``: the same classifier with each layer's largest |weight| in [1, 2), logits times ``s``.

        Layer k is multiplied by a power of two ``t_k`` (its bias by ``t_1 ... t_k``, the scale its
        input already carries), so every value is exact and the logits are those of this network
        times ``s = t_1 ... t_L > 0``: the same classes, margins and counterexamples. Solvers and
        bounds then see weights of one size whatever the scale the network was given in.
        """
        layers, scale = [], 1.0
        for layer in self.layers:
            if isinstance(layer, Affine):
                values = layer.W.data if sp.issparse(layer.W) else layer.W
                largest = float(np.abs(values).max(initial=0.0))
                t = 2.0 ** -np.floor(np.log2(largest)) if largest > 0 else 1.0
                scale *= t
                layer = Affine(layer.W * t, layer.b * scale)
            layers.append(layer)
        return Network(layers, self.decision, self.input_shape, self.name, dict(self.meta)), scale

    def margins(self, X: np.ndarray, c: int) -> np.ndarray:
        """Return ``C @ logits`` for class ``c``: positive everywhere iff ``X`` keeps class ``c``."""
        return self.forward(X) @ self.spec_matrix(c).T


def times_W(V: np.ndarray, W) -> np.ndarray:
    """Return ``V @ W`` for ``V`` of shape ``(..., n_out)`` and a dense or sparse ``W`` ``(n_out, n_in)``."""
    if sp.issparse(W):
        flat = V.reshape(-1, V.shape[-1])
        return np.asarray(W.T @ flat.T).T.reshape(V.shape[:-1] + (W.shape[1],))
    return V @ W


def normalise_layers(layers: list) -> list:
    """Return ``layers`` as an alternating ``Affine, ReLU, ..., Affine`` list.

    Consecutive affine maps are composed, repeated ReLUs collapse into one, and a
    network that ends in a ReLU or starts with one gets an identity map added.
    """
    out: list = []
    for layer in layers:
        if isinstance(layer, Affine):
            if out and isinstance(out[-1], Affine):
                out[-1] = out[-1].then(layer)
            else:
                out.append(layer)
        elif isinstance(layer, ReLU):
            if not out:
                raise ValueError("a network cannot start with a ReLU: the input is not an activation")
            if not isinstance(out[-1], ReLU):
                out.append(layer)
        else:
            raise TypeError(f"unknown layer {type(layer).__name__}; the network holds Affine and ReLU layers")
    if not out:
        raise ValueError("a network needs at least one affine layer")
    if isinstance(out[-1], ReLU):
        n = out[-2].n_out
        out.append(Affine(np.eye(n), np.zeros(n)))
    return out
