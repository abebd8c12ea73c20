"""Bounds checked against forward passes of sampled inputs, brute force over box corners and each other."""
import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

import explain_mnist.bounds as bounds_module
from explain_mnist.bounds import BOUND_METHODS, Bounds, compute_bounds, crown_bounds, interval_bounds, spec_coefficients
from explain_mnist.lp_bounds import lp_tighten
from explain_mnist.network import Affine, Network, ReLU

SOUND_TOL = 1e-9
NEST_TOL = 1e-7
N_SAMPLES = 10_000
METHODS = ("interval", "crown", "lp")  # alpha takes no phases: its own tests below


def random_net(sizes, seed, sparse_first=False, decision="argmax"):
    """Return a random ReLU net; with ``sparse_first`` its first map is a CSR matrix with 25 % nonzeros."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in) * 2
        if sparse_first and k == 0:
            W = sp.csr_matrix(W * (rng.uniform(size=W.shape) < 0.25))
        layers += [Affine(W, rng.normal(size=n_out) * 0.5), ReLU()]
    return Network(layers[:-1], decision=decision, input_shape=(sizes[0],))


NETS = {
    "dense_6_8_7_3": lambda: random_net([6, 8, 7, 3], seed=1),
    "sparse_20_12_6_3": lambda: random_net([20, 12, 6, 3], seed=2, sparse_first=True),
}


def random_boxes(n_in, n_boxes, rng, width=1.0):
    lo = rng.uniform(-1.0, 1.0, size=(n_boxes, n_in))
    return lo, lo + rng.uniform(0.05, width, size=(n_boxes, n_in))


def sample_box(lo, hi, rng, n=N_SAMPLES):
    """Return uniform samples of the box plus random corners."""
    inside = lo + rng.uniform(size=(n, lo.size)) * (hi - lo)
    corners = np.where(rng.uniform(size=(n // 10, lo.size)) < 0.5, lo, hi)
    return np.vstack([inside, corners])


def respects(pre, phases):
    """Return the mask of samples whose ReLU phases agree with the fixed ones (zero counts as both)."""
    ok = np.ones(pre[0].shape[0], dtype=bool)
    for z, phase in zip(pre, phases):
        ok &= np.all((phase == 0) | ((phase > 0) & (z >= 0)) | ((phase < 0) & (z <= 0)), axis=1)
    return ok


def phases_of_anchor(net, lo, hi, rng, fraction=0.4):
    """Return phases copied from a random point of the box on a random fraction of the neurons."""
    anchor = lo + rng.uniform(size=lo.size) * (hi - lo)
    _, pre = net.forward(anchor, return_preactivations=True)
    return [np.where(rng.uniform(size=z.size) < fraction, np.where(z >= 0, 1, -1), 0).astype(np.int8) for z in pre]


def assert_sound(net, bounds, box, X, C, phases=None):
    """Check every bound of one box of ``bounds`` against the forward pass of the samples ``X`` (inside that box)."""
    lo, hi = box
    logits, pre = net.forward(X, return_preactivations=True)
    keep = respects(pre, phases) if phases is not None else np.ones(len(X), dtype=bool)
    assert keep.sum() > 0, "no sample respects the phases: the check would be empty"
    for k, z in enumerate(pre):
        assert np.all(z[keep] >= bounds.lower[k][0] - SOUND_TOL), f"layer {k} lower bound violated"
        assert np.all(z[keep] <= bounds.upper[k][0] + SOUND_TOL), f"layer {k} upper bound violated"
    spec = logits[keep] @ C.T
    assert np.all(spec >= bounds.spec_lower[0] - SOUND_TOL)
    assert np.all(spec <= bounds.spec_upper[0] + SOUND_TOL)
    if bounds.spec_lower_A is not None:
        A, c = bounds.spec_lower_A[0], bounds.spec_lower_c[0]
        assert np.all(X[keep] @ A.T + c <= spec + SOUND_TOL)
        minimiser = np.where(A > 0, lo, hi)
        np.testing.assert_allclose(np.einsum("mn,mn->m", A, minimiser) + c, bounds.spec_lower[0], atol=1e-9)


def assert_nested(inner: Bounds, outer: Bounds, tol=NEST_TOL):
    for k in range(len(inner.lower)):
        assert np.all(inner.lower[k] >= outer.lower[k] - tol), f"layer {k}: {inner.method} lower below {outer.method}"
        assert np.all(inner.upper[k] <= outer.upper[k] + tol), f"layer {k}: {inner.method} upper above {outer.method}"


# --- soundness on random nets -----------------------------------------------------------------


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("with_phases", [False, True])
def test_bounds_contain_every_sampled_input(net_name, method, with_phases):
    net = NETS[net_name]()
    rng = np.random.default_rng(10)
    C = rng.normal(size=(4, net.n_outputs))
    lo, hi = random_boxes(net.n_inputs, 3, rng)
    phases = None
    if with_phases:
        per_box = [phases_of_anchor(net, lo[i], hi[i], rng) for i in range(3)]
        phases = [np.stack([p[k] for p in per_box]) for k in range(len(net.hidden))]
    result = compute_bounds(net, lo, hi, method=method, phases=phases, C=C)
    assert result.method == method and result.seconds >= 0
    assert not result.infeasible.any()
    for i in range(3):
        X = sample_box(lo[i], hi[i], rng)
        box_phases = None if phases is None else [p[i] for p in phases]
        assert_sound(net, result.box(i), (lo[i], hi[i]), X, C, box_phases)


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_crown_is_sound_for_any_lower_slopes(net_name):
    net = NETS[net_name]()
    rng = np.random.default_rng(11)
    lo, hi = random_boxes(net.n_inputs, 2, rng)
    C = rng.normal(size=(3, net.n_outputs))
    alpha = [rng.uniform(size=(2, a.n_out)) for a in net.hidden]
    result = crown_bounds(net, lo, hi, C=C, alpha=alpha)
    for i in range(2):
        assert_sound(net, result.box(i), (lo[i], hi[i]), sample_box(lo[i], hi[i], rng), C)


@pytest.mark.parametrize("model", ["twoclass", "multiclass", "cnn_simple"])
def test_shipped_models_over_eps_ball(model, shipped_nets, test_set):
    net = shipped_nets[model]
    x = test_set.x[0].astype(np.float64)
    lo, hi = np.clip(x - 0.05, 0, 1), np.clip(x + 0.05, 0, 1)
    C = net.spec_matrix(net.predict(x))
    rng = np.random.default_rng(12)
    results = {m: compute_bounds(net, lo, hi, method=m, C=C) for m in METHODS}
    X = sample_box(lo, hi, rng)
    crown_minimisers = np.where(results["crown"].spec_lower_A[0] > 0, lo, hi)
    X = np.vstack([X, crown_minimisers, x])
    for result in results.values():
        assert_sound(net, result, (lo, hi), X, C)
    assert_nested(results["crown"], results["interval"])
    assert_nested(results["lp"], results["crown"])


# --- relative tightness -----------------------------------------------------------------------


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("with_phases", [False, True])
def test_crown_inside_interval_and_lp_inside_crown(net_name, with_phases):
    net = NETS[net_name]()
    rng = np.random.default_rng(13)
    lo, hi = random_boxes(net.n_inputs, 4, rng)
    phases = None
    if with_phases:
        per_box = [phases_of_anchor(net, lo[i], hi[i], rng) for i in range(4)]
        phases = [np.stack([p[k] for p in per_box]) for k in range(len(net.hidden))]
    C = rng.normal(size=(3, net.n_outputs))
    interval, crown, lp = (compute_bounds(net, lo, hi, method=m, phases=phases, C=C) for m in METHODS)
    assert_nested(crown, interval)
    assert_nested(lp, crown)
    assert np.all(lp.spec_lower >= crown.spec_lower - NEST_TOL)
    assert np.all(lp.spec_upper <= crown.spec_upper + NEST_TOL)


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_lp_spec_at_least_as_tight_as_crown_with_any_slopes(net_name):
    """The triangle LP's optimum dominates every choice of CROWN lower slopes."""
    net = NETS[net_name]()
    rng = np.random.default_rng(14)
    lo, hi = random_boxes(net.n_inputs, 3, rng)
    C = rng.normal(size=(3, net.n_outputs))
    lp = compute_bounds(net, lo, hi, method="lp", C=C)
    for trial in range(5):
        alpha = [rng.uniform(size=(3, a.n_out)) if trial else np.zeros((3, a.n_out)) for a in net.hidden]
        crown = crown_bounds(net, lo, hi, C=C, alpha=alpha)
        assert np.all(lp.spec_lower >= crown.spec_lower - NEST_TOL)
        assert np.all(lp.spec_upper <= crown.spec_upper + NEST_TOL)


