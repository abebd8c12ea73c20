"""Branch-and-bound and the verifier loop against brute force on tiny networks.

Brute force: enumerate every activation pattern; on each, the network is affine and the
pattern's region is a polytope, so the smallest margin there is an LP in the variables
(x, z_1, ..., z_L) with the layer equations as equality rows. The smallest over all
patterns is the exact minimum margin m*; robust iff m* > 0.
"""
import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from explain_mnist.bab import NODE_BOUNDS, NodeLP, _settled, branch_and_bound
from explain_mnist.bounds import crown_bounds, optimise_rows
from explain_mnist.network import Affine, Network, ReLU
from explain_mnist.verifier import Verifier


def random_net(rng, n_in, hidden, n_out):
    sizes = [n_in] + hidden + [n_out]
    layers = []
    for k in range(len(sizes) - 1):
        layers.append(Affine(rng.normal(size=(sizes[k + 1], sizes[k])), rng.normal(scale=0.5, size=sizes[k + 1])))
        if k < len(sizes) - 2:
            layers.append(ReLU())
    return Network(layers, decision="sigmoid" if n_out == 1 else "argmax")


def brute_min_margin(net, lo, hi, c):
    """Return the exact smallest margin over the box, by enumerating activation patterns."""
    sizes = [a.n_out for a in net.hidden]
    best = np.inf
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
        masks = np.split(np.array(pattern, dtype=float), np.cumsum(sizes)[:-1])
        for r in net.spec_matrix(c):
            best = min(best, pattern_min_margin(net, lo, hi, r, masks))
    return best


def pattern_min_margin(net, lo, hi, r, masks):
    """Return the smallest ``r @ logits`` over the inputs with activation pattern ``masks`` (inf if none)."""
    sizes = [a.n_out for a in net.hidden]
    n_in = net.n_inputs
    n_var = n_in + sum(sizes)
    A_eq, b_eq, A_ub, b_ub = [], [], [], []
    offset, prev_cols, prev_mask = n_in, list(range(n_in)), np.ones(n_in)
    for affine, mask in zip(net.hidden, masks):
        W = affine.dense_W()
        for i in range(affine.n_out):
            row = np.zeros(n_var)
            row[offset + i] = 1.0
            row[prev_cols] -= W[i] * prev_mask
            A_eq.append(row)
            b_eq.append(affine.b[i])
            sign = np.zeros(n_var)
            sign[offset + i] = -1.0 if mask[i] else 1.0
            A_ub.append(sign)
            b_ub.append(0.0)
        prev_cols, prev_mask = list(range(offset, offset + affine.n_out)), mask
        offset += affine.n_out
    last = net.affines[-1].dense_W()
    objective = np.zeros(n_var)
    objective[prev_cols] = (r @ last) * prev_mask
    res = linprog(objective, A_ub=np.array(A_ub), b_ub=b_ub, A_eq=np.array(A_eq), b_eq=b_eq,
                  bounds=[(l, h) for l, h in zip(lo, hi)] + [(None, None)] * sum(sizes), method="highs")
    return res.fun + r @ net.affines[-1].b if res.status == 0 else np.inf


def random_case(seed):
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(2, 7))
    hidden = [int(rng.integers(2, 5)) for _ in range(int(rng.integers(1, 3)))]
    n_out = int(rng.choice([1, 3]))
    net = random_net(rng, n_in, hidden, n_out)
    centre = rng.uniform(-1, 1, n_in)
    radius = rng.uniform(0.05, 1.0, n_in)
    lo, hi = centre - radius, centre + radius
    return net, lo, hi, int(net.predict(centre))


def shift_to_margin(net, c, shift):
    """Return a copy of ``net`` whose every margin for class ``c`` is raised by ``shift``."""
    last = net.affines[-1]
    b = last.b.copy()
    if net.decision == "sigmoid":
        b += shift if c == 1 else -shift
    else:
        b[c] += shift
    return Network(net.layers[:-1] + [Affine(last.W, b)], decision=net.decision)


def check_verdict(net, lo, hi, c, m_star, verdict):
    assert verdict.lower_bound <= m_star + 1e-7, (m_star, verdict)   # a proven lower bound of the smallest margin
    if m_star > 0:
        assert verdict.verdict == "robust", (m_star, verdict)
        # bounds and branch-and-bound prove a positive margin; a MIP proves it up to its tolerance
        assert verdict.lower_bound > 0 or (verdict.method == "mip" and 0 < verdict.tolerance
                                           and verdict.lower_bound <= -verdict.tolerance)
    else:
        assert verdict.verdict == "not_robust", (m_star, verdict)
        x = verdict.counterexample
        assert np.all(x >= lo) and np.all(x <= hi)
        assert net.predict(x) != c and verdict.counterexample_class == net.predict(x)


