"""The MIP encoding reproduces the forward pass: with the input fixed, the logits are the network's."""
import numpy as np
import pytest

from explain_mnist.bounds import interval_bounds
from explain_mnist.encoding import encode_network
from explain_mnist.network import Affine, Network, ReLU
from explain_mnist.solvers import available_solvers, make_solver
from explain_mnist.solvers.cplex import fits_cplex

SOLVERS = available_solvers()


def random_net(rng, sizes, decision="argmax", sparse_first=False):
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.normal(size=(n_out, n_in))
        if k == 0 and sparse_first:
            W[:, rng.random(n_in) < 0.3] = 0.0        # some inputs feed nothing
        layers += [Affine(W, rng.normal(size=n_out) * 0.5), ReLU()]
    return Network(layers[:-1], decision=decision, input_shape=(sizes[0],))


def true_columns(model, net, x):
    """The column vector the encoding should admit at input x: inputs, ReLU outputs, phases."""
    v = np.zeros(model.n_cols)
    v[model.input_cols] = x[model.input_pixels]
    _, pre = net.forward(x, return_preactivations=True)
    for layer, z in zip(model.layers, pre):
        v[layer.y_cols] = np.maximum(z[layer.unstable], 0.0)
        v[layer.d_cols] = (z[layer.unstable] > 0).astype(float)
    return v


def solvers_for(model):
    return [s for s in SOLVERS if s != "cplex" or fits_cplex(model.n_cols, model.n_rows)]


def check_fixed_input(model, net, x, tol=1e-5):
    """Fix the input columns to x on every backend; the MIP's logits must be the forward pass."""
    expected = net.forward(x)
    for name in solvers_for(model):
        solver = make_solver(name, model)
        solver.set_col_bounds(model.input_cols, x[model.input_pixels], x[model.input_pixels])
        result = solver.solve()
        assert result.status == "optimal", (name, result.message)
        np.testing.assert_allclose(model.logits(result.x), expected, atol=tol, err_msg=name)
        np.testing.assert_allclose(model.input_point(result.x, fill=x), x, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("seed", range(6))
def test_random_nets_fixed_input_and_counts(seed):
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(3, 8))
    sizes = [n_in] + [int(rng.integers(3, 7)) for _ in range(int(rng.integers(1, 4)))] + [int(rng.integers(1, 4))]
    net = random_net(rng, sizes, decision="sigmoid" if sizes[-1] == 1 else "argmax", sparse_first=seed % 2 == 0)
    lo = rng.uniform(-1, 0, n_in)
    hi = lo + rng.uniform(0, 2, n_in)
    fixed = rng.random(n_in) < 0.25
    hi[fixed] = lo[fixed]
    bounds = interval_bounds(net, lo, hi)
    model = encode_network(net, lo, hi)
    assert model.n_binaries == bounds.n_unstable()
    W0 = net.affines[0].dense_W()
    np.testing.assert_array_equal(model.input_pixels, np.flatnonzero((np.abs(W0).sum(0) > 0) & (lo < hi)))
    for _ in range(3):
        x = rng.uniform(lo, hi)
        v = true_columns(model, net, x)
        assert model.violation(v) < 1e-9               # every true point is in the model
        np.testing.assert_allclose(model.logits(v), net.forward(x), atol=1e-9)
        check_fixed_input(model, net, x)


