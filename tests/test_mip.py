"""NetworkMIP's answers equal brute force over all ReLU activation patterns of tiny networks."""
import functools
import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from explain_mnist.mip import DEFAULT_MARGIN, NetworkMIP
from explain_mnist.network import Affine, Network, ReLU
from explain_mnist.solvers import available_solvers

INSTALLED = available_solvers()


def tiny_net(seed, decision="argmax"):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 5))] + [int(rng.integers(3, 6)) for _ in range(int(rng.integers(1, 3)))]
    sizes.append(1 if decision == "sigmoid" else 3)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [Affine(rng.normal(size=(n_out, n_in)), rng.normal(size=n_out) * 0.5), ReLU()]
    return Network(layers[:-1], decision=decision, input_shape=(sizes[0],))


def brute_force_max(net, lo, hi, direction):
    """max of direction @ logits over the box: one LP per activation pattern (the net is affine on each)."""
    hidden = [a.n_out for a in net.hidden]
    best = -np.inf
    n = net.n_inputs
    for pattern in itertools.product([0.0, 1.0], repeat=sum(hidden)):
        masks = np.split(np.array(pattern), np.cumsum(hidden)[:-1])
        G, g = np.eye(n), np.zeros(n)               # the current activations as G x + g
        A_ub, b_ub = [], []
        for affine, mask in zip(net.hidden, masks):
            W = affine.dense_W()
            Z, z = W @ G, W @ g + affine.b
            sign = np.where(mask > 0, -1.0, 1.0)     # active: -z <= 0; inactive: z <= 0
            A_ub.append(sign[:, None] * Z)
            b_ub.append(-sign * z)
            G, g = mask[:, None] * Z, mask * z
        W = net.affines[-1].dense_W()
        objective = direction @ (W @ G)
        constant = direction @ (W @ g + net.affines[-1].b)
        res = linprog(-objective, A_ub=np.vstack(A_ub), b_ub=np.concatenate(b_ub), bounds=list(zip(lo, hi)),
                      method="highs")
        if res.status == 0:
            best = max(best, -res.fun + constant)
    return best


def random_box(seed, n):
    rng = np.random.default_rng(1000 + seed)
    centre = rng.uniform(-1, 1, n)
    radius = rng.uniform(0.05, 1.0) * rng.uniform(0.5, 1, n)
    return centre - radius, centre + radius


CASES = [(seed, "argmax") for seed in range(5)] + [(seed, "sigmoid") for seed in range(5, 8)]


@pytest.mark.parametrize("solver", INSTALLED)
@pytest.mark.parametrize("seed,decision", CASES)
def test_max_gap_and_counterexample_match_brute_force(solver, seed, decision):
    net = tiny_net(seed, decision)
    lo, hi = random_box(seed, net.n_inputs)
    mip = NetworkMIP(net, lo, hi, solver=solver)
    c = net.predict((lo + hi) / 2)
    C = net.spec_matrix(c)
    brute = []
    for row, j in enumerate(net.spec_classes(c)):
        expected = brute_force_max(net, lo, hi, -C[row])
        brute.append(expected)
        value, x, result = mip.max_gap(c, j)
        assert result.status == "optimal", result.message
        assert value == pytest.approx(expected, abs=1e-6)
        assert np.all(x >= lo) and np.all(x <= hi)
        assert -C[row] @ net.forward(x) == pytest.approx(value, abs=1e-6)
    x, result = mip.counterexample(c)
    if max(brute) >= DEFAULT_MARGIN + 1e-6:
        assert x is not None, result.message
        assert net.predict(x) != c and np.all(x >= lo) and np.all(x <= hi)
    elif max(brute) < 0:
        assert x is None and result.status == "infeasible"


@pytest.mark.parametrize("solver", INSTALLED)
def test_set_box_matches_fresh_build_and_brute_force(solver):
    net = tiny_net(3)
    n = net.n_inputs
    lo, hi = -np.ones(n), np.ones(n)
    mip = NetworkMIP(net, lo, hi, solver=solver)
    rng = np.random.default_rng(5)
    c = net.predict(np.zeros(n))
    j = net.spec_classes(c)[0]
    C = net.spec_matrix(c)[0]
    for _ in range(4):
        a, b = np.sort(rng.uniform(-1, 1, (2, n)), axis=0)
        b[0] = a[0]                                    # one pixel fixed
        mip.set_box(a, b)
        value, x, _ = mip.max_gap(c, j)
        fresh, _, _ = NetworkMIP(net, a, b, solver=solver).max_gap(c, j)
        assert value == pytest.approx(fresh, abs=1e-6)
        assert value == pytest.approx(brute_force_max(net, a, b, -C), abs=1e-6)
        assert np.all(x >= a - 1e-9) and np.all(x <= b + 1e-9)
        found, result = mip.counterexample(c)
        if found is not None:
            assert net.predict(found) != c and np.all(found >= a) and np.all(found <= b)
        else:
            assert result.status == "infeasible" and value < DEFAULT_MARGIN + 1e-6
    mip.set_box(lo, hi)                                # widening back to the original box is allowed
    assert mip.max_gap(c, j)[0] == pytest.approx(brute_force_max(net, lo, hi, -C), abs=1e-6)
    with pytest.raises(ValueError):
        mip.set_box(lo - 1, hi)


