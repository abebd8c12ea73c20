"""The question "can flipping input bits change the label?", compiled to cardinality constraints (no solver here).

Formulation (one for every encoding). The input is a reference image's bits ``x0`` and flip variables ``f_p``
(``x_p = x0_p xor f_p``), at most ``budget`` of them true (None: no budget). Every neuron is propagated with the
range its match count can take (`BinarizedNet`):

- first layer, neuron i: flipping p moves its count by +1 if ``x0_p`` does not match ``W[i, p]`` (p in Mis_i) and
  by -1 if it does (p in Mat_i), so ``count = c0 + A - B`` with ``A = sum_{Mis_i} f``, ``B = sum_{Mat_i} f``; with
  a budget k, ``-min(k, |Mat_i|) <= A - B <= min(k, |Mis_i|)``;
- a later layer: the inputs whose bits cannot change are folded into a constant, the count ranges over
  ``[const, const + #unstable inputs]``;
- a neuron whose range lies on one side of its threshold is stable (a constant bit). An unstable neuron keeps a
  variable ``h`` with ``h <=> count >= T``, the count taken over the literals of the previous layer's unstable
  variables (``v`` where the weight matches a 1, ``not v`` where it matches a 0; the flips ``f`` for the first
  layer, where a flip of p in Mis_i is the literal ``f_p`` and one in Mat_i the literal ``not f_p``, the constant
  |Mat_i| folded into T).
- output, untargeted (``mode = "any"``): some class j != c beats the label c of ``x0``: ``score_j - score_c >= d_j``
  (``d_j = 1`` if j > c, 0 if j < c: argmax takes the first maximum). Over the last layer's unstable bits whose
  weights differ for j and c (n_d of them) that is ``#{literals matching V_j} >= T_j = ceil((d_j - const + n_d)/2)``.
  Targeted (``mode = "all"``): the target t beats every other class, one such constraint per j != t, all required.

A `Query` holds these constraints as sign matrices over the previous layer's unstable variables (``S[i, j] = +1``:
literal v_j, ``-1``: not v_j) and thresholds, with the range ``[lo, hi]`` of every count; encoders (`milp`, `cnf`)
translate it. `Query.decide` gives the answer when no variable is left (every neuron stable).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from explain_mnist.binarized.network import BinarizedNet, matches
from explain_mnist.errors import UserError


@dataclass
class Layer:
    """The unstable neurons of one layer: ``h_i <=> #(literals of S[i] over the previous variables) >= T[i]``."""

    unstable: np.ndarray        # neuron indices
    S: np.ndarray               # (len(unstable), previous variables) in {-1, +1}
    T: np.ndarray               # thresholds on the literal count
    lo: np.ndarray              # the literal count's range (budget included)
    hi: np.ndarray
    bits: np.ndarray            # every neuron's bit at the reference (stable neurons keep it)
    # first layer only: the count as 2A + G >= T2 with G = budget - flips (see cnf)
    mis: list = field(default_factory=list)      # per unstable neuron: the flip variables (indices) in Mis_i
    r: np.ndarray | None = None                  # A - B >= r


@dataclass
class Query:
    """Cardinality constraints over the flips ``f`` of ``free`` pixels (see the module docstring)."""

    x0: np.ndarray              # reference bits
    label: int                  # the label c of x0
    target: int | None
    budget: int | None
    free: np.ndarray            # pixels with a flip variable
    layers: list
    mode: str                   # "any" (some row must hold) or "all" (every row must hold)
    classes: np.ndarray         # the class of each output row
    S_out: np.ndarray           # (rows, last layer's unstable) in {-1, +1}
    T_out: np.ndarray
    trivially: str | None = None  # "sat" / "unsat" when decided without a solver

    @property
    def n_flips(self) -> int:
        return int(len(self.free))

    def counterexample(self, flips: np.ndarray) -> np.ndarray:
        """Return the input bits with the free pixels ``flips`` (bool per free pixel) flipped."""
        x = self.x0.copy()
        x[self.free[np.asarray(flips, dtype=bool)]] ^= 1
        return x