def test_fully_fixed_image_has_no_columns(shipped_nets, test_set):
    for name, net in shipped_nets.items():
        for i in range(3):
            x = test_set.x[i].astype(np.float64)
            model = encode_network(net, x, x)
            assert model.n_cols == 0 and model.n_binaries == 0 and model.n_rows == 0
            np.testing.assert_allclose(model.logits(np.zeros(0)), net.forward(x), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("net_name", ["twoclass", "multiclass", "cnn_simple"])
def test_shipped_models_mostly_fixed(net_name, shipped_nets, test_set):
    net = shipped_nets[net_name]
    rng = np.random.default_rng(7)
    for i in (0, 1):
        image = test_set.x[i].astype(np.float64)
        free = rng.random(784) < 0.05
        lo, hi = np.where(free, 0.0, image), np.where(free, 1.0, image)
        model = encode_network(net, lo, hi)
        assert model.n_binaries == interval_bounds(net, lo, hi).n_unstable()
        assert set(model.input_pixels) <= set(np.flatnonzero(free))
        x = np.where(free, rng.random(784), image)
        v = true_columns(model, net, x)
        assert model.violation(v) < 1e-7
        np.testing.assert_allclose(model.logits(v), net.forward(x), atol=1e-5)
        check_fixed_input(model, net, x)


@pytest.mark.parametrize("net_name", ["twoclass", "multiclass", "cnn_simple"])
def test_shipped_models_full_box(net_name, shipped_nets, test_set):
    net = shipped_nets[net_name]
    model = encode_network(net, 0.0, 1.0)
    bounds = interval_bounds(net, np.zeros(784), np.ones(784))
    assert model.n_binaries == bounds.n_unstable()
    used = np.abs(net.affines[0].dense_W()).sum(0) > 0
    np.testing.assert_array_equal(model.input_pixels, np.flatnonzero(used))
    x = test_set.x[3].astype(np.float64)
    v = true_columns(model, net, x)
    assert model.violation(v) < 1e-7
    np.testing.assert_allclose(model.logits(v), net.forward(x), atol=1e-5)
    check_fixed_input(model, net, x)


def test_tighter_bounds_are_used(test_set, multiclass_net):
    """Bounds passed in replace interval bounds: neurons they declare stable get no binary.

    (These bounds hold only at x, not over the box: the test checks what the encoder takes, not validity.)
    """
    net = multiclass_net
    lo, hi = np.zeros(784), np.ones(784)
    bounds = interval_bounds(net, lo, hi)
    x = test_set.x[0].astype(np.float64)
    _, pre = net.forward(x, return_preactivations=True)
    for k, z in enumerate(pre):
        bounds.lower[k] = np.minimum(z, 0.0)[None]
        bounds.upper[k] = np.maximum(z, 0.0)[None]
    model = encode_network(net, lo, hi, bounds)
    assert model.n_binaries == 0
    assert model.n_cols == len(model.input_pixels)


def test_add_columns_and_rows():
    rng = np.random.default_rng(0)
    net = random_net(rng, [3, 4, 2])
    model = encode_network(net, -np.ones(3), np.ones(3))
    n, m = model.n_cols, model.n_rows
    new = model.add_columns([0.0, -1.0], [1.0, 2.0], integer=[True, False], c=[1.0, 2.0])
    np.testing.assert_array_equal(new, [n, n + 1])
    assert model.A.shape == (m, n + 2) and model.logit_matrix.shape[1] == n + 2
    rows = model.add_rows(np.eye(1, n + 2, n + 1), -0.5, 0.5)
    np.testing.assert_array_equal(rows, [m])
    assert model.n_binaries == model.layers[0].unstable.size + 1
    assert model.row_upper[-1] == 0.5 and model.c[-1] == 2.0


def test_dual_lower_bound_is_weak_duality():
    """Any row multipliers give a bound below the LP optimum (linprog); the solver's own duals give the optimum."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    from explain_mnist.encoding import MIPModel
    from explain_mnist.solvers import make_solver

    rng = np.random.default_rng(5)
    for _ in range(20):
        n, m = 6, 5
        A = sp.csr_matrix(rng.normal(size=(m, n)))
        model = MIPModel(lb=-rng.uniform(0, 2, n), ub=rng.uniform(0, 2, n), integrality=np.zeros(n, dtype=bool), A=A,
                         row_lower=np.where(rng.uniform(size=m) < 0.5, -np.inf, -1.0), row_upper=np.full(m, 1.0),
                         c=rng.normal(size=n), c0=0.3)
        finite = np.isfinite(model.row_lower)
        exact = linprog(model.c, A_ub=sp.vstack([A, -A[finite]]).toarray(),
                        b_ub=np.concatenate([model.row_upper, -model.row_lower[finite]]),
                        bounds=list(zip(model.lb, model.ub)), method="highs")
        assert exact.status == 0
        optimum = exact.fun + model.c0
        for _ in range(10):
            assert model.dual_lower_bound(rng.normal(size=m)) <= optimum + 1e-9
        result = make_solver("highs", model).solve()
        assert model.dual_lower_bound(result.row_duals) == pytest.approx(optimum, abs=1e-7)
