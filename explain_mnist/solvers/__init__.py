"""MIP backends behind one interface (`MIPSolver`, `SolveResult` in `base`), chosen by name.

Each backend module imports its solver lazily, so only the solvers actually
used need to be installed. `make_solver` turns a missing or unknown solver
into a UserError that says what to install or use instead; `choose_solver`
picks one for ``--solver auto`` from a table of preferences by problem kind,
taking CPLEX only when the model fits the installed edition.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from explain_mnist.errors import UserError
from explain_mnist.solvers.base import STATUSES, MIPSolver, SolveResult  # noqa: F401


@dataclass(frozen=True)
class SolverInfo:
    """Where a backend lives and what provides it."""

    module: str
    class_name: str
    import_name: str
    pip_package: str

    def load(self) -> type:
        """Return the backend class (imports the backend module, not yet the solver)."""
        return getattr(importlib.import_module(self.module), self.class_name)


SOLVERS = {
    "highs": SolverInfo("explain_mnist.solvers.highs", "HighsSolver", "highspy", "highspy"),
    "scip": SolverInfo("explain_mnist.solvers.scip", "ScipSolver", "pyscipopt", "pyscipopt"),
    "cplex": SolverInfo("explain_mnist.solvers.cplex", "CplexSolver", "cplex", "cplex"),
}

# --solver auto: preferred order per problem kind (the first installed one that can take the model wins).
# Measured here (1 thread, max_gap on the shipped nets over [0,1]^784): CPLEX 0.03-2.2 s, HiGHS 0.1-2.8 s,
# SCIP 0.9-32 s; counterexamples with most pixels fixed: SCIP slightly ahead of HiGHS, as on min L1/L-inf
# (2-3x) and per explanation oracle call. HiGHS never takes a quadratic objective with integers (no MIQP).
PREFERENCES = {
    "max_gap": ("cplex", "highs", "scip"),
    "counterexample": ("cplex", "scip", "highs"),
    "min_l0": ("cplex", "scip", "highs"),
    "min_l1": ("cplex", "scip", "highs"),
    "min_linf": ("cplex", "scip", "highs"),
    "min_l2": ("cplex", "scip", "highs"),   # highs only when no binary is left: a convex QP
}

_installed: dict[str, bool] = {}


def is_installed(name: str) -> bool:
    """Return True if the solver ``name`` can be imported (checked once)."""
    if name not in _installed:
        try:
            importlib.import_module(SOLVERS[name].import_name)
            _installed[name] = True
        except Exception:      # an installed but broken solver counts as missing
            _installed[name] = False
    return _installed[name]


def available_solvers() -> list[str]:
    """Return the names of the installed solvers, in registry order."""
    return [name for name in SOLVERS if is_installed(name)]


def _unknown(name: str) -> UserError:
    return UserError(f"unknown solver {name!r}; supported: {', '.join(SOLVERS)} (or auto)")


def _missing(name: str) -> UserError:
    others = [n for n in available_solvers() if n != name]
    hint = f"use --solver {' or --solver '.join(others)}" if others else "no other solver is installed either"
    return UserError(f"solver {name!r} is not installed: pip install {SOLVERS[name].pip_package}; or {hint}")


def require(name: str) -> None:
    """Raise the UserError that says what to do if the solver ``name`` is unknown or not installed."""
    if name not in SOLVERS:
        raise _unknown(name)
    if not is_installed(name):
        raise _missing(name)


def make_solver(name: str, model, time_limit: float | None = None, threads: int = 1, **options) -> MIPSolver:
    """Return the backend ``name`` with ``model`` loaded (UserError if unknown or not installed)."""
    require(name)
    return SOLVERS[name].load()(model, time_limit=time_limit, threads=threads, **options)


def choose_solver(kind: str, n_cols: int, n_rows: int, quadratic: bool = False,
                  integers: bool = True) -> tuple[str, str]:
    """Return ``(solver name, one-line reason)`` for ``--solver auto`` on a problem of this kind and size.

    ``quadratic`` and ``integers`` say whether the objective has squares and the model integer columns:
    HiGHS takes a quadratic objective only without them (a convex QP).
    """
    if kind not in PREFERENCES:
        raise ValueError(f"unknown problem kind {kind!r}; known: {', '.join(PREFERENCES)}")
    skipped = []
    for name in PREFERENCES[kind]:
        if not is_installed(name):
            skipped.append(f"{name} not installed")
            continue
        if name == "highs" and quadratic and integers:
            skipped.append("highs has no MIQP")
            continue
        if name == "cplex":
            from explain_mnist.solvers.cplex import COMMUNITY_LIMIT, fits_cplex
            if not fits_cplex(n_cols, n_rows):
                skipped.append(f"cplex Community Edition limit {COMMUNITY_LIMIT} < {n_cols} columns/{n_rows} rows")
                continue
        reason = f"preferred for {kind} on {n_cols} columns x {n_rows} rows"
        return name, reason + (f" ({'; '.join(skipped)})" if skipped else "")
    raise UserError(f"no installed solver can take this {kind} problem ({'; '.join(skipped)}); "
                    f"pip install {' or '.join(SOLVERS[n].pip_package for n in PREFERENCES[kind])}")
