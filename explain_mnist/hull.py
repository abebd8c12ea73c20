"""Node bounds for a network with one hidden layer, from each neuron's convex hull over the input box.

Formulation. With one hidden layer a margin row is ``m(x) = sum_j v_j relu(z_j(x)) + d`` with
``z_j(x) = w_j . x + b_j``. On a branch-and-bound node (a box ``[lo, hi]`` and phases for some neurons) each
term is bounded below by a function linear in ``x``, valid on the node's region:

- fixed active (+1): ``relu(z) = z`` there, and ``z >= 0``, so adding ``- beta_j z_j`` (``beta_j >= 0``) keeps a
  lower bound; fixed inactive (-1): ``relu(z) = 0`` and ``z <= 0``, so ``+ beta_j z_j``;
- stable by its bounds ``[l_j, u_j]``: ``z`` (``l_j >= 0``) or 0 (``u_j <= 0``);
- free with ``v_j > 0``: ``relu(z) >= alpha_j z`` for any ``alpha_j`` in [0, 1];
- free with ``v_j < 0``: ``relu(z_j(x)) <= a_j . x + c(a_j)`` on the box for **any** vector ``a_j``, with
  ``c(a) = max(max_box(-a . x), max_box((w_j - a) . x) + b_j)`` (the largest gap over the box of either linear
  piece of the ReLU), so ``v_j relu(z_j) >= v_j (a_j . x + c(a_j))``.

The sum is ``g . x + const``, minimised over the box at a corner: a proven lower bound of the row on the node,
for every choice of ``(alpha, a, beta)``. Over all ``a_j`` these upper lines make up the concave envelope of
``relu(z_j(x))`` over the box (the single neuron's convex hull), where CROWN's triangle only knows ``z_j``'s
interval: ``a_j = u_j / (u_j - l_j) w_j``, the ascent's start, is the triangle's chord. The bound is concave in
``(alpha, a, beta)``; projected Adam ascent with supergradients (at the minimising corner ``x*``: ``v_j z_j(x*)``
for ``alpha_j``, ``v_j (x* - x_c)`` for ``a_j`` with ``x_c`` the corner attaining ``c``, ``-+z_j(x*)`` for
``beta_j``) improves it, each row keeps the best value any step reached, and the ascent ends early once the
bounds stop rising.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explain_mnist.bounds import ADAM_BETAS

HULL_STEPS = 25         # projected Adam steps per batch of nodes
HULL_LR = 0.2           # step of alpha (a fraction of its range [0, 1])
HULL_LR_A = 0.1         # step of neuron j's slopes a_j, relative to the mean |w_j|
HULL_LR_BETA = 0.05     # step of neuron j's split multiplier, relative to |v_j|
PLATEAU_STEPS = 5       # the ascent stops once no bound has risen by more than
PLATEAU_GAIN = 1e-3     # ... this fraction of itself over that many steps
HULL_MAX_PARAMETERS = 50_000    # neurons x inputs above which beta-CROWN's cheaper nodes pay more (RESULTS.md)


@dataclass
class HullBounds:
    """Per (node, row) pair: the bound, its linear function ``A . x + c`` and the multipliers that reached it."""

    bound: np.ndarray       # (P,)
    A: np.ndarray           # (P, n_in)
    c: np.ndarray           # (P,)
    alpha: np.ndarray       # (P, h)
    slopes: np.ndarray      # (P, h, n_in)
    beta: np.ndarray        # (P, h)
    candidates: np.ndarray  # (P, n_in): a corner where the ascent found the row <= 0, NaN where it found none


def applies(net) -> bool:
    """Return True iff branch-and-bound bounds ``net``'s nodes by `hull_rows`: one hidden layer, and small."""
    return len(net.hidden) == 1 and net.hidden[0].n_out * net.n_inputs <= HULL_MAX_PARAMETERS


def initial(lower: np.ndarray, upper: np.ndarray, W: np.ndarray, v: np.ndarray) -> tuple:
    """Return the ascent's start ``(alpha, slopes, beta)`` for pairs with neuron bounds ``(P, h)`` and rows ``v``:
    CROWN's adaptive lower slopes and the triangle's chords."""
    unstable = (lower < 0) & (upper > 0)
    chord = np.where(unstable, upper / np.where(unstable, upper - lower, 1.0), 0.0)
    alpha = np.where(unstable & (v > 0), (upper >= -lower).astype(np.float64), 0.0)
    slopes = np.where((unstable & (v < 0))[:, :, None], chord[:, :, None] * W[None], 0.0)
    return alpha, slopes, np.zeros_like(lower)