@pytest.mark.parametrize("seed", range(150))
def test_verifier_equals_brute_force(seed):
    net, lo, hi, c = random_case(seed)
    m_star = brute_min_margin(net, lo, hi, c)
    if abs(m_star) < 1e-6:
        pytest.skip("margin of exactly zero: a tie, not decidable by a verified flip")
    verdict = Verifier(net, mip_fallback=False).verify(lo, hi, c)
    check_verdict(net, lo, hi, c, m_star, verdict)


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("side", [1e-3, -1e-3])
def test_decisions_within_1e_3_of_the_boundary(seed, side):
    net, lo, hi, c = random_case(1000 + seed)
    m_star = brute_min_margin(net, lo, hi, c)
    shifted = shift_to_margin(net, c, side - m_star)
    if shifted.predict((lo + hi) / 2) != c:
        pytest.skip("the shift changed the centre's class")
    assert brute_min_margin(shifted, lo, hi, c) == pytest.approx(side, abs=1e-7)
    verdict = Verifier(shifted, mip_fallback=False).verify(lo, hi, c)
    check_verdict(shifted, lo, hi, c, side, verdict)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("node_bound", sorted(NODE_BOUNDS))
@pytest.mark.parametrize("rows_apart", [True, False])
@pytest.mark.parametrize("input_splits", [True, False])
def test_branch_and_bound_alone_equals_brute_force(seed, node_bound, rows_apart, input_splits):
    net, lo, hi, c = random_case(2000 + seed)
    m_star = brute_min_margin(net, lo, hi, c)
    if abs(m_star) < 1e-6:
        pytest.skip("tie")
    outcome = branch_and_bound(net, lo, hi, c, node_bound=node_bound, rows_apart=rows_apart,
                               input_splits=input_splits)
    if not input_splits:
        assert outcome.input_splits == 0
    assert outcome.status == ("robust" if m_star > 0 else "not_robust")
    if m_star > 0:
        assert 0 < outcome.lower_bound <= m_star + 1e-7
    else:
        assert net.predict(outcome.x) != c


def test_input_splits_are_taken_where_they_bound_better_and_stay_exact():
    # one input, wide box: a ReLU split leaves the linear pieces' bounds loose, halving the input tightens them
    used, decided = 0, 0
    for seed in range(40):
        rng = np.random.default_rng(5000 + seed)
        net = random_net(rng, 1, [4, 3], 3)
        lo, hi = np.array([-3.0]), np.array([3.0])
        c = int(net.predict(np.zeros(1)))
        m_star = brute_min_margin(net, lo, hi, c)
        if abs(m_star) < 1e-6:
            continue
        outcome = branch_and_bound(net, lo, hi, c, input_splits=True)
        assert outcome.status == ("robust" if m_star > 0 else "not_robust")
        if m_star > 0:
            assert outcome.lower_bound <= m_star + 1e-7
        else:
            assert lo <= outcome.x <= hi and net.predict(outcome.x) != c
        used += outcome.input_splits > 0
        decided += 1
    assert decided >= 30 and used >= 5


def test_node_lp_is_exact_on_a_fully_fixed_node():
    rng = np.random.default_rng(7)
    net = random_net(rng, 3, [4, 3], 2)
    lo, hi = np.full(3, -1.0), np.full(3, 1.0)
    for trial in range(20):
        x = rng.uniform(-1, 1, 3)
        _, pre = net.forward(x, return_preactivations=True)
        phases = [np.where(z > 0, 1, -1).astype(np.int8) for z in pre]
        C = net.spec_matrix(0)
        root = crown_bounds(net, lo, hi)
        node_lp = NodeLP(net, lo, hi, root, C)
        value, point = node_lp.minimum(phases, [u[0] for u in root.upper], 0)
        # independent: the brute-force LP restricted to this one pattern, solved by linprog in (x, z) space
        expected = pattern_min_margin(net, lo, hi, C[0], [(z > 0).astype(float) for z in pre])
        assert value == pytest.approx(expected, abs=1e-7)
        assert float(C[0] @ net.forward(point)) == pytest.approx(value, abs=1e-6)


