"""The interface every MIP backend implements, and its result type.

A backend loads a `MIPModel` once, in bulk, and then re-solves it after
changes of column bounds, row bounds, matrix entries or the objective, without
rebuilding. Every
solution a backend reports is re-checked against the model (bounds, rows,
integrality) before it is returned: a point that the solver claims but that
does not satisfy the model (e.g. a stale stored solution) is dropped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from explain_mnist.encoding import MIPModel

STATUSES = ("optimal", "infeasible", "time_limit", "node_limit", "gap_limit", "solution_limit", "unbounded",
            "interrupted", "error")

# largest bound/row/integrality violation a reported solution may have before it is rejected
SOLUTION_TOLERANCE = 1e-4


@dataclass
class SolveResult:
    """The outcome of one solve.

    ``status`` is one of `STATUSES` ("solution_limit": stopped at the first
    solution, not proved optimal; "interrupted": the solver caught Ctrl-C itself); ``objective`` is the value of the best
    solution (None without one), ``best_bound`` the proved bound on the optimum,
    ``gap`` the relative gap ``|objective - best_bound| / max(|objective|, 1e-10)``,
    ``x`` the column values of the best solution (None without one).
    """

    status: str
    objective: float | None
    best_bound: float | None
    gap: float | None
    x: np.ndarray | None
    nodes: int
    seconds: float
    solver: str
    message: str = ""
    row_duals: np.ndarray | None = None   # an LP's row multipliers, for `MIPModel.dual_lower_bound`

    @property
    def has_solution(self) -> bool:
        return self.x is not None


def relative_gap(objective, bound) -> float | None:
    """Return ``|objective - bound| / max(|objective|, 1e-10)``, or None if either is missing or infinite."""
    if objective is None or bound is None or not math.isfinite(objective) or not math.isfinite(bound):
        return None
    return abs(objective - bound) / max(abs(objective), 1e-10)


def _index_bounds(idx, lower, upper, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``idx`` as int64 and ``lower``, ``upper`` broadcast to it; refuse a lower bound above its upper."""
    idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), idx.shape).copy()
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), idx.shape).copy()
    if np.any(lower > upper):
        raise ValueError(f"a {what} lower bound exceeds its upper bound")
    return idx, lower, upper


