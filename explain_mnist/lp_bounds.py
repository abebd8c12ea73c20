"""LP bounds (``lp``, one box at a time): the triangle relaxation solved as linear programs.

The triangle relaxation of the layers ``< k`` as one linear program over
``v = (x, a_0, ..., a_{k-1})``: ``x`` in the box, ``a_j`` in ``[relu(l_j), relu(u_j)]``;
an active neuron ``a = W a' + b``; an inactive one ``a = 0`` and ``W a' + b <= u``;
an unstable one ``a >= W a' + b`` and ``a <= s (W a' + b - l)``; with fixed phases in
layer k itself, also their sign constraints on ``z_k``. Each still unstable neuron
of layer k gets ``min`` and ``max`` of ``z_k`` over this polytope (one HiGHS LP per
layer, loaded once and re-solved warm per objective), and
``C z_L`` is minimised over the relaxation of all hidden layers. The bound kept is
not the solver's objective but the weak-duality bound rebuilt from its dual
values ``y`` (``y >= 0`` on inequalities): for ``min g.v + g0`` s.t. ``A_ub v <= b_ub``,
``A_eq v = b_eq``, every feasible ``v`` has ``g.v + g0 >= r.v + g0 - y_ub.b_ub - y_eq.b_eq``
with ``r = g + A_ub' y_ub + A_eq' y_eq``; bounding the hidden part of ``r.v`` by the
variable bounds leaves a linear function of ``x`` (the ``lp`` spec's
``spec_lower_A``, ``spec_lower_c``). It is sound whatever the solver's tolerances,
and equals the LP optimum when the duals are exact. New bounds are intersected
with the old ones, so ``lp`` is never looser than ``crown``.

Notation and batching as in `explain_mnist.bounds`, whose CROWN bounds these start from. This
module sits above the MIP encoding and the solvers (HiGHS LPs): `bounds.compute_bounds` reaches
``lp_bounds`` by name, so `bounds.py` imports no solver.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from explain_mnist.bounds import (Bounds, _batched_layers, _batched_spec, _broadcast_boxes, _concatenate,
                                  _crown_spec, _dense_rows, _layer, _relaxation, _settle_crossings, _slice_layers,
                                  _spec_affine, apply_phases, as_batch, crown_bounds)
from explain_mnist.encoding import MIPModel
from explain_mnist.network import Network
from explain_mnist.solvers import make_solver


def lp_tighten(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: Bounds | None = None, layers=None,
               time_budget: float | None = None, phases=None, C=None) -> Bounds:
    """Return the bounds of ONE box tightened by linear programs over the triangle relaxation.

    ``bounds`` (default: `crown_bounds`) are the starting bounds, ``layers`` the hidden
    layers to tighten (default all), ``time_budget`` seconds after which the remaining
    neurons keep their old bounds. Layer 0 is re-bounded only when some of its phases are
    fixed (without them its interval bounds are already exact). With ``C`` the spec bounds
    are tightened too. Each LP costs milliseconds to a second: budget it on wide nets.
    """
    start = time.perf_counter()
    deadline = np.inf if time_budget is None else start + time_budget
    lo, hi = as_batch(lo, hi)
    if lo.shape[0] != 1:
        raise ValueError(f"lp_tighten bounds one box at a time, got {lo.shape[0]}; use compute_bounds(method='lp')")
    phases = _batched_layers(phases, net, 1, "phases")
    C = None if C is None else _batched_spec(net, C, 1)
    if bounds is None:
        bounds = crown_bounds(net, lo, hi, phases=phases, C=C)
    lower = [l.copy() for l in bounds.lower]
    upper = [u.copy() for u in bounds.upper]
    infeasible = bounds.infeasible.copy() if bounds.infeasible is not None else np.zeros(1, dtype=bool)
    todo = set(range(len(net.hidden)) if layers is None else layers)
    tightened = False
    for k, affine in enumerate(net.hidden):
        if infeasible[0]:
            break
        if k > 0 and tightened:
            # CROWN again over the tightened layers below: far fewer unstable neurons left for LPs in deep nets
            refreshed = crown_bounds(net, lo, hi, phases=phases, prior=(lower, upper))
            lower = [l.copy() for l in refreshed.lower]
            upper = [u.copy() for u in refreshed.upper]
            infeasible |= refreshed.infeasible
            tightened = False
        fixed = np.zeros(affine.n_out, dtype=np.int8) if phases is None else phases[k][0]
        unstable = np.flatnonzero((lower[k][0] < 0) & (upper[k][0] > 0))
        if k in todo and unstable.size and (k > 0 or fixed.any()) and time.perf_counter() < deadline:
            lp = _TriangleLP(net, lo[0], hi[0], lower, upper, k, fixed)
            tightened = True
            W_rows = _dense_rows(affine.W, unstable)
            for row, i in enumerate(unstable):
                if time.perf_counter() >= deadline:
                    break
                low = lp.lower_bound(W_rows[row], affine.b[i])
                high = lp.lower_bound(-W_rows[row], -affine.b[i], slot=1)
                if low is not None:
                    lower[k][0, i] = max(lower[k][0, i], low[0])
                if high is not None:
                    upper[k][0, i] = min(upper[k][0, i], -high[0])
        lower[k], upper[k] = apply_phases(lower[k], upper[k], None if phases is None else phases[k])
        upper[k], bad = _settle_crossings(lower[k], upper[k])
        infeasible |= bad
    spec = {}
    if C is not None:
        spec = _lp_spec(net, lo, hi, lower, upper, phases, C, bounds, deadline, infeasible[0])
    return Bounds(lower, upper, "lp", time.perf_counter() - start, infeasible=infeasible, **spec)


def lp_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, phases=None, C=None) -> Bounds:
    """Return `crown_bounds` tightened box by box with `lp_tighten`."""
    start = time.perf_counter()
    lo, hi = _broadcast_boxes(lo, hi, phases, C)
    n_boxes = lo.shape[0]
    phases = _batched_layers(phases, net, n_boxes, "phases")
    C = None if C is None else _batched_spec(net, C, n_boxes)
    crown = crown_bounds(net, lo, hi, phases=phases, C=C)
    parts = [lp_tighten(net, lo[i], hi[i], bounds=crown.box(i), phases=_slice_layers(phases, slice(i, i + 1)),
                        C=None if C is None else C[i:i + 1]) for i in range(n_boxes)]
    result = _concatenate(parts, "lp")
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# LP internals


class _TriangleLP:
    """The triangle relaxation of hidden layers ``< depth`` over one box, for many objectives on ``a_{depth-1}``."""

    def __init__(self, net, lo, hi, lower, upper, depth, fixed_top=None):
        affines = net.hidden
        sizes = [net.n_inputs] + [a.n_out for a in affines[:depth]]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        n_vars = int(self.offsets[-1])
        var_lo = [lo] + [np.maximum(lower[j][0], 0.0) for j in range(depth)]
        var_hi = [hi] + [np.maximum(upper[j][0], 0.0) for j in range(depth)]
        self.var_lo, self.var_hi = np.concatenate(var_lo), np.concatenate(var_hi)
        self.n_in = net.n_inputs
        ub_blocks, ub_rhs, eq_blocks, eq_rhs = [], [], [], []
        for j in range(depth):
            W, b = affines[j].W, affines[j].b
            l, u = lower[j][0], upper[j][0]
            active = l >= 0
            inactive = ~active & (u <= 0)
            unstable = ~active & ~inactive
            idx = np.flatnonzero(active)
            if idx.size:  # a_j - W a_{j-1} = b
                eq_blocks.append(self._rows(j - 1, -_sparse_rows(W, idx), j, idx))
                eq_rhs.append(b[idx])
            idx = np.flatnonzero(inactive)
            if idx.size:  # W a_{j-1} <= u - b
                ub_blocks.append(self._rows(j - 1, _sparse_rows(W, idx)))
                ub_rhs.append(u[idx] - b[idx])
            idx = np.flatnonzero(unstable)
            if idx.size:
                s = u[idx] / (u[idx] - l[idx])
                W_idx = _sparse_rows(W, idx)
                ub_blocks.append(self._rows(j - 1, W_idx, j, idx, -1.0))  # W a' - a <= -b
                ub_rhs.append(-b[idx])
                ub_blocks.append(self._rows(j - 1, -sp.diags(s) @ W_idx, j, idx))  # a - s W a' <= s (b - l)
                ub_rhs.append(s * (b[idx] - l[idx]))
        if fixed_top is not None and depth < len(affines):
            W, b = affines[depth].W, affines[depth].b
            idx = np.flatnonzero(fixed_top > 0)
            if idx.size:  # W a' + b >= l  (fixed active)
                ub_blocks.append(self._rows(depth - 1, -_sparse_rows(W, idx)))
                ub_rhs.append(b[idx] - lower[depth][0, idx])
            idx = np.flatnonzero(fixed_top < 0)
            if idx.size:  # W a' + b <= u  (fixed inactive)
                ub_blocks.append(self._rows(depth - 1, _sparse_rows(W, idx)))
                ub_rhs.append(upper[depth][0, idx] - b[idx])
        self.A_ub = sp.vstack(ub_blocks, format="csr") if ub_blocks else sp.csr_matrix((0, n_vars))
        self.b_ub = np.concatenate(ub_rhs) if ub_rhs else np.zeros(0)
        self.A_eq = sp.vstack(eq_blocks, format="csr") if eq_blocks else sp.csr_matrix((0, n_vars))
        self.b_eq = np.concatenate(eq_rhs) if eq_rhs else np.zeros(0)
        self.top = slice(int(self.offsets[depth]), int(self.offsets[depth + 1]))
        self.n_vars = n_vars
        self._solvers = {}

    def _rows(self, prev, W_rows, layer=None, idx=None, sign=1.0):
        """Return rows ``W_rows . a_prev (+ sign * e_idx . a_layer)`` over all variables (``prev = -1``: x)."""
        block = sp.coo_matrix(W_rows)
        rows, cols, vals = [block.row], [block.col + self.offsets[prev + 1]], [block.data]
        if layer is not None:
            rows.append(np.arange(idx.size))
            cols.append(self.offsets[layer + 1] + idx)
            vals.append(np.full(idx.size, sign))
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(W_rows.shape[0], int(self.offsets[-1])))

    def _loaded(self, slot: int):
        """Return the LP loaded into HiGHS once per slot; objectives change, each slot keeps its warm basis.

        Callers alternating minimisation and maximisation use one slot for each: flipping the
        objective's sign in one model made every re-solve 5-15x slower (measured).
        """
        if slot not in self._solvers:
            A = sp.vstack([self.A_ub, self.A_eq], format="csr")
            row_lower = np.concatenate([np.full(self.b_ub.size, -np.inf), self.b_eq])
            row_upper = np.concatenate([self.b_ub, self.b_eq])
            model = MIPModel(lb=self.var_lo, ub=self.var_hi, integrality=np.zeros(self.n_vars, dtype=bool), A=A,
                             row_lower=row_lower, row_upper=row_upper, c=np.zeros(self.n_vars))
            self._solvers[slot] = make_solver("highs", model)
        return self._solvers[slot]

    def lower_bound(self, g_top, g0, slot: int = 0):
        """Return ``(bound, A_x, c)``: a lower bound of ``g_top . a_{depth-1} + g0`` from the LP's duals, or None."""
        g = np.zeros(self.n_vars)
        g[self.top] = g_top
        solver = self._loaded(slot)
        solver.set_objective(g)
        res = solver.solve()
        if res.status != "optimal" or res.row_duals is None:
            return None
        reduced, row_part = solver.model.dual_certificate(res.row_duals)
        const = g0 + row_part
        hidden = reduced[self.n_in:]
        const += np.minimum(hidden * self.var_lo[self.n_in:], hidden * self.var_hi[self.n_in:]).sum()
        A_x = reduced[:self.n_in]
        bound = const + np.minimum(A_x * self.var_lo[:self.n_in], A_x * self.var_hi[:self.n_in]).sum()
        if not np.isfinite(bound):
            return None
        return bound, A_x, const