def hull_rows(W: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, lower: np.ndarray, upper: np.ndarray,
              phases: np.ndarray, v: np.ndarray, d: np.ndarray, steps: int = HULL_STEPS,
              start: tuple | None = None, stop_above: float | None = None) -> HullBounds:
    """Return the best `HullBounds` of rows ``v . relu(W x + b) + d`` over P (node, row) pairs (module docstring).

    ``W`` ``(h, n)``, ``b`` ``(h,)``: the hidden layer; ``lo``, ``hi`` ``(P, n)``: each pair's box; ``lower``,
    ``upper`` ``(P, h)``: bounds of ``W x + b`` valid on the pair's node; ``phases`` ``(P, h)`` in {-1, 0, +1};
    ``v`` ``(P, h)``, ``d`` ``(P,)``: the rows. ``start``: ``(alpha, slopes, beta)`` to begin from (any start is
    sound), e.g. the parent's. With ``stop_above``, the ascent ends once every pair's bound is above it. The ascent
    runs in single precision; the bounds returned come from one double-precision pass with the best multipliers.
    """
    active = ((lower >= 0) | (phases > 0)) & ~(phases < 0)
    unstable = (lower < 0) & (upper > 0) & (phases == 0)
    convex = unstable & (v > 0)
    concave = unstable & (v < 0)
    if start is None:
        start = initial(lower, upper, W, v)
    cols = np.flatnonzero(concave.any(axis=0))      # the neurons with slopes in some pair
    layer = (W, b, W[cols])
    pairs = dict(lo=lo, hi=hi, width=hi - lo, base=lo @ W[cols].T + b[cols], v=v, d=d, active=active, convex=convex,
                 concave=concave[:, cols], v_concave=np.where(concave[:, cols], v[:, cols], 0.0),
                 split_sign=np.where(phases > 0, -1.0, np.where(phases < 0, 1.0, 0.0)))   # split term: sign beta z
    parameters = (np.clip(start[0], 0.0, 1.0) * convex, np.where(concave[:, cols, None], start[1][:, cols], 0.0),
                  np.maximum(start[2], 0.0) * (pairs["split_sign"] != 0))
    candidates = np.full(lo.shape, np.nan)
    if steps > 1:
        single = [np.asarray(t, dtype=np.float32) if t.dtype == np.float64 else t for t in layer]
        parameters, candidates = _ascent(single, {k: t.astype(np.float32) if t.dtype == np.float64 else t
                                                  for k, t in pairs.items()},
                                         [p.astype(np.float32) for p in parameters], int(steps), stop_above)
    alpha, slopes, beta = (p.astype(np.float64) for p in parameters)
    bound, A, c, _ = _evaluate(layer, pairs, alpha, slopes, beta)
    candidates = np.where(candidates == 1, lo, np.where(candidates == 0, hi, np.nan))   # in double precision
    full = np.zeros(lower.shape + (W.shape[1],))
    full[:, cols] = slopes
    return HullBounds(bound, A, c, alpha, full, beta, candidates)


def _evaluate(layer, t, alpha, slopes, beta):
    """Return ``(bound, A, c, state)`` of the multipliers (``slopes`` over the neurons of ``layer``'s third
    entry, the rows of ``W`` with slopes): ``A . x + c`` is the lower function, ``state`` what the supergradients
    need (the minimising corner, which gap attains ``c(a)``, and the positive part of ``w - a``). ``t``: the
    pairs' terms (`hull_rows`)."""
    W, b, W_slopes = layer
    a_lo = np.einsum("phn,pn->ph", slopes, t["lo"])
    gap_a = -(a_lo + np.einsum("phn,pn->ph", np.minimum(slopes, 0.0), t["width"]))     # max_box(-a . x)
    rest_up = np.maximum(W_slopes[None] - slopes, 0.0)
    gap_b = t["base"] - a_lo + np.einsum("phn,pn->ph", rest_up, t["width"])            # max_box((w - a) . x) + b
    coefficient = np.where(t["active"], t["v"], 0.0) + t["v"] * alpha + t["split_sign"] * beta   # of z_j
    A = coefficient @ W + np.einsum("ph,phn->pn", t["v_concave"], slopes)
    c = t["d"] + coefficient @ b + (t["v_concave"] * np.maximum(gap_a, gap_b)).sum(axis=1)
    x = np.where(A > 0, t["lo"], t["hi"])
    bound = (A * x).sum(axis=1) + c
    return bound, A, c, (x, gap_a >= gap_b, rest_up)


