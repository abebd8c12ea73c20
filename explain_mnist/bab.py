"""Branch-and-bound over ReLU phases: decide "no input in the box is classified other than c".

A node is an assignment of phases to some hidden neurons (+1 active, -1 inactive,
0 free); its region is the part of the box where every fixed neuron has its phase.
The margins ``C f(x)`` (``C = net.spec_matrix(c)``; all > 0 iff class c) are
bounded over many nodes at once by CROWN with the nodes' phases fixed
(`bounds.crown_bounds`, batched). Per node and margin row:

- a row whose lower bound is > 0 is proved for the whole node, and stays proved in
  its children (their regions are subsets);
- a node with every row proved, or whose phases contradict its bounds, is closed;
- the box corner minimising each open row's linear lower bound is a candidate
  counterexample, checked by the forward pass;
- a node in which no free neuron is unstable is a leaf: the network is affine on
  its region, a polytope, so each open row's exact minimum is one LP
  (`leaf_minimum`); its minimiser, re-checked by the forward pass, is a
  counterexample if the minimum is <= 0, else the node is closed;
- otherwise the node splits on the unstable neuron with the largest score
  ``max(-lam, 0) * u * (-l) / (u - l)``: ``lam`` is the neuron's coefficient in the
  back-substituted lower bound of the node's worst row, so the score is how much
  the upper line of its triangle relaxation lowers that bound (the neurons whose
  output pushes the margin down), ties broken by ``|lam| * (u - l)``.

Nodes are taken best-first (lowest bound first), in batches; the smallest lower
bound over the open nodes is a proven lower bound of the smallest margin over the
box. Answers: ``robust``, ``not_robust`` (with x), or ``unknown`` at the node
budget or deadline.
"""
from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from explain_mnist.bounds import Bounds, crown_bounds, spec_coefficients
from explain_mnist.network import Network

BATCH_NODES = 32
LEAF_LP_TOLERANCE = 1e-9


@dataclass
class BabOutcome:
    """The result of `branch_and_bound`: status, counterexample, proven lower bound, work done."""

    status: str
    x: np.ndarray | None
    lower_bound: float
    nodes: int
    seconds: float
    open_nodes: int = 0


@dataclass(order=True)
class _Node:
    bound: float
    order: int
    phases: list = None
    open_rows: np.ndarray = None


def _stack(nodes: list, k: int) -> np.ndarray:
    return np.stack([node.phases[k] for node in nodes])


def leaf_minimum(net: Network, lo: np.ndarray, hi: np.ndarray, phases: list, row: np.ndarray):
    """Return ``(minimum, x)`` of ``row @ logits`` over the box part where every hidden neuron has its phase.

    ``phases`` must fix or settle every neuron (``+1`` / ``-1``); the network is affine
    there, so this is one LP. Returns ``(inf, None)`` if that region is empty.
    """
    n = net.n_inputs
    A = np.eye(n)
    a = np.zeros(n)
    rows_ub, rhs_ub = [], []
    for affine, phase in zip(net.hidden, phases):
        Z_A = affine.W @ A
        Z_A = Z_A.toarray() if hasattr(Z_A, "toarray") else np.asarray(Z_A)
        z_a = affine.W @ a + affine.b
        active = phase > 0
        rows_ub.append(np.vstack([-Z_A[active], Z_A[~active]]))
        rhs_ub.append(np.concatenate([z_a[active], -z_a[~active]]))
        A = Z_A * active[:, None]
        a = z_a * active
    last = net.affines[-1]
    objective = row @ (last.W @ A if not hasattr(last.W, "toarray") else np.asarray((last.W @ A)))
    constant = float(row @ (last.W @ a + last.b))
    solved = linprog(objective, A_ub=np.vstack(rows_ub), b_ub=np.concatenate(rhs_ub),
                     bounds=np.column_stack([lo, hi]), method="highs")
    if solved.status == 2:
        return np.inf, None
    if solved.status != 0:
        return -np.inf, None
    return float(solved.fun + constant), np.clip(solved.x, lo, hi)


