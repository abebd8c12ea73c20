"""Intermediate bounds refined by branch-and-bound, against brute force and forward passes.

Brute force for a neuron's bound: the exact minimum of ``s z_ki`` over the box is the
smallest, over the activation patterns of the layers below k, of an LP on that
pattern's polytope (`test_bab.pattern_min_margin` on the network cut after layer k).
"""
import itertools
from pathlib import Path

import numpy as np
import pytest

from explain_mnist import verifier as verifier_module
from explain_mnist.bounds import alpha_tighten, crown_bounds, interval_bounds
from explain_mnist.network import Network
from explain_mnist.refine import _neuron_net, neuron_bound, refine_bounds
from explain_mnist.verifier import Verifier
from tests.test_bab import brute_min_margin, check_verdict, pattern_min_margin, random_net

MNISTFC = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "mnistfc"


def exact_neuron_min(net, lo, hi, k, i, sign):
    """Return the exact minimum of ``sign * z_ki`` over the box, by enumerating the patterns below layer k."""
    sub = _neuron_net(net, k, i, sign)
    sizes = [a.n_out for a in sub.hidden]
    best = np.inf
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
        masks = np.split(np.array(pattern, dtype=float), np.cumsum(sizes)[:-1])
        best = min(best, pattern_min_margin(sub, lo, hi, np.ones(1), masks))
    return best


def deep_case(seed):
    """Return ``(net, lo, hi, c)``: a seeded random net with 3 hidden layers of 3, a box, its centre's class."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(2, 5))
    net = random_net(rng, n_in, [3, 3, 3], int(rng.choice([1, 3])))
    centre = rng.uniform(-1, 1, n_in)
    radius = rng.uniform(0.2, 1.0, n_in)
    return net, centre - radius, centre + radius, int(net.predict(centre))


@pytest.mark.parametrize("seed", range(12))
def test_neuron_bound_is_sound_and_exact_with_enough_nodes(seed):
    net, lo, hi, _ = deep_case(seed)
    bounds = crown_bounds(net, lo, hi)
    lower = [l[0] for l in bounds.lower]
    upper = [u[0] for u in bounds.upper]
    checked = 0
    for k in (1, 2):
        for i in np.flatnonzero((lower[k] < 0) & (upper[k] > 0)):
            for sign in (1.0, -1.0):
                exact = exact_neuron_min(net, lo, hi, k, i, sign)
                few, _ = neuron_bound(net, lo, hi, lower, upper, k, i, sign, node_limit=2)
                value, _ = neuron_bound(net, lo, hi, lower, upper, k, i, sign, node_limit=10_000)
                assert few <= exact + 1e-7 and value <= exact + 1e-7
                if exact <= 0:
                    # every open node ends at a leaf, whose LP is exact
                    assert value == pytest.approx(exact, abs=1e-6)
                else:
                    # searches end when every node proves the neuron stable (bound > 0)
                    assert value > 0
                checked += 1
    assert checked > 0


def test_neuron_bound_from_interval_bounds_is_sound():
    """From interval bounds, CROWN on the cut network often proves a neuron's sign at once: no search, a finite bound."""
    proved_at_root = 0
    for seed in range(12):
        net, lo, hi, _ = deep_case(seed)
        loose = interval_bounds(net, lo, hi)
        lower, upper = [l[0] for l in loose.lower], [u[0] for u in loose.upper]
        for k in (1, 2):
            for i in np.flatnonzero((lower[k] < 0) & (upper[k] > 0)):
                for sign in (1.0, -1.0):
                    value, nodes = neuron_bound(net, lo, hi, lower, upper, k, i, sign, node_limit=50)
                    assert np.isfinite(value) and value <= exact_neuron_min(net, lo, hi, k, i, sign) + 1e-7
                    proved_at_root += value > 0 and nodes == 0
    assert proved_at_root > 0


@pytest.mark.parametrize("seed", range(12))
def test_refined_bounds_hold_and_are_no_looser(seed):
    net, lo, hi, c = deep_case(seed)
    start = crown_bounds(net, lo, hi)
    refinement = refine_bounds(net, lo, hi, start)   # without margins to prove, every layer is refined
    refined = refinement.bounds
    assert refinement.searches > 0 or not any(((l < 0) & (u > 0)).any() for l, u in zip(start.lower[1:], start.upper[1:]))
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.uniform(lo, hi, (4000, lo.size)),
                   np.array(list(itertools.product(*zip(lo, hi))))])
    _, pre = net.forward(X, return_preactivations=True)
    for k, z in enumerate(pre):
        assert np.all(refined.lower[k][0] <= z.min(axis=0) + 1e-9)
        assert np.all(refined.upper[k][0] >= z.max(axis=0) - 1e-9)
        assert np.all(refined.lower[k][0] >= start.lower[k][0] - 1e-9)
        assert np.all(refined.upper[k][0] <= start.upper[k][0] + 1e-9)
    C = net.spec_matrix(c)
    with_margins = refine_bounds(net, lo, hi, alpha_tighten(net, lo, hi, C=C), C=C).bounds
    assert with_margins.spec_lower.min() <= brute_min_margin(net, lo, hi, c) + 1e-7


def test_verifier_with_refinement_equals_brute_force(monkeypatch):
    monkeypatch.setattr(verifier_module, "PROBE_NODES", 0)   # refine whenever the root leaves it open
    refined = 0
    for seed in range(40):
        net, lo, hi, c = deep_case(seed)
        m_star = brute_min_margin(net, lo, hi, c)
        if abs(m_star) < 1e-6:
            continue   # a tie: not decidable by a verified flip
        verdict = Verifier(net, mip_fallback=False).verify(lo, hi, c)
        check_verdict(net, lo, hi, c, m_star, verdict)
        refined += "refine_seconds" in verdict.stages
    assert refined >= 5


@pytest.mark.skipif(not (MNISTFC / "mnist-net_256x4.onnx").is_file(), reason="mnistfc benchmark folder absent")
def test_refined_mnistfc_bounds_contain_every_sampled_activation():
    from explain_mnist.onnx_io import read_onnx
    from explain_mnist.vnnlib import read_vnnlib

    net = read_onnx(MNISTFC / "mnist-net_256x4.onnx")
    prop = read_vnnlib(MNISTFC / "prop_0_0.03.vnnlib")
    C = net.spec_matrix(prop.label)
    start = alpha_tighten(net, prop.lo, prop.hi, C=C)
    refinement = refine_bounds(net, prop.lo, prop.hi, start, C=C, time_budget=4.0)
    assert refinement.searches > 0
    rng = np.random.default_rng(0)
    X = np.vstack([rng.uniform(prop.lo, prop.hi, (2000, prop.lo.size)),
                   np.where(rng.random((2000, prop.lo.size)) < 0.5, prop.lo, prop.hi)])
    _, pre = net.forward(X, return_preactivations=True)
    narrower = 0
    for k, z in enumerate(pre):
        assert np.all(refinement.bounds.lower[k][0] <= z.min(axis=0) + 1e-9)
        assert np.all(refinement.bounds.upper[k][0] >= z.max(axis=0) - 1e-9)
        narrower += int(np.sum(refinement.bounds.upper[k][0] - refinement.bounds.lower[k][0]
                               < start.upper[k][0] - start.lower[k][0] - 1e-6))
    assert narrower > 0