def test_unknown_node_bound_is_refused():
    net, lo, hi, c = random_case(1)
    with pytest.raises(ValueError, match="supported: beta, lp"):
        branch_and_bound(net, lo, hi, c, node_bound="gamma")


def random_node(rng, net, lo, hi, C):
    """Return the phases, bounds and exact per-row minima of a random node (some neurons fixed) of the box."""
    sizes = [a.n_out for a in net.hidden]
    x = rng.uniform(lo, hi)
    _, pre = net.forward(x, return_preactivations=True)
    # fix a random subset of neurons to the phases of a point of the box, so the node is not empty
    phases = [np.where(rng.uniform(size=z.shape[-1]) < 0.5, np.where(z.ravel() > 0, 1, -1), 0).astype(np.int8)
              for z in pre]
    bounds = crown_bounds(net, lo, hi, phases=phases)
    exact = []
    for r in C:
        best = np.inf
        free = [np.flatnonzero(p == 0) for p in phases]
        for pattern in itertools.product([0, 1], repeat=sum(len(f) for f in free)):
            bits = iter(pattern)
            masks = [np.where(p == 0, 0.0, (p > 0).astype(float)) for p in phases]
            for mask, f in zip(masks, free):
                for i in f:
                    mask[i] = next(bits)
            best = min(best, pattern_min_margin(net, lo, hi, r, masks))
        exact.append(best)
    return phases, bounds, np.array(exact), sizes


@pytest.mark.parametrize("seed", range(40))
def test_beta_crown_node_bounds_are_sound_and_never_beat_the_node_lp(seed):
    """At a node, beta-CROWN bounds every margin row by at most its exact minimum over the node's region
    (brute force), for any start of the multipliers, and by at most the node LP's optimum (the relaxation
    it converges to); from the default start it is never looser than CROWN's."""
    rng = np.random.default_rng(6000 + seed)
    n_in = int(rng.integers(2, 5))
    net = random_net(rng, n_in, [int(rng.integers(2, 4)) for _ in range(int(rng.integers(1, 3)))], 3)
    centre, radius = rng.uniform(-1, 1, n_in), rng.uniform(0.1, 1.0, n_in)
    lo, hi = centre - radius, centre + radius
    C = net.spec_matrix(int(net.predict(centre)))
    phases, bounds, exact, sizes = random_node(rng, net, lo, hi, C)
    W_rows = (C @ net.affines[-1].dense_W())[None]
    b_rows = (C @ net.affines[-1].b)[None]
    starts = [None, [rng.uniform(size=(1, len(C), n)) for n in sizes], [rng.uniform(-5, 5, size=(1, len(C), n)) for n in sizes]]
    crown = crown_bounds(net, lo, hi, phases=phases, C=C, prior=(bounds.lower, bounds.upper)).spec_lower[0]
    node_lp = NodeLP(net, lo, hi, crown_bounds(net, lo, hi), C)
    settled = _settled(phases, [l[0] for l in bounds.lower], [u[0] for u in bounds.upper])
    lp = np.array([node_lp.minimum(settled, [u[0] for u in bounds.upper], r, [l[0] for l in bounds.lower])[0]
                   for r in range(len(C))])
    for alpha, nu, options in [(None, None, {}), (starts[1], starts[2], {}), (starts[1], None, {}),
                               (None, None, dict(dtype=np.float32, stop_above=0.0))]:
        rows = optimise_rows(net, lo, hi, bounds.lower, bounds.upper, W_rows, b_rows, phases=phases,
                             steps=25, alpha=alpha, nu=nu, **options)
        assert np.all(rows.bound[0] <= exact + 1e-7)
        assert np.all(rows.bound[0] <= lp + 1e-6)
        # the returned linear function is a valid lower bound, and its minimum over the box is the bound
        corner = np.where(rows.A[0] > 0, lo, hi)
        assert np.allclose(np.einsum("rn,rn->r", rows.A[0], corner) + rows.c[0], rows.bound[0])
        if alpha is None:
            assert np.all(rows.bound[0] >= crown - 1e-6)
        # the multipliers returned reproduce the bound in one double-precision pass
        again = optimise_rows(net, lo, hi, bounds.lower, bounds.upper, W_rows, b_rows, phases=phases, steps=1,
                              alpha=rows.alpha, nu=rows.nu)
        assert np.allclose(again.bound, rows.bound, atol=1e-9)