def _ascent(layer, t, parameters, steps, stop_above):
    """Return the multipliers ``(alpha, slopes, beta)`` with the best bound of each pair after projected Adam
    (pairs whose bound is above ``stop_above`` leave the ascent), and per pair the first corner the ascent met
    where the row's value is <= 0 (NaN if none): candidate counterexamples."""
    W, b, W_slopes = layer
    alpha, slopes, beta = parameters
    best = np.full(t["lo"].shape[0], -np.inf, dtype=t["lo"].dtype)
    kept = [p.copy() for p in parameters]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in parameters]
    # steps in each multiplier's own units, so that scaling the network scales nothing but the numbers
    rate_slopes = HULL_LR_A * np.abs(W_slopes).mean(axis=1)[None, :, None]
    b1, b2 = ADAM_BETAS
    going = np.arange(t["lo"].shape[0])     # the pairs still in the ascent
    history = []
    candidates = np.full(t["lo"].shape, np.nan)  # per pair, the first corner met where the row is <= 0 (1: lo, 0: hi)
    for step in range(1, steps + 1):
        bound, _, _, (x, first_gap, rest_up) = _evaluate(layer, t, alpha, slopes, beta)
        improved = bound > best[going]
        best[going[improved]] = bound[improved]
        for k, p in zip(kept, (alpha, slopes, beta)):
            k[going[improved]] = p[improved]
        if step == steps:
            break
        history.append(best[going].copy())
        if len(history) > PLATEAU_STEPS and np.all(history[-1] - history[-1 - PLATEAU_STEPS]
                                                   <= PLATEAU_GAIN * np.abs(history[-1])):
            break   # no pair's bound rose by more than PLATEAU_GAIN of itself in the last PLATEAU_STEPS steps
        if stop_above is not None:
            left = best[going] <= stop_above
            if not left.any():
                break
            if not left.all():
                going = going[left]
                t = {k: term[left] for k, term in t.items()}
                alpha, slopes, beta, x, first_gap, rest_up = (a[left] for a in (alpha, slopes, beta, x, first_gap,
                                                                                rest_up))
                moments = [[m[left] for m in pair] for pair in moments]
                history = [h[left] for h in history]
        z = x @ W.T + b
        crossed = (t["v"] * np.maximum(z, 0.0)).sum(axis=1) + t["d"] <= 0       # the row's own value at the corner
        if crossed.any():
            new = ~np.isfinite(candidates[going[crossed], 0])
            candidates[going[crossed][new]] = (x[crossed][new] == t["lo"][crossed][new])   # 1: lo, 0: hi
        # the corner attaining c(a) is lo + width * (a < 0) for the first gap, lo + width * (w - a > 0) else
        up = np.where(first_gap[:, :, None], slopes < 0, rest_up > 0)
        gradients = (t["v"] * z * t["convex"],
                     t["v_concave"][:, :, None] * ((x - t["lo"])[:, None, :] - t["width"][:, None, :] * up),
                     t["split_sign"] * z)
        rates = (HULL_LR, rate_slopes, HULL_LR_BETA * np.abs(t["v"]))
        for parameter, gradient, moment, rate in zip((alpha, slopes, beta), gradients, moments, rates):
            moment[0] *= b1
            moment[0] += (1 - b1) * gradient
            moment[1] *= b2
            moment[1] += (1 - b2) * gradient * gradient
            parameter += rate * (moment[0] / (1 - b1 ** step)) / (np.sqrt(moment[1] / (1 - b2 ** step)) + 1e-12)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        alpha *= t["convex"]
        slopes *= t["concave"][:, :, None]
        np.maximum(beta, 0.0, out=beta)
    return kept, candidates
