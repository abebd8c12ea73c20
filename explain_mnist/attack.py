"""Counterexample search in an input box: verified candidates, many at a time.

Problem. Given a `Network`, a box ``[lo, hi]`` and a class ``c``, find ``x`` with
``lo <= x <= hi`` whose predicted class is not ``c``. With ``C = net.spec_matrix(c)``
(``m`` rows) the margins are ``M(x) = C @ logits(x)``; the class is kept only where
every margin is positive, so the search minimises margins. A candidate is accepted
only when ``net.predict(x) != c`` (computed from the same forward pass) and its
smallest margin is ``<= -margin`` (``margin`` >= 0 asks for slack); an exact tie
that the decision rule still resolves to ``c`` is therefore not returned.

Gradients. On the linear region of ``x`` the network is
``logits = W_L D_{L-1} W_{L-1} ... D_1 W_1 x + const`` with ``D_k = diag(z_k > 0)``
(the derivative 0 is taken at a kink). For a cotangent ``v`` on the logits the
vector-Jacobian product is the backward pass ``v <- (v W_k) * mask_{k-1}``, from the
last affine map down to the first, batched over candidates (`logit_vjp`). With the
``m`` rows of ``C`` as cotangents it gives every margin's gradient,
``(B, m, n_in)`` (`margin_gradients`); the descent itself only needs one row per
candidate, so it never forms that array.

Candidates, in stages; each kind of candidate below is one batch through
`Network.forward`, and the search stops as soon as a batch holds an accepted
candidate (the most violating one of that batch is returned):

1. direct points: the caller's ``seeds`` (earlier counterexamples) clipped into the
   box, then the box centre, then, for a caller-supplied linear lower bound
   ``M_i(x) >= A_i @ x + a_i`` (CROWN back-substitution gives one), the corner that
   minimises each row: ``x_j = lo_j`` where ``A_ij > 0``, ``hi_j`` where ``A_ij < 0``;
2. gradient corners: the corner minimising the linearisation of each margin row
   (same rule, with the gradient in place of ``A_i``), taken at the centre, then at
   the clipped seeds, then at a few random points (one batch each);
3. projected signed-gradient descent: starts are the lowest candidate seen so far,
   the first `SEED_STARTS` clipped seeds and ``restarts`` uniform random points; from
   each start one candidate descends each margin row (a targeted attack per competing
   class), or only the ``targets_per_start`` rows that are lowest at the start:
   ``x <- clip(x - alpha_t * (hi - lo) * sign(grad M_i(x)), lo, hi)`` with
   ``alpha_t`` decaying geometrically from `ALPHA_START` to `ALPHA_END` over
   ``steps`` steps. Every iterate is checked by the forward pass that also gives its
   next gradient.

The random generator defaults to a fixed seed, so a call is reproducible.
`attack_many` runs the same stages on many boxes at once (candidates carry the index
of their box; a box leaves the batch once it has a counterexample).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from explain_mnist.network import Network, times_W

ALPHA_START = 0.5   # first step, as a fraction of each coordinate's box width
ALPHA_END = 0.02    # last step
RANDOM_CORNER_POINTS = 2  # random points per box whose gradients give corners in stage 2
SEED_STARTS = 8     # the first seeds (callers list the most useful first) that also start the descent
DEFAULT_SEED = 0


@dataclass
class AttackResult:
    """Outcome of a counterexample search in one box.

    ``x`` is the counterexample (inside the box, ``net.predict(x) != c``) or None;
    ``predicted`` its class; ``margins`` the values ``spec_matrix(c) @ logits`` at ``x``,
    or at the lowest candidate seen when none was found (``best_x``, always set);
    ``stage`` names the stage that found ``x`` ("seed", "centre", "linear", "corner",
    "pgd") or is "" when none did.
    """

    x: np.ndarray | None
    predicted: int | None
    margins: np.ndarray
    best_x: np.ndarray
    candidates_tried: int
    seconds: float
    stage: str = ""

    @property
    def found(self) -> bool:
        return self.x is not None

    @property
    def min_margin(self) -> float:
        """Return the smallest margin at ``x`` (or at ``best_x``)."""
        return float(np.min(self.margins))


# ----------------------------------------------------------------------------- gradients

def _backward(net: Network, pre: list, V: np.ndarray) -> np.ndarray:
    """Return the input cotangent of the logit cotangent ``V`` (``(B, n_out)`` or ``(B, r, n_out)``)."""
    affines = net.affines
    for k in range(len(affines) - 1, 0, -1):
        V = times_W(V, affines[k].W)
        mask = pre[k - 1] > 0
        V = V * (mask if V.ndim == 2 else mask[:, None, :])
    return times_W(V, affines[0].W)


def logit_vjp(net: Network, X: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Return the gradients ``d (V[b] @ logits(X[b])) / d X[b]``, shape ``(B, n_in)``."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    _, pre = net.forward(X, return_preactivations=True)
    return _backward(net, pre, np.broadcast_to(np.asarray(V, dtype=np.float64), (X.shape[0], net.n_outputs)))


def margin_gradients(net: Network, X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Return ``G`` with ``G[b, i] = d (C[i] @ logits(X[b])) / d X[b]``, shape ``(B, m, n_in)``.

    ``C`` is ``(m, n_out)`` (one specification for all rows of ``X``) or ``(B, m, n_out)``.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    C = np.asarray(C, dtype=np.float64)
    _, pre = net.forward(X, return_preactivations=True)
    V = np.broadcast_to(C, (X.shape[0],) + C.shape[-2:])
    return _backward(net, pre, V)


def minimising_corner(A: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Return the box corners minimising ``A[..., i, :] @ x`` row by row (centre where ``A`` is 0).

    ``lo`` and ``hi`` broadcast against ``A`` with the row axis removed (``(..., n_in)``).
    """
    lo, hi = lo[..., None, :], hi[..., None, :]
    corner = np.where(A > 0, lo, hi)
    flat = A == 0
    if flat.any():
        corner = np.where(flat, (lo + hi) / 2.0, corner)
    return corner