def test_beta_crown_reaches_the_node_lp():
    """With enough steps the split multipliers close most of the gap between CROWN and the node LP."""
    gained, gap = 0.0, 0.0
    for seed in range(20):
        rng = np.random.default_rng(7000 + seed)
        net = random_net(rng, 4, [5, 4], 3)
        lo, hi = rng.uniform(-1, 0, 4), rng.uniform(0, 1, 4)
        C = net.spec_matrix(int(net.predict((lo + hi) / 2)))
        phases = [np.zeros(5, dtype=np.int8), np.zeros(4, dtype=np.int8)]
        x = rng.uniform(lo, hi)
        _, pre = net.forward(x, return_preactivations=True)
        phases[0][:2] = np.where(pre[0].ravel()[:2] > 0, 1, -1)
        bounds = crown_bounds(net, lo, hi, phases=phases, C=C)
        if bounds.infeasible[0]:
            continue
        node_lp = NodeLP(net, lo, hi, crown_bounds(net, lo, hi), C)
        L, U = [l[0] for l in bounds.lower], [u[0] for u in bounds.upper]
        lp = np.array([node_lp.minimum(_settled(phases, L, U), U, r, L)[0] for r in range(len(C))])
        rows = optimise_rows(net, lo, hi, bounds.lower, bounds.upper, (C @ net.affines[-1].W)[None],
                             (C @ net.affines[-1].b)[None], phases=phases, steps=300)
        gained += float(np.sum(rows.bound[0] - bounds.spec_lower[0]))
        gap += float(np.sum(lp - bounds.spec_lower[0]))
    assert gap > 0
    assert gained >= 0.9 * gap


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("side", [1e-3, -1e-3])
def test_mip_fallback_decides_near_the_boundary(seed, side):
    net, lo, hi, c = random_case(3000 + seed)
    shifted = shift_to_margin(net, c, side - brute_min_margin(net, lo, hi, c))
    if shifted.predict((lo + hi) / 2) != c:
        pytest.skip("the shift changed the centre's class")
    verifier = Verifier(shifted, node_limit=1, mip_fallback=True, solver="highs")
    verdict = verifier.verify(lo, hi, c)
    check_verdict(shifted, lo, hi, c, side, verdict)


@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("side", [1e-3, -1e-3])
@pytest.mark.parametrize("alpha_steps", [0, 5])
def test_with_and_without_alpha_root_decides_near_the_boundary(seed, side, alpha_steps):
    rng = np.random.default_rng(4000 + seed)
    n_in = int(rng.integers(2, 7))
    net = random_net(rng, n_in, [int(rng.integers(2, 5)) for _ in range(int(rng.integers(2, 4)))], 3)
    centre, radius = rng.uniform(-1, 1, n_in), rng.uniform(0.05, 1.0, n_in)
    lo, hi = centre - radius, centre + radius
    c = int(net.predict(centre))
    shifted = shift_to_margin(net, c, side - brute_min_margin(net, lo, hi, c))
    if shifted.predict(centre) != c:
        pytest.skip("the shift changed the centre's class")
    verdict = Verifier(shifted, mip_fallback=False, alpha_steps=alpha_steps).verify(lo, hi, c)
    check_verdict(shifted, lo, hi, c, side, verdict)


@pytest.mark.parametrize("seed", range(40))
def test_a_search_stopped_on_a_tie_reports_a_proven_bound(seed):
    # a tolerance above the true smallest margin m* > 0 makes a leaf whose exact minimum is below it a tie: the
    # search stops "unknown", and every node of the batch it stopped in must still count in its lower bound
    net, lo, hi, c = random_case(5000 + seed)
    net = shift_to_margin(net, c, 0.05 - brute_min_margin(net, lo, hi, c))
    m_star = brute_min_margin(net, lo, hi, c)
    outcome = branch_and_bound(net, lo, hi, c, tolerance=m_star + 0.5, batch=4)
    assert outcome.status == "unknown" and outcome.stopped_by == "tie"
    assert outcome.lower_bound <= m_star + 1e-9


