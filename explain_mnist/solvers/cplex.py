"""The CPLEX backend (``cplex`` Python API): bulk ``variables.add`` and ``linear_constraints.add`` from CSR.

The ``cplex`` wheel on PyPI is the Community Edition: at most 1000 variables
and 1000 constraints ("CPLEX Error 1016"). Whether the installed CPLEX is
that edition is found out once per process (a tiny 1001-column LP), and only
when a model is over the limit; a model over the limit of the Community
Edition is refused with a UserError before CPLEX is called, and error 1016 is
still caught and turned into the same UserError.
"""
from __future__ import annotations

import numpy as np

from explain_mnist.errors import UserError
from explain_mnist.solvers.base import MIPSolver, SolveResult, relative_gap

COMMUNITY_LIMIT = 1000
_community_edition: bool | None = None


def _silence(problem) -> None:
    for stream in (problem.set_log_stream, problem.set_error_stream, problem.set_warning_stream,
                   problem.set_results_stream):
        stream(None)


def is_community_edition() -> bool:
    """Return True if the installed CPLEX refuses models over 1000 variables (checked once per process)."""
    global _community_edition
    if _community_edition is None:
        import cplex
        probe = cplex.Cplex()
        _silence(probe)
        n = COMMUNITY_LIMIT + 1
        probe.variables.add(obj=[1.0] * n, lb=[0.0] * n, ub=[1.0] * n)
        try:
            probe.solve()
            _community_edition = False
        except cplex.exceptions.CplexSolverError as error:
            _community_edition = _error_code(error) == 1016
        finally:
            probe.end()
    return _community_edition


def _error_code(error) -> int | None:
    args = getattr(error, "args", ())
    return args[2] if len(args) > 2 and isinstance(args[2], int) else None


def size_error(n_cols: int, n_rows: int) -> UserError:
    """Return the UserError for a model over the Community Edition's limit."""
    return UserError(f"model has {n_cols} variables and {n_rows} constraints, over the CPLEX Community Edition "
                     f"limit of {COMMUNITY_LIMIT}; use --solver highs or --solver scip (or a full CPLEX licence)")


def fits_cplex(n_cols: int, n_rows: int) -> bool:
    """Return True if CPLEX can take a model of this size (always with a full licence)."""
    return (n_cols <= COMMUNITY_LIMIT and n_rows <= COMMUNITY_LIMIT) or not is_community_edition()


