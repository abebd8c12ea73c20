"""The counterexample search: gradients against finite differences, every answer re-checked by an
independent forward pass (and Keras on the shipped models), and found / not found against brute force
on tiny networks where a dense grid shows a counterexample or interval bounds on grid cells prove none."""
import numpy as np
import pytest
import scipy.sparse as sp

from explain_mnist.attack import attack_many, find_counterexample, logit_vjp, margin_gradients
from explain_mnist.bounds import interval_bounds
from explain_mnist.network import Affine, Network, ReLU

FD_STEP = 1e-6


def random_net(rng, sizes, decision="argmax", sparse_first=False):
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
        if sparse_first and k == 0:
            W[rng.uniform(size=W.shape) < 0.6] = 0
            W = sp.csr_matrix(W)
        layers += [Affine(W, rng.normal(size=n_out) * 0.3), ReLU()]
    return Network(layers[:-1], decision=decision)


def plain_logits(net, X):
    """Logits by a direct loop over the layers, with dense weights (independent of Network.forward)."""
    H = np.atleast_2d(np.asarray(X, dtype=np.float64))
    for k, affine in enumerate(net.affines):
        H = H @ affine.dense_W().T + affine.b
        if k < len(net.affines) - 1:
            H = np.maximum(H, 0)
    return H


def plain_class(net, X):
    logits = plain_logits(net, X)
    return (logits[:, 0] > 0).astype(int) if net.decision == "sigmoid" else np.argmax(logits, axis=1)


def finite_difference_jacobian(net, x, C):
    """Return (central-difference d(C @ logits)/dx of shape (m, n_in), mask of coordinates whose
    perturbations stay in x's linear region)."""
    n = x.size
    P = np.concatenate([x + FD_STEP * np.eye(n), x - FD_STEP * np.eye(n)])
    logits, pre = net.forward(P, return_preactivations=True)
    _, pre0 = net.forward(x[None], return_preactivations=True)
    same = np.ones(2 * n, dtype=bool)
    for z, z0 in zip(pre, pre0):
        same &= np.all((z > 0) == (z0 > 0), axis=1)
    M = logits @ C.T
    return ((M[:n] - M[n:]) / (2 * FD_STEP)).T, same[:n] & same[n:]


def assert_counterexample(net, result, lo, hi, c, margin=0.0):
    assert result.x is not None
    assert np.all(result.x >= lo) and np.all(result.x <= hi)
    assert plain_class(net, result.x)[0] != c and result.predicted != c
    assert net.predict(result.x) == result.predicted
    assert np.min(plain_logits(net, result.x)[0] @ net.spec_matrix(c).T) <= -margin + 1e-9


def interval_margin_lower(net, lo, hi, classes):
    """Interval lower bounds (B, m) of the margins over the boxes [lo, hi] (B, n_in), for one class or one per box."""
    classes = np.broadcast_to(classes, (lo.shape[0],))
    C = np.stack([net.spec_matrix(int(c)) for c in classes])
    last = net.affines[-1]
    if net.hidden:
        bounds = interval_bounds(net, lo, hi)
        lo, hi = np.maximum(bounds.lower[-1], 0), np.maximum(bounds.upper[-1], 0)
    CW = np.einsum("bmj,jk->bmk", C, last.dense_W())                    # margins as affine maps of the last layer
    Cb = C @ last.b
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    return np.einsum("bmk,bk->bm", CW, centre) + Cb - np.einsum("bmk,bk->bm", np.abs(CW), radius)


def proven_robust(net, lo, hi, c, cells_per_axis):
    """True when interval bounds on every cell of a grid over [lo, hi] keep all margins > 0."""
    n = lo.size
    edges = [np.linspace(lo[j], hi[j], cells_per_axis + 1) for j in range(n)]
    corner = np.stack(np.meshgrid(*[np.arange(cells_per_axis)] * n, indexing="ij"), -1).reshape(-1, n)
    cell_lo = np.stack([edges[j][corner[:, j]] for j in range(n)], 1)
    cell_hi = np.stack([edges[j][corner[:, j] + 1] for j in range(n)], 1)
    return bool(interval_margin_lower(net, cell_lo, cell_hi, c).min() > 0)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("sizes,decision,sparse_first", [
    ([5, 7, 4], "argmax", False),
    ([6, 8, 8, 5, 3], "argmax", True),
    ([4, 9, 1], "sigmoid", False),
    ([3, 6, 6, 1], "sigmoid", True),
])
def test_gradients_match_finite_differences_on_random_nets(sizes, decision, sparse_first):
    rng = np.random.default_rng(len(sizes) * 10 + sizes[0])
    net = random_net(rng, sizes, decision, sparse_first)
    X = rng.normal(size=(6, sizes[0]))
    classes = net.predict(X)
    C_per_point = np.stack([net.spec_matrix(int(c)) for c in classes])
    G = margin_gradients(net, X, C_per_point)
    V = rng.normal(size=(X.shape[0], net.n_outputs))
    vjp = logit_vjp(net, X, V)
    checked = 0
    for b, x in enumerate(X):
        fd, ok = finite_difference_jacobian(net, x, C_per_point[b])
        assert np.allclose(G[b][:, ok], fd[:, ok], atol=1e-6)
        fd_v, ok_v = finite_difference_jacobian(net, x, V[b][None])
        assert np.allclose(vjp[b][ok_v], fd_v[0][ok_v], atol=1e-6)
        checked += ok.sum()
    assert checked >= 0.9 * X.size
    shared = margin_gradients(net, X, net.spec_matrix(0))
    fd0, ok0 = finite_difference_jacobian(net, X[0], net.spec_matrix(0))
    assert np.allclose(shared[0][:, ok0], fd0[:, ok0], atol=1e-6)