def scaled_by_powers_of_two(net, rng):
    """Return ``(net', s)``: ``net`` with layer k times 2^a_k and its bias times 2^(a_1 + ... + a_k); logits times s."""
    layers, s = [], 1.0
    for layer in net.layers:
        if isinstance(layer, Affine):
            t = 2.0 ** int(rng.integers(-46, 21))
            s *= t
            layer = Affine(layer.W * t, layer.b * s)
        layers.append(layer)
    return Network(layers, decision=net.decision), s


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("side", [1e-3, -1e-3])
@pytest.mark.parametrize("mip", [False, True])
def test_a_network_scaled_by_powers_of_two_gets_the_same_answer(seed, side, mip):
    net, lo, hi, c = random_case(6000 + seed)
    net = shift_to_margin(net, c, side - brute_min_margin(net, lo, hi, c))
    if net.predict((lo + hi) / 2) != c:
        pytest.skip("the shift changed the centre's class")
    scaled, s = scaled_by_powers_of_two(net, np.random.default_rng(seed))
    options = dict(node_limit=1, mip_fallback=True, solver="highs") if mip else dict(mip_fallback=False)
    plain, other = Verifier(net, **options).verify(lo, hi, c), Verifier(scaled, **options).verify(lo, hi, c)
    check_verdict(net, lo, hi, c, side, plain)
    assert (other.verdict, other.method, other.nodes) == (plain.verdict, plain.method, plain.nodes)
    assert other.lower_bound == plain.lower_bound * s and other.tolerance == plain.tolerance * s
    if other.verdict == "not_robust":
        assert scaled.predict(other.counterexample) != c and np.all((lo <= other.counterexample) &
                                                                    (other.counterexample <= hi))


def near_tie_on_many_inputs(seed, side, hidden=(3, 3)):
    """Return ``(net, lo, hi, c)``: a net with hidden layers ``hidden`` on 20 inputs (more than input splits take)
    whose smallest margin over the box is exactly ``side`` (brute force)."""
    rng = np.random.default_rng(7000 + seed)
    net = random_net(rng, 20, list(hidden), 3)
    centre, radius = rng.uniform(-1, 1, 20), rng.uniform(0.05, 0.5, 20)
    lo, hi = centre - radius, centre + radius
    c = int(net.predict(centre))
    return shift_to_margin(net, c, side - brute_min_margin(net, lo, hi, c)), lo, hi, c


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("side", [1e-3, -1e-3])
def test_a_small_net_goes_to_the_mip_after_the_probe_without_refinement(seed, side, monkeypatch):
    import explain_mnist.verifier as verifier_module
    net, lo, hi, c = near_tie_on_many_inputs(seed, side)
    if net.predict((lo + hi) / 2) != c:
        pytest.skip("the shift changed the centre's class")
    monkeypatch.setattr(verifier_module, "SMALL_MIP_NODES", 1)    # the probe spent at once
    verdict = Verifier(net, solver="highs", alpha_steps=0).verify(lo, hi, c)
    check_verdict(net, lo, hi, c, side, verdict)
    if verdict.method not in ("bounds", "attack"):
        assert "mip_seconds" in verdict.stages and "refine_seconds" not in verdict.stages


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("side", [1e-3, -1e-3])
def test_a_small_mip_left_open_is_refined_searched_and_tried_again(seed, side, monkeypatch):
    import explain_mnist.verifier as verifier_module
    net, lo, hi, c = near_tie_on_many_inputs(seed, side)
    if net.predict((lo + hi) / 2) != c:
        pytest.skip("the shift changed the centre's class")
    monkeypatch.setattr(verifier_module, "SMALL_MIP_NODES", 1)
    calls = []
    first_mip_undecided(monkeypatch, calls)     # as with a point the forward pass does not confirm
    verdict = Verifier(net, solver="highs", alpha_steps=0).verify(lo, hi, c)
    check_verdict(net, lo, hi, c, side, verdict)
    if verdict.method == "mip":
        assert calls == [False, True]    # tried again, after refinement


def issue_shape_net(rng, sizes, integer):
    """Return a net of the layer sizes ``sizes``: integer weights in [-3, 3] or Gaussian ones."""
    layers = []
    for k in range(len(sizes) - 1):
        shape = (sizes[k + 1], sizes[k])
        W = rng.integers(-3, 4, size=shape).astype(float) if integer else rng.normal(size=shape)
        b = rng.integers(-2, 3, size=sizes[k + 1]).astype(float) if integer else rng.normal(scale=0.5, size=sizes[k + 1])
        layers.append(Affine(W, b))
        if k < len(sizes) - 2:
            layers.append(ReLU())
    return Network(layers, decision="argmax")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sizes, integer", [([8, 8, 6, 8, 2], True), ([7, 3, 4, 4, 2], False)])
