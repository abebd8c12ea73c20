"""Minimal adversarial examples against independent computations.

- a linear sigmoid model (Dense(1, sigmoid)): the L0 optimum in closed form (sort the per-pixel gains), the
  L2 optimum as the box-constrained QP with one constraint (bisection on its multiplier), L1 and L-inf by
  scipy's linprog;
- tiny ReLU nets (one hidden layer of 3-4 ReLUs, a linear multiclass model): every activation pattern, each
  piece solved exactly with scipy (linprog for L1 and L-inf, SLSQP for L2, an LP per pixel subset for L0);
- slightly larger nets (two hidden layers): L1 and L-inf against scipy's milp on a big-M encoding written here;
- the region bounds against the exact minimum of a linear function over the region (linprog, SLSQP, subsets)
  and against sampled points; the target network against the forward pass.
Every image returned must have the target class under the forward pass.
"""
import itertools

import numpy as np
import pytest
from scipy.optimize import Bounds as ScipyBounds
from scipy.optimize import LinearConstraint, linprog, milp, minimize

from explain_mnist import adversarial as adv
from explain_mnist.network import Affine, Network, ReLU
from explain_mnist.solvers import available_solvers

MARGIN = adv.MARGIN
REL = 1e-5     # agreement of two exact optima (solver and scipy tolerances)


def objective_tol(value):
    return REL * max(1.0, abs(value))


# ----------------------------------------------------------------------------- independent optima

def linear_sigmoid(rng, n):
    w = rng.normal(size=n)
    return Network([Affine(w[None, :], np.array([rng.normal()]))], decision="sigmoid", input_shape=(n,))


def needed_gain(net, x0):
    """Return ``(s, D)``: the target's sign and how much ``s (w . x + b)`` must rise to reach the margin."""
    w, b = net.affines[0].W[0], net.affines[0].b[0]
    s = -1.0 if net.predict(x0) == 1 else 1.0
    return s, MARGIN - s * (w @ x0 + b)


def linear_l0(net, x0):
    """Closed form: the fewest pixels whose best extreme values raise the target's logit enough (None: none do)."""
    w = net.affines[0].W[0]
    s, D = needed_gain(net, x0)
    gains = np.sort(np.maximum(s * w * (1 - x0), -s * w * x0))[::-1]
    total = np.cumsum(gains)
    return None if total[-1] < D else int(np.searchsorted(total, D) + 1)


def linear_l2(net, x0):
    """The box QP with one constraint: delta = clip(lam s w, -x0, 1 - x0), lam by bisection on the multiplier."""
    w = net.affines[0].W[0]
    s, D = needed_gain(net, x0)
    g = s * w

    def reach(lam):
        return g @ np.clip(lam * g, -x0, 1 - x0)
    lo, hi = 0.0, 1.0
    while reach(hi) < D:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reach(mid) < D else (lo, mid)
    d = np.clip(hi * g, -x0, 1 - x0)
    return float(d @ d)


def lp_distance(x0, norm, L, l, C, A_piece=None, b_piece=None):
    """Return ``(min ||x - x0||, x)`` (l1, linf) on [0,1]^n with ``C (L x + l) >= MARGIN``, ``A_piece x <= b_piece``."""
    n = x0.size
    k = n if norm == "l1" else 1
    cost = np.concatenate([np.zeros(n), np.ones(k)])
    T = np.eye(n) if norm == "l1" else np.ones((n, 1))
    A = [np.hstack([np.eye(n), -T]), np.hstack([-np.eye(n), -T]), np.hstack([-(C @ L), np.zeros((C.shape[0], k))])]
    b = [x0, -x0, C @ l - MARGIN]
    if A_piece is not None:
        A.append(np.hstack([A_piece, np.zeros((A_piece.shape[0], k))]))
        b.append(b_piece)
    res = linprog(cost, A_ub=np.vstack(A), b_ub=np.concatenate(b), bounds=[(0, 1)] * n + [(0, None)] * k,
                  method="highs")
    return (res.fun, res.x[:n]) if res.status == 0 else (np.inf, None)


