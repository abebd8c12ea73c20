"""The mixed-integer encoding of a ReLU network over an input box, in matrix form.

Formulation. For a `Network` with hidden affine maps ``z_k = W_k a_{k-1} + b_k``,
``a_k = max(0, z_k)``, logits ``W_L a_{L-1} + b_L``, an input box ``[lo, hi]``
and valid pre-activation bounds ``l_k <= z_k <= u_k`` over that box:

- Input columns ``x_p in [lo_p, hi_p]`` only for the pixels p that matter: a
  pixel whose first-layer weights are all zero, or that is fixed
  (``lo_p == hi_p``), has no column; its value (``lo_p``) is folded into the
  first bias. `MIPModel.input_pixels` maps the input columns back to pixels.
- Every layer's activations are kept as a linear expression ``a_k = E_k v + e_k``
  of the model's columns v (``E_k`` sparse), so that for each hidden neuron i
  with bounds ``l = l_k[i]``, ``u = u_k[i]`` (its OWN bounds, never a global M):

  - stable inactive (``u <= 0``): ``a = 0``; no column, no row.
  - stable active (``l >= 0``): ``a = z``, substituted into the next layer
    (no column, no row, no binary).
  - unstable (``l < 0 < u``): a column ``y in [0, u]``, a binary ``d`` and rows
    ``y >= z``, ``y <= z - l (1 - d)``, ``y <= u d`` (``y >= 0`` is the
    column's lower bound); then ``a = y``.

  Here ``z = W_k (E_{k-1} v + e_{k-1}) + b_k`` is itself a row of a sparse
  matrix times the columns, so every layer is built with a few sparse matrix
  products; the number of binaries equals the number of unstable neurons.
- The logits are the expression ``logit_matrix @ v + logit_offset`` (not columns).

The model is solver-neutral (`MIPModel`): column bounds and integrality, a CSR
matrix with row bounds ``row_lower <= A v <= row_upper``, and the objective
``sense  c @ v + sum(q * v**2) + c0``. Callers append variables and rows (for
distances, selectors, ...) with `MIPModel.add_columns` and `MIPModel.add_rows`.
Bounds computed for a box stay valid for every box inside it, which is what
lets a solver re-solve after pixel bounds change instead of rebuilding.

Distances and targets, for minimal adversarial examples (`add_distance`, `add_target`).
The network is encoded in displacements from an image ``x0`` (`shifted_network`: ``x0``
folded into the first bias), so the input columns are ``delta_p = x_p - x0_p`` with bounds
``dl_p <= delta_p <= dh_p`` (``dl_p <= 0 <= dh_p``), and the objective is the distance itself
(no constant: solvers measure their gap on it):

- ``l0``: a binary ``s_p`` per input column, rows ``delta_p - dh_p s_p <= 0`` (where ``dh_p > 0``)
  and ``delta_p - dl_p s_p >= 0`` (where ``dl_p < 0``); minimise ``sum s``, which bounds the
  number of changed pixels from above (and equals it at an optimum).
- ``l1``: a column that can move one way only is its own absolute value (objective ``+delta_p``
  where ``dl_p = 0``, ``-delta_p`` where ``dh_p = 0``); any other gets ``t_p >= 0`` with rows
  ``t_p - delta_p >= 0``, ``t_p + delta_p >= 0`` and objective ``t_p``.
- ``l2``: minimise ``sum delta_p^2`` (a diagonal quadratic objective; no new column or row).
- ``linf``: a column ``r >= 0`` with rows ``r - delta_p >= 0`` (where ``dh_p > 0``) and
  ``r + delta_p >= 0`` (where ``dl_p < 0``); minimise ``r``.

With ``limit`` (linear norms) the distance is also bounded: ``sum s <= limit`` (l0), the sum of
the l1 terms ``<= limit`` (l1), ``r <= limit`` (linf); with ``lower``, ``r >= lower`` (linf), and a pixel side
that cannot move farther than ``lower`` gets no row.
The target: every row of ``C (L v + o) >= margin``, where ``L v + o`` are the logits and ``C``
is `Network.spec_matrix` of the target class (argmax: ``logit_t - logit_j``; sigmoid: ``+-logit``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from explain_mnist.bounds import Bounds, interval_bounds
from explain_mnist.network import Affine, Network

NORMS = ("l0", "l1", "l2", "linf")


@dataclass
class LayerEncoding:
    """Where one hidden layer went: its bounds, phases and the columns of its unstable neurons."""

    lower: np.ndarray
    upper: np.ndarray
    unstable: np.ndarray       # indices of unstable neurons in the layer
    y_cols: np.ndarray         # their post-activation columns
    d_cols: np.ndarray         # their binary columns
    n_active: int
    n_inactive: int
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))   # active neurons with a column
    kept_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))   # (``active_columns``)


@dataclass
class MIPModel:
    """A solver-neutral MILP/MIQP: ``sense  c v + sum(q v^2) + c0`` s.t. ``row_lower <= A v <= row_upper``, ``lb <= v <= ub``."""

    lb: np.ndarray
    ub: np.ndarray
    integrality: np.ndarray                  # bool per column: True = integer
    A: sp.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    c: np.ndarray
    c0: float = 0.0
    q: np.ndarray | None = None
    sense: str = "min"
    names: list | None = None
    n_pixels: int = 0                        # size of the network input
    input_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    input_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    input_fill: np.ndarray = field(default_factory=lambda: np.zeros(0))   # value of every pixel without a column
    box_lo: np.ndarray | None = None         # the box the encoding's bounds hold on
    box_hi: np.ndarray | None = None
    logit_matrix: sp.csr_matrix | None = None
    logit_offset: np.ndarray | None = None
    layers: list = field(default_factory=list)

    @property
    def n_cols(self) -> int:
        return self.lb.shape[0]

    @property
    def n_rows(self) -> int:
        return self.A.shape[0]

    @property
    def n_binaries(self) -> int:
        return int(np.count_nonzero(self.integrality))

    @property
    def is_quadratic(self) -> bool:
        return self.q is not None and bool(np.any(self.q != 0))

    def copy(self) -> "MIPModel":
        """Return a deep copy (solvers and callers may then change it freely)."""
        return copy.deepcopy(self)

    def add_columns(self, lb, ub, integer=False, c=0.0, q=0.0, names=None) -> np.ndarray:
        """Append columns (broadcast arguments; ``integer`` True = integer) and return their indices."""
        lb = np.atleast_1d(np.asarray(lb, dtype=np.float64))
        ub = np.atleast_1d(np.asarray(ub, dtype=np.float64))
        lb, ub = np.broadcast_arrays(lb, ub)
        k = lb.shape[0]
        start = self.n_cols
        self.lb = np.concatenate([self.lb, lb])
        self.ub = np.concatenate([self.ub, ub])
        self.integrality = np.concatenate([self.integrality, np.broadcast_to(np.asarray(integer, dtype=bool), (k,))])
        self.c = np.concatenate([self.c, np.broadcast_to(np.asarray(c, dtype=np.float64), (k,))])
        q = np.broadcast_to(np.asarray(q, dtype=np.float64), (k,))
        if self.q is not None or np.any(q != 0):
            self.q = np.concatenate([np.zeros(start) if self.q is None else self.q, q])
        if self.names is not None or names is not None:
            old = self.names if self.names is not None else [f"v{i}" for i in range(start)]
            self.names = list(old) + (list(names) if names is not None else [f"v{i}" for i in range(start, start + k)])
        self.A = sp.csr_matrix(self.A, shape=(self.n_rows, start + k))
        if self.logit_matrix is not None:
            self.logit_matrix = sp.csr_matrix(self.logit_matrix, shape=(self.logit_matrix.shape[0], start + k))
        return np.arange(start, start + k)

    def add_rows(self, rows, lower, upper) -> np.ndarray:
        """Append rows ``lower <= rows @ v <= upper`` (``rows`` may have fewer columns: padded) and return their indices."""
        rows = sp.csr_matrix(rows, dtype=np.float64)
        if rows.shape[1] > self.n_cols:
            raise ValueError(f"rows have {rows.shape[1]} columns, the model {self.n_cols}")
        rows = sp.csr_matrix(rows, shape=(rows.shape[0], self.n_cols))
        k = rows.shape[0]
        start = self.n_rows
        self.A = sp.vstack([self.A, rows], format="csr")
        self.row_lower = np.concatenate([self.row_lower, np.broadcast_to(np.asarray(lower, dtype=np.float64), (k,))])
        self.row_upper = np.concatenate([self.row_upper, np.broadcast_to(np.asarray(upper, dtype=np.float64), (k,))])
        return np.arange(start, start + k)

    def input_point(self, v: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
        """Return the full network input (``n_pixels``) of a column vector, clipped to the box.

        Pixels without a column take ``fill`` (default: the value folded into the
        encoding, i.e. the fixed value or the box's lower end).
        """
        x = np.array(self.input_fill if fill is None else fill, dtype=np.float64)
        x[self.input_pixels] = np.asarray(v, dtype=np.float64)[self.input_cols]
        if self.box_lo is not None:
            x = np.clip(x, self.box_lo, self.box_hi)
        return x

    def logits(self, v: np.ndarray) -> np.ndarray:
        """Return the logits the encoding assigns to a column vector."""
        return self.logit_matrix @ np.asarray(v, dtype=np.float64) + self.logit_offset

    def objective_value(self, v: np.ndarray) -> float:
        """Return ``c v + sum(q v^2) + c0`` at a column vector."""
        v = np.asarray(v, dtype=np.float64)
        value = float(self.c @ v + self.c0)
        if self.q is not None:
            value += float(self.q @ (v * v))
        return value

    def violation(self, v: np.ndarray) -> float:
        """Return the largest violation of a column bound, a row or integrality at ``v`` (0 when feasible)."""
        v = np.asarray(v, dtype=np.float64)
        Av = self.A @ v
        parts = [np.maximum(self.lb - v, 0), np.maximum(v - self.ub, 0),
                 np.maximum(self.row_lower - Av, 0), np.maximum(Av - self.row_upper, 0),
                 np.abs(v - np.round(v))[self.integrality]]
        return float(max((p.max() if p.size else 0.0) for p in parts))

    def dual_lower_bound(self, y: np.ndarray) -> float:
        """Return a lower bound of the LP relaxation's minimum from any row multipliers ``y`` (weak duality).

        For every feasible v: ``c v = (c - A'y) v + y'(A v)``; each term is bounded by the
        row and column bounds, so the result holds whatever the solver's tolerances
        (``-inf`` where a needed bound is infinite). Only for a linear objective.
        """
        reduced, row_part = self.dual_certificate(y)
        with np.errstate(invalid="ignore"):  # inf * 0 in the branch np.where discards
            col_part = np.where(reduced > 0, reduced * self.lb, np.where(reduced < 0, reduced * self.ub, 0.0))
            total = float(row_part + col_part.sum()) + self.c0
        return -np.inf if np.isnan(total) else total

    def dual_certificate(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """Return ``(c - A'y, lower bound of y'(A v))`` for row multipliers ``y`` (signs fixed to the finite row bounds).

        Every feasible v has ``c v >= (c - A'y) v + row part``: callers bound the first term
        by the column bounds (`dual_lower_bound`) or keep part of it as a function.
        """
        y = np.asarray(y, dtype=np.float64)
        y = np.where(np.isneginf(self.row_lower), np.minimum(y, 0.0), y)
        y = np.where(np.isposinf(self.row_upper), np.maximum(y, 0.0), y)
        with np.errstate(invalid="ignore"):  # inf * 0 in the branch np.where discards
            row_part = float(np.where(y > 0, y * self.row_lower, np.where(y < 0, y * self.row_upper, 0.0)).sum())
        return self.c - self.A.T @ y, row_part

    def summary(self) -> str:
        """Return a one-line size summary."""
        return (f"{self.n_cols} columns ({len(self.input_pixels)} inputs, {self.n_binaries} binaries), "
                f"{self.n_rows} rows, {self.A.nnz} nonzeros")


def _csr(W) -> sp.csr_matrix:
    return sp.csr_matrix(W, dtype=np.float64)


def _layer_box(bounds: Bounds, k: int) -> tuple[np.ndarray, np.ndarray]:
    lower = np.asarray(bounds.lower[k], dtype=np.float64)
    upper = np.asarray(bounds.upper[k], dtype=np.float64)
    if lower.ndim == 2:
        if lower.shape[0] != 1:
            raise ValueError("encode_network needs the bounds of a single box (batch of 1)")
        lower, upper = lower[0], upper[0]
    return lower, upper


def encode_network(net: Network, lo, hi, bounds: Bounds | None = None, active_columns: bool = False) -> MIPModel:
    """Return the MIP encoding (see the module docstring) of ``net`` over the box ``[lo, hi]``.

    ``bounds`` are pre-activation bounds valid over the box (default: interval bounds);
    the objective is zero. With ``active_columns``, a stable active neuron of a hidden layer that
    feeds another one gets a column ``y in [l, u]`` with the row ``y = z`` (after all other rows)
    instead of ``z`` substituted into the next layer: on a dense first layer each substitution
    copies a row over every pixel into every row of the next layer (multiclass min L0: 18,652
    nonzeros with interval bounds, 32,739 with tighter bounds that settle one neuron active).
    """
    n_in = net.n_inputs
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64).reshape(-1), (n_in,)).copy()
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64).reshape(-1), (n_in,)).copy()
    if np.any(lo > hi):
        raise ValueError("the input box is empty: some lo > hi")
    if bounds is None:
        bounds = interval_bounds(net, lo, hi)

    W0 = _csr(net.affines[0].W)
    used = np.asarray(abs(W0).sum(axis=0)).ravel() > 0
    input_pixels = np.flatnonzero(used & (lo < hi))
    n_x = input_pixels.size
    fill = lo.copy()

    # activations as an expression E v + e of the columns; for the input, E selects the columns
    E = sp.csr_matrix((np.ones(n_x), (input_pixels, np.arange(n_x))), shape=(n_in, n_x))
    e = fill.copy()
    e[input_pixels] = 0.0

    lb_parts, ub_parts, int_parts = [lo[input_pixels]], [hi[input_pixels]], [np.zeros(n_x, dtype=bool)]
    row_blocks, row_lo_parts, row_hi_parts = [], [], []
    active_blocks, active_rhs = [], []
    n_cols = n_x
    layers = []
    for k, affine in enumerate(net.hidden):
        W = _csr(affine.W)
        P = W @ E                          # z = P v + p
        p = W @ e + affine.b
        l, u = _layer_box(bounds, k)
        inactive = u <= 0
        active = ~inactive & (l >= 0)
        unstable = np.flatnonzero(~inactive & ~active)
        n_u = unstable.size
        y_cols = n_cols + np.arange(n_u)
        d_cols = n_cols + n_u + np.arange(n_u)
        kept = np.flatnonzero(active) if active_columns and k < len(net.hidden) - 1 else np.zeros(0, dtype=int)
        a_cols = n_cols + 2 * n_u + np.arange(kept.size)
        n_new = n_cols + 2 * n_u + kept.size
        lu, uu, pu = l[unstable], u[unstable], p[unstable]

        P_u = sp.csr_matrix(P[unstable], shape=(n_u, n_new))
        I_y = sp.csr_matrix((np.ones(n_u), (np.arange(n_u), y_cols)), shape=(n_u, n_new))
        D_l = sp.csr_matrix((lu, (np.arange(n_u), d_cols)), shape=(n_u, n_new))
        D_u = sp.csr_matrix((uu, (np.arange(n_u), d_cols)), shape=(n_u, n_new))
        inf = np.full(n_u, np.inf)
        row_blocks += [I_y - P_u, I_y - P_u - D_l, I_y - D_u]       # y >= z; y <= z - l(1-d); y <= u d
        row_lo_parts += [pu, -inf, -inf]
        row_hi_parts += [inf, pu - lu, np.zeros(n_u)]
        lb_parts += [np.zeros(n_u), np.zeros(n_u)]
        ub_parts += [uu, np.ones(n_u)]
        int_parts += [np.zeros(n_u, dtype=bool), np.ones(n_u, dtype=bool)]
        if kept.size:                                                 # y = z for the active neurons kept
            I_a = sp.csr_matrix((np.ones(kept.size), (np.arange(kept.size), a_cols)), shape=(kept.size, n_new))
            active_blocks.append(I_a - sp.csr_matrix(P[kept], shape=(kept.size, n_new)))
            active_rhs.append(p[kept])
            lb_parts.append(l[kept])
            ub_parts.append(u[kept])
            int_parts.append(np.zeros(kept.size, dtype=bool))

        keep_active = sp.diags((active & ~np.isin(np.arange(W.shape[0]), kept)).astype(np.float64))
        select_y = sp.csr_matrix((np.ones(n_u + kept.size), (np.concatenate([unstable, kept]),
                                                             np.concatenate([y_cols, a_cols]))),
                                 shape=(W.shape[0], n_new))
        E = (keep_active @ sp.csr_matrix(P, shape=(W.shape[0], n_new)) + select_y).tocsr()
        e = np.where(active & ~np.isin(np.arange(W.shape[0]), kept), p, 0.0)
        layers.append(LayerEncoding(l.copy(), u.copy(), unstable, y_cols, d_cols,
                                    int(active.sum()), int(inactive.sum()), kept, a_cols))
        n_cols = n_new

    W_last = _csr(net.affines[-1].W)
    logit_matrix = (W_last @ E).tocsr()
    logit_offset = W_last @ e + net.affines[-1].b

    row_blocks += active_blocks
    row_lo_parts += active_rhs
    row_hi_parts += active_rhs
    A = sp.vstack([sp.csr_matrix(B, shape=(B.shape[0], n_cols)) for B in row_blocks], format="csr") \
        if row_blocks else sp.csr_matrix((0, n_cols))
    A.eliminate_zeros()
    logit_matrix.eliminate_zeros()
    return MIPModel(
        lb=np.concatenate(lb_parts), ub=np.concatenate(ub_parts), integrality=np.concatenate(int_parts),
        A=A, row_lower=np.concatenate(row_lo_parts) if row_lo_parts else np.zeros(0),
        row_upper=np.concatenate(row_hi_parts) if row_hi_parts else np.zeros(0),
        c=np.zeros(n_cols), n_pixels=n_in, input_pixels=input_pixels, input_cols=np.arange(n_x),
        input_fill=fill, box_lo=lo, box_hi=hi, logit_matrix=logit_matrix, logit_offset=logit_offset,
        layers=layers)


def shifted_network(net: Network, x0: np.ndarray) -> Network:
    """Return ``net`` as a function of the displacement ``delta = x - x0`` (``x0`` folded into the first bias)."""
    first = net.affines[0]
    shifted = Affine(first.W, first.b + np.asarray(first.W @ np.asarray(x0, dtype=np.float64)).ravel())
    return Network([shifted] + net.layers[1:], net.decision, net.input_shape, net.name, dict(net.meta))


def add_distance(model: MIPModel, norm: str, limit: float | None = None, lower: float | None = None) -> None:
    """Set the objective of a model whose input columns are displacements to their ``norm`` (module docstring)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; supported: {', '.join(NORMS)}")
    cols = model.input_cols
    dl, dh = model.lb[cols], model.ub[cols]
    n = cols.size
    model.c = np.zeros(model.n_cols)
    model.q = None
    if norm == "l2":
        model.q = np.zeros(model.n_cols)
        model.q[cols] = 1.0
        return
    if norm == "l0":
        s = model.add_columns(np.zeros(n), np.ones(n), integer=True, c=1.0)
        for side, sign in ((dh, 1.0), (dl, -1.0)):   # delta <= dh s;  -delta <= -dl s
            idx = np.flatnonzero(side != 0)
            if idx.size:
                rows = sp.csr_matrix((np.concatenate([np.full(idx.size, sign), -sign * side[idx]]),
                                      (np.tile(np.arange(idx.size), 2), np.concatenate([cols[idx], s[idx]]))),
                                     shape=(idx.size, model.n_cols))
                model.add_rows(rows, -np.inf, 0.0)
        terms = sp.csr_matrix((np.ones(n), (np.zeros(n, dtype=np.int64), s)), shape=(1, model.n_cols))
    elif norm == "l1":
        up, down = dl == 0, dh == 0
        both = np.flatnonzero(~up & ~down)
        t = model.add_columns(np.zeros(both.size), np.maximum(dh[both], -dl[both]), c=1.0)
        model.c[cols[up & ~down]] = 1.0
        model.c[cols[down & ~up]] = -1.0
        for sign in (1.0, -1.0):   # t - delta >= 0;  t + delta >= 0
            rows = sp.csr_matrix((np.concatenate([np.ones(both.size), np.full(both.size, -sign)]),
                                  (np.tile(np.arange(both.size), 2), np.concatenate([t, cols[both]]))),
                                 shape=(both.size, model.n_cols))
            model.add_rows(rows, 0.0, np.inf)
        terms = sp.csr_matrix(model.c[None, :])
    else:
        r = model.add_columns(0.0 if lower is None else lower, np.inf if limit is None else limit, c=1.0)
        floor = 0.0 if lower is None else lower      # |delta| <= floor <= r needs no row
        for side, sign in ((dh, 1.0), (dl, -1.0)):   # r - delta >= 0 where delta can be > 0; r + delta >= 0
            idx = np.flatnonzero(np.abs(side) > floor)
            where = np.concatenate([np.full(idx.size, r[0]), cols[idx]])
            rows = sp.csr_matrix((np.concatenate([np.ones(idx.size), np.full(idx.size, -sign)]),
                                  (np.tile(np.arange(idx.size), 2), where)), shape=(idx.size, model.n_cols))
            model.add_rows(rows, 0.0, np.inf)
        return
    if limit is not None:
        model.add_rows(terms, -np.inf, limit)


def add_target(model: MIPModel, C: np.ndarray, margin: float) -> np.ndarray:
    """Add the rows ``C (L v + o) >= margin`` (the target wins by ``margin``; module docstring); return them."""
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    rows = sp.csr_matrix(C) @ model.logit_matrix
    return model.add_rows(rows, margin - C @ model.logit_offset, np.inf)
