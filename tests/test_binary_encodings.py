"""binarized/query, milp, cnf and verify: every encoding against independent computations.

- cardinality encodings (every PySAT encoding offered, half-reified as the CNF uses them, and the native
  constraints of Minicard) and the flip counter: the assignments of the counted literals that extend to a model
  are exactly those the constraint allows (models counted by enumeration);
- each encoding with its flips fixed reproduces the integer forward pass, class by class;
- on tiny random networks, brute force over every flip set decides robustness and the fewest flips; MIP, IP and
  CNF (several cardinality encodings and SAT solvers) must give the same answers.
"""
import itertools

import numpy as np
import pytest

from explain_mnist.binarized import cnf, milp, verify
from explain_mnist.binarized.network import random_net
from explain_mnist.binarized.query import compile_query

CARDINALITIES = ("seqcounter", "totalizer", "sortnetwrk", "cardnetwrk", "mtotalizer", "kmtotalizer")


def allowed_assignments(kind, n, bound, cardinality, sat_solver="glucose4"):
    """Return the set of (cond, x_1..x_n) whose constraint 'cond -> #x {kind} bound' has a model."""
    from pysat.solvers import Solver
    formula = cnf.CNF(cardinality)
    xs = formula.new(n).tolist()
    cond = int(formula.new(1)[0])
    builder = cnf._Builder(formula)
    (builder.atleast_if if kind == "atleast" else builder.atmost_if)(xs, bound, cond)
    found = set()
    with Solver(name=sat_solver, bootstrap_with=formula.clauses) as s:
        for lits, b in formula.atmosts:
            s.add_atmost(lits, b)
        for values in itertools.product((0, 1), repeat=n + 1):
            assumptions = [v if on else -v for v, on in zip([cond] + xs, values)]
            if s.solve(assumptions=assumptions):
                found.add(values)
    return found


@pytest.mark.parametrize("cardinality", CARDINALITIES + ("native",))
def test_half_reified_cardinality_constraints_count_their_models(cardinality):
    n = 5
    solver = "minicard" if cardinality == "native" else "glucose4"
    for kind in ("atleast", "atmost"):
        for bound in range(-1, n + 2):
            want = {v for v in itertools.product((0, 1), repeat=n + 1)
                    if not v[0] or (sum(v[1:]) >= bound if kind == "atleast" else sum(v[1:]) <= bound)}
            assert allowed_assignments(kind, n, bound, cardinality, solver) == want, (kind, bound)


def test_flip_counter_outputs_are_exact_counts():
    from pysat.solvers import Solver
    for n, b in ((4, 2), (5, 6), (6, 3)):
        formula = cnf.CNF("seqcounter")
        xs = formula.new(n).tolist()
        outs = cnf._counter(formula, xs, b)
        with Solver(name="glucose4", bootstrap_with=formula.clauses) as s:
            for values in itertools.product((0, 1), repeat=n):
                assert s.solve(assumptions=[v if on else -v for v, on in zip(xs, values)])
                model = set(s.get_model())
                assert [o in model for o in outs] == [sum(values) >= j for j in range(1, b + 1)]
        assert len(outs) == b


def brute_force(net, x0, k, target=None):
    """Return the fewest flips (<= k) that change the label (to the target), or None, by enumeration."""
    c = int(net.predict_bits(x0[None])[0])
    for size in range(0, k + 1):
        sets = list(itertools.combinations(range(len(x0)), size))
        if not sets:
            continue
        X = np.repeat(x0[None], len(sets), axis=0)
        for row, s in enumerate(sets):
            X[row, list(s)] ^= 1
        labels = net.predict_bits(X)
        hit = labels == target if target is not None else labels != c
        if hit.any():
            return size
    return None


SETTINGS = [verify.Settings(("mip", "ip"), solver="highs"),
            verify.Settings(("search",)),
            verify.Settings(("cnf",), "kmtotalizer", "cadical153"),
            verify.Settings(("cnf",), "seqcounter", "glucose4"),
            verify.Settings(("cnf",), "cardnetwrk", "glucose4"),
            verify.Settings(("cnf",), "native", "minicard")]


@pytest.fixture(scope="module")
def tiny_nets():
    rng = np.random.default_rng(14)
    return [(random_net(sizes, rng), rng.integers(0, 2, sizes[0]).astype(np.uint8))
            for sizes in ([8, 6, 4, 3], [8, 7, 5, 4], [9, 6, 3], [8, 5, 5, 5, 3])]


def test_brute_force_confirms_robustness_and_min_flips_of_every_encoding(tiny_nets):
    for net, x0 in tiny_nets:
        c = int(net.predict_bits(x0[None])[0])
        for k in (0, 1, 2, 3, 8):
            for target in [None] + [t for t in range(net.n_classes) if t != c][:1]:
                truth = brute_force(net, x0, k, target)
                for settings in SETTINGS:
                    r = verify.robustness(net, x0, k, target, settings)
                    want = "robust" if truth is None else "counterexample"
                    assert set(r.answers.values()) == {want}, (k, target, settings, r.answers, truth)
                    assert r.verified
                    if r.counterexample is not None:
                        assert (r.counterexample != x0).sum() <= k
        least = brute_force(net, x0, len(x0))
        for settings in SETTINGS:
            for encoding in settings.encodings:
                m = verify.min_flips(net, x0, encoding, settings)
                assert m.min_flips == least and m.verified, (encoding, settings.cardinality, m)


