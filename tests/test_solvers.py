"""Every backend finds the brute-force optimum of small MILPs/MIQPs; limits and misuse give UserError or a status."""
import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

import explain_mnist.solvers as solvers
from explain_mnist.encoding import MIPModel
from explain_mnist.errors import UserError
from explain_mnist.solvers import SOLVERS, available_solvers, choose_solver, make_solver
from explain_mnist.solvers.base import STATUSES

INSTALLED = available_solvers()
QUADRATIC = [s for s in INSTALLED if s != "highs"]


def mixed_problem(seed, n_bin=5, n_cont=3, n_rows=4):
    """A random bounded MILP: binaries, continuous columns in boxes, rows of every kind."""
    rng = np.random.default_rng(seed)
    n = n_bin + n_cont
    A = np.round(rng.normal(size=(n_rows, n)), 2)
    A[rng.random(A.shape) < 0.3] = 0.0
    centre = A @ np.concatenate([rng.integers(0, 2, n_bin), rng.uniform(-1, 1, n_cont)])
    lower = centre - rng.uniform(0.2, 2, n_rows)
    upper = centre + rng.uniform(0.2, 2, n_rows)
    lower[0], upper[1] = -np.inf, np.inf
    upper[2] = lower[2] = centre[2]  # an equality row
    return MIPModel(lb=np.concatenate([np.zeros(n_bin), -np.ones(n_cont)]),
                    ub=np.ones(n), integrality=np.arange(n) < n_bin, A=sp.csr_matrix(A),
                    row_lower=lower, row_upper=upper, c=np.round(rng.normal(size=n), 2))


def brute_force(model, sense="min"):
    """Optimum by enumerating the binaries and solving each continuous LP with scipy's linprog."""
    ints = np.flatnonzero(model.integrality)
    conts = np.flatnonzero(~model.integrality)
    A = model.A.toarray()
    sign = 1.0 if sense == "min" else -1.0
    best = None
    for bits in itertools.product([0.0, 1.0], repeat=ints.size):
        bits = np.array(bits)
        if np.any(bits < model.lb[ints]) or np.any(bits > model.ub[ints]):
            continue
        rest_lo = model.row_lower - A[:, ints] @ bits
        rest_hi = model.row_upper - A[:, ints] @ bits
        Ac = A[:, conts]
        finite_hi, finite_lo = np.isfinite(rest_hi), np.isfinite(rest_lo)
        res = linprog(sign * model.c[conts], A_ub=np.vstack([Ac[finite_hi], -Ac[finite_lo]]),
                      b_ub=np.concatenate([rest_hi[finite_hi], -rest_lo[finite_lo]]),
                      bounds=list(zip(model.lb[conts], model.ub[conts])), method="highs")
        if res.status == 0:
            value = model.c[ints] @ bits + model.c[conts] @ res.x + model.c0
            if best is None or sign * value < sign * best:
                best = value
    return best


def feasible_seeds(count):
    seeds = []
    seed = 0
    while len(seeds) < count:
        if brute_force(mixed_problem(seed)) is not None:
            seeds.append(seed)
        seed += 1
    return seeds


SEEDS = feasible_seeds(4)


@pytest.mark.parametrize("name", INSTALLED)
@pytest.mark.parametrize("seed", SEEDS)
def test_milp_optimum_matches_brute_force(name, seed):
    model = mixed_problem(seed)
    model.c0 = 0.75
    for sense in ("min", "max"):
        expected = brute_force(model, sense)
        solver = make_solver(name, model)
        solver.set_objective(model.c, sense=sense, constant=model.c0)
        result = solver.solve()
        assert result.status == "optimal", result.message
        assert result.objective == pytest.approx(expected, abs=1e-6)
        assert model.violation(result.x) < 1e-6
        assert result.solver == name and result.status in STATUSES


@pytest.mark.parametrize("name", INSTALLED)
def test_infeasible_model(name):
    model = mixed_problem(SEEDS[0])
    model.row_lower[1], model.row_upper[1] = 100.0, np.inf      # unreachable with entries of size ~1
    result = make_solver(name, model).solve()
    assert result.status == "infeasible" and result.x is None