def test_lp_tightens_something_on_a_deep_net():
    """Not a soundness check: guards against an LP step that silently never improves anything."""
    net = NETS["dense_6_8_7_3"]()
    rng = np.random.default_rng(15)
    lo, hi = random_boxes(net.n_inputs, 4, rng)
    C = rng.normal(size=(3, net.n_outputs))
    crown, lp = compute_bounds(net, lo, hi, "crown", C=C), compute_bounds(net, lo, hi, "lp", C=C)
    gain = sum((lp.lower[k] - crown.lower[k]).sum() + (crown.upper[k] - lp.upper[k]).sum()
               for k in range(len(net.hidden)))
    assert gain + (lp.spec_lower - crown.spec_lower).sum() > 1e-3


# --- exactness on cases with a known answer ---------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_first_layer_bounds_are_the_exact_range_over_corners(method):
    net = random_net([5, 6, 2], seed=3)
    rng = np.random.default_rng(16)
    lo, hi = random_boxes(5, 2, rng)
    result = compute_bounds(net, lo, hi, method=method)
    for i in range(2):
        corners = np.array([np.where(np.array(bits, dtype=bool), hi[i], lo[i])
                            for bits in itertools.product([0, 1], repeat=5)])
        _, pre = net.forward(corners, return_preactivations=True)
        np.testing.assert_allclose(result.lower[0][i], pre[0].min(axis=0), atol=1e-12)
        np.testing.assert_allclose(result.upper[0][i], pre[0].max(axis=0), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("net_name", sorted(NETS))
def test_degenerate_box_gives_the_forward_pass(method, net_name):
    net = NETS[net_name]()
    rng = np.random.default_rng(17)
    x = rng.uniform(-1, 1, size=net.n_inputs)
    C = rng.normal(size=(4, net.n_outputs))
    result = compute_bounds(net, x, x, method=method, C=C)
    logits, pre = net.forward(x, return_preactivations=True)
    np.testing.assert_allclose(result.spec_lower[0], C @ logits, atol=1e-9)
    np.testing.assert_allclose(result.spec_upper[0], C @ logits, atol=1e-9)
    for k, z in enumerate(pre):
        np.testing.assert_allclose(result.lower[k][0], z, atol=1e-9)
        np.testing.assert_allclose(result.upper[k][0], z, atol=1e-9)


@pytest.mark.parametrize("model", ["twoclass", "multiclass", "cnn_simple"])
def test_lp_on_degenerate_box_of_shipped_model_gives_the_margins(model, shipped_nets, test_set):
    net = shipped_nets[model]
    x = test_set.x[0].astype(np.float64)
    c = net.predict(x)
    result = compute_bounds(net, x, x, method="lp", C=net.spec_matrix(c))
    np.testing.assert_allclose(result.spec_lower[0], net.margins(x, c), rtol=1e-12, atol=1e-9)
    assert not result.infeasible[0]


def one_layer_crown_by_hand(net, lo, hi, C, alpha):
    """Return CROWN's spec lower bound of a one-hidden-layer net, built neuron by neuron and minimised over corners."""
    first, last = net.affines
    corners = np.array([np.where(np.array(bits, dtype=bool), hi, lo)
                        for bits in itertools.product([0, 1], repeat=lo.size)])
    z = corners @ first.W.T + first.b
    l, u = z.min(axis=0), z.max(axis=0)
    unstable = (l < 0) & (u > 0)
    chord = np.where(unstable, u / np.where(unstable, u - l, 1.0), (l >= 0).astype(float))
    offset = np.where(unstable, -chord * l, 0.0)
    slope_low = np.where(unstable, alpha, (l >= 0).astype(float))
    lam = C @ last.W
    coef = np.where(lam >= 0, lam * slope_low, lam * chord)
    const = C @ last.b + np.where(lam < 0, lam * offset, 0.0).sum(axis=1)
    return (z @ coef.T + const).min(axis=0)


@pytest.mark.parametrize("slopes", ["adaptive", "zero", "one", "random"])
def test_crown_on_one_hidden_layer_matches_the_relaxation_built_by_hand(slopes):
    net = random_net([5, 6, 2], seed=4)
    rng = np.random.default_rng(22)
    lo, hi = random_boxes(5, 3, rng, width=1.5)
    C = rng.normal(size=(3, 2))
    alpha = {"zero": np.zeros((3, 6)), "one": np.ones((3, 6)), "random": rng.uniform(size=(3, 6))}.get(slopes)
    result = crown_bounds(net, lo, hi, C=C, alpha=None if alpha is None else [alpha])
    assert result.unstable(0).any(), "the boxes must leave some neuron unstable, else slopes do not matter"
    for i in range(3):
        l, u = result.lower[0][i], result.upper[0][i]
        box_alpha = (u > -l).astype(float) if alpha is None else alpha[i]
        expected = one_layer_crown_by_hand(net, lo[i], hi[i], C, box_alpha)
        np.testing.assert_allclose(result.spec_lower[i], expected, atol=1e-10)


def test_crown_second_layer_is_the_back_substituted_relaxation():
    """Layer-1 bounds of a deeper net: the hand-built one-layer relaxation of z_1 and -z_1, cut by interval bounds."""
    net = NETS["dense_6_8_7_3"]()
    first, second = net.hidden[0], net.hidden[1]
    prefix = Network([first, ReLU(), second], input_shape=(6,))
    rng = np.random.default_rng(25)
    lo, hi = random_boxes(6, 3, rng, width=1.5)
    result = crown_bounds(net, lo, hi)
    interval = interval_bounds(net, lo, hi)
    identity = np.eye(second.n_out)
    for i in range(3):
        l0, u0 = result.lower[0][i], result.upper[0][i]
        adaptive = (u0 > -l0).astype(float)
        low = one_layer_crown_by_hand(prefix, lo[i], hi[i], identity, adaptive)
        high = -one_layer_crown_by_hand(prefix, lo[i], hi[i], -identity, adaptive)
        refined = interval.unstable(1)[i]  # neurons interval arithmetic leaves undecided are back-substituted
        assert refined.any()
        np.testing.assert_allclose(result.lower[1][i][refined], np.maximum(low, interval.lower[1][i])[refined],
                                   atol=1e-10)
        np.testing.assert_allclose(result.upper[1][i][refined], np.minimum(high, interval.upper[1][i])[refined],
                                   atol=1e-10)
    assert np.any(result.lower[1] > interval.lower[1] + 1e-6), "back-substitution should beat intervals somewhere"


def relaxed(lam, lower, upper, phase):
    """Return ``lam`` pushed through the ReLU's lower-bound relaxation (adaptive slopes), written out per case."""
    active = (phase > 0) | ((phase == 0) & (lower >= 0))
    dead = ~active & ((phase < 0) | (upper <= 0))
    unstable = ~active & ~dead
    chord = np.divide(upper, upper - lower, out=np.zeros_like(upper), where=unstable)
    low_slope = np.where(active, 1.0, np.where(unstable & (upper > -lower), 1.0, 0.0))
    up_slope = np.where(active, 1.0, chord)
    return np.where(lam > 0, lam * low_slope, lam * up_slope)


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_spec_coefficients_chain_to_crowns_linear_lower_bound(net_name):
    """The coefficient of a_k times W_k, relaxed through layer k-1, gives that of a_{k-1}, and at the bottom A."""
    net = NETS[net_name]()
    rng = np.random.default_rng(26)
    lo, hi = random_boxes(net.n_inputs, 4, rng, width=1.0)
    per_box = [phases_of_anchor(net, lo[i], hi[i], rng, fraction=0.3) for i in range(4)]
    phases = [np.stack([p[k] for p in per_box]) for k in range(len(net.hidden))]
    C = rng.normal(size=(4, 2, net.n_outputs))
    result = crown_bounds(net, lo, hi, phases=phases, C=C)
    boxes = np.array([3, 1])
    row = np.array([0, 1])
    lam = spec_coefficients(net, result, C[boxes, row], phases, boxes=boxes)
    last = net.affines[-1].dense_W()
    np.testing.assert_allclose(lam[-1], C[boxes, row] @ last, atol=1e-12)
    for k in range(len(net.hidden) - 1, -1, -1):
        through = relaxed(lam[k], result.lower[k][boxes], result.upper[k][boxes], phases[k][boxes])
        below = through @ net.hidden[k].dense_W()
        expected = lam[k - 1] if k > 0 else result.spec_lower_A[boxes, row]
        np.testing.assert_allclose(below, expected, atol=1e-10)


def region_of_pattern(net, pattern):
    """Return ``(M, c, A_ub, b_ub)``: on the inputs following the full ReLU ``pattern`` the logits are ``M x + c``,
    and those inputs are ``A_ub x <= b_ub``."""
    M, c = np.eye(net.n_inputs), np.zeros(net.n_inputs)
    rows, rhs = [], []
    for affine, phase in zip(net.hidden, pattern):
        W = affine.dense_W()
        M, c = W @ M, W @ c + affine.b
        sign = np.where(phase > 0, -1.0, 1.0)[:, None]  # active: -z <= 0; inactive: z <= 0
        rows.append(sign * M)
        rhs.append(-(sign[:, 0] * c))
        M, c = M * (phase > 0)[:, None], c * (phase > 0)
    last = net.affines[-1]
    return last.dense_W() @ M, last.dense_W() @ c + last.b, np.vstack(rows), np.concatenate(rhs)


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_lp_is_exact_when_every_phase_is_fixed(net_name):
    """With all phases fixed the net is affine on a polytope: its exact extremes are one LP over x."""
    net = NETS[net_name]()
    rng = np.random.default_rng(23)
    lo, hi = random_boxes(net.n_inputs, 1, rng)
    pattern = phases_of_anchor(net, lo[0], hi[0], rng, fraction=1.0)
    C = rng.normal(size=(3, net.n_outputs))
    result = compute_bounds(net, lo, hi, method="lp", phases=pattern, C=C)
    M, c, A_ub, b_ub = region_of_pattern(net, pattern)
    for r in range(3):
        g = C[r] @ M
        low = linprog(g, A_ub=A_ub, b_ub=b_ub, bounds=np.column_stack([lo[0], hi[0]]), method="highs")
        high = linprog(-g, A_ub=A_ub, b_ub=b_ub, bounds=np.column_stack([lo[0], hi[0]]), method="highs")
        assert low.status == 0 and high.status == 0
        assert result.spec_lower[0, r] == pytest.approx(low.fun + C[r] @ c, abs=1e-6)
        assert result.spec_upper[0, r] == pytest.approx(-high.fun + C[r] @ c, abs=1e-6)


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_lp_uses_fixed_phases_of_the_same_layer(net_name):
    """Layer-0 bounds with half of layer 0 fixed are the exact extremes over the box cut by those sign constraints."""
    net = NETS[net_name]()
    rng = np.random.default_rng(24)
    lo, hi = random_boxes(net.n_inputs, 1, rng, width=1.5)
    phases = phases_of_anchor(net, lo[0], hi[0], rng, fraction=0.5)
    phases[1:] = [np.zeros_like(p) for p in phases[1:]]
    crown = crown_bounds(net, lo, hi, phases=phases)
    result = lp_tighten(net, lo[0], hi[0], phases=phases)
    W, b = net.hidden[0].dense_W(), net.hidden[0].b
    fixed = phases[0] != 0
    A_ub = np.where(phases[0][fixed] > 0, -1.0, 1.0)[:, None] * W[fixed]
    b_ub = np.where(phases[0][fixed] > 0, 1.0, -1.0) * b[fixed]
    checked = 0
    for i in np.flatnonzero(~fixed & crown.unstable(0)[0]):
        low = linprog(W[i], A_ub=A_ub, b_ub=b_ub, bounds=np.column_stack([lo[0], hi[0]]), method="highs")
        high = linprog(-W[i], A_ub=A_ub, b_ub=b_ub, bounds=np.column_stack([lo[0], hi[0]]), method="highs")
        assert result.lower[0][0, i] == pytest.approx(low.fun + b[i], abs=1e-6)
        assert result.upper[0][0, i] == pytest.approx(-high.fun + b[i], abs=1e-6)
        checked += 1
    assert checked > 0, "the box must leave some free neuron of layer 0 unstable"


# --- batching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("net_name", sorted(NETS))
def test_batched_equals_one_box_at_a_time(method, net_name, monkeypatch):
    net = NETS[net_name]()
    rng = np.random.default_rng(18)
    n_boxes = 5 if method != "lp" else 3
    lo, hi = random_boxes(net.n_inputs, n_boxes, rng)
    per_box = [phases_of_anchor(net, lo[i], hi[i], rng) for i in range(n_boxes)]
    phases = [np.stack([p[k] for p in per_box]) for k in range(len(net.hidden))]
    phases[0][0] = -phases[0][0]  # the first box's pattern is probably contradictory
    C = rng.normal(size=(n_boxes, 3, net.n_outputs))
    monkeypatch.setattr(bounds_module, "MAX_BACKSUB_ENTRIES", 1)  # forces one box per back-substitution chunk
    batched = compute_bounds(net, lo, hi, method=method, phases=phases, C=C)
    monkeypatch.undo()
    compared = 0
    for i in range(n_boxes):
        alone = compute_bounds(net, lo[i], hi[i], method=method, phases=[p[i] for p in phases], C=C[i])
        assert batched.infeasible[i] == alone.infeasible[0]
        if alone.infeasible[0]:
            continue
        compared += 1
        for k in range(len(net.hidden)):
            np.testing.assert_allclose(batched.lower[k][i], alone.lower[k][0], rtol=0, atol=1e-12)
            np.testing.assert_allclose(batched.upper[k][i], alone.upper[k][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(batched.spec_lower[i], alone.spec_lower[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(batched.spec_upper[i], alone.spec_upper[0], rtol=0, atol=1e-12)
    assert compared >= n_boxes - 1


@pytest.mark.parametrize("method", METHODS)
def test_one_box_serves_a_batch_of_phase_patterns(method):
    net = NETS["dense_6_8_7_3"]()
    rng = np.random.default_rng(27)
    lo, hi = random_boxes(6, 1, rng)
    per_pattern = [phases_of_anchor(net, lo[0], hi[0], rng) for _ in range(3)]
    phases = [np.stack([p[k] for p in per_pattern]) for k in range(len(net.hidden))]
    C = rng.normal(size=(2, 3))
    shared = compute_bounds(net, lo[0], hi[0], method=method, phases=phases, C=C)
    repeated = compute_bounds(net, lo.repeat(3, 0), hi.repeat(3, 0), method=method, phases=phases, C=C)
    assert shared.spec_lower.shape == (3, 2)
    for k in range(len(net.hidden)):
        np.testing.assert_array_equal(shared.lower[k], repeated.lower[k])
        np.testing.assert_array_equal(shared.upper[k], repeated.upper[k])
    np.testing.assert_array_equal(shared.spec_lower, repeated.spec_lower)


# --- fixed phases and infeasibility -----------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_contradictory_phase_is_flagged(method):
    net = NETS["dense_6_8_7_3"]()
    rng = np.random.default_rng(19)
    for _ in range(50):
        lo, hi = random_boxes(net.n_inputs, 1, rng, width=0.3)
        free = interval_bounds(net, lo, hi)
        dead = np.flatnonzero(free.upper[1][0] < -1e-3)
        if dead.size:
            break
    else:
        pytest.fail("no box with a surely inactive neuron in layer 1")
    _, pre = net.forward(sample_box(lo[0], hi[0], rng), return_preactivations=True)
    assert np.all(pre[1][:, dead[0]] < 0), "the sampled inputs must confirm the neuron is never active"
    phases = [np.zeros(a.n_out, dtype=np.int8) for a in net.hidden]
    phases[1][dead[0]] = 1
    assert compute_bounds(net, lo, hi, method=method, phases=phases).infeasible[0]
    phases[1][dead[0]] = -1
    assert not compute_bounds(net, lo, hi, method=method, phases=phases).infeasible[0]


@pytest.mark.parametrize("method", METHODS)
def test_infeasible_flag_agrees_with_sampling(method):
    """A flagged phase pattern has no sampled input; a pattern some sample follows is never flagged."""
    net = NETS["dense_6_8_7_3"]()
    rng = np.random.default_rng(20)
    lo, hi = random_boxes(net.n_inputs, 1, rng, width=0.6)
    X = sample_box(lo[0], hi[0], rng)
    _, pre = net.forward(X, return_preactivations=True)
    n_patterns = 40 if method != "lp" else 15
    from_samples = rng.integers(0, len(X), size=n_patterns)
    phases = []
    for k, z in enumerate(pre):
        observed = np.where(z[from_samples] >= 0, 1, -1)
        mask = rng.uniform(size=observed.shape) < 0.5
        flipped = np.where(rng.uniform(size=observed.shape) < 0.3, -observed, observed)  # half the patterns get flips
        flipped[: n_patterns // 2] = observed[: n_patterns // 2]
        phases.append(np.where(mask, flipped, 0).astype(np.int8))
    flags = compute_bounds(net, np.repeat(lo, n_patterns, 0), np.repeat(hi, n_patterns, 0), method=method,
                           phases=phases).infeasible
    followed = np.array([respects(pre, [p[i] for p in phases]).any() for i in range(n_patterns)])
    assert not np.any(flags & followed)
    assert not flags[: n_patterns // 2].any()
    assert flags.any(), "the random flips should produce at least one provably empty pattern"


# --- interface --------------------------------------------------------------------------------


def test_unknown_method_lists_the_supported_ones():
    net = NETS["dense_6_8_7_3"]()
    with pytest.raises(ValueError) as error:
        compute_bounds(net, np.zeros(6), np.ones(6), method="zonotope")
    for name in BOUND_METHODS:
        assert name in str(error.value)


def test_interval_spec_fields_and_defaults():
    net = NETS["dense_6_8_7_3"]()
    plain = compute_bounds(net, np.zeros(6), np.ones(6), method="interval")
    assert plain.spec_lower is None and plain.spec_lower_A is None and plain.infeasible.shape == (1,)
    with_spec = compute_bounds(net, np.zeros(6), np.ones(6), method="interval", C=np.eye(3))
    assert with_spec.spec_lower.shape == (1, 3) and with_spec.spec_lower_A is None


def test_bad_alpha_and_spec_shape_are_refused():
    net = NETS["dense_6_8_7_3"]()
    with pytest.raises(ValueError):
        crown_bounds(net, np.zeros(6), np.ones(6), alpha=[np.full(8, 1.5), np.zeros(7)])
    with pytest.raises(ValueError):
        crown_bounds(net, np.zeros(6), np.ones(6), C=np.eye(4))


def test_lp_tighten_without_time_keeps_the_starting_bounds():
    net = NETS["dense_6_8_7_3"]()
    rng = np.random.default_rng(21)
    lo, hi = random_boxes(6, 1, rng)
    crown = crown_bounds(net, lo, hi)
    for kwargs in ({"time_budget": 0.0}, {"layers": []}):
        same = lp_tighten(net, lo[0], hi[0], bounds=crown, **kwargs)
        for k in range(len(net.hidden)):
            np.testing.assert_array_equal(same.lower[k], crown.lower[k])
            np.testing.assert_array_equal(same.upper[k], crown.upper[k])
    with pytest.raises(ValueError):
        lp_tighten(net, lo.repeat(2, 0), hi.repeat(2, 0))


# --- alpha-CROWN ------------------------------------------------------------------------------


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_alpha_bounds_are_sound_and_inside_crown(net_name):
    net = NETS[net_name]()
    rng = np.random.default_rng(16)
    C = rng.normal(size=(4, net.n_outputs))
    lo, hi = random_boxes(net.n_inputs, 3, rng)
    crown = compute_bounds(net, lo, hi, method="crown", C=C)
    alpha = compute_bounds(net, lo, hi, method="alpha", C=C)
    assert alpha.method == "alpha"
    assert_nested(alpha, crown, tol=0.0)
    assert np.all(alpha.spec_lower >= crown.spec_lower)
    for i in range(3):
        assert_sound(net, alpha.box(i), (lo[i], hi[i]), sample_box(lo[i], hi[i], rng), C)


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_alpha_never_beats_the_triangle_lp_and_improves_on_crown(net_name):
    """Any lower slopes give a bound below the LP optimum over the same relaxation (so above it = a bug)."""
    net = NETS[net_name]()
    rng = np.random.default_rng(17)
    lo, hi = random_boxes(net.n_inputs, 4, rng)
    C = rng.normal(size=(3, net.n_outputs))
    crown = compute_bounds(net, lo, hi, "crown", C=C)
    gain = 0.0
    for i in range(4):
        alpha = bounds_module.alpha_tighten(net, lo[i], hi[i], bounds=crown.box(i), C=C)
        # the LP over alpha's own intermediate bounds dominates alpha's margin bound
        lp = lp_tighten(net, lo[i], hi[i], bounds=Bounds(alpha.lower, alpha.upper, "alpha", 0.0), C=C, layers=[])
        assert np.all(alpha.spec_lower <= lp.spec_lower + 1e-6)
        gain += float((alpha.spec_lower - crown.spec_lower[i]).sum())
    assert gain > 1e-3


def test_alpha_on_shipped_multiclass_is_sound(multiclass_net, test_set):
    net = multiclass_net
    x0 = test_set.x[0].astype(np.float64)
    lo, hi = np.clip(x0 - 0.05, 0, 1), np.clip(x0 + 0.05, 0, 1)
    C = net.spec_matrix(int(net.predict(x0)))
    alpha = compute_bounds(net, lo, hi, method="alpha", C=C)
    assert_sound(net, alpha, (lo, hi), sample_box(lo, hi, np.random.default_rng(18)), C)


@pytest.mark.parametrize("seed", range(10))
def test_fresh_from_skips_only_layers_a_new_split_cannot_change(seed):
    """A child with one new split in layer k, bounded from its parent's bounds: re-bounding from layer k + 1
    gives exactly the bounds of re-bounding every layer (CROWN bounds of a layer ignore later phases);
    starting later than that keeps stale bounds, which are still sound."""
    net = random_net([6, 8, 7, 6, 3], seed=40 + seed)
    rng = np.random.default_rng(seed)
    lo, hi = random_boxes(6, 1, rng)
    C = net.spec_matrix(int(net.predict((lo + hi) / 2)[0]))
    parent_phases = phases_of_anchor(net, lo[0], hi[0], rng, fraction=0.2)
    parent = crown_bounds(net, lo, hi, phases=parent_phases, C=C)
    checked = 0
    for k in range(len(net.hidden)):
        free = np.flatnonzero((parent_phases[k] == 0) & (parent.lower[k][0] < 0) & (parent.upper[k][0] > 0))
        if free.size == 0:
            continue
        for phase in (1, -1):
            child = [p.copy() for p in parent_phases]
            child[k][free[0]] = phase
            prior = (parent.lower, parent.upper)
            full = crown_bounds(net, lo, hi, phases=child, C=C, prior=prior)
            skipped = crown_bounds(net, lo, hi, phases=child, C=C, prior=prior, fresh_from=k + 1)
            for a, b in zip(full.lower + full.upper, skipped.lower + skipped.upper):
                np.testing.assert_allclose(a, b, atol=1e-12)
            np.testing.assert_allclose(full.spec_lower, skipped.spec_lower, atol=1e-12)
            late = crown_bounds(net, lo, hi, phases=child, C=C, prior=prior, fresh_from=len(net.hidden))
            X = sample_box(lo[0], hi[0], rng)
            if respects(net.forward(X, return_preactivations=True)[1], child).any():
                assert_sound(net, late, (lo[0], hi[0]), X, C, phases=child)
                checked += 1
    assert checked > 0