def test_encodings_with_fixed_flips_reproduce_the_forward_pass():
    rng = np.random.default_rng(7)
    net = random_net([12, 8, 6, 4], rng)
    x0 = rng.integers(0, 2, 12).astype(np.uint8)
    k = 3
    for trial in range(6):
        flips = np.zeros(12, dtype=bool)
        flips[rng.choice(12, size=int(rng.integers(0, k + 1)), replace=False)] = True
        label = int(net.predict_bits((x0 ^ flips)[None])[0])
        for target in range(net.n_classes):
            query = compile_query(net, x0, k, target, label=int(net.predict_bits(x0[None])[0]))
            for name, settings in (("mip", SETTINGS[0]), ("ip", SETTINGS[0]), ("cnf", SETTINGS[2]),
                                   ("cnf", SETTINGS[5])):
                if query.trivially is not None:
                    got = query.trivially
                else:
                    encoded = verify.encode(query, name, settings)
                    got = verify.solve(encoded, settings, fixed_flips=flips[query.free]).status
                assert got == ("sat" if target == label else "unsat"), (trial, target, name, label)


def test_no_budget_encodings_agree_with_brute_force():
    rng = np.random.default_rng(3)
    net = random_net([7, 5, 3], rng)
    x0 = rng.integers(0, 2, 7).astype(np.uint8)
    c = int(net.predict_bits(x0[None])[0])
    for target in [t for t in range(3) if t != c]:
        truth = brute_force(net, x0, 7, target) is not None
        query = compile_query(net, x0, None, target)
        for name, settings in (("mip", SETTINGS[0]), ("ip", SETTINGS[0]), ("cnf", SETTINGS[3])):
            got = query.trivially or verify.solve(verify.encode(query, name, settings), settings).status
            assert got == ("sat" if truth else "unsat")


def test_mip_minimises_flips_like_brute_force(tiny_nets):
    net, x0 = tiny_nets[1]
    least = brute_force(net, x0, len(x0))
    query = compile_query(net, x0, len(x0))
    answer = milp.solve(milp.encode(query, "ip"), "highs", minimise=True)
    assert answer.status == "sat" and int(answer.flips.sum()) == least


def test_fewer_flips_by_assumptions_on_one_solver(tiny_nets):
    for net, x0 in tiny_nets:
        query = compile_query(net, x0, 4)
        if query.trivially is not None:
            continue
        for cardinality, solver in (("kmtotalizer", "glucose4"), ("native", "minicard")):
            sat = cnf.SatSolver(cnf.encode(query, cardinality), solver)
            try:
                for j in range(0, 5):
                    want = brute_force(net, x0, j) is not None
                    answer = sat.solve(sat.at_most(j))
                    assert (answer.status == "sat") == want, (j, cardinality)
                    if want:
                        assert answer.flips.sum() <= j
            finally:
                sat.close()


# one solver per kind of PySAT binding: interruptible (glucose4), without interrupt (cadical153), without
# solve_limited (lingeling), ignoring assumptions (kissat404)
BINDINGS = [name for name in ("glucose4", "cadical153", "lingeling", "kissat404") if cnf.capabilities(name).available]


@pytest.mark.parametrize("time_limit", [None, 60.0])
def test_every_kind_of_sat_binding_answers_under_assumptions(tiny_nets, time_limit):
    """Fixed flips and at-most budgets are assumptions; solvers that ignore them or cannot be interrupted (solved in a
    child process under a time limit) must still give brute force's answers."""
    for net, x0 in tiny_nets[:2]:
        query = compile_query(net, x0, 3)
        if query.trivially is not None:
            continue
        for name in BINDINGS:
            sat = cnf.SatSolver(cnf.encode(query, "kmtotalizer"), name)
            try:
                for j in range(0, 4):
                    want = brute_force(net, x0, j) is not None
                    answer = sat.solve(sat.at_most(j), time_limit)
                    assert (answer.status == "sat") == want, (name, j)
                    if want:
                        assert answer.flips.sum() <= j
                        assert net.predict_bits((x0 ^ answer.flips)[None])[0] != net.predict_bits(x0[None])[0]
                none = np.zeros(query.n_flips, dtype=bool)
                assert sat.solve(sat.fixed(none), time_limit).status == "unsat", name
            finally:
                sat.close()


def pigeonhole(holes: int) -> cnf.CNF:
    """Return the CNF of holes + 1 pigeons in ``holes`` holes (unsatisfiable, hard for resolution)."""
    formula = cnf.CNF("kmtotalizer")
    var = formula.new((holes + 1) * holes).reshape(holes + 1, holes)
    formula.clauses = [row.tolist() for row in var]
    formula.clauses += [[-int(var[a, h]), -int(var[b, h])] for h in range(holes)
                        for a, b in itertools.combinations(range(holes + 1), 2)]
    formula.flips = var[:, 0]
    return formula


@pytest.mark.parametrize("name", [n for n in ("cadical153", "kissat404", "lingeling") if n in BINDINGS])
def test_time_limit_stops_a_solver_without_interrupt(name):
    sat = cnf.SatSolver(pigeonhole(13), name)
    try:
        assert sat.solve([], time_limit=0.5).status == "unknown"
    finally:
        sat.close()


def test_small_pigeonhole_is_refuted_by_every_kind_of_binding():
    for name in BINDINGS:
        sat = cnf.SatSolver(pigeonhole(4), name)
        try:
            assert sat.solve([], time_limit=30.0).status == "unsat", name
        finally:
            sat.close()