@pytest.mark.parametrize("name", INSTALLED)
def test_set_col_bounds_then_resolve_equals_fresh_build(name):
    rng = np.random.default_rng(11)
    model = mixed_problem(SEEDS[1])
    solver = make_solver(name, model)
    changed = model.copy()
    for _ in range(4):
        idx = rng.choice(model.n_cols, size=3, replace=False)
        lb, ub = changed.lb[idx].copy(), changed.ub[idx].copy()
        for k, i in enumerate(idx):
            if model.integrality[i]:
                value = float(rng.integers(0, 2))
                lb[k], ub[k] = (value, value) if rng.random() < 0.6 else (0.0, 1.0)   # fix it, or free it again
            else:
                lb[k], ub[k] = np.sort(rng.uniform(-1, 1, 2))
        changed.lb[idx], changed.ub[idx] = lb, ub
        solver.set_col_bounds(idx, lb, ub)
        again = solver.solve()
        fresh = make_solver(name, changed).solve()
        expected = brute_force(changed)
        assert again.status == fresh.status
        if expected is None:
            assert again.status == "infeasible"
        else:
            assert again.objective == pytest.approx(fresh.objective, abs=1e-6)
            assert again.objective == pytest.approx(expected, abs=1e-6)
            assert changed.violation(again.x) < 1e-6


@pytest.mark.parametrize("name", INSTALLED)
def test_set_coefficients_and_row_bounds_then_resolve_equals_brute_force(name):
    """Entries that exist (changed in place), new entries, removed entries and row bounds all reach the solver."""
    rng = np.random.default_rng(12)
    model = mixed_problem(SEEDS[2])
    solver = make_solver(name, model)
    changed = model.copy()
    dense = changed.A.toarray()
    for step in range(5):
        rows = rng.integers(0, model.n_rows, size=3)
        cols = rng.integers(0, model.n_cols, size=3)
        values = np.round(rng.normal(size=3), 2)
        values[0] = 0.0 if step == 2 else values[0]
        dense[rows, cols] = values
        solver.set_coefficients(rows, cols, values)
        row = int(rng.integers(3, model.n_rows)) if model.n_rows > 3 else 0
        low, high = np.sort(rng.uniform(-2, 2, 2))
        changed.row_lower[row], changed.row_upper[row] = low, high
        solver.set_row_bounds([row], low, high)
        changed.A = sp.csr_matrix(dense)
        np.testing.assert_allclose(solver.model.A.toarray(), dense)
        again = solver.solve()
        expected = brute_force(changed)
        if expected is None:
            assert again.status == "infeasible"
        else:
            assert again.status == "optimal", again.message
            assert again.objective == pytest.approx(expected, abs=1e-6)
            assert changed.violation(again.x) < 1e-6


@pytest.mark.parametrize("name", INSTALLED)
def test_cutoff_and_stop_at_first(name):
    model = mixed_problem(SEEDS[2])
    best = brute_force(model)
    solver = make_solver(name, model)
    above = solver.solve(cutoff=best + 0.5)
    assert above.status == "optimal" and above.objective == pytest.approx(best, abs=1e-6)
    below = solver.solve(cutoff=best - 0.5)
    assert below.status == "infeasible" and below.x is None
    first = solver.solve(stop_at_first=True)
    assert first.status in ("optimal", "solution_limit")
    assert model.violation(first.x) < 1e-6 and first.objective >= best - 1e-6


def separable_miqp(seed):
    """min sum q_i x_i^2 + c x with x_i <= U b_i, sum b <= 2: brute force is closed form per binary pattern."""
    rng = np.random.default_rng(seed)
    k = 4
    q = rng.uniform(0.5, 2, k)
    c_x = rng.uniform(-4, 1, k)
    c_b = rng.uniform(0.1, 1.5, k)
    U = 2.0
    # columns: x (k), b (k); rows: x_i - U b_i <= 0 and sum b <= 2
    A = sp.vstack([sp.hstack([sp.eye(k), -U * sp.eye(k)]), sp.hstack([sp.csr_matrix((1, k)), np.ones((1, k))])])
    model = MIPModel(lb=np.zeros(2 * k), ub=np.concatenate([np.full(k, U), np.ones(k)]),
                     integrality=np.arange(2 * k) >= k, A=sp.csr_matrix(A),
                     row_lower=np.full(k + 1, -np.inf), row_upper=np.concatenate([np.zeros(k), [2.0]]),
                     c=np.concatenate([c_x, c_b]), q=np.concatenate([q, np.zeros(k)]))
    best = np.inf
    for bits in itertools.product([0, 1], repeat=k):
        bits = np.array(bits)
        if bits.sum() > 2:
            continue
        x = np.clip(-c_x / (2 * q), 0, U * bits)
        best = min(best, q @ x ** 2 + c_x @ x + c_b @ bits)
    return model, best