def qp_distance(x0, L, l, C, A_piece=None, b_piece=None):
    """Return ``min |x - x0|^2`` over the same polytope (SLSQP from linprog's feasible point); inf if empty."""
    feasible, start = lp_distance(x0, "l1", L, l, C, A_piece, b_piece)
    if start is None:
        return np.inf
    A = -(C @ L) if A_piece is None else np.vstack([-(C @ L), A_piece])
    b = C @ l - MARGIN if A_piece is None else np.concatenate([C @ l - MARGIN, b_piece])
    res = minimize(lambda x: ((x - x0) ** 2).sum(), start, jac=lambda x: 2 * (x - x0), method="SLSQP",
                   bounds=[(0, 1)] * x0.size, constraints=[{"type": "ineq", "fun": lambda x: b - A @ x,
                                                            "jac": lambda x: -A}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    return min(res.fun, ((start - x0) ** 2).sum())


def pieces(net):
    """Yield ``(L, l, A_piece, b_piece)`` per activation pattern of a one-hidden-layer net (logits = L x + l)."""
    if not net.hidden:
        yield net.affines[0].dense_W(), net.affines[0].b, None, None
        return
    W1, b1 = net.affines[0].dense_W(), net.affines[0].b
    W2, b2 = net.affines[1].dense_W(), net.affines[1].b
    for pattern in itertools.product([0.0, 1.0], repeat=W1.shape[0]):
        D = np.array(pattern)
        sign = np.where(D > 0, -1.0, 1.0)            # active: -z <= 0; inactive: z <= 0
        yield W2 @ (D[:, None] * W1), W2 @ (D * b1) + b2, sign[:, None] * W1, -sign * b1


def brute_force(net, x0, t, norm):
    """Return the exact optimum by enumerating activation patterns (and, for l0, pixel subsets); inf if none."""
    C = net.spec_matrix(t)
    n = x0.size
    best = np.inf
    for L, l, A, b in pieces(net):
        if norm in ("l1", "linf"):
            best = min(best, lp_distance(x0, norm, L, l, C, A, b)[0])
        elif norm == "l2":
            best = min(best, qp_distance(x0, L, l, C, A, b))
        else:
            for k in range(n + 1):
                if k >= best:
                    break
                for S in itertools.combinations(range(n), k):
                    fixed = np.setdiff1d(np.arange(n), S)
                    E = np.eye(n)[fixed]
                    A_all = E if A is None else np.vstack([A, E, -E])
                    b_all = x0[fixed] if A is None else np.concatenate([b, x0[fixed], -x0[fixed]])
                    if A is None:
                        A_all, b_all = np.vstack([E, -E]), np.concatenate([x0[fixed], -x0[fixed]])
                    if lp_distance(x0, "l1", L, l, C, A_all, b_all)[1] is not None:
                        best = k
                        break
    return best


def check(result, net, x0, t, norm, expected):
    """The engine's answer equals the independent optimum, and its image has class t."""
    if not np.isfinite(expected):
        assert result.status == "infeasible" and result.adversarial is None, result
        return
    assert result.status == "optimal", result
    assert net.predict(result.adversarial) == t
    assert np.all(result.adversarial >= 0) and np.all(result.adversarial <= 1)
    assert result.objective == pytest.approx(adv.distance(result.adversarial, x0, norm), abs=1e-12)
    if norm == "l0":
        assert result.objective == expected and result.bound == expected
    else:
        assert abs(result.objective - expected) <= objective_tol(expected), (result.objective, expected)
        assert result.bound <= result.objective + 1e-12
        assert result.objective - result.bound <= adv.OPTIMAL_RELATIVE * result.objective + 1e-12


# ----------------------------------------------------------------------------- linear sigmoid model

@pytest.mark.parametrize("seed", range(8))
def test_linear_sigmoid_l0_is_the_closed_form(seed):
    rng = np.random.default_rng(seed)
    net = linear_sigmoid(rng, 60)
    x0 = rng.uniform(size=60) * (rng.uniform(size=60) < 0.4)
    t = 1 - net.predict(x0)
    expected = linear_l0(net, x0)
    result = adv.solve_target(net, x0, t, "l0")
    check(result, net, x0, t, "l0", np.inf if expected is None else expected)


@pytest.mark.parametrize("seed", range(8))
def test_linear_sigmoid_l2_is_the_one_constraint_qp(seed):
    rng = np.random.default_rng(100 + seed)
    net = linear_sigmoid(rng, 60)
    x0 = rng.uniform(size=60) * (rng.uniform(size=60) < 0.4)
    t = 1 - net.predict(x0)
    check(adv.solve_target(net, x0, t, "l2"), net, x0, t, "l2", linear_l2(net, x0))


@pytest.mark.parametrize("norm", ["l1", "linf"])
@pytest.mark.parametrize("seed", range(4))
def test_linear_sigmoid_l1_linf_equal_linprog(norm, seed):
    rng = np.random.default_rng(200 + seed)
    net = linear_sigmoid(rng, 40)
    x0 = rng.uniform(size=40)
    t = 1 - net.predict(x0)
    expected = lp_distance(x0, norm, net.affines[0].dense_W(), net.affines[0].b, net.spec_matrix(t))[0]
    check(adv.solve_target(net, x0, t, norm), net, x0, t, norm, expected)


def test_unreachable_target_is_infeasible():
    """A linear model whose class 2 never wins over [0,1]^n: infeasible for every norm (checked by linprog)."""
    rng = np.random.default_rng(5)
    W = rng.normal(size=(3, 6))
    b = np.array([0.0, 0.0, -50.0])
    net = Network([Affine(W, b)], input_shape=(6,))
    x0 = rng.uniform(size=6)
    assert net.predict(x0) != 2
    assert lp_distance(x0, "l1", W, b, net.spec_matrix(2))[1] is None
    for norm in adv.NORMS:
        result = adv.solve_target(net, x0, 2, norm)
        assert result.status == "infeasible" and result.bound is None and result.adversarial is None


# ----------------------------------------------------------------------------- tiny ReLU nets, every pattern

def tiny_net(seed):
    rng = np.random.default_rng(seed)
    n, h = int(rng.integers(3, 6)), int(rng.integers(3, 5))
    n_out = int(rng.choice([1, 3]))
    layers = [Affine(rng.normal(size=(h, n)), rng.normal(scale=0.5, size=h)), ReLU(),
              Affine(rng.normal(size=(n_out, h)), rng.normal(scale=0.5, size=n_out))]
    net = Network(layers, decision="sigmoid" if n_out == 1 else "argmax", input_shape=(n,))
    return net, rng.uniform(size=n)


def linear_multiclass(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 6))
    net = Network([Affine(rng.normal(size=(4, n)), rng.normal(scale=0.5, size=4))], input_shape=(n,))
    return net, rng.uniform(size=n)


CASES = [("tiny", s) for s in range(10)] + [("linear", s) for s in range(4)]


@pytest.mark.parametrize("norm", adv.NORMS)
@pytest.mark.parametrize("kind,seed", CASES)
def test_every_target_equals_brute_force(kind, seed, norm):
    net, x0 = tiny_net(seed) if kind == "tiny" else linear_multiclass(seed)
    for t in adv.other_classes(net, int(net.predict(x0))):
        expected = brute_force(net, x0, t, norm)
        check(adv.solve_target(net, x0, t, norm), net, x0, t, norm, expected)


@pytest.mark.parametrize("solver", available_solvers())
@pytest.mark.parametrize("norm", ["l0", "l1", "linf"])
def test_each_solver_gives_the_brute_force_optimum(solver, norm):
    for seed in range(3):
        net, x0 = tiny_net(40 + seed)
        for t in adv.other_classes(net, int(net.predict(x0))):
            check(adv.solve_target(net, x0, t, norm, solver=solver), net, x0, t, norm, brute_force(net, x0, t, norm))


@pytest.mark.parametrize("seed", range(3))
def test_any_is_the_minimum_over_targets(seed):
    net, x0 = tiny_net(60 + seed)
    if net.decision == "sigmoid":
        net, x0 = linear_multiclass(60 + seed)
    targets = adv.other_classes(net, int(net.predict(x0)))
    expected = min(brute_force(net, x0, t, "l1") for t in targets)
    [best] = adv.min_adversarial(net, x0, "l1", "any")
    check(best, net, x0, best.target, "l1", expected)
    assert sorted(r["target"] for r in best.stages["targets"]) == targets
    assert best.target in targets if np.isfinite(expected) else best.target is None


@pytest.mark.parametrize("seed", range(3))
def test_linf_bisection_with_the_verifier_agrees(seed):
    net, x0 = tiny_net(80 + seed)
    for t in adv.other_classes(net, int(net.predict(x0))):
        expected = brute_force(net, x0, t, "linf")
        check(adv.solve_target(net, x0, t, "linf", linf_method="bisection"), net, x0, t, "linf", expected)


# ----------------------------------------------------------------------------- two hidden layers: scipy milp

def milp_distance(net, x0, t, norm):
    """Return ``min ||x - x0||`` (l1 or linf) by scipy's milp on a big-M encoding with interval bounds (written here).

    Columns: x, then per hidden layer y (the ReLU outputs) and d (binaries), then the distance columns.
    """
    n = x0.size
    blocks = []                        # per hidden layer: (first column of its input, W, b, l, u, first y column)
    size, inp, low, high = n, 0, np.zeros(n), np.ones(n)
    for affine in net.hidden:
        W, b = affine.dense_W(), affine.b
        l = np.maximum(W, 0) @ low + np.minimum(W, 0) @ high + b
        u = np.maximum(W, 0) @ high + np.minimum(W, 0) @ low + b
        blocks.append((inp, W, b, l, u, size))
        inp, low, high = size, np.maximum(l, 0), np.maximum(u, 0)
        size += 2 * W.shape[0]
    k = n if norm == "l1" else 1
    total = size + k
    A, lb, ub = [], [], []
    integrality, col_lo, col_hi = np.zeros(total), np.zeros(total), np.ones(total)
    col_hi[size:] = np.inf
    for first_in, W, b, l, u, y0 in blocks:
        m = W.shape[0]
        integrality[y0 + m:y0 + 2 * m] = 1
        col_hi[y0:y0 + m] = np.maximum(u, 0)
        for i in range(m):
            z, y, d = np.zeros(total), np.zeros(total), np.zeros(total)
            z[first_in:first_in + W.shape[1]] = W[i]
            y[y0 + i], d[y0 + m + i] = 1, 1
            A += [y - z, y - z - l[i] * d, y - u[i] * d]       # y >= z; y <= z - l (1 - d); y <= u d
            lb += [b[i], -np.inf, -np.inf]
            ub += [np.inf, b[i] - l[i], 0.0]
    last = net.affines[-1]
    for row in net.spec_matrix(t):                         # the target wins by MARGIN
        r = np.zeros(total)
        r[inp:inp + last.n_in] = row @ last.dense_W()
        A.append(r)
        lb.append(MARGIN - row @ last.b)
        ub.append(np.inf)
    for p in range(n):                                     # t >= |x_p - x0_p|
        for sign in (1.0, -1.0):
            r = np.zeros(total)
            r[p], r[size + (p if norm == "l1" else 0)] = sign, -1.0
            A.append(r)
            lb.append(-np.inf)
            ub.append(sign * x0[p])
    c = np.zeros(total)
    c[size:] = 1.0
    res = milp(c, constraints=LinearConstraint(np.array(A), lb, ub), integrality=integrality,
               bounds=ScipyBounds(col_lo, col_hi), options={"mip_rel_gap": 1e-9})
    return res.fun if res.status == 0 else np.inf


def deep_net(seed):
    rng = np.random.default_rng(seed)
    n = 8
    sizes = [n, 6, 5, 3]
    layers = []
    for k in range(3):
        layers.append(Affine(rng.normal(size=(sizes[k + 1], sizes[k])), rng.normal(scale=0.5, size=sizes[k + 1])))
        if k < 2:
            layers.append(ReLU())
    return Network(layers, input_shape=(n,)), rng.uniform(size=n)


@pytest.mark.parametrize("norm", ["l1", "linf"])
@pytest.mark.parametrize("seed", range(4))
def test_two_hidden_layers_equal_scipy_milp(seed, norm):
    net, x0 = deep_net(seed)
    for t in adv.other_classes(net, int(net.predict(x0))):
        check(adv.solve_target(net, x0, t, norm), net, x0, t, norm, milp_distance(net, x0, t, norm))


# ----------------------------------------------------------------------------- building blocks

def exact_region_minimum(a, c, x0, norm, objective):
    """The exact minimum of ``a x + c`` over ``{x in [0,1]^n : ||x - x0|| <= objective}``, by scipy or enumeration."""
    n = x0.size
    if norm == "l0":
        best = np.inf
        for k in range(int(objective) + 1):
            for S in itertools.combinations(range(n), k):
                x = x0.copy()
                x[list(S)] = np.where(a[list(S)] > 0, 0.0, 1.0)
                best = min(best, a @ x + c)
        return best
    if norm in ("l1", "linf"):
        k = n if norm == "l1" else 1
        T = np.eye(n) if norm == "l1" else np.ones((n, 1))
        A = np.vstack([np.hstack([np.eye(n), -T]), np.hstack([-np.eye(n), -T]),
                       np.hstack([np.zeros((1, n)), np.ones((1, k))])])
        b = np.concatenate([x0, -x0, [objective]])
        res = linprog(np.concatenate([a, np.zeros(k)]), A_ub=A, b_ub=b, bounds=[(0, 1)] * n + [(0, None)] * k,
                      method="highs")
        return res.fun + c
    res = minimize(lambda x: a @ x, x0, jac=lambda x: a, method="SLSQP", bounds=[(0, 1)] * n,
                   constraints=[{"type": "ineq", "fun": lambda x: objective - ((x - x0) ** 2).sum(),
                                 "jac": lambda x: -2 * (x - x0)}], options={"ftol": 1e-14, "maxiter": 1000})
    return res.fun + c


@pytest.mark.parametrize("norm", adv.NORMS)
@pytest.mark.parametrize("seed", range(6))
def test_region_minimum_is_the_exact_minimum(norm, seed):
    rng = np.random.default_rng(300 + seed)
    n = 7
    x0 = rng.uniform(size=n) * (rng.uniform(size=n) < 0.6)
    A = rng.normal(size=(5, n))
    c = rng.normal(size=5)
    objective = {"l0": 2.0, "l1": 0.8, "l2": 0.3, "linf": 0.25}[norm]
    lo, hi = adv.region_box(x0, norm, objective)
    found = adv.region_minimum(A, c, x0, lo, hi, norm, objective)
    for i in range(5):
        exact = exact_region_minimum(A[i], c[i], x0, norm, objective)
        assert found[i] <= exact + 1e-9                        # sound
        assert found[i] >= exact - 1e-6 * max(1, abs(exact))   # and exact


def sample_region(rng, x0, norm, objective, k):
    """Return k random points of the region (pixels moved at random, then scaled into it)."""
    X = []
    while len(X) < k:
        if norm == "l0":
            x = x0.copy()
            S = rng.choice(x0.size, size=int(objective), replace=False)
            x[S] = rng.uniform(size=S.size)
        else:
            x = np.clip(x0 + rng.normal(size=x0.size) * rng.uniform(0, 1), 0, 1)
            d = adv.distance(x, x0, norm)
            if d > objective:
                s = (objective / d) ** (0.5 if norm == "l2" else 1.0)
                x = x0 + s * (x - x0)
        X.append(x)
    return np.array(X)


@pytest.mark.parametrize("norm", adv.NORMS)
def test_region_bounds_hold_on_sampled_points(norm):
    net, x0 = deep_net(7)
    rng = np.random.default_rng(1)
    objective = {"l0": 3.0, "l1": 1.0, "l2": 0.4, "linf": 0.2}[norm]
    C = net.spec_matrix(0)
    b = adv.region_bounds(net, x0, norm, objective, C)
    X = sample_region(rng, x0, norm, objective, 3000)
    logits, pre = net.forward(X, return_preactivations=True)
    for k, z in enumerate(pre):
        assert np.all(z >= b.lower[k] - 1e-9) and np.all(z <= b.upper[k] + 1e-9)
    M = logits @ C.T
    assert np.all(M >= b.spec_lower - 1e-9) and np.all(M <= b.spec_upper + 1e-9)


def test_target_network_is_the_worst_margin():
    net, x0 = deep_net(3)
    rng = np.random.default_rng(2)
    X = rng.uniform(size=(500, x0.size))
    for t in range(3):
        N = adv.target_network(net, t)
        expected = (net.forward(X) @ net.spec_matrix(t).T).min(axis=1) - MARGIN
        assert np.allclose(N.forward(X)[:, 0], expected, atol=1e-9)
        assert np.array_equal(N.predict(X) == 1, expected > 0)


@pytest.mark.parametrize("norm", ["l0", "l1", "l2", "linf"])
def test_closest_step_meets_the_linear_need_with_the_least_change(norm):
    rng = np.random.default_rng(4)
    n = 6
    x0 = rng.uniform(size=n)
    g = rng.normal(size=n)
    need = 0.3 * np.abs(g).sum() * 0.5
    d = adv.closest_steps(g[None], np.array([need]), -x0[None], (1 - x0)[None], norm)[0]
    assert g @ d >= need - 1e-9 and np.all(x0 + d >= -1e-12) and np.all(x0 + d <= 1 + 1e-12)
    if norm in ("l1", "linf"):
        net = Network([Affine(g[None], np.array([-g @ x0]))], decision="sigmoid", input_shape=(n,))
        # the least l1 / linf change with g . delta >= need, by linprog (the margin moved into the need)
        best = lp_distance(x0, norm, g[None], np.array([-g @ x0 - need + MARGIN]), net.spec_matrix(1))[0]
        assert adv.norm_of(d[None], norm)[0] == pytest.approx(best, rel=1e-7)


def test_active_columns_encode_the_forward_pass():
    """With a column per kept active neuron, every input's exact activations satisfy the model and give its logits."""
    from explain_mnist.bounds import crown_bounds
    from explain_mnist.encoding import encode_network

    net, x0 = deep_net(11)
    lo, hi = np.clip(x0 - 0.1, 0, 1), np.clip(x0 + 0.1, 0, 1)
    model = encode_network(net, lo, hi, crown_bounds(net, lo, hi), active_columns=True)
    assert sum(layer.kept.size for layer in model.layers) > 0
    rng = np.random.default_rng(3)
    for x in lo + rng.uniform(size=(200, x0.size)) * (hi - lo):
        _, pre = net.forward(x, return_preactivations=True)
        v = np.zeros(model.n_cols)
        v[model.input_cols] = x[model.input_pixels]
        for layer, z in zip(model.layers, pre):
            v[layer.y_cols] = np.maximum(z[layer.unstable], 0)
            v[layer.d_cols] = z[layer.unstable] > 0
            v[layer.kept_cols] = z[layer.kept]
        assert model.violation(v) < 1e-9
        assert np.allclose(model.logits(v), net.forward(x), atol=1e-9)


# ----------------------------------------------------------------------------- the shipped models

def test_shipped_twoclass_l0_is_proved_and_changes_the_class(twoclass_net, test_set):
    x0 = test_set.x[2].astype(np.float64)
    [result] = adv.min_adversarial(twoclass_net, x0, "l0")
    assert result.status == "optimal" and result.target == 1
    assert twoclass_net.predict(result.adversarial) == 1
    assert result.objective == np.count_nonzero(result.adversarial != x0) == result.bound


def test_time_limit_gives_the_best_image_and_a_lower_bound(multiclass_net, test_set):
    x0 = test_set.x[0].astype(np.float64)
    [result] = adv.min_adversarial(multiclass_net, x0, "l0", [1], time_limit=0.5)
    assert result.status in ("time_limit", "optimal")
    assert multiclass_net.predict(result.adversarial) == 1
    assert result.bound is not None and result.bound <= result.objective


@pytest.mark.parametrize("targets", ["all", "any"])
def test_ctrl_c_between_targets_keeps_the_finished_ones(targets):
    """A Ctrl-C that lands between two targets (here: in the progress callback) cuts the next one, nothing else."""
    net, x0 = linear_multiclass(3)
    chosen = adv.other_classes(net, int(net.predict(x0)))
    finished = []

    def progress(result):
        finished.append((result, result.status))
        raise KeyboardInterrupt

    results = adv.min_adversarial(net, x0, "l1", targets, progress=progress)
    assert len(finished) == 1 and finished[0][1] == "optimal"
    if targets == "all":
        assert [r.target for r in results] == chosen[:2]
        assert results[0] is finished[0][0] and results[1].status == "interrupted" and results[1].adversarial is None
    else:
        [best] = results
        statuses = [r["status"] for r in best.stages["targets"]]
        assert statuses == ["optimal", "interrupted"] and best.status == "interrupted" and best.bound is None
        expected = brute_force(net, x0, best.target, "l1")
        assert best.target == best.stages["targets"][0]["target"] and net.predict(best.adversarial) == best.target
        assert abs(best.objective - expected) <= objective_tol(expected)


@pytest.mark.parametrize("seed", range(4))
def test_linf_lower_bound_drops_rows_and_keeps_the_optimum(seed):
    """With a proven lower bound r0 on the radius, pixel sides that cannot move past r0 get no row: same optimum
    (scipy's linprog on the linear model), fewer rows."""
    from explain_mnist.bounds import interval_bounds
    from explain_mnist.mip import min_distance

    rng = np.random.default_rng(300 + seed)
    net = linear_sigmoid(rng, 40)
    x0 = rng.uniform(size=40)
    x0[:10] = rng.uniform(0.0, 0.02, size=10)          # pixels near 0: their downward side is short
    t = 1 - net.predict(x0)
    C = net.spec_matrix(t)
    expected = lp_distance(x0, "linf", net.affines[0].dense_W(), net.affines[0].b, C)[0]
    lo, hi = np.zeros(40), np.ones(40)
    bounds = interval_bounds(net, lo, hi)
    free = min_distance(net, x0, lo, hi, bounds, "linf", C, adv.MARGIN, solver="highs")
    below = min_distance(net, x0, lo, hi, bounds, "linf", C, adv.MARGIN, solver="highs", lower=0.5 * expected)
    for solve in (free, below):
        assert solve.result.status == "optimal"
        assert abs(solve.result.objective - expected) <= objective_tol(expected)
    rows = [int(s.model_size.split(" rows")[0].split(", ")[-1]) for s in (free, below)]
    assert rows[1] < rows[0]


@pytest.mark.parametrize("targets", ["all", "any"])
def test_ctrl_c_after_the_last_target_adds_no_row(targets):
    """A Ctrl-C in the progress callback of the last target: every target is done, none is reported twice."""
    net, x0 = linear_multiclass(3)
    chosen = adv.other_classes(net, int(net.predict(x0)))
    seen = []

    def progress(result):
        seen.append(result.target)
        if len(seen) == len(chosen):
            raise KeyboardInterrupt

    results = adv.min_adversarial(net, x0, "l1", targets, progress=progress)
    rows = [r.target for r in results] if targets == "all" else [r["target"] for r in results[0].stages["targets"]]
    assert sorted(rows) == chosen
    statuses = [r.status for r in results] if targets == "all" else [r["status"] for r in results[0].stages["targets"]]
    assert "interrupted" not in statuses
