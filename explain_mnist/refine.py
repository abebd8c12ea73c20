"""Intermediate neuron bounds tightened by branch-and-bound: what makes deep nets verifiable.

The bounds of hidden layer k >= 1 are loose when the layers below are: every
unstable neuron below adds the slack of its triangle relaxation, and the slack
compounds with depth. On 256x6 mnistfc prop_5_0.03, alpha-CROWN leaves the last two
layers fully unstable (widths about 33 and 51 where sampled inputs span 1.8 and
0.09) and the margin bound at -122. Alpha-CROWN and the triangle LP share one
optimum, so only splitting tightens further.

For an unstable neuron ``i`` of layer ``k``, ``min s z_ki`` over the box (``s = +1`` for
its lower bound, ``-1`` for its upper bound) is a branch-and-bound problem on the
network cut after layer ``k``, whose one output is ``s (W_k[i] a_{k-1} + b_k[i])`` and
whose layers below keep their bounds: `bab.branch_and_bound` without counterexample
search, best first, at most `NODES_PER_BOUND` nodes. A node whose bound is > 0 closes
(the neuron is stable on it), so a search that closes every node proves the neuron
stable. At the end the smallest bound over the open and closed nodes is a proven bound
of ``s z_ki``: tighter than alpha-CROWN's wherever the splits paid.

Layers go in order, 1 to L-1 (layer 0's interval bounds are exact). Before a layer is
refined, alpha-CROWN re-bounds it and the layers above over the refined layers below
(`bounds.alpha_tighten`), with the margins, and refinement stops as soon as every margin
is proved. Within a layer, neurons go in order of the slack of their triangle
relaxation, ``u (-l) / (u - l)``, so that a time budget goes to the loosest first.

alpha-beta-CROWN refines mnistfc's intermediate bounds the same way, with a MIP solve
per neuron on 32 processes. Measured here on one core (256 nodes per bound):
256x4 prop_9_0.03 (open after 300 s of branch-and-bound from alpha-CROWN's root) has
its margin bound go from -3.6 to +0.08 at the root after layers 1 and 2, in 35 s;
256x6 prop_5_0.03 from -122 to +0.19 after layer 1, in 25 s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from explain_mnist import bab
from explain_mnist.bounds import Bounds, alpha_tighten, crown_bounds
from explain_mnist.network import Affine, Network

NODES_PER_BOUND = 200   # branch-and-bound nodes per neuron bound


@dataclass
class Refinement:
    """The result of `refine_bounds`: the tightened bounds and the work done."""

    bounds: Bounds
    searches: int         # neuron bounds searched by branch-and-bound
    nodes: int            # their nodes in all
    layers_refined: int   # hidden layers whose unstable neurons were all searched
    seconds: float


def _neuron_net(net: Network, k: int, i: int, sign: float) -> Network:
    """Return the network cut after hidden layer ``k`` whose one output is ``sign * z_ki`` (class 1 iff > 0)."""
    affine = net.hidden[k]
    row = affine.W[[i]].toarray() if sp.issparse(affine.W) else affine.W[[i]]
    return Network(net.layers[:2 * k] + [Affine(sign * row, np.array([sign * affine.b[i]]))],
                   decision="sigmoid", input_shape=net.input_shape)


def neuron_bound(net: Network, lo: np.ndarray, hi: np.ndarray, lower: list, upper: list, k: int, i: int,
                 sign: float, node_limit: int = NODES_PER_BOUND, deadline: float | None = None) -> tuple[float, int]:
    """Return ``(a proven lower bound of sign * z_ki over the box, nodes used)``, by branch-and-bound.

    ``lower`` and ``upper`` are per-layer bounds, ``(n_j,)`` each, valid on the box for layers below ``k``.
    """
    sub = _neuron_net(net, k, i, sign)
    prior = ([l[None] for l in lower[:k]], [u[None] for u in upper[:k]])
    root = crown_bounds(sub, lo, hi, C=sub.spec_matrix(1), prior=prior)
    root_bound = float(root.spec_lower[0, 0])
    if root_bound > bab.PROOF_TOLERANCE or not np.isfinite(root_bound):
        return root_bound if np.isfinite(root_bound) else -np.inf, 0
    outcome = bab.branch_and_bound(sub, lo, hi, 1, deadline=deadline, node_limit=node_limit, root=root,
                                   counterexamples=False)
    if outcome.stopped_by == "interrupt":   # Ctrl-C stops the whole refinement, not one neuron's search
        raise KeyboardInterrupt
    return max(outcome.lower_bound, root_bound), outcome.nodes


def refine_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: Bounds, C: np.ndarray | None = None,
                  time_budget: float | None = None, node_limit: int = NODES_PER_BOUND,
                  tolerance: float = bab.PROOF_TOLERANCE) -> Refinement:
    """Return the `Refinement` of ``bounds`` (of ONE box): hidden layers 1..L-1 tightened neuron by neuron.

    With ``C``, the margins ``C @ logits`` are re-bounded by alpha-CROWN after every layer and
    refinement stops once they are all proved (above ``tolerance``). After ``time_budget`` seconds the neurons left
    keep their bounds.
    """
    start = time.perf_counter()
    deadline = None if time_budget is None else start + time_budget
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    current = bounds
    searches = nodes = layers_done = 0
    for k in range(1, len(net.hidden)):
        if _out_of_time(deadline) or _proved(current, tolerance):
            break
        lower = [l[0].copy() for l in current.lower]
        upper = [u[0].copy() for u in current.upper]
        unstable = np.flatnonzero((lower[k] < 0) & (upper[k] > 0))
        slack = upper[k][unstable] * -lower[k][unstable] / (upper[k][unstable] - lower[k][unstable])
        for i in unstable[np.argsort(-slack)]:
            for sign in (1.0, -1.0):
                if _out_of_time(deadline) or lower[k][i] >= 0 or upper[k][i] <= 0:
                    break
                value, used = neuron_bound(net, lo, hi, lower, upper, k, i, sign, node_limit, deadline)
                searches += 1
                nodes += used
                if not np.isfinite(value):   # nothing proved (an empty search region would be a bug upstream)
                    continue
                if sign > 0:
                    lower[k][i] = max(lower[k][i], value)
                else:
                    upper[k][i] = min(upper[k][i], -value)
        upper[k] = np.maximum(upper[k], lower[k])   # round-off only: both are sound bounds of the same value
        tightened = crown_bounds(net, lo, hi, C=C, prior=([l[None] for l in lower], [u[None] for u in upper]))
        layers_done += not _out_of_time(deadline)
        current = alpha_tighten(net, lo, hi, bounds=tightened, C=C,
                                time_budget=None if deadline is None else max(deadline - time.perf_counter(), 0.0))
    seconds = time.perf_counter() - start
    if current is not bounds:
        current = replace(current, method="refined", seconds=seconds)
    return Refinement(current, searches, nodes, layers_done, seconds)


def _out_of_time(deadline: float | None) -> bool:
    """Return True iff a deadline is set and has passed."""
    return deadline is not None and time.perf_counter() >= deadline


def _proved(bounds: Bounds, tolerance: float) -> bool:
    """Return True iff ``bounds`` prove every margin (spec lower bounds above ``tolerance``)."""
    return bounds.spec_lower is not None and bool(bounds.spec_lower.min() > tolerance)