@pytest.mark.parametrize("name", QUADRATIC)
@pytest.mark.parametrize("seed", [0, 1])
def test_convex_miqp_matches_closed_form(name, seed):
    model, best = separable_miqp(seed)
    solver = make_solver(name, model)
    result = solver.solve()
    assert result.status in ("optimal", "gap_limit"), result.message
    assert result.objective == pytest.approx(best, abs=1e-4)
    assert model.objective_value(result.x) == pytest.approx(result.objective, abs=1e-4)
    # back to a linear objective on the same loaded model
    solver.set_objective(model.c)
    linear = solver.solve()
    linear_model = model.copy()
    linear_model.q = None
    assert linear.objective == pytest.approx(brute_force(linear_model), abs=1e-6)


@pytest.mark.skipif("highs" not in INSTALLED, reason="highspy not installed")
def test_highs_refuses_miqp_but_solves_convex_qp():
    model, _ = separable_miqp(0)
    with pytest.raises(UserError, match="HiGHS has no MIQP"):
        make_solver("highs", model)
    # the continuous relaxation is a convex QP HiGHS does solve: check it against the closed form
    k = 4
    qp = model.copy()
    qp.integrality[:] = False
    qp.lb[k:] = qp.ub[k:] = 1.0                        # all binaries on: sum b <= 2 broken, so drop that row
    qp.row_upper[-1] = np.inf
    result = make_solver("highs", qp).solve()
    q, c_x = model.q[:k], model.c[:k]
    x = np.clip(-c_x / (2 * q), 0, 2.0)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(q @ x ** 2 + c_x @ x + model.c[k:].sum(), abs=1e-5)


def test_unknown_or_missing_solver(monkeypatch):
    model = mixed_problem(SEEDS[0])
    with pytest.raises(UserError, match="supported: highs, scip, cplex"):
        make_solver("gurobi", model)
    monkeypatch.setitem(solvers._installed, "scip", False)
    with pytest.raises(UserError, match="pip install pyscipopt"):
        make_solver("scip", model)
    assert "scip" not in available_solvers()


@pytest.mark.skipif("cplex" not in INSTALLED, reason="cplex not installed")
def test_cplex_community_limit():
    from explain_mnist.solvers.cplex import is_community_edition
    if not is_community_edition():
        pytest.skip("a full CPLEX licence has no size limit")
    n = 1001
    wide = MIPModel(lb=np.zeros(n), ub=np.ones(n), integrality=np.zeros(n, dtype=bool),
                    A=sp.csr_matrix(np.ones((1, n))), row_lower=np.array([-np.inf]), row_upper=np.array([3.0]),
                    c=-np.ones(n))
    with pytest.raises(UserError, match="1001 variables and 1 constraints, over the CPLEX Community Edition limit "
                                        "of 1000; use --solver highs or --solver scip"):
        make_solver("cplex", wide)
    tall = MIPModel(lb=np.zeros(2), ub=np.ones(2), integrality=np.zeros(2, dtype=bool),
                    A=sp.csr_matrix(np.ones((1001, 2))), row_lower=np.full(1001, -np.inf),
                    row_upper=np.ones(1001), c=np.zeros(2))
    with pytest.raises(UserError, match="2 variables and 1001 constraints"):
        make_solver("cplex", tall)
    assert choose_solver("max_gap", 1001, 10)[0] != "cplex"


def test_choose_solver():
    for kind in ("max_gap", "counterexample", "min_l0", "min_l1", "min_linf"):
        name, reason = choose_solver(kind, 100, 100)
        assert name in INSTALLED and kind in reason
    if QUADRATIC:
        assert choose_solver("min_l2", 100, 100, quadratic=True)[0] != "highs"
    with pytest.raises(ValueError):
        choose_solver("min_l3", 10, 10)
    assert set(SOLVERS) == {"highs", "scip", "cplex"}


def market_split(seed, n=40, m=4):
    """A market split instance (equality knapsacks): notoriously hard for branch and bound."""
    rng = np.random.default_rng(seed)
    A = rng.integers(0, 100, size=(m, n)).astype(float)
    rhs = np.floor(A.sum(axis=1) / 2)
    return MIPModel(lb=np.zeros(n), ub=np.ones(n), integrality=np.ones(n, dtype=bool), A=sp.csr_matrix(A),
                    row_lower=rhs, row_upper=rhs, c=np.zeros(n))


@pytest.mark.parametrize("name", INSTALLED)
def test_tiny_time_limit_gives_a_status(name):
    model = market_split(0)
    result = make_solver(name, model, time_limit=0.01).solve()
    # 40 binaries, 4 equality knapsacks: no solver closes this in 10 ms, so the limit must be what stopped it
    assert result.status == "time_limit", (result.status, result.message)
    if result.x is not None:
        assert model.violation(result.x) < 1e-6
