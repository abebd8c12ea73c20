"""The HiGHS backend (``highspy``): bulk load through ``passModel``, re-solve after bound/objective changes.

HiGHS solves MILPs and convex continuous QPs but not MIQPs: a quadratic
objective on a model with integer columns is refused up front (UserError).
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from explain_mnist.errors import UserError
from explain_mnist.solvers.base import MIPSolver, SolveResult, relative_gap

_BANNER_SILENCED = False


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 to /dev/null (HiGHS prints a banner from C++ on its first construction)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _new_highs():
    global _BANNER_SILENCED
    import highspy
    if _BANNER_SILENCED:
        return highspy.Highs()
    with _quiet_stdout():
        h = highspy.Highs()
    _BANNER_SILENCED = True
    return h


class HighsSolver(MIPSolver):
    """A `MIPModel` loaded into HiGHS."""

    name = "highs"

    def _load(self) -> None:
        import highspy
        self._hs = highspy
        h = self._h = _new_highs()
        h.setOptionValue("output_flag", bool(self.verbose))
        h.setOptionValue("threads", self.threads)
        h.setOptionValue("mip_feasibility_tolerance", 1e-7)
        m = self.model
        A = m.A.tocsr()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = m.n_cols, m.n_rows
        lp.col_cost_ = m.c
        lp.col_lower_, lp.col_upper_ = m.lb, m.ub
        lp.row_lower_, lp.row_upper_ = m.row_lower, m.row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = m.n_cols, m.n_rows
        lp.a_matrix_.start_ = A.indptr.astype(np.int32)
        lp.a_matrix_.index_ = A.indices.astype(np.int32)
        lp.a_matrix_.value_ = A.data
        self._has_integers = bool(np.any(m.integrality))
        if self._has_integers:
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                               for i in m.integrality]
        self._check(h.passModel(lp), "passModel")
        if not self._has_integers:
            # an LP is re-solved after bound/objective changes: presolve would discard the warm-start basis
            h.setOptionValue("presolve", "off")
        self._has_hessian = False

    def _check(self, status, what: str) -> None:
        if status == self._hs.HighsStatus.kError:
            raise RuntimeError(f"HiGHS {what} failed")

    def _set_col_bounds(self, idx, lb, ub) -> None:
        self._check(self._h.changeColsBounds(idx.size, idx.astype(np.int32), lb, ub), "changeColsBounds")

    def _set_coefficients(self, rows, cols, values) -> None:
        for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist()):
            self._check(self._h.changeCoeff(r, c, v), "changeCoeff")

    def _set_row_bounds(self, idx, lower, upper) -> None:
        self._check(self._h.changeRowsBounds(idx.size, idx.astype(np.int32), lower, upper), "changeRowsBounds")

    def _set_objective(self, c, q, sense, constant) -> None:
        hs, h = self._hs, self._h
        if q is not None and self._has_integers:
            raise UserError("HiGHS has no MIQP (a quadratic objective with integer variables); use --solver scip or cplex")
        n = self.model.n_cols
        self._check(h.changeColsCost(n, np.arange(n, dtype=np.int32), c), "changeColsCost")
        self._check(h.changeObjectiveOffset(constant), "changeObjectiveOffset")
        self._check(h.changeObjectiveSense(hs.ObjSense.kMinimize if sense == "min" else hs.ObjSense.kMaximize),
                    "changeObjectiveSense")
        if q is not None or self._has_hessian:
            hessian = hs.HighsHessian()
            hessian.dim_ = n
            hessian.format_ = hs.HessianFormat.kTriangular
            diag = np.zeros(n) if q is None else 2.0 * q     # HiGHS minimises c x + x'Qx / 2
            nz = np.flatnonzero(diag)
            start = np.zeros(n + 1, dtype=np.int32)
            start[1:] = np.cumsum(np.isin(np.arange(n), nz))
            hessian.start_ = start
            hessian.index_ = nz.astype(np.int32)
            hessian.value_ = diag[nz]
            status = h.passHessian(hessian)
            if status != hs.HighsStatus.kOk:
                raise RuntimeError(f"HiGHS refused the quadratic objective (passHessian status {status})")
            self._has_hessian = q is not None

    def _solve(self, cutoff, stop_at_first) -> SolveResult:
        # HiGHS's MIP has no usable cutoff option (objective_bound did not prune here); the base class filters
        hs, h = self._hs, self._h
        h.setOptionValue("time_limit", float(self.time_limit) if self.time_limit is not None else np.inf)
        h.setOptionValue("mip_max_improving_sols", 1 if stop_at_first else 2147483647)
        if self.mip_gap is not None:
            h.setOptionValue("mip_rel_gap", float(self.mip_gap))
        if self.abs_gap is not None:
            h.setOptionValue("mip_abs_gap", float(self.abs_gap))
        # a cutoff means the caller already holds a verified solution: RINS and RENS, whose sub-MIPs look for one
        # near the LP optimum, would mostly find it again
        for heuristic in ("mip_heuristic_run_rins", "mip_heuristic_run_rens"):
            h.setOptionValue(heuristic, cutoff is None)
        run_status = h.run()
        model_status = h.getModelStatus()
        info = h.getInfo()
        message = h.modelStatusToString(model_status)
        if run_status == hs.HighsStatus.kError and model_status in (hs.HighsModelStatus.kNotset,
                                                                     hs.HighsModelStatus.kSolveError,
                                                                     hs.HighsModelStatus.kModelError):
            return SolveResult("error", None, None, None, None, 0, 0.0, self.name, f"HiGHS run failed: {message}")
        x = None
        objective = None
        if info.primal_solution_status == 2:          # feasible
            x = np.array(h.getSolution().col_value, dtype=np.float64)
            objective = float(info.objective_function_value)
        nodes = int(info.mip_node_count) if self._has_integers else 0
        if self._has_integers:
            bound = float(info.mip_dual_bound)
        else:
            bound = objective if model_status == hs.HighsModelStatus.kOptimal else None
        bound = bound if bound is not None and np.isfinite(bound) else None
        S = hs.HighsModelStatus
        if model_status == S.kOptimal:
            status = "optimal"
            if self.mip_gap is not None and self._has_integers and (relative_gap(objective, bound) or 0.0) > 1e-9:
                status = "gap_limit"
        elif model_status == S.kInfeasible:
            status = "infeasible"
        elif model_status in (S.kUnbounded, S.kUnboundedOrInfeasible):
            status = "unbounded" if model_status == S.kUnbounded else "infeasible"
            message += "" if model_status == S.kUnbounded else " (treated as infeasible: the box is bounded)"
        elif model_status == S.kTimeLimit:
            status = "time_limit"
        elif model_status == S.kSolutionLimit:
            status = self._stop_status(stop_at_first, objective, bound) if stop_at_first and x is not None else "node_limit"
        elif model_status == S.kIterationLimit:
            status = "node_limit"
        elif model_status == S.kInterrupt:
            status = "interrupted"
        else:
            status = "error"
        if status == "infeasible":
            x, objective = None, None
        duals = None
        if not self._has_integers and info.dual_solution_status == 2:
            duals = np.array(h.getSolution().row_dual, dtype=np.float64)
        return SolveResult(status, objective, bound, relative_gap(objective, bound), x, nodes, 0.0, self.name, message,
                           duals)
