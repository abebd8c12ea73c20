"""Exact queries on a network over an input box, by MIP: largest logit gap and counterexamples.

`NetworkMIP` encodes the network once (`explain_mnist.encoding`) over a box
and keeps one loaded solver per kind of query; a query changes only the
objective or column bounds and re-solves, and `set_box` moves the input
bounds inside the original box (the big-M constants computed for the original
box stay valid there; neurons the new box makes stable get their binary fixed).

Queries, for a class ``c`` and the network's spec matrix ``C`` (``C @ logits > 0``
on every row iff the input keeps class ``c``):

- ``max_gap(c, j)``: ``max -C_j @ logits`` over the box, i.e. ``logit_j - logit_c``
  for argmax nets (for sigmoid nets ``-logit`` if c == 1, ``+logit`` if c == 0).
- ``counterexample(c, margin)``: a point of the box with ``C_i @ logits <= -margin``
  for some row i, by one feasibility MIP with logit columns ``t = L v + o`` (``L v + o``
  are the logits of the encoding), a column ``m`` fixed to the margin and a binary
  selector ``s_i`` per row: ``C_i t + m + M_i s_i <= M_i``, ``sum s = 1``, where
  ``M_i`` is an interval bound on ``C_i t + max margin`` over the box. Infeasible
  means that every input of the box keeps class ``c`` with all margins above
  ``-margin``. Only the k selector rows depend on ``c``: another class rewrites
  their coefficients in the loaded model, which is built once.

- `min_distance` (a function: one model per query): the smallest ``norm`` of ``x - x0``
  over a box with every row of ``C @ logits >= margin`` (a target class winning), in
  displacement columns (`encoding.shifted_network`, `encoding.add_distance`,
  `encoding.add_target`), with the bounds of a region every better point lies in.

Every point returned is re-checked by `Network.forward`: a counterexample the
forward pass does not confirm (a solver tolerance times a big-M can move a
logit by 1e-4) is never returned; the query re-solves with the margin
multiplied by 10 up to `MAX_MARGIN`, and then reports status "error".
"""
from __future__ import annotations

import sys
import time

import numpy as np
import scipy.sparse as sp

from dataclasses import dataclass

from explain_mnist.bounds import Bounds, interval_bounds
from explain_mnist.encoding import MIPModel, add_distance, add_target, encode_network, shifted_network
from explain_mnist.network import Network
from explain_mnist.solvers import SolveResult, choose_solver, make_solver

DEFAULT_MARGIN = 1e-4     # a counterexample must beat class c by at least this much in the MIP
MAX_MARGIN = 1e-2         # the largest margin a failed re-check escalates to
BOX_TOLERANCE = 1e-12


