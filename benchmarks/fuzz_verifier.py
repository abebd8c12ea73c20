"""Randomized soundness suite for the verifier: random nets, boxes and settings against an independent reference.

    python benchmarks/fuzz_verifier.py --id 1234                 # re-run one case, verbosely
    python benchmarks/fuzz_verifier.py --cases 2000 [--start 0] [--time-limit 10] [--update-results]
    python benchmarks/fuzz_verifier.py --report                  # re-render the RESULTS.md section from the JSON

Cases. `case(id)` draws everything from ``numpy.random.default_rng(id)``, so every case re-runs from its id:
1-4 hidden layers of width 2-40 on 2-40 inputs (most cases small, so that the reference is fast), a few with
50-784 inputs and small hidden layers; Gaussian, sparse (some stored as scipy.sparse), heavy-tailed or integer
weights; duplicated neurons (a row copied, or times a power of two) and dead or constant neurons (zero weights);
boxes from a single point (lo == hi) to width 1e6, some inputs fixed; argmax with 2-10 outputs or a single
sigmoid logit; the whole net (every layer's output, so the logits exactly) or only the first layer multiplied by
a power of two in 2^-48 .. 2^20; and for some cases the class's output bias shifted so that the true smallest
margin over the box lies within 1e-10 .. 1e-2 (times the margin's spread over the box) of zero, either sign
(placed by the reference without its MILP, so that a case never depends on the machine's speed; where that
misses the minimum, the margin lies further below).
Each case runs one `Verifier` setting (`SETTINGS`): the default, the MIP forced (``node_limit=1``: the
branch-and-bound budget is spent at once and the MIP decides what the bounds and the attack left open, given the
time limit the verifier needs to try it, `call_limit`) with auto, HiGHS, SCIP or CPLEX (CPLEX only on small nets;
its Community Edition's refusal counts as skipped), node LPs, one joint tree, no refinement, interval bounds at
the root.

Reference (`reference`), independent of the package's bounds, attack, branch-and-bound, encoding and solver
backends: it reads only the network's affine weights and its decision rule, as data. The margins are ``C f(x)``
with ``C``'s rows ``e_c - e_j`` (argmax) or ``+-1`` (sigmoid), written out here from the documented rule. With
the inputs as ``x = lo + (hi - lo) u``, ``u`` in [0, 1] on the free inputs, every neuron's pre-activation is
an affine function of ``u`` and of the outputs of the unstable neurons before it (stable ones composed away); its
bounds come from our own interval arithmetic (widened by a relative 1e-9) and, from the second hidden layer on,
from LPs over the triangle relaxation of the layers below (widened by 1e-6 of the interval). Every row of an LP
or MILP is scaled to a largest coefficient of 1 and every unstable neuron's output to its own upper bound, so
the solvers' absolute tolerances apply in units of each row's own variation: the reference is as accurate on a
net times 2^-48 (or with only its first layer scaled) as on the net itself. For each margin row, it tries

- random points and box corners, signed-gradient descents from the best of them, and a descent over phase
  patterns from their ends: the LP of the point's own pattern (a polyhedron in ``u`` on which the margin is
  affine; its vertex projected onto the rows active there, which the solver holds only to 1e-7), then the LPs
  of neighbouring patterns (a neuron at 0 there flipped) while one is better; then
- enumeration of the unstable neurons' phases when there are few (one scipy ``linprog`` per pattern and row), or
  our own big-M MILP (``scipy.optimize.milp``, relative gap 0, `REF_TIME_LIMIT` shared by the rows) whose
  minimiser is polished in the same way; rows whose bound cannot beat the best point found are skipped.

The result is a point ``x*`` of the box and its smallest margin evaluated **exactly** (`fractions.Fraction` on the
float64 weights): ``m* = min_i (C f(x*))_i`` is a true value, so ``m*`` >= the true minimum; ``optimal`` says the
enumeration or every MILP finished (``m*`` is then the minimum up to the solvers' accuracy, measured at about
1e-13 of the margin's spread over the box plus a few unit roundoffs of ``S``, `tie_tolerance`). ``S`` is the size
of the terms of the margins' evaluation at ``x*`` (absolute values forward, `term_scale`): the scale of any
floating-point evaluation's rounding.

Checks of each verifier call (`check`); every failure is shown by a concrete point evaluated exactly:

- ``robust`` is **wrong** if ``m* <= 0`` (ties count as a change of class). Flagged with it: whether ``|m*|``
  is within rounding (1e-12 S) and whether it is within the tolerance the verdict states (a MIP's proof). A robust
  answer with ``0 < m* <=`` `tie_tolerance` is a **tie**: the reference cannot tell, not counted wrong;
- ``not_robust``: the counterexample must lie in ``[lo, hi]`` and its exact smallest margin must be <= 0,
  else an **invalid counterexample** (flagged if its margin is within rounding, a float tie). A valid one when
  ``m* > 0`` (or well below an ``optimal`` ``m*``) is a **reference miss**: a failure of this suite;
- every finite ``lower_bound`` (``unknown``'s best proof, and robust's) must not exceed ``m* + 1e-12 S``, else a
  **bad bound**: a lower bound that is not one (1e-12 S is 4,500 unit roundoffs; sound bounds measured here
  exceed ``m*`` by at most 2e-16 S);
- any exception is a **crash** (its traceback summary is kept); CPLEX's size refusal is **skipped**;
- ``unknown`` answers are counted; a call on a net under 50 hidden neurons is **slow** if it takes over 10 s (the
  issue asks for none) or over 70% of a shorter time limit (branch-and-bound used up its 75% share).

Writes benchmarks/fuzz_verifier.json (``--json``) and, with ``--update-results``, the section "fuzz_verifier" of
benchmarks/RESULTS.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import machine_line, update_section  # noqa: E402  (first: one BLAS thread)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from fractions import Fraction  # noqa: E402
from itertools import product  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from scipy.optimize import Bounds as VarBounds, LinearConstraint, linprog, milp  # noqa: E402

from explain_mnist.errors import UserError  # noqa: E402
from explain_mnist.network import Affine, Network, ReLU  # noqa: E402
from explain_mnist.results import read_json, write_json  # noqa: E402
from explain_mnist import verifier as verifier_module  # noqa: E402
from explain_mnist.verifier import Verifier  # noqa: E402

JSON = Path(__file__).resolve().parent / "fuzz_verifier.json"

# Verifier keyword arguments per setting, and how often a case draws it
SETTINGS = {
    "default": {},
    "mip_auto": dict(node_limit=1),
    "mip_highs": dict(node_limit=1, solver="highs"),
    "mip_scip": dict(node_limit=1, solver="scip"),
    "mip_cplex": dict(node_limit=1, solver="cplex"),
    "node_lp": dict(node_bound="lp"),
    "joint": dict(rows_apart=False),
    "no_refine": dict(refine=False),
    "interval": dict(bound_method="interval"),
}
SETTING_WEIGHTS = {"default": 4, "mip_auto": 1, "mip_highs": 1, "mip_scip": 1, "mip_cplex": 1, "node_lp": 1,
                   "joint": 1, "no_refine": 1, "interval": 1}
CPLEX_MAX_NEURONS = 120     # mip_cplex only on nets this small (the Community Edition takes 1000 columns/rows)

TIME_LIMIT = 10.0           # per verifier call
SLOW_SECONDS = 10.0         # the issue: no case over 10 s on nets under SLOW_NEURONS hidden neurons
SLOW_NEURONS = 50
SLOW_SHARE = 0.7            # ... or over this share of a shorter time limit (branch-and-bound gets 75% of it)
ROUNDING = 1e-12            # relative to the margin's term size S: a lower bound's slack (4,500 unit roundoffs)
TIE_SPREAD, TIE_SCALE = 1e-12, 1e-14   # the reference's accuracy: of the margin's spread over the box, and of S
REF_TIME_LIMIT = 20.0       # for the reference's MILPs, per case
ENUMERATE_MAX_LPS = 96      # enumerate phase patterns when patterns x rows is at most this
SAMPLES = 256               # random points and corners the reference tries first, ...
DESCENT_STARTS, DESCENT_STEPS = 8, 40   # ... then descents from the best of them
PROBLEMS = ("wrong", "invalid_counterexample", "bad_bound", "crash")


class Case(NamedTuple):
    """One fuzz case: ``net.name`` is its shape, ``net.meta`` how it was drawn; ``settings`` names `SETTINGS`."""

    net: Network
    lo: np.ndarray
    hi: np.ndarray
    c: int
    settings: str


# ---------------------------------------------------------------------------------------------------------------
# the generators


def _weights(rng, kind: str, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(W, b)`` of one layer drawn by ``kind``: gaussian, sparse, heavy or integer."""
    if kind == "integer":
        return rng.integers(-3, 4, (n_out, n_in)).astype(float), rng.integers(-3, 4, n_out).astype(float)
    if kind == "heavy":
        W = np.clip(rng.standard_t(rng.uniform(1.0, 3.0), (n_out, n_in)), -1e6, 1e6) / np.sqrt(n_in)
        return W, np.clip(rng.standard_t(2.0, n_out), -1e3, 1e3) * 0.5
    W = rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
    if kind == "sparse":
        W *= rng.random((n_out, n_in)) < rng.uniform(0.1, 0.5)
    return W, rng.normal(0.0, 0.5, n_out)