def _cplex_rows(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return CPLEX's (senses, rhs, ranges) of the rows ``lower <= A v <= upper``."""
    senses = np.where(lower == upper, "E", np.where(np.isneginf(lower), "L", np.where(np.isposinf(upper), "G", "R")))
    rhs = np.where(np.isneginf(lower), upper, lower)
    return senses, rhs, np.where(senses == "R", upper - lower, 0.0)


def _cplex_bounds(values: np.ndarray) -> list:
    import cplex
    return np.clip(values, -cplex.infinity, cplex.infinity).tolist()


class CplexSolver(MIPSolver):
    """A `MIPModel` loaded into CPLEX."""

    name = "cplex"

    def _check_size(self) -> None:
        if not fits_cplex(self.model.n_cols, self.model.n_rows):
            raise size_error(self.model.n_cols, self.model.n_rows)

    def _load(self) -> None:
        import cplex
        self._cplex = cplex
        p = self._p = cplex.Cplex()
        if not self.verbose:
            _silence(p)
        m = self.model
        self._has_integers = bool(np.any(m.integrality))
        kwargs = dict(lb=_cplex_bounds(m.lb), ub=_cplex_bounds(m.ub))
        if self._has_integers:
            kwargs["types"] = "".join(np.where(m.integrality, "I", "C"))
        p.variables.add(**kwargs)
        A = m.A.tocsr()
        lower, upper = m.row_lower, m.row_upper
        senses, rhs, ranges = _cplex_rows(lower, upper)
        indices = np.split(A.indices, A.indptr[1:-1])
        values = np.split(A.data, A.indptr[1:-1])
        if A.shape[0]:
            p.linear_constraints.add(
                lin_expr=[cplex.SparsePair(ind.tolist(), val.tolist()) for ind, val in zip(indices, values)],
                senses="".join(senses), rhs=rhs.tolist(), range_values=ranges.tolist())
        p.parameters.threads.set(self.threads)
        p.parameters.mip.tolerances.integrality.set(1e-7)
        self._has_quadratic = False

    def _set_col_bounds(self, idx, lb, ub) -> None:
        idx = idx.tolist()
        # set the upper bounds first where the new lower bound would exceed the current upper bound
        self._p.variables.set_upper_bounds(list(zip(idx, [self._cplex.infinity] * len(idx))))
        self._p.variables.set_lower_bounds(list(zip(idx, _cplex_bounds(lb))))
        self._p.variables.set_upper_bounds(list(zip(idx, _cplex_bounds(ub))))

    def _set_coefficients(self, rows, cols, values) -> None:
        self._p.linear_constraints.set_coefficients(list(zip(rows.tolist(), cols.tolist(), values.tolist())))

    def _set_row_bounds(self, idx, lower, upper) -> None:
        senses, rhs, ranges = _cplex_rows(lower, upper)
        rows = idx.tolist()
        self._p.linear_constraints.set_senses(list(zip(rows, senses.tolist())))
        self._p.linear_constraints.set_rhs(list(zip(rows, rhs.tolist())))
        self._p.linear_constraints.set_range_values(list(zip(rows, ranges.tolist())))

    def _set_objective(self, c, q, sense, constant) -> None:
        p = self._p
        n = self.model.n_cols
        p.objective.set_linear(list(zip(range(n), c.tolist())))
        p.objective.set_offset(constant)
        p.objective.set_sense(p.objective.sense.minimize if sense == "min" else p.objective.sense.maximize)
        if q is not None or self._has_quadratic:
            # CPLEX's objective is c x + x'Qx / 2
            p.objective.set_quadratic((2.0 * q).tolist() if q is not None else [0.0] * n)
            self._has_quadratic = q is not None

    def _solve(self, cutoff, stop_at_first) -> SolveResult:
        cplex, p = self._cplex, self._p
        params = p.parameters
        params.timelimit.set(float(self.time_limit) if self.time_limit is not None else params.timelimit.default())
        params.mip.limits.solutions.set(1 if stop_at_first else params.mip.limits.solutions.default())
        params.mip.tolerances.mipgap.set(self.mip_gap if self.mip_gap is not None else params.mip.tolerances.mipgap.default())
        params.mip.tolerances.absmipgap.set(self.abs_gap if self.abs_gap is not None
                                            else params.mip.tolerances.absmipgap.default())
        params.mip.tolerances.uppercutoff.set(cutoff if cutoff is not None and self.model.sense == "min"
                                              else params.mip.tolerances.uppercutoff.default())
        params.mip.tolerances.lowercutoff.set(cutoff if cutoff is not None and self.model.sense == "max"
                                              else params.mip.tolerances.lowercutoff.default())
        try:
            p.solve()
        except cplex.exceptions.CplexSolverError as error:
            if _error_code(error) == 1016:
                global _community_edition
                _community_edition = True
                raise size_error(self.model.n_cols, self.model.n_rows) from error
            return SolveResult("error", None, None, None, None, 0, 0.0, self.name, f"CPLEX failed: {error}")
        sol = p.solution
        code = sol.get_status()
        message = sol.get_status_string()
        S = sol.status
        x = objective = None
        if sol.is_primal_feasible():
            x = np.array(sol.get_values(), dtype=np.float64)
            objective = float(sol.get_objective_value())
        mip = self._has_integers
        bound = None
        nodes = 0
        if mip:
            nodes = int(sol.progress.get_num_nodes_processed())
            try:
                bound = float(sol.MIP.get_best_objective())
            except cplex.exceptions.CplexError:
                bound = None
        elif code in (S.optimal, S.optimal_tolerance):
            bound = objective
        if bound is not None and abs(bound) >= 1e20:
            bound = None
        if code in (S.MIP_optimal, S.optimal, S.MIP_optimal_infeasible, S.optimal_infeasible):
            status = "optimal"         # *_infeasible: optimal with unscaled infeasibilities; the solution is re-checked
        elif code == S.optimal_tolerance:
            status = "gap_limit" if self.mip_gap is not None else "optimal"
        elif code in (S.MIP_infeasible, S.infeasible, S.MIP_infeasible_or_unbounded, S.infeasible_or_unbounded):
            status = "infeasible"
        elif code in (S.MIP_unbounded, S.unbounded):
            status = "unbounded"
        elif code in (S.MIP_time_limit_feasible, S.MIP_time_limit_infeasible, S.abort_time_limit,
                      S.MIP_dettime_limit_feasible, S.MIP_dettime_limit_infeasible, S.abort_dettime_limit):
            status = "time_limit"
        elif code in (S.node_limit_feasible, S.node_limit_infeasible):
            status = "node_limit"
        elif code == S.solution_limit:
            status = self._stop_status(stop_at_first, objective, bound)
        elif code in (S.abort_user, S.MIP_abort_feasible, S.MIP_abort_infeasible):
            status = "interrupted"
        else:
            status = "error"
        if status == "infeasible":
            x = objective = None
            if cutoff is not None:
                message += "; no solution better than the cutoff"
        return SolveResult(status, objective, bound, relative_gap(objective, bound), x, nodes, 0.0, self.name, message)