class NetworkMIP:
    """A network's MIP over a box, built once and re-solved per query (see the module docstring)."""

    def __init__(self, net: Network, lo=0.0, hi=1.0, bounds: Bounds | None = None, solver: str = "auto",
                 time_limit: float | None = None, threads: int = 1, verbose: bool = False):
        self.net = net
        self.model: MIPModel = encode_network(net, lo, hi, bounds)
        self.solver = solver
        self.time_limit = time_limit
        self.threads = threads
        self.verbose = verbose
        self.lo = self.model.box_lo.copy()
        self.hi = self.model.box_hi.copy()
        self._lb = self.model.lb.copy()
        self._ub = self.model.ub.copy()
        self._instances: dict = {}       # key -> [solver, base lb pushed, base ub pushed]
        self.solver_choices: dict = {}   # kind -> (name, reason)

    @property
    def n_binaries(self) -> int:
        return self.model.n_binaries

    # -- box -----------------------------------------------------------------------
    def set_box(self, lo, hi, tighten: bool = True) -> None:
        """Change the input box to ``[lo, hi]`` (inside the box the model was built for) without rebuilding.

        With ``tighten``, interval bounds over the new box fix the binaries of
        neurons it makes stable and tighten the ReLU output columns.
        """
        n_in = self.net.n_inputs
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64).reshape(-1), (n_in,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64).reshape(-1), (n_in,)).copy()
        if np.any(lo > hi):
            raise ValueError("the input box is empty: some lo > hi")
        if np.any(lo < self.model.box_lo - BOX_TOLERANCE) or np.any(hi > self.model.box_hi + BOX_TOLERANCE):
            raise ValueError("set_box needs a box inside the one the MIP was built for; build a new NetworkMIP")
        lo, hi = np.maximum(lo, self.model.box_lo), np.minimum(hi, self.model.box_hi)
        m = self.model
        lb, ub = m.lb.copy(), m.ub.copy()
        lb[m.input_cols] = lo[m.input_pixels]
        ub[m.input_cols] = hi[m.input_pixels]
        if tighten and m.layers:
            new = interval_bounds(self.net, lo, hi)
            for k, layer in enumerate(m.layers):
                l = np.maximum(layer.lower, new.lower[k][0])[layer.unstable]
                u = np.minimum(layer.upper, new.upper[k][0])[layer.unstable]
                inactive = u <= 0
                active = ~inactive & (l >= 0)
                ub[layer.y_cols] = np.where(inactive, 0.0, u)
                lb[layer.y_cols] = np.where(active, l, 0.0)
                ub[layer.d_cols] = np.where(inactive, 0.0, 1.0)
                lb[layer.d_cols] = np.where(active, 1.0, 0.0)
        self.lo, self.hi, self._lb, self._ub = lo, hi, lb, ub

    # -- solvers -------------------------------------------------------------------
    def _solver_name(self, kind: str, n_cols: int, n_rows: int) -> str:
        if self.solver != "auto":
            return self.solver
        name, reason = choose_solver(kind, n_cols, n_rows, quadratic=False)
        if self.solver_choices.get(kind, (None,))[0] != name and self.verbose:
            print(f"solver for {kind}: {name} ({reason})", file=sys.stderr)
        self.solver_choices[kind] = (name, reason)
        return name

    def _instance(self, key, kind: str, extend=None):
        """Return the solver for ``key`` (built on first use from the base model, extended by ``extend``), synced to the box."""
        if key not in self._instances:
            model = self.model.copy()
            model.lb, model.ub = self._lb.copy(), self._ub.copy()
            if extend is not None:
                extend(model)
            name = self._solver_name(kind, model.n_cols, model.n_rows)
            solver = make_solver(name, model, time_limit=self.time_limit, threads=self.threads)
            self._instances[key] = [solver, self._lb.copy(), self._ub.copy()]
            return solver
        solver, lb, ub = self._instances[key]
        changed = np.flatnonzero((lb != self._lb) | (ub != self._ub))
        if changed.size:
            solver.set_col_bounds(changed, self._lb[changed], self._ub[changed])
            self._instances[key][1:] = [self._lb.copy(), self._ub.copy()]
        return solver

    def _input_point(self, v: np.ndarray) -> np.ndarray:
        """Return the network input of a solution, clipped to the current box (solvers round at 1e-9)."""
        return np.clip(self.model.input_point(v), self.lo, self.hi)

    def _spec_row(self, c: int, j: int) -> int:
        others = self.net.spec_classes(c)
        if j not in others:
            raise ValueError(f"class {j} is not a competitor of class {c}; competitors: {others}")
        return others.index(j)

    # -- queries -------------------------------------------------------------------
    def max_gap(self, c: int, j: int) -> tuple[float | None, np.ndarray | None, SolveResult]:
        """Return ``(max of logit_j - logit_c over the box, an input attaining it, SolveResult)``.

        For sigmoid nets the gap is ``-logit`` for c == 1 and ``+logit`` for c == 0
        (j = 1 - c). The value is the solver's objective (None without a
        solution); ``result.best_bound`` bounds the true maximum from above.
        """
        C = self.net.spec_matrix(c)[self._spec_row(c, j)]
        solver = self._instance("max_gap", "max_gap")
        gap_row = -(sp.csr_matrix(C) @ self.model.logit_matrix).toarray().ravel()
        objective = np.zeros(solver.model.n_cols)
        objective[: gap_row.size] = gap_row
        solver.set_objective(objective, sense="max", constant=-float(C @ self.model.logit_offset))
        result = solver.solve()
        if result.x is None:
            return result.objective, None, result
        x = self._input_point(result.x)
        forward_gap = -float(C @ self.net.forward(x))
        if abs(forward_gap - result.objective) > 1e-4 * (1.0 + abs(result.objective)):
            result.message += f"; the forward pass gives {forward_gap:.6g} at the returned point"
        return result.objective, x, result

    def _selector_block(self, c: int, t_lo: np.ndarray, t_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(C, M)``: class c's spec rows over the logit columns and their big-M (interval bounds of ``t``)."""
        C = self.net.spec_matrix(c)
        upper = np.maximum(C, 0.0) @ t_hi + np.minimum(C, 0.0) @ t_lo
        return C, np.maximum(upper + MAX_MARGIN, 0.0) + 1.0

    def _add_selector(self, c: int):
        """Return the extension of the base model for counterexample queries, set up for class ``c``."""
        L, o = self.model.logit_matrix, self.model.logit_offset
        lb, ub = self.model.lb, self.model.ub
        t_lo = L.maximum(0) @ lb + L.minimum(0) @ ub + o
        t_hi = L.maximum(0) @ ub + L.minimum(0) @ lb + o
        C, big_m = self._selector_block(c, t_lo, t_hi)
        k, n_out = C.shape
        base = self.model.n_cols
        self._selector = dict(t_cols=base + np.arange(n_out), margin_col=base + n_out,
                              s_cols=base + n_out + 1 + np.arange(k), rows=self.model.n_rows + n_out + np.arange(k),
                              t_lo=t_lo, t_hi=t_hi, c=c)

        def extend(model: MIPModel) -> None:
            model.add_columns(t_lo, t_hi)                                # t = the logits
            model.add_columns(DEFAULT_MARGIN, DEFAULT_MARGIN)            # the margin column
            model.add_columns(np.zeros(k), np.ones(k), integer=True)     # the selectors s
            model.add_rows(sp.hstack([-L, sp.identity(n_out), sp.csr_matrix((n_out, 1 + k))], format="csr"), o, o)
            zeros = sp.csr_matrix((k, base))
            # every logit entry stored, zeros too, so that a class switch edits entries in place
            C_block = sp.csr_matrix((C.ravel(), np.tile(np.arange(n_out), k), np.arange(0, k * n_out + 1, n_out)),
                                    shape=(k, n_out))
            model.add_rows(sp.hstack([zeros, C_block, np.ones((k, 1)), sp.diags(big_m)], format="csr"),
                           -np.inf, big_m)
            model.add_rows(sp.hstack([sp.csr_matrix((1, base + n_out + 1)), np.ones((1, k))], format="csr"), 1.0, 1.0)
        return extend

    def _switch_class(self, solver, c: int) -> None:
        """Rewrite the k selector rows of a loaded counterexample model for class ``c`` (a few coefficient changes)."""
        sel = self._selector
        if sel["c"] == c:
            return
        C, big_m = self._selector_block(c, sel["t_lo"], sel["t_hi"])
        k, n_out = C.shape
        rows = np.repeat(sel["rows"], n_out + 1)
        cols = np.concatenate([np.append(sel["t_cols"], s) for s in sel["s_cols"]])
        values = np.concatenate([np.append(C[i], big_m[i]) for i in range(k)])
        solver.set_coefficients(rows, cols, values)
        solver.set_row_bounds(sel["rows"], -np.inf, big_m)
        sel["c"] = c

    def counterexample(self, c: int, margin: float = DEFAULT_MARGIN) -> tuple[np.ndarray | None, SolveResult]:
        """Return ``(an input of the box not classified c, SolveResult)``, or ``(None, result)``.

        ``None`` with status "infeasible" proves that every input of the box keeps
        ``C @ logits > -margin`` (class c up to the margin); other statuses without
        a point leave the question open. A returned point is confirmed by
        `Network.predict`.
        """
        if not 0 < margin <= MAX_MARGIN:
            raise ValueError(f"margin must be in (0, {MAX_MARGIN}]")
        if "counterexample" in self._instances:
            solver = self._instance("counterexample", "counterexample")
            self._switch_class(solver, c)
        else:
            solver = self._instance("counterexample", "counterexample", self._add_selector(c))
        margin_col = self._selector["margin_col"]
        failures = []
        deadline = None if self.time_limit is None else time.perf_counter() + self.time_limit
        while True:
            solver.set_col_bounds([margin_col], margin, margin)
            if deadline is not None:  # re-solves at larger margins share the one time limit
                solver.time_limit = max(deadline - time.perf_counter(), 0.01)
            result = solver.solve(stop_at_first=True)
            if result.x is None:
                if failures:
                    if result.status == "infeasible":
                        result.status = "error"
                    result.message += ("; " if result.message else "") + (
                        f"points found at margin {failures[0]:g} were not confirmed by the forward pass and none "
                        f"was found at margin {margin:g}: undecided near the decision boundary")
                return None, result
            x = self._input_point(result.x)
            if self.net.predict(x) != c:
                if failures:
                    result.message += f"; needed margin {margin:g} (smaller margins gave unconfirmed points)"
                return x, result
            failures.append(margin)
            if margin * 10 > MAX_MARGIN * (1 + 1e-9):
                result.status = "error"
                result.x, result.objective = None, None
                result.message += (f"; every point found (margins {', '.join(f'{f:g}' for f in failures)}) kept "
                                   f"class {c} under the forward pass: numerical trouble, no counterexample returned")
                return None, result
            margin *= 10


@dataclass
class DistanceSolve:
    """The outcome of `min_distance`: the solver's result and the image it found (None if none)."""

    x: np.ndarray | None
    result: SolveResult
    solver: str
    reason: str
    model_size: str


@dataclass
class DistanceModel:
    """`min_distance`'s problem encoded: the model, its first l0 indicator column, and the box with the pixels no
    neuron sees fixed to x0."""

    net: Network
    x0: np.ndarray
    norm: str
    model: object
    indicators: int
    lo: np.ndarray
    hi: np.ndarray

    def auto_solver(self) -> tuple[str, str]:
        """Return the (solver, reason) that ``solver="auto"`` takes for this model."""
        return choose_solver(f"min_{self.norm}", self.model.n_cols, self.model.n_rows,
                             quadratic=self.model.is_quadratic, integers=self.model.n_binaries > 0)


def distance_model(net: Network, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, bounds: Bounds, norm: str,
                   C: np.ndarray, margin: float, limit: float | None = None, lower: float | None = None,
                   active_columns: bool = False) -> DistanceModel:
    """Return the `DistanceModel` of `min_distance`'s arguments (built once, solved by `solve_distance`)."""
    x0 = np.asarray(x0, dtype=np.float64)
    used = np.asarray(abs(sp.csr_matrix(net.affines[0].W)).sum(axis=0)).ravel() > 0
    lo, hi = np.where(used, lo, x0), np.where(used, hi, x0)     # a pixel no neuron sees never changes
    model = encode_network(shifted_network(net, x0), lo - x0, hi - x0, bounds, active_columns=active_columns)
    indicators = model.n_cols
    add_distance(model, norm, limit=limit, lower=lower)
    add_target(model, C, margin)
    return DistanceModel(net, x0, norm, model, indicators, lo, hi)


def min_distance(net: Network, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, bounds: Bounds, norm: str,
                 C: np.ndarray, margin: float, solver: str = "auto", time_limit: float | None = None,
                 threads: int = 1, cutoff: float | None = None, limit: float | None = None,
                 lower: float | None = None, mip_gap: float | None = None,
                 abs_gap: float | None = None, active_columns: bool = False) -> DistanceSolve:
    """Return the `DistanceSolve` of ``min ||x - x0||_norm`` over ``[lo, hi]`` with ``C @ logits(x) >= margin``.

    ``bounds`` hold on the part of the box the answer can lie in (see `encoding.encode_network`);
    ``cutoff``: only images strictly closer are wanted; ``limit`` / ``lower``: the distance bounds
    of `encoding.add_distance`. The image returned is ``x0 + delta`` clipped to the box, with the
    pixels whose l0 indicator is off set back to ``x0``; the caller checks its class. ``active_columns``:
    see `encoding.encode_network`.
    """
    problem = distance_model(net, x0, lo, hi, bounds, norm, C, margin, limit, lower, active_columns)
    return solve_distance(problem, solver, time_limit, threads, cutoff, mip_gap, abs_gap)


def solve_distance(problem: DistanceModel, solver: str = "auto", time_limit: float | None = None,
                   threads: int = 1, cutoff: float | None = None, mip_gap: float | None = None,
                   abs_gap: float | None = None) -> DistanceSolve:
    """Return the `DistanceSolve` of an encoded `DistanceModel` (see `min_distance`)."""
    model, indicators, x0, lo, hi, norm = (problem.model, problem.indicators, problem.x0, problem.lo, problem.hi,
                                           problem.norm)
    if solver == "auto":
        name, reason = problem.auto_solver()
    else:
        name, reason = solver, "chosen with --solver"
    backend = make_solver(name, model, time_limit=time_limit, threads=threads, mip_gap=mip_gap, abs_gap=abs_gap)
    result = backend.solve(cutoff=cutoff)
    x = None
    if result.x is not None:
        delta = model.input_point(result.x)
        if norm == "l0":
            off = np.zeros(model.n_pixels, dtype=bool)
            off[model.input_pixels] = result.x[indicators + np.arange(model.input_cols.size)] < 0.5
            delta[off] = 0.0
        x = np.clip(x0 + delta, lo, hi)
    return DistanceSolve(x, result, name, reason, model.summary())