def _lp_spec(net, lo, hi, lower, upper, phases, C, old, deadline, infeasible) -> dict:
    """Return the spec fields for one box: the best of old, re-run CROWN and the LP's dual bound, row by row."""
    relaxations = [_relaxation(lower[k], upper[k], _layer(phases, k), None) for k in range(len(lower))]
    spec = _crown_spec(net, lo, hi, relaxations, C)
    if old.spec_lower_A is not None:
        better = old.spec_lower > spec["spec_lower"]
        spec["spec_lower"] = np.where(better, old.spec_lower, spec["spec_lower"])
        spec["spec_lower_c"] = np.where(better, old.spec_lower_c, spec["spec_lower_c"])
        spec["spec_lower_A"] = np.where(better[..., None], old.spec_lower_A, spec["spec_lower_A"])
    if old.spec_upper is not None:
        spec["spec_upper"] = np.minimum(spec["spec_upper"], old.spec_upper)
    if infeasible:
        return spec
    W_spec, b_spec = _spec_affine(net, C, 1)
    lp = _TriangleLP(net, lo[0], hi[0], lower, upper, len(net.hidden))
    for r in range(W_spec.shape[1]):
        if time.perf_counter() >= deadline:
            break
        low = lp.lower_bound(W_spec[0, r], b_spec[0, r])
        if low is not None and low[0] > spec["spec_lower"][0, r]:
            spec["spec_lower"][0, r], spec["spec_lower_A"][0, r], spec["spec_lower_c"][0, r] = low
        high = lp.lower_bound(-W_spec[0, r], -b_spec[0, r], slot=1)
        if high is not None:
            spec["spec_upper"][0, r] = min(spec["spec_upper"][0, r], -high[0])
    return spec


def _sparse_rows(W, idx):
    return sp.csr_matrix(W[idx])