def _box(rng, n_in: int, wide_input: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return ``(lo, hi, description)``: a point, tiny, small, unit or huge box, some inputs maybe fixed."""
    centre_kind = rng.choice(["unit", "gauss", "far"], p=[0.5, 0.35, 0.15])
    x0 = {"unit": lambda: rng.random(n_in), "gauss": lambda: rng.normal(0, 1, n_in),
          "far": lambda: rng.normal(0, 100, n_in)}[centre_kind]()
    width_kind = rng.choice(["point", "tiny", "small", "unit", "huge"], p=[0.06, 0.12, 0.32, 0.35, 0.15])
    exponent = {"point": (0, 0), "tiny": (-9, -4), "small": (-3, -1), "unit": (-1, 0.5), "huge": (1, 6)}[width_kind]
    width = 0.0 if width_kind == "point" else 10.0 ** rng.uniform(*exponent)
    if wide_input and width_kind != "point":
        width = min(width, 0.1)
    w = width * rng.uniform(0.2, 1.0, n_in)
    fixed = np.zeros(n_in, dtype=bool)
    if wide_input and rng.random() < 0.5:
        fixed = np.ones(n_in, dtype=bool)
        fixed[rng.choice(n_in, int(rng.integers(5, 51)), replace=False)] = False
    elif rng.random() < 0.2:
        fixed = rng.random(n_in) < 0.4
    w[fixed] = 0.0
    lo, hi = x0 - w / 2, x0 + w / 2
    return lo, hi, dict(centre=str(centre_kind), box=str(width_kind), width=float(width), free=int(np.sum(hi > lo)))


def _architecture(rng) -> tuple[str, int, list[int]]:
    """Return ``(size kind, inputs, hidden widths)``."""
    size = rng.choice(["small", "medium", "wide_input"], p=[0.7, 0.22, 0.08])
    depth = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.2, 0.2]))
    if size == "small":
        return "small", int(rng.integers(2, 11)), [int(n) for n in rng.integers(2, 10, depth)]
    if size == "medium":
        top = 41 if depth <= 2 else 21
        return "medium", int(rng.integers(2, 41)), [int(n) for n in rng.integers(8, top, depth)]
    n_in = int(rng.choice([50, 100, 196, 400, 784]))
    return "wide_input", n_in, [int(n) for n in rng.integers(2, 7, min(depth, 2))]


def _scale(rng, layers: list, mode: str, k: int) -> None:
    """Multiply by 2**k in place: "whole" scales every layer's output (the logits exactly), "first" layer 1 only."""
    if mode == "first":
        layers[0] = (layers[0][0] * 2.0 ** k, layers[0][1] * 2.0 ** k)
    elif mode == "whole":
        # spread k over the layers: W_i times 2^e_i, b_i times 2^(e_1 + ... + e_i), so layer i's output is times
        # 2^(e_1 + ... + e_i) and the logits exactly times 2^k
        e = np.sign(k) * rng.multinomial(abs(k), np.full(len(layers), 1.0 / len(layers)))
        total = 0
        for i, (W, b) in enumerate(layers):
            total += int(e[i])
            layers[i] = (W * 2.0 ** int(e[i]), b * 2.0 ** total)


def _network(layers: list, decision: str, sparse_storage: bool, name: str, meta: dict) -> Network:
    parts = []
    for i, (W, b) in enumerate(layers):
        parts.append(Affine(sp.csr_matrix(W) if sparse_storage else W, b))
        if i < len(layers) - 1:
            parts.append(ReLU())
    return Network(parts, decision=decision, input_shape=(layers[0][0].shape[1],), name=name, meta=meta)


def case(case_id: int) -> Case:
    """Return the fuzz case ``case_id``: ``(net, lo, hi, c, settings)``, drawn from ``default_rng(case_id)``."""
    rng = np.random.default_rng(case_id)
    size, n_in, widths = _architecture(rng)
    sigmoid = rng.random() < 0.25
    n_out = 1 if sigmoid else int(rng.integers(2, 11))
    lo, hi, box = _box(rng, n_in, size == "wide_input")
    kind = str(rng.choice(["gaussian", "sparse", "heavy", "integer"], p=[0.4, 0.2, 0.2, 0.2]))
    sizes = [n_in] + widths + [n_out]
    layers = [_weights(rng, kind, sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]
    modifiers = []
    if rng.random() < 0.2:   # duplicated neurons: a row copied exactly, or times a power of two
        k = int(rng.integers(len(widths)))
        if widths[k] >= 2:
            i, j = rng.choice(widths[k], 2, replace=False)
            factor = 2.0 ** int(rng.integers(-3, 4)) if rng.random() < 0.5 else 1.0
            layers[k][0][j], layers[k][1][j] = layers[k][0][i] * factor, layers[k][1][i] * factor
            modifiers.append(f"duplicate L{k + 1}:{j}=x{factor:g}*{i}")
    if rng.random() < 0.2:   # dead (or constant) neurons: zero weights, a negative (or positive) bias
        k = int(rng.integers(len(widths)))
        for j in rng.choice(widths[k], max(1, widths[k] // 3), replace=False):
            layers[k][0][j] = 0.0
            layers[k][1][j] = -abs(layers[k][1][j]) - 0.5 if rng.random() < 0.7 else abs(layers[k][1][j]) + 0.5
        modifiers.append(f"dead L{k + 1}")
    scale_mode = str(rng.choice(["none", "whole", "first"], p=[0.4, 0.35, 0.25]))
    extreme = rng.random() < 0.4     # the scales where absolute tolerances go wrong, drawn more often
    if scale_mode == "whole":
        scale_k = int(rng.integers(-48, -37) if extreme else rng.integers(-48, 21))
    else:
        scale_k = int(rng.integers(-30, -15) if extreme else rng.integers(-40, 21))
    if scale_mode != "none":
        _scale(rng, layers, scale_mode, scale_k)
    sparse_storage = kind == "sparse" and rng.random() < 0.5
    decision = "sigmoid" if sigmoid else "argmax"
    name = "-".join(str(n) for n in sizes)
    centre = (lo + hi) / 2
    draft = _network(layers, decision, sparse_storage, name, {})
    c = draft.predict(centre) if rng.random() < 0.8 else int(rng.integers(draft.n_classes))
    shift = rng.random() < 0.5
    sign, exponent = (1.0 if rng.random() < 0.5 else -1.0), rng.uniform(-10, -2)
    weights = np.array(list(SETTING_WEIGHTS.values()), dtype=float)
    setting = str(rng.choice(list(SETTING_WEIGHTS), p=weights / weights.sum()))
    if setting == "mip_cplex" and sum(widths) + n_out > CPLEX_MAX_NEURONS or (setting == "mip_cplex" and n_in > 400):
        setting = "mip_highs"
    meta = dict(id=case_id, size=size, weights=kind, modifiers=modifiers, scale=scale_mode,
                scale_exponent=scale_k if scale_mode != "none" else 0, decision=decision, sparse=sparse_storage,
                neurons=sum(widths), **box)
    if shift:
        # shift class c's output bias (both rows' signs for sigmoid) so that the true minimum is near +-target
        ref = reference(draft, lo, hi, c, exhaustive=False)   # no MILP: the case must not depend on time
        target = sign * 10.0 ** exponent * (ref.spread if ref.spread > 0 else max(ref.scale, 1e-300))
        W, b = layers[-1]
        b = b.copy()
        delta = target - float(ref.margin)
        if sigmoid:
            b[0] += delta if c == 1 else -delta
        else:
            b[c] += delta
        layers[-1] = (W, b)
        meta.update(shift_target=float(target), shift_relative=float(sign * 10.0 ** exponent))
    return Case(_network(layers, decision, sparse_storage, name, meta), lo, hi, int(c), setting)


# ---------------------------------------------------------------------------------------------------------------
# the reference


def spec_rows(net: Network, c: int) -> np.ndarray:
    """Return the margin rows of class ``c`` written out from the decision rule (argmax: e_c - e_j; sigmoid: +-1)."""
    if net.decision == "sigmoid":
        return np.array([[1.0 if c == 1 else -1.0]])
    eye = np.eye(net.n_outputs)
    return np.array([eye[c] - eye[j] for j in range(net.n_outputs) if j != c])


def _dense_layers(net: Network) -> list:
    return [(a.dense_W(), a.b) for a in net.affines]


def float_margins(net: Network, X: np.ndarray, c: int) -> np.ndarray:
    """Return the margins ``(B, rows)`` of a batch, by our own float64 forward pass."""
    H = np.atleast_2d(np.asarray(X, dtype=np.float64))
    layers = _dense_layers(net)
    for W, b in layers[:-1]:
        H = np.maximum(H @ W.T + b, 0.0)
    W, b = layers[-1]
    return (H @ W.T + b) @ spec_rows(net, c).T


def exact_margins(net: Network, x: np.ndarray, c: int) -> list[Fraction]:
    """Return the margins of class ``c`` at ``x`` in exact rational arithmetic on the float64 weights."""
    a = [Fraction(float(v)) for v in np.asarray(x, dtype=np.float64)]
    layers = _dense_layers(net)
    for k, (W, b) in enumerate(layers):
        z = []
        for i in range(W.shape[0]):
            nonzero = np.flatnonzero(W[i])
            z.append(sum((Fraction(float(W[i, j])) * a[j] for j in nonzero), Fraction(float(b[i]))))
        a = z if k == len(layers) - 1 else [max(v, Fraction(0)) for v in z]
    if net.decision == "sigmoid":
        return [a[0] if c == 1 else -a[0]]
    return [a[c] - a[j] for j in range(len(a)) if j != c]


def term_scale(net: Network, x: np.ndarray, c: int) -> float:
    """Return ``S``: the largest margin's sum of absolute terms at ``x`` (the scale of its rounding errors)."""
    layers = _dense_layers(net)
    h = np.asarray(x, dtype=np.float64)
    t = np.abs(h)
    for W, b in layers[:-1]:
        z = W @ h + b
        t = np.where(z > 0, np.abs(W) @ t + np.abs(b), 0.0)
        h = np.maximum(z, 0.0)
    W, b = layers[-1]
    return float(np.max(np.abs(spec_rows(net, c)) @ (np.abs(W) @ t + np.abs(b))))


@dataclass
class Reference:
    """The reference's best point ``x`` of the box and its exact smallest margin (see the module docstring)."""

    x: np.ndarray
    margin: Fraction
    optimal: bool
    method: str
    scale: float
    seconds: float
    spread: float = 0.0   # the largest smallest-margin among random points of the box, minus ``margin``
    patterns: int = 0     # phase patterns enumerated, or MILPs solved
    lps: int = 0


class _Encoding:
    """Pre-activations as affine maps of ``y = (u, scaled outputs of the unstable neurons)``; big-M rows."""

    def __init__(self, net: Network, lo: np.ndarray, hi: np.ndarray, c: int):
        layers = _dense_layers(net)
        self.free = hi > lo
        nf = int(self.free.sum())
        ylo, yhi, integer = [0.0] * nf, [1.0] * nf, [0] * nf
        rows, rhs = [], []
        self.unstable, self.stable_active = [], []   # per hidden layer: neuron indices
        W, b = layers[0]
        P, p = W[:, self.free] * (hi - lo)[self.free], W @ lo + b
        for k, (W, b) in enumerate(layers[:-1]):
            if k > 0:
                P, p = W @ A, W @ alpha + b
            lo_y, hi_y = np.array(ylo), np.array(yhi)
            low = p + np.minimum(P * lo_y, P * hi_y).sum(axis=1)
            up = p + np.maximum(P * lo_y, P * hi_y).sum(axis=1)
            slack = 1e-9 * (np.abs(P) @ np.maximum(np.abs(lo_y), np.abs(hi_y)) + np.abs(p))
            low, up = low - slack, up + slack
            if rows:
                low, up = _lp_tighten(P, p, low, up, rows, rhs, lo_y, hi_y)
            active, unstable = low >= 0, (low < 0) & (up > 0)
            self.unstable.append(np.flatnonzero(unstable))
            self.stable_active.append(np.flatnonzero(active))
            n_cols = len(ylo) + 2 * int(unstable.sum())
            A = np.zeros((W.shape[0], n_cols))
            A[active, :P.shape[1]] = P[active]
            alpha = np.where(active, p, 0.0)
            for j in np.flatnonzero(unstable):
                scale = 2.0 ** np.floor(np.log2(up[j]))
                col_a, col_d = len(ylo), len(ylo) + 1
                ylo += [0.0, 0.0]
                yhi += [up[j] / scale, 1.0]
                integer += [0, 1]
                A[j, col_a] = scale
                Pj = np.zeros(n_cols)
                Pj[:P.shape[1]] = P[j]
                a_col, d_col = scale * _unit(n_cols, col_a), _unit(n_cols, col_d)
                for row, bound in ((Pj - a_col, -p[j]),                              # a >= z
                                   (a_col - Pj - low[j] * d_col, p[j] - low[j]),     # a <= z - l (1 - d)
                                   (a_col - up[j] * d_col, 0.0)):                    # a <= u d
                    norm = np.abs(row).max()
                    rows.append(row / norm)
                    rhs.append(bound / norm)
        W, b = layers[-1]
        C = spec_rows(net, c)
        self.Q, self.q0 = C @ W @ A, C @ (W @ alpha + b)
        self.ylo, self.yhi, self.integer = np.array(ylo), np.array(yhi), np.array(integer)
        width = len(ylo)
        self.rows = np.array([np.pad(r, (0, width - len(r))) for r in rows]).reshape(len(rows), width)
        self.rhs = np.array(rhs)

    def row_lower(self) -> np.ndarray:
        """Return each margin row's interval lower bound over the box."""
        return self.q0 + np.minimum(self.Q * self.ylo, self.Q * self.yhi).sum(axis=1)

    def n_unstable(self) -> int:
        return sum(len(u) for u in self.unstable)


def _lp_tighten(P, p, low, up, rows, rhs, ylo, yhi) -> tuple[np.ndarray, np.ndarray]:
    """Return the bounds of the unstable neurons ``P y + p`` tightened by LPs over the relaxation so far.

    The big-M rows with their binaries relaxed to [0, 1] are the triangle relaxation of the layers below; each
    LP optimum is widened by 1e-6 of the interval so that the solver's tolerance cannot cut off a point.
    """
    n = len(ylo)
    A_ub = np.array([np.pad(r, (0, n - len(r))) for r in rows])
    b_ub, bounds = np.array(rhs), np.column_stack([ylo, yhi])
    low, up = low.copy(), up.copy()
    for j in np.flatnonzero((low < 0) & (up > 0)):
        norm = np.abs(P[j]).max()
        if norm == 0:
            continue
        widen = 1e-6 * (up[j] - low[j])
        for sense in (1.0, -1.0):
            result = linprog(sense * P[j] / norm, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
            if result.status != 0:
                continue
            value = sense * result.fun * norm + p[j]
            if sense > 0:
                low[j] = max(low[j], value - widen)
            else:
                up[j] = min(up[j], value + widen)
    return low, up


def _unit(n: int, i: int) -> np.ndarray:
    e = np.zeros(n)
    e[i] = 1.0
    return e


def _phases(net: Network, x: np.ndarray) -> list:
    """Return the phase pattern (pre-activation > 0) of every hidden layer at ``x``, by our own forward pass."""
    h, out = np.asarray(x, dtype=np.float64), []
    for W, b in _dense_layers(net)[:-1]:
        z = W @ h + b
        out.append(z > 0)
        h = np.maximum(z, 0.0)
    return out


def pattern_lp(net: Network, lo: np.ndarray, hi: np.ndarray, c: int, row: int, phases: list):
    """Return ``(x, tight)``: a minimiser of margin ``row`` over the box part with these phases (None if empty).

    ``tight``: per hidden layer, the neurons whose pre-activation is about 0 at ``x`` (their flips are the
    neighbouring patterns). Every constraint row is scaled to a largest coefficient of 1.
    """
    layers = _dense_layers(net)
    free = hi > lo
    W, b = layers[0]
    G, g = W[:, free] * (hi - lo)[free], W @ lo + b
    A_ub, b_ub, maps = [], [], []
    for k, (W, b) in enumerate(layers[:-1]):
        if k > 0:
            G, g = W @ G, W @ g + b
        sign = np.where(phases[k], -1.0, 1.0)       # active: -z <= 0; inactive: z <= 0
        rows, bound = sign[:, None] * G, -sign * g
        norm = np.abs(rows).max(axis=1, initial=0.0)
        if np.any((norm == 0) & (bound < 0)):
            return None, None
        keep = norm > 0
        A_ub.append(rows[keep] / norm[keep, None])
        b_ub.append(bound[keep] / norm[keep])
        maps.append((G.copy(), g.copy(), np.where(norm > 0, norm, 1.0)))
        G, g = G * phases[k][:, None], g * phases[k]
    W, b = layers[-1]
    q = spec_rows(net, c)[row] @ W @ G
    n = G.shape[1]
    if n == 0:
        return lo.copy(), [np.zeros(len(m[1]), dtype=bool) for m in maps]
    A = np.vstack(A_ub) if A_ub else None
    scale = np.abs(q).max(initial=0.0)
    result = linprog(q / scale if scale > 0 else np.zeros(n), A_ub=A if A is not None and len(A) else None,
                     b_ub=np.concatenate(b_ub) if A is not None and len(A) else None, bounds=(0.0, 1.0),
                     method="highs")
    if result.status != 0:
        return None, None
    u = np.clip(result.x, 0.0, 1.0)
    x = lo.copy()
    x[free] = np.clip(lo[free] + (hi - lo)[free] * u, lo[free], hi[free])
    tight = [np.abs(Gk @ u + gk) / norm <= 1e-7 for Gk, gk, norm in maps]
    if A is not None and len(A):
        # the solver's vertex holds its active rows only up to its tolerance (1e-7 of a row): project it onto them
        active = np.flatnonzero(result.ineqlin.residual <= 1e-7)
        at_bound = np.flatnonzero((u <= 1e-9) | (u >= 1 - 1e-9))
        M = np.vstack([A[active], np.eye(n)[at_bound]])
        target = np.concatenate([np.concatenate(b_ub)[active], np.round(u[at_bound])])
        if len(M):
            u = np.clip(u + np.linalg.lstsq(M, target - M @ u, rcond=None)[0], 0.0, 1.0)
            x = np.vstack([x, x])
            x[1, free] = np.clip(lo[free] + (hi - lo)[free] * u, lo[free], hi[free])
    return x, tight


@contextlib.contextmanager
def _quiet():
    """Silence what the solver's C++ code prints to the process's stdout while it runs."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


class _Best:
    """The best point so far by its exact smallest margin."""

    def __init__(self, net, c):
        self.net, self.c, self.x, self.margin = net, c, None, None

    def offer(self, points: np.ndarray) -> None:
        for x in np.atleast_2d(points):
            m = min(exact_margins(self.net, x, self.c))
            if self.margin is None or m < self.margin:
                self.x, self.margin = np.array(x, dtype=np.float64), m


def _descend(net, lo, hi, c, row, X: np.ndarray, steps: int = DESCENT_STEPS) -> np.ndarray:
    """Return the best points of signed-gradient descents of margin ``row`` from the rows of ``X`` (in the box)."""
    layers = _dense_layers(net)
    top = spec_rows(net, c)[row] @ layers[-1][0]
    X, best = X.copy(), X.copy()
    best_value = float_margins(net, X, c)[:, row]
    for t in range(steps):
        H, masks = X, []
        for W, b in layers[:-1]:
            Z = H @ W.T + b
            masks.append(Z > 0)
            H = np.maximum(Z, 0.0)
        gradient = np.broadcast_to(top, (len(X), top.size))
        for (W, _), mask in zip(reversed(layers[:-1]), reversed(masks)):
            gradient = (gradient * mask) @ W
        X = np.clip(X - (hi - lo) * 0.25 * (1 - t / steps) ** 2 * np.sign(gradient), lo, hi)
        value = float_margins(net, X, c)[:, row]
        better = value < best_value
        best[better], best_value[better] = X[better], value[better]
    return best


def _polish(net, lo, hi, c, row, x, best: _Best, rounds: int = 6) -> int:
    """Descend from ``x`` over phase patterns: the LP of its pattern, then of neighbours while one is better."""
    phases = _phases(net, x)
    point, tight = pattern_lp(net, lo, hi, c, row, phases)
    lps = 1
    if point is None:
        return lps
    value = float_margins(net, point, c)[:, row].min()
    best.offer(point)
    for _ in range(rounds):
        candidates = [(k, j) for k, t in enumerate(tight) for j in np.flatnonzero(t)][:12]
        improved = None
        for k, j in candidates:
            flipped = [p.copy() for p in phases]
            flipped[k][j] = ~flipped[k][j]
            other, other_tight = pattern_lp(net, lo, hi, c, row, flipped)
            lps += 1
            if other is None:
                continue
            other_value = float_margins(net, other, c)[:, row].min()
            better = other_value < value - 1e-12 * max(abs(value), 1e-300)
            if better and (improved is None or other_value < improved[0]):
                improved = (other_value, other, other_tight, flipped)
        if improved is None:
            break
        value, point, tight, phases = improved
        best.offer(point)
    return lps


def reference(net: Network, lo: np.ndarray, hi: np.ndarray, c: int, time_limit: float = REF_TIME_LIMIT,
              method: str = "auto", exhaustive: bool = True, samples: int = SAMPLES) -> Reference:
    """Return the `Reference` minimum of the smallest margin over the box (method "auto", "enumerate" or "milp").

    ``time_limit`` (seconds, for all MILPs) may leave it not ``optimal``; without ``exhaustive`` the MILPs are
    skipped (only samples, descents and an enumeration if it is cheap: not ``optimal``, but deterministic).
    """
    start = time.perf_counter()
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    best = _Best(net, c)
    free = hi > lo
    if not free.any():
        best.offer(lo)
        return Reference(best.x, best.margin, True, "point", term_scale(net, best.x, c), time.perf_counter() - start)
    best.offer((lo + hi) / 2)
    rng = np.random.default_rng(0)
    X = lo + (hi - lo) * rng.random((samples, lo.size))
    X[: samples // 4] = np.where(rng.random((samples // 4, lo.size)) < 0.5, lo, hi)
    X = np.vstack([(lo + hi) / 2, X])
    margins = float_margins(net, X, c)
    rows = margins.shape[1]
    lps = 0
    for row in range(rows):       # descents from the best samples of every row, the best two polished
        starts = X[np.argsort(margins[:, row])[:DESCENT_STARTS]]
        ends = _descend(net, lo, hi, c, row, starts)
        for i in np.argsort(float_margins(net, ends, c)[:, row])[:2]:
            lps += _polish(net, lo, hi, c, row, ends[i], best)
    encoding = _Encoding(net, lo, hi, c)
    order = np.argsort(encoding.row_lower())
    n_patterns = 2 ** encoding.n_unstable() if encoding.n_unstable() < 30 else np.inf
    if method == "enumerate" or (method == "auto" and n_patterns * rows <= ENUMERATE_MAX_LPS):
        optimal, count = _enumerate(net, lo, hi, c, encoding, order, best)
        lps += count
        used, solved = "enumerate", int(n_patterns)
    elif exhaustive:
        optimal, solved, count = _milps(net, lo, hi, c, encoding, order, best, start + time_limit)
        lps += count
        used = "milp"
    else:
        optimal, solved, used = False, 0, "local"
    spread = float(margins.min(axis=1).max() - float(best.margin))
    return Reference(best.x, best.margin, optimal, used, term_scale(net, best.x, c), time.perf_counter() - start,
                     spread, solved, lps)


def _enumerate(net, lo, hi, c, encoding: _Encoding, order, best: _Best) -> tuple[bool, int]:
    """Minimise every row over every phase pattern of the unstable neurons; return ``(True, LPs solved)``."""
    base = [np.isin(np.arange(W.shape[0]), active) for (W, _), active in
            zip(_dense_layers(net)[:-1], encoding.stable_active)]
    flat = [(k, j) for k, unstable in enumerate(encoding.unstable) for j in unstable]
    lps = 0
    bounds = encoding.row_lower()
    for choice in product((False, True), repeat=len(flat)):
        phases = [p.copy() for p in base]
        for (k, j), on in zip(flat, choice):
            phases[k][j] = on
        for row in order:
            if bounds[row] >= best.margin:
                break
            x, _ = pattern_lp(net, lo, hi, c, int(row), phases)
            lps += 1
            if x is None:
                break           # an empty pattern is empty for every row
            best.offer(x)
    return True, lps


def _milps(net, lo, hi, c, encoding: _Encoding, order, best: _Best, deadline: float) -> tuple[bool, int, int]:
    """Minimise each row by our big-M MILP, polishing its minimiser; return ``(optimal, MILPs, LPs)``."""
    optimal, solved, lps = True, 0, 0
    bounds = encoding.row_lower()
    nf = int(encoding.free.sum())
    constraints = [LinearConstraint(encoding.rows, -np.inf, encoding.rhs)] if len(encoding.rows) else []
    for position, row in enumerate(order):
        if bounds[row] >= best.margin:
            break
        objective = encoding.Q[row]
        scale = np.abs(objective).max(initial=0.0)
        if scale == 0:
            continue
        # the time left, shared by the rows still to do
        options = dict(mip_rel_gap=0.0, time_limit=(deadline - time.perf_counter()) / (len(order) - position))
        if options["time_limit"] <= 0:
            optimal = False
            break
        with _quiet():
            result = milp(objective / scale, integrality=encoding.integer,
                          bounds=VarBounds(encoding.ylo, encoding.yhi), constraints=constraints, options=options)
        solved += 1
        optimal &= result.status == 0
        if result.x is None:
            continue
        x = lo.copy()
        x[encoding.free] = np.clip(lo[encoding.free] + (hi - lo)[encoding.free] * result.x[:nf],
                                   lo[encoding.free], hi[encoding.free])
        best.offer(x)
        lps += _polish(net, lo, hi, c, int(row), x, best)
    return optimal, solved, lps


# ---------------------------------------------------------------------------------------------------------------
# the checks


def tie_tolerance(ref: Reference) -> float:
    """Return how far the reference's exact minimum may lie above the true one (its solvers' accuracy, measured)."""
    return TIE_SPREAD * ref.spread + TIE_SCALE * ref.scale


def check(net: Network, lo, hi, c: int, verdict, ref: Reference) -> dict:
    """Return the check of one `Verdict` against the reference: ``outcome`` and the exact figures behind it."""
    out = dict(outcome="ok")
    lower, slack = verdict.lower_bound, Fraction(ROUNDING * ref.scale)
    if lower is not None and np.isfinite(lower) and Fraction(float(lower)) > ref.margin + slack:
        out.update(outcome="bad_bound", excess=float(Fraction(float(lower)) - ref.margin))
    if verdict.verdict == "robust":
        stated = Fraction(float(getattr(verdict, "tolerance", 0.0)))
        if ref.margin <= 0 and stated > 0 and -ref.margin <= stated + slack:
            out["outcome"] = "within_tolerance"   # a MIP's robust: no margin below -tolerance, as documented
        elif ref.margin <= 0:
            out.update(outcome="wrong", within_rounding=bool(-ref.margin <= ROUNDING * ref.scale))
        elif ref.margin <= tie_tolerance(ref) and out["outcome"] == "ok":
            out["outcome"] = "tie"
    elif verdict.verdict == "not_robust":
        x = np.asarray(verdict.counterexample, dtype=np.float64)
        inside = x.shape == lo.shape and bool(np.all(x >= lo) and np.all(x <= hi))
        margin = min(exact_margins(net, x, c)) if x.shape == lo.shape else None
        out["counterexample_margin"] = None if margin is None else float(margin)
        if not inside or margin > 0:
            out.update(outcome="invalid_counterexample", outside_box=not inside,
                       within_rounding=bool(inside and margin <= ROUNDING * term_scale(net, x, c)))
        elif ref.margin > 0 or (ref.optimal and margin < ref.margin - Fraction(tie_tolerance(ref))):
            out["outcome"] = "reference_miss"
    elif verdict.verdict != "unknown":
        out["outcome"] = "wrong"
    return out


def call_limit(setting: str, time_limit: float) -> float:
    """Return the time limit of a call: for the MIP settings at least what the verifier needs to try its MIP.

    The verifier gives a big MIP the last quarter of a time limit only when that is at least
    ``MIP_MIN_SECONDS`` (small MIPs always): a MIP setting gets ``MIP_MIN_SECONDS / (1 - BAB_SHARE)`` at least.
    """
    if not setting.startswith("mip"):
        return time_limit
    minimum = getattr(verifier_module, "MIP_MIN_SECONDS", 0.0) / (1.0 - getattr(verifier_module, "BAB_SHARE", 0.75))
    return max(time_limit, minimum)


def run_case(case_id: int, time_limit: float = TIME_LIMIT, verbose: bool = False) -> dict:
    """Run case ``case_id`` through its verifier setting and check it; return its record."""
    net, lo, hi, c, setting = case(case_id)
    meta = net.meta
    record = dict(id=case_id, shape=net.name, setting=setting, c=c, **{k: v for k, v in meta.items() if k != "id"})
    ref = reference(net, lo, hi, c)
    record.update(ref_margin=float(ref.margin), ref_optimal=ref.optimal, ref_method=ref.method,
                  ref_seconds=round(ref.seconds, 3), scale_S=ref.scale, spread=ref.spread)
    if verbose:
        _describe(net, lo, hi, c, setting, ref)
    limit = call_limit(setting, time_limit)
    record["time_limit"] = limit
    start = time.perf_counter()
    try:
        verdict = Verifier(net, time_limit=limit, **SETTINGS[setting]).verify(lo, hi, c)
    except Exception as error:   # noqa: BLE001 - every exception is a finding, but CPLEX's size refusal
        refused = isinstance(error, UserError) and "Community Edition" in str(error)
        record.update(outcome="skipped" if refused else "crash", verdict=None, seconds=time.perf_counter() - start,
                      error=f"{type(error).__name__}: {error}",
                      traceback=[f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}"
                                 for f in traceback.extract_tb(error.__traceback__)][-4:])
        if verbose:
            traceback.print_exc()
            print(f"outcome: {record['outcome']}")
        return _flag_slow(record, limit)
    seconds = time.perf_counter() - start
    record.update(verdict=verdict.verdict, method=verdict.method, seconds=seconds, nodes=verdict.nodes,
                  mip="mip_seconds" in verdict.stages,
                  lower_bound=verdict.lower_bound, tolerance=getattr(verdict, "tolerance", 0.0),
                  message=verdict.message)
    record.update(check(net, lo, hi, c, verdict, ref))
    if verbose:
        print(f"verdict: {verdict.verdict} by {verdict.method} in {seconds:.3f} s, {verdict.nodes} nodes, "
              f"lower bound {verdict.lower_bound!r}; {verdict.message}")
        print(f"stages: {verdict.stages}")
        details = ("excess", "counterexample_margin", "outside_box", "within_rounding", "within_stated_tolerance")
        print(f"outcome: {record['outcome']}" + "".join(f", {k} {record[k]!r}" for k in details if k in record))
    return _flag_slow(record, limit)


def _flag_slow(record: dict, time_limit: float) -> dict:
    """Flag a call on a net under `SLOW_NEURONS` hidden neurons that took over `SLOW_SECONDS` or `SLOW_SHARE`."""
    record["slow"] = bool(record["neurons"] < SLOW_NEURONS and
                          record["seconds"] > min(SLOW_SECONDS, SLOW_SHARE * time_limit))
    return record


def _describe(net, lo, hi, c, setting, ref: Reference) -> None:
    meta = net.meta
    extras = meta["modifiers"] + (["sparse storage"] if meta["sparse"] else [])
    print(f"case {meta['id']}: {net.name} ({meta['size']}, {meta['weights']} weights"
          f"{''.join(', ' + e for e in extras)}),"
          f" {meta['decision']}, class {c}, setting {setting} {SETTINGS[setting]}")
    print(f"scale: {meta['scale']} 2^{meta['scale_exponent']}; box: {meta['box']} width {meta['width']:.3g} around a "
          f"{meta['centre']} centre, {meta['free']} of {lo.size} inputs free"
          + (f"; shifted to a margin near {meta['shift_target']:.3g}" if "shift_target" in meta else ""))
    np.set_printoptions(precision=17, linewidth=140, threshold=50)
    print(f"reference ({ref.method}, {'optimal' if ref.optimal else 'NOT optimal'}, {ref.seconds:.2f} s): "
          f"min margin {float(ref.margin)!r} exactly (S = {ref.scale:.3g}) at x = {ref.x}")
    print(f"forward pass there: margins {net.margins(ref.x, c)}")


# ---------------------------------------------------------------------------------------------------------------
# the run and its report


def summary(records: list) -> dict:
    """Return the counts of a run: outcomes, unknowns, slow cases, per setting, failing ids by category."""
    outcomes = Counter(r["outcome"] for r in records)
    per_setting = {}
    for r in records:
        row = per_setting.setdefault(r["setting"], Counter())
        row["cases"] += 1
        row[r.get("verdict") or r["outcome"]] += 1
        row["problems"] += r["outcome"] in PROBLEMS
        row["mip"] += bool(r.get("mip"))
    failing = {}
    for r in records:
        if r["outcome"] not in ("ok", "tie", "within_tolerance"):
            failing.setdefault(r["outcome"], []).append(r["id"])
        if r["slow"]:
            failing.setdefault("slow", []).append(r["id"])
    return dict(cases=len(records), outcomes=dict(outcomes),
                wrong_within_rounding=sum(r["outcome"] == "wrong" and bool(r.get("within_rounding"))
                                          for r in records),
                invalid_within_rounding=sum(r["outcome"] == "invalid_counterexample" and bool(r.get("within_rounding"))
                                            for r in records),
                unknown=sum(r.get("verdict") == "unknown" for r in records),
                slow=sum(r["slow"] for r in records),
                reference_not_optimal=sum(not r["ref_optimal"] for r in records),
                per_setting={k: dict(v) for k, v in sorted(per_setting.items())}, failing=failing,
                slowest=[dict(id=r["id"], shape=r["shape"], setting=r["setting"], seconds=round(r["seconds"], 2),
                              verdict=r.get("verdict"))
                         for r in sorted(records, key=lambda r: -r["seconds"])[:10]])


def markdown(run: dict) -> str:
    """Return the RESULTS.md section of a run."""
    s = run["summary"]
    o = s["outcomes"]
    lines = ["## Randomized soundness of the verifier (fuzz_verifier)", "", run["machine"],
             f"Command: `python benchmarks/fuzz_verifier.py --cases {run['cases']} --start {run['start']} "
             f"--time-limit {run['time_limit']:g}`, 1 thread, {run['seconds']:.0f} s in all. Each case is a random "
             "net, box, class and verifier setting checked against an independent reference (exact minimum of the "
             "margin by phase enumeration or our own MILP, points evaluated in rational arithmetic); see the "
             "script's docstring. `--id N` re-runs case N. The MIP settings (branch-and-bound stopped after one "
             "node) get the time limit the verifier needs to try its MIP (`call_limit`); \"MIP run\" counts the "
             "calls that reached it.", "",
             "| cases | wrong verdicts | invalid counterexamples | bounds that are not bounds | crashes | unknown "
             "| slow (< 50 neurons) | ties | robust within the MIP's stated tolerance | skipped (CPLEX size) "
             "| reference misses | reference not optimal |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {s['cases']} | {o.get('wrong', 0)}{_of_which(s, 'wrong')} "
             f"| {o.get('invalid_counterexample', 0)}{_of_which(s, 'invalid')} | {o.get('bad_bound', 0)} "
             f"| {o.get('crash', 0)} | {s['unknown']} | {s['slow']} | {o.get('tie', 0)} | {o.get('within_tolerance', 0)} "
             f"| {o.get('skipped', 0)} "
             f"| {o.get('reference_miss', 0)} | {s['reference_not_optimal']} |", "",
             "| setting | cases | robust | not robust | unknown | skipped | MIP run | problems |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in s["per_setting"].items():
        lines.append(f"| {name} | {row.get('cases', 0)} | {row.get('robust', 0)} | {row.get('not_robust', 0)} "
                     f"| {row.get('unknown', 0)} | {row.get('skipped', 0)} | {row.get('mip', 0)} "
                     f"| {row.get('problems', 0)} |")
    lines += ["", "Slowest cases:", "", "| id | shape | setting | seconds | verdict |", "|---:|---|---|---:|---|"]
    lines += [f"| {r['id']} | {r['shape']} | {r['setting']} | {r['seconds']:.2f} | {r['verdict']} |"
              for r in s["slowest"]]
    if s["failing"]:
        lines += ["", "Failing ids by category: " + "; ".join(
            f"{k}: {', '.join(map(str, v[:30]))}{' ...' if len(v) > 30 else ''}" for k, v in s["failing"].items())
            + "."]
    return "\n".join(lines)


def _of_which(s: dict, kind: str) -> str:
    what = {"wrong_within_rounding": "within 1e-12 S of 0", "invalid_within_rounding": "within 1e-12 S of 0",
}
    parts = [f"{s[key]} {text}" for key, text in what.items() if key.startswith(kind) and s.get(key)]
    return f" (of which {'; '.join(parts)})" if parts else ""


def main(argv=None) -> int:
    """Run one case verbosely, a range of cases, or re-render a saved run; return 1 if a problem was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--id", type=int, help="re-run this one case verbosely")
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="per verifier call, seconds")
    parser.add_argument("--json", type=Path, default=JSON, help=f"where the run is written (default {JSON.name})")
    parser.add_argument("--update-results", action="store_true", help="rewrite the section in benchmarks/RESULTS.md")
    parser.add_argument("--report", action="store_true", help="only re-render the section from the JSON file")
    args = parser.parse_args(argv)
    if args.id is not None:
        record = run_case(args.id, args.time_limit, verbose=True)
        return int(record["outcome"] in PROBLEMS)
    if args.report:
        run = read_json(args.json)
    else:
        from tqdm import tqdm
        start, records = time.perf_counter(), []
        bar = tqdm(range(args.start, args.start + args.cases), unit="case")
        for case_id in bar:
            records.append(run_case(case_id, args.time_limit))
            counts = Counter(r["outcome"] for r in records)
            bar.set_postfix(problems=sum(counts[p] for p in PROBLEMS), unknown=sum(
                r.get("verdict") == "unknown" for r in records))
        run = dict(machine=machine_line(), cases=args.cases, start=args.start, time_limit=args.time_limit,
                   seconds=time.perf_counter() - start, records=records)
        run["summary"] = summary(records)
        write_json(args.json, run)
    print(markdown(run))
    if args.update_results:
        update_section("fuzz_verifier", markdown(run))
    return int(any(run["summary"]["outcomes"].get(p, 0) for p in PROBLEMS))


if __name__ == "__main__":
    sys.exit(main())