@pytest.mark.parametrize("model", ["twoclass", "multiclass", "cnn_simple"])
def test_gradients_match_finite_differences_on_shipped_models(model, shipped_nets, test_set):
    net = shipped_nets[model]
    X = test_set.x[:3].astype(np.float64)
    for x in X:
        C = net.spec_matrix(net.predict(x))
        G = margin_gradients(net, x[None], C)[0]
        fd, ok = finite_difference_jacobian(net, x, C)
        assert ok.mean() > 0.9
        scale = max(1.0, np.abs(fd).max())
        assert np.allclose(G[:, ok], fd[:, ok], atol=1e-5 * scale)


# ----------------------------------------------------------------------------- tiny nets: brute force

def tiny_cases():
    """Random 2- and 3-input nets with boxes around random points, labelled by brute force."""
    rng = np.random.default_rng(7)
    cases = []
    for trial in range(80):
        n_in = 2 + trial % 2
        decision = "sigmoid" if trial % 3 == 0 else "argmax"
        sizes = [n_in, 10, 1] if decision == "sigmoid" else [n_in, 8, 8, 3]
        net = random_net(rng, sizes, decision)
        x0 = rng.uniform(-1, 1, size=n_in)
        radius = rng.uniform(0.02, 0.8)
        lo, hi = x0 - radius, x0 + radius
        c = int(net.predict(x0))
        axes = np.meshgrid(*[np.linspace(lo[j], hi[j], 121 if n_in == 2 else 31) for j in range(n_in)], indexing="ij")
        grid = np.stack(axes, -1).reshape(-1, n_in)
        M = plain_logits(net, grid) @ net.spec_matrix(c).T
        changed = plain_class(net, grid) != c
        clear = 0.02 * np.abs(M).max()
        if np.any(changed & (M.min(axis=1) < -clear)):
            label = "counterexample"
        elif proven_robust(net, lo, hi, c, 48 if n_in == 2 else 16):
            label = "robust"
        else:
            label = "unclear"
        cases.append((net, lo, hi, c, label))
    return cases


def test_tiny_nets_attack_agrees_with_brute_force():
    cases = tiny_cases()
    labels = [case[-1] for case in cases]
    assert labels.count("counterexample") >= 15 and labels.count("robust") >= 15
    for net, lo, hi, c, label in cases:
        result = find_counterexample(net, lo, hi, c)
        if result.x is not None:
            assert_counterexample(net, result, lo, hi, c)
        if label == "counterexample":
            assert result.x is not None
        if label == "robust":
            assert result.x is None and result.min_margin > 0


def test_linear_lower_bound_minimiser_is_tried_first():
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    net = Network([Affine(W, b)])
    x0 = rng.uniform(size=6)
    c = int(net.predict(x0))
    C = net.spec_matrix(c)
    A, a = C @ W, C @ b
    centre_margins = A @ x0 + a
    radius = 1.5 * np.min(centre_margins / np.abs(A).sum(axis=1))
    lo, hi = x0 - radius, x0 + radius
    exact_min = np.min(centre_margins - radius * np.abs(A).sum(axis=1))   # closed form over the box
    assert exact_min < 0
    result = find_counterexample(net, lo, hi, c, linear_lower=(A, a))
    assert_counterexample(net, result, lo, hi, c)
    assert result.stage == "linear" and result.candidates_tried <= 1 + A.shape[0]
    assert np.isclose(result.min_margin, exact_min)
    assert np.all((result.x == lo) | (result.x == hi))


