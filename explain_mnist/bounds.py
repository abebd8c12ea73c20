"""Pre-activation bounds of every hidden neuron over an input box, optionally with ReLU phases fixed.

Inputs are batched: ``lo`` and ``hi`` have shape ``(n_in,)`` or ``(B, n_in)``;
the result holds, for every hidden layer k, arrays ``lower[k]`` and ``upper[k]``
of shape ``(B, n_k)`` (B = 1 for an unbatched box). A single box may serve a
batch of phase patterns (or of specifications ``C``): it is repeated to their B.

``phases`` (optional) is a list with one int8 array per hidden layer, shape
``(n_k,)`` or ``(B, n_k)``: +1 means the neuron is fixed active (z >= 0),
-1 fixed inactive (z <= 0), 0 free. A fixed phase clips that neuron's bounds
(active: lower >= 0; inactive: upper <= 0) before they are propagated. A box
whose clipped bounds cross (lower > upper beyond ``INFEASIBLE_TOL``: e.g. fixed
active but upper < 0) contains no input that respects its phases: it is flagged
in ``Bounds.infeasible`` and its bound values mean nothing.

Notation: ``z_k = W_k a_{k-1} + b_k`` with ``a_{-1} = x`` and ``a_k = relu(z_k)``
for the hidden layers k = 0..L-1; the logits are ``z_L``. A specification ``C``
(``(m, n_out)`` or ``(B, m, n_out)``) asks for bounds of ``C z_L`` (see
`Network.spec_matrix`).

Three methods here, each sound (every bound holds for every input of the box that
respects the fixed phases), from cheapest to tightest:

``interval``
    ``[l, u]`` of ``W a + b`` over a box ``[p, q]`` is ``W c + b -+ |W| r`` with centre
    ``c = (p + q) / 2`` and radius ``r = (q - p) / 2``; the box of ``a_k`` is
    ``[relu(l_k), relu(u_k)]``. On layer 0 this is exact (the extremes are box corners).

``crown`` (linear relaxation with back-substitution, as in DeepPoly / CROWN)
    Given the bounds ``[l, u]`` of a neuron, its activation is sandwiched by two lines
    ``alpha z <= a <= s z + t``: exact (``alpha = s = 1, t = 0``) if it is active
    (``l >= 0`` or phase +1), zero (``alpha = s = t = 0``) if it is inactive (``u <= 0`` or
    phase -1), and otherwise (``l < 0 < u``) ``s = u / (u - l)``, ``t = -u l / (u - l)``
    (the chord of the triangle) and a lower slope ``alpha`` in [0, 1]: the adaptive
    choice 1 if ``u > -l`` else 0, or given. To bound a linear function ``lam . a_j + c``
    from below, replace ``a_j`` by the lower line where ``lam > 0`` and by the upper line
    where ``lam < 0``; this gives ``lam' . z_j + c'``, and ``z_j = W_j a_{j-1} + b_j``
    carries it one layer down. Repeating down to the input gives ``A x + c`` with
    ``f(x) >= A x + c`` on the box, whose minimum is ``A+ . p + A- . q + c`` (a corner).
    Upper bounds are the lower bounds of ``-f``. Layer k is bounded this way with the
    final bounds of layers ``< k`` (only neurons interval arithmetic leaves unstable
    are back-substituted; the result is intersected with the interval bounds), and
    ``C z_L`` likewise, which yields ``spec_lower_A``, ``spec_lower_c`` and
    ``spec_lower = min over the box of spec_lower_A x + spec_lower_c``.

``alpha``: CROWN with its lower slopes optimised per bounded row (`alpha_tighten`).

A fourth method, ``lp`` (the triangle relaxation solved as linear programs), lives in
`explain_mnist.lp_bounds`, above the MIP encoding and the solvers it needs: this module
imports nothing but numpy, scipy and the network, and `compute_bounds` finds ``lp`` by
name (`BOUND_METHODS`), as `models.py` finds its readers.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from explain_mnist.network import Network, times_W

INFEASIBLE_TOL = 1e-8
MAX_BACKSUB_ENTRIES = 2 ** 24
ALPHA_STEPS = 30            # projected Adam steps of alpha-CROWN per layer
ALPHA_LR = 0.1
NU_LR = 0.05             # Adam's step for the neuron-bound multipliers of `optimise_rows`
ADAM_BETAS = (0.9, 0.999)


@dataclass
class Bounds:
    """Per-layer pre-activation bounds for a batch of boxes (see the module docstring).

    ``spec_lower``/``spec_upper`` ``(B, m)`` bound ``C @ logits`` when a ``C`` was given;
    ``spec_lower_A`` ``(B, m, n_in)`` and ``spec_lower_c`` ``(B, m)`` give the linear lower
    function behind ``spec_lower`` (``crown`` and ``lp`` only). ``infeasible`` ``(B,)``
    marks boxes whose fixed phases contradict the bounds: they contain no input.
    """

    lower: list
    upper: list
    method: str
    seconds: float
    spec_lower: np.ndarray | None = None
    spec_upper: np.ndarray | None = None
    spec_lower_A: np.ndarray | None = None
    spec_lower_c: np.ndarray | None = None
    infeasible: np.ndarray | None = None

    def __post_init__(self):
        if self.infeasible is None and self.lower:
            self.infeasible = np.zeros(self.lower[0].shape[0], dtype=bool)

    def unstable(self, k: int) -> np.ndarray:
        """Return the mask of neurons of hidden layer k whose phase the bounds do not decide."""
        return (self.lower[k] < 0) & (self.upper[k] > 0)

    def n_unstable(self) -> int:
        """Return the number of unstable neurons over all hidden layers (summed over the batch)."""
        return int(sum(self.unstable(k).sum() for k in range(len(self.lower))))

    def box(self, i: int) -> "Bounds":
        """Return the bounds of box ``i`` alone, as a batch of one."""
        def pick(a):
            return None if a is None else a[i:i + 1].copy()
        return Bounds([l[i:i + 1].copy() for l in self.lower], [u[i:i + 1].copy() for u in self.upper],
                      self.method, self.seconds, pick(self.spec_lower), pick(self.spec_upper),
                      pick(self.spec_lower_A), pick(self.spec_lower_c), pick(self.infeasible))


def as_batch(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``lo`` and ``hi`` as float64 arrays of shape ``(B, n_in)``."""
    lo = np.atleast_2d(np.asarray(lo, dtype=np.float64))
    hi = np.atleast_2d(np.asarray(hi, dtype=np.float64))
    return np.broadcast_arrays(lo, hi)


