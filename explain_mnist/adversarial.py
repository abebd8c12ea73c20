"""Minimal adversarial examples: the smallest change of an image that makes a network predict a target label.

Problem. For a `Network` f, an image ``x0`` predicted ``c``, a target ``t != c`` and a norm:

    minimise ||x - x0||  over x in [0, 1]^n  with every row of  C_t f(x) >= MARGIN,

``C_t = net.spec_matrix(t)``: for argmax nets the rows ``logit_t - logit_j`` (j != t), so t beats
every other logit by `MARGIN`; for a sigmoid net (one logit) the only target is ``1 - c`` and the
row is ``+logit`` (t = 1) or ``-logit`` (t = 0). The distance (the objective): ``l0`` the number
of changed pixels (each may take any value in [0, 1]), ``l1`` the sum of ``|x - x0|``, ``l2`` the
sum of squares, ``linf`` the largest change. Pixels move both ways.

Per target, cheapest first:

1. An upper bound (`attack_target`), every candidate checked by a forward pass. l0: greedy pixel
   changes, each step the single change (a pixel to 0 or to 1) that raises the target's worst
   margin ``h(x) = min_j (C_t f(x))_j`` most (one batch of 2n forward passes), then changed
   pixels put back while the image stays adversarial. l1, l2, linf: boundary steps as in FAB
   (Croce and Hein 2020), from x0 and a few random starts near it (`_boundary_search`): with g
   the gradient of h at the current point x, both x and x0 are projected onto the boundary
   ``h(x) + g (y - x) = MARGIN`` within [0, 1]^n (`closest_steps`: the smallest step by the norm
   with ``g . delta >= need`` in a box, exactly: l2 ``clip(s g)`` and linf ``clip(s sign g)``
   with s on the segment of a sorted list of breakpoints where the need is met, l1 pixels in
   order of ``|g|`` moved to their bound), the search moves to a mix of the two, and steps
   back towards x0 after each adversarial point; the best is shrunk along the segment from x0.
   If that finds nothing, `attack.find_counterexample` on the target network (below) in l-inf
   boxes of growing radius around x0 (`FALLBACK_RADII`) gives a start.
2. The region every better image lies in (`region_bounds`): ``R = {x in [0,1]^n : ||x - x0|| <=
   d'}``, with ``d' = d (1 - REGION_SHRINK)`` for the attack's distance d (l0: ``d - 1``
   pixels; only strictly better images matter). Bounds of every neuron over R: for a linear
   function ``a x + c`` its exact minimum over R (`region_minimum`: box corners for linf; a
   fractional knapsack for l1; for l2 ``delta = clip(-s a)``, the KKT point, with ``s`` where
   ``|delta|^2`` reaches ``d'`` (piecewise quadratic in ``s`` between the pixels' breakpoints:
   sorted, solved on one segment); the ``d - 1`` best single-pixel moves for l0). Layer 0 gets
   that; deeper layers and the target's margins get CROWN's linear bounds (computed with R's
   bounds of the layers below) minimised over R. Most ReLUs become stable and get no binary. If a margin's
   upper bound over R is below `MARGIN`, nothing in R reaches the target: the attack's image
   is optimal (method ``attack+bounds``).
3. The exact answer, with the attack's distance as the cut-off:
   - every norm: the MIP (`mip.min_distance`: the encoding with R's bounds over R's box, in
     displacement columns, the distance as objective, the target rows). The solver is chosen
     per norm by `solvers.choose_solver` (l2 is a MIQP, which HiGHS cannot solve: SCIP or
     CPLEX if the model fits its Community Edition; a convex QP once no binary is left, which
     HiGHS solves too) and reported.
   - linf, with ``linf_method="bisection"`` (and with "auto", the default, where the MIP would not
     go to CPLEX): first bisection on the radius with the `Verifier` on the target network ``N_t``
     until the gap is `LINF_BISECTION_GAP`, then the MIP in the window left (``lower <= r``, which
     drops the row of every pixel side that cannot move past ``lower``); slower than the MIP alone
     where CPLEX takes the MIP anyway (see `LINF_METHODS`). The Verifier decides "every x in the box keeps
     class c", a conjunction of margins that one point breaks; "some x makes t win" is a
     conjunction at one point. So ``N_t`` has one output
     ``h(x) - MARGIN``, class 1 iff it is > 0 (a sigmoid net; `target_network`): f's layers
     with ``C_t`` composed into the last map, then a tree of ReLU layers taking minima of
     pairs, ``min(a, b) = a - relu(a - b)``, ``a`` carried through as ``relu(a + M) - M`` with
     ``M`` above CROWN's lower bound of ``-a`` over [0, 1]^n (that neuron is always active, so
     exact). ``verify(box_r, 0)`` on ``N_t`` is ``robust`` iff no x of the box has t winning by
     `MARGIN`: r is a lower bound; ``not_robust`` returns such an x: an upper bound.
4. A point leaves here only if the forward pass gives it class t; the scripts re-check it with
   the model's own framework (`models.reference_classes`).

Statuses: ``optimal`` (``bound`` equals ``objective``: exactly for l0, within a relative
`OPTIMAL_RELATIVE` otherwise), ``infeasible`` (no image of [0, 1]^n has t winning by `MARGIN`:
proved), ``time_limit`` (the best verified image and the proven lower bound), ``error``.
With ``targets="any"`` the targets go in the order of their attack distances, each with the
best distance so far as its cut-off; the one result is the overall minimum.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from explain_mnist import attack
from explain_mnist.bounds import Bounds, crown_bounds
from explain_mnist.encoding import NORMS
from explain_mnist.network import Affine, Network, ReLU

MARGIN = 1e-3                 # the logit margin the target must win by
OPTIMAL_RELATIVE = 1e-6       # bound within this (relative) of the objective: optimal (l0: exactly)
REGION_SHRINK = OPTIMAL_RELATIVE / 2   # l1, l2, linf: the region holds the images closer than this share below the best
MIP_GAP = 1e-7                # relative gap the MIP solvers stop at (absolute gap 0)
LINF_BISECTION_GAP = 1e-2     # l-inf bisection: with the verifier until (upper - lower) <= this * upper, then the MIP
# l-inf after the attack: the MIP over the region at once, or bisection with the verifier first (measured on
# multiclass test image 0, CPLEX: the MIP alone 0.2-1.3 s per target; bisection 0.4-17 s, its MIP 0.1-0.5 s);
# "auto": bisection first only where the MIP would not go to CPLEX (twoclass test images 18 and 51: 6.2 s and
# 9.6 s with SCIP, 0.9 s and 2.5 s bisecting first, its trimmed MIP then fitting the Community Edition)
LINF_METHODS = ("auto", "mip", "bisection")
FAB_ITERATIONS = 100          # boundary steps of the attack (FAB, Croce and Hein 2020), from each start
FAB_RESTARTS = 3              # random starts besides x0 ...
FAB_START_NOISE = 0.1         # ... uniform within this of x0 (clipped to [0, 1])
FAB_ALPHA_MAX = 0.1           # FAB's largest weight of the step from x0
FAB_ETA = 1.05                # overshoot of each projection
FAB_BACK = 0.9                # after a point with class t: back towards x0 by this factor
ATTACK_SEED = 0
FALLBACK_RADII = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)   # l-inf boxes of the fallback attack, tried in turn
SHRINK_POINTS = 64            # points on the segment x0 -> best image tried at the end of the attack
TREE_SLACK = 1e-3             # the carried value's shift M is CROWN's bound plus this share of the bounds' size


@dataclass
class TargetResult:
    """The answer for one target (see the module docstring); ``verified`` is set by the model's own check."""

    target: int
    status: str
    objective: float | None = None
    bound: float | None = None
    adversarial: np.ndarray | None = None
    verified: bool = False
    model_prediction: int | None = None
    seconds: float = 0.0
    method: str = ""
    margin_reached: float | None = None   # min_j (C_t f(x))_j at the image, by the forward pass
    solver: str = ""
    message: str = ""
    stages: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- distances and margins