def test_unconfirmed_counterexample_is_never_returned(monkeypatch):
    """If the forward pass never confirms a point, the margin escalates and the answer is status "error"."""
    net = tiny_net(0)
    lo, hi = -np.ones(net.n_inputs), np.ones(net.n_inputs)
    mip = NetworkMIP(net, lo, hi, solver=INSTALLED[0])
    c = net.predict(np.zeros(net.n_inputs))
    assert mip.counterexample(c)[0] is not None        # this box has a genuine counterexample
    calls = []
    monkeypatch.setattr(net, "predict", lambda x: calls.append(1) or c)
    x, result = mip.counterexample(c)
    assert x is None and result.status == "error" and "forward pass" in result.message
    assert len(calls) == 3                             # margins 1e-4, 1e-3, 1e-2


@pytest.mark.parametrize("net_name", ["twoclass", "multiclass", "cnn_simple"])
def test_shipped_model_counterexample_is_reclassified(net_name, shipped_nets, test_set):
    """On a box around a test image with 95% of the pixels fixed, any counterexample changes the class."""
    net = shipped_nets[net_name]
    image = test_set.x[0].astype(np.float64)
    free = np.random.default_rng(2).random(784) < 0.05
    lo, hi = np.where(free, 0.0, image), np.where(free, 1.0, image)
    mip = NetworkMIP(net, lo, hi, solver="auto", time_limit=60)
    c = net.predict(image)
    x, result = mip.counterexample(c)
    assert result.status in ("optimal", "solution_limit", "infeasible"), result.message
    if x is not None:
        assert net.predict(x) != c and np.all(x >= lo) and np.all(x <= hi)
        np.testing.assert_array_equal(x[~free], image[~free])
    gap = max(mip.max_gap(c, j)[0] for j in net.spec_classes(c))
    assert (x is not None) == (gap >= DEFAULT_MARGIN)


@pytest.mark.parametrize("solver", INSTALLED)
def test_point_box_on_shipped_models(solver, shipped_nets, test_set):
    """With every pixel fixed the model has no columns; the answers are the forward pass's."""
    for net in shipped_nets.values():
        x = test_set.x[1].astype(np.float64)
        mip = NetworkMIP(net, x, x, solver=solver)
        c = net.predict(x)
        C = net.spec_matrix(c)
        for row, j in enumerate(net.spec_classes(c)):
            value, point, result = mip.max_gap(c, j)
            assert result.status == "optimal"
            assert value == pytest.approx(-C[row] @ net.forward(x), abs=1e-6)
            np.testing.assert_array_equal(point, x)
        found, result = mip.counterexample(c)
        assert found is None and result.status == "infeasible"


@pytest.mark.parametrize("net_name", ["twoclass", "multiclass", "cnn_simple"])
def test_backends_agree_on_shipped_models(net_name, shipped_nets, test_set):
    """Every installed backend finds the same max gap on a shipped model with 90% of the pixels fixed."""
    if len(INSTALLED) < 2:
        pytest.skip("needs two solvers")
    net = shipped_nets[net_name]
    image = test_set.x[3].astype(np.float64)
    free = np.random.default_rng(7).random(784) < 0.10
    lo, hi = np.where(free, 0.0, image), np.where(free, 1.0, image)
    c = net.predict(image)
    j = net.spec_classes(c)[0]
    values = {}
    for solver in INSTALLED:
        value, x, result = NetworkMIP(net, lo, hi, solver=solver, time_limit=120).max_gap(c, j)
        assert result.status == "optimal", (solver, result.message)
        assert -net.spec_matrix(c)[0] @ net.forward(x) == pytest.approx(value, abs=1e-5)
        values[solver] = value
    reference = values[INSTALLED[0]]
    for solver, value in values.items():
        assert value == pytest.approx(reference, abs=1e-5 * (1 + abs(reference))), values


@functools.lru_cache(maxsize=None)
def class_maxima(seed, decision):
    """Brute force, per class c, of the largest competitor margin over the test box (shared by the backends)."""
    net = tiny_net(seed, decision)
    lo, hi = random_box(seed, net.n_inputs)
    classes = range(2 if decision == "sigmoid" else net.n_outputs)
    return {c: max(brute_force_max(net, lo, hi, -row) for row in net.spec_matrix(c)) for c in classes}


@pytest.mark.parametrize("solver", INSTALLED)
@pytest.mark.parametrize("seed,decision", CASES)
def test_one_model_answers_counterexamples_for_every_class(solver, seed, decision):
    """Switching the class rewrites the selector rows of the one loaded model; each answer matches brute force."""
    net = tiny_net(seed, decision)
    lo, hi = random_box(seed, net.n_inputs)
    mip = NetworkMIP(net, lo, hi, solver=solver)
    classes = list(range(2 if decision == "sigmoid" else net.n_outputs))
    brute = class_maxima(seed, decision)
    for c in classes + classes[::-1]:
        best = brute[c]
        x, result = mip.counterexample(c)
        if best >= DEFAULT_MARGIN + 1e-6:
            assert x is not None, (c, result.message)
            assert net.predict(x) != c and np.all(x >= lo) and np.all(x <= hi)
        elif best < 0:
            assert x is None and result.status == "infeasible", (c, result.status)
    assert list(mip._instances) == ["counterexample"]
