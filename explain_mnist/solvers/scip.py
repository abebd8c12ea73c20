"""The SCIP backend (``pyscipopt``).

pyscipopt has no bulk matrix loader: columns come in one `addMatrixVar` call
and each row is one vectorised dot product of a variable slice with the row's
CSR values. Before any change after a solve the transformed problem is freed
(`freeTransform`), as SCIP requires. A quadratic objective ``sum q v^2`` is
moved into a constraint ``sum q v^2 <= t`` on an extra variable ``t`` (SCIP's
objective is linear); the objective's constant is kept outside SCIP.
``threads`` is ignored: the PyPI build of SCIP solves with one thread.
"""
from __future__ import annotations

import numpy as np

from explain_mnist.solvers.base import MIPSolver, SolveResult, relative_gap

_SCIP_INFINITY = 1e20

_STATUS = {
    "optimal": "optimal", "infeasible": "infeasible", "unbounded": "unbounded", "inforunbd": "infeasible",
    "timelimit": "time_limit", "nodelimit": "node_limit", "totalnodelimit": "node_limit",
    "stallnodelimit": "node_limit", "gaplimit": "gap_limit", "sollimit": "solution_limit",
    "bestsollimit": "solution_limit", "primallimit": "solution_limit", "userinterrupt": "interrupted",
}


# Parameters set on every model. Root cut rounds: SCIP's default is no limit; on our min-distance MIPs most of
# the time went into rounds that moved the root bound little (benchmarks/RESULTS.md, "Measurements of 2026-12-03").
PARAMETERS = {"separating/maxroundsroot": 5}


def _finite(values: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(values, dtype=np.float64), -_SCIP_INFINITY, _SCIP_INFINITY)


class ScipSolver(MIPSolver):
    """A `MIPModel` loaded into SCIP."""

    name = "scip"

    def _load(self) -> None:
        import pyscipopt
        self._scip = pyscipopt
        s = self._m = pyscipopt.Model()
        if not self.verbose:
            s.hideOutput()
        for name, value in PARAMETERS.items():
            s.setParam(name, value)
        m = self.model
        vtype = np.where(m.integrality, "I", "C")
        self._vars = s.addMatrixVar((m.n_cols,), vtype=vtype, lb=_finite(m.lb), ub=_finite(m.ub), obj=0.0)
        A = m.A.tocsr()
        lower, upper = m.row_lower, m.row_upper
        conss, rows = [], []
        for i in range(A.shape[0]):
            start, end = A.indptr[i], A.indptr[i + 1]
            if start == end:
                if lower[i] > 1e-9 or upper[i] < -1e-9:
                    raise ValueError(f"row {i} has no coefficients and bounds [{lower[i]}, {upper[i]}] that exclude 0")
                continue
            expr = self._vars[A.indices[start:end]] @ A.data[start:end]
            conss.append(pyscipopt.ExprCons(expr, lhs=None if np.isneginf(lower[i]) else float(lower[i]),
                                            rhs=None if np.isposinf(upper[i]) else float(upper[i])))
            rows.append(i)
        self._row_cons = dict(zip(rows, s.addConss(conss))) if conss else {}
        self._quad_var = None
        self._quad_cons = None
        self._constant = 0.0

    def _editable(self) -> None:
        self._m.freeTransform()

    def _set_col_bounds(self, idx, lb, ub) -> None:
        self._editable()
        s, variables = self._m, self._vars
        for i, low, up in zip(idx.tolist(), _finite(lb).tolist(), _finite(ub).tolist()):
            # SCIP refuses a lower bound above the current upper bound: widen first
            s.chgVarUb(variables[i], _SCIP_INFINITY)
            s.chgVarLb(variables[i], low)
            s.chgVarUb(variables[i], up)

    def _row(self, i: int):
        if i not in self._row_cons:
            raise ValueError(f"row {i} was loaded without coefficients; SCIP cannot edit it")
        return self._row_cons[i]

    def _set_coefficients(self, rows, cols, values) -> None:
        self._editable()
        for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist()):
            self._m.chgCoefLinear(self._row(r), self._vars[c], v)

    def _set_row_bounds(self, idx, lower, upper) -> None:
        self._editable()
        for i, low, up in zip(idx.tolist(), lower.tolist(), upper.tolist()):
            cons = self._row(i)
            self._m.chgLhs(cons, None if np.isneginf(low) else low)
            self._m.chgRhs(cons, None if np.isposinf(up) else up)

    def _set_objective(self, c, q, sense, constant) -> None:
        self._editable()
        s = self._m
        nz = np.flatnonzero(c)
        expr = self._vars[nz] @ c[nz] if nz.size else self._scip.Expr()
        if self._quad_cons is not None:
            s.delCons(self._quad_cons)
            self._quad_cons = None
        if q is not None:
            if self._quad_var is None:
                self._quad_var = s.addVar("quadratic_part", lb=None, ub=None)
            qz = np.flatnonzero(q)
            squares = self._vars[qz] * self._vars[qz]
            sign = 1.0 if sense == "min" else -1.0
            # min: q.v^2 <= t, objective + t;  max (q <= 0): t <= q.v^2, objective + t
            self._quad_cons = s.addCons(sign * (squares @ q[qz]) <= sign * self._quad_var)
            expr = expr + self._quad_var
        s.setObjective(expr, "minimize" if sense == "min" else "maximize")
        self._constant = constant

    def _solve(self, cutoff, stop_at_first) -> SolveResult:
        s = self._m
        self._editable()
        s.setParam("limits/time", float(self.time_limit) if self.time_limit is not None else 1e20)
        s.setParam("limits/solutions", 1 if stop_at_first else -1)
        s.setParam("limits/gap", float(self.mip_gap) if self.mip_gap is not None else 0.0)
        s.setParam("limits/absgap", float(self.abs_gap) if self.abs_gap is not None else 0.0)
        sign = self._sense_sign()
        s.setObjlimit(float(cutoff - self._constant) if cutoff is not None else sign * s.infinity())
        try:
            s.optimize()
        except Exception as error:          # SCIP raises on internal errors; report them as a status
            return SolveResult("error", None, None, None, None, 0, 0.0, self.name, f"SCIP failed: {error}")
        scip_status = s.getStatus()
        status = _STATUS.get(scip_status, "error")
        x = objective = None
        if s.getNSols() > 0:
            x = np.asarray(s.getVal(self._vars), dtype=np.float64).reshape(-1)
            objective = float(s.getObjVal()) + self._constant
        bound = float(s.getDualbound()) + self._constant
        bound = bound if abs(bound) < 1e19 else None
        message = scip_status
        if status == "solution_limit":
            status = self._stop_status(stop_at_first, objective, bound)
        if status == "infeasible":
            x = objective = None
            if cutoff is not None:
                message += "; no solution better than the cutoff"
        elif status == "optimal" and x is None:
            status, message = "error", f"SCIP reported {scip_status} without a solution"
        return SolveResult(status, objective, bound, relative_gap(objective, bound), x,
                           int(s.getNTotalNodes()), 0.0, self.name, message)