def _split_choice(lower: list, upper: list, lam: list, phases: list):
    """Return ``(layer, neuron)`` of the free unstable neuron with the best score, or None (a leaf).

    Arguments are one node's per-layer lower and upper bounds, coefficients and phases.
    """
    best, choice = -1.0, None
    for k, (l, u, coefficient, phase) in enumerate(zip(lower, upper, lam, phases)):
        free = (phase == 0) & (l < 0) & (u > 0)
        if not free.any():
            continue
        width = np.where(free, u - l, 1.0)
        score = np.maximum(-coefficient, 0.0) * u * (-l) / width + 1e-6 * np.abs(coefficient) * width
        score = np.where(free, score, -1.0)
        j = int(np.argmax(score))
        if score[j] > best:
            best, choice = float(score[j]), (k, j)
    return choice


def branch_and_bound(net: Network, lo: np.ndarray, hi: np.ndarray, c: int, deadline: float | None = None,
                     node_limit: int = 200_000, seeds=None, root: Bounds | None = None,
                     batch: int = BATCH_NODES) -> BabOutcome:
    """Return the `BabOutcome` of deciding whether every input in ``[lo, hi]`` keeps class ``c``."""
    start = time.perf_counter()
    C = net.spec_matrix(c)
    m = C.shape[0]
    counter = itertools.count()
    sizes = [a.n_out for a in net.hidden]
    heap = [_Node(-np.inf, next(counter), [np.zeros(n, dtype=np.int8) for n in sizes], np.ones(m, dtype=bool))]
    nodes = 0
    done_lower = np.inf  # the smallest margin bound that closed a node (> 0)

    def outcome(status, x=None):
        open_bound = min((node.bound for node in heap), default=np.inf)
        return BabOutcome(status, x, float(min(open_bound, done_lower)), nodes, time.perf_counter() - start,
                          len(heap))

    while heap:
        if nodes >= node_limit or (deadline is not None and time.perf_counter() > deadline):
            return outcome("unknown")
        taken = [heapq.heappop(heap) for _ in range(min(batch, len(heap)))]
        nodes += len(taken)
        phases = [_stack(taken, k) for k in range(len(sizes))]
        bounds = crown_bounds(net, lo, hi, phases=phases, C=C)
        lower = np.where(np.stack([node.open_rows for node in taken]), bounds.spec_lower, np.inf)
        open_rows = lower <= 0
        alive = ~bounds.infeasible & open_rows.any(axis=1)
        closed = ~alive & ~bounds.infeasible
        done_lower = min(done_lower, float(lower[closed].min(initial=np.inf)))

        idx = np.flatnonzero(alive)
        if idx.size:
            corners = np.where(bounds.spec_lower_A[idx] > 0, lo, hi)  # (n, m, n_in)
            flat = corners[open_rows[idx]]
            hits = np.flatnonzero(net.predict(flat) != c)
            if hits.size:
                return outcome("not_robust", flat[hits[0]])
            worst = np.argmin(lower[idx], axis=1)
            lam = spec_coefficients(net, bounds, C[worst], phases, boxes=idx)
        for pos, i in enumerate(idx):
            node_phases = [p[i] for p in phases]
            node_bound = float(lower[i].min())
            choice = _split_choice([l[i] for l in bounds.lower], [u[i] for u in bounds.upper],
                                   [coefficient[pos] for coefficient in lam], node_phases)
            if choice is None:
                settled = [np.where(p != 0, p, np.where(bounds.lower[k][i] >= 0, 1, -1)).astype(np.int8)
                           for k, p in enumerate(node_phases)]
                for r in np.flatnonzero(open_rows[i]):
                    value, x = leaf_minimum(net, lo, hi, settled, C[r])
                    if value > LEAF_LP_TOLERANCE:
                        continue
                    if x is not None and net.predict(x) != c:
                        return outcome("not_robust", x)
                    heapq.heappush(heap, _Node(value, next(counter), settled, open_rows[i].copy()))
                    return outcome("unknown")  # a margin of about 0 (a tie) that no point verifiably flips
                continue
            k, j = choice
            for phase in (1, -1):
                child = [p.copy() for p in node_phases]
                child[k][j] = phase
                heapq.heappush(heap, _Node(node_bound, next(counter), child, open_rows[i].copy()))
    return outcome("robust")
