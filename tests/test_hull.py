"""The convex-hull node bounds of one-hidden-layer networks against exact minima and against CROWN.

Exact minimum of a row over a node's region (the box and the node's fixed phases): every phase pattern of the
free neurons makes the row affine on a polytope, whose minimum is an LP (scipy's linprog); the smallest over all
patterns is the row's minimum on the region.
"""
import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from explain_mnist import bab
from explain_mnist.bounds import crown_bounds
from explain_mnist.hull import hull_rows, initial
from explain_mnist.models import load_network
from explain_mnist.network import Affine, Network, ReLU


def random_layer(rng, n_in, h):
    return rng.normal(size=(h, n_in)), rng.normal(scale=0.5, size=h)


def interval(W, b, lo, hi):
    return (b + np.where(W > 0, W * lo[:, None, :], W * hi[:, None, :]).sum(axis=2),
            b + np.where(W > 0, W * hi[:, None, :], W * lo[:, None, :]).sum(axis=2))


def exact_minimum(W, b, lo, hi, phases, v, d):
    """Return the smallest ``v . relu(W x + b) + d`` over the box where the fixed phases hold (inf: empty)."""
    best = np.inf
    free = np.flatnonzero(phases == 0)
    for pattern in itertools.product([1, -1], repeat=free.size):
        p = phases.astype(float).copy()
        p[free] = pattern
        on = p > 0
        # the active neurons' pre-activations >= 0, the others' <= 0: -p_j (w_j x + b_j) <= 0
        result = linprog(v[on] @ W[on], A_ub=-p[:, None] * W, b_ub=p * b, bounds=list(zip(lo, hi)),
                         method="highs")
        if result.status == 0:
            best = min(best, result.fun + v[on] @ b[on] + d)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_the_hull_bound_is_below_the_exact_minimum_of_every_node(seed):
    rng = np.random.default_rng(seed)
    n_in, h, pairs = int(rng.integers(2, 5)), int(rng.integers(2, 6)), 4
    W, b = random_layer(rng, n_in, h)
    centre = rng.normal(size=(pairs, n_in))
    lo, hi = centre - rng.uniform(0.1, 2.0, size=(pairs, n_in)), centre + rng.uniform(0.1, 2.0, size=(pairs, n_in))
    lower, upper = interval(W, b, lo, hi)
    phases = np.where(rng.random((pairs, h)) < 0.3, rng.choice([-1, 1], size=(pairs, h)), 0).astype(np.int8)
    v, d = rng.normal(size=(pairs, h)), rng.normal(size=pairs)
    result = hull_rows(W, b, lo, hi, lower, upper, phases, v, d, steps=60)
    for p in range(pairs):
        exact = exact_minimum(W, b, lo[p], hi[p], phases[p], v[p], d[p])
        assert result.bound[p] <= exact + 1e-9 * (1 + abs(exact)), (p, result.bound[p], exact)
        # the lower function is what the bound says: its minimum over the box
        corner = np.where(result.A[p] > 0, lo[p], hi[p])
        assert result.A[p] @ corner + result.c[p] == pytest.approx(result.bound[p], rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_the_hull_bound_is_never_below_crowns(seed):
    rng = np.random.default_rng(100 + seed)
    n_in, h = int(rng.integers(2, 30)), int(rng.integers(2, 20))
    W, b = random_layer(rng, n_in, h)
    v, d = rng.normal(size=(1, h)), rng.normal(size=1)
    lo = rng.normal(size=(1, n_in)) - 1.0
    hi = lo + rng.uniform(0.5, 2.0, size=(1, n_in))
    lower, upper = interval(W, b, lo, hi)
    net = Network([Affine(W, b), ReLU(), Affine(v, d)], decision="sigmoid")
    crown = crown_bounds(net, lo, hi, C=np.ones((1, 1))).spec_lower[0, 0]
    result = hull_rows(W, b, lo, hi, lower, upper, np.zeros((1, h), np.int8), v, d)
    assert result.bound[0] >= crown - 1e-6 * (1 + abs(crown))


def test_the_start_is_the_triangle_chord():
    rng = np.random.default_rng(7)
    W, b = random_layer(rng, 5, 6)
    lo, hi = -np.ones((1, 5)), np.ones((1, 5))
    lower, upper = interval(W, b, lo, hi)
    v = -np.ones((1, 6))
    _, slopes, _ = initial(lower, upper, W, v)
    x = rng.uniform(-1, 1, size=(200, 5))
    for j in np.flatnonzero((lower[0] < 0) & (upper[0] > 0)):
        chord = upper[0, j] / (upper[0, j] - lower[0, j]) * (x @ W[j] + b[j] - lower[0, j])
        assert np.allclose(x @ slopes[0, j] + upper[0, j] / (upper[0, j] - lower[0, j]) * (b[j] - lower[0, j]), chord)


@pytest.mark.parametrize("shift_w,shift_v", [(-40, 0), (20, -10), (-8, 12)])
def test_scaling_by_powers_of_two_scales_only_the_bound(shift_w, shift_v):
    rng = np.random.default_rng(3)
    W, b = random_layer(rng, 12, 8)
    v, d = rng.normal(size=(2, 8)), rng.normal(size=2)
    lo, hi = -np.ones((2, 12)), np.ones((2, 12))
    phases = np.zeros((2, 8), np.int8)
    plain = hull_rows(W, b, lo, hi, *interval(W, b, lo, hi), phases, v, d)
    sw, sv = 2.0 ** shift_w, 2.0 ** shift_v
    scaled = hull_rows(W * sw, b * sw, lo, hi, *interval(W * sw, b * sw, lo, hi), phases, v * sv, d * sw * sv)
    assert np.allclose(scaled.bound, plain.bound * sw * sv, rtol=1e-5)


def test_the_hull_is_tighter_than_the_triangle_on_the_shipped_twoclass_net():
    net = load_network("twoclass")
    W, b = net.hidden[0].dense_W(), net.hidden[0].b
    lo, hi = np.zeros((1, W.shape[1])), np.ones((1, W.shape[1]))
    v, d = net.affines[1].dense_W(), net.affines[1].b
    crown = crown_bounds(net, lo, hi, C=np.ones((1, 1))).spec_lower[0, 0]
    result = hull_rows(W, b, lo, hi, *interval(W, b, lo, hi), np.zeros((1, W.shape[0]), np.int8), v, d, steps=200)
    # the logit's smallest value over a few corners is an upper bound of its minimum
    corners = np.random.default_rng(0).integers(0, 2, size=(2000, W.shape[1])).astype(float)
    assert crown < result.bound[0] <= net.forward(corners)[:, 0].min()
    assert result.bound[0] - crown > 0.2 * abs(crown)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("warm_bytes", [0, None])
@pytest.mark.parametrize("splits_at_once", [1, bab.MAX_SPLITS_AT_ONCE])
def test_branch_and_bound_with_hull_bounds_decides_as_the_exact_minimum(seed, warm_bytes, splits_at_once,
                                                                         monkeypatch):
    if warm_bytes is not None:
        monkeypatch.setattr(bab, "HULL_WARM_BYTES", warm_bytes)
    monkeypatch.setattr(bab, "MAX_SPLITS_AT_ONCE", splits_at_once)
    rng = np.random.default_rng(200 + seed)
    # few inputs: input splits compete with ReLU splits; many (> INPUT_SPLIT_MAX_DIMS): ReLU splits only
    n_in, h = int(rng.integers(2, 5) if seed % 2 else rng.integers(18, 25)), int(rng.integers(3, 8))
    W, b = random_layer(rng, n_in, h)
    v = rng.normal(size=(1, h))
    lo, hi = -np.ones(n_in), np.ones(n_in)
    exact = exact_minimum(W, b, lo, hi, np.zeros(h, np.int8), v[0], 0.0)
    d = -exact + rng.choice([-1, 1]) * 0.05 * (1 + abs(exact))      # the logit's minimum 5 % off 0, either side
    net = Network([Affine(W, b), ReLU(), Affine(v, np.array([d]))], decision="sigmoid")
    outcome = bab.branch_and_bound(net, lo, hi, 1)      # class 1: the logit must stay > 0
    assert outcome.status == ("robust" if exact + d > 0 else "not_robust")
    if outcome.status == "not_robust":
        assert net.predict(outcome.x[None])[0] != 1 and np.all(outcome.x >= lo) and np.all(outcome.x <= hi)