def test_margin_slack_against_closed_form_on_an_affine_net():
    rng = np.random.default_rng(5)
    W, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    net = Network([Affine(W, b)])
    x0 = rng.uniform(size=5)
    c = int(net.predict(x0))
    C = net.spec_matrix(c)
    A, centre_margins = C @ W, C @ (W @ x0 + b)
    radius = 2.0 * np.min(centre_margins / np.abs(A).sum(axis=1))
    lo, hi = x0 - radius, x0 + radius
    exact_min = np.min(centre_margins - radius * np.abs(A).sum(axis=1))
    reachable = find_counterexample(net, lo, hi, c, margin=0.5 * abs(exact_min))
    assert_counterexample(net, reachable, lo, hi, c, margin=0.5 * abs(exact_min))
    unreachable = find_counterexample(net, lo, hi, c, margin=1.01 * abs(exact_min))
    assert unreachable.x is None and np.isclose(unreachable.min_margin, exact_min)
    # just inside the critical radius the box is robust by a hair: nothing may be returned
    tight = 0.9999 * radius / 2.0
    tight_min = np.min(centre_margins - tight * np.abs(A).sum(axis=1))
    assert 0 < tight_min < 1e-3
    assert find_counterexample(net, x0 - tight, x0 + tight, c).x is None


def test_default_rng_makes_calls_reproducible():
    rng = np.random.default_rng(11)
    net = random_net(rng, [8, 16, 16, 4])
    x0 = rng.uniform(size=8)
    c = int(net.predict(x0))
    first = find_counterexample(net, x0 - 0.05, x0 + 0.05, c, steps=15)
    second = find_counterexample(net, x0 - 0.05, x0 + 0.05, c, steps=15)
    assert first.stage == "" and first.candidates_tried > 20
    assert first.candidates_tried == second.candidates_tried
    assert np.array_equal(first.best_x, second.best_x)


def test_bad_boxes_are_refused():
    net = random_net(np.random.default_rng(0), [3, 4, 2])
    with pytest.raises(ValueError):
        find_counterexample(net, np.ones(3), np.zeros(3), 0)
    with pytest.raises(ValueError):
        find_counterexample(net, np.zeros(4), np.ones(4), 0)
    with pytest.raises(ValueError):
        find_counterexample(net, np.zeros(3), np.ones(3), 5)


# ----------------------------------------------------------------------------- shipped models

def linf_box(x, eps):
    return np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


@pytest.mark.parametrize("model", ["twoclass", "multiclass", "cnn_simple"])
def test_shipped_models_eps_03_counterexample_and_seeded_repeat(model, shipped_nets, test_set):
    from explain_mnist.models import reference_classes
    net = shipped_nets[model]
    x0 = test_set.x[0].astype(np.float64)
    c = net.predict(x0)
    lo, hi = linf_box(x0, 0.3)
    result = find_counterexample(net, lo, hi, c)
    assert_counterexample(net, result, lo, hi, c)
    assert reference_classes(net, result.x[None])[0] != c
    # a neighbouring box, a few pixels fixed to the counterexample's values: the seed is found at once
    fixed = np.random.default_rng(0).choice(x0.size, 5, replace=False)
    lo2, hi2 = lo.copy(), hi.copy()
    lo2[fixed] = hi2[fixed] = result.x[fixed]
    junk = np.random.default_rng(1).uniform(size=x0.size)
    seeded = find_counterexample(net, lo2, hi2, c, seeds=np.stack([junk, result.x]))
    assert_counterexample(net, seeded, lo2, hi2, c)
    assert seeded.stage == "seed" and seeded.candidates_tried <= 2


@pytest.mark.parametrize("model", ["twoclass", "multiclass", "cnn_simple"])
def test_shipped_models_every_answer_verified_and_proven_boxes_not_attacked(model, shipped_nets, test_set):
    from explain_mnist.models import reference_classes
    net = shipped_nets[model]
    X = test_set.x[:20].astype(np.float64)
    classes = net.predict(X)
    boxes = [linf_box(x, eps) for x in X for eps in (0.1, 0.3)]
    box_classes = np.repeat(classes, 2)
    found = []
    for (lo, hi), c in zip(boxes, box_classes):
        result = find_counterexample(net, lo, hi, c, restarts=2, steps=10)
        if result.x is not None:
            assert_counterexample(net, result, lo, hi, c)
            found.append((result.x, c))
    assert len(found) >= 20
    keras_classes = reference_classes(net, np.stack([x for x, _ in found]))
    assert np.all(keras_classes != np.array([c for _, c in found]))
    # tiny boxes that interval bounds prove robust, batched with eps-0.3 boxes: only the latter have answers
    lo_small, hi_small = map(np.array, zip(*[linf_box(x, 1e-3) for x in X]))
    proven = interval_margin_lower(net, lo_small, hi_small, classes).min(axis=1) > 0
    assert proven.sum() >= 3
    lo_big, hi_big = map(np.array, zip(*[linf_box(x, 0.3) for x in X[:5]]))
    lo_all, hi_all = np.concatenate([lo_small[proven], lo_big]), np.concatenate([hi_small[proven], hi_big])
    all_classes = np.concatenate([classes[proven], classes[:5]])
    results = attack_many(net, lo_all, hi_all, all_classes, restarts=2, steps=10)
    n_proven = int(proven.sum())
    assert all(result.x is None for result in results[:n_proven])
    for p, result in enumerate(results[n_proven:], start=n_proven):
        assert_counterexample(net, result, lo_all[p], hi_all[p], all_classes[p])