def apply_phases(lower: np.ndarray, upper: np.ndarray, phase) -> tuple[np.ndarray, np.ndarray]:
    """Return bounds clipped by fixed phases (+1: lower >= 0, -1: upper <= 0)."""
    if phase is None:
        return lower, upper
    phase = np.broadcast_to(phase, lower.shape)
    return np.where(phase > 0, np.maximum(lower, 0.0), lower), np.where(phase < 0, np.minimum(upper, 0.0), upper)


def affine_interval(W, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the interval image ``(lower, upper)`` of a batch of boxes under ``x -> W x + b``."""
    centre = (lo + hi) / 2.0
    radius = (hi - lo) / 2.0
    if sp.issparse(W):
        mid = np.asarray((W @ centre.T).T) + b
        rad = np.asarray((abs(W) @ radius.T).T)
    else:
        mid = centre @ W.T + b
        rad = radius @ np.abs(W).T
    return mid - rad, mid + rad


def interval_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, phases=None, C=None) -> Bounds:
    """Return interval-arithmetic bounds of every hidden pre-activation (and of ``C @ logits``) over the boxes."""
    start = time.perf_counter()
    lo, hi = _broadcast_boxes(lo, hi, phases, C)
    infeasible = np.zeros(lo.shape[0], dtype=bool)
    lower, upper = [], []
    for k, affine in enumerate(net.hidden):
        l, u = affine_interval(affine.W, affine.b, lo, hi)
        l, u = apply_phases(l, u, _layer(phases, k))
        u, bad = _settle_crossings(l, u)
        infeasible |= bad
        lower.append(l)
        upper.append(u)
        lo, hi = np.maximum(l, 0.0), np.maximum(u, 0.0)
    spec_lower = spec_upper = None
    if C is not None:
        W_spec, b_spec = _spec_affine(net, C, lo.shape[0])
        centre, radius = (lo + hi) / 2.0, (hi - lo) / 2.0
        mid = np.einsum("bmn,bn->bm", W_spec, centre) + b_spec
        rad = np.einsum("bmn,bn->bm", np.abs(W_spec), radius)
        spec_lower, spec_upper = mid - rad, mid + rad
    return Bounds(lower, upper, "interval", time.perf_counter() - start,
                  spec_lower=spec_lower, spec_upper=spec_upper, infeasible=infeasible)


def crown_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, phases=None, C=None, alpha=None,
                 prior=None, fresh_from=None) -> Bounds:
    """Return linear-relaxation (CROWN) bounds of every hidden pre-activation, and of ``C @ logits`` if given.

    ``alpha`` (optional): one array per hidden layer, ``(n_k,)`` or ``(B, n_k)`` in [0, 1],
    the lower slopes of unstable neurons; default the adaptive choice. ``prior``
    (optional): ``(lower, upper)``, per-layer bounds already known to hold on the
    boxes (e.g. a branch-and-bound parent's); each layer's bounds are intersected
    with them before they relax the next layers, and neurons they already settle are
    not back-substituted. ``fresh_from`` (optional, with ``prior``): per box, the first
    hidden layer worth re-bounding; below it the box keeps its prior bounds (clipped by its
    phases). A branch-and-bound child whose one new split is in layer k has nothing new
    below layer k + 1: CROWN bounds of a layer do not depend on the phases of later layers.
    """
    start = time.perf_counter()
    lo, hi = _broadcast_boxes(lo, hi, phases, C, alpha)
    n_boxes = lo.shape[0]
    phases = _batched_layers(phases, net, n_boxes, "phases")
    alpha = _batched_layers(alpha, net, n_boxes, "alpha")
    if alpha is not None and any(((a < 0) | (a > 1)).any() for a in alpha):
        raise ValueError("alpha (lower slopes of unstable ReLUs) must lie in [0, 1]")
    prior_lower, prior_upper = (None, None) if prior is None else (
        _batched_layers(prior[0], net, n_boxes, "prior lower bounds"),
        _batched_layers(prior[1], net, n_boxes, "prior upper bounds"))
    C = None if C is None else _batched_spec(net, C, n_boxes)
    fresh_from = np.zeros(n_boxes, dtype=int) if fresh_from is None or prior is None else \
        np.broadcast_to(np.asarray(fresh_from, dtype=int), (n_boxes,))
    widest = max([net.n_inputs] + [a.n_out for a in net.affines])
    rows = max([a.n_out for a in net.hidden] + [0 if C is None else C.shape[1]])
    chunk = max(1, MAX_BACKSUB_ENTRIES // max(1, 2 * rows * widest))
    parts = []
    for s in range(0, n_boxes, chunk):
        sl = slice(s, s + chunk)
        parts.append(_crown_chunk(net, lo[sl], hi[sl], _slice_layers(phases, sl), None if C is None else C[sl],
                                  _slice_layers(alpha, sl), _slice_layers(prior_lower, sl),
                                  _slice_layers(prior_upper, sl), fresh_from[sl]))
    result = _concatenate(parts, "crown")
    result.seconds = time.perf_counter() - start
    return result


def spec_coefficients(net: Network, bounds: Bounds, C: np.ndarray, phases=None, boxes=None, alpha=None) -> list:
    """Return, per hidden layer k, the coefficients ``(n, n_k)`` of ``a_k`` in CROWN's back-substituted lower bound.

    ``C`` holds one spec row per selected box, ``(n, n_out)`` (or one row ``(n_out,)`` for all);
    ``boxes`` selects boxes of ``bounds`` (and of batched ``phases``/``alpha``), default all.
    The relaxation is the one `crown_bounds` uses with the same ``phases`` and ``alpha``.
    A negative coefficient means the neuron's upper line (its triangle's chord) enters the bound.
    """
    n_total = bounds.lower[0].shape[0] if bounds.lower else 1
    boxes = np.arange(n_total) if boxes is None else np.asarray(boxes)
    phases = _batched_layers(phases, net, n_total, "phases")
    alpha = _batched_layers(alpha, net, n_total, "alpha")
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    C = np.broadcast_to(C, (boxes.size, net.n_outputs))[:, None, :]
    lam = times_W(C, net.affines[-1].W)
    coefficients = [None] * len(net.hidden)
    for k in range(len(net.hidden) - 1, -1, -1):
        coefficients[k] = lam[:, 0, :].copy()
        lower_slope, slope, _ = _relaxation(bounds.lower[k][boxes], bounds.upper[k][boxes],
                                            None if phases is None else phases[k][boxes],
                                            None if alpha is None else alpha[k][boxes])
        lam = np.maximum(lam, 0.0) * lower_slope[:, None, :] + np.minimum(lam, 0.0) * slope[:, None, :]
        lam = times_W(lam, net.hidden[k].W)
    return coefficients


def compute_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, method: str = "interval", phases=None,
                   C=None) -> Bounds:
    """Return the bounds of ``method`` (a key of `BOUND_METHODS`) over the boxes ``[lo, hi]``."""
    if method not in BOUND_METHODS:
        raise ValueError(f"unknown bound method {method!r}; supported: {', '.join(BOUND_METHODS)}")
    function = BOUND_METHODS[method]
    if isinstance(function, tuple):   # a method of a module above this one, imported by name
        function = getattr(importlib.import_module(function[0]), function[1])
    return function(net, lo, hi, phases=phases, C=C)


# ---------------------------------------------------------------------------------------------
# CROWN internals


def _crown_chunk(net, lo, hi, phases, C, alpha, prior_lower, prior_upper, fresh_from) -> Bounds:
    n_boxes = lo.shape[0]
    infeasible = np.zeros(n_boxes, dtype=bool)
    lower, upper, relaxations = [], [], []
    act_lo, act_hi = lo, hi
    for k, affine in enumerate(net.hidden):
        l, u = affine_interval(affine.W, affine.b, act_lo, act_hi)
        if prior_lower is not None:
            l, u = np.maximum(l, prior_lower[k]), np.minimum(u, prior_upper[k])
        boxes = np.flatnonzero(fresh_from <= k)
        rows = np.flatnonzero(((l[boxes] < 0) & (u[boxes] > 0)).any(axis=0)) if k > 0 else np.empty(0, dtype=int)
        if rows.size:
            W_rows = _dense_rows(affine.W, rows)
            lam = np.broadcast_to(W_rows, (boxes.size,) + W_rows.shape)
            const = np.broadcast_to(affine.b[rows], (boxes.size, rows.size))
            some = [tuple(part[boxes] for part in relaxation) for relaxation in relaxations] \
                if boxes.size < n_boxes else relaxations
            bound = _two_sided(net, some, k - 1, lam, const, lo[boxes], hi[boxes])[2]
            l[np.ix_(boxes, rows)] = np.maximum(l[np.ix_(boxes, rows)], bound[:, :rows.size])
            u[np.ix_(boxes, rows)] = np.minimum(u[np.ix_(boxes, rows)], -bound[:, rows.size:])
        l, u = apply_phases(l, u, _layer(phases, k))
        u, bad = _settle_crossings(l, u)
        infeasible |= bad
        lower.append(l)
        upper.append(u)
        relaxations.append(_relaxation(l, u, _layer(phases, k), _layer(alpha, k)))
        act_lo, act_hi = np.maximum(l, 0.0), np.maximum(u, 0.0)
    spec = {} if C is None else _crown_spec(net, lo, hi, relaxations, C)
    return Bounds(lower, upper, "crown", 0.0, infeasible=infeasible, **spec)


def _crown_spec(net, lo, hi, relaxations, C) -> dict:
    W_spec, b_spec = _spec_affine(net, C, lo.shape[0])
    A, const, bound = _two_sided(net, relaxations, len(net.hidden) - 1, W_spec, b_spec, lo, hi)
    m = W_spec.shape[1]
    return dict(spec_lower=bound[:, :m], spec_upper=-bound[:, m:], spec_lower_A=A[:, :m], spec_lower_c=const[:, :m])


def _relaxation(lower, upper, phase, alpha):
    """Return ``(alpha, s, t)`` of the lines ``alpha z <= relu(z) <= s z + t``, each ``(B, n)``."""
    if phase is None:
        phase = np.zeros(lower.shape, dtype=np.int8)
    active = (phase > 0) | ((phase == 0) & (lower >= 0))
    inactive = ~active & ((phase < 0) | (upper <= 0))
    unstable = ~active & ~inactive
    width = np.where(unstable, upper - lower, 1.0)
    slope = np.where(active, 1.0, np.where(unstable, upper / width, 0.0))
    intercept = np.where(unstable, -upper * lower / width, 0.0)
    lower_slope = (upper > -lower).astype(np.float64) if alpha is None else np.broadcast_to(alpha, lower.shape)
    lower_slope = np.where(active, 1.0, np.where(unstable, lower_slope, 0.0))
    return lower_slope, slope, intercept


def _two_sided(net, relaxations, top, lam, const, lo, hi):
    """Back-substitute ``lam . a_top + const`` both ways; return ``A``, ``c`` and the box minima of ``[f; -f]``."""
    lam = np.concatenate([lam, -lam], axis=1)
    const = np.concatenate([const, -const], axis=1)
    A, c = _back_substitute(net, relaxations, top, lam, const)
    pos, neg = np.maximum(A, 0.0), np.minimum(A, 0.0)
    return A, c, c + np.einsum("bmn,bn->bm", pos, lo) + np.einsum("bmn,bn->bm", neg, hi)


def _back_substitute(net, relaxations, top, lam, const):
    """Return ``(A, c)`` with ``lam . a_top + const >= A x + c`` for every input (``top = -1``: lam is on x)."""
    affines = net.hidden
    for j in range(top, -1, -1):
        lower_slope, slope, intercept = relaxations[j]
        pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
        const = const + np.einsum("bmn,bn->bm", neg, intercept)
        lam = pos * lower_slope[:, None, :] + neg * slope[:, None, :]
        const = const + lam @ affines[j].b
        lam = times_W(lam, affines[j].W)
    return lam, const


# ---------------------------------------------------------------------------------------------
# alpha-CROWN: lower slopes optimised per bounded row


def alpha_tighten(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: Bounds | None = None, C=None,
                  steps: int = ALPHA_STEPS, lr: float = ALPHA_LR, time_budget: float | None = None) -> Bounds:
    """Return the bounds of ONE box tightened by optimising CROWN's lower slopes (alpha-CROWN), layer by layer.

    Every bounded row (the lower and the upper bound of each unstable neuron of layers 1..L-1,
    then each row of ``C @ logits``) gets its own slopes ``alpha`` in [0, 1] for every unstable
    neuron below it, improved by projected gradient ascent (Adam) on its CROWN bound; each
    row keeps the best bound it reached, so the result is never looser than ``bounds``
    (default `crown_bounds`). The gradient needs no autodiff: the bound is
    ``min_x L_alpha(x)`` over the box, attained at the corner ``x*`` that minimises the
    linear function; by Danskin's theorem ``d bound / d alpha_j[i] = max(lam_j[i], 0) * zhat_j[i]``,
    where ``lam_j`` is the row's back-substituted coefficient of ``a_j`` and ``zhat_j`` the
    pre-activation of the relaxed network (each ReLU replaced by the line its coefficient's
    sign selects) evaluated forward at ``x*``. Layers are tightened in order, each with the
    tightened bounds of the layers below; ``time_budget`` seconds stop it early (the rest keeps
    its old bounds).
    """
    start = time.perf_counter()
    deadline = np.inf if time_budget is None else start + time_budget
    lo, hi = as_batch(lo, hi)
    if lo.shape[0] != 1:
        raise ValueError(f"alpha_tighten bounds one box at a time, got {lo.shape[0]}")
    C = None if C is None else _batched_spec(net, C, 1)
    if bounds is None:
        bounds = crown_bounds(net, lo, hi, C=C)
    lower = [l[0].copy() for l in bounds.lower]
    upper = [u[0].copy() for u in bounds.upper]
    box_lo, box_hi = lo[0], hi[0]
    for k in range(1, len(net.hidden)):
        unstable = np.flatnonzero((lower[k] < 0) & (upper[k] > 0))
        if unstable.size == 0 or time.perf_counter() >= deadline:
            continue
        W_rows = _dense_rows(net.hidden[k].W, unstable)
        b_rows = net.hidden[k].b[unstable]
        bound = _optimise_rows(net, lower, upper, k - 1, np.vstack([W_rows, -W_rows]),
                               np.concatenate([b_rows, -b_rows]), box_lo, box_hi, steps, lr, deadline)[0]
        n = unstable.size
        lower[k][unstable] = np.maximum(lower[k][unstable], bound[:n])
        upper[k][unstable] = np.minimum(upper[k][unstable], -bound[n:])
        upper[k] = np.maximum(upper[k], lower[k])   # round-off only: both are sound bounds of the same value
    spec = {}
    if C is not None:
        W_spec, b_spec = _spec_affine(net, C, 1)
        bound, A, const = _optimise_rows(net, lower, upper, len(net.hidden) - 1, W_spec[0], b_spec[0],
                                         box_lo, box_hi, steps, lr, np.inf if time_budget is None else deadline)
        old = bounds.spec_lower[0] if bounds.spec_lower is not None else np.full(bound.shape, -np.inf)
        better = bound > old
        spec = dict(spec_lower=np.where(better, bound, old)[None],
                    spec_upper=None if bounds.spec_upper is None else bounds.spec_upper.copy(),
                    spec_lower_A=np.where(better[:, None], A, bounds.spec_lower_A[0])[None]
                    if bounds.spec_lower_A is not None else A[None],
                    spec_lower_c=np.where(better, const, bounds.spec_lower_c[0])[None]
                    if bounds.spec_lower_c is not None else const[None])
    return Bounds([l[None] for l in lower], [u[None] for u in upper], "alpha", time.perf_counter() - start,
                  infeasible=bounds.infeasible.copy() if bounds.infeasible is not None else None, **spec)


def alpha_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, phases=None, C=None) -> Bounds:
    """Return `crown_bounds` tightened box by box with `alpha_tighten` (boxes without fixed phases only)."""
    if phases is not None:
        raise ValueError("alpha bounds take no fixed phases; use method 'crown' or 'lp'")
    start = time.perf_counter()
    lo, hi = _broadcast_boxes(lo, hi, None, C)
    C = None if C is None else _batched_spec(net, C, lo.shape[0])
    crown = crown_bounds(net, lo, hi, C=C)
    parts = [alpha_tighten(net, lo[i], hi[i], bounds=crown.box(i), C=None if C is None else C[i:i + 1])
             for i in range(lo.shape[0])]
    result = _concatenate(parts, "alpha")
    result.seconds = time.perf_counter() - start
    return result


def _optimise_rows(net, lower, upper, top, W_rows, b_rows, lo, hi, steps, lr, deadline):
    """Return ``(bound, A, c)``, the best alpha-CROWN lower bounds of ``W_rows . a_top + b_rows`` (R rows).

    ``lower``/``upper`` are the (unbatched) bounds of hidden layers ``0..top``.
    """
    rows = optimise_rows(net, lo, hi, [l[None] for l in lower[:top + 1]], [u[None] for u in upper[:top + 1]],
                         W_rows[None], np.asarray(b_rows, dtype=np.float64)[None], steps=steps, lr=lr,
                         deadline=deadline)
    return rows.bound[0], rows.A[0], rows.c[0]


@dataclass
class RowBounds:
    """The result of `optimise_rows` for B boxes x R rows: ``f >= A x + c >= bound`` on each box."""

    bound: np.ndarray
    A: np.ndarray
    c: np.ndarray
    steps: int
    alpha: list = None   # per layer (B, R, n_j): each row's slopes and bound multipliers at its best bound,
    nu: list = None      # a warm start for a sub-box


def optimise_rows(net: Network, lo: np.ndarray, hi: np.ndarray, lower: list, upper: list, W_rows: np.ndarray,
                  b_rows: np.ndarray, phases=None, steps: int = ALPHA_STEPS, lr: float = ALPHA_LR,
                  lr_nu: float = NU_LR, deadline: float = np.inf, alpha=None, nu=None,
                  stop_above: float | None = None, dtype=np.float64) -> RowBounds:
    """Return the best alpha-beta-CROWN lower bounds (`RowBounds`) of ``W_rows . a_top + b_rows`` over B boxes.

    ``lower``/``upper``: per hidden layer ``0..top``, ``(B, n_j)`` bounds valid on each box's
    region (a branch-and-bound node's: its splits are already in them, a neuron fixed active
    has ``lower >= 0``, one fixed inactive ``upper <= 0``); ``W_rows`` ``(B, R, n_top)``,
    ``b_rows`` ``(B, R)``; ``phases`` (optional, per layer ``(B, n_j)``) the fixed phases.
    Every row has its own lower slopes ``alpha`` in [0, 1] for the unstable neurons and, for
    every other neuron (stable or fixed), a multiplier ``nu`` of its bound constraints
    ``l <= z <= u``: on the region, ``f(x) >= f(x) + nu z - max(nu u, nu l)`` for any real
    ``nu`` (the added term is ``nu (z - u) <= 0`` or ``nu (z - l) <= 0``), so ``nu`` joins the
    coefficient of ``z`` in the back-substitution and ``-max(nu u, nu l)`` the constant. A
    fixed neuron's split constraint is its clipped bound at 0, so these multipliers contain
    beta-CROWN's; they also let the bound use the node's bounds of neurons that CROWN treats as
    exactly linear, which the node LP uses as constraints. The right ``alpha`` and ``nu``
    make the bound the node LP's optimum. They are improved by projected Adam ascent on the
    bound with Danskin gradients, as in `alpha_tighten`, ``nu`` as the difference of two
    multipliers ``g_hi, g_lo >= 0`` of ``z <= u`` and ``z >= l``: ``d bound / d g_hi = zhat - u``,
    ``d bound / d g_lo = l - zhat`` (a free ``nu`` oscillated around 0 and converged more
    slowly: 0.617 against 0.645 after 20 steps at a 256x4 node whose LP value is 0.650). Each row
    keeps the best bound any step reached; ``deadline`` stops early. ``alpha`` and ``nu`` (optional, per layer ``(B, R, n_j)``,
    a NaN alpha entry meaning the default slope) start the ascent, e.g. from a parent node's
    result: any start is sound. With ``stop_above``, a box whose rows all reach a bound above it
    leaves the ascent (its work is done). With ``dtype=np.float32`` the ascent runs in single
    precision (about twice as fast) and the bounds returned come from one double-precision pass
    with the best multipliers, so they are as sound as in double precision.
    """
    lo, hi = np.atleast_2d(lo), np.atleast_2d(hi)
    B, R = b_rows.shape
    layers = range(len(lower))
    top = len(lower) - 1
    phase = [None if phases is None else np.broadcast_to(phases[j], lower[j].shape) for j in layers]
    default_slope, slope, intercept = zip(*[_relaxation(lower[j], upper[j], phase[j], None) for j in layers])
    unstable = [((lower[j] < 0) & (upper[j] > 0) & (True if phase[j] is None else phase[j] == 0))[:, None, :]
                for j in layers]
    bounded = [~unstable[j] & np.isfinite(lower[j])[:, None, :] & np.isfinite(upper[j])[:, None, :] for j in layers]
    alpha = [np.broadcast_to(default_slope[j][:, None, :], (B, R, lower[j].shape[1])).copy()
             if alpha is None or alpha[j] is None else
             np.where(np.isnan(alpha[j]), default_slope[j][:, None, :], np.clip(alpha[j], 0.0, 1.0)) for j in layers]
    nu = [np.zeros((B, R, lower[j].shape[1])) if nu is None or nu[j] is None
          else np.where(bounded[j], nu[j], 0.0) for j in layers]
    best = np.full((B, R), -np.inf)
    best_A, best_c = np.zeros((B, R, lo.shape[1])), np.zeros((B, R))
    best_alpha = [a.copy() for a in alpha]
    best_nu = [v.copy() for v in nu]

    def per_box(*arrays):
        return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]
    # the state of the boxes still in the ascent, in the working precision; `active` maps it to the B boxes
    active = np.arange(B)
    Ws = [a.W.astype(dtype) for a in net.hidden[:top + 1]]
    bs = [a.b.astype(dtype) for a in net.hidden[:top + 1]]
    state = dict(
        W_rows=per_box(np.broadcast_to(W_rows, (B, R, W_rows.shape[-1])))[0], b_rows=per_box(b_rows)[0],
        lo=per_box(np.broadcast_to(lo, (B, lo.shape[1])))[0], hi=per_box(np.broadcast_to(hi, (B, hi.shape[1])))[0],
        default_slope=per_box(*[d[:, None, :] for d in default_slope]), slope=per_box(*[t[:, None, :] for t in slope]),
        intercept=per_box(*[t[:, None, :] for t in intercept]), unstable=list(unstable), bounded=list(bounded),
        l_fin=per_box(*[np.where(np.isfinite(l), l, 0.0)[:, None, :] for l in lower]),
        u_fin=per_box(*[np.where(np.isfinite(u), u, 0.0)[:, None, :] for u in upper]),
        alpha=per_box(*alpha),
        # nu = g_hi - g_lo with g_hi >= 0 the multiplier of z <= u and g_lo >= 0 that of z >= l, each projected
        g_hi=per_box(*[np.maximum(v, 0.0) for v in nu]), g_lo=per_box(*[np.maximum(-v, 0.0) for v in nu]))
    adam = _Adam()
    n_steps = max(int(steps), 1)
    step = 0
    for step in range(n_steps):
        S = state
        n = active.size
        lam, const = S["W_rows"], S["b_rows"].copy()
        lams, lower_slopes = [None] * (top + 1), [None] * (top + 1)
        for j in range(top, -1, -1):
            lams[j] = lam
            lower_slopes[j] = np.where(S["unstable"][j], S["alpha"][j], S["default_slope"][j])
            pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
            const = const + (neg * S["intercept"][j]).sum(axis=2)
            const = const + (S["g_lo"][j] * S["l_fin"][j] - S["g_hi"][j] * S["u_fin"][j]).sum(axis=2)
            lam = pos * lower_slopes[j] + neg * S["slope"][j] + S["g_hi"][j] - S["g_lo"][j]
            const = const + lam @ bs[j]
            lam = times_W(lam.reshape(n * R, -1), Ws[j]).reshape(n, R, -1)
        bound = const + np.einsum("brn,bn->br", np.maximum(lam, 0.0), S["lo"]) + np.einsum(
            "brn,bn->br", np.minimum(lam, 0.0), S["hi"])
        improved = bound > best[active]
        rows_of, cols_of = np.nonzero(improved)
        target = (active[rows_of], cols_of)
        best[target], best_A[target], best_c[target] = bound[improved], lam[improved], const[improved]
        for j in layers:
            best_alpha[j][target] = S["alpha"][j][improved]
            best_nu[j][target] = (S["g_hi"][j] - S["g_lo"][j])[improved]
        if step == n_steps - 1 or time.perf_counter() >= deadline:
            break
        if stop_above is not None:
            going = np.flatnonzero(~(best[active] > stop_above).all(axis=1))
            if going.size == 0:
                break
            if going.size < n:
                active = active[going]
                state = {k: (v[going] if isinstance(v, np.ndarray) else [a[going] for a in v]) for k, v in S.items()}
                adam.keep(going)
                S, n = state, going.size
                lams = [l[going] for l in lams]
                lower_slopes = [l[going] for l in lower_slopes]
                lam = lam[going]
        corners = np.where(lam > 0, S["lo"][:, None, :], S["hi"][:, None, :]).reshape(n * R, -1)
        z = times_W(corners, Ws[0].T).reshape(n, R, -1) + bs[0]   # the relaxed network, forward at each minimiser
        gradients = []
        for j in layers:
            gradients.append(np.where(S["unstable"][j], np.maximum(lams[j], 0.0) * z, 0.0))
            gradients.append(np.where(S["bounded"][j], z - S["u_fin"][j], 0.0))
            gradients.append(np.where(S["bounded"][j], S["l_fin"][j] - z, 0.0))
            if j < top:
                a = np.where(lams[j] >= 0, lower_slopes[j] * z, S["slope"][j] * z + S["intercept"][j])
                z = times_W(a.reshape(n * R, -1), Ws[j + 1].T).reshape(n, R, -1) + bs[j + 1]
        steps_taken = adam.step(gradients)
        for j in layers:
            S["alpha"][j] = np.clip(S["alpha"][j] + lr * steps_taken[3 * j], 0.0, 1.0)
            g_hi = np.maximum(S["g_hi"][j] + lr_nu * steps_taken[3 * j + 1], 0.0)
            g_lo = np.maximum(S["g_lo"][j] + lr_nu * steps_taken[3 * j + 2], 0.0)
            both = np.minimum(g_hi, g_lo)   # l <= u: dropping the common part never lowers the bound
            S["g_hi"][j], S["g_lo"][j] = g_hi - both, g_lo - both
    if np.dtype(dtype) != np.float64:
        exact = optimise_rows(net, lo, hi, lower, upper, W_rows, b_rows, phases=phases, steps=1,
                              alpha=best_alpha, nu=best_nu)
        return RowBounds(exact.bound, exact.A, exact.c, step + 1, best_alpha, best_nu)
    return RowBounds(best, best_A, best_c, step + 1, best_alpha, best_nu)


class _Adam:
    """Adam's normalised ascent directions for a list of arrays (one moment pair per array, created on first use)."""

    def __init__(self):
        self.moments = None
        self.t = 0

    def keep(self, idx: np.ndarray) -> None:
        """Keep the moments of the boxes ``idx`` only (the leading axis of every array)."""
        if self.moments is not None:
            self.moments = [(m[idx], v[idx]) for m, v in self.moments]

    def step(self, gradients: list) -> list:
        """Return ``m_hat / (sqrt(v_hat) + eps)`` for each gradient (multiply by a learning rate and add)."""
        if self.moments is None:
            self.moments = [(np.zeros_like(g), np.zeros_like(g)) for g in gradients]
        self.t += 1
        b1, b2 = ADAM_BETAS
        out = []
        for g, (m, v) in zip(gradients, self.moments):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            out.append((m / (1 - b1 ** self.t)) / (np.sqrt(v / (1 - b2 ** self.t)) + 1e-8))
        return out


# ---------------------------------------------------------------------------------------------
# shared helpers


def _settle_crossings(lower, upper):
    """Return ``(upper, infeasible)``: boxes whose bounds cross beyond the tolerance, others with round-off removed."""
    gap = lower - upper
    infeasible = (gap > INFEASIBLE_TOL).any(axis=1)
    upper = np.where((gap > 0) & ~infeasible[:, None], lower, upper)
    return upper, infeasible


def _spec_affine(net, C, n_boxes):
    """Return ``(W_spec (B, m, n_last), b_spec (B, m))``: ``C @ logits`` as an affine map of the last activations."""
    C = _batched_spec(net, C, n_boxes)
    last = net.affines[-1]
    return times_W(C, last.W), C @ last.b


def _broadcast_boxes(lo, hi, phases=None, C=None, alpha=None):
    """Return ``lo``, ``hi`` as ``(B, n_in)`` with B the batch of boxes, phases, alpha or C (one box may serve many)."""
    lo, hi = as_batch(lo, hi)
    sizes = [lo.shape[0]]
    sizes += [np.ndim(a) == 2 and np.shape(a)[0] for layers in (phases, alpha) if layers is not None for a in layers]
    if C is not None and np.ndim(C) == 3:
        sizes.append(np.shape(C)[0])
    n_boxes = max(int(n) for n in sizes)
    if lo.shape[0] not in (1, n_boxes):
        raise ValueError(f"{lo.shape[0]} boxes but batched phases, alpha or C of {n_boxes}")
    return np.broadcast_to(lo, (n_boxes, lo.shape[1])), np.broadcast_to(hi, (n_boxes, hi.shape[1]))


def _batched_spec(net, C, n_boxes):
    C = np.asarray(C, dtype=np.float64)
    if C.ndim not in (2, 3) or C.shape[-1] != net.n_outputs:
        raise ValueError(f"C must have shape (m, {net.n_outputs}) or (B, m, {net.n_outputs}), got {C.shape}")
    if C.ndim == 2:
        C = C[None]
    if C.shape[0] not in (1, n_boxes):
        raise ValueError(f"C holds {C.shape[0]} specifications for {n_boxes} boxes")
    return np.broadcast_to(C, (n_boxes,) + C.shape[1:])


def _batched_layers(arrays, net, n_boxes, what):
    """Return a per-hidden-layer list broadcast to ``(B, n_k)``, or None."""
    if arrays is None:
        return None
    if len(arrays) != len(net.hidden):
        raise ValueError(f"{what} needs one array per hidden layer ({len(net.hidden)}), got {len(arrays)}")
    return [np.broadcast_to(np.asarray(a), (n_boxes, affine.n_out)) for a, affine in zip(arrays, net.hidden)]


def _slice_layers(arrays, sl):
    return None if arrays is None else [a[sl] for a in arrays]


def _layer(arrays, k):
    return None if arrays is None else arrays[k]


def _dense_rows(W, idx):
    return W[idx].toarray() if sp.issparse(W) else W[idx]


def _concatenate(parts, method) -> Bounds:
    """Return one `Bounds` holding the boxes of ``parts`` in order."""
    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values, axis=0)
    n_layers = len(parts[0].lower)
    return Bounds([np.concatenate([p.lower[k] for p in parts]) for k in range(n_layers)],
                  [np.concatenate([p.upper[k] for p in parts]) for k in range(n_layers)],
                  method, sum(p.seconds for p in parts), cat("spec_lower"), cat("spec_upper"),
                  cat("spec_lower_A"), cat("spec_lower_c"), cat("infeasible"))


# name -> function, or (module, function) of a method built on the solvers (imported when first used)
BOUND_METHODS = {"interval": interval_bounds, "crown": crown_bounds, "alpha": alpha_bounds,
                 "lp": ("explain_mnist.lp_bounds", "lp_bounds")}