def compile_query(net: BinarizedNet, x0: np.ndarray, budget: int | None = None, target: int | None = None,
                  label: int | None = None) -> Query:
    """Return the `Query` for input bits ``x0`` (n0 values in {0, 1}), at most ``budget`` flips, a target or not."""
    x0 = np.asarray(x0).astype(np.uint8).reshape(-1)
    if x0.shape[0] != net.n_inputs:
        raise UserError(f"the image has {x0.shape[0]} bits; the network takes {net.n_inputs}")
    if budget is not None and budget < 0:
        raise UserError(f"the number of flips must be at least 0, got {budget}")
    c = int(net.predict_bits(x0[None])[0]) if label is None else int(label)
    if target is not None and not 0 <= target < net.n_classes:
        raise UserError(f"--target {target} is not a class of the network (0..{net.n_classes - 1})")
    n0 = net.n_inputs
    k = n0 if budget is None else min(int(budget), n0)
    layers = []
    prev_bits = x0.astype(np.int32)
    prev_unstable = np.arange(n0) if k > 0 else np.zeros(0, dtype=np.int64)
    for depth, (W, K) in enumerate(zip(net.weights, net.thresholds)):
        W = np.asarray(W, dtype=np.int32)
        m0 = matches(prev_bits[None], W)[0]
        want = (W > 0).astype(np.int32)                        # the input bit each weight matches
        if depth == 0:
            mis_mask = (want != prev_bits[None, :])             # (units, n0): flipping p adds 1 to the count
            n_mis = mis_mask.sum(axis=1) if k > 0 else np.zeros(len(K), dtype=np.int64)
            n_mat = n0 - n_mis if k > 0 else np.zeros(len(K), dtype=np.int64)
            d_lo, d_hi = -np.minimum(k, n_mat), np.minimum(k, n_mis)
            lo, hi = m0 + d_lo, m0 + d_hi
        else:
            stable_mask = np.ones(len(prev_bits), dtype=bool)
            stable_mask[prev_unstable] = False
            const = ((prev_bits[None, stable_mask] == want[:, stable_mask]).sum(axis=1)).astype(np.int64)
            lo, hi = const, const + len(prev_unstable)
        bits = (m0 >= K).astype(np.int32)
        unstable = np.flatnonzero((lo < K) & (hi >= K))
        if depth == 0:
            S = np.where(mis_mask[unstable], 1, -1).astype(np.int8) if k > 0 else np.zeros((0, 0), np.int8)
            # count over literals: f (Mis) and not f (Mat): A + |Mat| - B; count >= T  <=>  A - B >= T - |Mat|
            T = K[unstable] - m0[unstable] + n_mat[unstable]
            lit_lo, lit_hi = lo[unstable] - m0[unstable] + n_mat[unstable], hi[unstable] - m0[unstable] + n_mat[unstable]
            mis = [np.flatnonzero(mis_mask[i]) for i in unstable]
            r = K[unstable] - m0[unstable]
        else:
            sub = W[np.ix_(unstable, prev_unstable)]
            S = np.where(sub > 0, 1, -1).astype(np.int8)
            const_u = lo[unstable]
            T = K[unstable] - const_u
            lit_lo, lit_hi = np.zeros(len(unstable), dtype=np.int64), np.full(len(unstable), len(prev_unstable))
            mis, r = [], None
        layers.append(Layer(unstable, S, T.astype(np.int64), lit_lo.astype(np.int64), lit_hi.astype(np.int64),
                            bits, mis, r))
        prev_bits, prev_unstable = bits, unstable
    free = np.arange(n0) if (k > 0 and layers and len(layers[0].unstable)) else np.zeros(0, dtype=np.int64)
    if len(free) == 0:                                          # nothing can change: no flip variables
        for layer in layers:
            layer.unstable = np.zeros(0, dtype=np.int64)
            layer.S = np.zeros((0, 0), dtype=np.int8)
            layer.T = layer.lo = layer.hi = np.zeros(0, dtype=np.int64)
            layer.mis, layer.r = [], np.zeros(0, dtype=np.int64)
        prev_unstable = np.zeros(0, dtype=np.int64)
    if not net.weights:
        raise UserError("the network has no hidden layer")
    V = np.asarray(net.V, dtype=np.int32)
    stable_mask = np.ones(len(prev_bits), dtype=bool)
    stable_mask[prev_unstable] = False
    hit = (prev_bits[None, :] == (V > 0))                       # (classes, n_L) at the reference
    if target is None:
        mode, others = "any", [j for j in range(net.n_classes) if j != c]
        pairs = [(j, c) for j in others]
    else:
        mode, others = "all", [j for j in range(net.n_classes) if j != target]
        pairs = [(target, j) for j in others]
    rows_S, rows_T, rows_class = [], [], []
    trivially = None
    for a, b in pairs:                       # a must beat b: score_a - score_b >= d (d = 1 if a > b else 0)
        d = 1 if a > b else 0
        const = int(hit[a, stable_mask].sum() - hit[b, stable_mask].sum())
        differ = prev_unstable[V[a, prev_unstable] != V[b, prev_unstable]]
        n_d = len(differ)
        T = -((const - d - n_d) // 2)        # ceil((d - const + n_d) / 2)
        S = np.zeros(len(prev_unstable), dtype=np.int8)
        pos = np.searchsorted(prev_unstable, differ)
        S[pos] = np.where(V[a, differ] > 0, 1, -1)
        if T <= 0:
            if mode == "any":
                trivially = "sat"
            continue                          # always holds
        if T > n_d:
            if mode == "all":
                trivially = "unsat"
            continue                          # never holds
        rows_S.append(S)
        rows_T.append(T)
        rows_class.append(a if mode == "any" else b)
    if trivially is None and mode == "any" and not rows_T:
        trivially = "unsat"
    if trivially is None and mode == "all" and not rows_T:
        trivially = "sat"
    S_out = np.array(rows_S, dtype=np.int8).reshape(len(rows_S), len(prev_unstable))
    return Query(x0, c, target, budget, free, layers, mode, np.array(rows_class, dtype=np.int64), S_out,
                 np.array(rows_T, dtype=np.int64), trivially)