class MIPSolver:
    """A loaded model that can be re-solved after bound, coefficient or objective changes (one subclass per solver)."""

    name = "base"

    def __init__(self, model: MIPModel, time_limit: float | None = None, threads: int = 1,
                 verbose: bool = False, mip_gap: float | None = None, abs_gap: float | None = None):
        self.model = model.copy()
        self.time_limit = time_limit
        self.threads = max(1, int(threads))
        self.verbose = verbose
        self.mip_gap = mip_gap
        self.abs_gap = abs_gap      # absolute gap |objective - bound| to stop at (None: the solver's default)
        self._entry_keys = None
        self._check_size()
        self._load()
        self.set_objective(self.model.c, self.model.q, self.model.sense, self.model.c0)

    # -- what a backend implements -------------------------------------------------
    def _check_size(self) -> None:
        """Raise UserError if this backend cannot take a model of this size."""

    def _load(self) -> None:
        raise NotImplementedError

    def _set_col_bounds(self, idx: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> None:
        raise NotImplementedError

    def _set_objective(self, c: np.ndarray, q: np.ndarray | None, sense: str, constant: float) -> None:
        raise NotImplementedError

    def _set_coefficients(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        raise NotImplementedError

    def _set_row_bounds(self, idx: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        raise NotImplementedError

    def _solve(self, cutoff: float | None, stop_at_first: bool) -> SolveResult:
        raise NotImplementedError

    # -- the interface ----------------------------------------------------------------
    def set_col_bounds(self, idx, lb, ub) -> None:
        """Set the bounds of the columns ``idx`` (arguments broadcast)."""
        idx, lb, ub = _index_bounds(idx, lb, ub, "column")
        self.model.lb[idx] = lb
        self.model.ub[idx] = ub
        if idx.size:
            self._set_col_bounds(idx, lb, ub)

    def set_coefficients(self, rows, cols, values) -> None:
        """Set the matrix entries ``A[rows[i], cols[i]] = values[i]`` (0 removes an entry)."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        cols = np.atleast_1d(np.asarray(cols, dtype=np.int64))
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), rows.shape).copy()
        if rows.shape != cols.shape:
            raise ValueError("rows and cols must have the same length")
        positions = self._entry_positions(rows, cols)
        if np.all(positions >= 0):                      # existing entries: in place, no change of structure
            self.model.A.data[positions] = values
        else:
            A = self.model.A.tolil()
            A[rows, cols] = values
            self.model.A = A.tocsr()
            self._entry_keys = None
        if rows.size:
            self._set_coefficients(rows, cols, values)

    def _entry_positions(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Return the positions of entries ``(rows, cols)`` in ``model.A.data``, -1 where there is none."""
        A = self.model.A
        if self._entry_keys is None:     # row-major keys of the stored entries, sorted
            A.sort_indices()
            self._entry_keys = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr)) * A.shape[1] \
                + A.indices
        if self._entry_keys.size == 0:
            return np.full(rows.shape, -1)
        keys = rows * A.shape[1] + cols
        found = np.minimum(np.searchsorted(self._entry_keys, keys), self._entry_keys.size - 1)
        return np.where(self._entry_keys[found] == keys, found, -1)

    def set_row_bounds(self, idx, lower, upper) -> None:
        """Set the bounds ``lower <= A v <= upper`` of the rows ``idx`` (arguments broadcast)."""
        idx, lower, upper = _index_bounds(idx, lower, upper, "row")
        self.model.row_lower[idx] = lower
        self.model.row_upper[idx] = upper
        if idx.size:
            self._set_row_bounds(idx, lower, upper)

    def set_objective(self, c, q=None, sense: str = "min", constant: float = 0.0) -> None:
        """Set the objective ``sense  c v + sum(q v^2) + constant`` (``q`` diagonal, None = linear)."""
        if sense not in ("min", "max"):
            raise ValueError(f"objective sense must be 'min' or 'max', not {sense!r}")
        c = np.broadcast_to(np.asarray(c, dtype=np.float64), (self.model.n_cols,)).copy()
        if q is not None:
            q = np.broadcast_to(np.asarray(q, dtype=np.float64), (self.model.n_cols,)).copy()
            if not np.any(q != 0):
                q = None
        if q is not None and ((sense == "min" and np.any(q < 0)) or (sense == "max" and np.any(q > 0))):
            raise ValueError("only convex quadratic objectives: q >= 0 when minimising, q <= 0 when maximising")
        self.model.c, self.model.q, self.model.sense, self.model.c0 = c, q, sense, float(constant)
        self._set_objective(c, q, sense, float(constant))

    def solve(self, cutoff: float | None = None, stop_at_first: bool = False) -> SolveResult:
        """Solve the current model and return a `SolveResult`.

        ``cutoff``: only solutions strictly better than this objective value are
        wanted (none -> status "infeasible"); SCIP and CPLEX prune with it, and
        every backend's answer is filtered by it. ``stop_at_first``: stop at the first
        feasible solution found.
        """
        start = time.perf_counter()
        result = self._solve_empty() if self.model.n_cols == 0 else self._solve(cutoff, stop_at_first)
        result.seconds = time.perf_counter() - start
        result = self._checked(result)
        if cutoff is not None and result.objective is not None and self._sense_sign() * (result.objective - cutoff) >= 0:
            # solvers may ignore the cutoff (HiGHS) or return an earlier incumbent (CPLEX): filter here
            note = f"no solution better than the cutoff {cutoff:g} (best found {result.objective:g})"
            result.x, result.objective, result.gap = None, None, None
            result.message = (result.message + "; " if result.message else "") + note
            if result.status in ("optimal", "gap_limit"):
                result.status = "infeasible"
        return result

    def _solve_empty(self) -> SolveResult:
        """Solve a model without columns (every input fixed) here: some solvers refuse empty models."""
        v = np.zeros(0)
        if self.model.violation(v) > 0:
            return SolveResult("infeasible", None, None, None, None, 0, 0.0, self.name, "no columns; a row excludes 0")
        value = self.model.c0
        return SolveResult("optimal", value, value, 0.0, v, 0, 0.0, self.name, "no columns: nothing to solve")

    def _checked(self, result: SolveResult) -> SolveResult:
        if result.x is None:
            return result
        violation = self.model.violation(result.x)
        if violation > SOLUTION_TOLERANCE:
            note = f"{self.name} reported a solution that violates the model by {violation:.2g}; dropped"
            result.x, result.objective, result.gap = None, None, None
            result.message = (result.message + "; " if result.message else "") + note
            if result.status in ("optimal", "solution_limit", "gap_limit"):
                result.status = "error"
        return result

    def _sense_sign(self) -> float:
        return 1.0 if self.model.sense == "min" else -1.0

    def _stop_status(self, stop_at_first: bool, objective, bound) -> str:
        """Return the status of a run stopped at a solution limit: "optimal" if the gap is closed anyway."""
        gap = relative_gap(objective, bound)
        if objective is not None and bound is not None and (abs(objective - bound) <= 1e-9 or (gap is not None and gap <= 1e-9)):
            return "optimal"
        return "solution_limit" if stop_at_first else "node_limit"