# ----------------------------------------------------------------------------- the search

def _lowest_per_box(owner: np.ndarray, key: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (boxes, candidate indices): for each box, its eligible candidate with the lowest key."""
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return idx, idx
    idx = idx[np.lexsort((key[idx], owner[idx]))]
    boxes, first = np.unique(owner[idx], return_index=True)
    return boxes, idx[first]


class _Search:
    """Bookkeeping of a search over P boxes: best candidates, counterexamples, counts."""

    def __init__(self, net: Network, lo: np.ndarray, hi: np.ndarray, classes: np.ndarray, margin: float,
                 start: float):
        self.net, self.lo, self.hi, self.classes, self.margin, self.start = net, lo, hi, classes, margin, start
        self.C = np.stack([net.spec_matrix(int(c)) for c in classes])          # (P, m, n_out)
        P = lo.shape[0]
        self.solved = np.zeros(P, dtype=bool)
        self.x = [None] * P
        self.predicted = [None] * P
        self.stage = [""] * P
        self.best_key = np.full(P, np.inf)
        self.best_x = (lo + hi) / 2.0
        self.best_margins = np.full((P, self.C.shape[1]), np.nan)
        self.tried = np.zeros(P, dtype=np.int64)
        self.seconds = np.zeros(P)

    def active(self) -> np.ndarray:
        return np.flatnonzero(~self.solved)

    def done(self) -> bool:
        return bool(self.solved.all())

    def evaluate(self, X: np.ndarray, owner: np.ndarray, stage: str) -> tuple[list, np.ndarray]:
        """Run one forward pass over candidates ``X`` of boxes ``owner``; record; return (pre-activations, margins)."""
        logits, pre = self.net.forward(X, return_preactivations=True)
        M = np.einsum("nj,nmj->nm", logits, self.C[owner])
        key = M.min(axis=1)
        self.tried += np.bincount(owner, minlength=self.tried.size)
        boxes, idx = _lowest_per_box(owner, key, np.ones(owner.size, dtype=bool))
        better = key[idx] < self.best_key[boxes]
        boxes, idx = boxes[better], idx[better]
        self.best_key[boxes], self.best_x[boxes], self.best_margins[boxes] = key[idx], X[idx], M[idx]
        predicted = self.net.classify_logits(logits)
        accepted = (predicted != self.classes[owner]) & (key <= -self.margin)
        boxes, idx = _lowest_per_box(owner, key, accepted)
        now = time.perf_counter() - self.start
        for p, i in zip(boxes, idx):
            self.solved[p] = True
            self.x[p], self.predicted[p], self.stage[p] = X[i].copy(), int(predicted[i]), stage
            self.best_x[p], self.best_margins[p], self.best_key[p] = X[i], M[i], key[i]
            self.seconds[p] = now
        return pre, M

    def results(self) -> list[AttackResult]:
        now = time.perf_counter() - self.start
        return [AttackResult(x=self.x[p], predicted=self.predicted[p], margins=self.best_margins[p].copy(),
                             best_x=self.best_x[p].copy(), candidates_tried=int(self.tried[p]),
                             seconds=float(self.seconds[p] if self.solved[p] else now), stage=self.stage[p])
                for p in range(self.lo.shape[0])]


def _direct_points(search: _Search, seeds: np.ndarray | None, linear_lower) -> None:
    """Stage 1: clipped seeds, box centres, and minimisers of the caller's linear lower bounds."""
    boxes = search.active()
    lo, hi = search.lo[boxes], search.hi[boxes]
    if seeds is not None and seeds.shape[0]:
        X = np.clip(seeds[None, :, :], lo[:, None, :], hi[:, None, :])
        search.evaluate(X.reshape(-1, X.shape[-1]), np.repeat(boxes, seeds.shape[0]), "seed")
        boxes = search.active()
        if boxes.size == 0:
            return
        lo, hi = search.lo[boxes], search.hi[boxes]
    search.evaluate((lo + hi) / 2.0, boxes, "centre")
    if linear_lower is None:
        return
    boxes = search.active()
    if boxes.size:
        A = linear_lower[0][boxes]                                        # (P', m, n_in)
        X = minimising_corner(A, search.lo[boxes], search.hi[boxes])
        search.evaluate(X.reshape(-1, X.shape[-1]), np.repeat(boxes, A.shape[1]), "linear")


def _uniform_points(lo: np.ndarray, hi: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``k`` uniform random points in each box, shape ``(P, k, n_in)`` (clipped against rounding)."""
    U = lo[:, None, :] + rng.random((lo.shape[0], k, lo.shape[1])) * (hi - lo)[:, None, :]
    return np.clip(U, lo[:, None, :], hi[:, None, :])


def _gradient_corners(search: _Search, seeds: np.ndarray | None, rng: np.random.Generator) -> None:
    """Stage 2: the corner minimising each margin's linearisation at centres, then seeds, then random points."""
    groups = ["centre", "seeds", "random"]
    for group in groups:
        boxes = search.active()
        if boxes.size == 0:
            return
        lo, hi = search.lo[boxes], search.hi[boxes]
        if group == "centre":
            P = ((lo + hi) / 2.0)[:, None, :]
        elif group == "seeds" and seeds is not None and seeds.shape[0]:
            P = np.clip(seeds[None, :, :], lo[:, None, :], hi[:, None, :])
        elif group == "random" and RANDOM_CORNER_POINTS:
            P = _uniform_points(lo, hi, RANDOM_CORNER_POINTS, rng)
        else:
            continue
        owner = np.repeat(boxes, P.shape[1])                               # P: (P', k, n_in)
        G = margin_gradients(search.net, P.reshape(-1, P.shape[-1]), search.C[owner])   # (P'k, m, n_in)
        X = minimising_corner(G, search.lo[owner], search.hi[owner])
        search.evaluate(X.reshape(-1, X.shape[-1]), np.repeat(owner, G.shape[1]), "corner")


def _descent(search: _Search, seeds: np.ndarray | None, restarts: int, steps: int, targets_per_start: int | None,
             rng: np.random.Generator) -> None:
    """Stage 3: projected signed-gradient descent on the margin rows of every start."""
    boxes = search.active()
    if boxes.size == 0 or steps <= 0:
        return
    lo, hi = search.lo[boxes], search.hi[boxes]
    starts = [search.best_x[boxes][:, None, :]]
    if seeds is not None and seeds.shape[0]:
        starts.append(np.clip(seeds[None, :SEED_STARTS, :], lo[:, None, :], hi[:, None, :]))
    if restarts > 0:
        starts.append(_uniform_points(lo, hi, restarts, rng))
    S = np.concatenate(starts, axis=1)                                    # (P', k, n_in)
    X = S.reshape(-1, S.shape[-1])
    owner = np.repeat(boxes, S.shape[1])
    pre, M = search.evaluate(X, owner, "pgd")
    keep = ~search.solved[owner]
    if not keep.any():
        return
    X, owner, M, pre = X[keep], owner[keep], M[keep], [z[keep] for z in pre]
    m = M.shape[1]
    rows = m if targets_per_start is None else max(1, min(int(targets_per_start), m))
    if rows < m:
        target = np.argsort(M, axis=1, kind="stable")[:, :rows].ravel()
    else:
        target = np.tile(np.arange(m), X.shape[0])
    X, owner = np.repeat(X, rows, axis=0), np.repeat(owner, rows)
    pre = [np.repeat(z, rows, axis=0) for z in pre]
    lo_c, hi_c = search.lo[owner], search.hi[owner]
    width = hi_c - lo_c
    alphas = ALPHA_START * (ALPHA_END / ALPHA_START) ** (np.arange(steps) / max(steps - 1, 1))
    for alpha in alphas:
        grad = _backward(search.net, pre, search.C[owner, target])
        X = np.clip(X - alpha * width * np.sign(grad), lo_c, hi_c)
        pre, _ = search.evaluate(X, owner, "pgd")
        if search.done():
            return
        keep = ~search.solved[owner]
        if not keep.all():
            X, owner, target = X[keep], owner[keep], target[keep]
            lo_c, hi_c, width, pre = lo_c[keep], hi_c[keep], width[keep], [z[keep] for z in pre]


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(DEFAULT_SEED if rng is None else rng)


def _check_boxes(net: Network, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    lo = np.atleast_2d(np.asarray(lo, dtype=np.float64))
    hi = np.atleast_2d(np.asarray(hi, dtype=np.float64))
    lo, hi = np.broadcast_arrays(lo, hi)
    if lo.shape[1] != net.n_inputs:
        raise ValueError(f"box has {lo.shape[1]} coordinates, the network expects {net.n_inputs}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("box bounds must be finite")
    if np.any(lo > hi):
        raise ValueError("empty box: some lower bound exceeds its upper bound")
    return np.ascontiguousarray(lo), np.ascontiguousarray(hi)


def _check_seeds(net: Network, seeds) -> np.ndarray | None:
    if seeds is None:
        return None
    seeds = np.atleast_2d(np.asarray(seeds, dtype=np.float64))
    if seeds.size == 0:
        return None
    if seeds.shape[1] != net.n_inputs:
        raise ValueError(f"seeds have {seeds.shape[1]} coordinates, the network expects {net.n_inputs}")
    seeds = seeds[np.all(np.isfinite(seeds), axis=1)]
    return seeds if seeds.shape[0] else None


def attack_many(net: Network, lo: np.ndarray, hi: np.ndarray, classes, seeds=None, linear_lower=None,
                restarts: int = 4, steps: int = 30, rng=None, margin: float = 0.0,
                targets_per_start: int | None = None) -> list[AttackResult]:
    """Return one `AttackResult` per box ``[lo[p], hi[p]]`` (``(P, n_in)``) for class ``classes[p]``.

    ``seeds`` (``(k, n_in)``) are shared by all boxes; ``linear_lower`` is
    ``(A (P, m, n_in), a (P, m))``. Each result's ``seconds`` is the time from the
    start of the call until its box was decided (or the whole call).
    """
    start = time.perf_counter()
    lo, hi = _check_boxes(net, lo, hi)
    classes = np.broadcast_to(np.asarray(classes, dtype=np.int64), (lo.shape[0],)).copy()
    if margin < 0:
        raise ValueError("margin must be >= 0")
    seeds = _check_seeds(net, seeds)
    search = _Search(net, lo, hi, classes, float(margin), start)
    if linear_lower is not None:
        A = np.asarray(linear_lower[0], dtype=np.float64)
        A = np.broadcast_to(A, (lo.shape[0],) + A.shape[-2:])
        if A.shape[1:] != (search.C.shape[1], net.n_inputs):
            expected = (search.C.shape[1], net.n_inputs)
            raise ValueError(f"linear lower bound has shape {A.shape[1:]}, expected {expected}")
        linear_lower = (A, linear_lower[1])
    generator = _as_rng(rng)
    _direct_points(search, seeds, linear_lower)
    _gradient_corners(search, seeds, generator)
    _descent(search, seeds, restarts, steps, targets_per_start, generator)
    return search.results()


def find_counterexample(net: Network, lo: np.ndarray, hi: np.ndarray, c: int, seeds=None, linear_lower=None,
                        restarts: int = 4, steps: int = 30, rng=None, margin: float = 0.0,
                        targets_per_start: int | None = None) -> AttackResult:
    """Return an `AttackResult` whose ``x`` is in ``[lo, hi]`` with ``net.predict(x) != c``, or ``x=None``.

    ``seeds``: earlier counterexamples ``(k, n_in)``, clipped into the box and used as
    starts; ``linear_lower``: ``(A (m, n_in), a (m,))`` with ``spec_matrix(c) @ logits(x)
    >= A @ x + a`` on the box; ``rng``: a Generator or seed (default: a fixed seed);
    ``margin``: accept only candidates whose smallest margin is ``<= -margin``;
    ``restarts``, ``steps``, ``targets_per_start``: the descent's budget (module docstring).
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if lo.ndim != 1 or hi.ndim != 1:
        raise ValueError("find_counterexample takes one box (lo and hi of shape (n_in,)); use attack_many for several")
    if linear_lower is not None:
        linear_lower = (np.asarray(linear_lower[0])[None], np.asarray(linear_lower[1])[None])
    return attack_many(net, lo[None], hi[None], [c], seeds=seeds, linear_lower=linear_lower, restarts=restarts,
                       steps=steps, rng=rng, margin=margin, targets_per_start=targets_per_start)[0]