def distance(x: np.ndarray, x0: np.ndarray, norm: str) -> float:
    """Return the objective of ``x``: changed pixels (l0), sum |d| (l1), sum d^2 (l2) or max |d| (linf)."""
    d = np.asarray(x, dtype=np.float64) - x0
    return float({"l0": lambda: np.count_nonzero(d), "l1": lambda: np.abs(d).sum(), "l2": lambda: (d * d).sum(),
                  "linf": lambda: np.abs(d).max(initial=0.0)}[norm]())


def radius_of(objective: float, norm: str) -> float:
    """Return the per-pixel reach of an objective value: no pixel of a better image moves further."""
    return {"l0": 1.0, "l1": objective, "l2": float(np.sqrt(max(objective, 0.0))), "linf": objective}[norm]


def worst_margin(net: Network, X: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(h, row)``: the smallest row of ``C f(x)`` for each row of ``X`` and which row it is."""
    M = np.atleast_2d(net.forward(np.atleast_2d(X))) @ C.T
    row = np.argmin(M, axis=1)
    return M[np.arange(M.shape[0]), row], row


def is_adversarial(net: Network, x: np.ndarray, t: int) -> bool:
    """Return True iff the forward pass gives ``x`` the class ``t``."""
    return x is not None and int(net.predict(x)) == t


# ----------------------------------------------------------------------------- the attack

def closest_steps(G: np.ndarray, need: np.ndarray, dl: np.ndarray, dh: np.ndarray, norm: str) -> np.ndarray:
    """Return, row by row, the smallest ``delta`` in ``[dl, dh]`` (by ``norm``) with ``g . delta >= need``.

    ``G``, ``dl``, ``dh`` are ``(B, n)``, ``need`` ``(B,)``. Closed forms (module docstring); l0 moves
    the pixels of largest reach ``|g| cap`` fully. A row that no ``delta`` of the box satisfies gets
    the ``delta`` of the box that maximises ``g . delta``.
    """
    G, dl, dh = np.atleast_2d(G), np.atleast_2d(dl), np.atleast_2d(dh)
    need = np.atleast_1d(np.asarray(need, dtype=np.float64))
    cap = np.where(G > 0, dh, np.where(G < 0, -dl, 0.0))     # how far each pixel can move the way that raises g . delta
    direction = np.sign(G)
    out = direction * cap                                    # the box's maximiser of g . delta
    todo = np.flatnonzero((need > 0) & ((np.abs(G) * cap).sum(axis=1) > need))
    out[need <= 0] = 0.0
    if todo.size == 0:
        return out
    g, c, d, w, lo, hi = G[todo], cap[todo], direction[todo], need[todo], dl[todo], dh[todo]
    if norm in ("l1", "l0"):
        key = np.abs(g) if norm == "l1" else np.abs(g) * c
        order = np.argsort(-key, axis=1, kind="stable")
        gain = np.cumsum(np.take_along_axis(np.abs(g) * c, order, 1), axis=1)
        last = (gain < w[:, None]).sum(axis=1)                # the pixel that completes the need
        rank = np.argsort(order, axis=1, kind="stable")        # each pixel's place in the order
        take = np.where(rank < last[:, None], c, 0.0)
        rows = np.arange(todo.size)
        pixel = order[rows, last]
        before = np.where(last > 0, gain[rows, np.maximum(last - 1, 0)], 0.0)
        take[rows, pixel] = c[rows, pixel] if norm == "l0" else (w - before) / np.abs(g[rows, pixel])
        out[todo] = d * take
        return out
    # l2: delta = clip(s g), linf: clip(s sign g); g . delta(s) is piecewise linear in s, with a breakpoint
    # where each pixel reaches its bound: sort them and solve on the segment that reaches the need
    scale = g if norm == "l2" else d
    weight = np.abs(g * scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        breaks = np.where(weight > 0, c / np.abs(scale), np.inf)
    order = np.argsort(breaks, axis=1, kind="stable")
    b, wt = np.take_along_axis(breaks, order, 1), np.take_along_axis(weight, order, 1)
    finite_b = np.where(np.isfinite(b), b, 0.0)
    done = np.cumsum(wt * finite_b, axis=1)                              # the pixels at their bound by each break
    rest = wt.sum(axis=1, keepdims=True) - np.cumsum(wt, axis=1)         # the slope after each break
    value = done + finite_b * rest
    k = (value < w[:, None]).sum(axis=1)                                 # the segment that reaches the need
    rows = np.arange(todo.size)
    done_before = np.where(k > 0, done[rows, np.maximum(k - 1, 0)], 0.0)
    slope = np.where(k > 0, rest[rows, np.maximum(k - 1, 0)], wt.sum(axis=1))
    s = (w - done_before) / np.maximum(slope, 1e-300)
    out[todo] = np.clip(s[:, None] * scale, lo, hi)
    return out


def norm_of(D: np.ndarray, norm: str) -> np.ndarray:
    """Return the size of each row of ``D`` in the norm (l2: not squared)."""
    return {"l0": lambda: np.count_nonzero(D, axis=-1).astype(float), "l1": lambda: np.abs(D).sum(axis=-1),
            "l2": lambda: np.sqrt((D * D).sum(axis=-1)), "linf": lambda: np.abs(D).max(axis=-1)}[norm]()


def _greedy_l0(net: Network, x0: np.ndarray, C: np.ndarray, margin: float) -> np.ndarray | None:
    """Return an image with class t from greedy single-pixel changes (to 0 or 1), pruned; None if none found."""
    x = x0.copy()
    used = np.flatnonzero(np.asarray(abs(_dense(net.affines[0].W)).sum(axis=0)).ravel() > 0)
    changed = []
    h, _ = worst_margin(net, x, C)
    while h[0] < margin and len(changed) < used.size:
        candidates = np.repeat(x[None], 2 * used.size, axis=0)
        candidates[np.arange(used.size), used] = 0.0
        candidates[used.size + np.arange(used.size), used] = 1.0
        values, _ = worst_margin(net, candidates, C)
        values[np.isin(np.tile(used, 2), changed)] = -np.inf
        best = int(np.argmax(values))
        x = candidates[best]
        changed.append(int(used[best % used.size]))
        h = values[best:best + 1]
    if h[0] < margin:
        return None
    for p in sorted(changed, key=lambda p: abs(x[p] - x0[p])):   # put back what is not needed
        trial = x.copy()
        trial[p] = x0[p]
        if worst_margin(net, trial, C)[0][0] >= margin:
            x = trial
    return x


def _boundary_search(net: Network, x0: np.ndarray, C: np.ndarray, norm: str, margin: float,
                     starts: np.ndarray) -> np.ndarray | None:
    """Return the closest image with class t found by FAB-style steps from each start (module docstring).

    Each step projects both the current point x and ``x0`` onto the boundary ``h = margin``
    linearised at x (`closest_steps`), moves to ``(1 - a)(x + eta dx) + a (x0 + eta d0)`` with
    ``a = min(|dx| / (|dx| + |d0|), FAB_ALPHA_MAX)``, and after a point with class t steps back
    towards ``x0`` (``x0 + FAB_BACK (x - x0)``). The best image found is finally shrunk along
    the segment from ``x0``.
    """
    X = np.clip(np.atleast_2d(starts), 0.0, 1.0)
    best, best_d = None, np.inf

    def keep(points, values):
        nonlocal best, best_d
        good = np.flatnonzero(values >= margin)
        if good.size:
            d = norm_of(points[good] - x0, norm)
            i = int(np.argmin(d))
            if d[i] < best_d:
                best, best_d = points[good[i]].copy(), float(d[i])
    for _ in range(FAB_ITERATIONS):
        h, row = worst_margin(net, X, C)
        keep(X, h)
        G = attack.logit_vjp(net, X, C[row])
        dx = closest_steps(G, margin - h, -X, 1.0 - X, norm)
        d0 = closest_steps(G, margin - h + (G * (X - x0)).sum(axis=1), np.broadcast_to(-x0, X.shape),
                           np.broadcast_to(1.0 - x0, X.shape), norm)
        nx, n0 = norm_of(dx, norm), norm_of(d0, norm)
        a = np.minimum(nx / np.maximum(nx + n0, 1e-300), FAB_ALPHA_MAX)[:, None]
        X = np.clip((1 - a) * (X + FAB_ETA * dx) + a * (x0 + FAB_ETA * d0), 0.0, 1.0)
        h, _ = worst_margin(net, X, C)
        keep(X, h)
        back = h >= margin
        X[back] = x0 + FAB_BACK * (X[back] - x0)
    if best is None:
        return None
    s = np.linspace(0.0, 1.0, SHRINK_POINTS + 1)[1:]      # the shortest adversarial point of the segment x0 -> best
    segment = x0 + np.outer(s, best - x0)
    values, _ = worst_margin(net, segment, C)
    good = np.flatnonzero(values >= margin)
    return segment[good[0]].copy() if good.size else best


def _starts(x0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return the attack's starts: ``x0`` and `FAB_RESTARTS` random points near it."""
    noise = rng.uniform(-FAB_START_NOISE, FAB_START_NOISE, (FAB_RESTARTS, x0.size))
    return np.vstack([x0, np.clip(x0 + noise, 0.0, 1.0)])


def attack_target(net: Network, x0: np.ndarray, t: int, norm: str, margin: float = MARGIN,
                  target_net: Network | None = None) -> np.ndarray | None:
    """Return an image with class t (every row of ``C_t f(x) >= margin``, checked), small by ``norm``; or None."""
    C = net.spec_matrix(t)
    rng = np.random.default_rng(ATTACK_SEED)
    if norm == "l0":
        x = _greedy_l0(net, x0, C, margin)
    else:
        x = _boundary_search(net, x0, C, norm, margin, _starts(x0, rng))
        if x is None:                 # a targeted l-inf attack in growing boxes around x0 gives a start
            target = target_net or target_network(net, t, margin)
            for r in FALLBACK_RADII:
                found = attack.find_counterexample(target, np.clip(x0 - r, 0.0, 1.0), np.clip(x0 + r, 0.0, 1.0), 0)
                if found.found:
                    x = _boundary_search(net, x0, C, norm, margin, found.x[None])
                    break
    if x is None or worst_margin(net, x, C)[0][0] < margin or not is_adversarial(net, x, t):
        return None
    return x


# ----------------------------------------------------------------------------- the target network

def target_network(net: Network, t: int, margin: float = MARGIN) -> Network:
    """Return ``N_t``: one logit ``min_j (C_t f(x))_j - margin`` (class 1 iff t wins by more than ``margin``).

    See the module docstring: ``C_t`` composed into the last map, then a tree of pairwise minima.
    """
    C = net.spec_matrix(t)
    last = net.affines[-1]
    values = Affine(C @ last.dense_W(), C @ last.b - margin)
    lower = crown_bounds(net, np.zeros(net.n_inputs), np.ones(net.n_inputs), C=C).spec_lower[0] - margin
    layers = net.layers[:-1] + [values]
    while lower.size > 1:
        pairs, odd = lower.size // 2, lower.size % 2
        size = np.abs(lower).max()
        shift = np.maximum(-lower, 0.0) * (1 + TREE_SLACK) + TREE_SLACK * size    # a + shift >= 0 everywhere
        m, n_neurons = lower.size, 2 * pairs + odd
        P, p = np.zeros((n_neurons, m)), np.zeros(n_neurons)
        Q, q = np.zeros((pairs + odd, n_neurons)), np.zeros(pairs + odd)
        for i in range(pairs):       # neurons a + shift_a, a - b: min(a, b) = relu(a + shift_a) - shift_a - relu(a - b)
            a, b = 2 * i, 2 * i + 1
            P[2 * i, a], p[2 * i] = 1.0, shift[a]
            P[2 * i + 1, a], P[2 * i + 1, b] = 1.0, -1.0
            Q[i, 2 * i], Q[i, 2 * i + 1], q[i] = 1.0, -1.0, -shift[a]
        if odd:                      # the last value carried through
            P[-1, m - 1], p[-1] = 1.0, shift[m - 1]
            Q[-1, -1], q[-1] = 1.0, -shift[m - 1]
        layers += [Affine(P, p), ReLU(), Affine(Q, q)]
        lower = np.concatenate([np.minimum(lower[0:2 * pairs:2], lower[1:2 * pairs:2]), lower[2 * pairs:]])
    return Network(layers, "sigmoid", net.input_shape, f"{net.name} (target {t})", dict(net.meta))


# ----------------------------------------------------------------------------- bounds over the region

def region_box(x0: np.ndarray, norm: str, objective: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the box of the region ``{x in [0,1]^n : ||x - x0|| <= objective}``."""
    r = radius_of(objective, norm)
    return np.clip(x0 - r, 0.0, 1.0), np.clip(x0 + r, 0.0, 1.0)


def region_minimum(A: np.ndarray, c: np.ndarray, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, norm: str,
                   objective: float) -> np.ndarray:
    """Return a lower bound of ``A x + c`` (each row) over ``{x in [lo, hi] : ||x - x0|| <= objective}``.

    ``[lo, hi]`` contains ``x0``; the methods per norm are in the module docstring.
    """
    A = np.atleast_2d(A)
    dl, dh = lo - x0, hi - x0
    base = A @ x0 + c
    moves = np.minimum(A * dl, A * dh)                 # per pixel, the most a single move lowers a . delta
    box = base + moves.sum(axis=1)
    if norm == "linf" or not np.isfinite(objective):
        return box
    if norm == "l0":
        k = int(np.floor(objective + 1e-9))
        if k >= A.shape[1]:
            return box
        return np.maximum(box, base + np.sort(moves, axis=1)[:, :k].sum(axis=1) if k > 0 else base)
    if norm == "l1":
        weight = np.abs(A)
        cap = np.where(A > 0, -dl, dh)
        order = np.argsort(-weight, axis=1, kind="stable")
        w, k = np.take_along_axis(weight, order, 1), np.take_along_axis(cap, order, 1)
        before = np.cumsum(k, axis=1) - k
        take = np.clip(objective - before, 0.0, k)
        return np.maximum(box, base - (w * take).sum(axis=1))
    # l2: delta(s) = clip(-s a) is the minimiser for the multiplier 1 / (2 s) (KKT); |delta(s)|^2 grows with s,
    # piecewise quadratic between the pixels' breakpoints: the segment where it reaches rho^2 gives s exactly
    cap = np.where(A > 0, -dl, dh)
    weight = A * A
    with np.errstate(divide="ignore", invalid="ignore"):
        breaks = np.where(weight > 0, cap / np.abs(A), np.inf)
    order = np.argsort(breaks, axis=1, kind="stable")
    b, wt, k = (np.take_along_axis(v, order, 1) for v in (breaks, weight, cap))
    finite = np.isfinite(b)
    done = np.cumsum(np.where(finite, k * k, 0.0), axis=1)           # squares of the pixels at their bound
    rest = wt.sum(axis=1, keepdims=True) - np.cumsum(wt, axis=1)
    value = done + np.where(finite, b * b, 0.0) * rest
    seg = (value < objective).sum(axis=1)
    rows = np.arange(A.shape[0])
    done_before = np.where(seg > 0, done[rows, np.maximum(seg - 1, 0)], 0.0)
    slope = np.where(seg > 0, rest[rows, np.maximum(seg - 1, 0)], wt.sum(axis=1))
    s = np.sqrt(np.maximum(objective - done_before, 0.0) / np.maximum(slope, 1e-300))
    inside = seg >= finite.sum(axis=1)         # the box's minimising corner lies in the ball
    delta = np.clip(-s[:, None] * A, dl, dh)
    return np.where(inside, box, np.maximum(box, base + (A * delta).sum(axis=1)))


def region_bounds(net: Network, x0: np.ndarray, norm: str, objective: float, C: np.ndarray) -> Bounds:
    """Return bounds of every neuron, and of ``C f(x)`` both ways, over ``{x in [0,1]^n : ||x - x0|| <= objective}``.

    ``objective`` may be inf (the whole box). Layer 0 by `region_minimum`, deeper layers and
    the spec by CROWN's linear bounds minimised over the region (module docstring).
    """
    start = time.perf_counter()
    lo, hi = (np.zeros_like(x0), np.ones_like(x0)) if not np.isfinite(objective) else region_box(x0, norm, objective)

    def over_region(target: Network, rows: np.ndarray, lower: list, upper: list) -> np.ndarray:
        both = np.vstack([rows, -rows])
        prior = None if not lower else (lower, upper)
        cb = crown_bounds(target, lo, hi, C=both, prior=prior)
        found = region_minimum(cb.spec_lower_A[0], cb.spec_lower_c[0], x0, lo, hi, norm, objective)
        return np.maximum(found, cb.spec_lower[0])

    lower, upper = [], []
    for k, affine in enumerate(net.hidden):
        n_k = affine.n_out
        if k == 0:
            W0 = _dense(affine.W)
            both = region_minimum(np.vstack([W0, -W0]), np.concatenate([affine.b, -affine.b]), x0, lo, hi, norm,
                                  objective)
        else:
            cut = Network(net.layers[:2 * k + 1], "sigmoid" if n_k == 1 else "argmax", net.input_shape)
            both = over_region(cut, np.eye(n_k), lower, upper)
        lower.append(both[None, :n_k])
        upper.append(np.maximum(-both[None, n_k:], both[None, :n_k]))   # round-off only: both bound one value
    spec = over_region(net, C, lower, upper)
    m = C.shape[0]
    return Bounds(lower, upper, "region", time.perf_counter() - start, spec_lower=spec[None, :m],
                  spec_upper=-spec[None, m:])


def _dense(W):
    return W.toarray() if hasattr(W, "toarray") else np.asarray(W)


# ----------------------------------------------------------------------------- one target

@dataclass
class _Target:
    """The search for one target: the best verified image so far and the proven lower bound."""

    net: Network
    x0: np.ndarray
    t: int
    norm: str
    margin: float
    start: float
    deadline: float
    x: np.ndarray | None = None        # the best verified image of this target
    objective: float = np.inf
    cutoff: float = np.inf             # only images strictly closer than this matter (own best or another target's)
    lower: float = 0.0                 # proven: no image closer than this reaches the target
    stages: dict = field(default_factory=dict)
    solver: str = ""
    message: str = ""

    def offer(self, x: np.ndarray | None, source: str) -> bool:
        """Keep ``x`` if the forward pass gives it class t and it is closer than the best so far."""
        if x is None or not is_adversarial(self.net, x, self.t):
            return False
        d = distance(x, self.x0, self.norm)
        if d >= self.objective:
            return False
        self.x, self.objective, self.cutoff = x.copy(), d, min(self.cutoff, d)
        self.stages[f"{source}_objective"] = d
        return True

    def remaining(self) -> float | None:
        return None if not np.isfinite(self.deadline) else max(self.deadline - time.perf_counter(), 0.0)

    def region(self) -> float:
        """Return the objective bound of the region every image that beats the cut-off lies in (inf: none yet)."""
        if not np.isfinite(self.cutoff):
            return np.inf
        return self.cutoff - 1 if self.norm == "l0" else self.cutoff * (1 - REGION_SHRINK)

    def proved_below(self, value: float) -> None:
        """Record that no image closer than ``value`` reaches the target."""
        self.lower = max(self.lower, float(value))

    def region_empty(self, region: float) -> None:
        """Record that no image of the region (objective <= ``region``) reaches the target."""
        self.proved_below(region + 1 if self.norm == "l0" else region)


def _bisect_linf(q: _Target, solver: str, threads: int) -> None:
    """Bisect the l-inf radius between q.lower and q.objective with the Verifier on the target network."""
    from explain_mnist.verifier import Verifier

    started = time.perf_counter()
    verifier = Verifier(target_network(q.net, q.t, q.margin), solver=solver, threads=threads)
    steps = 0
    while q.objective - q.lower > LINF_BISECTION_GAP * q.objective:
        left = q.remaining()
        if left is not None and left <= 0:
            break
        r = 0.5 * (q.lower + q.objective)
        verdict = verifier.verify(np.clip(q.x0 - r, 0.0, 1.0), np.clip(q.x0 + r, 0.0, 1.0), 0, time_limit=left)
        steps += 1
        if verdict.interrupted:
            raise KeyboardInterrupt
        if verdict.verdict == "robust":
            q.proved_below(r)
        elif verdict.verdict != "not_robust" or not q.offer(verdict.counterexample, "bisection"):
            break
    q.stages.update(bisection_steps=steps, bisection_seconds=time.perf_counter() - started)


def _distance_problem(q: _Target, bounds: Bounds, region: float):
    """Return the `mip.DistanceModel` of q's problem over the region."""
    from explain_mnist.mip import distance_model

    lo, hi = (np.zeros_like(q.x0), np.ones_like(q.x0)) if not np.isfinite(region) else region_box(q.x0, q.norm,
                                                                                                   region)
    # the distance bounded by a row too for l1 and linf (HiGHS prunes with nothing else); for l0 that row slowed
    # both SCIP and HiGHS down (twoclass test image 18: 19.6 s against 8.5 s, and 5.8 s against 1.8 s)
    linear_limit = region if q.norm in ("l1", "linf") and np.isfinite(region) else None
    return distance_model(q.net, q.x0, lo, hi, bounds, q.norm, q.net.spec_matrix(q.t), q.margin, limit=linear_limit,
                          lower=q.lower if q.norm == "linf" and q.lower > 0 else None, active_columns=True)


def _bisection_first(q: _Target, solver: str, linf_method: str, bounds: Bounds, region: float) -> tuple:
    """Return (whether l-inf bisects first, the region's MIP if it was built to decide, else None). "auto" bisects
    first with --solver auto where the MIP would not go to an installed CPLEX: bisection's lower bound r drops the
    rows of every pixel side that cannot move past r, which can bring the model inside the Community Edition's
    limit."""
    from explain_mnist.solvers import is_installed
    if q.norm != "linf" or q.x is None or linf_method == "mip":
        return False, None
    if linf_method == "bisection":
        return True, None
    if solver != "auto" or not is_installed("cplex"):
        return False, None
    problem = _distance_problem(q, bounds, region)
    return problem.auto_solver()[0] != "cplex", problem


def _solve_mip(q: _Target, solver: str, threads: int, problem, region: float) -> str:
    """Run the MIP ``problem`` (a `mip.DistanceModel` over the region); return what it proved: "optimal",
    "none_better", "stopped" or "error"."""
    from explain_mnist.mip import solve_distance

    solve = solve_distance(problem, solver=solver, time_limit=q.remaining(), threads=threads,
                           cutoff=q.cutoff if np.isfinite(q.cutoff) else None, mip_gap=MIP_GAP, abs_gap=0.0)
    result = solve.result
    q.solver = f"{solve.solver} ({solve.reason})"
    q.stages.update(mip_seconds=result.seconds, mip_nodes=int(result.nodes or 0), mip_status=result.status,
                    mip_model=solve.model_size)
    if solve.x is not None and result.objective is not None and q.norm != "l0":
        # the solver's distance may sit below the image's by its feasibility tolerance: the image scaled
        # towards x0 to the solver's distance, if it keeps class t, makes the two agree
        scale = result.objective / max(distance(solve.x, q.x0, q.norm), 1e-300)
        scale = np.sqrt(scale) if q.norm == "l2" else scale
        if scale < 1:
            q.offer(q.x0 + scale * (solve.x - q.x0), "mip_scaled")
    if solve.x is not None and not q.offer(solve.x, "mip") and not is_adversarial(q.net, solve.x, q.t):
        q.message = f"the MIP's image (distance {result.objective:.6g}) is not class {q.t} by the forward pass"
        return "error"
    if result.status == "infeasible":
        q.region_empty(region)
        return "none_better"
    if result.best_bound is not None and result.status in ("optimal", "gap_limit", "time_limit", "node_limit",
                                                           "interrupted"):
        q.proved_below(min(result.best_bound, q.objective))
    if result.status == "interrupted":      # the solver caught Ctrl-C itself; what it found is kept
        raise KeyboardInterrupt
    if result.status in ("optimal", "gap_limit"):
        return "optimal"
    if result.status in ("time_limit", "node_limit"):
        return "stopped"
    q.message = f"{solve.solver}: {result.status} ({result.message})"
    return "error"


def _proved_optimal(q: _Target) -> bool:
    if q.x is None:
        return False
    if q.norm == "l0":
        return np.ceil(q.lower - 1e-9) >= q.objective
    return q.objective - q.lower <= OPTIMAL_RELATIVE * q.objective


def solve_target(net: Network, x0: np.ndarray, t: int, norm: str, margin: float = MARGIN, solver: str = "auto",
                 time_limit: float | None = None, threads: int = 1, start_x: np.ndarray | None = None,
                 cutoff: float = np.inf, linf_method: str = "auto") -> TargetResult:
    """Return the `TargetResult` of the smallest change of ``x0`` that makes ``net`` predict ``t`` (module docstring).

    ``start_x``: an image with class t already known (else `attack_target` runs); ``cutoff``: only
    images closer than this matter (another target's best, with ``targets="any"``): a target that
    cannot beat it comes back with ``method="cut off"`` and its bound. ``linf_method`` (a key of
    `LINF_METHODS`): how l-inf is solved after the attack.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; supported: {', '.join(NORMS)}")
    if linf_method not in LINF_METHODS:
        raise ValueError(f"unknown l-inf method {linf_method!r}; supported: {', '.join(LINF_METHODS)}")
    start = time.perf_counter()
    x0 = np.asarray(x0, dtype=np.float64)
    q = _Target(net, x0, t, norm, margin, start, np.inf if time_limit is None else start + time_limit,
                cutoff=cutoff)
    try:
        status, method = _search_target(q, start_x, solver, threads, linf_method)
    except KeyboardInterrupt:
        status, method = "interrupted", "interrupted (Ctrl-C)"
    margins = None if q.x is None else float(worst_margin(net, q.x, net.spec_matrix(t))[0][0])
    bound = None if status == "infeasible" or not np.isfinite(q.lower) else (
        float(np.ceil(q.lower - 1e-9)) if norm == "l0" else q.lower)
    return TargetResult(t, status, None if q.x is None else q.objective, bound, q.x, False,
                        None if q.x is None else int(net.predict(q.x)), time.perf_counter() - start, method, margins,
                        q.solver, q.message, q.stages)


def _search_target(q: _Target, start_x: np.ndarray | None, solver: str, threads: int,
                   linf_method: str) -> tuple[str, str]:
    """Run `solve_target`'s stages on ``q``; return ``(status, method)``."""
    net, x0, t, norm, margin = q.net, q.x0, q.t, q.norm, q.margin
    if start_x is None:
        start_x = attack_target(net, x0, t, norm, margin)
    q.offer(start_x, "attack")
    q.stages["attack_seconds"] = time.perf_counter() - q.start
    method, outcome = "attack", ""
    region = q.region()
    bounds = region_bounds(net, x0, norm, region, net.spec_matrix(t))
    q.stages.update(bounds_seconds=bounds.seconds, unstable=bounds.n_unstable())
    if np.any(bounds.spec_upper < margin):        # no image of the region reaches the target
        q.region_empty(region)
        method, outcome = "attack+bounds" if np.isfinite(region) else "bounds", "none_better"
    else:
        bisect, problem = _bisection_first(q, solver, linf_method, bounds, region)
        if bisect:
            _bisect_linf(q, solver, threads)
            method, problem = "bisection", None      # a new lower bound (and region): a new model
            region = q.region()
            if q.objective - q.lower > OPTIMAL_RELATIVE * q.objective and (q.remaining() is None
                                                                            or q.remaining() > 0):
                bounds = region_bounds(net, x0, norm, region, net.spec_matrix(t))
                q.stages["unstable_after_bisection"] = bounds.n_unstable()
        if not _proved_optimal(q) and (q.remaining() is None or q.remaining() > 0):
            if problem is None:
                problem = _distance_problem(q, bounds, region)
            outcome = _solve_mip(q, solver, threads, problem, region)
            method = "mip" if method == "attack" else method + "+mip"
    if outcome == "none_better" and not np.isfinite(region):
        status = "infeasible"                      # the whole box holds no image of class t
        q.lower = np.inf
    elif _proved_optimal(q):
        status = "optimal"
    elif outcome == "none_better":
        status, method = "optimal", "cut off"      # nothing here beats the cut-off (another target's image)
    elif outcome == "optimal":                     # the solver's tolerance, not the issue's: say so
        status = "error"
        q.message = (f"{q.solver.split(' ')[0]} stopped at its own tolerance: its bound {q.lower:.10g} is not within "
                     f"{OPTIMAL_RELATIVE:g} (relative) of the image's distance {q.objective:.10g}")
    elif outcome == "error":
        status = "error"
    else:
        status = "time_limit"
    return status, method


# ----------------------------------------------------------------------------- all targets

def other_classes(net: Network, c: int) -> list[int]:
    """Return the targets of an image of class c: every other class."""
    return [k for k in range(net.n_classes) if k != c]


def min_adversarial(net: Network, x0: np.ndarray, norm: str, targets="all", margin: float = MARGIN,
                    solver: str = "auto", time_limit: float | None = None, threads: int = 1,
                    progress=None, linf_method: str = "auto") -> list[TargetResult]:
    """Return one `TargetResult` per target (``targets``: "all", "any" or a list of classes other than x0's).

    With "any" the list holds one result: the overall minimum, its ``stages["targets"]`` listing
    what each target came to (module docstring). ``time_limit`` is per target; ``progress``, if
    given, is called with each target's result as it is found. A Ctrl-C stops the search: the target
    under way comes back "interrupted" with its best image and bound so far, later targets are left out.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    c = int(net.predict(x0))
    chosen = other_classes(net, c) if isinstance(targets, str) else [int(t) for t in targets]
    if c in chosen:
        raise ValueError(f"target {c} is the predicted class")
    if targets != "any":
        results = []
        try:
            for t in chosen:
                results.append(solve_target(net, x0, t, norm, margin, solver, time_limit, threads,
                                            linf_method=linf_method))
                if progress is not None:
                    progress(results[-1])
                if results[-1].status == "interrupted":
                    break
        except KeyboardInterrupt:        # between two targets (solve_target keeps its own): the next one is cut
            if len(results) < len(chosen) and not (results and results[-1].status == "interrupted"):
                results.append(_interrupted(chosen[len(results)]))
        return results
    start = time.perf_counter()
    try:
        attacks = {t: attack_target(net, x0, t, norm, margin) for t in chosen}
    except KeyboardInterrupt:
        return [TargetResult(None, "interrupted", seconds=time.perf_counter() - start, method="interrupted (Ctrl-C)")]
    order = sorted(chosen, key=lambda t: np.inf if attacks[t] is None else distance(attacks[t], x0, norm))
    best, per_target = None, []

    def record(t: int, result: TargetResult) -> None:
        per_target.append(dict(target=t, status=result.status, objective=result.objective, bound=result.bound,
                               method=result.method, seconds=result.seconds))

    try:
        for t in order:
            cutoff = np.inf if best is None else best.objective
            result = solve_target(net, x0, t, norm, margin, solver, time_limit, threads, start_x=attacks[t],
                                  cutoff=cutoff, linf_method=linf_method)
            record(t, result)
            if result.adversarial is not None and (best is None or result.objective < best.objective):
                best = result
            if progress is not None:
                progress(result)
            if result.status == "interrupted":
                break
    except KeyboardInterrupt:            # between two targets: the next one is cut
        if len(per_target) < len(order) and not (per_target and per_target[-1]["status"] == "interrupted"):
            t = order[len(per_target)]
            record(t, _interrupted(t))
    statuses = {r["status"] for r in per_target}
    interrupted = "interrupted" in statuses
    if best is None:
        status = "infeasible" if statuses == {"infeasible"} else ("interrupted" if interrupted else
                                                                  "error" if "error" in statuses else "time_limit")
        best = TargetResult(None, status, seconds=0.0, method="")   # no target reached: no winning target
    bound = min((r["bound"] if r["bound"] is not None else np.inf) for r in per_target)
    exact = all(r["status"] in ("optimal", "infeasible") for r in per_target)
    if best.adversarial is not None:
        best.bound = None if interrupted or not np.isfinite(bound) else bound   # targets left out bound nothing
        best.status = ("optimal" if exact else "interrupted" if interrupted else
                       "error" if "error" in statuses else "time_limit")
    best.seconds = time.perf_counter() - start
    best.stages = dict(best.stages, targets=per_target)
    return [best]


def _interrupted(t: int) -> TargetResult:
    """Return the result of a target that a Ctrl-C cut before its search found anything."""
    return TargetResult(t, "interrupted", method="interrupted (Ctrl-C)")


# ----------------------------------------------------------------------------- what the scripts run

def parse_targets(words: list[str], net: Network, c: int) -> tuple[str | list[int], list[str]]:
    """Return ``(targets, notes)`` for ``--target all|any|T [T ...]``; UserError for an unknown label.

    A label equal to the predicted class is skipped with a note; if nothing is left that is an error.
    """
    from explain_mnist.errors import UserError

    words = [str(w) for w in words]
    if words in (["all"], ["any"]):
        return words[0], []
    if any(w in ("all", "any") for w in words):
        raise UserError(f"--target {' '.join(words)}: 'all' and 'any' stand alone; or give class labels")
    labels = []
    for w in words:
        try:
            k = int(w)
        except ValueError:
            k = None
        if k is None or not 0 <= k < net.n_classes:
            raise UserError(f"--target {w}: unknown target label; the model's classes are 0..{net.n_classes - 1}")
        if k not in labels:
            labels.append(k)
    notes = [f"note: target {c} is the predicted class of the image; skipped"] if c in labels else []
    labels = [k for k in labels if k != c]
    if not labels:
        raise UserError(f"--target {' '.join(words)}: the only target given is the predicted class {c}; "
                        f"give another label, all or any")
    return labels, notes


def run_min_adversarial(args, norm: str) -> dict:
    """Return the JSON result of min_adv_card.py / min_adv_sum.py for parsed arguments (issue 12's keys).

    Every image is re-classified by the model's own framework: ``verified`` says it gives the target.
    On a terminal a progress bar counts the targets; ``interrupted`` says a Ctrl-C cut the search short.
    """
    from tqdm import tqdm

    from explain_mnist.cli import load_input, load_model
    from explain_mnist.data import log
    from explain_mnist.errors import UserError
    from explain_mnist.models import class_label, class_name, reference_classes
    from explain_mnist.solvers import require
    from explain_mnist.threads import blas_threads

    if args.solver != "auto":
        require(args.solver)                # before any work: the error says what to install or use
    image = load_input(args)
    net = load_model(args)
    image.announce()
    x0 = image.x
    c = int(net.predict(x0))
    targets, notes = parse_targets(args.target, net, c)
    for note in notes:
        log(note)
    names = net.meta.get("class_names")
    count = len(other_classes(net, c)) if isinstance(targets, str) else len(targets)
    bar = tqdm(total=count, desc=f"min {norm}", unit="target", disable=None, leave=False)

    def progress(r: TargetResult) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{class_label(r.target, names)}: {r.status}", refresh=True)

    try:
        results = min_adversarial(net, x0, norm, targets, solver=args.solver, time_limit=args.time_limit,
                                  threads=args.threads, progress=progress)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        bar.close()
    found = [r for r in results if r.adversarial is not None]
    if found:
        own = reference_classes(net, np.array([r.adversarial for r in found]))
        for r, k in zip(found, own):
            r.model_prediction, r.verified = int(k), int(k) == r.target
            if not r.verified:
                r.status = "error"
                r.message = (r.message + "; " if r.message else "") + (
                    f"the model's own framework classifies the image as {int(k)}, not {r.target}")
    used = sorted({r.solver.split(" ")[0] for r in results if r.solver})
    rows = []
    for r in results:
        row = to_row(r)
        row["target_name"] = class_name(r.target, names)
        rows.append(row)
    return {"model": args.model, "input": {"index": image.index, "image_file": args.image},
            "label": image.label, "predicted": c, "predicted_name": class_name(c, names), "class_names": names,
            "norm": norm, "solver": ", ".join(used) if used else "none (decided without a MIP)",
            "solver_option": args.solver, "margin": MARGIN, "targets": targets if isinstance(targets, str) else "list",
            "results": rows, "image": x0, "time_limit": args.time_limit, "blas_threads": blas_threads(),
            "interrupted": any(r.status == "interrupted" for r in results)}


def to_row(r: TargetResult) -> dict:
    """Return a `TargetResult` as a JSON row (rounded seconds, plain floats)."""
    from explain_mnist.results import to_jsonable
    row = to_jsonable(r)
    row["seconds"] = round(float(r.seconds), 4)
    return row


def save_outputs(args, result: dict) -> None:
    """Write the scripts' JSON result and (unless --no-figure, or interrupted) its figure (`cli.save_outputs`)."""
    from explain_mnist.cli import save_outputs as write_outputs

    write_outputs(args, result, None if result["interrupted"] else "adversarial_figure")


def report(args, result: dict) -> int:
    """Save the scripts' outputs, print one line per target; return the exit code (130 after a Ctrl-C)."""
    from explain_mnist.cli import EXIT_INTERRUPTED, summary_stream

    save_outputs(args, result)
    out = summary_stream(args)
    print(f"solver: {result['solver']}; the target wins by a logit margin of {result['margin']:g}", file=out)
    for row in result["results"]:
        print(describe(row, result["norm"], result["class_names"]), file=out)
    if result["interrupted"]:
        written = f"; partial result written to {args.json}" if args.json and args.json != "-" else ""
        print(f"INTERRUPTED after {result['wall_seconds']:.1f} s: targets not reached are left out{written}",
              file=out)
        return EXIT_INTERRUPTED
    print(f"{result['wall_seconds']:.1f} s in all", file=out)
    return 0


OBJECTIVE_WORDS = {"l0": "changed pixels", "l1": "sum |d|", "l2": "sum d^2", "linf": "max |d|"}


def describe(row: dict, norm: str, names) -> str:
    """Return one line about a result row for the screen."""
    from explain_mnist.models import class_label

    target = "any target" if row["target"] is None else class_label(row["target"], names)
    if row["status"] == "infeasible":
        return (f"{target}: INFEASIBLE (no image in [0, 1]^784 gets it; proved) by {row['method']}, "
                f"{row['seconds']:.2f} s")
    value = "-" if row["objective"] is None else (f"{row['objective']:.0f}" if norm == "l0"
                                                  else f"{row['objective']:.6g}")
    bound = "-" if row["bound"] is None else (f"{row['bound']:.0f}" if norm == "l0" else f"{row['bound']:.6g}")
    state = {"optimal": "OPTIMAL (proved)", "time_limit": f"TIME LIMIT (proven lower bound {bound})",
             "interrupted": f"INTERRUPTED (best found so far; proven lower bound {bound})",
             "error": "ERROR"}[row["status"]]
    checked = "" if row["adversarial"] is None else (", re-checked by the model" if row["verified"]
                                                     else ", NOT confirmed by the model")
    return (f"{target}: {OBJECTIVE_WORDS[norm]} {value}, {state}; by {row['method']}, {row['seconds']:.2f} s"
            f"{checked}" + (f" ({row['message']})" if row["message"] else ""))