@pytest.mark.parametrize("relative", [1e-4, -1e-4])
def test_tiny_nets_near_the_boundary_are_decided_without_a_time_limit(seed, sizes, integer, relative):
    # the shapes of the issue's slow tiny nets (an integer-weight 8-8-6-8-2 net on 8 free inputs, a 7-3-4-4-2 net),
    # shifted to a margin of +-1e-4 of the margin's spread; the reference is the fuzz suite's own MILP/enumeration
    from benchmarks import fuzz_verifier as fuzz
    rng = np.random.default_rng(8000 + seed)
    net = issue_shape_net(rng, sizes, integer)
    centre, radius = rng.uniform(-1, 1, sizes[0]), rng.uniform(0.2, 1.0, sizes[0])
    lo, hi = centre - radius, centre + radius
    c = int(net.predict(centre))
    ref = fuzz.reference(net, lo, hi, c)
    side = relative * max(ref.spread, 1e-9)
    net = shift_to_margin(net, c, side - float(ref.margin))
    if net.predict(centre) != c:
        pytest.skip("the shift changed the centre's class")
    ref = fuzz.reference(net, lo, hi, c)
    assert ref.optimal
    verdict = Verifier(net).verify(lo, hi, c)
    assert verdict.verdict != "unknown", verdict.message
    check_verdict(net, lo, hi, c, float(ref.margin), verdict)
    if verdict.method == "bab":     # never more nodes than the activation patterns it could enumerate
        assert verdict.nodes <= 2 ** sum(sizes[1:-1])


def first_mip_undecided(monkeypatch, calls, wait_until=None):
    """Make `Verifier._mip` leave the question open on its first call (after sleeping until ``wait_until``)."""
    import time
    real_mip = Verifier._mip

    def mip(self, q, root):
        calls.append("refine_seconds" in q.stages)
        if len(calls) > 1:
            return real_mip(self, q, root)
        while wait_until is not None and time.perf_counter() < wait_until(q):
            time.sleep(0.01)
        return None

    monkeypatch.setattr(Verifier, "_mip", mip)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("side", [1e-3, -1e-3])
@pytest.mark.parametrize("hidden, refine", [((4,), True), ((3, 3), False)])
def test_without_refinement_a_small_mip_left_open_searches_on(seed, side, hidden, refine, monkeypatch):
    import explain_mnist.verifier as verifier_module
    net, lo, hi, c = near_tie_on_many_inputs(seed, side, hidden)
    if net.predict((lo + hi) / 2) != c:
        pytest.skip("the shift changed the centre's class")
    monkeypatch.setattr(verifier_module, "SMALL_MIP_NODES", 1)
    calls = []
    first_mip_undecided(monkeypatch, calls)
    verdict = Verifier(net, solver="highs", alpha_steps=0, refine=refine).verify(lo, hi, c)
    check_verdict(net, lo, hi, c, side, verdict)
    assert len(calls) <= 1 and "refine_seconds" not in verdict.stages   # never the same MIP twice


def test_a_small_mip_left_open_keeps_the_node_limit_and_says_why(monkeypatch):
    for seed in range(20):
        net, lo, hi, c = near_tie_on_many_inputs(seed, 1e-3)
        if net.predict((lo + hi) / 2) == c:
            break
    calls = []
    first_mip_undecided(monkeypatch, calls)
    verdict = Verifier(net, solver="highs", alpha_steps=0, node_limit=1).verify(lo, hi, c)
    assert verdict.verdict == "unknown" and calls == [False] and "refine_seconds" not in verdict.stages
    assert "node limit (1) hit" in verdict.message and "the MIP left the question open" in verdict.message


def test_a_small_mip_that_spends_the_time_says_time_limit(monkeypatch):
    for seed in range(20):
        net, lo, hi, c = near_tie_on_many_inputs(seed, 1e-3)
        if net.predict((lo + hi) / 2) == c:
            break
    calls = []
    first_mip_undecided(monkeypatch, calls, wait_until=lambda q: q.deadline)
    verdict = Verifier(net, solver="highs", alpha_steps=0, node_limit=1, time_limit=1.0).verify(lo, hi, c)
    assert verdict.verdict == "unknown" and calls == [False]
    assert "time limit hit" in verdict.message and "node limit" not in verdict.message
